//! The control port (docs/control.md): a local line protocol close to Tor's ControlPort,
//! so that tools written for Tor (stem scripts, OnionShare-like applications) can drive
//! the proxy: authenticate with a cookie or password, read the bootstrap status, ask for
//! a new identity (NEWNYM), create and remove ephemeral onion services (ADD_ONION,
//! DEL_ONION) and follow circuits and streams (SETEVENTS CIRC STREAM).
//!
//! One concept per file: the grammar (`line.rs`), credentials (`auth.rs`), what each
//! command does (`commands.rs`), ephemeral services (`services.rs`), events
//! (`events.rs`) and the listener with its per-connection limits (`server.rs`).

mod auth;
mod commands;
mod events;
pub mod line;
mod server;
mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::client::Client;

pub use auth::COOKIE_LEN;
pub use events::{Event, Events, EVENT_QUEUE};
pub use line::{parse_line, Command, ParseError, MAX_LINE};
pub use server::{serve_tcp, serve_unix, WRITE_TIMEOUT};
pub use services::MAX_SERVICES;

/// How the control port authenticates and what it allows.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where to write the cookie (32 random bytes, mode 0600, new at every start).
    pub cookie_file: Option<PathBuf>,
    /// A file whose first line is the password (the configuration never holds it).
    pub password_file: Option<PathBuf>,
    /// Control connections at once; more are refused.
    pub max_connections: usize,
    /// A connection must authenticate within this time.
    pub auth_timeout: Duration,
    /// The SOCKS listener, for `GETINFO net/listeners/socks`.
    pub socks: Option<SocketAddr>,
}

impl ControlConfig {
    /// Cookie authentication with `cookie_file`; 16 connections, 10 s to authenticate.
    pub fn with_cookie(cookie_file: PathBuf) -> ControlConfig {
        ControlConfig {
            cookie_file: Some(cookie_file),
            password_file: None,
            max_connections: 16,
            auth_timeout: Duration::from_secs(10),
            socks: None,
        }
    }
}

/// The control port's state, shared by its connections.
pub struct Control {
    client: Client,
    auth: auth::Auth,
    events: Arc<Events>,
    services: services::Services,
    socks: Option<SocketAddr>,
    auth_timeout: Duration,
    slots: Arc<Semaphore>,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control { .. }")
    }
}

impl Control {
    /// Sets up the control port for `client`, whose observer should be `events` (for
    /// CIRC events; see [`Events`]). Writes the cookie file now.
    pub fn new(
        client: Client,
        events: Arc<Events>,
        cfg: &ControlConfig,
    ) -> std::io::Result<Arc<Control>> {
        let auth = auth::Auth::new(cfg.cookie_file.as_deref(), cfg.password_file.as_deref())?;
        Ok(Arc::new(Control {
            client,
            auth,
            events,
            services: services::Services::default(),
            socks: cfg.socks,
            auth_timeout: cfg.auth_timeout,
            slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            next_conn: AtomicU64::new(1),
        }))
    }

    /// The cookie file, if cookie authentication is on.
    pub fn cookie_file(&self) -> Option<&std::path::Path> {
        self.auth.cookie_file()
    }
}
