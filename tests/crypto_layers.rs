//! Layered relay crypto (docs/protocol.md §4.5–§4.6): round trips and recognition, then the
//! attacks, each written from the attacker's side. A malicious hop knows its own keys and
//! may keep copies of its state to try several repairs; the honest hops between attackers
//! and the endpoints run the real code. Every attack must end with the cell unrecognised
//! at the next honest endpoint (which tears the circuit down) and no later cell delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use allium::cell::consts::{RELAY_BODY_LEN, RELAY_PAYLOAD_LEN, RELAY_TAG_LEN};
use allium::crypto::circuit_keys::CIRCUIT_KEYS_LEN;
use allium::crypto::{
    CellKind, CircuitKeys, ClientLayers, LayerError, Recognition, RelayCrypto, MAX_HOPS,
};
use proptest::prelude::*;

type Body = [u8; RELAY_BODY_LEN];
type Tag = [u8; RELAY_TAG_LEN];
const RELAY: CellKind = CellKind::Relay;
const EARLY: CellKind = CellKind::RelayEarly;
/// Cells sent after an attack to check that the circuit never recovers.
const LATER_CELLS: usize = 6;

/// Deterministic, distinct key blocks for hop `i`.
fn key_block(i: usize) -> [u8; CIRCUIT_KEYS_LEN] {
    core::array::from_fn(|j| (j as u8).wrapping_mul(7) ^ (i as u8).wrapping_mul(31).wrapping_add(1))
}

fn hop_keys(i: usize) -> CircuitKeys {
    CircuitKeys::from_bytes(&key_block(i))
}

/// A fresh circuit of `n` hops: the client side and each relay.
fn circuit(n: usize) -> (ClientLayers, Vec<RelayCrypto>) {
    let mut client = ClientLayers::new();
    let mut relays = Vec::new();
    for i in 0..n {
        let keys = hop_keys(i);
        client.push_hop(&keys).expect("push");
        relays.push(RelayCrypto::new(&keys));
    }
    (client, relays)
}

fn payload_body(seed: u8) -> Body {
    let mut body = [0u8; RELAY_BODY_LEN];
    for (i, b) in body[RELAY_TAG_LEN..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
    }
    body
}

/// Runs relays `from..` on a forward cell until one recognises it.
fn relays_forward(
    relays: &mut [RelayCrypto],
    from: usize,
    kind: CellKind,
    body: &mut Body,
) -> Option<(usize, Tag)> {
    for (hop, relay) in relays.iter_mut().enumerate().skip(from) {
        if let Recognition::Recognised { tag } = relay.decrypt_forward(kind, body).expect("layer") {
            return Some((hop, tag));
        }
    }
    None
}

/// Sends a backward cell originated by `origin` to the client. `tamper(hop, body)` runs
/// just before hop `hop` runs its layer (for hop < origin) and with `hop == usize::MAX`
/// just before the client.
fn send_backward(
    client: &mut ClientLayers,
    relays: &mut [RelayCrypto],
    body: &mut Body,
    origin: usize,
    mut tamper: impl FnMut(usize, &mut Body),
) -> (Result<(usize, Tag), LayerError>, Tag) {
    let sent_tag = relays[origin].originate_backward(body).expect("originate");
    for hop in (0..origin).rev() {
        tamper(hop, body);
        relays[hop].encrypt_backward(body).expect("layer");
    }
    tamper(usize::MAX, body);
    (client.decrypt_backward(body), sent_tag)
}

fn xor_at(body: &mut Body, pos: usize, delta: u8) {
    body[pos] ^= delta;
}

// ---------------------------------------------------------------- honest behaviour

#[test]
fn round_trips_all_lengths_and_targets() {
    for n in 1..=MAX_HOPS {
        let (mut client, mut relays) = circuit(n);
        for round in 0..3u8 {
            for target in 0..n {
                let orig = payload_body(round ^ target as u8);
                let mut body = orig;
                let sent = client
                    .encrypt_forward(&mut body, target, RELAY)
                    .expect("enc");
                let got = relays_forward(&mut relays, 0, RELAY, &mut body);
                assert_eq!(got, Some((target, sent)), "n={n} target={target}");
                assert_eq!(body[..RELAY_TAG_LEN], [0; RELAY_TAG_LEN]);
                assert_eq!(body[RELAY_TAG_LEN..], orig[RELAY_TAG_LEN..]);

                let mut body = orig;
                let (res, sent) =
                    send_backward(&mut client, &mut relays, &mut body, target, |_, _| {});
                assert_eq!(res, Ok((target, sent)), "n={n} origin={target}");
                assert_eq!(body[RELAY_TAG_LEN..], orig[RELAY_TAG_LEN..]);
            }
        }
    }
}

#[test]
fn relay_early_cells_round_trip() {
    let (mut client, mut relays) = circuit(3);
    for target in 0..3 {
        let orig = payload_body(target as u8);
        let mut body = orig;
        let sent = client
            .encrypt_forward(&mut body, target, EARLY)
            .expect("enc");
        assert_eq!(
            relays_forward(&mut relays, 0, EARLY, &mut body),
            Some((target, sent))
        );
        assert_eq!(body[RELAY_TAG_LEN..], orig[RELAY_TAG_LEN..]);
    }
}

#[test]
fn too_many_hops_and_bad_target() {
    let (mut client, _) = circuit(MAX_HOPS);
    assert_eq!(
        client.push_hop(&hop_keys(99)),
        Err(LayerError::TooManyHops { max: MAX_HOPS })
    );
    let mut body = payload_body(0);
    let orig = body;
    assert_eq!(
        client.encrypt_forward(&mut body, MAX_HOPS, RELAY),
        Err(LayerError::NoSuchHop {
            index: MAX_HOPS,
            hops: MAX_HOPS
        })
    );
    assert_eq!(body, orig);
    let mut empty = ClientLayers::new();
    assert!(empty.is_empty());
    assert_eq!(
        empty.decrypt_backward(&mut body),
        Err(LayerError::Unrecognized)
    );
}

#[test]
fn same_body_twice_encrypts_differently() {
    let (mut client, _) = circuit(3);
    let mut a = payload_body(1);
    let mut b = payload_body(1);
    client.encrypt_forward(&mut a, 2, RELAY).expect("enc");
    client.encrypt_forward(&mut b, 2, RELAY).expect("enc");
    assert_ne!(a[..RELAY_TAG_LEN], b[..RELAY_TAG_LEN]);
    let differing = a.iter().zip(b.iter()).filter(|(x, y)| x != y).count();
    assert!(differing > 450, "only {differing} bytes differ");
}

#[test]
fn authenticated_sendme_tags_match() {
    let (mut client, mut relays) = circuit(3);
    let mut body = payload_body(3);
    let sent = client.encrypt_forward(&mut body, 2, RELAY).expect("enc");
    assert_eq!(
        relays_forward(&mut relays, 0, RELAY, &mut body),
        Some((2, sent))
    );
    let mut body = payload_body(4);
    let (res, sent) = send_backward(&mut client, &mut relays, &mut body, 1, |_, _| {});
    assert_eq!(res, Ok((1, sent)));
}

/// Flip one bit at every position, at the input of every hop, in both directions, on a
/// 3-hop circuit: no hop and not the client may ever accept the cell.
#[test]
fn every_byte_flip_at_every_hop_is_rejected() {
    const HOPS: usize = 3;
    for target in 0..HOPS {
        for flip_hop in 0..=target {
            for pos in 0..RELAY_BODY_LEN {
                let (mut client, mut relays) = circuit(HOPS);
                let mut body = payload_body(pos as u8);
                client
                    .encrypt_forward(&mut body, target, RELAY)
                    .expect("enc");
                // Hops before the flip pass the cell on (none of them is the target).
                assert_eq!(
                    relays_forward(&mut relays[..flip_hop], 0, RELAY, &mut body),
                    None
                );
                xor_at(&mut body, pos, 1 << (pos % 8));
                assert_eq!(
                    relays_forward(&mut relays, flip_hop, RELAY, &mut body),
                    None,
                    "forward target={target} flip before hop {flip_hop} pos={pos} accepted"
                );
            }
        }
        let flip_points: Vec<usize> = (0..target).chain([usize::MAX]).collect();
        for &flip_at in &flip_points {
            for pos in 0..RELAY_BODY_LEN {
                let (mut client, mut relays) = circuit(HOPS);
                let mut body = payload_body(pos as u8);
                let (res, _) =
                    send_backward(&mut client, &mut relays, &mut body, target, |hop, b| {
                        if hop == flip_at {
                            xor_at(b, pos, 1 << (pos % 8));
                        }
                    });
                assert_eq!(
                    res,
                    Err(LayerError::Unrecognized),
                    "backward origin={target} flip at {flip_at} pos={pos} accepted"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- the attacks

/// A malicious relay that knows its own keys and records every body it was given, so it
/// can rebuild its state as of any earlier cell and try a different input from there.
struct MaliciousRelay {
    keys: [u8; CIRCUIT_KEYS_LEN],
    /// Every forward (kind, input body) it processed, in order.
    inputs: Vec<(CellKind, Body)>,
}

impl MaliciousRelay {
    fn new(hop: usize) -> Self {
        Self {
            keys: key_block(hop),
            inputs: Vec::new(),
        }
    }

    /// Its state after processing the recorded inputs `..upto`, with `replace` standing
    /// in for the recorded inputs it names.
    fn state_with(&self, upto: usize, replace: &[(usize, CellKind, Body)]) -> RelayCrypto {
        let mut state = RelayCrypto::new(&CircuitKeys::from_bytes(&self.keys));
        for (i, (kind, body)) in self.inputs.iter().take(upto).enumerate() {
            let (kind, mut body) = replace
                .iter()
                .find(|(j, _, _)| *j == i)
                .map(|(_, k, b)| (*k, *b))
                .unwrap_or((*kind, *body));
            state.decrypt_forward(kind, &mut body).expect("layer");
        }
        state
    }

    /// Whether cell `index` (and every recorded cell after it) would be recognised if the
    /// relay had been given `candidate` in place of cell `index`.
    fn repair_works(&self, index: usize, candidate: (CellKind, Body)) -> bool {
        let mut state = self.state_with(index, &[]);
        let (kind, mut body) = candidate;
        if !recognised(state.decrypt_forward(kind, &mut body)) {
            return false;
        }
        for (kind, body) in self.inputs.iter().skip(index + 1) {
            let mut body = *body;
            if !recognised(state.decrypt_forward(*kind, &mut body)) {
                return false;
            }
        }
        true
    }
}

fn recognised(r: Result<Recognition, LayerError>) -> bool {
    matches!(r, Ok(Recognition::Recognised { .. }))
}

/// The repairs a colluding exit tries on a cell it could not recognise, knowing the mark
/// `delta` its partner applied: the cell as it came, the mark XORed out at every position
/// (where it was applied among them), and the other link command.
fn repair_candidates(marked: &Body, kind: CellKind, delta: u8) -> Vec<(CellKind, Body)> {
    let mut out = vec![(kind, *marked)];
    for p in 0..RELAY_BODY_LEN {
        let mut b = *marked;
        b[p] ^= delta;
        out.push((kind, b));
    }
    out.push((
        match kind {
            RELAY => EARLY,
            EARLY => RELAY,
        },
        *marked,
    ));
    out
}

/// Runs a forward attack on a 3-hop circuit: the guard (hop 0) applies `mark` to its
/// output of cell `MARKED` (the middle's input); the exit (hop 2) colludes and tries every
/// repair of [`repair_candidates`] before processing, with its full key knowledge.
/// Returns whether the exit ever got cell `MARKED` or any later cell recognised.
fn forward_attack(mark: impl Fn(&mut Body) -> (usize, u8), kind_flip: bool) -> bool {
    const MARKED: usize = 3;
    let (mut client, mut relays) = circuit(3);
    let mut exit = MaliciousRelay::new(2);
    let mut delivered = false;
    let mut mark_info = None;
    for cell in 0..MARKED + 1 + LATER_CELLS {
        let mut body = payload_body(cell as u8);
        client.encrypt_forward(&mut body, 2, RELAY).expect("enc");
        // Guard: its own layer, honestly computed.
        assert_eq!(relays_forward(&mut relays[..1], 0, RELAY, &mut body), None);
        let mut kind = RELAY;
        if cell == MARKED {
            mark_info = Some(mark(&mut body));
            if kind_flip {
                kind = EARLY;
            }
        }
        // Honest middle.
        assert_eq!(relays_forward(&mut relays[..2], 1, kind, &mut body), None);
        exit.inputs.push((kind, body));
        let got = relays_forward(&mut relays, 2, kind, &mut body);
        if cell < MARKED {
            assert!(got.is_some(), "honest cell {cell}");
            continue;
        }
        if got.is_some() {
            delivered = true;
        }
    }
    // The exit's repairs, with everything it saw and its own keys.
    let (_, delta) = mark_info.expect("marked");
    let (kind, marked) = exit.inputs[MARKED];
    for candidate in repair_candidates(&marked, kind, delta.max(1)) {
        if exit.repair_works(MARKED, candidate) {
            delivered = true;
        }
    }
    // Even giving up on the marked cell: can the exit skip it and re-sync on a later one?
    for later in MARKED + 1..exit.inputs.len() {
        let mut state = exit.state_with(MARKED, &[]);
        let (kind, mut body) = exit.inputs[later];
        if recognised(state.decrypt_forward(kind, &mut body)) {
            delivered = true;
        }
    }
    delivered
}

/// The attack of issue 15: a guard XORs Δ into a forward payload; an exit that knows its
/// own keys tries to detect the mark and repair the cell (and re-sync its chain).
#[test]
fn forward_payload_mark_then_exit_repair_fails() {
    for pos in [RELAY_TAG_LEN, 40, 300, RELAY_BODY_LEN - 1] {
        let delivered = forward_attack(
            |b| {
                xor_at(b, pos, 0x5a);
                (pos, 0x5a)
            },
            false,
        );
        assert!(!delivered, "payload mark at {pos} was repaired");
    }
}

/// Control: the same harness finds the repair when no honest hop stands between the
/// marking guard and the colluding exit (a 2-hop circuit). So the attack tests above can
/// fail; they pass because of the honest middle's non-malleable layer.
#[test]
fn control_adjacent_colluders_can_repair() {
    const MARKED: usize = 2;
    let (mut client, mut relays) = circuit(2);
    let mut exit = MaliciousRelay::new(1);
    for cell in 0..MARKED + 1 + LATER_CELLS {
        let mut body = payload_body(cell as u8);
        client.encrypt_forward(&mut body, 1, RELAY).expect("enc");
        assert_eq!(relays_forward(&mut relays[..1], 0, RELAY, &mut body), None);
        if cell == MARKED {
            xor_at(&mut body, 300, 0x5a);
        }
        exit.inputs.push((RELAY, body));
    }
    let (kind, marked) = exit.inputs[MARKED];
    assert!(
        repair_candidates(&marked, kind, 0x5a)
            .into_iter()
            .any(|c| exit.repair_works(MARKED, c)),
        "the harness must find the trivial repair"
    );
}

/// The tag-mark variant: Δ goes into the 16-byte tag instead.
#[test]
fn forward_tag_mark_then_exit_repair_fails() {
    for pos in [0, 7, RELAY_TAG_LEN - 1] {
        let delivered = forward_attack(
            |b| {
                xor_at(b, pos, 0x80);
                (pos, 0x80)
            },
            false,
        );
        assert!(!delivered, "tag mark at {pos} was repaired");
    }
}

/// A guard that sends a RELAY cell on as RELAY_EARLY (a covert signal to the exit, who
/// would otherwise see "RELAY_EARLY DATA"): the honest middle garbles it.
#[test]
fn forward_relay_to_relay_early_flip_fails() {
    assert!(!forward_attack(|_| (0, 0), true));
}

/// The flip also fails when the guard is next to the exit... except that then no honest
/// hop is in between: the exit sees the flip, which is why recognised RELAY_EARLY cells
/// must carry EXTEND (the relay tears the circuit down otherwise; tests/adversarial_protocol.rs).
/// Here: a flipped command at the *recognising* hop's own input is never recognised.
#[test]
fn command_flip_at_the_recognising_hop_is_not_recognised() {
    let (mut client, mut relays) = circuit(2);
    let mut body = payload_body(1);
    client.encrypt_forward(&mut body, 1, RELAY).expect("enc");
    assert_eq!(relays_forward(&mut relays[..1], 0, RELAY, &mut body), None);
    assert_eq!(relays_forward(&mut relays, 1, EARLY, &mut body), None);
    let mut body = payload_body(2);
    client.encrypt_forward(&mut body, 1, EARLY).expect("enc");
    assert_eq!(relays_forward(&mut relays, 0, EARLY, &mut body), None);
}

/// The backward direction: the exit marks a cell it originates (or passes on), the honest
/// middle encrypts, and the colluding guard tries to undo the mark before the client.
#[test]
fn backward_mark_then_guard_repair_fails() {
    for pos in [0, 5, RELAY_TAG_LEN, 200, RELAY_BODY_LEN - 1] {
        let (mut client, mut relays) = circuit(3);
        for cell in 0..3u8 {
            let mut body = payload_body(cell);
            let (res, sent) = send_backward(&mut client, &mut relays, &mut body, 2, |_, _| {});
            assert_eq!(res, Ok((2, sent)));
        }
        // The marked cell: marked at the middle's input, "repaired" at the guard's input
        // and again at the client's input (the guard controls both its input and output).
        let mut body = payload_body(9);
        let (res, _) = send_backward(&mut client, &mut relays, &mut body, 2, |hop, b| {
            if hop == 1 || hop == 0 || hop == usize::MAX {
                xor_at(b, pos, 0x33);
            }
        });
        assert_eq!(res, Err(LayerError::Unrecognized), "pos {pos}");
        // Later untouched cells never come through either (a real client has already
        // torn the circuit down; this shows there would be nothing to resume).
        for cell in 0..LATER_CELLS as u8 {
            let mut body = payload_body(cell);
            let (res, _) = send_backward(&mut client, &mut relays, &mut body, 2, |_, _| {});
            assert_eq!(res, Err(LayerError::Unrecognized), "later cell {cell}");
        }
    }
}

/// Drop a cell, reorder two, replay one, insert one (a copy of an earlier cell from
/// another circuit): in each case the cell concerned and every later cell fail at the
/// exit, so the circuit ends instead of going on with a gap or a duplicate.
#[test]
fn dropped_reordered_replayed_or_inserted_cells_end_the_circuit() {
    #[derive(Debug, Clone, Copy)]
    enum Attack {
        Drop,
        Reorder,
        Replay,
        InsertForeign,
    }
    for attack in [
        Attack::Drop,
        Attack::Reorder,
        Attack::Replay,
        Attack::InsertForeign,
    ] {
        let (mut client, mut relays) = circuit(3);
        let (mut other_client, mut other_relays) = circuit(3);
        let mut sent: Vec<Body> = Vec::new();
        for cell in 0..8u8 {
            let mut body = payload_body(cell);
            client.encrypt_forward(&mut body, 2, RELAY).expect("enc");
            sent.push(body);
        }
        let mut foreign = payload_body(77);
        other_client
            .encrypt_forward(&mut foreign, 2, RELAY)
            .expect("enc");
        assert!(relays_forward(&mut other_relays, 0, RELAY, &mut foreign.clone()).is_some());
        let delivered_stream: Vec<Body> = match attack {
            Attack::Drop => [&sent[..2], &sent[3..]].concat(),
            Attack::Reorder => [&sent[..2], &[sent[3], sent[2]], &sent[4..]].concat(),
            Attack::Replay => [&sent[..3], &[sent[2]], &sent[3..]].concat(),
            Attack::InsertForeign => [&sent[..2], &[foreign], &sent[2..]].concat(),
        };
        let mut recognised_count = 0;
        let mut first_failure = None;
        for (i, body) in delivered_stream.iter().enumerate() {
            let mut body = *body;
            if relays_forward(&mut relays, 0, RELAY, &mut body).is_some() {
                assert!(
                    first_failure.is_none(),
                    "{attack:?}: cell {i} accepted after a failure"
                );
                recognised_count += 1;
            } else {
                first_failure.get_or_insert(i);
            }
        }
        let expected_good = match attack {
            Attack::Drop | Attack::Reorder | Attack::InsertForeign => 2,
            Attack::Replay => 3,
        };
        assert_eq!(recognised_count, expected_good, "{attack:?}");
    }
}

/// A cell replayed into the backward direction of the same circuit, or a backward cell of
/// one hop presented as coming from another position, is not recognised.
#[test]
fn backward_replay_is_refused() {
    let (mut client, mut relays) = circuit(3);
    let mut body = payload_body(1);
    relays[2].originate_backward(&mut body).expect("originate");
    relays[1].encrypt_backward(&mut body).expect("layer");
    relays[0].encrypt_backward(&mut body).expect("layer");
    let copy = body;
    assert!(client.decrypt_backward(&mut body).is_ok());
    let mut again = copy;
    assert_eq!(
        client.decrypt_backward(&mut again),
        Err(LayerError::Unrecognized)
    );
}

/// Every later cell is garbled for every later hop: after a mark, the middle's outputs
/// for the following untouched cells share nothing with what an unmarked twin circuit
/// produces.
#[test]
fn a_mark_garbles_every_later_cell_at_every_later_hop() {
    let (mut client, mut relays) = circuit(3);
    let (mut twin_client, mut twin_relays) = circuit(3);
    for cell in 0..1 + LATER_CELLS as u8 {
        let mut body = payload_body(cell);
        let mut twin = body;
        client.encrypt_forward(&mut body, 2, RELAY).expect("enc");
        twin_client
            .encrypt_forward(&mut twin, 2, RELAY)
            .expect("enc");
        assert_eq!(body, twin);
        relays_forward(&mut relays[..1], 0, RELAY, &mut body);
        relays_forward(&mut twin_relays[..1], 0, RELAY, &mut twin);
        if cell == 0 {
            xor_at(&mut body, 100, 1);
        }
        relays_forward(&mut relays[..2], 1, RELAY, &mut body);
        relays_forward(&mut twin_relays[..2], 1, RELAY, &mut twin);
        let same = body.iter().zip(twin.iter()).filter(|(a, b)| a == b).count();
        assert!(
            same < 16,
            "cell {cell}: {same} bytes equal to the unmarked twin"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn prop_round_trip(
        n in 1usize..=MAX_HOPS,
        cells in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), RELAY_PAYLOAD_LEN), any::<bool>()), 1..6),
    ) {
        let (mut client, mut relays) = circuit(n);
        for (t, payload, forward) in cells {
            let target = usize::from(t) % n;
            let mut body = [0u8; RELAY_BODY_LEN];
            body[RELAY_TAG_LEN..].copy_from_slice(&payload);
            if forward {
                let sent = client.encrypt_forward(&mut body, target, RELAY).expect("enc");
                prop_assert_eq!(relays_forward(&mut relays, 0, RELAY, &mut body), Some((target, sent)));
            } else {
                let (res, sent) = send_backward(&mut client, &mut relays, &mut body, target, |_, _| {});
                prop_assert_eq!(res, Ok((target, sent)));
            }
            prop_assert_eq!(&body[RELAY_TAG_LEN..], &payload[..]);
        }
    }

    /// Any single-byte change anywhere on the forward path of a 3-hop circuit, at any
    /// cell, stops delivery of that cell and every later one.
    #[test]
    fn prop_any_forward_change_stops_the_circuit(
        at_cell in 0usize..5, hop in 0usize..3, pos in 0usize..RELAY_BODY_LEN, delta in 1u8..=255,
    ) {
        let (mut client, mut relays) = circuit(3);
        let mut broken = false;
        for cell in 0..8usize {
            let mut body = payload_body(cell as u8);
            client.encrypt_forward(&mut body, 2, RELAY).expect("enc");
            if cell == at_cell {
                relays_forward(&mut relays[..hop], 0, RELAY, &mut body);
                xor_at(&mut body, pos, delta);
                let got = relays_forward(&mut relays, hop, RELAY, &mut body);
                prop_assert_eq!(got, None);
                broken = true;
            } else {
                let got = relays_forward(&mut relays, 0, RELAY, &mut body);
                prop_assert_eq!(got.is_some(), !broken, "cell {}", cell);
            }
        }
    }
}
