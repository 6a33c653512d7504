//! Streams over circuits: the application's [`DataStream`], and the pieces shared by the
//! client and the exit (flow-control windows, socket pumps, the per-circuit stream set).

pub mod data_stream;
pub mod pump;
pub mod set;
pub mod window;

pub use data_stream::{DataStream, StreamOpenError};
pub use window::{FlowError, RecvWindow, SendWindow};
