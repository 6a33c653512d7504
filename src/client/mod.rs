//! The client: channels to first hops and circuits built through them.

pub mod channel;
pub mod circuit;
pub mod dirclient;
pub mod error;
pub mod manager;
pub mod onion_connect;
pub mod onion_service;
pub mod reactor;
pub mod socks;
pub mod socks_server;
pub mod stream;
pub mod target;

pub use channel::ClientChannel;
pub use circuit::ClientCircuit;
pub use error::CircuitError;
pub use manager::{Client, ClientConfig, ClientError, Isolation};
pub use reactor::CircuitHandle;
pub use socks_server::{Connector, IsolationKey, ProxyConfig};
pub use stream::{DataStream, StreamOpenError};
pub use target::RelayTarget;
