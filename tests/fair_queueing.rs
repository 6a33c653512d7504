//! Fair queueing on a relay-to-relay channel over real TCP on 127.0.0.1: a cell of a
//! quiet circuit queued behind a bulk circuit's backlog goes out ahead of that backlog,
//! and not with `fair_queueing = false` (the old single FIFO); a flooding circuit holds
//! at most its share of the queue and does not starve the others.
//!
//! Every assertion is about order and counts, never time: the order of cells on the wire
//! is the order the writer takes them from the queue, decided when each is queued.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use allium::cell::consts::CELL_LEN;
use allium::cell::{ChanCell, ChanMsg, CircId, RelayBody};
use allium::link::{
    accept, connect, per_circuit_cap, Channel, ChannelReceiver, LinkAuth, LinkConfig, TrySendError,
};
use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;

const BULK: u32 = 0x8000_0001;
const QUIET: u32 = 0x8000_0002;

/// A RELAY cell of circuit `circ` whose body starts with `seq`.
fn cell(circ: u32, seq: u64) -> [u8; CELL_LEN] {
    let mut body = [0u8; 512];
    body[..8].copy_from_slice(&seq.to_be_bytes());
    ChanCell::circuit(CircId::new(circ).unwrap(), ChanMsg::Relay(RelayBody(body)))
        .unwrap()
        .encode()
        .unwrap()
}

fn circ_of(c: &[u8; CELL_LEN]) -> u32 {
    u32::from_be_bytes(c[..4].try_into().unwrap())
}

/// A relay-to-relay channel: (our end, the far end).
async fn relay_channel(cfg: &LinkConfig) -> (Channel, Channel) {
    let mut rng = rand::rng();
    let day = Duration::from_secs(86_400);
    let now = allium::clock::now_unix();
    let id_a = SigningKey::generate(&mut rng);
    let auth_a = LinkAuth::generate(&id_a, &mut rng, now, day);
    let id_b = SigningKey::generate(&mut rng);
    let auth_b = LinkAuth::generate(&id_b, &mut rng, now, day);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let far_cfg = cfg.clone();
    let far = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        accept(s, &auth_b, &far_cfg).await.unwrap()
    });
    let ours = connect(addr, &id_b.verifying_key(), Some(&auth_a), cfg)
        .await
        .unwrap();
    (ours, far.await.unwrap())
}

/// Every cell until the channel closes, in arrival order.
fn read_all(mut rx: ChannelReceiver) -> tokio::task::JoinHandle<Vec<[u8; CELL_LEN]>> {
    tokio::spawn(async move {
        let mut cells = Vec::new();
        while let Some(c) = rx.recv().await.unwrap() {
            cells.push(c);
        }
        cells
    })
}

/// What the far end saw of one run.
struct Outcome {
    /// Bulk cells queued before the quiet cell was.
    bulk_before: u64,
    /// Bulk cells that arrived after the quiet cell.
    bulk_after: u64,
    /// Whether the quiet circuit could queue its cell at once, the bulk one being full.
    quiet_try_ok: bool,
}

/// The bulk circuit queues `backlog` cells, as fast as the channel takes them, and
/// keeps its queue full; then the quiet circuit queues one cell, at the moment the bulk
/// circuit found its queue full. The far end reads throughout (what matters is the
/// queue's order, not how fast anyone reads).
///
/// A current-thread runtime: between the bulk circuit's refused try and the quiet
/// circuit's, the writer cannot run, so the backlog in the queue is exactly what the
/// bulk circuit may hold.
async fn backlog_then_quiet(fair_queueing: bool, backlog: u64) -> Outcome {
    let cfg = LinkConfig {
        fair_queueing,
        ..LinkConfig::default()
    };
    let (ours, far) = relay_channel(&cfg).await;
    let Channel {
        sender,
        receiver: _keep_open,
        ..
    } = ours;
    let reading = read_all(far.receiver);
    let _far_sender = far.sender;
    let mut queued = 0u64;
    loop {
        match sender.try_send_raw(&cell(BULK, queued)) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full) if queued >= backlog => break,
            Err(TrySendError::Full) => {
                sender.send_raw(cell(BULK, queued)).await.unwrap();
                queued += 1;
            }
            Err(TrySendError::Closed) => panic!("channel closed"),
        }
    }
    let quiet_try_ok = sender.try_send_raw(&cell(QUIET, 0)).is_ok();
    if !quiet_try_ok {
        sender.send_raw(cell(QUIET, 0)).await.unwrap();
    }
    // The last sender gone: the writer flushes the queue, then closes the channel.
    drop(sender);
    let cells = reading.await.unwrap();
    let at = cells
        .iter()
        .position(|c| circ_of(c) == QUIET)
        .expect("the quiet cell arrived");
    let bulk_after = cells[at + 1..]
        .iter()
        .filter(|c| circ_of(c) == BULK)
        .count() as u64;
    assert_eq!(cells.len() as u64, queued + 1, "every cell arrived");
    Outcome {
        bulk_before: queued,
        bulk_after,
        quiet_try_ok,
    }
}

/// With fair queueing, the quiet circuit's cell overtakes everything the bulk circuit
/// still had queued (its whole share of the queue); the bulk circuit could not take the
/// whole channel queue, so the quiet one queued at once.
#[tokio::test]
async fn a_quiet_cell_overtakes_a_bulk_backlog() {
    let share = per_circuit_cap(LinkConfig::default().outbound_queue_cells) as u64;
    let o = backlog_then_quiet(true, 5_000).await;
    assert!(
        o.quiet_try_ok,
        "the bulk circuit took the whole channel queue"
    );
    assert_eq!(
        o.bulk_after, share,
        "the bulk circuit's queued cells go after the quiet one ({} queued before it)",
        o.bulk_before
    );
}

/// The control: with one FIFO (`fair_queueing = false`) the quiet cell waits for room
/// behind the bulk circuit, which holds the whole queue, and arrives after every one of
/// its cells. (This is what the test above would see without the scheduler.)
#[tokio::test]
async fn without_fair_queueing_the_quiet_cell_waits_behind_the_backlog() {
    let o = backlog_then_quiet(false, 5_000).await;
    assert!(!o.quiet_try_ok, "the bulk circuit fills the whole FIFO");
    assert_eq!(o.bulk_after, 0);
}

/// The attack: a circuit floods the channel with cells (a task that queues as fast as it
/// may, for ever, plus the test topping it up) while the far end reads only to find the
/// quiet circuit's cells. The flood is refused past its share of the queue; a quiet
/// circuit's cells, sent one at a time each after the previous one arrived, all find room
/// at once and get through. (That the flood's share is bounded, whatever it does, is
/// `link::scheduler`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_circuit_cannot_starve_others_or_grow_the_queue() {
    let cfg = LinkConfig::default();
    let (ours, mut far) = relay_channel(&cfg).await;
    let flooder = ours.sender.clone();
    let flood = tokio::spawn(async move {
        let mut n = 0u64;
        while flooder.send_raw(cell(BULK, n)).await.is_ok() {
            n += 1;
        }
    });
    let mut flood_seen = 0u64;
    for round in 0..50u64 {
        // Top the flood up until it is refused: it is at its share of the queue...
        while ours.sender.try_send_raw(&cell(BULK, u64::MAX)).is_ok() {}
        // ...and the quiet circuit still finds room (with one FIFO it would not: the
        // flood would hold the whole queue).
        ours.sender.try_send_raw(&cell(QUIET, round)).unwrap();
        loop {
            let c = far.receiver.recv().await.unwrap().unwrap();
            if circ_of(&c) == QUIET {
                assert_eq!(c, cell(QUIET, round));
                break;
            }
            flood_seen += 1;
        }
    }
    assert!(flood_seen > 0, "the flood was flowing meanwhile");
    ours.sender.close();
    flood.await.unwrap();
}
