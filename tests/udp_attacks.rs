//! UDP flows against a malicious client (issue 20, docs/protocol.md §3.4), each attack on
//! real relays over TCP on 127.0.0.1 with the client's logic bypassed where it would stop
//! the attack:
//! * BEGIN_UDP or DATAGRAM on an id a stream holds, BEGIN or DATA on an id a flow holds,
//!   destroys the circuit (one id never names two things);
//! * one circuit cannot take every UDP socket of an exit: past its per-circuit limit its
//!   flows are refused while another circuit still gets one;
//! * a destination flooding a flow with replies does not starve a bulk stream on the same
//!   circuit (datagrams get at most half of each window increment);
//! * an exit whose operator accepts every UDP destination still refuses loopback, private
//!   and IPv4-mapped addresses, by literal or by a name resolving there;
//! * a client pouring DATAGRAM cells into a circuit without any flow control makes no
//!   relay queue datagrams, and an honest stream through the same relays completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;

use allium::cell::datagram::Datagram;
use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::Begin;
use allium::cell::{DestroyReason, EndReason, Hostname, RelayCell, RelayMsg, StreamId, TargetAddr};
use allium::dir::ExitPolicy;
use allium::proto::{CircuitError, ClientCircuit, StreamOpenError};
use allium::relay::{udp_policy_from_config, RelayLimits};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};

mod common;
use common::{build_through, udp_exit_circuit, udp_exit_relays, NO_HANG};

fn loopback() -> ExitPolicy {
    ExitPolicy::default_exit_allow_loopback()
}

async fn destroyed(circ: &mut ClientCircuit) -> CircuitError {
    loop {
        match tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .expect("the circuit must be torn down, not hang")
        {
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

fn cell(id: u16, msg: RelayMsg) -> RelayCell {
    RelayCell::new(StreamId::new(id), msg).unwrap()
}

fn to(addr: SocketAddr) -> Begin {
    Begin::new(TargetAddr::Ip(addr.ip()), addr.port()).unwrap()
}

async fn connected(circ: &mut ClientCircuit) {
    let (hop, c, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hop, 2);
    assert!(matches!(c.msg(), AtClient::Connected(_)), "{c:?}");
}

/// A TCP listener that accepts and holds connections; returns its address.
async fn tcp_holder() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A UDP socket that never reads (its buffer fills; the exit must drop, not queue).
async fn udp_sink() -> (SocketAddr, UdpSocket) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (s.local_addr().unwrap(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_never_names_a_stream_and_a_flow() {
    let relays = udp_exit_relays(loopback(), loopback(), RelayLimits::default()).await;
    let tcp = tcp_holder().await;
    let (udp, _keep) = udp_sink().await;

    // BEGIN_UDP on an open stream's id.
    let mut circ = build_through(&relays).await;
    circ.send(2, cell(5, RelayMsg::Begin(to(tcp))))
        .await
        .unwrap();
    connected(&mut circ).await;
    circ.send(2, cell(5, RelayMsg::BeginUdp(to(udp))))
        .await
        .unwrap();
    let err = destroyed(&mut circ).await;
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );

    // BEGIN (and BEGIN_DIR) on an open flow's id.
    for msg in [RelayMsg::Begin(to(tcp)), RelayMsg::BeginDir] {
        let mut circ = build_through(&relays).await;
        circ.send(2, cell(6, RelayMsg::BeginUdp(to(udp))))
            .await
            .unwrap();
        connected(&mut circ).await;
        circ.send(2, cell(6, msg)).await.unwrap();
        let err = destroyed(&mut circ).await;
        assert!(
            matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
            "{err:?}"
        );
    }

    // DATAGRAM on an open stream's id, and DATA on an open flow's id.
    let mut circ = build_through(&relays).await;
    circ.send(2, cell(8, RelayMsg::Begin(to(tcp))))
        .await
        .unwrap();
    connected(&mut circ).await;
    let frag = Datagram::split(0, b"on a stream").unwrap().remove(0);
    circ.send(2, cell(8, RelayMsg::Datagram(frag)))
        .await
        .unwrap();
    let err = destroyed(&mut circ).await;
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
    let mut circ = build_through(&relays).await;
    circ.send(2, cell(9, RelayMsg::BeginUdp(to(udp))))
        .await
        .unwrap();
    connected(&mut circ).await;
    let data = allium::cell::relay_msg::Data::new(b"on a flow".to_vec()).unwrap();
    circ.send(2, cell(9, RelayMsg::Data(data))).await.unwrap();
    let err = destroyed(&mut circ).await;
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );

    // A second BEGIN_UDP on an open flow's id.
    let mut circ = build_through(&relays).await;
    circ.send(2, cell(7, RelayMsg::BeginUdp(to(udp))))
        .await
        .unwrap();
    connected(&mut circ).await;
    circ.send(2, cell(7, RelayMsg::BeginUdp(to(udp))))
        .await
        .unwrap();
    let err = destroyed(&mut circ).await;
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_accepting_all_udp_still_refuses_special_addresses() {
    let everything = udp_policy_from_config(Some(&["accept *:*"])).unwrap();
    let (_relays, circ) = udp_exit_circuit(loopback(), everything, RelayLimits::default()).await;
    let (sink, _keep) = udp_sink().await;
    let targets = [
        TargetAddr::Ip(sink.ip()),
        TargetAddr::Ip("10.1.2.3".parse().unwrap()),
        TargetAddr::Ip("192.168.1.1".parse().unwrap()),
        TargetAddr::Ip("169.254.169.254".parse().unwrap()),
        TargetAddr::Ip("::ffff:127.0.0.1".parse().unwrap()),
        TargetAddr::Ip("::1".parse().unwrap()),
        TargetAddr::Hostname(Hostname::new("localhost").unwrap()),
    ];
    for target in targets {
        let err = circ
            .open_udp(target.clone(), sink.port(), NO_HANG)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StreamOpenError::Refused(EndReason::ExitPolicy),
            "{target:?}"
        );
    }
    // Every refusal was an END: the circuit is fine.
    assert!(!circ.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_flood_without_flow_control_queues_nothing() {
    let relays = udp_exit_relays(loopback(), loopback(), RelayLimits::default()).await;
    let (sink, _keep) = udp_sink().await;
    let mut flood = build_through(&relays).await;
    flood
        .send(2, cell(9, RelayMsg::BeginUdp(to(sink))))
        .await
        .unwrap();
    connected(&mut flood).await;
    // An honest bulk stream on another circuit through the same relays.
    let honest = build_through(&relays).await.into_handle();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = l.local_addr().unwrap();
    let counted = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = vec![0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let frag = Datagram::split(0, &[0x42; 487]).unwrap().remove(0);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::clone(&done);
    let flooding = tokio::spawn(async move {
        // Never reads the SENDMEs the exit sends; sends as fast as the channel takes,
        // at least 20,000 cells and until the honest transfer is over.
        let mut seq = 0u32;
        while seq < 20_000 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let f = Datagram::new(seq as u16, 0, 1, frag.bytes().to_vec()).unwrap();
            if flood.send(2, cell(9, RelayMsg::Datagram(f))).await.is_err() {
                break;
            }
            seq += 1;
        }
        (seq, flood)
    });
    let bytes = 2 * 1024 * 1024;
    {
        use tokio::io::AsyncWriteExt;
        let mut s = honest
            .open_stream(TargetAddr::Ip(dest.ip()), dest.port(), NO_HANG)
            .await
            .unwrap();
        s.write_all(&vec![1u8; bytes]).await.unwrap();
        s.shutdown().await.unwrap();
    }
    assert_eq!(
        tokio::time::timeout(NO_HANG, counted)
            .await
            .unwrap()
            .unwrap(),
        bytes,
        "the honest stream was starved"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, _flood) = tokio::time::timeout(NO_HANG, flooding)
        .await
        .unwrap()
        .unwrap();
    println!("flooder sent {sent} DATAGRAM cells");
    for r in &relays {
        assert_eq!(r.shared().datagrams.used(), 0, "a relay queued datagrams");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_circuit_cannot_take_every_udp_socket() {
    let limits = RelayLimits {
        udp_flows_per_circuit: 3,
        ..RelayLimits::default()
    };
    let relays = udp_exit_relays(loopback(), loopback(), limits).await;
    let (sink, _keep) = udp_sink().await;
    let hog = build_through(&relays).await.into_handle();
    let target = TargetAddr::Ip(sink.ip());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            hog.open_udp(target.clone(), sink.port(), NO_HANG)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        hog.open_udp(target.clone(), sink.port(), NO_HANG)
            .await
            .unwrap_err(),
        StreamOpenError::Refused(EndReason::ResourceLimit)
    );
    let other = build_through(&relays).await.into_handle();
    assert!(other.open_udp(target, sink.port(), NO_HANG).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_flood_does_not_starve_a_stream_on_the_same_circuit() {
    let relays = udp_exit_relays(loopback(), loopback(), RelayLimits::default()).await;
    let circ = build_through(&relays).await.into_handle();
    // The destination answers every datagram with 20 full-size ones.
    let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let flood_addr = flooder.local_addr().unwrap();
    tokio::spawn(async move {
        let mut b = [0u8; 2048];
        while let Ok((_, from)) = flooder.recv_from(&mut b).await {
            for _ in 0..20 {
                let _ = flooder.send_to(&[0xEE; 1472], from).await;
            }
        }
    });
    let flow = circ
        .open_udp(TargetAddr::Ip(flood_addr.ip()), flood_addr.port(), NO_HANG)
        .await
        .unwrap();
    let poking = tokio::spawn(async move {
        // Keeps the flood going, and reads (and drops) what it gets.
        loop {
            let _ = flow.send(b"more");
            let got = tokio::time::timeout(std::time::Duration::from_millis(2), flow.recv()).await;
            if let Ok(None) = got {
                return;
            }
        }
    });
    // A bulk download on the same circuit completes meanwhile.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let src = l.local_addr().unwrap();
    let bytes = 4 * 1024 * 1024;
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = l.accept().await.unwrap();
        let _ = s.write_all(&vec![3u8; bytes]).await;
        let _ = s.shutdown().await;
    });
    let mut s = circ
        .open_stream(TargetAddr::Ip(src.ip()), src.port(), NO_HANG)
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(NO_HANG, s.read_to_end(&mut got))
        .await
        .expect("the stream was starved by the flood")
        .unwrap();
    assert_eq!(got.len(), bytes);
    poking.abort();
}
