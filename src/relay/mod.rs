//! The relay runtime: accepts channels, answers CREATE, handles EXTEND, forwards RELAY
//! cells both ways (removing or adding its layer) and tears circuits down on DESTROY.
//!
//! Task model: one reader task per channel ([`reactor`]) and one task per circuit
//! ([`circuit`]); they talk through bounded queues. There is no relay-wide lock on the
//! cell path, so circuits on different channels are processed on all cores at once.

pub mod authority;
pub mod circuit;
pub mod dircache;
pub mod dirserve;
pub mod events;
pub mod exit;
pub mod hsdir;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod observer;
pub mod onion_points;
pub mod publish;
pub mod queue_budget;
pub mod rate_limit;
pub mod reactor;
pub mod replay;
pub mod server;
pub mod shared;
pub mod splice;

pub use exit::{ExitConfig, ExitTimeouts};
pub use keys::RelayKeys;
pub use limits::RelayLimits;
pub use observer::RelayObserver;
pub use server::{start, RelayConfig, RelayHandle};
