//! Protocol attacks (issue 8, part 4), each in its own test, over real TCP against
//! in-process relays on 127.0.0.1. Every test asserts the specific refusal (DESTROY or
//! END with its reason, the circuit torn down, the error variant) and then that the relay
//! is still up and serves an honest circuit.
//!
//! Attacks that need bytes an honest client never produces (a replayed handshake, a
//! flipped bit inside a relay body, an unknown relay command) use a raw channel
//! ([`allium::link::connect`]) and do the circuit crypto by hand ([`RawCircuit`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::Ordering;

use allium::cell::chan_contexts::OnClientChannel;
use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::{Data, Extend, Sendme};
use allium::cell::{
    ChanCell, ChanMsg, CircId, Create, DestroyReason, EndReason, HandshakeType, RelayBody,
    RelayCell, RelayMsg, StreamId,
};
use allium::crypto::{client_handshake_start, CellKind, ClientLayers};
use allium::dir::ExitPolicy;
use allium::link::{self, ChannelReceiver, ChannelSender, LinkConfig};
use allium::proto::{CircuitError, RelayTarget};
use allium::relay::{RelayHandle, RelayLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;
use common::raw_circuit::{begin, destroyed, open};
use common::{build_through, build_through_fixed, start_relay_with, target, NO_HANG};

async fn relay() -> RelayHandle {
    start_relay_with(RelayLimits::default(), None).await
}

async fn exit_relay() -> RelayHandle {
    start_relay_with(
        RelayLimits::default(),
        Some(ExitPolicy::default_exit_allow_loopback()),
    )
    .await
}

/// The relays are still up: a new honest circuit through all of them works end to end
/// (BEGIN to the last hop and its END back; none of `relays` needs to be an exit).
async fn assert_serves_honest_circuit(relays: &[RelayHandle]) {
    let mut circ = tokio::time::timeout(NO_HANG, build_through(relays))
        .await
        .expect("an honest circuit must still build");
    let last = relays.len() - 1;
    // Port 1 on loopback: refused by a non-exit (EXIT_POLICY) or by the socket
    // (CONNECT_REFUSED) at an exit; either way an END from the last hop.
    circ.send(last, begin(4242, 1)).await.unwrap();
    let (hop, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .expect("reply")
        .unwrap();
    assert_eq!(hop, last);
    assert!(
        matches!(
            cell.msg(),
            AtClient::End(EndReason::ExitPolicy | EndReason::ConnectRefused)
        ),
        "{cell:?}"
    );
}

/// A client channel without any of the client's logic: cells in, raw cells out.
struct RawChannel {
    sender: ChannelSender,
    receiver: ChannelReceiver,
    next_id: u32,
}

impl RawChannel {
    async fn connect(t: &RelayTarget) -> RawChannel {
        let vk = t.identity.to_verifying_key().unwrap();
        let ch = link::connect(t.addr, &vk, None, &LinkConfig::default())
            .await
            .unwrap();
        RawChannel {
            sender: ch.sender,
            receiver: ch.receiver,
            next_id: 0x8000_0001,
        }
    }

    /// A fresh circuit id from the initiator's half (top bit set).
    fn fresh_id(&mut self) -> CircId {
        let id = CircId::new(self.next_id).unwrap();
        self.next_id += 1;
        id
    }

    async fn send(&self, id: CircId, msg: ChanMsg) {
        self.sender
            .send(&ChanCell::circuit(id, msg).unwrap())
            .await
            .unwrap();
    }

    /// The next non-padding cell, within NO_HANG; `None` if the channel closed.
    async fn next(&mut self) -> Option<(CircId, ChanMsg)> {
        loop {
            let raw = tokio::time::timeout(NO_HANG, self.receiver.recv())
                .await
                .expect("the relay must answer, not hang")
                .ok()??;
            let cell = ChanCell::<OnClientChannel>::parse_typed(&raw)
                .unwrap()
                .into_any();
            if let (Some(id), msg) = cell.into_parts() {
                return Some((id, msg));
            }
        }
    }

    /// Sends CREATE with `msg` as the handshake on a fresh id; returns the id and answer.
    async fn create_with(&mut self, hdata: &[u8]) -> (CircId, ChanMsg) {
        let id = self.fresh_id();
        let create = Create {
            htype: HandshakeType::Ntor1,
            data: allium::cell::chan_msg::BoundedBytes::new(hdata.to_vec(), "hdata").unwrap(),
        };
        self.send(id, ChanMsg::Create(create)).await;
        let (got, msg) = self.next().await.expect("an answer to CREATE");
        assert_eq!(got, id);
        (id, msg)
    }
}

/// A circuit whose crypto the test does by hand, so it can send what no honest client
/// would.
struct RawCircuit {
    chan: RawChannel,
    id: CircId,
    layers: ClientLayers,
}

impl RawCircuit {
    async fn create(t: &RelayTarget) -> RawCircuit {
        let mut chan = RawChannel::connect(t).await;
        let (state, hdata) =
            client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
        let (id, answer) = chan.create_with(&hdata).await;
        let ChanMsg::Created(created) = answer else {
            panic!("expected CREATED, got {answer:?}");
        };
        let (keys, _) = state.finish(created.data.as_slice()).unwrap();
        let mut layers = ClientLayers::new();
        layers.push_hop(&keys).unwrap();
        RawCircuit { chan, id, layers }
    }

    /// Encrypts `body` (payload from offset 16) for `hop`, optionally flips one bit of
    /// the wire body, and sends it as RELAY (or RELAY_EARLY).
    async fn send_body(
        &mut self,
        hop: usize,
        mut body: [u8; RELAY_BODY_LEN],
        early: bool,
        flip: Option<usize>,
    ) {
        let kind = if early {
            CellKind::RelayEarly
        } else {
            CellKind::Relay
        };
        self.layers.encrypt_forward(&mut body, hop, kind).unwrap();
        if let Some(i) = flip {
            body[i] ^= 0x01;
        }
        let msg = if early {
            ChanMsg::RelayEarly(RelayBody(body))
        } else {
            ChanMsg::Relay(RelayBody(body))
        };
        self.chan.send(self.id, msg).await;
    }

    async fn send_cell(&mut self, hop: usize, cell: RelayCell, early: bool) {
        self.send_body(hop, cell.encode().unwrap(), early, None)
            .await;
    }

    /// The next cell on this circuit: a decrypted relay cell, or DESTROY.
    async fn recv(&mut self) -> Result<(usize, RelayCell<AtClient>), DestroyReason> {
        let (id, msg) = self.chan.next().await.expect("channel closed");
        assert_eq!(id, self.id);
        match msg {
            ChanMsg::Relay(RelayBody(mut body)) => {
                let (hop, _) = self.layers.decrypt_backward(&mut body).unwrap();
                Ok((hop, RelayCell::parse_typed(&body).unwrap()))
            }
            ChanMsg::Destroy(reason) => Err(reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// EXTEND by hand (so the test knows the handshake bytes), returning them.
    async fn extend(&mut self, t: &RelayTarget) -> Vec<u8> {
        let (state, hdata) =
            client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
        self.extend_with(t, &hdata).await.expect("EXTENDED");
        let _ = state;
        hdata
    }

    /// EXTEND by hand and add the new hop's layer, so cells can be addressed to it.
    async fn extend_and_add(&mut self, t: &RelayTarget) {
        let (state, hdata) =
            client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
        let (hop, cell) = self.send_extend(t, &hdata).await.expect("EXTENDED");
        assert_eq!(hop, self.layers.len() - 1);
        let AtClient::Extended(ext) = cell.msg() else {
            panic!("expected EXTENDED, got {cell:?}");
        };
        let (keys, _) = state.finish(ext.handshake()).unwrap();
        self.layers.push_hop(&keys).unwrap();
    }

    /// Sends EXTEND with `hdata` (in RELAY_EARLY) to the last hop; returns the answer.
    async fn send_extend(
        &mut self,
        t: &RelayTarget,
        hdata: &[u8],
    ) -> Result<(usize, RelayCell<AtClient>), DestroyReason> {
        let extend = Extend::new(
            t.addr,
            *t.identity.as_bytes(),
            HandshakeType::Ntor1,
            hdata.to_vec(),
        )
        .unwrap();
        let last = self.layers.len() - 1;
        self.send_cell(
            last,
            RelayCell::new(None, RelayMsg::Extend(extend)).unwrap(),
            true,
        )
        .await;
        self.recv().await
    }

    /// Sends EXTEND with `hdata` to the last hop; Ok once EXTENDED arrives (the layer is
    /// not added: callers only use this to probe the next relay).
    async fn extend_with(&mut self, t: &RelayTarget, hdata: &[u8]) -> Result<(), DestroyReason> {
        let last = self.layers.len() - 1;
        let (hop, cell) = self.send_extend(t, hdata).await?;
        assert_eq!(hop, last);
        assert!(matches!(cell.msg(), AtClient::Extended(_)), "{cell:?}");
        Ok(())
    }
}

fn counter(r: &RelayHandle, f: impl Fn(&allium::relay::shared::RelayCounters) -> u64) -> u64 {
    f(&r.shared().counters)
}

// ---------------------------------------------------------------------------------------
// Replayed CREATE
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_create_is_refused_on_the_same_and_another_channel() {
    let relays = vec![relay().await, relay().await];
    let t = target(&relays[0]);
    let (state, hdata) =
        client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
    let mut chan = RawChannel::connect(&t).await;
    let (_, first) = chan.create_with(&hdata).await;
    let ChanMsg::Created(created) = first else {
        panic!("the original CREATE must be answered: {first:?}");
    };
    assert!(state.finish(created.data.as_slice()).is_ok());
    // The same bytes again, on another circuit id of the same channel.
    let (_, again) = chan.create_with(&hdata).await;
    assert!(
        matches!(again, ChanMsg::Destroy(DestroyReason::Protocol)),
        "{again:?}"
    );
    // And on a different channel (a replayer that recorded them elsewhere).
    let mut other = RawChannel::connect(&t).await;
    let (_, again) = other.create_with(&hdata).await;
    assert!(
        matches!(again, ChanMsg::Destroy(DestroyReason::Protocol)),
        "{again:?}"
    );
    let refused = counter(&relays[0], |c| c.refused_replay.load(Ordering::Relaxed));
    eprintln!("replayed CREATE: 2 replays, refused_replay = {refused}");
    assert_eq!(refused, 2);
    assert_eq!(
        counter(&relays[0], |c| c.circuits_created.load(Ordering::Relaxed)),
        1
    );
    // The channel that carried the replay still works for honest CREATEs.
    let (fresh_state, fresh) =
        client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
    let (_, ok) = chan.create_with(&fresh).await;
    let ChanMsg::Created(created) = ok else {
        panic!("{ok:?}")
    };
    assert!(fresh_state.finish(created.data.as_slice()).is_ok());
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_extend_handshake_is_refused_by_the_next_relay() {
    // A malicious guard (or anyone who saw an EXTEND's handshake) replays it towards the
    // middle: the middle refuses, and the replayer's circuit gets DESTROY(PROTOCOL).
    let relays = vec![relay().await, relay().await];
    let (t0, t1) = (target(&relays[0]), target(&relays[1]));
    let mut honest = RawCircuit::create(&t0).await;
    let hdata = honest.extend(&t1).await;
    let mut replayer = RawCircuit::create(&t0).await;
    let err = replayer.extend_with(&t1, &hdata).await.unwrap_err();
    assert_eq!(err, DestroyReason::Protocol);
    assert_eq!(
        counter(&relays[1], |c| c.refused_replay.load(Ordering::Relaxed)),
        1
    );
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_create_on_an_unknown_circuit_gets_destroy_protocol() {
    let relays = vec![relay().await];
    let mut chan = RawChannel::connect(&target(&relays[0])).await;
    let id = chan.fresh_id();
    // CREATE with an unknown handshake type (99): the body does not parse.
    let mut raw = ChanCell::circuit(id, ChanMsg::Destroy(DestroyReason::None))
        .unwrap()
        .encode()
        .unwrap();
    raw[4] = 1; // CREATE
    raw[5..9].copy_from_slice(&[0, 99, 0, 1]);
    chan.sender.send_raw(raw).await.unwrap();
    let (got, msg) = chan.next().await.expect("an answer");
    assert_eq!(got, id);
    assert!(
        matches!(msg, ChanMsg::Destroy(DestroyReason::Protocol)),
        "{msg:?}"
    );
    // A CREATE whose length field exceeds its bound.
    let id = chan.fresh_id();
    let mut raw = ChanCell::circuit(id, ChanMsg::Destroy(DestroyReason::None))
        .unwrap()
        .encode()
        .unwrap();
    raw[4] = 1;
    raw[5..9].copy_from_slice(&[0, 1, 0xFF, 0xFF]);
    chan.sender.send_raw(raw).await.unwrap();
    let (got, msg) = chan.next().await.expect("an answer");
    assert_eq!(got, id);
    assert!(
        matches!(msg, ChanMsg::Destroy(DestroyReason::Protocol)),
        "{msg:?}"
    );
    assert_eq!(
        counter(&relays[0], |c| c
            .refused_malformed_create
            .load(Ordering::Relaxed)),
        2
    );
    // The channel stays open for honest circuits.
    let t = target(&relays[0]);
    let (_, hdata) = client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
    let (_, ok) = chan.create_with(&hdata).await;
    assert!(matches!(ok, ChanMsg::Created(_)), "{ok:?}");
    assert_serves_honest_circuit(&relays).await;
}

// ---------------------------------------------------------------------------------------
// Modified bits
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_with_modified_bits_is_refused_with_crypto_failure() {
    let relays = vec![relay().await, relay().await];
    let (t0, t1) = (target(&relays[0]), target(&relays[1]));
    for (what, flip) in [("tag", 3usize), ("payload", 300), ("padding", 511)] {
        // One hop: the hop the cell is for detects it.
        let mut circ = RawCircuit::create(&t0).await;
        let cell = RelayCell::new(None, RelayMsg::Drop).unwrap();
        circ.send_body(0, cell.encode().unwrap(), false, Some(flip))
            .await;
        let err = circ.recv().await.unwrap_err();
        eprintln!("modified {what} bit at the last hop: DESTROY({err:?})");
        assert_eq!(err, DestroyReason::CryptoFailure);
    }
    // Two hops: a bit flipped in a cell for hop 1 passes the guard (not for it), and
    // hop 1 detects it; the guard passes the reason back.
    let mut circ = RawCircuit::create(&t0).await;
    // Add hop 1 properly this time.
    let (state, hdata) =
        client_handshake_start(&mut rand::rng(), &t1.identity, &t1.onion, &[]).unwrap();
    let extend = Extend::new(
        t1.addr,
        *t1.identity.as_bytes(),
        HandshakeType::Ntor1,
        hdata,
    )
    .unwrap();
    circ.send_cell(
        0,
        RelayCell::new(None, RelayMsg::Extend(extend)).unwrap(),
        true,
    )
    .await;
    let (_, cell) = circ.recv().await.unwrap();
    let AtClient::Extended(ext) = cell.msg() else {
        panic!("{cell:?}")
    };
    let (keys, _) = state.finish(ext.handshake()).unwrap();
    circ.layers.push_hop(&keys).unwrap();
    let cell = RelayCell::new(None, RelayMsg::Drop).unwrap();
    circ.send_body(1, cell.encode().unwrap(), false, Some(200))
        .await;
    let err = circ.recv().await.unwrap_err();
    eprintln!("modified bit for hop 1: DESTROY({err:?}) reached the client");
    assert_eq!(err, DestroyReason::CryptoFailure);
    assert_serves_honest_circuit(&relays).await;
}

// ---------------------------------------------------------------------------------------
// EXTEND loops
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_back_to_the_same_relay_is_refused() {
    let relays = vec![relay().await, relay().await];
    let mut circ = build_through(&relays[..1]).await;
    let err = circ.extend(&target(&relays[0]), NO_HANG).await.unwrap_err();
    eprintln!("EXTEND to the same relay: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_to_the_previous_hop_is_refused() {
    let relays = vec![relay().await, relay().await];
    let mut circ = build_through(&relays).await;
    // Hop 1 (relays[1]) is asked to extend back to hop 0 (its previous hop).
    let err = circ.extend(&target(&relays[0]), NO_HANG).await.unwrap_err();
    eprintln!("EXTEND to the previous hop: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
    assert_serves_honest_circuit(&relays).await;
}

// ---------------------------------------------------------------------------------------
// RELAY_EARLY budget
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_relay_early_cells_than_the_budget_are_refused() {
    // The budget is 7 per circuit: the CREATE plus 7 EXTENDs make 8 hops. Three relays
    // visited in turn (never back to the same or the previous one) give an 8-hop
    // circuit; the 8th EXTEND (the guard's 8th RELAY_EARLY) destroys it.
    let relays = vec![relay().await, relay().await, relay().await];
    let mut circ = RawCircuit::create(&target(&relays[0])).await;
    for hop in 1..=allium::relay::circuit::MAX_RELAY_EARLY as usize {
        circ.extend_and_add(&target(&relays[hop % 3])).await;
    }
    assert_eq!(circ.layers.len(), 8);
    // One more EXTEND, to the last hop: the guard has now seen 8 RELAY_EARLY cells.
    let t = target(&relays[8 % 3]);
    let (_, hdata) = client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
    let extend = Extend::new(t.addr, *t.identity.as_bytes(), HandshakeType::Ntor1, hdata).unwrap();
    circ.send_cell(
        7,
        RelayCell::new(None, RelayMsg::Extend(extend)).unwrap(),
        true,
    )
    .await;
    let err = circ.recv().await.unwrap_err();
    eprintln!(
        "RELAY_EARLY #{}: {err:?}",
        allium::relay::circuit::MAX_RELAY_EARLY + 1
    );
    assert_eq!(err, DestroyReason::Protocol);
    assert_serves_honest_circuit(&relays).await;
}

/// RELAY_EARLY exists for EXTEND. A recognising relay destroys a circuit whose
/// RELAY_EARLY carries anything else: otherwise a hop that flips RELAY into RELAY_EARLY
/// would have a channel to the last hop that the client never sees (§2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_early_carrying_anything_but_extend_is_refused() {
    let relays = vec![relay().await, relay().await];
    let mut circ = RawCircuit::create(&target(&relays[0])).await;
    circ.extend_and_add(&target(&relays[1])).await;
    let drop = RelayCell::new(None, RelayMsg::Drop).unwrap();
    circ.send_cell(1, drop, true).await;
    assert_eq!(circ.recv().await.unwrap_err(), DestroyReason::Protocol);
    assert_serves_honest_circuit(&relays).await;
}

/// A first hop that turns a RELAY cell into RELAY_EARLY (here the raw client plays that
/// hop: the layers are computed for RELAY, the cell leaves as RELAY_EARLY). The command is
/// in every layer's tweak, so the cell is garbage for every hop and the last one tears the
/// circuit down as a crypto failure, never delivering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cell_flipped_to_relay_early_destroys_the_circuit() {
    let relays = vec![relay().await, relay().await];
    let mut circ = RawCircuit::create(&target(&relays[0])).await;
    circ.extend_and_add(&target(&relays[1])).await;
    let before = counter(&relays[1], |c| {
        c.protocol_violations.load(Ordering::Relaxed)
    });
    let mut body = RelayCell::new(None, RelayMsg::Drop)
        .unwrap()
        .encode()
        .unwrap();
    circ.layers
        .encrypt_forward(&mut body, 1, CellKind::Relay)
        .unwrap();
    circ.chan
        .send(circ.id, ChanMsg::RelayEarly(RelayBody(body)))
        .await;
    assert_eq!(circ.recv().await.unwrap_err(), DestroyReason::CryptoFailure);
    // Torn down by the crypto, not by the RELAY_EARLY rule: the cell was never read.
    let after = counter(&relays[1], |c| {
        c.protocol_violations.load(Ordering::Relaxed)
    });
    assert_eq!(before, after);
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_relay_commands_are_refused() {
    let relays = vec![relay().await];
    let t = target(&relays[0]);
    // 200: unassigned; 32: reserved (onion services); 4: CONNECTED, legal only towards
    // the client.
    for cmd in [200u8, 32, 4] {
        let mut circ = RawCircuit::create(&t).await;
        let mut body = [0u8; RELAY_BODY_LEN];
        body[16] = cmd;
        body[17..19].copy_from_slice(&1u16.to_be_bytes());
        body[19..21].copy_from_slice(&1u16.to_be_bytes());
        body[21] = 0;
        circ.send_body(0, body, false, None).await;
        let err = circ.recv().await.unwrap_err();
        eprintln!("relay command {cmd}: DESTROY({err:?})");
        assert_eq!(err, DestroyReason::Protocol);
    }
    assert_serves_honest_circuit(&relays).await;
}

// ---------------------------------------------------------------------------------------
// Streams: reused id, DATA on a closed stream, SENDME cheating
// ---------------------------------------------------------------------------------------

/// A server on 127.0.0.1 that sends `size` bytes to each connection and holds it open.
async fn server(size: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&vec![7u8; size]).await;
                let mut sink = [0u8; 4096];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A destination that never closes its side, even after the exit's FIN: the exit then
/// never ends the stream on its own, so what a test sends after its own END reaches a
/// stream that is still half open (no race with the destination's close).
async fn holding_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                drop(s);
            });
        }
    });
    port
}

async fn exit_path() -> Vec<RelayHandle> {
    vec![relay().await, relay().await, exit_relay().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_id_reused_while_open_is_refused() {
    let relays = exit_path().await;
    let port = server(0).await;
    let mut circ = build_through(&relays).await;
    open(&mut circ, 5, port).await;
    circ.send(2, begin(5, port)).await.unwrap();
    let err = destroyed(&mut circ).await;
    eprintln!("BEGIN reusing an open stream id: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_a_closed_stream_is_refused() {
    let relays = exit_path().await;
    let port = holding_server().await;
    let data = || RelayMsg::Data(Data::new(b"late".to_vec()).unwrap());

    // DATA after the client's own END(DONE): it promised no more data.
    let mut circ = build_through(&relays).await;
    open(&mut circ, 5, port).await;
    circ.send(
        2,
        RelayCell::new(StreamId::new(5), RelayMsg::End(EndReason::Done)).unwrap(),
    )
    .await
    .unwrap();
    circ.send(2, RelayCell::new(StreamId::new(5), data()).unwrap())
        .await
        .unwrap();
    let err = destroyed(&mut circ).await;
    eprintln!("DATA after own END(DONE): {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );

    // DATA on a stream both sides closed (END(MISC) from the client): it may have
    // crossed the END, so it is dropped, never delivered, and still counts against the
    // circuit window (docs/protocol.md §7). The circuit stays usable.
    let mut circ = build_through(&relays).await;
    open(&mut circ, 7, port).await;
    circ.send(
        2,
        RelayCell::new(StreamId::new(7), RelayMsg::End(EndReason::Misc)).unwrap(),
    )
    .await
    .unwrap();
    circ.send(2, RelayCell::new(StreamId::new(7), data()).unwrap())
        .await
        .unwrap();
    circ.send(2, begin(8, 1)).await.unwrap();
    let (_, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cell.stream(), StreamId::new(8), "{cell:?}");
    assert_serves_honest_circuit(&relays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendme_without_the_data_it_acknowledges_is_refused() {
    let relays = exit_path().await;
    let sendme = |stream: Option<u16>, tag: [u8; 16]| {
        RelayCell::new(
            stream.and_then(StreamId::new),
            RelayMsg::Sendme(Sendme { tag }),
        )
        .unwrap()
    };

    // Circuit-level SENDME with nothing outstanding (the exit sent no DATA).
    let mut circ = build_through_fixed(&relays).await;
    circ.send(2, sendme(None, [0; 16])).await.unwrap();
    let err = destroyed(&mut circ).await;
    eprintln!("circuit SENDME with nothing sent: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );

    // Stream-level SENDME on an open stream that has sent nothing.
    let quiet = server(0).await;
    let mut circ = build_through_fixed(&relays).await;
    open(&mut circ, 3, quiet).await;
    circ.send(2, sendme(Some(3), [0; 16])).await.unwrap();
    let err = destroyed(&mut circ).await;
    eprintln!("stream SENDME with nothing sent: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );

    // (Fixed windows here; tests/congestion_control.rs repeats this under congestion
    // control, whose SENDME points are every 31st cell.)
    // After 200 DATA cells: the SENDME carrying the 100th cell's real tag is accepted;
    // one with a guessed tag for the 200th is refused.
    let chatty = server(200 * 491).await;
    let mut circ = build_through_fixed(&relays).await;
    open(&mut circ, 4, chatty).await;
    let mut tags = Vec::new();
    while tags.len() < 200 {
        let (hop, cell, tag) = tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hop, 2);
        if matches!(cell.msg(), AtClient::Data(_)) {
            tags.push(tag);
        }
    }
    circ.send(2, sendme(None, tags[99])).await.unwrap();
    // Still alive: a round trip.
    circ.send(2, begin(9, 1)).await.unwrap();
    loop {
        let (_, cell, _) = tokio::time::timeout(NO_HANG, circ.recv())
            .await
            .unwrap()
            .expect("an honest SENDME must be accepted");
        if cell.stream() == StreamId::new(9) {
            break;
        }
    }
    let mut forged = tags[199];
    forged[0] ^= 1;
    circ.send(2, sendme(None, forged)).await.unwrap();
    let err = destroyed(&mut circ).await;
    eprintln!("circuit SENDME with a forged tag: {err:?}");
    assert!(
        matches!(err, CircuitError::Destroyed(DestroyReason::Protocol)),
        "{err:?}"
    );
    assert_serves_honest_circuit(&relays).await;
}

// ---------------------------------------------------------------------------------------
// Directory documents
// ---------------------------------------------------------------------------------------

mod documents {
    use super::common::dir::*;
    use allium::crypto::{IdentityKeypair, OnionKeyCert};
    use allium::dir::consensus::CONSENSUS_VERSION;
    use allium::dir::descriptor::DESCRIPTOR_LABEL;
    use allium::dir::{
        BandwidthWeights, ConsensusBody, ConsensusEntry, ConsensusError, DescriptorError,
        ExitPolicy, RelayFlags, UncheckedConsensus, UncheckedDescriptor,
    };

    /// A small consensus body valid around `NOW`, listing the relays of `descriptor(n)`.
    fn body(auths: &[IdentityKeypair]) -> ConsensusBody {
        let mut relays: Vec<ConsensusEntry> = (0..4u64)
            .map(|n| {
                let (id, d) = descriptor(n, n == 0);
                ConsensusEntry {
                    identity: id.public().into(),
                    onion_cert: d.onion_cert,
                    addrs: d.addrs,
                    flags: RelayFlags::RUNNING.union(RelayFlags::VALID),
                    bandwidth: 1000,
                    measured: true,
                    exit_policy: ExitPolicy::reject_all(),
                    udp_policy: ExitPolicy::reject_all(),
                    family: Vec::new(),
                }
            })
            .collect();
        relays.sort_by_key(|r| r.identity);
        let mut ids = publics(auths);
        ids.sort();
        ConsensusBody {
            version: CONSENSUS_VERSION,
            valid_after: NOW - HOUR,
            fresh_until: NOW + HOUR,
            valid_until: NOW + 3 * HOUR,
            authorities: ids,
            weights: BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth))),
            relays: allium::dir::split_entries(&relays).unwrap().0,
        }
    }

    fn signed(body: &ConsensusBody, by: &[&IdentityKeypair]) -> Vec<u8> {
        let mut s = body.to_signed().unwrap();
        for k in by {
            s.sign(k);
        }
        s.to_bytes().unwrap()
    }

    fn verify(bytes: &[u8], auths: &[IdentityKeypair], now: u64) -> Result<(), ConsensusError> {
        UncheckedConsensus::parse(bytes)?.verify(&publics(auths), now)?;
        Ok(())
    }

    #[test]
    fn honest_consensus_is_accepted() {
        let auths = authorities(3);
        let bytes = signed(&body(&auths), &[&auths[0], &auths[1], &auths[2]]);
        verify(&bytes, &auths, NOW).unwrap();
    }

    #[test]
    fn forged_consensus_is_refused() {
        let auths = authorities(3);
        let b = body(&auths);
        // Signatures made by outsiders but labelled with the trusted authorities' ids.
        let outsiders = [key(501), key(502), key(503)];
        let mut bytes = signed(&b, &[&outsiders[0], &outsiders[1], &outsiders[2]]);
        let n = bytes.len();
        for (i, a) in auths.iter().enumerate() {
            let at = n - (3 - i) * 96;
            bytes[at..at + 32].copy_from_slice(a.public().as_bytes());
        }
        let err = verify(&bytes, &auths, NOW).unwrap_err();
        eprintln!("forged signatures: {err}");
        assert!(
            matches!(err, ConsensusError::NotEnoughSignatures { valid: 0, .. }),
            "{err}"
        );
        // A body altered after honest signing (an extra hour of validity) carrying the
        // honest signatures.
        let mut good = b.to_signed().unwrap();
        let sigs: Vec<_> = auths.iter().map(|a| good.sign(a)).collect();
        let splice = |body: &ConsensusBody| {
            let mut v = body.to_signed().unwrap().to_bytes().unwrap();
            let body_len = u64::from_be_bytes(v[..8].try_into().unwrap()) as usize;
            v.truncate(8 + body_len);
            v.extend_from_slice(&(sigs.len() as u64).to_be_bytes());
            for s in &sigs {
                v.extend_from_slice(&s.identity);
                v.extend_from_slice(&s.signature);
            }
            v
        };
        let mut altered = b.clone();
        altered.valid_until += HOUR;
        let err = verify(&splice(&altered), &auths, NOW).unwrap_err();
        eprintln!("altered body with honest signatures: {err}");
        assert!(
            matches!(err, ConsensusError::NotEnoughSignatures { valid: 0, .. }),
            "{err}"
        );
        // Control: the same splice onto the real body is accepted, so the refusal above
        // is about the alteration, not the splicing.
        verify(&splice(&b), &auths, NOW).unwrap();
    }

    #[test]
    fn expired_consensus_is_refused() {
        let auths = authorities(3);
        let b = body(&auths);
        let bytes = signed(&b, &[&auths[0], &auths[1], &auths[2]]);
        // A replay is refused once its validity and the late grace (<= 5 min) are over.
        let late = b.valid_until + b.late_grace();
        assert!(b.late_grace() <= 5 * 60);
        let err = verify(&bytes, &auths, late).unwrap_err();
        eprintln!("expired: {err}");
        assert!(matches!(err, ConsensusError::Expired { .. }), "{err}");
        let err = verify(&bytes, &auths, b.valid_until + 10 * HOUR).unwrap_err();
        assert!(matches!(err, ConsensusError::Expired { .. }), "{err}");
        verify(&bytes, &auths, late - 1).unwrap();
    }

    #[test]
    fn under_signed_consensus_is_refused() {
        let auths = authorities(3);
        let b = body(&auths);
        // One valid signature of three trusted authorities (2 needed), plus two from
        // keys nobody trusts.
        let bytes = signed(&b, &[&auths[0], &key(601), &key(602)]);
        let err = verify(&bytes, &auths, NOW).unwrap_err();
        eprintln!("under-signed: {err}");
        assert!(
            matches!(
                err,
                ConsensusError::NotEnoughSignatures {
                    valid: 1,
                    trusted: 3,
                    needed: 2
                }
            ),
            "{err}"
        );
        // Two of three is a strict majority: accepted.
        verify(&signed(&b, &[&auths[0], &auths[2]]), &auths, NOW).unwrap();
        // No signature at all.
        let err = verify(&signed(&b, &[]), &auths, NOW).unwrap_err();
        assert!(
            matches!(err, ConsensusError::NotEnoughSignatures { valid: 0, .. }),
            "{err}"
        );
    }

    /// `body_len u64 | body | signature[64]`, as the codec encodes a SignedDescriptor.
    fn descriptor_bytes(body: &[u8], sig: &[u8; 64]) -> Vec<u8> {
        let mut v = (body.len() as u64).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v.extend_from_slice(sig);
        v
    }

    #[test]
    fn descriptor_whose_keys_do_not_match_its_signature_is_refused() {
        let (id, d) = descriptor(3, false);
        let honest = d.sign(&id).unwrap();
        // The hand-made encoding matches the codec's, so the forgeries below differ from
        // an honest descriptor only where intended.
        assert_eq!(
            descriptor_bytes(honest.body(), honest.signature()),
            honest.to_bytes().unwrap()
        );
        assert!(UncheckedDescriptor::parse(&honest.to_bytes().unwrap())
            .unwrap()
            .verify(NOW, 300)
            .is_ok());
        let message = [DESCRIPTOR_LABEL, honest.body()].concat();

        // 1. Claims identity A, signed by key B.
        let mallory = key(9_999);
        let bytes = descriptor_bytes(honest.body(), &mallory.sign(&message));
        let err = UncheckedDescriptor::parse(&bytes)
            .unwrap()
            .verify(NOW, 300)
            .unwrap_err();
        eprintln!("descriptor signed by another key: {err}");
        assert!(matches!(err, DescriptorError::BadSignature(_)), "{err}");

        // 2. Signed by its identity, but carrying an onion key certified by another
        //    identity (a relay advertising someone else's onion key).
        let mut d2 = d.clone();
        d2.onion_cert = OnionKeyCert::sign(&mallory, onion(3).public(), NOW + HOUR);
        let body2 = allium::codec::encode(&d2).unwrap();
        let sig2 = id.sign(&[DESCRIPTOR_LABEL, &body2[..]].concat());
        let err = UncheckedDescriptor::parse(&descriptor_bytes(&body2, &sig2))
            .unwrap()
            .verify(NOW, 300)
            .unwrap_err();
        eprintln!("descriptor with another identity's onion cert: {err}");
        assert!(
            matches!(err, DescriptorError::CertIdentityMismatch { .. }),
            "{err}"
        );

        // 3. Relay 3 signs a consistent descriptor of relay 4 (identity and onion
        //    certificate both relay 4's): the signature does not match the keys in it.
        let (_, d4) = descriptor(4, false);
        let body4 = allium::codec::encode(&d4).unwrap();
        let sig4 = id.sign(&[DESCRIPTOR_LABEL, &body4[..]].concat());
        let err = UncheckedDescriptor::parse(&descriptor_bytes(&body4, &sig4))
            .unwrap()
            .verify(NOW, 300)
            .unwrap_err();
        eprintln!("descriptor of relay 4 signed by relay 3: {err}");
        assert!(matches!(err, DescriptorError::BadSignature(_)), "{err}");
    }
}

/// A relay that is a circuit's first hop refuses to run a padding machine (protocol.md
/// §3.6): padding is negotiated with the second hop only, and a first hop that padded
/// would let anyone spend its relay-wide padding budget with one-hop circuits. The
/// attacker writes its own CREATE handshake asking for the introduction machine; the relay
/// answers "disabled", counts the refusal and sends no padding, and the circuit works.
#[tokio::test]
async fn a_first_hop_refuses_to_run_a_padding_machine() {
    use allium::cell::circuit_ext::{ClientExtensions, PaddingStatus, ReplyExtensions};
    use allium::proto::padding::machines::MachineKind;

    let r = exit_relay().await;
    let t = target(&r);
    let ext = ClientExtensions {
        congestion_control: false,
        padding: Some(MachineKind::Introduction.hop_machine()),
    }
    .encode()
    .unwrap();
    let mut chan = RawChannel::connect(&t).await;
    let (state, hdata) =
        client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &ext).unwrap();
    let (id, answer) = chan.create_with(&hdata).await;
    let ChanMsg::Created(created) = answer else {
        panic!("expected CREATED, got {answer:?}");
    };
    let (keys, reply) = state.finish(created.data.as_slice()).unwrap();
    let reply = ReplyExtensions::parse(&reply).unwrap();
    assert_eq!(reply.padding, Some(PaddingStatus::Disabled));
    let counters = &r.shared().counters;
    assert_eq!(counters.padding_machines_refused.load(Ordering::Relaxed), 1);
    // Nothing padded, and the one-hop circuit still carries a stream.
    let mut layers = ClientLayers::new();
    layers.push_hop(&keys).unwrap();
    let mut circ = RawCircuit { chan, id, layers };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(counters.padding_cells_sent.load(Ordering::Relaxed), 0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _held = listener.accept().await;
        tokio::time::sleep(NO_HANG).await;
    });
    circ.send_cell(0, begin(1, port), false).await;
    let (hop, cell) = circ.recv().await.expect("CONNECTED, not DESTROY");
    assert_eq!(hop, 0);
    assert!(matches!(cell.msg(), AtClient::Connected(_)), "{cell:?}");
    assert_eq!(counters.padding_cells_sent.load(Ordering::Relaxed), 0);
}
