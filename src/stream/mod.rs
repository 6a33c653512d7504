//! Streams over circuits: pieces shared by the client and the exit.

pub mod pump;
pub mod set;
pub mod window;

pub use window::{FlowError, RecvWindow, SendWindow};
