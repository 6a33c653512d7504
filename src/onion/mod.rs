//! Onion services, the foundation without I/O: addresses, per-period blinded keys, the
//! hash ring choosing descriptor directories, service descriptors, the introduction and
//! rendezvous messages' cryptography, the client↔service handshake and the client puzzle.
//!
//! * [`address`]: `<56 base32 chars>.allium` = service key + checksum + version.
//! * [`blinding`]: time periods and blinded keys `A' = h·A` that sign descriptors.
//! * [`hashring`]: which relays store a service's descriptor in a period.
//! * [`descriptor`]: the signed outer layer (readable by relays) and the encrypted inner
//!   layer (introduction points; readable only by those who know the address).
//! * [`client_auth`]: client authorisation: per-client x25519 keys, the descriptor
//!   cookie each listed client recovers, fake entries hiding how many are listed.
//! * [`intro`]: building and checking ESTABLISH_INTRO and the encrypted part of
//!   INTRODUCE1/2 (the message layouts are in [`crate::cell::onion_msg`]).
//! * [`handshake`]: `allium-hs-ntor-1`, the end-to-end handshake between client and
//!   service, giving the relay-layer keys of a virtual hop.
//! * [`pow`]: the proof-of-work puzzle a service under load can require.
//! * [`replay`]: the service's cache of accepted introductions (refuses replays).
//!
//! The byte-exact format is in `docs/protocol.md` §8. The runtime uses this module from
//! elsewhere: descriptor storage, introduction and rendezvous points at relays
//! ([`crate::relay::hsdir`], [`crate::relay::onion_points`], [`crate::relay::splice`]);
//! `.allium` names through the client and SOCKS ([`crate::client::onion_connect`]); and
//! services ([`crate::client::onion_service`]).

pub mod address;
pub mod blinding;
pub mod client_auth;
pub mod descriptor;
mod descriptor_layers;
pub mod handshake;
pub mod hashring;
pub mod intro;
pub mod pow;
pub mod replay;

pub use address::{AddressError, OnionAddress};
pub use blinding::{BlindedKeypair, BlindedPublic, BlindingError, PeriodParams, TimePeriod};
pub use client_auth::{ClientAuthPublic, ClientAuthSecret};
