//! `allium bench udp`: UDP flows on an in-process test network. A voice-like stream
//! (160-byte datagrams at a fixed rate) gives loss and round trips through 3 hops (an exit
//! chosen for its UDP policy) and 6 hops (an onion service's UDP port); a run that sends
//! as fast as the circuit takes gives datagrams per second per circuit. Everything is
//! echoed by a UDP server on 127.0.0.1, so each figure is a round trip.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::net::UdpSocket;

use crate::cell::{Hostname, TargetAddr};
use crate::client::onion_service::{launch, ServiceConfig};
use crate::client::{Client, ClientConfig, Isolation};
use crate::proto::UdpFlow;
use crate::testnet::{TestNet, TestNetConfig};

use super::client::quantile;

/// Options of `allium bench udp`.
#[derive(Debug, Args)]
pub struct UdpBenchArgs {
    /// Datagrams (160 bytes each) in each voice run.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Voice datagrams per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Seconds of each as-fast-as-possible run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A voice run's figures.
#[derive(Debug, Clone, Copy)]
struct Voice {
    sent: usize,
    received: usize,
    median_ms: f64,
    p99_ms: f64,
}

/// An as-fast-as-possible run's figures.
#[derive(Debug, Clone, Copy)]
struct Rate {
    size: usize,
    accepted_per_s: f64,
    echoed_per_s: f64,
}

/// `allium bench udp` (called on a blocking thread: runs its own runtime).
pub(crate) fn run(args: UdpBenchArgs) -> Result<(), String> {
    if args.count == 0 || args.rate == 0 || args.seconds == 0 {
        return Err("--count, --rate and --seconds must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(bench(args))
}

async fn bench(args: UdpBenchArgs) -> Result<(), String> {
    let say = |m: &str| {
        if !args.json {
            eprintln!("bench udp: {m}");
        }
    };
    say("starting a test network (1 authority, 6 relays, 2 exits)");
    let net = TestNet::start(&TestNetConfig {
        authorities: 1,
        relays: 6,
        exits: 2,
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let echo = udp_echo().await.map_err(|e| e.to_string())?;
    let cfg = ClientConfig::new(net.authority_info.clone());
    let client = Client::bootstrap(cfg.clone())
        .await
        .map_err(|e| e.to_string())?;
    let iso = Isolation::default();
    say("3 hops: voice, then as fast as the circuit takes");
    let flow = client
        .open_udp(TargetAddr::Ip(echo.ip()), echo.port(), &iso)
        .await
        .map_err(|e| format!("no flow through an exit: {e}"))?;
    let exit_voice = voice(&flow, args.count, args.rate).await?;
    let exit_small = rate(&flow, 160, args.seconds).await;
    let exit_big = rate(&flow, 1472, args.seconds).await;
    drop(flow);

    say("6 hops: publishing an onion service with UDP port 7");
    let dir = std::env::temp_dir().join(format!("allium-bench-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _cleanup = super::TempDir(dir.clone());
    let service_client = Client::bootstrap(cfg).await.map_err(|e| e.to_string())?;
    let mut svc = ServiceConfig::new(dir.join("bench.key"), Vec::new());
    svc.udp_ports = vec![(7, echo)];
    let service = launch(service_client, svc)
        .await
        .map_err(|e| e.to_string())?;
    if !service.wait_published(Duration::from_secs(90)).await {
        return Err("the onion service was not published in 90 s".into());
    }
    let host = Hostname::new(&service.address().to_string()).map_err(|e| e.to_string())?;
    let flow = client
        .open_udp(TargetAddr::Hostname(host), 7, &iso)
        .await
        .map_err(|e| format!("no flow to the onion service: {e}"))?;
    say("6 hops: voice, then as fast as the circuit takes");
    let onion_voice = voice(&flow, args.count, args.rate).await?;
    let onion_big = rate(&flow, 1472, args.seconds).await;
    drop(flow);
    service.stop();
    net.shutdown().await;

    let voices = [("3 hops", exit_voice), ("6 hops", onion_voice)];
    let rates = [
        ("3 hops", exit_small),
        ("3 hops", exit_big),
        ("6 hops", onion_big),
    ];
    if args.json {
        let v: Vec<String> = voices
            .iter()
            .map(|(p, v)| {
                format!(
                    "{{\"path\":\"{p}\",\"sent\":{},\"received\":{},\"loss_pct\":{:.2},\
                     \"median_ms\":{:.3},\"p99_ms\":{:.3}}}",
                    v.sent,
                    v.received,
                    loss(v),
                    v.median_ms,
                    v.p99_ms
                )
            })
            .collect();
        let r: Vec<String> = rates
            .iter()
            .map(|(p, r)| {
                format!(
                    "{{\"path\":\"{p}\",\"size\":{},\"accepted_per_s\":{:.0},\"echoed_per_s\":{:.0}}}",
                    r.size, r.accepted_per_s, r.echoed_per_s
                )
            })
            .collect();
        println!("{{\"voice\":[{}],\"rate\":[{}]}}", v.join(","), r.join(","));
    } else {
        println!(
            "voice: {} datagrams of 160 B at {}/s, echoed",
            args.count, args.rate
        );
        for (p, v) in voices {
            println!(
                "  {p}: {}/{} back ({:.1} % lost), round trip median {:.2} ms, p99 {:.2} ms",
                v.received,
                v.sent,
                loss(&v),
                v.median_ms,
                v.p99_ms
            );
        }
        println!(
            "as fast as one circuit takes, {} s each, echoed",
            args.seconds
        );
        for (p, r) in rates {
            println!(
                "  {p}, {} B: {:.0} datagrams/s handed to the flow, {:.0}/s echoed back ({:.1} MB/s each way)",
                r.size,
                r.accepted_per_s,
                r.echoed_per_s,
                r.echoed_per_s * r.size as f64 / 1e6
            );
        }
    }
    Ok(())
}

fn loss(v: &Voice) -> f64 {
    100.0 * (v.sent.saturating_sub(v.received)) as f64 / v.sent.max(1) as f64
}

async fn udp_echo() -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if let Some(d) = buf.get(..n) {
                let _ = sock.send_to(d, from).await;
            }
        }
    });
    Ok(addr)
}

/// `count` 160-byte datagrams at `rate` per second, each carrying its sequence number;
/// echoes are collected until a second after the last one was sent.
async fn voice(flow: &UdpFlow, count: usize, rate: u32) -> Result<Voice, String> {
    let start = Instant::now();
    let gap = Duration::from_secs(1) / rate;
    let mut sent_at: Vec<Option<Instant>> = vec![None; count];
    let mut rtts = Vec::with_capacity(count);
    let mut next = 0usize;
    let at = |i: usize| start + gap.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
    loop {
        let deadline = if next < count {
            at(next)
        } else {
            at(count) + Duration::from_secs(1)
        };
        tokio::select! {
            got = flow.recv() => {
                let d = got.ok_or("the flow closed during the voice run")?;
                let seq = d.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
                let slot = seq.and_then(|s| sent_at.get_mut(s as usize));
                if let Some(t) = slot.and_then(Option::take) {
                    rtts.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if next >= count {
                    break;
                }
                let mut d = vec![0u8; 160];
                if let Some(b) = d.get_mut(..4) {
                    b.copy_from_slice(&u32::try_from(next).unwrap_or(u32::MAX).to_be_bytes());
                }
                if let Some(s) = sent_at.get_mut(next) {
                    *s = Some(Instant::now());
                }
                let _ = flow.send(&d);
                next += 1;
            }
        }
    }
    let received = rtts.len();
    Ok(Voice {
        sent: count,
        received,
        median_ms: quantile(&mut rtts.clone(), 0.5),
        p99_ms: quantile(&mut rtts, 0.99),
    })
}

/// Sends `size`-byte datagrams as fast as the flow accepts them for `seconds`, counting
/// the echoes (and a second more for late ones).
async fn rate(flow: &UdpFlow, size: usize, seconds: u64) -> Rate {
    let echoed = Arc::new(AtomicU64::new(0));
    let run = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut accepted = 0u64;
    let d = vec![0x5Au8; size];
    let counting = async {
        while let Some(_d) = flow.recv().await {
            echoed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let sending = async {
        while start.elapsed() < run {
            // When the flow's queue is full, wait a little instead of spinning: the relays
            // of the in-process network share the two cores with this loop.
            match flow.send(&d) {
                Ok(()) => accepted += 1,
                Err(_) => tokio::time::sleep(Duration::from_micros(200)).await,
            }
            if accepted % 32 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        () = counting => {}
        () = sending => {}
    }
    let secs = run.as_secs_f64();
    Rate {
        size,
        accepted_per_s: accepted as f64 / secs,
        echoed_per_s: echoed.load(Ordering::Relaxed) as f64 / secs,
    }
}
