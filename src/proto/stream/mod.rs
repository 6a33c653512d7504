//! Streams over circuits: the application's [`DataStream`], and the pieces shared by the
//! client and the exit (flow-control windows, socket pumps, the per-circuit stream set).

pub(crate) mod data_stream;
pub(crate) mod pump;
pub(crate) mod set;
pub(crate) mod window;

pub use data_stream::{DataStream, StreamOpenError};
