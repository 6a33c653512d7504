//! Relays on real TCP sockets (127.0.0.1, ephemeral ports), in-process: circuits are
//! created, extended and used end to end; tampering, dead relays, wrong identities and
//! many circuits on one channel are handled cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::Begin;
use allium::cell::{DestroyReason, EndReason, RelayCell, RelayMsg, StreamId, TargetAddr};
use allium::link::{LinkConfig, LinkError, RECORD_LEN};
use allium::proto::{CircuitError, ClientChannel, ClientCircuit};
use allium::relay::{RelayHandle, RelayLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::{target, NO_HANG};

async fn start_relay() -> RelayHandle {
    start_relay_with(RelayLimits::default()).await
}

async fn start_relay_with(limits: RelayLimits) -> RelayHandle {
    common::start_relay_with(limits, None).await
}

async fn three_relays() -> Vec<RelayHandle> {
    vec![
        start_relay().await,
        start_relay().await,
        start_relay().await,
    ]
}

async fn build(relays: &[RelayHandle]) -> ClientCircuit {
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    build_on(&chan, relays).await
}

async fn build_on(chan: &Arc<ClientChannel>, relays: &[RelayHandle]) -> ClientCircuit {
    let mut circ = ClientCircuit::create(chan, &target(&relays[0]), NO_HANG)
        .await
        .unwrap();
    for r in &relays[1..] {
        circ.extend(&target(r), NO_HANG).await.unwrap();
    }
    circ
}

fn begin(stream: u16) -> RelayCell {
    let target = TargetAddr::Ip("127.0.0.1".parse().unwrap());
    RelayCell::new(
        StreamId::new(stream),
        RelayMsg::Begin(Begin::new(target, 80).unwrap()),
    )
    .unwrap()
}

/// Sends BEGIN to `hop` and expects that hop's END (none of these relays is an exit):
/// a full round trip through every hop up to it.
async fn round_trip(circ: &mut ClientCircuit, hop: usize, stream: u16) {
    circ.send(hop, begin(stream)).await.unwrap();
    let (from, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .expect("reply")
        .unwrap();
    assert_eq!(from, hop);
    assert_eq!(cell.stream(), StreamId::new(stream));
    assert_eq!(cell.msg(), &AtClient::End(EndReason::ExitPolicy));
}

fn assert_uniform_records(relays: &[RelayHandle]) {
    for r in relays {
        let shared = r.shared();
        let mut chans = shared.all_channels();
        chans.extend(shared.relay_channels.lock().unwrap().values().cloned());
        assert!(!chans.is_empty());
        for c in chans {
            let s = &c.stats;
            assert!(!s.saw_odd_size(), "a record of another size was seen");
            assert_eq!(s.bytes_read(), s.records_read() * RECORD_LEN as u64);
            assert_eq!(s.bytes_written(), s.records_written() * RECORD_LEN as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hop_circuit_carries_cells_end_to_end() {
    let relays = three_relays().await;
    let mut circ = build(&relays).await;
    assert_eq!(circ.len(), 3);
    for (i, hop) in [2usize, 0, 1, 2].into_iter().enumerate() {
        round_trip(&mut circ, hop, 1 + i as u16).await;
    }
    // Many cells to the last hop and back, in order.
    for stream in 100..400u16 {
        circ.send(2, begin(stream)).await.unwrap();
    }
    for stream in 100..400u16 {
        let (hop, cell, _) = circ.recv().await.unwrap();
        assert_eq!((hop, cell.stream()), (2, StreamId::new(stream)));
    }
    // TRUNCATE at hop 1 drops hop 2; the circuit keeps working up to hop 1.
    circ.send(1, RelayCell::new(None, RelayMsg::Truncate).unwrap())
        .await
        .unwrap();
    let (hop, cell, _) = circ.recv().await.unwrap();
    assert_eq!(hop, 1);
    assert_eq!(cell.msg(), &AtClient::Truncated(DestroyReason::Requested));
    assert_uniform_records(&relays);
    let client_stats = circ.channel().stats.clone();
    assert!(!client_stats.saw_odd_size());
    assert_eq!(
        client_stats.bytes_written(),
        client_stats.records_written() * RECORD_LEN as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_middle_relay_ends_the_circuit_at_both_ends() {
    let mut relays = three_relays().await;
    let mut circ = build(&relays).await;
    round_trip(&mut circ, 2, 1).await;
    let exit = relays.pop().unwrap();
    let middle = relays.pop().unwrap();
    middle.shutdown().await;
    // Client side: the guard learns its next hop is gone and destroys the circuit.
    let err = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .expect("the client must not hang")
        .unwrap_err();
    assert!(
        matches!(
            err,
            CircuitError::Destroyed(DestroyReason::ChannelClosed | DestroyReason::Destroyed)
        ),
        "{err:?}"
    );
    // Exit side: its circuit is torn down too.
    let open = &exit.shared().counters.circuits_open;
    tokio::time::timeout(NO_HANG, async {
        while open.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the exit must tear its circuit down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expecting_the_wrong_identity_is_refused() {
    let relays = three_relays().await;
    let mut wrong = target(&relays[0]);
    wrong.identity = relays[1].identity();
    let err = ClientChannel::connect(&wrong, &LinkConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::IdentityMismatch { .. }), "{err}");
    assert!(err.to_string().contains("identity"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_to_a_relay_with_the_wrong_identity_fails_cleanly() {
    let relays = three_relays().await;
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = ClientCircuit::create(&chan, &target(&relays[0]), NO_HANG)
        .await
        .unwrap();
    // Address of relay 1, identity (and onion key) of relay 2.
    let mut lying = target(&relays[2]);
    lying.addr = relays[1].local_addr();
    let err = circ.extend(&lying, NO_HANG).await.unwrap_err();
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::WrongIdentity)),
        "{err:?}"
    );
}

/// A proxy between client and guard that flips one byte of record number `victim`
/// (counted from the start of the connection) in the client→relay direction.
async fn flipping_proxy(upstream: std::net::SocketAddr, victim: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut relay = TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.split();
        let (mut rr, mut rw) = relay.split();
        let up = async {
            let mut record = vec![0u8; RECORD_LEN];
            let mut n = 0usize;
            while cr.read_exact(&mut record).await.is_ok() {
                if n == victim {
                    record[100] ^= 0x01;
                }
                n += 1;
                if rw.write_all(&record).await.is_err() {
                    break;
                }
            }
            let _ = rw.shutdown().await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut rr, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_on_a_link_is_detected() {
    let relays = three_relays().await;
    // Records 0 and 1 are the handshake (LINK_INIT, LINK_FINISH); 2 is NETINFO; 3 is
    // CREATE; flip one inside the first RELAY_EARLY (the EXTEND), record 4.
    let proxy = flipping_proxy(relays[0].local_addr(), 4).await;
    let mut via_proxy = target(&relays[0]);
    via_proxy.addr = proxy;
    let chan = ClientChannel::connect(&via_proxy, &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = ClientCircuit::create(&chan, &via_proxy, NO_HANG)
        .await
        .unwrap();
    let err = circ.extend(&target(&relays[1]), NO_HANG).await.unwrap_err();
    // The guard's record layer rejects the record and closes the channel.
    assert!(
        matches!(err, CircuitError::ChannelClosed | CircuitError::Link(_)),
        "{err:?}"
    );
    tokio::time::timeout(NO_HANG, chan.sender.closed())
        .await
        .expect("the channel must close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_circuits_share_one_channel() {
    let relays = three_relays().await;
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let chan = Arc::clone(&chan);
        let targets: Vec<_> = relays.iter().map(target).collect();
        tasks.push(tokio::spawn(async move {
            let mut circ = ClientCircuit::create(&chan, &targets[0], NO_HANG).await?;
            for t in &targets[1..] {
                circ.extend(t, NO_HANG).await?;
            }
            circ.send(2, begin(7)).await?;
            let (hop, cell, _) = circ.recv().await?;
            assert_eq!(hop, 2);
            assert_eq!(cell.msg(), &AtClient::End(EndReason::ExitPolicy));
            Ok::<_, CircuitError>(circ)
        }));
    }
    let mut circuits = Vec::new();
    for t in tasks {
        circuits.push(t.await.unwrap().unwrap());
    }
    assert_eq!(chan.circuits.len(), 1000);
    // One channel per pair of relays, reused by all 1000 circuits.
    assert_eq!(relays[0].shared().relay_channels.lock().unwrap().len(), 1);
    assert_eq!(relays[1].shared().all_channels().len(), 1);
    assert_eq!(
        relays[1]
            .shared()
            .counters
            .circuits_open
            .load(std::sync::atomic::Ordering::Relaxed),
        1000
    );
    assert_uniform_records(&relays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_channels_with_circuits_stay_open_and_empty_ones_close() {
    let limits = RelayLimits {
        idle_channel_timeout_secs: 1,
        ..RelayLimits::default()
    };
    let relay = start_relay_with(limits).await;
    let cfg = LinkConfig {
        idle_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    };
    let busy = ClientChannel::connect(&target(&relay), &cfg).await.unwrap();
    let mut circ = ClientCircuit::create(&busy, &target(&relay), NO_HANG)
        .await
        .unwrap();
    let empty = ClientChannel::connect(&target(&relay), &cfg).await.unwrap();
    // Three idle timeouts of silence from the application.
    tokio::time::sleep(Duration::from_secs(3)).await;
    round_trip(&mut circ, 0, 1).await;
    assert!(!busy.is_closed());
    tokio::time::timeout(NO_HANG, empty.sender.closed())
        .await
        .expect("a channel without circuits is closed by the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_hop_circuits_work() {
    // The relays' RELAY_EARLY budget (7, so 8 hops) is tested on an 8-hop circuit in
    // tests/adversarial_protocol.rs (more_relay_early_cells_than_the_budget_are_refused).
    let mut relays = Vec::new();
    for _ in 0..8 {
        relays.push(start_relay().await);
    }
    let mut circ = build(&relays).await;
    assert_eq!(circ.len(), 8);
    round_trip(&mut circ, 7, 1).await;
    round_trip(&mut circ, 3, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_first_hops_work_and_cannot_be_extended_to() {
    use allium::cell::relay_msg::Extend;
    use allium::cell::HandshakeType;
    let relays = three_relays().await;
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = ClientCircuit::create_fast(&chan, relays[0].identity(), NO_HANG)
        .await
        .unwrap();
    // Extending normally from a fast first hop works.
    circ.extend(&target(&relays[1]), NO_HANG).await.unwrap();
    round_trip(&mut circ, 0, 1).await;
    round_trip(&mut circ, 1, 2).await;
    // (A client spends RELAY_EARLY only on a circuit's first cells; this test plays a
    // client that does not, to reach the relay's refusal.)
    circ.unlimited_relay_early_for_tests();
    // But a fast handshake through EXTEND is refused.
    let t = target(&relays[2]);
    let extend = Extend::new(
        t.addr,
        *t.identity.as_bytes(),
        HandshakeType::Fast1,
        vec![0; 32],
    )
    .unwrap();
    circ.send_early(1, RelayCell::new(None, RelayMsg::Extend(extend)).unwrap())
        .await
        .unwrap();
    let err = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_relay_totals_without_per_client_labels() {
    let relays = three_relays().await;
    let mut circ = build(&relays).await;
    round_trip(&mut circ, 2, 1).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(allium::relay::metrics::serve(
        listener,
        Arc::clone(relays[1].shared()),
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\nallium_circuits_open 1\n"), "{text}");
    assert!(text.contains("allium_cells_relayed_total"), "{text}");
    assert!(text.contains("allium_rejections_total{reason=\"handshake_rate\"} 0"));
    // Labels only ever name a reason: no addresses, identities or destinations.
    for line in text.lines().filter(|l| l.contains('{')) {
        assert!(
            line.starts_with("allium_rejections_total{reason=\""),
            "{line}"
        );
    }
    assert!(!text.contains("127.0.0.1"));
}

/// A client spends RELAY_EARLY only on a circuit's first cells: once it has sent anything
/// else, it refuses to send one (so an EXTEND can never appear mid-circuit, where a hop
/// would see an otherwise normal circuit grow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spend_relay_early_only_on_first_cells() {
    let relays = three_relays().await;
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = build_on(&chan, &relays[..2]).await;
    round_trip(&mut circ, 1, 1).await;
    let err = circ.extend(&target(&relays[2]), NO_HANG).await.unwrap_err();
    assert!(
        matches!(err, CircuitError::Protocol("RELAY_EARLY budget exhausted")),
        "{err:?}"
    );
}
