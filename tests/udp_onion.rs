//! UDP flows through a whole in-process test network (issue 20): a client reaches a UDP
//! echo server through an exit chosen for its UDP policy (3 hops), and through an onion
//! service's UDP port (6 hops: neither end learns the other's address). Each run sends a
//! short voice-like stream (160-byte datagrams at a fixed rate) and reports loss and round
//! trips; nothing here asserts a speed. A port the service did not configure is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use allium::cell::{EndReason, Hostname, TargetAddr};
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::socks_server::{serve_socks, Connector, ProxyConfig};
use allium::client::{Client, ClientConfig, ClientError, Isolation};
use allium::proto::{StreamOpenError, UdpFlow};

mod common;
use common::{prereq, voice};

const NO_HANG: Duration = Duration::from_secs(90);

/// Sends `count` 160-byte datagrams at `rate` per second, each carrying its sequence
/// number, and collects the echoes until a second after the last one was sent. Returns
/// (received, median ms, p99 ms).
async fn voice(flow: &UdpFlow, count: usize, rate: u32) -> (usize, f64, f64) {
    let start = Instant::now();
    let gap = Duration::from_secs(1) / rate;
    let mut sent_at = vec![None; count];
    let mut rtts = Vec::new();
    let mut next = 0;
    let end_after_last = Duration::from_secs(1);
    loop {
        let due = start + gap * next as u32;
        let deadline = if next < count {
            due
        } else {
            start + gap * count as u32 + end_after_last
        };
        tokio::select! {
            got = flow.recv() => {
                let d = got.expect("the flow closed mid-stream");
                assert_eq!(d.len(), 160, "datagram damaged");
                let seq = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
                assert!(d[4..].iter().all(|b| *b == seq as u8), "datagram damaged");
                if let Some(Some(t)) = sent_at.get_mut(seq).map(Option::take) {
                    rtts.push(Instant::elapsed(&t).as_secs_f64() * 1000.0);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if next >= count {
                    break;
                }
                let mut d = vec![next as u8; 160];
                d[..4].copy_from_slice(&(next as u32).to_be_bytes());
                sent_at[next] = Some(Instant::now());
                let _ = flow.send(&d);
                next += 1;
            }
        }
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (rtts.len(), pct(0.5), pct(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_through_an_exit_and_through_an_onion_service() {
    let net = common::net::small_net(6, 2).await;
    let echo = common::udp_echo().await;
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.prebuilt_circuits = 1;
    let visitor = Client::bootstrap(cfg.clone()).await.unwrap();

    // Three hops to the echo server.
    let flow = tokio::time::timeout(
        NO_HANG,
        visitor.open_udp(
            TargetAddr::Ip(echo.ip()),
            echo.port(),
            &Isolation::default(),
        ),
    )
    .await
    .expect("opening hung")
    .expect("no flow through an exit");
    let (got, median, p99) = voice(&flow, 200, 100).await;
    println!("3 hops: {got}/200 back, median {median:.2} ms, p99 {p99:.2} ms");
    assert!(got >= 180, "only {got} of 200 came back over loopback");
    drop(flow);

    // Six hops, through an onion service's UDP port 5060.
    let dir = std::env::temp_dir().join(format!("allium-udp-onion-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let service_client = Client::bootstrap(cfg).await.unwrap();
    let mut svc = ServiceConfig::new(dir.join("voice.key"), Vec::new());
    svc.udp_ports = vec![(5060, echo)];
    let service = launch(service_client, svc).await.unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");
    let host = Hostname::new(&service.address().to_string()).unwrap();
    let flow = tokio::time::timeout(
        NO_HANG,
        visitor.open_udp(
            TargetAddr::Hostname(host.clone()),
            5060,
            &Isolation::default(),
        ),
    )
    .await
    .expect("opening hung")
    .expect("no flow to the service");
    let (got, median, p99) = voice(&flow, 200, 100).await;
    println!("6 hops (onion service): {got}/200 back, median {median:.2} ms, p99 {p99:.2} ms");
    assert!(got >= 180, "only {got} of 200 came back over loopback");

    // A port the service did not open for UDP (5061; nor is its TCP side open) is refused,
    // and the rendezvous circuit (shared with the flow above) keeps working.
    let refused = visitor
        .open_udp(TargetAddr::Hostname(host), 5061, &Isolation::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Stream(StreamOpenError::Refused(
                EndReason::ExitPolicy
            )))
        ),
        "{refused:?}"
    );
    flow.send(&[7; 160]).unwrap();
    let back = tokio::time::timeout(NO_HANG, flow.recv()).await.unwrap();
    assert_eq!(back, Some(vec![7; 160]));

    drop(flow);

    // The independent client, both paths at once (each is 20 s of voice).
    if prereq::require(&[prereq::python3()]) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let connector: std::sync::Arc<dyn Connector> = std::sync::Arc::new(visitor.clone());
        let served = tokio::spawn(serve_socks(
            listener,
            0,
            connector,
            ProxyConfig::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let onion = format!("{}:5060", service.address());
        let echo_text = echo.to_string();
        let (exit_run, onion_run) = tokio::join!(
            voice::run(proxy, &echo_text, 1000, 50),
            voice::run(proxy, &onion, 1000, 50),
        );
        for (path, figures) in [("3 hops", exit_run), ("6 hops", onion_run)] {
            let received = voice::number(&figures, "received");
            println!(
                "python, {path}: {received}/1000 back, loss {:.1} %, median {:.2} ms, p99 {:.2} ms",
                voice::number(&figures, "loss_pct"),
                voice::number(&figures, "median_ms"),
                voice::number(&figures, "p99_ms"),
            );
            assert!(received >= 900.0, "{path}: only {received} of 1000 echoes");
        }
        let _ = stop.send(());
        let _ = served.await;
    }

    service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
