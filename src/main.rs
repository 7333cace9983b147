//! The `keygate` binary: everything lives in the library (`keygate::cli`).

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// objects (headers, Cedar values, audit records), where glibc's arenas cost several percent of a
/// request's CPU and lengthen the decision's tail (`malloc_consolidate`). Measured in the closing
/// notes of the performance issues. (Its Rust binding asks for every block through
/// `mi_malloc_aligned`, which over-allocates blocks above 1 KiB whose size is not a power of two;
/// jemalloc avoids that, about 1.7k instructions per proxied request under callgrind, but needs
/// `make` and a C build, and no difference showed in CPU time on the benchmark VM.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
