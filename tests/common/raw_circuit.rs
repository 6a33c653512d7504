//! Driving a client circuit by hand, as an attacker test does: BEGIN at the exit, waiting
//! for CONNECTED, and waiting for the circuit's teardown.

use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::Begin;
use allium::cell::{RelayCell, RelayMsg, StreamId, TargetAddr};
use allium::proto::{CircuitError, ClientCircuit};

use super::NO_HANG;

/// BEGIN for stream `stream` to 127.0.0.1:`port`.
pub fn begin(stream: u16, port: u16) -> RelayCell {
    let target = TargetAddr::Ip("127.0.0.1".parse().unwrap());
    RelayCell::new(
        StreamId::new(stream),
        RelayMsg::Begin(Begin::new(target, port).unwrap()),
    )
    .unwrap()
}

/// Opens stream `id` to 127.0.0.1:`port` at hop 2 and waits for CONNECTED. Flow-control
/// cells still in flight for earlier traffic (circuit SENDMEs, another stream's XOFF/XON,
/// padding) may come first: on a loaded machine they often do.
pub async fn open(circ: &mut ClientCircuit, id: u16, port: u16) {
    circ.send(2, begin(id, port)).await.unwrap();
    loop {
        let (hop, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hop, 2);
        let ours = cell.stream() == StreamId::new(id);
        match cell.msg() {
            AtClient::Connected(_) if ours => return,
            AtClient::Sendme(_) | AtClient::Drop => {}
            AtClient::Xoff | AtClient::Xon if !ours => {}
            _ => panic!("expected CONNECTED for stream {id}: {cell:?}"),
        }
    }
}

/// The next error a client circuit reports (its DESTROY), within NO_HANG.
pub async fn destroyed(circ: &mut ClientCircuit) -> CircuitError {
    loop {
        match tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .expect("the circuit must be torn down, not hang")
        {
            Ok((hop, cell, _)) => {
                // Replies already in flight (e.g. CONNECTED) may come first.
                eprintln!(
                    "  (cell before the teardown from hop {hop}: {:?})",
                    cell.msg().cmd()
                );
            }
            Err(e) => return e,
        }
    }
}
