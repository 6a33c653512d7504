//! The network of `allium bench real-links`: 3 authorities, exactly 3 relays (so every
//! circuit uses all three: the exit is the only exit, the client's guard is one of the two
//! others and the middle the remaining one), a client (`allium proxy`) and a sink
//! (`allium bench-sink`), each a process in a namespace of its own ([`super::netbed`]).
//!
//! Each relay listens on 127.0.0.1:9002 inside its namespace and advertises
//! `ADDR:9001`, where a delay line (`allium bench delay-link`, [`super::delay_link`])
//! listens and forwards to it. Every connection to a relay (from the client, another relay
//! or an authority) crosses that line, and a channel between two nodes crosses exactly one
//! line (the accepting relay's) whichever side opened it: each overlay link
//! (client→guard, guard→middle, middle→exit) has one delay each way. Authorities and the
//! sink have none.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::crypto::IdentityPublic;
use crate::relay::RelayKeys;
use crate::testnet::DirServer;

use super::netbed::{self, Bed, Node};

/// Port of every authority, and of every relay's delay line, on its node's address.
const NODE_PORT: u16 = 9001;
/// Where each relay itself listens, inside its namespace.
const RELAY_PORT: u16 = 9002;
/// The sink's port.
const SINK_PORT: u16 = 9999;
/// The proxy's SOCKS port, inside the client's namespace.
pub(crate) const SOCKS_PORT: u16 = 9050;
/// Bound for the network to form and for a proxy to carry a first stream (a hang guard).
const FORM_BOUND: Duration = Duration::from_secs(120);

/// Whether this build's proxy.toml has `[proxy] congestion_control` (being added on
/// another branch): a dry parse, so the bench turns the knob as soon as it exists and
/// never writes a key the node would refuse.
pub(crate) fn has_congestion_control() -> bool {
    toml::from_str::<crate::cli::config::ProxyFile>(
        "[proxy]\nauthorities = []\ncongestion_control = true\n",
    )
    .is_ok()
}

/// Whether this build's relay.toml has `[relay] fair_queueing` (see
/// [`has_congestion_control`]).
pub(crate) fn has_fair_queueing() -> bool {
    toml::from_str::<crate::cli::config::RelayFile>(
        "[relay]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"/x\"\nauthorities = []\nfair_queueing = true\n",
    )
    .is_ok()
}

/// A relay of the bed.
#[derive(Debug)]
pub(crate) struct BedRelay {
    pub node: Node,
    pub identity: IdentityPublic,
    pub exit: bool,
    config: PathBuf,
}

/// The running bed.
#[derive(Debug)]
pub(crate) struct RealNet {
    pub bed: Bed,
    pub relays: Vec<BedRelay>,
    pub client: Node,
    pub sink: SocketAddr,
    authorities: Vec<(IdentityPublic, SocketAddr)>,
    auth_nodes: Vec<Node>,
}

fn keys(dir: &Path) -> Result<IdentityPublic, String> {
    crate::cli::private_dir::make_private_dir(dir)?;
    RelayKeys::load_or_create(dir, &crate::clock::Clock::system())
        .map(|k| k.identity())
        .map_err(|e| format!("keys in {}: {e}", dir.display()))
}

fn authority_list(table: &str, auths: &[(IdentityPublic, SocketAddr)]) -> String {
    super::procs::authority_list(table, auths)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

impl RealNet {
    /// Creates the namespaces and starts authorities, delay lines, relays (fair queueing
    /// as `fair_queueing`, where the build has the knob) and the sink; returns once every
    /// authority and relay serves a consensus listing every relay.
    pub(crate) fn start(
        dir: &Path,
        delay: Duration,
        fair_queueing: bool,
        say: &dyn Fn(&str),
    ) -> Result<RealNet, String> {
        let mut bed = Bed::new(dir)?;
        let mut auth_nodes = Vec::new();
        for i in 1..=3 {
            auth_nodes.push(bed.add_node(&format!("a{i}"))?);
        }
        let relay_nodes: Vec<Node> = (1..=3)
            .map(|i| bed.add_node(&format!("r{i}")))
            .collect::<Result<_, _>>()?;
        let client = bed.add_node("client")?;
        let sink_node = bed.add_node("sink")?;
        let sink = SocketAddr::new(netbed::ip_of(&sink_node), SINK_PORT);

        let mut authorities = Vec::new();
        for a in &auth_nodes {
            let id = keys(&dir.join(&a.name))?;
            authorities.push((id, SocketAddr::new(netbed::ip_of(a), NODE_PORT)));
        }
        for (a, (_, addr)) in auth_nodes.iter().zip(&authorities) {
            let cfg = dir.join(format!("{}.toml", a.name));
            write(
                &cfg,
                &format!(
                    "[authority]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nperiod_secs = 6\n\
                     test_network = true\nmeasure_bandwidth = false\ncheck_exits = false\n{}",
                    dir.join(&a.name).display(),
                    authority_list("authority", &authorities)
                ),
            )?;
            bed.spawn(a, &a.name, &["authority", "--config", path_str(&cfg)?])?;
        }
        let mut net = RealNet {
            bed,
            relays: Vec::new(),
            client,
            sink,
            authorities,
            auth_nodes,
        };
        for (i, node) in relay_nodes.into_iter().enumerate() {
            let identity = keys(&dir.join(&node.name))?;
            let config = dir.join(format!("{}.toml", node.name));
            let relay = BedRelay {
                node,
                identity,
                exit: i == 2,
                config,
            };
            let line = format!("{}-line", relay.node.name);
            let listen = SocketAddr::new(netbed::ip_of(&relay.node), NODE_PORT).to_string();
            let to = format!("127.0.0.1:{RELAY_PORT}");
            let ms = delay.as_millis().to_string();
            let args = ["bench", "delay-link", "--listen", &listen, "--connect", &to];
            let mut args: Vec<&str> = args.to_vec();
            args.extend(["--delay-ms", &ms]);
            net.bed.spawn(&relay.node, &line, &args)?;
            net.relays.push(relay);
        }
        for i in 0..net.relays.len() {
            net.start_relay(i, fair_queueing)?;
        }
        let sink_s = sink.to_string();
        net.bed
            .spawn(&sink_node, "sink", &["bench-sink", "--listen", &sink_s])?;
        say("3 authorities, 3 relays behind delay lines and a sink started; waiting for a consensus listing every relay");
        net.wait_formed()?;
        Ok(net)
    }

    /// Writes relay `i`'s config (fair queueing as given, where the build has the knob)
    /// and starts it.
    pub(crate) fn start_relay(&mut self, i: usize, fair_queueing: bool) -> Result<(), String> {
        let r = self.relays.get(i).ok_or_else(|| format!("no relay {i}"))?;
        let fq = if has_fair_queueing() {
            format!("fair_queueing = {fair_queueing}\n")
        } else {
            String::new()
        };
        let exit = if r.exit {
            "\n[exit]\npolicy = [\"accept *:*\"]\n"
        } else {
            ""
        };
        write(
            &r.config,
            &format!(
                "[relay]\nlisten = \"127.0.0.1:{RELAY_PORT}\"\nadvertise = \"{}:{NODE_PORT}\"\n\
                 data_dir = \"{}\"\nbandwidth = 10000000\n{fq}{}{exit}",
                r.node.addr,
                self.bed.dir.join(&r.node.name).display(),
                authority_list("relay", &self.authorities)
            ),
        )?;
        let (node, name, cfg) = (r.node.clone(), r.node.name.clone(), r.config.clone());
        self.bed
            .spawn(&node, &name, &["relay", "--config", path_str(&cfg)?])
    }

    /// Restarts every relay with `fair_queueing` (same keys and addresses: the consensus
    /// still lists them) and waits until each accepts again.
    pub(crate) fn restart_relays(&mut self, fair_queueing: bool) -> Result<(), String> {
        for i in 0..self.relays.len() {
            let name = self.relays.get(i).map(|r| r.node.name.clone());
            if let Some(name) = name {
                self.bed.stop(&name);
            }
            self.start_relay(i, fair_queueing)?;
        }
        let servers = self.dir_servers();
        let ids = self.relay_ids();
        let trusted: Vec<IdentityPublic> = self.authorities.iter().map(|a| a.0).collect();
        netbed::in_namespace(&self.client, move || {
            Box::pin(async move {
                crate::testnet::wait_until_listed(&servers, &trusted, &ids, FORM_BOUND).await
            })
        })?
        .map(|_| ())
    }

    fn dir_servers(&self) -> Vec<DirServer> {
        let auths = self
            .auth_nodes
            .iter()
            .zip(&self.authorities)
            .map(|(n, a)| DirServer {
                name: n.name.clone(),
                addr: a.1,
                identity: a.0,
            });
        let relays = self.relays.iter().map(|r| DirServer {
            name: r.node.name.clone(),
            addr: SocketAddr::new(netbed::ip_of(&r.node), NODE_PORT),
            identity: r.identity,
        });
        auths.chain(relays).collect()
    }

    fn relay_ids(&self) -> Vec<IdentityPublic> {
        self.relays.iter().map(|r| r.identity).collect()
    }

    fn wait_formed(&mut self) -> Result<(), String> {
        let servers = self.dir_servers();
        let ids = self.relay_ids();
        let trusted: Vec<IdentityPublic> = self.authorities.iter().map(|a| a.0).collect();
        let formed = netbed::in_namespace(&self.client, move || {
            Box::pin(async move {
                crate::testnet::wait_until_listed(&servers, &trusted, &ids, FORM_BOUND).await
            })
        })?;
        self.bed.check_running()?;
        formed
            .map(|_| ())
            .map_err(|e| format!("the network did not form: {e}"))
    }

    /// Starts `allium proxy` in the client namespace (SOCKS on 127.0.0.1:9050 there) with
    /// `congestion_control` where the build has the knob; its state in one data directory
    /// for every proxy of the run, so each picks the same guard. Returns once a stream
    /// through it works.
    pub(crate) fn start_proxy(
        &mut self,
        log: &str,
        congestion_control: bool,
    ) -> Result<(), String> {
        let cc = if has_congestion_control() {
            format!("congestion_control = {congestion_control}\n")
        } else {
            String::new()
        };
        let cfg = self.bed.dir.join(format!("{log}.toml"));
        write(
            &cfg,
            &format!(
                "[proxy]\nsocks_listen = \"127.0.0.1:{SOCKS_PORT}\"\ndata_dir = \"{}\"\n{cc}{}",
                self.bed.dir.join("client").display(),
                authority_list("proxy", &self.authorities)
            ),
        )?;
        let client = self.client.clone();
        self.bed
            .spawn(&client, log, &["proxy", "--config", path_str(&cfg)?])?;
        let sink = self.sink;
        let started = Instant::now();
        let ok = netbed::in_namespace(&self.client, move || {
            Box::pin(async move {
                let socks = SocketAddr::from(([127, 0, 0, 1], SOCKS_PORT));
                while started.elapsed() < FORM_BOUND {
                    let try_once = super::client::download(socks, sink, 1024);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(20), try_once).await
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                false
            })
        })?;
        self.bed.check_running()?;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "no stream through the proxy within {FORM_BOUND:?} (logs in {})",
                self.bed.dir.display()
            ))
        }
    }

    /// The relay in the middle of the client's circuits: neither the exit nor the guard
    /// the client's guard state (written by its proxies) puts first.
    pub(crate) fn middle(&self) -> Result<&BedRelay, String> {
        let path = self.bed.dir.join("client").join("guards");
        let started = Instant::now();
        // The proxy writes its guard state on a blocking thread after a build.
        let guards = loop {
            match crate::dir::GuardSet::load(&path, crate::dir::GuardParams::default()) {
                Ok(g) => break g,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    return Err(format!("cannot read {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let non_exit: Vec<&BedRelay> = self.relays.iter().filter(|r| !r.exit).collect();
        let guard = guards
            .sampled()
            .find(|id| non_exit.iter().any(|r| &r.identity == *id))
            .ok_or("the client's guard state names none of the relays")?;
        non_exit
            .into_iter()
            .find(|r| &r.identity != guard)
            .ok_or_else(|| "no middle relay".to_string())
    }
}
