//! An instrumentation point: what a relay can see, reported to an optional observer.
//!
//! Tests use it to assert anonymity invariants from the relay's own point of view (the
//! guard never sees the destination, the exit never sees the client); operators may hang
//! their own tooling on it. It reports exactly what this relay could log if it were
//! malicious, so it is never wired to logs or metrics by allium itself, and whoever
//! installs an observer is responsible for what it keeps.
//!
//! Cost when unset: one atomic load of a `OnceLock` per event site.

use std::net::SocketAddr;

use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::relay_cmd::RelayCmd;
use crate::cell::{CircId, TargetAddr};

/// Receives events from a relay. Every method has a no-op default, so an implementation
/// overrides only what it needs. Methods are called on the relay's tasks: they must be
/// quick and must not block.
pub trait RelayObserver: Send + Sync + std::fmt::Debug {
    /// An inbound channel completed its link handshake; `peer` is the TCP peer address.
    fn inbound_channel(&self, peer: SocketAddr) {
        let _ = peer;
    }

    /// A forward (client → exit) relay body after this hop removed its layer: the bytes
    /// this relay can read. `recognised` says whether the cell was addressed to this hop.
    /// `circ` is the circuit's id on its previous hop's channel.
    fn forward_cell(&self, circ: CircId, body: &[u8; RELAY_BODY_LEN], recognised: bool) {
        let _ = (circ, body, recognised);
    }

    /// A backward (exit → client) relay body as received from the next hop, before this
    /// hop added its layer: again exactly the bytes this relay can read.
    fn backward_cell(&self, circ: CircId, body: &[u8; RELAY_BODY_LEN]) {
        let _ = (circ, body);
    }

    /// A relay message addressed to this hop parsed successfully.
    fn recognised(&self, circ: CircId, cmd: RelayCmd) {
        let _ = (circ, cmd);
    }

    /// An exit is about to connect a stream to `target:port`, as the client requested it
    /// (after the exit policy's first check).
    fn exit_connect(&self, circ: CircId, target: &TargetAddr, port: u16) {
        let _ = (circ, target, port);
    }

    /// This relay became an introduction point: an ESTABLISH_INTRO verified on circuit
    /// `circ`, whose previous hop is at `peer`.
    fn intro_established(&self, circ: CircId, peer: SocketAddr) {
        let _ = (circ, peer);
    }

    /// An INTRODUCE1 from circuit `client_circ` (previous hop `client_peer`) was forwarded
    /// as INTRODUCE2 on the introduction circuit `service_circ` (`service_peer`).
    fn introduction_forwarded(
        &self,
        client_circ: CircId,
        client_peer: SocketAddr,
        service_circ: CircId,
        service_peer: SocketAddr,
    ) {
        let _ = (client_circ, client_peer, service_circ, service_peer);
    }

    /// A rendezvous cookie was registered on circuit `circ` (previous hop `peer`).
    fn rendezvous_established(&self, circ: CircId, peer: SocketAddr) {
        let _ = (circ, peer);
    }

    /// RENDEZVOUS1 on `service_circ` (`service_peer`) joined it with the waiting circuit
    /// `client_circ` (`client_peer`).
    fn rendezvous_joined(
        &self,
        client_circ: CircId,
        client_peer: SocketAddr,
        service_circ: CircId,
        service_peer: SocketAddr,
    ) {
        let _ = (client_circ, client_peer, service_circ, service_peer);
    }
}
