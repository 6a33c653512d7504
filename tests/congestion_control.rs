//! Congestion control (docs/protocol.md §3.5) over real relays on 127.0.0.1: negotiated in
//! the circuit handshake, detected when a hop does not grant it, carrying bulk data intact
//! both ways; and what a client that knows its own keys can try against an exit under it
//! (forged SENDMEs, stream SENDMEs, XOFF where it was never negotiated, ignoring XOFF).
//! Speed lives in the benchmarks (`allium bench --scenario long-path`), never here.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::{Data, Sendme};
use allium::cell::{DestroyReason, RelayCell, RelayMsg, StreamId, TargetAddr};
use allium::dir::ExitPolicy;
use allium::proto::{CircuitError, FlowMode};
use allium::relay::{RelayHandle, RelayLimits};
use common::raw_circuit::{destroyed, open};
use common::{build_through_asking, start_relay_with, NO_HANG};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn path(exit_limits: RelayLimits) -> Vec<RelayHandle> {
    vec![
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(exit_limits, Some(ExitPolicy::default_exit_allow_loopback())).await,
    ]
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// A server that sends `down` patterned bytes, then reads to EOF and answers with how many
/// bytes it read (8 bytes, big-endian) and whether every byte matched the pattern.
async fn bulk_server(down: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                // A circuit an attacker test destroys resets the connection: the server
                // then just stops (the test's own checks are on the circuit).
                let writer = tokio::spawn(async move {
                    let data: Vec<u8> = (0..down).map(pattern).collect();
                    wr.write_all(&data).await.ok().map(|_| wr)
                });
                let mut got = 0usize;
                let mut intact = true;
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = rd.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    intact &= buf[..n]
                        .iter()
                        .enumerate()
                        .all(|(k, b)| *b == pattern(got + k));
                    got += n;
                }
                let Ok(Some(mut wr)) = writer.await else {
                    return;
                };
                let mut report = (got as u64).to_be_bytes().to_vec();
                report.push(u8::from(intact));
                let _ = wr.write_all(&report).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    port
}

/// Downloads `down` bytes and uploads `up` bytes on one stream of a circuit through
/// `relays` (asking for congestion control if `ask`); checks both arrive intact and returns
/// the circuit's flow mode.
async fn transfer(relays: &[RelayHandle], ask: bool, down: usize, up: usize) -> FlowMode {
    let port = bulk_server(down).await;
    let circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), ask)
        .await
        .into_handle();
    let mode = circ.flow_mode();
    let stream = circ
        .open_stream(TargetAddr::Ip("127.0.0.1".parse().unwrap()), port, NO_HANG)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let upload = tokio::spawn(async move {
        let data: Vec<u8> = (0..up).map(pattern).collect();
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), rd.read_to_end(&mut all))
        .await
        .expect("the transfer must not stall")
        .unwrap();
    upload.await.unwrap();
    assert_eq!(
        all.len(),
        down + 9,
        "download length plus the server's report"
    );
    assert!(
        all[..down]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i)),
        "download intact"
    );
    let reported = u64::from_be_bytes(all[down..down + 8].try_into().unwrap());
    assert_eq!(reported, up as u64, "upload length");
    assert_eq!(all[down + 8], 1, "upload intact");
    mode
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_when_asked_and_bulk_data_crosses_intact_both_ways() {
    let relays = path(RelayLimits::default()).await;
    let mode = transfer(&relays, true, 8 << 20, 4 << 20).await;
    assert_eq!(mode, FlowMode::Congestion { sendme_inc: 31 });
    // A client that does not ask gets fixed windows from the same relays.
    let mode = transfer(&relays, false, 2 << 20, 1 << 20).await;
    assert_eq!(mode, FlowMode::Fixed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_that_does_not_grant_it_is_detected_and_fixed_windows_used() {
    let limits = RelayLimits {
        congestion_control: false,
        ..RelayLimits::default()
    };
    let relays = path(limits).await;
    let mode = transfer(&relays, true, 4 << 20, 1 << 20).await;
    assert_eq!(
        mode,
        FlowMode::Fixed,
        "no grant: the client must not assume one"
    );
}

// ---------------------------------------------------------------------------------------
// A client that knows its keys, against an exit
// ---------------------------------------------------------------------------------------

fn is_protocol(err: &CircuitError) -> bool {
    matches!(err, CircuitError::Destroyed(DestroyReason::Protocol))
}

/// A destination that accepts and then never reads: whatever the exit delivers piles up.
async fn never_reading_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoff_and_xon_where_congestion_control_was_not_negotiated_are_refused() {
    let relays = path(RelayLimits::default()).await;
    let port = never_reading_server().await;
    for msg in [RelayMsg::Xoff, RelayMsg::Xon] {
        let mut circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), false).await;
        open(&mut circ, 3, port).await;
        circ.send(2, RelayCell::new(StreamId::new(3), msg).unwrap())
            .await
            .unwrap();
        let err = destroyed(&mut circ).await;
        assert!(is_protocol(&err), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmes_under_congestion_control_must_carry_the_right_tag() {
    let relays = path(RelayLimits::default()).await;
    let sendme = |stream: Option<u16>, tag: [u8; 16]| {
        RelayCell::new(
            stream.and_then(StreamId::new),
            RelayMsg::Sendme(Sendme { tag }),
        )
        .unwrap()
    };
    // The exit sends 10 MB; under congestion control it stops after its initial window
    // (124 cells) until a SENDME for the 31st cell arrives.
    let port = bulk_server(10 << 20).await;
    let mut circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), true).await;
    open(&mut circ, 4, port).await;
    let mut tags = Vec::new();
    while tags.len() < 124 {
        let (_, cell, tag) = tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(cell.msg(), AtClient::Data(_)) {
            tags.push(tag);
        }
    }
    // The window is spent: nothing more comes without a SENDME.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), circ.recv())
            .await
            .is_err(),
        "the exit must respect its window"
    );
    // The 100th cell is no SENDME point under congestion control (every 31st is): refused.
    let mut wrong_point = build_through_asking(&relays.iter().collect::<Vec<_>>(), true).await;
    open(&mut wrong_point, 4, port).await;
    let mut early = Vec::new();
    while early.len() < 100 {
        let (_, cell, tag) = wrong_point.recv().await.unwrap();
        if matches!(cell.msg(), AtClient::Data(_)) {
            early.push(tag);
        }
    }
    wrong_point.send(2, sendme(None, early[99])).await.unwrap();
    assert!(is_protocol(&destroyed(&mut wrong_point).await));

    // The real tag of the 31st cell reopens the window: more DATA follows.
    circ.send(2, sendme(None, tags[30])).await.unwrap();
    let (_, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .unwrap()
        .expect("an honest SENDME must be accepted");
    assert!(matches!(cell.msg(), AtClient::Data(_)), "{cell:?}");
    // A stream-level SENDME: streams have no windows under congestion control.
    circ.send(2, sendme(Some(4), tags[49])).await.unwrap();
    assert!(is_protocol(&destroyed(&mut circ).await));

    // A forged tag for the 62nd cell.
    let mut forged_circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), true).await;
    open(&mut forged_circ, 4, port).await;
    let mut got = Vec::new();
    while got.len() < 62 {
        let (_, cell, tag) = forged_circ.recv().await.unwrap();
        if matches!(cell.msg(), AtClient::Data(_)) {
            got.push(tag);
        }
    }
    forged_circ.send(2, sendme(None, got[30])).await.unwrap();
    let mut forged = got[61];
    forged[0] ^= 1;
    forged_circ.send(2, sendme(None, forged)).await.unwrap();
    assert!(is_protocol(&destroyed(&mut forged_circ).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_xoff_is_cut_off_before_the_exit_buffers_without_bound() {
    let relays = path(RelayLimits::default()).await;
    let port = never_reading_server().await;
    let mut circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), true).await;
    open(&mut circ, 5, port).await;
    let cell = || {
        RelayCell::new(
            StreamId::new(5),
            RelayMsg::Data(Data::new(vec![0x55; 491]).unwrap()),
        )
        .unwrap()
    };
    // The destination never reads: once the kernel's buffers are full the exit's writer
    // stops, and the exit must say XOFF, then (as the client goes on) end the circuit once
    // the stream's buffer passes its bound: XOFF mark + the largest window in flight. The
    // attacker never waits for the window (it has no SENDME obligations to keep).
    let mut sent = 0u64;
    let mut saw_xoff = false;
    let err = 'attack: loop {
        for _ in 0..64 {
            if let Err(e) = circ.send(2, cell()).await {
                break 'attack e;
            }
            sent += 1;
        }
        // Drain what the exit said meanwhile (SENDMEs, XOFF), without waiting long.
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(1), circ.recv()).await {
            match r {
                Ok((_, c, _)) => saw_xoff |= matches!(c.msg(), AtClient::Xoff),
                Err(e) => break 'attack e,
            }
        }
        assert!(
            sent < 200_000,
            "the exit must cut off a client ignoring XOFF"
        );
    };
    eprintln!(
        "cut off after {sent} cells ({} MB): {err:?}",
        sent * 491 / 1_000_000
    );
    assert!(saw_xoff, "the exit must say XOFF before cutting off");
    assert!(
        is_protocol(&err) || matches!(err, CircuitError::Destroyed(_)),
        "{err:?}"
    );
}

/// A destination that closes its side at once (the exit ends the stream with END(DONE))
/// and never reads.
async fn closing_never_reading_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            let (rd, mut wr) = s.into_split();
            let _ = wr.shutdown().await;
            held.push((rd, wr));
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_closed_both_ways_still_count_until_their_data_is_written() {
    // The attack: fill a stream whose destination never reads, close it both ways, open
    // the next one, repeat. If a closed stream were forgotten while its writer still held
    // its cells, each round would leave ~2 MB behind, uncounted. It stays counted until
    // written, so the circuit's bound (500 per stream + one window) ends the attack.
    let relays = path(RelayLimits::default()).await;
    let port = closing_never_reading_server().await;
    let mut circ = build_through_asking(&relays.iter().collect::<Vec<_>>(), true).await;
    let data = |id: u16| {
        RelayCell::new(
            StreamId::new(id),
            RelayMsg::Data(Data::new(vec![0x33; 491]).unwrap()),
        )
        .unwrap()
    };
    let mut rounds = 0;
    let err = 'attack: loop {
        rounds += 1;
        assert!(rounds <= 20, "the exit kept taking closed streams' data");
        let id = 10 + rounds;
        open(&mut circ, id, port).await;
        // Until the exit says XOFF for this stream (its buffer past 500 cells), then 1,000
        // more and END(DONE): each round leaves ~1,500 cells against 500 more allowed.
        let mut xoff = false;
        let mut extra = 0;
        while extra < 1000 {
            for _ in 0..32 {
                if let Err(e) = circ.send(2, data(id)).await {
                    break 'attack e;
                }
                if xoff {
                    extra += 1;
                }
            }
            while let Ok(r) = tokio::time::timeout(Duration::from_millis(1), circ.recv()).await {
                match r {
                    Ok((_, c, _)) => {
                        xoff |= matches!(c.msg(), AtClient::Xoff) && c.stream() == StreamId::new(id)
                    }
                    Err(e) => break 'attack e,
                }
            }
        }
        let end = RelayCell::new(
            StreamId::new(id),
            RelayMsg::End(allium::cell::EndReason::Done),
        );
        if let Err(e) = circ.send(2, end.unwrap()).await {
            break 'attack e;
        }
    };
    eprintln!("cut off in round {rounds}: {err:?}");
    assert!(is_protocol(&err), "{err:?}");
}
