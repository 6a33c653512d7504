//! The circuit protocol both runtimes build on: channels opened as initiator, circuits
//! built through them, the task that multiplexes streams over a circuit, streams, and the
//! directory client. `relay` (its directory roles) and `client` use it; it uses neither.

pub mod channel;
pub mod circuit;
pub mod dirclient;
pub mod error;
pub mod event;
pub mod incoming;
pub mod reactor;
pub mod stream;
pub mod target;

pub use channel::ClientChannel;
pub use circuit::ClientCircuit;
pub use error::CircuitError;
pub use incoming::{IncomingStream, IncomingStreams};
pub use reactor::CircuitHandle;
pub use stream::{DataStream, StreamOpenError};
pub use target::RelayTarget;
