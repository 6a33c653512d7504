//! The commands behind `allium testnet|relay|authority|proxy|keygen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use super::private_dir::make_private_dir;
use crate::client::onion_service;
use crate::client::socks_server::{serve_http_connect, serve_socks, Connector, ProxyConfig};
use crate::client::{Client, ClientConfig};
use crate::clock::Clock;
use crate::crypto::IdentityPublic;
use crate::dir::{ExitPolicy, FlagParams};
use crate::relay::authority::{Authority, AuthorityConfig, RejectList};
use crate::relay::publish::{spawn_publisher, PublishConfig};
use crate::relay::{self, ExitConfig, RelayConfig, RelayKeys};
use crate::testnet::{test_flag_params, TestNet, TestNetConfig};

use super::config::{self, AuthorityFile, ProxyFile, RelayFile};
use super::control::ControlSection;
use super::demo_server;
use crate::client::control::Events;

/// What went wrong, in words for the operator.
pub(crate) type CmdResult = Result<(), String>;

/// Options of `allium testnet`.
#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// Relays besides the authorities (at least 3).
    #[arg(long, default_value_t = 5)]
    pub relays: usize,
    /// How many of the relays are exits (at least 1).
    #[arg(long, default_value_t = 2)]
    pub exits: usize,
    /// Directory authorities (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub authorities: usize,
    /// SOCKS port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9050)]
    pub socks_port: u16,
    /// Consensus period in seconds (short, so the network forms quickly).
    #[arg(long, default_value_t = 10)]
    pub period: u64,
    /// Control port on 127.0.0.1 (docs/control.md; a free one if it is taken, 0 picks
    /// one); its cookie file is written to the data directory.
    #[arg(long, default_value_t = 9051)]
    pub control_port: u16,
    /// Keep the client's state here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not run anything: write one config file and data directory per node into DIR,
    /// to run the same network as separate processes (scripts/testnet-processes.sh DIR).
    #[arg(long, value_name = "DIR")]
    pub emit_configs: Option<PathBuf>,
}

/// A directory removed on drop (the testnet's default data directory).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `allium testnet`.
pub(crate) async fn testnet(args: TestnetArgs) -> CmdResult {
    if args.relays < 3 || args.exits == 0 || args.exits > args.relays {
        return Err("a test network needs at least 3 relays and 1 to --relays exits".into());
    }
    if !(1..=9).contains(&args.authorities) {
        return Err("--authorities must be between 1 and 9".into());
    }
    if let Some(dir) = &args.emit_configs {
        return super::emit::emit(
            dir,
            args.authorities,
            args.relays,
            args.exits,
            args.period.max(6),
        );
    }
    let (data_dir, _cleanup) = match args.data_dir {
        Some(d) => (d, None),
        None => {
            let d = std::env::temp_dir().join(format!("allium-testnet-{}", std::process::id()));
            (d.clone(), Some(TempDir(d)))
        }
    };
    make_private_dir(&data_dir)?;
    // Bind the SOCKS port first: failing here is better than after the network starts.
    let socks_addr = SocketAddr::from(([127, 0, 0, 1], args.socks_port));
    let socks = TcpListener::bind(socks_addr).await.map_err(|e| {
        format!("cannot listen on {socks_addr} ({e}); is another proxy running? Try --socks-port 0")
    })?;
    let socks_addr = socks.local_addr().map_err(|e| e.to_string())?;

    println!(
        "testnet: starting {} authorities and {} relays ({} exits) on 127.0.0.1",
        args.authorities, args.relays, args.exits
    );
    let cfg = TestNetConfig {
        authorities: args.authorities,
        relays: args.relays,
        exits: args.exits,
        period: Duration::from_secs(args.period.max(6)),
        measure: true,
        check_exits: true,
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.map_err(|e| e.to_string())?;
    println!(
        "testnet: waiting for the authorities to publish the first consensus (up to two periods)"
    );
    net.wait_for_consensus(cfg.period * 6).await?;
    println!("testnet: waiting for the authorities to measure every relay (a few periods)");
    let consensus = match net.wait_for_measured(cfg.period * 6).await {
        Ok(c) => c,
        Err(e) => {
            println!("testnet: not every relay is measured yet ({e}); weights so far:");
            net.wait_for_consensus(cfg.period).await?
        }
    };
    let names: Vec<(String, IdentityPublic)> = net
        .relays
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("relay-{}", i + 1), r.identity()))
        .collect();
    println!("testnet: relays in the consensus (selection weight, flags):");
    print!(
        "{}",
        super::weights_table::weights_table(&consensus, &names)
    );
    let mut client_cfg = ClientConfig::new(net.authority_info.clone());
    client_cfg.data_dir = Some(data_dir.clone());
    let events = Arc::new(Events::default());
    client_cfg.observer = Some(events.clone());
    let client = Client::bootstrap(client_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let demo = demo_server::start().await.map_err(|e| e.to_string())?;
    // UDP echo on the same port number as the page (UDP ports are a separate space).
    let udp_echo = match super::demo_udp_echo::start_on(demo).await {
        Ok(a) => a,
        Err(_) => super::demo_udp_echo::start_on(SocketAddr::new(demo.ip(), 0))
            .await
            .map_err(|e| format!("cannot start the UDP echo server: {e}"))?,
    };
    println!("testnet: publishing the demo onion service");
    let mut service_cfg =
        onion_service::ServiceConfig::new(data_dir.join("demo-service.key"), vec![(80, demo)]);
    service_cfg.udp_ports = vec![(7, udp_echo)];
    service_cfg.connect_timeout = Duration::from_secs(5);
    let service = onion_service::launch(client.clone(), service_cfg)
        .await
        .map_err(|e| e.to_string())?;
    if !service.wait_published(Duration::from_secs(90)).await {
        return Err("the demo onion service could not publish its descriptor in 90 s".into());
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control_section =
        ControlSection::testnet(SocketAddr::from(([127, 0, 0, 1], args.control_port)));
    let control_cfg = control_section.config(Some(&data_dir), socks_addr)?;
    let control = super::control::start(
        &control_section,
        &control_cfg,
        client.clone(),
        Arc::clone(&events),
        stop_rx.clone(),
        true,
    )
    .await?;
    let connector = events.observe(Arc::new(client.clone()));
    let mut stop = stop_rx.clone();
    let proxy = tokio::spawn(serve_socks(
        socks,
        0,
        connector,
        ProxyConfig::default(),
        async move {
            let _ = stop.changed().await;
        },
    ));

    println!();
    println!("allium test network is ready.");
    println!("  SOCKS5 proxy:  {socks_addr}");
    for addr in &control.addresses {
        println!("  control port:  {addr}");
    }
    if let Some(cookie) = &control.cookie_file {
        println!("  cookie file:   {}", cookie.display());
    }
    println!("  data dir:      {}", data_dir.display());
    println!("  try it:        curl --socks5-hostname {socks_addr} http://{demo}/");
    println!("  bigger:        curl --socks5-hostname {socks_addr} http://{demo}/bytes/10000000 -o /dev/null");
    println!(
        "  UDP echo:      {udp_echo} (SOCKS5 UDP ASSOCIATE), or UDP port 7 of the onion service"
    );
    println!("  onion service: {}", service.address());
    println!(
        "  via onion:     curl --socks5-hostname {socks_addr} http://{}/",
        service.address()
    );
    println!("Press Ctrl-C to stop.");

    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    println!("\ntestnet: shutting down");
    let _ = stop_tx.send(true);
    let _ = proxy.await;
    net.shutdown().await;
    Ok(())
}

fn parse_family(ids: &[String]) -> Result<Vec<IdentityPublic>, String> {
    ids.iter()
        .map(|s| s.parse().map_err(|e| format!("family member {s:?}: {e}")))
        .collect()
}

/// Warns about `[limits]` keys that are still accepted but no longer do anything (an
/// older relay.toml must keep loading), and about settings that will hurt honest traffic.
fn warn_about_limits(path: &Path, limits: &crate::relay::RelayLimits) {
    for key in limits.deprecated_keys() {
        tracing::warn!(
            "{}: [limits] {key} is deprecated and ignored (onion-service tables are bounded relay-wide only)",
            path.display()
        );
    }
    for warning in limits.questionable_settings() {
        tracing::warn!("{}: [limits] {warning}", path.display());
    }
}

/// `allium relay --config relay.toml`.
pub(crate) async fn relay(path: &Path) -> CmdResult {
    let file: RelayFile = config::load(path).map_err(|e| e.to_string())?;
    warn_about_limits(path, &file.limits);
    let r = file.relay;
    let bandwidth = r.bandwidth_limit(path).map_err(|e| e.to_string())?;
    if let Some(warning) = r.bandwidth_warning() {
        tracing::warn!("{}: {warning}", path.display());
    }
    if r.advertise
        .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
    {
        return Err(format!(
            "{}: [relay] advertise must be the address others connect to (leave it unset to learn it from the authorities)",
            path.display()
        ));
    }
    make_private_dir(&r.data_dir)?;
    let clock = Clock::system();
    let keys = RelayKeys::load_or_create(&r.data_dir, &clock).map_err(|e| e.to_string())?;
    let exit = match &file.exit {
        None => None,
        Some(section) => {
            let policy = match &section.policy {
                Some(rules) => ExitPolicy::parse_rules(rules.iter())
                    .map_err(|e| format!("{}: [exit] policy: {e}", path.display()))?,
                None => ExitPolicy::default_exit(),
            };
            let mut cfg = ExitConfig::new(policy);
            cfg.udp_policy = relay::udp_policy_from_config(section.udp_policy.as_deref())
                .map_err(|e| format!("{}: [exit] udp_policy: {e}", path.display()))?;
            cfg.timeouts = section.timeouts();
            Some(cfg)
        }
    };
    let is_exit = exit.is_some();
    let handle = relay::start(
        RelayConfig {
            listen: r.listen,
            limits: file.limits,
            exit,
            clock,
            bandwidth,
            fair_queueing: r.fair_queueing,
        },
        keys,
    )
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", r.listen))?;
    start_metrics(file.metrics.as_ref(), &handle).await?;
    println!(
        "relay {} listening (exit: {})",
        handle.identity(),
        if is_exit { "yes" } else { "no" }
    );
    handle.set_dir_service(crate::relay::dircache::DirCache::start(
        r.authorities.clone(),
        handle.shared().clock.clone(),
    ));
    spawn_publisher(
        Arc::clone(handle.shared()),
        PublishConfig {
            authorities: r.authorities,
            advertised: r.advertise.unwrap_or(handle.local_addr()),
            bandwidth: r.bandwidth,
            family: parse_family(&r.family)?,
            interval: Duration::from_secs(r.publish_interval_secs.max(60)),
        },
    );
    wait_for_ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

/// `allium authority --config authority.toml`.
pub(crate) async fn authority(path: &Path) -> CmdResult {
    let file: AuthorityFile = config::load(path).map_err(|e| e.to_string())?;
    warn_about_limits(path, &file.limits);
    let a = file.authority;
    make_private_dir(&a.data_dir)?;
    let clock = Clock::system();
    let keys = RelayKeys::load_or_create(&a.data_dir, &clock).map_err(|e| e.to_string())?;
    let me = keys.identity();
    let reject =
        RejectList::parse(&a.reject).map_err(|e| format!("{}: [authority] {e}", path.display()))?;
    let mut cfg = AuthorityConfig::new(a.authorities.clone());
    cfg.reject = reject;
    cfg.sybil = a.sybil_limits();
    if !a.authorities.iter().any(|x| x.identity == me) {
        return Err(format!(
            "{}: this authority's identity {me} is not in its own `authorities` list",
            path.display()
        ));
    }
    let handle = relay::start(
        RelayConfig {
            listen: a.listen,
            limits: file.limits,
            exit: None,
            clock,
            bandwidth: None,
            fair_queueing: true,
        },
        keys,
    )
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    cfg.period = Duration::from_secs(a.period_secs.max(6));
    cfg.flags = if a.test_network {
        cfg.min_upload_interval = Duration::from_secs(1);
        cfg.test_network_probes(a.measure_bandwidth, a.check_exits);
        test_flag_params()
    } else {
        cfg.keep_probes(a.measure_bandwidth, a.check_exits);
        FlagParams::default()
    };
    if let Some(listen) = a.exit_check_listen {
        cfg.set_exit_check_server(listen);
    }
    let auth = Authority::start(Arc::clone(handle.shared()), cfg);
    handle.set_dir_service(auth.service());
    start_metrics(file.metrics.as_ref(), &handle).await?;
    println!("authority {me} listening on {}", handle.local_addr());
    wait_for_ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

/// `allium proxy --config proxy.toml`.
pub(crate) async fn proxy(path: &Path) -> CmdResult {
    let file: ProxyFile = config::load(path).map_err(|e| e.to_string())?;
    let services = config::services(&file.service, path).map_err(|e| e.to_string())?;
    let p = file.proxy;
    if let Some(d) = &p.data_dir {
        make_private_dir(d)?;
    }
    let socks = TcpListener::bind(p.socks_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", p.socks_listen))?;
    let http = match p.http_connect_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let proxy_cfg = p.proxy_config();
    let control_section = file.control.clone().filter(|c| c.enabled);
    let control_cfg = match &control_section {
        Some(c) => Some(
            c.config(p.data_dir.as_deref(), p.socks_listen)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let events = Arc::new(Events::default());
    let mut cfg = ClientConfig::new(p.authorities);
    if control_cfg.is_some() {
        cfg.observer = Some(events.clone());
    }
    cfg.data_dir = p.data_dir;
    cfg.path_len = p.path_len;
    cfg.congestion_control = p.congestion_control;
    cfg.circuit_padding = p.circuit_padding;
    cfg.vanguards = p.vanguards;
    cfg.onion_pow_min_effort = p.onion_pow_min_effort;
    cfg.onion_pow_max_effort = p.onion_pow_max_effort;
    cfg.link_padding = p.link_padding;
    cfg.onion_client_auth = config::client_auth_keys(&file.client_auth)?;
    if p.max_circuit_dirtiness_secs < super::config::MIN_DIRTINESS_SECS {
        return Err(format!(
            "max_circuit_dirtiness_secs = {} is too short (at least {})",
            p.max_circuit_dirtiness_secs,
            super::config::MIN_DIRTINESS_SECS
        ));
    }
    cfg.max_dirtiness = Duration::from_secs(p.max_circuit_dirtiness_secs);
    // The network may still be forming (or briefly unreachable): keep trying, saying why.
    let client = loop {
        match Client::bootstrap(cfg.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                eprintln!("bootstrap failed: {e}; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    // Onion services: a service that cannot start (its key file) stops the proxy, so a
    // configuration mistake is not silently ignored.
    let mut running = Vec::new();
    for s in services {
        let service = onion_service::launch(client.clone(), s)
            .await
            .map_err(|e| e.to_string())?;
        println!("onion service: {}", service.address());
        running.push(service);
    }
    let mut connector: Arc<dyn Connector> = Arc::new(client.clone());
    println!("SOCKS proxy listening on {}", p.socks_listen);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let (Some(section), Some(ccfg)) = (&control_section, &control_cfg) {
        connector = events.observe(connector);
        let c = super::control::start(
            section,
            ccfg,
            client.clone(),
            events,
            stop_rx.clone(),
            false,
        )
        .await?;
        for addr in &c.addresses {
            println!("control port listening on {addr}");
        }
        if let Some(cookie) = &c.cookie_file {
            println!("control cookie file: {}", cookie.display());
        }
    }
    let mut stop = stop_rx.clone();
    let socks_task = tokio::spawn(serve_socks(
        socks,
        0,
        Arc::clone(&connector),
        proxy_cfg.clone(),
        async move {
            let _ = stop.changed().await;
        },
    ));
    if let Some(http) = http {
        let mut stop = stop_rx.clone();
        tokio::spawn(serve_http_connect(
            http,
            1,
            connector,
            proxy_cfg,
            async move {
                let _ = stop.changed().await;
            },
        ));
    }
    // SIGHUP-free NEWNYM: SIGUSR1 asks for fresh circuits.
    let nym_client = client.clone();
    tokio::spawn(async move {
        if let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            while sig.recv().await.is_some() {
                nym_client.new_identity().await;
            }
        }
    });
    wait_for_ctrl_c().await?;
    let _ = stop_tx.send(true);
    let _ = socks_task.await;
    Ok(())
}

/// `allium demo-server --listen ADDR`.
pub(crate) async fn demo_server(listen: SocketAddr) -> CmdResult {
    let addr = demo_server::start_on(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("demo server listening on http://{addr}/");
    wait_for_ctrl_c().await
}

/// `allium keygen --data-dir DIR`.
pub(crate) fn keygen(dir: &Path) -> CmdResult {
    make_private_dir(dir)?;
    let keys = RelayKeys::load_or_create(dir, &Clock::system()).map_err(|e| e.to_string())?;
    println!("{}", keys.identity());
    Ok(())
}

async fn start_metrics(
    metrics: Option<&config::MetricsSection>,
    handle: &relay::RelayHandle,
) -> CmdResult {
    if let Some(m) = metrics {
        let listener = TcpListener::bind(m.listen)
            .await
            .map_err(|e| format!("cannot listen for metrics on {}: {e}", m.listen))?;
        // The bound address, not the configured one: with port 0 the OS picks it.
        let bound = listener.local_addr().unwrap_or(m.listen);
        tokio::spawn(crate::relay::metrics::serve_with(
            listener,
            Arc::clone(handle.shared()),
            m.limits(),
        ));
        println!("metrics on http://{bound}/");
    }
    Ok(())
}

async fn wait_for_ctrl_c() -> CmdResult {
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))
}
