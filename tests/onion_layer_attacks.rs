//! Attack tests for the end-to-end (onion-service) layer across a spliced
//! rendezvous point, crypto only. Client circuit A = c0, c1, RP (+ e2e hop, client side);
//! service circuit B = s0, s1, RP (+ e2e hop, service/relay side). The RP runs A's forward
//! layer then B's backward layer on client->service cells, and B's forward then A's
//! backward layer on service->client cells.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use allium::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use allium::crypto::circuit_keys::CIRCUIT_KEYS_LEN;
use allium::crypto::{CellKind, CircuitKeys, ClientLayers, Recognition, RelayCrypto};

type Body = [u8; RELAY_BODY_LEN];
const RELAY: CellKind = CellKind::Relay;
const EARLY: CellKind = CellKind::RelayEarly;
const MARKED: usize = 3;
const LATER: usize = 5;

fn keys(i: u8) -> CircuitKeys {
    let b: [u8; CIRCUIT_KEYS_LEN] =
        core::array::from_fn(|j| (j as u8).wrapping_mul(11) ^ i.wrapping_mul(53).wrapping_add(7));
    CircuitKeys::from_bytes(&b)
}

struct World {
    client: ClientLayers,
    service: ClientLayers,
    /// c0, c1, rpA
    a: Vec<RelayCrypto>,
    /// s0, s1, rpB
    b: Vec<RelayCrypto>,
}

impl World {
    fn new() -> Self {
        let mut client = ClientLayers::new();
        let mut service = ClientLayers::new();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..3u8 {
            client.push_hop(&keys(i)).unwrap();
            a.push(RelayCrypto::new(&keys(i)));
            service.push_hop(&keys(10 + i)).unwrap();
            b.push(RelayCrypto::new(&keys(10 + i)));
        }
        client.push_end_to_end_hop(&keys(99)).unwrap();
        service.push_service_hop(&keys(99)).unwrap();
        World {
            client,
            service,
            a,
            b,
        }
    }

    /// Client -> service. Stations: 0 c0, 1 c1, 2 rpA(fwd), 3 rpB(bwd), 4 s1(bwd),
    /// 5 s0(bwd), 6 service. `hook(station, kind, body)` runs before each station.
    /// Returns whether the service recognised the cell at its e2e hop (index 3).
    fn c2s(&mut self, cell: u8, hook: &mut dyn FnMut(usize, &mut CellKind, &mut Body)) -> bool {
        let mut body = payload(cell);
        let mut kind = RELAY;
        self.client.encrypt_forward(&mut body, 3, RELAY).unwrap();
        for st in 0..3 {
            hook(st, &mut kind, &mut body);
            match self.a[st].decrypt_forward(kind, &mut body).unwrap() {
                Recognition::NotForUs => {}
                Recognition::Recognised { .. } => return false,
            }
        }
        for (st, hop) in [(3, 2), (4, 1), (5, 0)] {
            hook(st, &mut kind, &mut body);
            self.b[hop].encrypt_backward(&mut body).unwrap();
        }
        hook(6, &mut kind, &mut body);
        matches!(self.service.decrypt_backward(&mut body), Ok((3, _)))
            && body[RELAY_TAG_LEN..] == payload(cell)[RELAY_TAG_LEN..]
    }

    /// Service -> client. Stations: 0 s0, 1 s1, 2 rpB(fwd), 3 rpA(bwd), 4 c1(bwd),
    /// 5 c0(bwd), 6 client.
    fn s2c(&mut self, cell: u8, hook: &mut dyn FnMut(usize, &mut CellKind, &mut Body)) -> bool {
        let mut body = payload(cell);
        let mut kind = RELAY;
        self.service.encrypt_forward(&mut body, 3, RELAY).unwrap();
        for st in 0..3 {
            hook(st, &mut kind, &mut body);
            match self.b[st].decrypt_forward(kind, &mut body).unwrap() {
                Recognition::NotForUs => {}
                Recognition::Recognised { .. } => return false,
            }
        }
        for (st, hop) in [(3, 2), (4, 1), (5, 0)] {
            hook(st, &mut kind, &mut body);
            self.a[hop].encrypt_backward(&mut body).unwrap();
        }
        hook(6, &mut kind, &mut body);
        matches!(self.client.decrypt_backward(&mut body), Ok((3, _)))
            && body[RELAY_TAG_LEN..] == payload(cell)[RELAY_TAG_LEN..]
    }
}

fn payload(c: u8) -> Body {
    let mut b = [0u8; RELAY_BODY_LEN];
    for (i, x) in b[RELAY_TAG_LEN..].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(29).wrapping_add(c);
    }
    b
}

#[derive(Clone, Copy)]
enum Dir {
    C2S,
    S2C,
}

/// Marks cell MARKED before station `mark_at` (XOR 0x5a at `pos`, or flips the command),
/// then the colluder before station `repair_at` applies `repair`. Returns whether the
/// endpoint got the marked cell and every later cell.
fn attack(
    dir: Dir,
    mark_at: usize,
    pos: Option<usize>,
    repair_at: usize,
    repair: &dyn Fn(&mut CellKind, &mut Body),
) -> bool {
    let mut w = World::new();
    let run =
        |w: &mut World, c: u8, hook: &mut dyn FnMut(usize, &mut CellKind, &mut Body)| match dir {
            Dir::C2S => w.c2s(c, hook),
            Dir::S2C => w.s2c(c, hook),
        };
    for c in 0..MARKED as u8 {
        assert!(run(&mut w, c, &mut |_, _, _| {}), "honest cell {c}");
    }
    let ok = run(&mut w, MARKED as u8, &mut |st, kind, body| {
        if st == mark_at {
            match pos {
                Some(p) => body[p] ^= 0x5a,
                None => *kind = EARLY,
            }
        }
        if st == repair_at {
            repair(kind, body);
        }
    });
    let mut all = ok;
    for c in 0..LATER as u8 {
        all &= run(&mut w, 100 + c, &mut |_, _, _| {});
    }
    all
}

/// Every single-position XOR repair plus command restores: none may succeed when an honest
/// station lies between mark and repair.
fn any_repair_works(dir: Dir, mark_at: usize, pos: Option<usize>, repair_at: usize) -> bool {
    if attack(dir, mark_at, pos, repair_at, &|_, _| {}) {
        return true;
    }
    if attack(dir, mark_at, pos, repair_at, &|k, _| *k = RELAY) {
        return true;
    }
    (0..RELAY_BODY_LEN).any(|p| attack(dir, mark_at, pos, repair_at, &|_, b| b[p] ^= 0x5a))
}

#[test]
fn e2e_round_trip_through_the_splice() {
    let mut w = World::new();
    for c in 0..20 {
        assert!(w.c2s(c, &mut |_, _, _| {}));
        assert!(w.s2c(c, &mut |_, _, _| {}));
    }
}

#[test]
fn control_adjacent_colluders_repair() {
    // c1 marks its output, the RP (next station) undoes it: no honest station between.
    assert!(any_repair_works(Dir::C2S, 2, Some(300), 2));
}

#[test]
fn c2s_guard_marks_rp_repairs_fails() {
    for pos in [0, 15, 16, 300, 511] {
        assert!(!any_repair_works(Dir::C2S, 1, Some(pos), 2), "pos {pos}");
    }
}

#[test]
fn c2s_rp_marks_service_guard_repairs_fails() {
    // RP marks its B-backward output; s1 honest; s0 repairs before the service.
    for pos in [0, 16, 300] {
        assert!(!any_repair_works(Dir::C2S, 4, Some(pos), 6), "pos {pos}");
    }
}

#[test]
fn c2s_client_middle_marks_across_honest_rp_fails() {
    for pos in [0, 16, 300] {
        assert!(!any_repair_works(Dir::C2S, 2, Some(pos), 6), "pos {pos}");
    }
}

#[test]
fn s2c_service_guard_marks_rp_repairs_fails() {
    for pos in [0, 16, 300] {
        assert!(!any_repair_works(Dir::S2C, 1, Some(pos), 2), "pos {pos}");
    }
}

#[test]
fn s2c_rp_marks_client_guard_repairs_fails() {
    for pos in [0, 16, 300] {
        assert!(!any_repair_works(Dir::S2C, 4, Some(pos), 6), "pos {pos}");
    }
}

#[test]
fn command_flips_around_the_splice_fail() {
    // c0 relabels RELAY as RELAY_EARLY; c1 honest; RP restores RELAY (or not).
    assert!(!any_repair_works(Dir::C2S, 1, None, 2));
    // s0 relabels on B; s1 honest; RP restores.
    assert!(!any_repair_works(Dir::S2C, 1, None, 2));
    // Adjacent (c1 -> RP): the RP can undo it (no honest hop between; real RPs destroy).
    assert!(attack(Dir::C2S, 2, None, 2, &|k, _| *k = RELAY));
}

/// The RP replays an earlier e2e cell (it can re-wrap it for B itself): refused.
#[test]
fn rp_replays_e2e_cell_refused() {
    let mut w = World::new();
    let mut seen: Vec<Body> = Vec::new();
    for c in 0..3 {
        assert!(w.c2s(c, &mut |st, _, b| {
            if st == 3 {
                seen.push(*b)
            }
        }));
    }
    // The RP injects seen[1] again as the next cell on B (running its own layer on it).
    let mut body = seen[1];
    w.b[2].encrypt_backward(&mut body).unwrap();
    w.b[1].encrypt_backward(&mut body).unwrap();
    w.b[0].encrypt_backward(&mut body).unwrap();
    assert!(w.service.decrypt_backward(&mut body).is_err());
}
