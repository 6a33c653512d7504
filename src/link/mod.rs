//! The link layer: authenticated, encrypted channels between nodes, carrying fixed-size
//! link cells in fixed-size records (docs/protocol.md §5).
//!
//! - [`connect`] / [`accept`] run the Noise XX link handshake ([`handshake`]) and return a
//!   [`Channel`];
//! - every byte on the wire is inside a [`RECORD_LEN`]-byte record ([`record`]), encrypted
//!   with per-direction ChaCha20-Poly1305 keys and u64 counters once the handshake is done;
//!   each direction's key is replaced every so many records and minutes, signalled by a
//!   REKEY cell from its sender (forward secret: the old key is erased);
//! - the writer task batches queued cells into one write ([`writer`]), taking them from
//!   per-circuit queues in fair order ([`scheduler`]); the reader decrypts in place out of
//!   a large buffer.
//!
//! - while a channel carries circuits, each side pads it ([`padding`]): PADDING after a
//!   quiet period of max(X, Y), X, Y uniform, so flow records do not end while it is open.
//!
//! Relays prove their long-term ed25519 identity with a link-key certificate ([`cert`]);
//! clients prove nothing and stay anonymous.

pub(crate) mod auth;
pub(crate) mod bandwidth_limit;
pub(crate) mod cert;
pub(crate) mod channel;
pub(crate) mod circ_ids;
mod close;
pub(crate) mod config;
pub(crate) mod error;
mod establish;
pub(crate) mod handshake;
pub(crate) mod mux;
pub(crate) mod out_queue;
pub mod padding;
pub(crate) mod peer;
mod reader;
pub(crate) mod record;
pub(crate) mod scheduler;
pub(crate) mod stats;
mod version;
pub(crate) mod writer;

pub use auth::LinkAuth;
pub use bandwidth_limit::{BandwidthLimit, BandwidthLimitError, BandwidthShaper};
pub use cert::{LinkKeyCert, CERT_LEN};
pub use channel::{Channel, ChannelReceiver, ChannelSender};
pub use circ_ids::CircIdAllocator;
pub use config::{LinkConfig, DEFAULT_TCP_NOTSENT_LOWAT, REKEY_MIN_INTERVAL, REKEY_MIN_RECORDS};
pub use error::{LinkError, LinkResult};
pub use establish::{accept, connect};
pub use out_queue::{per_circuit_cap, TrySendError};
pub use padding::{LinkPadding, PaddingState};
pub use peer::PeerKind;
pub use record::{RecordCipher, RECORD_LEN};
pub use stats::RecordStats;
