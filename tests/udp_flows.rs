//! UDP flows through real relays on 127.0.0.1 (issue 20): datagrams of every size cross
//! three hops and come back; an exit without a UDP policy refuses the flow by policy; a
//! client flooding datagrams stays within the exit's limits and does not starve an
//! honest stream on another circuit through the same relays.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allium::cell::{EndReason, TargetAddr};
use allium::dir::ExitPolicy;
use allium::proto::StreamOpenError;
use allium::relay::RelayLimits;

mod common;
use common::{udp_exit_circuit, NO_HANG};

/// A TCP server that counts what one connection sends until EOF.
async fn tcp_sink() -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    (addr, task)
}

/// Sends `n` bytes on a stream of `circ` to `to`, then closes it.
async fn send_through(
    circ: &allium::proto::CircuitHandle,
    to: SocketAddr,
    n: usize,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut s = circ
        .open_stream(TargetAddr::Ip(to.ip()), to.port(), NO_HANG)
        .await
        .map_err(std::io::Error::other)?;
    let chunk = vec![0x5A; 16 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        s.write_all(&chunk[..k]).await?;
        left -= k;
    }
    s.shutdown().await
}

fn payload(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + salt) % 251) as u8).collect()
}

#[tokio::test]
async fn datagrams_of_every_size_cross_three_hops_and_back() {
    let echo = common::udp_echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        ExitPolicy::default_exit_allow_loopback(),
        RelayLimits::default(),
    )
    .await;
    let flow = circ
        .open_udp(TargetAddr::Ip(echo.ip()), echo.port(), NO_HANG)
        .await
        .unwrap();
    // One at a time: loopback loses nothing, so every echo must come back intact.
    for (i, len) in [
        0usize, 1, 160, 486, 487, 488, 974, 975, 1200, 1461, 1462, 1472,
    ]
    .into_iter()
    .enumerate()
    {
        let p = payload(len, i);
        flow.send(&p).unwrap();
        let back = tokio::time::timeout(NO_HANG, flow.recv()).await.unwrap();
        assert_eq!(back.as_deref(), Some(&p[..]), "datagram of {len} bytes");
    }
    assert!(matches!(
        flow.send(&[0; 1473]),
        Err(allium::proto::UdpSendError::TooLong(1473))
    ));
    // A burst: what comes back is intact and in order (nothing is retransmitted).
    // (An application may have 64 datagrams waiting for the circuit task: past that,
    // QueueFull, and it tries again.)
    for i in 0..200 {
        while let Err(e) = flow.send(&payload(160, i)) {
            assert_eq!(e, allium::proto::UdpSendError::QueueFull);
            tokio::task::yield_now().await;
        }
    }
    let mut got = 0;
    while got < 200 {
        match tokio::time::timeout(Duration::from_secs(5), flow.recv()).await {
            Ok(Some(d)) => {
                assert_eq!(d.len(), 160);
                got += 1;
            }
            _ => break,
        }
    }
    // Under congestion control a new circuit's window is 124 cells each way and grows per
    // round trip: of a burst sent at once, what exceeds the window and the 32-datagram
    // queue is dropped oldest-first (by design: datagrams are never held up).
    assert!(got >= 100, "only {got} of 200 came back over loopback");
}

#[tokio::test]
async fn an_exit_without_a_udp_policy_refuses_the_flow_by_policy() {
    let echo = common::udp_echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        ExitPolicy::reject_all(),
        RelayLimits::default(),
    )
    .await;
    let err = circ
        .open_udp(TargetAddr::Ip(echo.ip()), echo.port(), NO_HANG)
        .await
        .unwrap_err();
    assert_eq!(err, StreamOpenError::Refused(EndReason::ExitPolicy));
    // The TCP side of the same exit still works: the circuit was not torn down.
    assert!(!circ.is_closed());
}

#[tokio::test]
async fn the_flow_limit_refuses_cleanly() {
    let echo = common::udp_echo().await;
    let limits = RelayLimits {
        udp_flows: 2,
        ..RelayLimits::default()
    };
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        ExitPolicy::default_exit_allow_loopback(),
        limits,
    )
    .await;
    let target = TargetAddr::Ip(echo.ip());
    let a = circ
        .open_udp(target.clone(), echo.port(), NO_HANG)
        .await
        .unwrap();
    let _b = circ
        .open_udp(target.clone(), echo.port(), NO_HANG)
        .await
        .unwrap();
    let third = circ.open_udp(target.clone(), echo.port(), NO_HANG).await;
    assert_eq!(
        third.unwrap_err(),
        StreamOpenError::Refused(EndReason::ResourceLimit)
    );
    // Closing one gives its slot back.
    drop(a);
    let mut reopened = None;
    for _ in 0..50 {
        match circ.open_udp(target.clone(), echo.port(), NO_HANG).await {
            Ok(f) => {
                reopened = Some(f);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        reopened.is_some(),
        "a closed flow's slot was never given back"
    );
    assert!(!circ.is_closed());
}

#[tokio::test]
async fn a_flooding_client_stays_within_the_exit_limits_and_starves_no_stream() {
    let echo = common::udp_echo().await;
    let limits = RelayLimits {
        udp_queued_bytes: 256 * 1024,
        ..RelayLimits::default()
    };
    let (relays, flood_circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        ExitPolicy::default_exit_allow_loopback(),
        limits.clone(),
    )
    .await;
    let exit = Arc::clone(relays[2].shared());
    // An honest TCP stream on another circuit through the same three relays.
    let honest = common::build_through(&relays).await.into_handle();
    let (sink_addr, sink) = tcp_sink().await;
    let flow = flood_circ
        .open_udp(TargetAddr::Ip(echo.ip()), echo.port(), NO_HANG)
        .await
        .unwrap();
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f2 = Arc::clone(&flooding);
    let flooder = tokio::spawn(async move {
        let mut sent = 0u64;
        let big = vec![0xAB; 1472];
        while f2.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..64 {
                if flow.send(&big).is_ok() {
                    sent += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        (sent, flow)
    });
    let mut peak = 0;
    let honest_bytes = 4 * 1024 * 1024;
    let transfer = send_through(&honest, sink_addr, honest_bytes);
    tokio::pin!(transfer);
    let sent = loop {
        tokio::select! {
            r = &mut transfer => break r,
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                peak = peak.max(exit.datagrams.used());
            }
        }
    };
    sent.expect("the honest stream finished under the flood");
    assert_eq!(sink.await.unwrap(), honest_bytes);
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (datagrams, _flow) = flooder.await.unwrap();
    println!("flooder queued {datagrams} datagrams; exit waiting-queue peak {peak} B");
    assert!(peak <= limits.udp_queued_bytes, "peak {peak}");
    assert!(!honest.is_closed());
}
