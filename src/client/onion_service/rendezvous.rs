//! Meeting a client at its rendezvous point and handing the circuit to a circuit task that
//! accepts the client's streams ([`crate::proto::reactor::spawn_accepting`]); the service's
//! end ([`crate::client::service_end::serve`]) connects them to the local targets. Everything
//! the service needs from the circuit layer goes through this file.

use std::sync::Arc;

use tracing::debug;

use crate::cell::onion_msg::{OnionMsg, Rendezvous1};
use crate::cell::relay_contexts::AtRelay;
use crate::cell::RelayMsg;
use crate::client::service_end::ServiceEnd;
use crate::dir::ConsensusEntry;
use crate::onion::handshake::HsServiceIntro;
use crate::onion::intro::IntroducePlaintext;
use crate::proto::{ClientCircuit, RelayTarget};

use super::shared::Shared;

pub(super) use crate::client::service_end::{RendezvousSlot, RendezvousSlots};

/// Whether the service may meet the client at the rendezvous point it named (`listed` is
/// the consensus entry of the named identity). Only a relay of our consensus flagged
/// Running and Valid, at one of its listed addresses: otherwise a client could make our
/// middle relay connect to any host and port it names, or to a relay the authorities no
/// longer vouch for.
fn check_rendezvous_point(
    listed: Option<&ConsensusEntry>,
    plain: &IntroducePlaintext,
) -> Result<(), &'static str> {
    let listed = listed.ok_or("rendezvous point not in the consensus")?;
    if !listed.has(crate::dir::path::USABLE) {
        return Err("rendezvous point not flagged Running and Valid");
    }
    if !listed.addrs.contains(&plain.rend_addr) {
        return Err("rendezvous point address not the listed one");
    }
    Ok(())
}

/// Builds a circuit to the client's rendezvous point, sends RENDEZVOUS1 and starts
/// serving the client's streams on it.
pub(super) async fn meet(
    shared: &Arc<Shared>,
    plain: IntroducePlaintext,
    hs: HsServiceIntro,
    slot: RendezvousSlot,
) -> Result<(), String> {
    let onion = plain
        .rend_onion_cert
        .verify(shared.clock().now_unix())
        .map_err(|e| format!("rendezvous point certificate: {e}"))?;
    if onion.identity() != &plain.rend_identity {
        return Err("rendezvous point certificate names another relay".into());
    }
    let consensus = shared.client.live_consensus().map_err(|e| e.to_string())?;
    if let Err(why) = check_rendezvous_point(consensus.relay(plain.rend_identity), &plain) {
        debug!("onion service: rendezvous point refused: {why}");
        return Err(why.into());
    }
    let target = RelayTarget {
        addr: plain.rend_addr,
        identity: plain.rend_identity,
        onion,
    };
    let (keys, reply) = hs.rendezvous(&mut rand::rng()).map_err(|e| e.to_string())?;
    let mut circ: ClientCircuit = shared
        .client
        .build_circuit_ending(&target, crate::client::CircPurpose::RendService)
        .await
        .map_err(|e| e.to_string())?;
    // Nothing is expected from the rendezvous point itself; once the end-to-end hop is
    // added, the client's relay messages arrive through it.
    circ.send_to_last(RelayMsg::Onion(OnionMsg::Rendezvous1(Rendezvous1 {
        cookie: plain.cookie,
        handshake: reply,
    })))
    .await
    .map_err(|e| e.to_string())?;
    circ.push_end_to_end_hop(&keys, true)
        .map_err(|e| e.to_string())?;
    let (circuit, incoming) = crate::proto::reactor::spawn_accepting(
        circ.accepting::<AtRelay>(),
        Arc::clone(&shared.udp),
    );
    let end = ServiceEnd {
        ports: Arc::clone(&shared.ports),
        connect_timeout: shared.connect_timeout,
        idle_timeout: shared.rendezvous_idle,
        slot: Some(slot),
        stopped: Some(shared.stopped.clone()),
    };
    tokio::spawn(crate::client::service_end::serve(circuit, incoming, end));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::onion_service::test_support::relay_entry;
    use std::net::SocketAddr;

    #[test]
    fn rendezvous_point_must_be_listed_usable_and_at_its_address() {
        let mut entry = relay_entry();
        let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        entry.addrs = vec![addr];
        entry.flags = crate::dir::path::USABLE;
        let plain = IntroducePlaintext {
            cookie: [1; crate::cell::onion_msg::REND_COOKIE_LEN],
            rend_identity: entry.validated_identity().unwrap(),
            rend_addr: addr,
            rend_onion_cert: entry.onion_cert.clone(),
            pow: None,
        };
        assert_eq!(check_rendezvous_point(Some(&entry), &plain), Ok(()));
        assert!(check_rendezvous_point(None, &plain).is_err());
        let elsewhere = IntroducePlaintext {
            rend_addr: "127.0.0.1:22".parse().unwrap(),
            ..plain.clone()
        };
        assert!(check_rendezvous_point(Some(&entry), &elsewhere).is_err());
        for flags in [
            crate::dir::RelayFlags::RUNNING,
            crate::dir::RelayFlags::VALID,
            crate::dir::RelayFlags::empty(),
        ] {
            entry.flags = flags;
            assert_eq!(
                check_rendezvous_point(Some(&entry), &plain),
                Err("rendezvous point not flagged Running and Valid")
            );
        }
    }
}
