//! The client: bootstraps from the directory authorities, keeps circuits ready, and opens
//! streams through them. This is the library API the SOCKS proxy itself uses:
//!
//! ```no_run
//! # async fn demo(config: allium::client::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let client = allium::client::Client::bootstrap(config).await?;
//! let mut stream = client.connect("example.com:80").await?;
//! stream.write_all(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n").await?;
//! let mut page = Vec::new();
//! stream.read_to_end(&mut page).await?;
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tracing::{debug, info, warn};

use crate::cell::{EndReason, Hostname, TargetAddr};
use crate::dir::{Consensus, Transport};
use crate::link::LinkConfig;
use crate::proto::{ClientCircuit, DataStream, RelayTarget, StreamOpenError, UdpFlow};
use crate::sync::lock;

use super::chanmgr::ChanMgr;
use super::circmgr::{CircMgr, CircParams, Isolation};
use super::config::ClientConfig;
use super::dirmgr::DirMgr;
use super::error::ClientError;
use super::guardmgr::GuardMgr;
use super::onion_connect::{is_onion_host, OnionConnector};
use super::skew::SkewTracker;
use super::socks_server::{Connector, IsolationKey};

/// Attempts to open one stream (the first may use an existing circuit, later ones build).
const CONNECT_ATTEMPTS: usize = 3;

/// At most one "no usable consensus" warning per this interval.
const NO_CONSENSUS_WARN_EVERY: Duration = Duration::from_secs(10);

/// A bootstrapped client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The managers a client ties together (arti's tor-dirmgr, tor-chanmgr, tor-circmgr).
struct Inner {
    config: ClientConfig,
    dir: Arc<DirMgr>,
    channels: Arc<ChanMgr>,
    circuits: Arc<CircMgr>,
    /// Connections to onion services: descriptor cache and rendezvous circuits.
    onion: OnionConnector,
    /// When the proxy last warned that it has no usable consensus (one line per
    /// [`NO_CONSENSUS_WARN_EVERY`], however many requests fail).
    no_consensus_warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client(..)")
    }
}

fn progress(pct: u8, phase: &str) {
    info!("bootstrap {pct}%: {phase}");
}

impl super::sweeper::Sweep for Inner {
    fn sweep(&self) -> usize {
        self.circuits.sweep() + self.onion.sweep()
    }
}

impl Client {
    /// Fetches and verifies the consensus (or loads a live cached one), picks guards and
    /// builds the first circuits. Progress is logged as `bootstrap NN%: phase`.
    pub async fn bootstrap(config: ClientConfig) -> Result<Client, ClientError> {
        progress(0, "starting");
        let guards = Arc::new(GuardMgr::load(config.data_dir.clone()));
        let skew = Arc::new(SkewTracker::default());
        let channels = Arc::new(ChanMgr::new(
            LinkConfig {
                clock: config.clock.clone(),
                padding: config.link_padding.bounds(),
                ..LinkConfig::default()
            },
            Arc::clone(&skew),
        ));
        let dir = Arc::new(DirMgr::new(
            config.authorities.clone(),
            config.data_dir.clone(),
            config.circuit_timeout,
            Arc::clone(&channels),
            Arc::clone(&guards),
            config.clock.clone(),
            skew,
        ));
        let params = CircParams {
            path_len: config.path_len,
            max_dirtiness: config.max_dirtiness,
            circuit_timeout: config.circuit_timeout,
            prebuilt_circuits: config.prebuilt_circuits,
            congestion_control: config.congestion_control,
            circuit_padding: config.circuit_padding,
            vanguards: config.vanguards,
            observer: config.observer.clone(),
        };
        let circuits = Arc::new(CircMgr::new(
            params,
            Arc::clone(&dir),
            Arc::clone(&channels),
            Arc::clone(&guards),
        ));
        let onion = OnionConnector::new(Arc::clone(&dir), Arc::clone(&circuits), &config);
        let client = Client {
            inner: Arc::new(Inner {
                config,
                dir,
                channels,
                circuits,
                onion,
                no_consensus_warned: Mutex::new(None),
            }),
        };
        progress(10, "loading the directory");
        let consensus = client.inner.dir.fetch_consensus().await?;
        progress(
            40,
            &format!(
                "consensus with {} relays verified",
                consensus.relays().len()
            ),
        );
        tokio::spawn(super::upkeep::run(
            Arc::clone(&client.inner.dir),
            Arc::clone(&client.inner.circuits),
            guards,
        ));
        let sweep_target: std::sync::Weak<dyn super::sweeper::Sweep> =
            Arc::downgrade(&client.inner) as _;
        tokio::spawn(super::sweeper::run(
            client.inner.dir.clock().clone(),
            super::sweeper::sweep_interval(client.inner.config.max_dirtiness),
            vec![sweep_target],
        ));
        progress(60, "building circuits");
        if client.inner.circuits.prebuild().await == 0 {
            return Err(ClientError::Circuit("no circuit could be built".into()));
        }
        progress(100, "done");
        Ok(client)
    }

    /// The consensus in use.
    pub fn consensus(&self) -> Option<Arc<Consensus>> {
        self.inner.dir.consensus()
    }

    /// Fetches a fresh consensus now (from a guard if possible, else the authorities, else
    /// the disk cache while it is live).
    pub async fn refresh_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        self.inner.dir.fetch_consensus().await
    }

    /// The client's clock (the one in its configuration).
    pub fn clock(&self) -> &crate::clock::Clock {
        self.inner.dir.clock()
    }

    /// The client's configuration.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The consensus, if it is live now.
    pub(crate) fn live_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        self.inner.dir.live_consensus()
    }

    /// Builds a circuit (of the configured length) whose last hop is `last`, a relay the
    /// caller chose (see [`CircMgr::build_circuit_ending`]), unstarted.
    pub(crate) async fn build_circuit_ending(
        &self,
        last: &RelayTarget,
        purpose: crate::client::CircPurpose,
    ) -> Result<ClientCircuit, ClientError> {
        self.inner
            .circuits
            .build_circuit_ending(last, purpose)
            .await
    }

    /// Opens a stream to `host:port` (names are resolved by the exit).
    pub async fn connect(&self, addr: &str) -> Result<DataStream, ClientError> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip(ip),
            Err(_) => TargetAddr::Hostname(
                Hostname::new(host).map_err(|_| ClientError::BadAddress(addr.to_string()))?,
            ),
        };
        self.connect_target(target, port, &Isolation::default())
            .await
    }

    /// Opens a stream to `target:port` on a circuit of isolation class `isolation`. A
    /// failure other than an exit-policy refusal is retried on fresh circuits
    /// (`CONNECT_ATTEMPTS`, 3, attempts in all), whose paths avoid the relays this request's
    /// failed builds could not be extended to.
    pub async fn connect_target(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: &Isolation,
    ) -> Result<DataStream, ClientError> {
        if let TargetAddr::Hostname(name) = &target {
            if is_onion_host(name.as_str()) {
                return self
                    .inner
                    .onion
                    .connect(name.as_str(), port, isolation)
                    .await;
            }
        }
        let timeout = self.inner.config.stream_timeout;
        self.on_exit_circuit(
            &target,
            port,
            isolation,
            Transport::Tcp,
            |c, t| async move { c.open_stream(t, port, timeout).await },
        )
        .await
    }

    /// Opens a UDP flow to `target:port` on a circuit of isolation class `isolation`:
    /// datagrams of up to 1,472 bytes each way, names resolved by the exit. Only exits
    /// whose UDP policy allows the destination carry it; a refusal by policy is retried
    /// once on a fresh circuit.
    pub async fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: &Isolation,
    ) -> Result<UdpFlow, ClientError> {
        if let TargetAddr::Hostname(name) = &target {
            if is_onion_host(name.as_str()) {
                return self
                    .inner
                    .onion
                    .open_udp(name.as_str(), port, isolation)
                    .await;
            }
        }
        let timeout = self.inner.config.stream_timeout;
        self.on_exit_circuit(
            &target,
            port,
            isolation,
            Transport::Udp,
            |c, t| async move { c.open_udp(t, port, timeout).await },
        )
        .await
    }

    /// Runs `open` (a stream or a flow to `target:port`) on an exit circuit of class
    /// `isolation` whose exit allows it over `transport`. A failure other than an
    /// exit-policy refusal is retried on fresh circuits (`CONNECT_ATTEMPTS`, 3, attempts in
    /// all), whose paths avoid the relays this request's failed builds could not be
    /// extended to; a policy refusal is retried once (the exit's policy may have changed
    /// since the consensus was made).
    async fn on_exit_circuit<T, F, Fut>(
        &self,
        target: &TargetAddr,
        port: u16,
        isolation: &Isolation,
        transport: Transport,
        open: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(crate::proto::CircuitHandle, TargetAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T, StreamOpenError>>,
    {
        let ip = match target {
            TargetAddr::Ip(ip) => Some(*ip),
            TargetAddr::Hostname(_) => None,
        };
        let mut last = None;
        let mut avoid = Vec::new();
        let t0 = Instant::now();
        for attempt in 0..CONNECT_ATTEMPTS {
            let circ = match self
                .inner
                .circuits
                .circuit_for(isolation, port, ip, transport, attempt > 0, &mut avoid)
                .await
            {
                Ok(c) => c,
                // Retrying cannot help until a live consensus arrives.
                Err(e @ ClientError::NoConsensus(_)) => return Err(e),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            debug!(us = t0.elapsed().as_micros() as u64, "connect: circuit");
            match open(circ, target.clone()).await {
                Ok(s) => {
                    debug!(us = t0.elapsed().as_micros() as u64, "connect: open");
                    return Ok(s);
                }
                Err(StreamOpenError::Refused(EndReason::ExitPolicy)) if attempt == 0 => {
                    last = Some(ClientError::Stream(StreamOpenError::Refused(
                        EndReason::ExitPolicy,
                    )));
                }
                Err(e @ StreamOpenError::Refused(_)) => return Err(e.into()),
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or(ClientError::Circuit("no circuit".into())))
    }

    /// Diagnostics: for each isolation class, the ids (first-hop circuit ids) of the open
    /// circuits it uses. Two classes never share a circuit.
    pub fn circuits_by_isolation(&self) -> Vec<(Isolation, Vec<u32>)> {
        self.inner.circuits.circuits_by_isolation()
    }

    /// Diagnostics: the circuits this client holds for streams (by isolation class, the
    /// clean ones kept ready, and rendezvous circuits), after retiring those past their
    /// maximum dirtiness. Retired circuits still carrying streams are not counted.
    pub fn circuits_held(&self) -> usize {
        super::sweeper::Sweep::sweep(&*self.inner)
    }

    /// Diagnostics: the vanguards (docs/protocol.md §8.10) this client's onion-service
    /// circuits take their second hop from now, and how many were replaced so far.
    pub fn vanguards(&self) -> (Vec<crate::dir::vanguards::Vanguard>, u64) {
        self.inner.circuits.vanguards()
    }

    /// Diagnostics: the local addresses of the channels this client opened to its first
    /// hops (the last 1024; the addresses relays see as this client's). Tests use it to
    /// check that no relay but a first hop ever sees them.
    pub fn channel_local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.inner.channels.local_addrs()
    }

    /// NEWNYM: no new stream will use any existing circuit, exit or rendezvous (those
    /// are closed, and cached onion-service descriptors forgotten); later streams get new
    /// paths, through other exits while another fits (docs/control.md, SIGNAL NEWNYM).
    pub async fn new_identity(&self) {
        self.inner.circuits.close_all().await;
        self.inner.onion.close_all().await;
        info!("new identity: every circuit closed; new streams use new circuits");
    }

    /// Diagnostics: the rendezvous circuits kept for reuse (by isolation class and
    /// service), including any closed but not yet swept.
    pub fn rendezvous_circuits_held(&self) -> usize {
        self.inner.onion.rendezvous_held()
    }
}

/// What the proxy reports for a failure to open a stream or flow: the reason a user can
/// act on, logged without naming the destination.
fn proxy_error(client: &Client, e: ClientError) -> StreamOpenError {
    match e {
        ClientError::Stream(e) => e,
        ClientError::Onion(e) => {
            // The reason (a mistyped address, an unreachable service) names neither the
            // address nor the client; the user must see it.
            info!("proxy: onion service connection failed: {e}");
            e.stream_error()
        }
        e @ ClientError::NoConsensus(_) => {
            // The user must learn why every request fails; the message names no
            // destination. Rate-limited so failing requests cannot flood the log.
            let mut last = lock(&client.inner.no_consensus_warned);
            if last.is_none_or(|t| t.elapsed() >= NO_CONSENSUS_WARN_EVERY) {
                *last = Some(Instant::now());
                warn!("proxy: cannot open streams: {e}");
            }
            StreamOpenError::NoConsensus
        }
        e => {
            debug!("proxy: stream failed: {e}");
            StreamOpenError::CircuitClosed
        }
    }
}

impl Connector for Client {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>,
    > {
        Box::pin(async move {
            let iso = Isolation::from_proxy(&isolation);
            self.connect_target(target, port, &iso)
                .await
                .map_err(|e| proxy_error(self, e))
        })
    }

    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<UdpFlow, StreamOpenError>> + Send + '_>,
    > {
        Box::pin(async move {
            let iso = Isolation::from_proxy(&isolation);
            self.open_udp(target, port, &iso)
                .await
                .map_err(|e| proxy_error(self, e))
        })
    }
}
