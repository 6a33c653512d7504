//! The client: bootstraps from the directory authorities, keeps circuits ready, opens
//! streams through them (the SOCKS proxy is built on it), and connects to and runs onion
//! services. The circuit machinery it builds on is [`crate::proto`].

pub mod manager;
pub mod onion_connect;
pub mod onion_service;
pub mod service_end;
pub mod socks;
pub mod socks_server;

pub use crate::proto::{
    CircuitError, CircuitHandle, ClientChannel, ClientCircuit, DataStream, RelayTarget,
    StreamOpenError,
};
pub use manager::{Client, ClientConfig, ClientError, Isolation};
pub use socks_server::{Connector, IsolationKey, ProxyConfig};
