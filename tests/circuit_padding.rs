//! Circuit padding (docs/protocol.md §3.6) over real relays on 127.0.0.1: the second hop
//! runs the machine a client asked for in its handshake, and a watcher at the guard sees
//! the shape the machines promise; and what a client that writes its own machines can try
//! against a relay (a machine over the budget, a machine that would pad forever, many
//! circuits padding at once).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::padding_machine::{DelayKind, Next, PaddingMachine, PaddingState};
use allium::cell::relay_contexts::AtClient;
use allium::cell::CircId;
use allium::dir::ExitPolicy;
use allium::link::LinkConfig;
use allium::proto::padding::machines::MachineKind;
use allium::proto::{ClientChannel, ClientCircuit};
use allium::relay::{RelayHandle, RelayLimits, RelayObserver};
use common::raw_circuit::open;
use common::{start_relay_with, target, NO_HANG};

/// Records, per circuit, the direction of every relay cell the guard passes (`true`:
/// towards the exit): what a watcher at the guard sees.
#[derive(Debug, Default)]
struct Directions(Mutex<HashMap<CircId, Vec<bool>>>);

impl RelayObserver for Directions {
    fn forward_cell(&self, circ: CircId, _: &[u8; RELAY_BODY_LEN], _: bool) {
        self.0.lock().unwrap().entry(circ).or_default().push(true);
    }
    fn backward_cell(&self, circ: CircId, _: &[u8; RELAY_BODY_LEN]) {
        self.0.lock().unwrap().entry(circ).or_default().push(false);
    }
}

impl Directions {
    /// The circuit's directions as `o` (out, towards the exit) and `i` (in).
    fn seen(&self, circ: CircId) -> String {
        let map = self.0.lock().unwrap();
        map.get(&circ)
            .map(|v| v.iter().map(|&f| if f { 'o' } else { 'i' }).collect())
            .unwrap_or_default()
    }
}

async fn relays(middle: RelayLimits) -> (Vec<RelayHandle>, Arc<Directions>) {
    let guard = start_relay_with(RelayLimits::default(), None).await;
    let watcher = Arc::new(Directions::default());
    guard.set_observer(watcher.clone()).unwrap();
    let relays = vec![
        guard,
        start_relay_with(middle, None).await,
        start_relay_with(
            RelayLimits::default(),
            Some(ExitPolicy::default_exit_allow_loopback()),
        )
        .await,
    ];
    (relays, watcher)
}

/// A circuit through `relays` asking the second hop to run `hop` (and running `client`).
async fn padded(
    relays: &[RelayHandle],
    client: PaddingMachine,
    hop: PaddingMachine,
) -> ClientCircuit {
    let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = ClientCircuit::create_with(&chan, &target(&relays[0]), NO_HANG, true)
        .await
        .unwrap();
    circ.ask_padding_machines(client, hop);
    for r in &relays[1..] {
        circ.extend(&target(r), NO_HANG).await.unwrap();
    }
    circ.start_padding().await.unwrap();
    circ
}

/// Receives `n` DROP cells from the second hop (nothing else may come).
async fn drops_from_middle(circ: &mut ClientCircuit, n: usize) {
    for _ in 0..n {
        let (hop, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hop, 1);
        assert!(matches!(cell.msg(), AtClient::Drop), "{cell:?}");
    }
}

fn sent(r: &RelayHandle) -> u64 {
    r.shared()
        .counters
        .padding_cells_sent
        .load(Ordering::Relaxed)
}

fn refused(r: &RelayHandle) -> u64 {
    r.shared()
        .counters
        .padding_machines_refused
        .load(Ordering::Relaxed)
}

/// What the guard's observer reports of a three-hop build: CREATE/CREATED are not relay
/// cells, and of the two EXTEND/EXTENDED pairs the first EXTENDED is the guard's own (the
/// observer reports relayed cells only).
const BUILD: &str = "ooi";

#[tokio::test]
async fn a_built_circuit_opens_with_the_prologue_the_guard_sees() {
    let (relays, watcher) = relays(RelayLimits::default()).await;
    let kind = MachineKind::Prologue;
    let mut circ = padded(&relays, kind.client_machine(), kind.hop_machine()).await;
    assert!(circ.padding_granted());
    drops_from_middle(&mut circ, 2).await;
    assert_eq!(watcher.seen(circ.id()), format!("{BUILD}oii"));
    assert_eq!(sent(&relays[1]), 2);
    assert!(circ.padding_done());
}

/// The introduction machines after a real request and answer (here BEGIN/CONNECTED at an
/// exit, where an introduction circuit has INTRODUCE1/INTRODUCE_ACK): the guard then sees
/// `i o i o` and a reply-sized burst, the shape of a rendezvous circuit's stream.
#[tokio::test]
async fn the_introduction_machines_add_a_fetch_shape_after_the_answer() {
    let (relays, watcher) = relays(RelayLimits::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _held = listener.accept().await;
        tokio::time::sleep(NO_HANG).await;
    });
    let kind = MachineKind::Introduction;
    let mut circ = padded(&relays, kind.client_machine(), kind.hop_machine()).await;
    assert!(circ.padding_granted());
    open(&mut circ, 1, port).await;
    // "RENDEZVOUS2", "CONNECTED", then the reply burst (2..=31): receiving drives our own
    // machine, which answers with "BEGIN" and the request in between.
    drops_from_middle(&mut circ, 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut burst = 0;
    while let Ok(Ok((hop, cell, _))) = tokio::time::timeout_at(deadline, circ.recv()).await {
        assert_eq!(hop, 1);
        assert!(matches!(cell.msg(), AtClient::Drop));
        burst += 1;
    }
    assert!((2..=31).contains(&burst), "reply burst of {burst}");
    // Receiving drives our machine: its "END" goes once the burst has been quiet.
    let quiet = tokio::time::Instant::now() + Duration::from_millis(500);
    let _ = tokio::time::timeout_at(quiet, circ.recv()).await;
    let expected = format!("{BUILD}oiioio{}o", "i".repeat(burst));
    assert_eq!(watcher.seen(circ.id()), expected);
    assert!(circ.padding_done());
}

fn looping(max_padding: u16) -> PaddingMachine {
    PaddingMachine {
        max_padding,
        states: vec![PaddingState {
            delay_kind: DelayKind::Uniform,
            delay_min_ms: 0,
            delay_max_ms: 1,
            burst_min: 255,
            burst_max: 255,
            on_sent: Next::Stay,
            on_received: Next::Stay,
            on_padding: Next::Stay,
            on_burst_done: Next::State(0),
        }],
    }
}

fn idle() -> PaddingMachine {
    PaddingMachine {
        max_padding: 0,
        states: vec![PaddingState {
            burst_min: 0,
            burst_max: 0,
            on_burst_done: Next::Stay,
            ..looping(0).states[0]
        }],
    }
}

/// A client asking for more padding than the relay's per-circuit budget is refused: the
/// circuit works, unpadded, and the relay sends nothing. So is any machine at a relay
/// whose operator turned padding off.
#[tokio::test]
async fn a_machine_over_the_budget_or_at_a_relay_without_padding_is_refused() {
    let limits = RelayLimits {
        padding_cells_per_circuit: 10,
        ..RelayLimits::default()
    };
    let (relays, watcher) = relays(limits).await;
    let mut circ = padded(&relays, idle(), looping(11)).await;
    assert!(!circ.padding_granted());
    assert_eq!(refused(&relays[1]), 1);
    // Within the budget it is accepted (and then pads, up to its cap).
    let ok = padded(&relays, idle(), looping(10)).await;
    assert!(ok.padding_granted());
    let deadline = tokio::time::Instant::now() + NO_HANG;
    while sent(&relays[1]) < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the machine was cut short"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&relays[1]), 10, "the machine stopped at its cap");
    drop(ok);
    // The refused circuit carries nothing but its build.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watcher.seen(circ.id()), BUILD);
    let (hop, _, _) = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _held = listener.accept().await;
            tokio::time::sleep(NO_HANG).await;
        });
        circ.send(2, common::raw_circuit::begin(1, port))
            .await
            .unwrap();
        tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(hop, 2, "the unpadded circuit still works");

    let off = RelayLimits {
        circuit_padding: false,
        ..RelayLimits::default()
    };
    let (relays, _) = self::relays(off).await;
    let circ = padded(&relays, idle(), looping(1)).await;
    assert!(!circ.padding_granted());
    assert_eq!(refused(&relays[1]), 1);
    assert_eq!(sent(&relays[1]), 0);
}

/// Machines that would pad forever stop at their cap; however many circuits pad at once,
/// the relay sends no more than its relay-wide rate, and what is held back is sent later,
/// never dropped (a machine cut short would mark its circuit).
#[tokio::test]
async fn looping_machines_stop_at_their_cap_and_the_relay_rate_bounds_them_all() {
    const RATE: u32 = 250;
    const CIRCUITS: usize = 6;
    const CAP: u16 = 100;
    let limits = RelayLimits {
        padding_cells_per_second: RATE,
        ..RelayLimits::default()
    };
    let (relays, _) = relays(limits).await;
    let t0 = std::time::Instant::now();
    let mut circuits = Vec::new();
    for _ in 0..CIRCUITS {
        circuits.push(padded(&relays, idle(), looping(CAP)).await);
    }
    assert!(circuits.iter().all(|c| c.padding_granted()));
    // A bucket of RATE tokens refilled at RATE per second bounds what was sent so far;
    // every machine still runs to its cap (some of it during the build, which the client
    // skips), and no further.
    let want = (CIRCUITS * usize::from(CAP)) as u64;
    let deadline = tokio::time::Instant::now() + NO_HANG;
    loop {
        let s = sent(&relays[1]);
        let elapsed = t0.elapsed().as_secs_f64();
        let bound = f64::from(RATE) * (1.0 + elapsed) + 1.0;
        assert!(
            (s as f64) <= bound,
            "{s} padding cells sent in {elapsed:.2} s"
        );
        if s >= want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a machine was cut short"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&relays[1]), want);
}

/// What the guard reads of the EXTEND it recognises (the one naming the second hop): the
/// length of the relay message, which holds the second hop's handshake.
#[derive(Debug, Default)]
struct ExtendLengths(Mutex<HashMap<CircId, u16>>);

impl RelayObserver for ExtendLengths {
    fn forward_cell(&self, circ: CircId, body: &[u8; RELAY_BODY_LEN], recognised: bool) {
        if recognised {
            let len = u16::from_be_bytes([body[19], body[20]]);
            self.0.lock().unwrap().entry(circ).or_insert(len);
        }
    }
}

/// The guard relays the second hop's handshake and reads its length: asking for padding
/// (either machine) or for nothing, with or without congestion control, must not change it.
#[tokio::test]
async fn the_guard_cannot_tell_from_the_handshake_who_asked_for_padding() {
    let guard = start_relay_with(RelayLimits::default(), None).await;
    let spy = Arc::new(ExtendLengths::default());
    guard.set_observer(spy.clone()).unwrap();
    let relays = [
        guard,
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(
            RelayLimits::default(),
            Some(ExitPolicy::default_exit_allow_loopback()),
        )
        .await,
    ];
    let mut ids = Vec::new();
    for (ask, congestion) in [
        (None, true),
        (None, false),
        (Some(MachineKind::Prologue), true),
        (Some(MachineKind::Introduction), true),
        (Some(MachineKind::Introduction), false),
    ] {
        let chan = ClientChannel::connect(&target(&relays[0]), &LinkConfig::default())
            .await
            .unwrap();
        let mut circ = ClientCircuit::create_with(&chan, &target(&relays[0]), NO_HANG, congestion)
            .await
            .unwrap();
        if let Some(kind) = ask {
            circ.ask_padding(kind);
        }
        for r in &relays[1..] {
            circ.extend(&target(r), NO_HANG).await.unwrap();
        }
        assert_eq!(circ.padding_granted(), ask.is_some());
        ids.push(circ.id());
    }
    let seen = spy.0.lock().unwrap();
    let lengths: Vec<u16> = ids.iter().map(|id| seen[id]).collect();
    assert!(
        lengths.windows(2).all(|w| w[0] == w[1]),
        "EXTEND lengths at the guard differ: {lengths:?}"
    );
}
