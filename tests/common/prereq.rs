//! Prerequisites a test needs from the machine (curl, root, iproute2, Python's
//! `cryptography`), and the one place that decides what happens when one is missing:
//!
//! - under CI (the `CI` environment variable set, and not `0` or `false`) the test fails,
//!   naming what is missing: `.ci/run` installs everything the tests need, so a missing
//!   prerequisite there is a broken CI script, and a test that returned early would pass
//!   without checking anything;
//! - elsewhere the test prints exactly one line, `SKIPPED <test>: <what is missing>`, to
//!   stderr (not captured by the test harness, so it shows in a plain `cargo test`) and
//!   returns early (a developer's machine may lack root or curl).
//!
//! ```ignore
//! if !prereq::require(&[prereq::curl()]) {
//!     return;
//! }
//! ```

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Whether this run is CI's (a missing prerequisite then fails the test).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The name of the running test: libtest runs each test on a thread named after it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// True if every check passed. Otherwise panics under CI, or prints one `SKIPPED` line
/// and returns false (the caller returns at once).
pub fn require(checks: &[Result<(), String>]) -> bool {
    let missing: Vec<&str> = checks
        .iter()
        .filter_map(|c| c.as_ref().err().map(String::as_str))
        .collect();
    if missing.is_empty() {
        return true;
    }
    missing_prerequisite(&missing.join("; "))
}

/// For a prerequisite that only shows when the test tries to use it (e.g. creating a
/// network namespace): panics under CI, else prints the `SKIPPED` line. Returns false.
pub fn missing_prerequisite(what: &str) -> bool {
    let test = test_name();
    if under_ci() {
        panic!(
            "{test}: missing prerequisite: {what}. Under CI (CI is set) this is a failure, not \
             a skip: .ci/run installs what the tests need, and CI runs as root"
        );
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and
    // a skip must show in a plain `cargo test` run.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what}");
    false
}

/// Ok if `program args` can be started and exits successfully.
fn runs(program: &str, args: &[&str], why: &str) -> Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "`{program} {}` failed ({s}); {why}",
            args.join(" ")
        )),
        Err(e) => Err(format!("{program} cannot be run ({e}); {why}")),
    }
}

/// curl (Debian package `curl`): the tests fetch through the SOCKS proxy as a user would.
pub fn curl() -> Result<(), String> {
    runs("curl", &["--version"], "install curl")
}

/// `ip` (Debian package `iproute2`).
pub fn ip() -> Result<(), String> {
    runs("ip", &["-V"], "install iproute2")
}

/// `ss` (Debian package `iproute2`).
pub fn ss() -> Result<(), String> {
    runs("ss", &["-V"], "install iproute2")
}

/// The effective user id, from /proc (no libc call needed).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Running as root (network namespaces need CAP_SYS_ADMIN).
pub fn root() -> Result<(), String> {
    match euid() {
        Some(0) => Ok(()),
        Some(uid) => Err(format!(
            "not running as root (uid {uid}; network namespaces need CAP_SYS_ADMIN)"
        )),
        None => Err("cannot read the effective user id from /proc/self/status".into()),
    }
}

/// python3 with the `cryptography` package.
pub fn python_cryptography() -> Result<(), String> {
    runs(
        "python3",
        &["-c", "import cryptography"],
        "install python3 and its `cryptography` package",
    )
}

/// python3 (standard library only).
pub fn python3() -> Result<(), String> {
    runs("python3", &["--version"], "install python3")
}
