//! The client: bootstraps from the directory authorities, keeps circuits ready, opens
//! streams through them (the SOCKS proxy is built on it), and connects to and runs onion
//! services. The circuit machinery it builds on is [`crate::proto`].
//!
//! Split as arti splits its client: a directory manager ([`dirmgr`]), a channel pool
//! ([`chanmgr`]), guards ([`guardmgr`]), a circuit manager ([`circmgr`]) and the
//! [`Client`] facade ([`facade`]) that ties them together; the onion-service connector
//! holds the directory and circuit managers, not the facade.

pub(crate) mod chanmgr;
pub(crate) mod circmgr;
pub(crate) mod config;
pub mod control;
pub(crate) mod dirmgr;
pub(crate) mod error;
pub(crate) mod facade;
pub(crate) mod guardmgr;
pub mod onion_connect;
pub mod onion_service;
pub mod purpose;
pub(crate) mod revision_floors;
pub(crate) mod service_end;
pub(crate) mod skew;
pub mod socks;
pub mod socks_server;
pub(crate) mod sweeper;
pub(crate) mod upkeep;

pub use crate::proto::{
    CircuitError, CircuitHandle, ClientChannel, ClientCircuit, DataStream, RelayTarget,
    StreamOpenError, UdpFlow, UdpSendError,
};
pub use circmgr::Isolation;
pub use config::ClientConfig;
pub use error::{ClientError, OnionConnectError};
pub use facade::Client;
pub use purpose::{CircPurpose, ClientObserver};
pub use socks_server::{Connector, IsolationKey, ProxyConfig};
