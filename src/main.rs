//! The `keygate` binary: everything lives in the library (`keygate::cli`).

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// objects (headers, Cedar values, audit records), where glibc's arenas cost several percent of a
/// request's CPU and lengthen the decision's tail (`malloc_consolidate`). Measured in the closing
/// notes of the performance issues.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
