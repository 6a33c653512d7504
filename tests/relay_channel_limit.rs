//! A relay at its inbound channel limit (real TCP on 127.0.0.1): a client trying to open
//! one more channel is refused cleanly (its connection closed, counted), the circuits of
//! the channels already open keep working, and once a channel closes the relay accepts
//! again. Also: a few hundred idle channels held at once, with a circuit still served.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use allium::cell::relay_contexts::AtClient;
use allium::cell::{DestroyReason, RelayMsg};
use allium::link::LinkConfig;
use allium::proto::{ClientChannel, ClientCircuit};
use allium::relay::{RelayHandle, RelayLimits};

mod common;
use common::{target, NO_HANG};

/// TRUNCATE to the last hop of a 1-hop circuit is answered with TRUNCATED: a round trip.
async fn round_trip(circ: &mut ClientCircuit) {
    circ.send_to_last(RelayMsg::Truncate).await.unwrap();
    let (_, cell, _) = circ.recv_timeout(NO_HANG).await.unwrap();
    assert_eq!(
        cell.msg(),
        &AtClient::Truncated(DestroyReason::Requested),
        "the circuit answers"
    );
}

fn refused(relay: &RelayHandle) -> u64 {
    relay
        .shared()
        .counters
        .refused_channel_limit
        .load(Ordering::Relaxed)
}

#[tokio::test]
async fn at_the_channel_limit_new_channels_are_refused_and_old_ones_keep_serving() {
    let limits = RelayLimits {
        inbound_channels: 3,
        ..RelayLimits::default()
    };
    let relay = common::start_relay_with(limits, None).await;
    let t = target(&relay);
    let cfg = LinkConfig::default();
    let a = ClientChannel::connect(&t, &cfg).await.unwrap();
    let mut circ = ClientCircuit::create(&a, &t, NO_HANG).await.unwrap();
    let b = ClientChannel::connect(&t, &cfg).await.unwrap();
    let _c = ClientChannel::connect(&t, &cfg).await.unwrap();

    // One more: closed by the relay before its handshake completes.
    let fourth = tokio::time::timeout(NO_HANG, ClientChannel::connect(&t, &cfg))
        .await
        .expect("refused promptly, not left hanging");
    assert!(fourth.is_err(), "a fourth channel was accepted");
    assert!(refused(&relay) >= 1);
    let text = allium::relay::metrics::render(relay.shared());
    assert!(text.contains("allium_refused_channel_limit_total"));

    // The channels already open are untouched.
    round_trip(&mut circ).await;

    // Under the limit again: accepted.
    b.sender.close();
    drop(b);
    let accepted = tokio::time::timeout(NO_HANG, async {
        loop {
            if let Ok(chan) = ClientChannel::connect(&t, &cfg).await {
                return chan;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("accepted once a channel closed");
    let mut again = ClientCircuit::create(&accepted, &t, NO_HANG).await.unwrap();
    round_trip(&mut again).await;
    round_trip(&mut circ).await;
}

#[tokio::test]
async fn hundreds_of_idle_channels_and_a_circuit_still_served() {
    let relay = common::start_relay_with(RelayLimits::default(), None).await;
    let t = target(&relay);
    let cfg = LinkConfig::default();
    let mut chans = Vec::new();
    for _ in 0..300 {
        chans.push(ClientChannel::connect(&t, &cfg).await.unwrap());
    }
    let fresh = ClientChannel::connect(&t, &cfg).await.unwrap();
    let mut circ = ClientCircuit::create(&fresh, &t, NO_HANG).await.unwrap();
    round_trip(&mut circ).await;
    assert!(chans.iter().all(|c| !c.is_closed()));
    assert_eq!(refused(&relay), 0);
}
