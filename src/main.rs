//! The `keygate` binary: everything lives in the library (`keygate::cli`).

/// jemalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// objects (headers, Cedar values, audit records), where glibc's arenas cost several percent of a
/// request's CPU and lengthen the decision's tail (`malloc_consolidate`). Not mimalloc: its Rust
/// binding asks for every block through `mi_malloc_aligned`, which in mimalloc 3 over-allocates
/// any block above 1 KiB whose size is not a power of two (a request's future, hyper's buffers);
/// jemalloc's binding takes the plain path for ordinary alignments, 1.7k instructions less per
/// proxied request (callgrind, issue #2's closing note).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
