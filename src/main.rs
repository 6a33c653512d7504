//! The `allium` binary: all logic lives in the library (`allium::cli`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    allium::cli::run()
}
