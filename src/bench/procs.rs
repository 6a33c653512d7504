//! The benchmark network as separate processes (`allium authority|relay` children of
//! `allium bench`), so each relay's memory and CPU can be read from `/proc` like Tor's.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::crypto::IdentityPublic;
use crate::relay::RelayKeys;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux x86_64).
const CLOCK_TICKS: f64 = 100.0;

/// A free port on 127.0.0.1 right now (the OS picks; it is released at once).
pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A node's data directory with keys created, its identity and a listen address.
#[derive(Debug)]
pub(crate) struct NodeDir {
    /// Its data directory.
    pub dir: PathBuf,
    /// Its keys (the child process loads the same files).
    pub keys: RelayKeys,
    /// Where it will listen.
    pub addr: SocketAddr,
}

impl NodeDir {
    /// Creates `root/name` with fresh keys and picks a free port.
    pub(crate) fn create(root: &Path, name: &str) -> Result<NodeDir, String> {
        let dir = root.join(name);
        crate::cli::private_dir::make_private_dir(&dir)?;
        let keys = RelayKeys::load_or_create(&dir, &crate::clock::Clock::system())
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Ok(NodeDir { dir, keys, addr })
    }

    /// Its identity.
    pub(crate) fn identity(&self) -> IdentityPublic {
        self.keys.identity()
    }
}

/// `[[TABLE.authorities]]` entries for a config file.
pub(crate) fn authority_list(table: &str, auths: &[(IdentityPublic, SocketAddr)]) -> String {
    let mut s = String::new();
    for (id, addr) in auths {
        let _ = writeln!(
            s,
            "\n[[{table}.authorities]]\nidentity = \"{id}\"\naddr = \"{addr}\""
        );
    }
    s
}

/// A child `allium` process, killed on drop.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// What it is (for messages).
    pub name: String,
}

impl NodeProcess {
    /// Runs `allium <command> --config <config>` (this executable), output to `log`.
    pub(crate) fn spawn(
        command: &str,
        config: &Path,
        log: &Path,
        name: &str,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find allium: {e}"))?;
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg(command)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        Ok(NodeProcess {
            child,
            pid,
            name: name.to_string(),
        })
    }

    /// Whether it is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory (VmRSS), bytes.
    pub(crate) fn rss_bytes(&self) -> Result<u64, String> {
        rss_bytes(self.pid)
    }

    /// User + system CPU seconds so far.
    pub(crate) fn cpu_secs(&self) -> Result<f64, String> {
        cpu_secs(self.pid)
    }
}

/// VmRSS of `pid` in bytes, from `/proc/PID/status`.
pub(crate) fn rss_bytes(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// utime + stime of `pid` in seconds, from `/proc/PID/stat`.
pub(crate) fn cpu_secs(pid: u32) -> Result<f64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may contain spaces: count fields after its ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|t| t as f64 / CLOCK_TICKS)
            .ok_or_else(|| format!("bad /proc/{pid}/stat"))
    };
    // After ')': state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime(11) stime(12).
    Ok(tick(11)? + tick(12)?)
}

/// Waits until something accepts TCP connections on `addr` (or `limit` passes).
pub(crate) async fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
