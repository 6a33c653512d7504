use super::*;

/// A RELAY cell of circuit `circ` whose body starts with `n`.
fn cell(circ: u32, n: u16) -> [u8; CELL_LEN] {
    let mut c = [0u8; CELL_LEN];
    c[..CIRC_ID_LEN].copy_from_slice(&circ.to_be_bytes());
    c[CIRC_ID_LEN] = ChanCmd::Relay.code();
    c[CIRC_ID_LEN + 1..CIRC_ID_LEN + 3].copy_from_slice(&n.to_be_bytes());
    c
}

fn padding() -> [u8; CELL_LEN] {
    let mut c = [0u8; CELL_LEN];
    c[CIRC_ID_LEN] = ChanCmd::Padding.code();
    c
}

fn circ_of(c: &[u8; CELL_LEN]) -> u32 {
    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
}

fn seq_of(c: &[u8; CELL_LEN]) -> u16 {
    u16::from_be_bytes([c[CIRC_ID_LEN + 1], c[CIRC_ID_LEN + 2]])
}

/// A quiet circuit's cell, queued behind a bulk circuit's backlog, goes out next.
#[test]
fn a_quiet_circuit_overtakes_a_bulk_backlog() {
    let t = Instant::now();
    let mut s = Scheduler::new(1000, t);
    for n in 0..500 {
        s.push(&cell(7, n)).unwrap();
    }
    // The bulk circuit has been sending for a while.
    for n in 0..100 {
        assert_eq!(s.pop(t), Some(cell(7, n)));
    }
    s.push(&cell(9, 0)).unwrap();
    assert_eq!(s.pop(t), Some(cell(9, 0)));
    // Then the backlog, in order.
    for n in 100..500 {
        assert_eq!(s.pop(t), Some(cell(7, n)));
    }
    assert_eq!(s.pop(t), None);
    assert_eq!(s.len(), 0);
}

/// Even a circuit that has sent nothing yet loses its turn after one cell to a newcomer.
#[test]
fn a_newcomer_goes_second_at_the_latest() {
    let t = Instant::now();
    let mut s = Scheduler::new(1000, t);
    for n in 0..300 {
        s.push(&cell(1, n)).unwrap();
    }
    s.push(&cell(2, 0)).unwrap();
    assert_eq!(circ_of(&s.pop(t).unwrap()), 1);
    assert_eq!(s.pop(t), Some(cell(2, 0)));
}

/// The channel's own cells (circuit id 0, and a REKEY whatever its id) go before every
/// circuit's, in their own order.
#[test]
fn channel_cells_go_first_in_order() {
    let t = Instant::now();
    let mut s = Scheduler::new(10, t);
    s.push(&cell(5, 0)).unwrap();
    s.push(&padding()).unwrap();
    let mut rekey = cell(5, 1);
    rekey[CIRC_ID_LEN] = ChanCmd::Rekey.code();
    s.push(&rekey).unwrap();
    s.push(&padding()).unwrap();
    assert_eq!(s.pop(t), Some(padding()));
    assert_eq!(s.pop(t), Some(rekey));
    assert_eq!(s.pop(t), Some(padding()));
    assert_eq!(s.pop(t), Some(cell(5, 0)));
    assert_eq!(s.pop(t), None);
}

/// One circuit can queue at most its share; others still can.
#[test]
fn per_circuit_cap_leaves_room_for_others() {
    let t = Instant::now();
    let mut s = Scheduler::new(4, t);
    for n in 0..4 {
        s.push(&cell(1, n)).unwrap();
    }
    assert_eq!(s.push(&cell(1, 4)), Err(Refused::CircuitFull));
    s.push(&cell(2, 0)).unwrap();
    // Channel cells are not a circuit's: the cap does not apply to them.
    for _ in 0..10 {
        s.push(&padding()).unwrap();
    }
    assert_eq!(s.len(), 15);
    // A sent cell makes room for one more.
    for _ in 0..10 {
        s.pop(t).unwrap();
    }
    assert_eq!(circ_of(&s.pop(t).unwrap()), 1);
    s.push(&cell(1, 4)).unwrap();
    assert_eq!(s.push(&cell(1, 5)), Err(Refused::CircuitFull));
}

/// Two bulk circuits share the channel evenly: they alternate.
#[test]
fn two_bulk_circuits_share_evenly() {
    let t = Instant::now();
    let mut s = Scheduler::new(1000, t);
    for n in 0..400 {
        s.push(&cell(1, n)).unwrap();
    }
    // Circuit 2 starts later, with the same backlog, but 1 already sent 100 cells.
    for _ in 0..100 {
        s.pop(t).unwrap();
    }
    for n in 0..400 {
        s.push(&cell(2, n)).unwrap();
    }
    // 2 catches up first...
    for n in 0..100 {
        assert_eq!(s.pop(t), Some(cell(2, n)));
    }
    // ...then they alternate, each in its own order.
    let mut sent = [0usize; 3];
    let mut last = 0;
    for _ in 0..400 {
        let c = s.pop(t).unwrap();
        let circ = circ_of(&c) as usize;
        assert_ne!(
            circ, last,
            "no circuit goes twice in a row while both have cells"
        );
        last = circ;
        sent[circ] += 1;
    }
    assert_eq!(sent, [0, 200, 200]);
}

/// A count decays: a circuit that sent a lot long ago yields to none that sent a little
/// just now... and the other way round.
#[test]
fn counts_decay_with_the_half_life() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(1000, t0);
    for n in 0..100 {
        s.push(&cell(1, n)).unwrap();
    }
    for _ in 0..100 {
        s.pop(t0).unwrap();
    }
    // Ten half-lives later: circuit 1's 100 cells weigh ~0.1 now; circuit 2 sends 20.
    let t1 = t0 + 10 * HALF_LIFE;
    for n in 0..20 {
        s.push(&cell(2, n)).unwrap();
    }
    for _ in 0..19 {
        s.pop(t1).unwrap();
    }
    s.push(&cell(1, 100)).unwrap();
    assert_eq!(
        s.pop(t1),
        Some(cell(1, 100)),
        "the old bulk circuit goes first"
    );
    // Without decay, the recent sender goes first.
    let mut s = Scheduler::new(1000, t0);
    for n in 0..100 {
        s.push(&cell(1, n)).unwrap();
    }
    for _ in 0..100 {
        s.pop(t0).unwrap();
    }
    for n in 0..20 {
        s.push(&cell(2, n)).unwrap();
    }
    for _ in 0..19 {
        s.pop(t0).unwrap();
    }
    s.push(&cell(1, 100)).unwrap();
    assert_eq!(s.pop(t0), Some(cell(2, 19)));
}

/// Hours of traffic (far past the rescale point) keep the counts finite and the order
/// right.
#[test]
fn rescaling_keeps_the_order() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(1000, t0);
    for n in 0..50 {
        s.push(&cell(1, n)).unwrap();
        s.push(&cell(2, n)).unwrap();
    }
    for hour in 1..=5u32 {
        let t = t0 + Duration::from_secs(3600) * hour;
        // An hour apart: a burst of a third circuit, and one cell of the others.
        for _ in 0..10 {
            s.push(&cell(3, 0)).unwrap();
            s.pop(t).unwrap();
        }
        let c = s.pop(t).unwrap();
        assert!(circ_of(&c) != 0);
        for e in s.heap.iter() {
            assert!(e.count.is_finite(), "{e:?}");
        }
    }
    assert!(s.epoch > t0, "rescaled");
}

/// Discarding a circuit frees its cells' accounting: the channel bound counts only what
/// is left, and the circuit may queue its full share again.
#[test]
fn discard_frees_accounting() {
    let t = Instant::now();
    let mut s = Scheduler::new(8, t);
    for n in 0..8 {
        s.push(&cell(1, n)).unwrap();
        s.push(&cell(2, n)).unwrap();
    }
    assert_eq!(s.len(), 16);
    assert_eq!(s.discard(1), 8);
    assert_eq!(s.discard(1), 0);
    assert_eq!(s.len(), 8);
    assert_eq!(s.active(), 1);
    for n in 0..8 {
        s.push(&cell(1, 100 + n)).unwrap();
    }
    let mut from_1 = Vec::new();
    while let Some(c) = s.pop(t) {
        if circ_of(&c) == 1 {
            from_1.push(seq_of(&c));
        }
    }
    assert_eq!(
        from_1,
        (100..108).collect::<Vec<_>>(),
        "none of the old cells"
    );
    assert_eq!(s.len(), 0);
    assert_eq!(s.active(), 0);
}

/// A drained scheduler holds no per-circuit memory: queues are freed when they empty,
/// quiet circuits leave no count behind, and a busy one's count is swept once decayed.
#[test]
fn a_drained_scheduler_holds_nothing_per_circuit() {
    let t = Instant::now();
    let mut s = Scheduler::new(1000, t);
    for circ in 1..=5000u32 {
        s.push(&cell(circ, 0)).unwrap();
    }
    for n in 0..100 {
        s.push(&cell(9999, n)).unwrap();
    }
    while s.pop(t).is_some() {}
    assert_eq!(s.active(), 0);
    assert_eq!(s.circs.capacity(), 0);
    assert_eq!(s.heap.capacity(), 0);
    assert_eq!(s.chan.capacity(), 0);
    assert_eq!(s.recent.len(), 1, "only the busy circuit's count is kept");
    // Much later, the next pop sweeps it, even of a channel cell (keepalive padding).
    let later = t + 20 * HALF_LIFE;
    s.push(&padding()).unwrap();
    s.pop(later).unwrap();
    assert!(s.recent.is_empty());
    assert_eq!(s.recent.capacity(), 0);
}

/// An attacker's circuit flooding cells cannot hold more than its share, and cannot delay
/// another circuit's cell by more than one of its own.
#[test]
fn a_flooding_circuit_cannot_starve_others() {
    let t = Instant::now();
    let mut s = Scheduler::new(256, t);
    let mut refused = 0;
    for n in 0..10_000u16 {
        if s.push(&cell(666, n)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(s.len(), 256);
    assert_eq!(refused, 10_000 - 256);
    for round in 0..100u16 {
        s.push(&cell(1, round)).unwrap();
        // Keep the flood topped up.
        let _ = s.push(&cell(666, round));
        let first = s.pop(t).unwrap();
        let next = if circ_of(&first) == 1 {
            first
        } else {
            s.pop(t).unwrap()
        };
        assert_eq!(next, cell(1, round));
    }
    assert!(s.len() <= 256);
}

/// Thousands of active circuits: each gets its cell out in the order it came (all at
/// count 0), and the whole run takes O(n log n) (no quadratic scan would finish quickly
/// in a debug build with 20,000 circuits... but no timing is asserted).
#[test]
fn many_circuits_in_arrival_order() {
    let t = Instant::now();
    let mut s = Scheduler::new(4, t);
    for circ in 1..=20_000u32 {
        s.push(&cell(circ, 0)).unwrap();
    }
    for circ in 1..=20_000u32 {
        assert_eq!(circ_of(&s.pop(t).unwrap()), circ);
    }
    assert_eq!(s.pop(t), None);
}
