//! Wire format: fixed-size link cells and relay messages (parse and encode only, no I/O).
//!
//! Two layers, both fixed size:
//! - [`ChanCell`]: the 517-byte link cell every channel carries (circuit id, command, body);
//! - [`RelayCell`]: the 512-byte relay body inside RELAY/RELAY_EARLY cells once every
//!   encryption layer is removed (tag, command, stream id, length, data, padding).
//!
//! Parsers are total and strict (exact lengths, closed enumerations, zero padding, bounded
//! length fields) and refuse a command not legal where the bytes arrived before reading its
//! body. Each receiving context is an enum of its commands ([`relay_contexts`],
//! [`chan_contexts`], built by [`restricted`]): `RelayCell::<AtRelay>::parse_typed` returns
//! one, to be matched exhaustively. Parsed as the full [`RelayMsg`] / [`ChanMsg`] (tests and
//! fuzzing), every command is accepted.
//!
//! docs/protocol.md describes the same layout byte for byte.

pub(crate) mod address;
pub(crate) mod chan_cell;
pub(crate) mod chan_cmd;
pub mod chan_contexts;
pub mod chan_msg;
pub mod circuit_ext;
pub(crate) mod cmd_set;
pub mod consts;
pub mod datagram;
pub(crate) mod error;
pub(crate) mod ids;
pub mod onion_msg;
pub mod padding_machine;
pub mod padding_negotiate;
pub(crate) mod relay_cell;
pub mod relay_cmd;
pub mod relay_contexts;
pub mod relay_msg;
pub(crate) mod restricted;
mod wire_enum;

pub use address::{Hostname, TargetAddr};
pub use chan_cell::{CellHeader, ChanCell};
pub use chan_cmd::{ChanCmd, DestroyReason};
pub use chan_msg::{ChanMsg, Create, Created, HandshakeType, LinkHandshake, Netinfo, RelayBody};
pub use cmd_set::CmdSet;
pub use error::{CellError, CellResult};
pub use ids::{CircId, StreamId};
pub use onion_msg::OnionMsg;
pub use padding_negotiate::{PaddingBounds, PaddingNegotiate};
pub use relay_cell::RelayCell;
pub use relay_cmd::{EndReason, RelayCmd};
pub use relay_msg::RelayMsg;
pub use restricted::{ChanMessage, RelayMessage};
