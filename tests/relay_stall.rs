//! A next hop that stops reading its channel must not stall the relay's other channels.
//!
//! Relays on real TCP sockets (127.0.0.1, ephemeral ports), in-process. Relay R extends a
//! circuit to N through a proxy that, on command, stops reading from R (both sockets stay
//! open: to R it looks like a peer that stopped reading, with a zero TCP window). The
//! client floods that circuit; R's channel to N fills, the circuit's task can no longer
//! send, its own queue fills, and R stops reading the client's channel, which an honest
//! circuit shares. R must not wait on that circuit: the stalled circuit is destroyed (at
//! the latest after `stalled_send_secs`, and at once when its own queue fills while it is
//! stalled) and the honest circuit keeps working, also while the next hop still does not
//! read and further circuits through it are flooded.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::Begin;
use allium::cell::{DestroyReason, EndReason, RelayCell, RelayMsg, StreamId, TargetAddr};
use allium::link::LinkConfig;
use allium::proto::{CircuitError, ClientChannel, ClientCircuit};
use allium::relay::{RelayHandle, RelayLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod common;
use common::{start_relay_with, target, NO_HANG};

/// A proxy in front of `upstream` for one connection. It forwards both ways until
/// `stall` is set to true; from then on it reads nothing more from the connecting side
/// (but keeps both sockets open), and still forwards the other way.
async fn stalling_proxy(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stall_tx, mut stall) = watch::channel(false);
    tokio::spawn(async move {
        let (mut near, _) = listener.accept().await.unwrap();
        let mut far = TcpStream::connect(upstream).await.unwrap();
        let (mut nr, mut nw) = near.split();
        let (mut fr, mut fw) = far.split();
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    biased;
                    () = async { let _ = stall.wait_for(|s| *s).await; } => {
                        // Stop reading, keep the connection: a peer that went quiet.
                        std::future::pending::<()>().await;
                    }
                    n = nr.read(&mut buf) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if fw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    },
                }
            }
            let _ = fw.shutdown().await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut fr, &mut nw).await;
            let _ = nw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    (addr, stall_tx)
}

/// BEGIN to `hop` (not an exit) and its END back: a full round trip.
async fn round_trip(circ: &mut ClientCircuit, hop: usize, stream: u16) {
    let target = TargetAddr::Ip("127.0.0.1".parse().unwrap());
    let begin = RelayCell::new(
        StreamId::new(stream),
        RelayMsg::Begin(Begin::new(target, 80).unwrap()),
    )
    .unwrap();
    circ.send(hop, begin).await.unwrap();
    let (from, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .expect("the honest circuit must still answer")
        .unwrap();
    assert_eq!(from, hop);
    assert_eq!(cell.msg(), &AtClient::End(EndReason::ExitPolicy));
}

fn stalled_sends(r: &RelayHandle) -> u64 {
    r.shared().counters.stalled_sends.load(Ordering::Relaxed)
}

/// R (with `stalled_send_secs` as given and the dead-peer timeout off, so only the stall
/// handling can end a stalled circuit), N behind a stalling proxy, M, and one client
/// channel into R that every circuit of a test shares.
struct Scene {
    r: RelayHandle,
    _n: RelayHandle,
    m: RelayHandle,
    stall: watch::Sender<bool>,
    n_via_proxy: allium::proto::RelayTarget,
    chan: Arc<ClientChannel>,
}

impl Scene {
    async fn start(stalled_send_secs: u64) -> Scene {
        // The dead-peer timeout is off: a kernel that applies TCP_USER_TIMEOUT to
        // zero-window probing would otherwise close R's channel to N after a while.
        let r = start_relay_with(
            RelayLimits {
                stalled_send_secs,
                dead_peer_timeout_secs: 0,
                ..RelayLimits::default()
            },
            None,
        )
        .await;
        let n = start_relay_with(RelayLimits::default(), None).await;
        let m = start_relay_with(RelayLimits::default(), None).await;
        let (proxy, stall) = stalling_proxy(n.local_addr()).await;
        let mut n_via_proxy = target(&n);
        n_via_proxy.addr = proxy;
        let chan = ClientChannel::connect(&target(&r), &LinkConfig::default())
            .await
            .unwrap();
        Scene {
            r,
            _n: n,
            m,
            stall,
            n_via_proxy,
            chan,
        }
    }

    /// A circuit R → `next` on the shared channel.
    async fn circuit(&self, next: &allium::proto::RelayTarget) -> ClientCircuit {
        let mut c = ClientCircuit::create(&self.chan, &target(&self.r), NO_HANG)
            .await
            .unwrap();
        c.extend(next, NO_HANG).await.unwrap();
        c
    }

    /// An honest circuit R → M on the shared channel.
    async fn honest(&self) -> ClientCircuit {
        self.circuit(&target(&self.m)).await
    }

    /// Waits until R counts exactly `n` open circuits.
    async fn wait_open(&self, n: u64, why: &str) {
        tokio::time::timeout(NO_HANG, async {
            while self
                .r
                .shared()
                .counters
                .circuits_open
                .load(Ordering::Relaxed)
                != n
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .expect(why);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_hop_that_stops_reading_does_not_stall_the_shared_channel() {
    // R gives up on a full neighbour queue after 2 s.
    let sc = Scene::start(2).await;
    let stalled = sc.circuit(&sc.n_via_proxy).await;
    let mut honest = sc.honest().await;
    round_trip(&mut honest, 1, 1).await;

    // N stops reading; the client floods the circuit through it (DROP cells for N, which
    // R forwards unseen) until R gives up on it.
    sc.stall.send(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood(stalled, Arc::clone(&stop));
    tokio::time::timeout(NO_HANG, async {
        while stalled_sends(&sc.r) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stalled circuit must be destroyed, not wait for ever");
    stop.store(true, Ordering::Relaxed);
    // R reads the client's channel again, so the flood's last send completes.
    let (mut stalled, sent) = tokio::time::timeout(NO_HANG, flood)
        .await
        .expect("the client's channel must drain again")
        .unwrap();
    eprintln!("  flooded {sent} cells before R destroyed the stalled circuit");

    // The client learns why.
    let err = destroyed(&mut stalled).await;
    // TIMEOUT if the bound ended it, RESOURCE_LIMIT if R's reader found its queue full
    // while it was stalled (with a flood, usually the latter, well within the bound).
    assert!(
        matches!(
            err,
            CircuitError::Destroyed(DestroyReason::Timeout | DestroyReason::ResourceLimit)
        ),
        "{err:?}"
    );

    // The honest circuit on the same channel into R works, and so does a new one.
    round_trip(&mut honest, 1, 2).await;
    let mut fresh = sc.honest().await;
    round_trip(&mut fresh, 1, 3).await;
    // The stalled circuit is gone at R (its task ended), the honest ones are open.
    sc.wait_open(2, "R must count exactly the two honest circuits open")
        .await;
}

/// Floods `circ` with DROP cells for hop 1 until `stop` is set or the circuit fails;
/// returns the circuit and the cells sent.
fn flood(
    mut circ: ClientCircuit,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(ClientCircuit, u64)> {
    tokio::spawn(async move {
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let drop = RelayCell::new(None, RelayMsg::Drop).unwrap();
            if circ.send(1, drop).await.is_err() {
                break;
            }
            sent += 1;
        }
        (circ, sent)
    })
}

/// Reads `circ` until it fails; returns why.
async fn destroyed(circ: &mut ClientCircuit) -> CircuitError {
    loop {
        match tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .expect("the stalled circuit must be torn down at the client")
        {
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// The attack of the finding: a relay that stops reading, and overlapping circuits through
/// it flooded one after another, would keep R's reader of the shared channel waiting
/// nearly all the time if R waited on a stalled circuit's full queue for the whole
/// `stalled_send_secs`. Here the bound is 600 s, so only R's reader refusing to wait on a
/// stalled circuit can end them: while N still reads nothing, every flooded circuit
/// through it is destroyed (RESOURCE_LIMIT) and the honest circuit sharing the client's
/// channel into R completes round trips during the floods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_circuit_does_not_hold_the_shared_channel_for_its_whole_bound() {
    let sc = Scene::start(600).await;
    // The attacker's circuits (all through the one channel R keeps to N) and the honest
    // one share the client's channel into R.
    let mut attackers = Vec::new();
    for _ in 0..3 {
        attackers.push(sc.circuit(&sc.n_via_proxy).await);
    }
    let mut honest = sc.honest().await;
    round_trip(&mut honest, 1, 1).await;

    sc.stall.send(true).unwrap();
    let mut stream: u16 = 2;
    for (i, circ) in attackers.into_iter().enumerate() {
        // Flood one circuit through N (the first fills R's channel to N; each later one
        // finds it full and stalls at once) and, while it floods, use the honest circuit.
        let stop = Arc::new(AtomicBool::new(false));
        let task = flood(circ, Arc::clone(&stop));
        // Round trips from the start of the flood, through the stall it causes, until R
        // has destroyed the circuit (and a few more): none may wait on the stall.
        let mut trips = 0;
        tokio::time::timeout(NO_HANG, async {
            while stalled_sends(&sc.r) <= i as u64 || trips < 3 {
                round_trip(&mut honest, 1, stream).await;
                stream = stream.checked_add(1).unwrap_or(2);
                trips += 1;
            }
        })
        .await
        .expect("R must destroy a stalled circuit whose queue is full, not wait on it");
        eprintln!("  attacker circuit {i}: {trips} honest round trips meanwhile");
        stop.store(true, Ordering::Relaxed);
        let (mut circ, sent) = tokio::time::timeout(NO_HANG, task)
            .await
            .expect("the client's channel must keep draining")
            .unwrap();
        eprintln!("  attacker circuit {i}: flooded {sent} cells");
        let err = destroyed(&mut circ).await;
        assert!(
            matches!(err, CircuitError::Destroyed(DestroyReason::ResourceLimit)),
            "{err:?}"
        );
    }
    // N is still not reading and R's bound is far off, yet only the honest circuit is
    // left open at R, and it (and a new circuit) still work.
    round_trip(&mut honest, 1, stream).await;
    let mut fresh = sc.honest().await;
    round_trip(&mut fresh, 1, stream.wrapping_add(1).max(2)).await;
    sc.wait_open(2, "R must count exactly the two honest circuits open")
        .await;
    assert!(*sc.stall.borrow(), "N must still be stalled at the end");
}
