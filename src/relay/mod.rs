//! The relay runtime: accepts channels, answers CREATE, handles EXTEND, forwards RELAY
//! cells both ways (removing or adding its layer) and tears circuits down on DESTROY.
//!
//! Task model: one reader task per channel ([`reactor`]) and one task per circuit
//! ([`circuit`]); they talk through bounded queues. There is no relay-wide lock on the
//! cell path, so circuits on different channels are processed on all cores at once.

pub mod address_discovery;
pub(crate) mod authority;
pub mod channel_limit;
pub mod circuit;
pub mod dircache;
pub mod dirserve;
pub(crate) mod events;
pub(crate) mod exit;
pub(crate) mod exit_udp;
pub(crate) mod exit_udp_policy;
pub(crate) mod hsdir;
pub(crate) mod key_maintenance;
pub mod key_schedule;
pub(crate) mod keys;
pub(crate) mod limits;
pub mod metrics;
pub(crate) mod observer;
pub(crate) mod onion_points;
pub(crate) mod publish;
pub(crate) mod queue_budget;
pub(crate) mod rate_limit;
pub(crate) mod reactor;
pub(crate) mod replay;
pub(crate) mod self_test;
pub mod self_test_status;
pub(crate) mod server;
pub mod shared;
pub(crate) mod splice;

pub use exit::{DirectConnector, ExitConfig, ExitConnector, ExitTimeouts};
pub use exit_udp_policy::udp_policy_from_config;
pub use keys::RelayKeys;
pub use limits::RelayLimits;
pub use observer::RelayObserver;
pub use server::{start, RelayConfig, RelayHandle};
