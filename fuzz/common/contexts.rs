//! Every receiving context's parser on the same bytes. The full parser (any command) must
//! re-encode what it accepts, and each context's parser must agree with it: the same cell
//! when the context holds the command, a refusal otherwise. So one input reaches every
//! context's parser, and a context that drifts from the full message types is caught.
//! The same file is compiled into `tests/fuzz_seeds.rs` (by `#[path]`), which runs it on
//! the committed seeds.
// Each user takes the relay half or the link half.
#![allow(dead_code)]

use std::fmt::Debug;

use allium::cell::chan_contexts::{
    DuringLinkHandshake, FromNextHop, FromPreviousHop, LinkRekey, NewCircuit, OnClientChannel,
    OnRelayChannel,
};
use allium::cell::relay_contexts::{
    AtClient, AtIntroPoint, AtIntroducingClient, AtOnionClient, AtOnionRole, AtRelay, AtRelayOnion,
    AtRendPoint, AtServiceIntro,
};
use allium::cell::{CellResult, ChanCell, ChanMessage, ChanMsg, RelayCell, RelayMessage, RelayMsg};

/// Parses `body` as a relay body in every context; returns the full parse.
pub fn relay_cell(body: &[u8]) -> CellResult<RelayCell> {
    let any = RelayCell::<RelayMsg>::parse_typed(body);
    if let Ok(cell) = &any {
        assert_eq!(&cell.encode().expect("re-encode")[..], body, "parse→encode");
    }
    relay_context::<AtRelay>(body, &any);
    relay_context::<AtClient>(body, &any);
    relay_context::<AtRelayOnion>(body, &any);
    relay_context::<AtIntroducingClient>(body, &any);
    relay_context::<AtOnionRole>(body, &any);
    relay_context::<AtIntroPoint>(body, &any);
    relay_context::<AtRendPoint>(body, &any);
    relay_context::<AtServiceIntro>(body, &any);
    relay_context::<AtOnionClient>(body, &any);
    any
}

/// Parses `bytes` as a link cell in every context; returns the full parse.
pub fn chan_cell(bytes: &[u8]) -> CellResult<ChanCell> {
    let any = ChanCell::<ChanMsg>::parse_typed(bytes);
    if let Ok(cell) = &any {
        assert_eq!(
            &cell.encode().expect("re-encode")[..],
            bytes,
            "parse→encode"
        );
    }
    chan_context::<DuringLinkHandshake>(bytes, &any);
    chan_context::<OnClientChannel>(bytes, &any);
    chan_context::<OnRelayChannel>(bytes, &any);
    chan_context::<LinkRekey>(bytes, &any);
    chan_context::<NewCircuit>(bytes, &any);
    chan_context::<FromPreviousHop>(bytes, &any);
    chan_context::<FromNextHop>(bytes, &any);
    any
}

fn relay_context<M: RelayMessage + Debug + PartialEq>(body: &[u8], any: &CellResult<RelayCell>) {
    let expected = any
        .as_ref()
        .ok()
        .filter(|c| M::check(c.msg().cmd()).is_ok());
    match (RelayCell::<M>::parse_typed(body), expected) {
        (Ok(cell), Some(full)) => {
            assert_eq!(&cell.encode().expect("re-encode")[..], body);
            assert_eq!(&cell.into_any(), full);
        }
        (Err(_), None) => {}
        (typed, full) => panic!("a context disagrees with the full parser: {typed:?}, {full:?}"),
    }
}

fn chan_context<M: ChanMessage + Debug + PartialEq>(bytes: &[u8], any: &CellResult<ChanCell>) {
    let expected = any
        .as_ref()
        .ok()
        .filter(|c| M::check(c.msg().cmd()).is_ok());
    match (ChanCell::<M>::parse_typed(bytes), expected) {
        (Ok(cell), Some(full)) => {
            assert_eq!(&cell.encode().expect("re-encode")[..], bytes);
            assert_eq!(&cell.into_any(), full);
        }
        (Err(_), None) => {}
        (typed, full) => panic!("a context disagrees with the full parser: {typed:?}, {full:?}"),
    }
}
