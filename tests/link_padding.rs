//! Link padding over real TCP on 127.0.0.1 (docs/protocol.md §5.10): an idle channel
//! with a circuit is padded both ways at the negotiated rate, a client that stops padding
//! gets none, a client cannot make a relay pad faster than its floor, and a malformed
//! PADDING_NEGOTIATE closes the channel. Counts are bounded loosely from above by what
//! the timers allow (a slow machine only lowers them) and from below by "at least one":
//! no assertion depends on speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use allium::cell::{ChanCell, ChanMsg, PaddingBounds, PaddingNegotiate};
use allium::link::padding::expected_ms;
use allium::link::{LinkConfig, RecordStats, RECORD_LEN};
use allium::proto::{ClientChannel, ClientCircuit};
use allium::relay::{RelayHandle, RelayLimits};
use common::{start_relay_with, target, NO_HANG};

fn bounds(low: u16, high: u16) -> Option<PaddingBounds> {
    Some(PaddingBounds::new(low, high).unwrap())
}

/// A relay whose padding floor is `floor_ms`.
async fn relay(floor_ms: u64) -> RelayHandle {
    let limits = RelayLimits {
        link_padding_floor_ms: floor_ms,
        ..RelayLimits::default()
    };
    start_relay_with(limits, None).await
}

/// A client channel to `r` padding with `padding` (and asking `r` for it), with one
/// one-hop circuit on it (kept alive by the caller).
async fn channel_with_circuit(
    r: &RelayHandle,
    padding: Option<PaddingBounds>,
) -> (Arc<ClientChannel>, ClientCircuit) {
    let cfg = LinkConfig {
        padding,
        ..LinkConfig::default()
    };
    let chan = ClientChannel::connect(&target(r), &cfg).await.unwrap();
    let circ = ClientCircuit::create(&chan, &target(r), NO_HANG)
        .await
        .unwrap();
    (chan, circ)
}

/// Waits (within NO_HANG) until `count()` reaches `n`.
async fn until(n: u64, count: impl Fn() -> u64) {
    tokio::time::timeout(NO_HANG, async {
        while count() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("padding never came");
}

/// The relay's side of its only client channel.
fn relay_side(r: &RelayHandle) -> Arc<RecordStats> {
    let chans = r.shared().all_channels();
    assert_eq!(chans.len(), 1);
    chans[0].stats.clone()
}

/// Both sides pad an idle channel with a circuit: the client with its own schedule, the
/// relay with the one the client negotiated (100 to 200 ms, within the relay's floor of
/// 100 ms), never faster than the bounds allow.
#[tokio::test]
async fn an_idle_channel_with_a_circuit_is_padded_both_ways() {
    let r = relay(100).await;
    let (chan, _circ) = channel_with_circuit(&r, bounds(100, 200)).await;
    let theirs = relay_side(&r);
    until(3, || chan.stats.padding_received()).await;
    until(3, || theirs.padding_received()).await;

    let window = Duration::from_secs(2);
    let (ours0, theirs0) = (chan.stats.padding_received(), theirs.padding_received());
    tokio::time::sleep(window).await;
    let got = chan.stats.padding_received() - ours0;
    let sent = theirs.padding_received() - theirs0;
    eprintln!("in {window:?}: relay → client {got} PADDING, client → relay {sent}");
    // At most one per 100 ms (plus one in flight, plus delivery bunching).
    assert!(got <= 25, "{got}");
    assert!(sent <= 25, "{sent}");
    assert!(!chan.stats.saw_odd_size());
}

/// A client that asks for no padding gets none: after its STOP (fenced by a CREATE that
/// the relay answers only after reading the STOP), at most the one wait already drawn
/// may still end in a PADDING; before it, the same channel was padded every 100 ms.
#[tokio::test]
async fn stop_turns_the_relays_padding_off() {
    let r = relay(100).await;
    let (chan, _circ) = channel_with_circuit(&r, bounds(100, 100)).await;
    until(3, || chan.stats.padding_received()).await;

    let stop = ChanCell::channel(ChanMsg::PaddingNegotiate(PaddingNegotiate::Stop)).unwrap();
    chan.sender.send(&stop).await.unwrap();
    let _fence = ClientCircuit::create(&chan, &target(&r), NO_HANG)
        .await
        .unwrap();
    let before = chan.stats.padding_received();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = chan.stats.padding_received();
    assert!(after - before <= 1, "{before} → {after}");
}

/// A client configured "off" sends STOP itself and pads nothing: its relay, which pads
/// clients every 1.5 to 9.5 s by default, sends it nothing either (keep-alive only, every
/// 100 s), and it sends the relay nothing.
#[tokio::test]
async fn a_client_with_padding_off_neither_sends_nor_receives_any() {
    let r = relay(1500).await;
    let (chan, _circ) = channel_with_circuit(&r, None).await;
    let theirs = relay_side(&r);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(chan.stats.padding_received(), 0);
    assert_eq!(chan.stats.padding_sent(), 0);
    assert_eq!(theirs.padding_received(), 0);
}

/// An attacker asks the relay to pad as fast as the wire allows (100 ms): the relay pads
/// no faster than its floor (here 500 ms), so at most ~2 per second, not ~10.
#[tokio::test]
async fn a_client_cannot_make_the_relay_pad_faster_than_its_floor() {
    let r = relay(500).await;
    let (chan, _circ) = channel_with_circuit(&r, bounds(100, 100)).await;
    until(2, || chan.stats.padding_received()).await;
    let before = chan.stats.padding_received();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = chan.stats.padding_received() - before;
    eprintln!("3 s at a 500 ms floor: {got} PADDING (30 if the floor were ignored)");
    // 3 s / 500 ms = 6, plus one in flight and delivery bunching.
    assert!(got <= 10, "{got}");
}

/// Asking for 1 ms is below what the wire can express: the relay refuses the cell as a
/// protocol violation and closes the channel.
#[tokio::test]
async fn asking_for_one_millisecond_closes_the_channel() {
    let r = relay(1500).await;
    let cfg = LinkConfig::default();
    let chan = ClientChannel::connect(&target(&r), &cfg).await.unwrap();
    let valid = PaddingNegotiate::Start(PaddingBounds::new(100, 100).unwrap());
    let mut raw = ChanCell::channel(ChanMsg::PaddingNegotiate(valid))
        .unwrap()
        .encode()
        .unwrap();
    // circ_id (4) | command (1) | version | command | low_ms | high_ms
    raw[7..9].copy_from_slice(&1u16.to_be_bytes());
    raw[9..11].copy_from_slice(&1u16.to_be_bytes());
    let violations = || {
        r.shared()
            .counters
            .protocol_violations
            .load(Ordering::Relaxed)
    };
    let v0 = violations();
    chan.sender.send_raw(raw).await.unwrap();
    tokio::time::timeout(NO_HANG, chan.sender.closed())
        .await
        .expect("the relay must close the channel");
    assert_eq!(violations(), v0 + 1);
}

/// Bytes per idle channel per hour, measured on a real channel over a shortened interval
/// (bounds scaled down 15×: 100 to 633 ms; 8 s, or `LINK_PADDING_WINDOW_SECS`) and
/// compared with `3600 s / E[max(X, Y)]` records of 533 bytes. Printed, for
/// docs/PERFORMANCE.md; asserted only loosely.
#[tokio::test]
async fn padding_bytes_per_idle_channel_hour() {
    let b = bounds(100, 633);
    let r = relay(100).await;
    let (chan, _circ) = channel_with_circuit(&r, b).await;
    until(1, || chan.stats.padding_received()).await;
    let window = Duration::from_secs(
        std::env::var("LINK_PADDING_WINDOW_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8),
    );
    let before = chan.stats.padding_received();
    let start = tokio::time::Instant::now();
    tokio::time::sleep(window).await;
    let got = chan.stats.padding_received() - before;
    let secs = start.elapsed().as_secs_f64();
    let expected_per_s = 1000.0 / expected_ms(b.unwrap());
    eprintln!(
        "measured {:.2} PADDING/s, expected {expected_per_s:.2}/s; at the normal bounds this \
         is {:.0} bytes/hour one way (expected {:.0})",
        got as f64 / secs,
        got as f64 / secs / expected_per_s * 3600.0 * 1000.0
            / expected_ms(allium::link::padding::normal())
            * RECORD_LEN as f64,
        3600.0 * 1000.0 / expected_ms(allium::link::padding::normal()) * RECORD_LEN as f64,
    );
    assert!(got >= 1);
    assert!((got as f64) <= secs * 10.0 + 3.0, "{got}");
}

/// The same at the real normal bounds, for as long as `LINK_PADDING_MEASURE_SECS` says
/// (default 120): `cargo test --test link_padding -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement of minutes, run by hand for docs/PERFORMANCE.md"]
async fn measure_normal_padding_bytes_per_hour() {
    let secs: u64 = std::env::var("LINK_PADDING_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let r = relay(1500).await;
    let (chan, _circ) = channel_with_circuit(&r, allium::link::LinkPadding::Normal.bounds()).await;
    let theirs = relay_side(&r);
    let (w0, r0) = (chan.stats.bytes_written(), chan.stats.bytes_read());
    let (p0, q0) = (chan.stats.padding_received(), theirs.padding_received());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let per_hour = |n: u64| n as f64 * 3600.0 / secs as f64;
    let down = chan.stats.padding_received() - p0;
    let up = theirs.padding_received() - q0;
    eprintln!(
        "{secs} s idle with a circuit: relay → client {down} PADDING ({:.0} B/h), client → \
         relay {up} ({:.0} B/h); all records: {:.0} B/h written, {:.0} B/h read; expected \
         {:.0} B/h each way",
        per_hour(down * RECORD_LEN as u64),
        per_hour(up * RECORD_LEN as u64),
        per_hour(chan.stats.bytes_written() - w0),
        per_hour(chan.stats.bytes_read() - r0),
        3600.0 * 1000.0 / expected_ms(allium::link::padding::normal()) * RECORD_LEN as f64,
    );
    assert!(down >= 1 && up >= 1);
}
