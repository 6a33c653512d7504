//! The `allium` binary: all logic lives in the library (`allium::cli`).
#![forbid(unsafe_code)]

/// jemalloc, whose background thread gives memory freed after a burst of traffic back to
/// the OS; glibc's malloc keeps most of it (docs/PERFORMANCE.md "Memory per circuit").
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    allium::cli::run()
}
