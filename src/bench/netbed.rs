//! Network namespaces for the real-links bed (`allium bench real-links`): one namespace per
//! node, all joined by a bridge, the approach of tests/netns.rs.
//!
//! A dedicated "switch" namespace holds the bridge, so the host's own network is never
//! touched. Each node namespace has `eth0`, a veth whose peer `pN` is a port of the bridge,
//! with the address 10.(70+N).0.1/8: every node has its own /16 (path selection refuses two
//! relays in one /16) and the /8 netmask puts them all on one link. Namespace names carry
//! the PID of the bench process, so parallel runs do not clash and namespaces left by a
//! killed run are recognised by their dead PID and removed ([`remove_stale`]).
//!
//! Needs root (CAP_SYS_ADMIN), `ip` and `tc` (Debian package iproute2).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Namespace names start with this, then the PID of the bench process.
pub(crate) const PREFIX: &str = "allium-rl";

/// Runs `program args`; its stdout, or Err with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// What the bed needs from the machine; Err names everything missing.
pub(crate) fn check_prerequisites() -> Result<(), String> {
    let mut missing = Vec::new();
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        missing.push("root (network namespaces need CAP_SYS_ADMIN)".to_string());
    }
    for (program, arg) in [("ip", "-V"), ("tc", "-V")] {
        if run(program, &[arg]).is_err() {
            missing.push(format!("`{program}` (install iproute2)"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the real-links bed needs {}", missing.join(", ")))
    }
}

/// Kills the processes in namespace `ns` (only ever the bed's own nodes).
fn kill_inside(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
    }
}

/// Removes namespaces of earlier runs whose bench process is gone, killing what still
/// runs inside them. Returns the names removed.
pub(crate) fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(list) = ip(&["netns", "list"]) else {
        return removed;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a run in progress
        }
        kill_inside(name);
        let _ = ip(&["netns", "del", name]);
        removed.push(name.to_string());
    }
    removed
}

/// One node: its namespace, bridge port and address.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// What the bed calls it (also its log's name).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// The namespaces and the processes in them. Drop stops the processes, then deletes the
/// namespaces (which deletes their veths and the bridge), even after an error.
#[derive(Debug)]
pub(crate) struct Bed {
    switch: String,
    nodes: Vec<Node>,
    children: Vec<(String, Child)>,
    /// Where logs and node files live.
    pub dir: PathBuf,
}

impl Bed {
    /// Creates the switch namespace and its bridge; files go to `dir`.
    pub(crate) fn new(dir: &Path) -> Result<Bed, String> {
        let switch = format!("{PREFIX}{}-sw", std::process::id());
        ip(&["netns", "add", &switch])?;
        let bed = Bed {
            switch,
            nodes: Vec::new(),
            children: Vec::new(),
            dir: dir.to_path_buf(),
        };
        let sw = bed.switch.as_str();
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        Ok(bed)
    }

    /// Adds a node namespace with `eth0` = 10.(70+index).0.1/8 on the bridge.
    pub(crate) fn add_node(&mut self, name: &str) -> Result<Node, String> {
        let index = self.nodes.len();
        let octet = u8::try_from(70 + index).map_err(|_| "too many nodes".to_string())?;
        let ns = format!("{PREFIX}{}-{name}", std::process::id());
        let port = format!("p{index}");
        let addr = Ipv4Addr::new(10, octet, 0, 1);
        ip(&["netns", "add", &ns])?;
        let node = Node {
            name: name.into(),
            ns: ns.clone(),
            addr,
        };
        // Recorded before anything else can fail, so Drop removes it.
        self.nodes.push(node.clone());
        let sw = self.switch.clone();
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/8"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(node)
    }

    /// Limits what leaves `node`'s `eth0` to `mbit` Mbit/s with a token bucket (tbf).
    /// `burst` 16 KiB: above rate / HZ at any HZ up to 1000 at 20 Mbit/s (the bucket must
    /// refill between timer ticks), and small so the link never sends a long line-rate
    /// burst. `limit` 128 KiB: above what the delay line in front of it can have in flight
    /// (its 16 KiB send buffer, doubled, plus one 64 KiB GSO packet), so tbf never drops
    /// (with a 10 ms queue it dropped a quarter of the packets and the line's TCP stalled
    /// on retransmission timeouts); its queue is bounded by that in-flight amount, not by
    /// the limit, and the backlog builds where the overlay can see it (the relay and its
    /// sockets).
    pub(crate) fn limit_egress(&self, node: &Node, mbit: u32) -> Result<(), String> {
        run(
            "tc",
            &[
                "-n",
                &node.ns,
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                "16384",
                "limit",
                "131072",
            ],
        )
        .map(|_| ())
    }

    /// The qdisc line of `node`'s eth0 (for the report).
    pub(crate) fn qdisc(&self, node: &Node) -> String {
        run("tc", &["-n", &node.ns, "qdisc", "show", "dev", "eth0"])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Starts this executable with `args` inside `node`'s namespace, output to
    /// `<log>.log`; `log` names the process for [`Bed::stop`].
    pub(crate) fn spawn(&mut self, node: &Node, log: &str, args: &[&str]) -> Result<(), String> {
        // This process's own executable, even if a rebuild replaced the file meanwhile
        // (the link still opens the running inode): every node runs the bench's build.
        let exe = format!("/proc/{}/exe", std::process::id());
        let path = self.dir.join(format!("{log}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {log}: {e}"))?;
        self.children.push((log.to_string(), child));
        Ok(())
    }

    /// Stops the process started as `log` (`ip netns exec` execs it: the child is it).
    pub(crate) fn stop(&mut self, log: &str) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(|(name, _)| name == log);
        self.children = kept;
        for (_, mut c) in gone {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether every started process still runs; Err names the first that exited.
    pub(crate) fn check_running(&mut self) -> Result<(), String> {
        for (name, c) in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!(
                    "{name} exited ({status}); its log: {}",
                    self.dir.join(format!("{name}.log")).display()
                ));
            }
        }
        Ok(())
    }

    /// The log of the process started as `log`.
    pub(crate) fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{log}.log"))).unwrap_or_default()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
        for n in &self.nodes {
            kill_inside(&n.ns);
            let _ = ip(&["netns", "del", &n.ns]);
        }
        kill_inside(&self.switch);
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// Runs `f` on a thread of its own that entered `node`'s network namespace (setns), with a
/// runtime of its own: sockets it opens are the node's; the caller's threads stay where
/// they are.
pub(crate) fn in_namespace<T, F>(node: &Node, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
{
    let path = format!("/run/netns/{}", node.ns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("cannot enter the namespace {path}: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(rt.block_on(f()))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// `addr` as an [`IpAddr`].
pub(crate) fn ip_of(node: &Node) -> IpAddr {
    IpAddr::V4(node.addr)
}
