//! The circuit protocol both runtimes build on: channels opened as initiator, circuits
//! built through them, the task that multiplexes streams over a circuit, streams, and the
//! directory client. `relay` (its directory roles) and `client` use it; it uses neither.

pub(crate) mod channel;
pub(crate) mod circuit;
pub mod congestion;
pub mod datagram;
pub mod dir_fetch;
pub mod dirclient;
pub(crate) mod error;
pub mod event;
pub mod event_queue;
pub(crate) mod incoming;
pub mod padding;
pub(crate) mod reactor;
pub(crate) mod stream;
pub(crate) mod target;

pub use channel::ClientChannel;
pub use circuit::ClientCircuit;
pub use congestion::FlowMode;
pub use datagram::{UdpFlow, UdpSendError};
pub use error::CircuitError;
pub use incoming::{IncomingStream, IncomingStreams};
pub use reactor::CircuitHandle;
pub use stream::{DataStream, StreamOpenError};
pub use target::RelayTarget;
