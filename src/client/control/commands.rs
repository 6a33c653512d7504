//! What each command does and the reply it gets (docs/control.md lists them). Before
//! AUTHENTICATE only PROTOCOLINFO (once), AUTHENTICATE and QUIT are answered; anything
//! else closes the connection with `514`, and a wrong credential with `515`, as Tor does.

use std::fmt::Write as _;

use tracing::info;

use crate::client::onion_service::{launch_with_key, ServiceConfig};
use crate::crypto::IdentityKeypair;
use crate::onion::OnionAddress;

use super::line::{base64_encode, AddOnion, Command, EventKind, KeySpec, Signal, KEY_TYPE};
use super::Control;

/// How long a wrong AUTHENTICATE waits before its refusal.
const FAILED_AUTH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// One control connection's state.
#[derive(Debug)]
pub(super) struct Session {
    /// Its id (owner of the ephemeral services it makes).
    pub id: u64,
    /// AUTHENTICATE succeeded.
    pub authenticated: bool,
    /// PROTOCOLINFO was answered (once only before authentication, as in Tor).
    pub protocolinfo_done: bool,
    /// The events it asked for.
    pub events: Vec<EventKind>,
}

/// What to send back, and whether to close the connection after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reply {
    /// Complete reply lines, each ending in CRLF.
    pub text: String,
    /// Close after sending.
    pub close: bool,
}

impl Reply {
    fn ok() -> Reply {
        Reply::line("250 OK")
    }

    /// A one-line reply.
    pub(super) fn line(l: &str) -> Reply {
        Reply {
            text: format!("{l}\r\n"),
            close: false,
        }
    }

    /// A one-line reply, then the connection is closed.
    pub(super) fn closing(l: &str) -> Reply {
        Reply {
            text: format!("{l}\r\n"),
            close: true,
        }
    }
}

/// Runs `cmd` for `session`.
pub(super) async fn handle(ctl: &Control, session: &mut Session, cmd: Command) -> Reply {
    if !session.authenticated {
        match &cmd {
            Command::ProtocolInfo if !session.protocolinfo_done => {}
            Command::Authenticate(_) | Command::Quit => {}
            _ => return Reply::closing("514 Authentication required."),
        }
    }
    match cmd {
        Command::ProtocolInfo => {
            session.protocolinfo_done = true;
            protocol_info(ctl)
        }
        Command::Authenticate(cred) => {
            if ctl.auth.check(&cred) {
                session.authenticated = true;
                Reply::ok()
            } else {
                // A second's wait before the refusal (and the close): online guessing of
                // a password costs a connection and a second per try.
                tokio::time::sleep(FAILED_AUTH_DELAY).await;
                Reply::closing("515 Authentication failed: wrong cookie or password")
            }
        }
        Command::Quit => Reply::closing("250 closing connection"),
        Command::GetInfo(keys) => get_info(ctl, session, &keys),
        Command::Signal(Signal::NewNym) => {
            ctl.client.new_identity().await;
            Reply::ok()
        }
        Command::SetEvents(kinds) => {
            session.events = kinds;
            Reply::ok()
        }
        Command::AddOnion(req) => add_onion(ctl, session, req).await,
        Command::DelOnion(id) => {
            if ctl.services.remove(&id, session.id) {
                info!("control: ephemeral onion service removed");
                Reply::ok()
            } else {
                Reply::line("552 Unknown Onion Service id")
            }
        }
    }
}

fn protocol_info(ctl: &Control) -> Reply {
    let mut methods = Vec::new();
    if ctl.auth.cookie_file().is_some() {
        methods.push("COOKIE");
    }
    if ctl.auth.has_password() {
        methods.push("HASHEDPASSWORD");
    }
    let mut text = String::from("250-PROTOCOLINFO 1\r\n");
    let _ = write!(text, "250-AUTH METHODS={}", methods.join(","));
    if let Some(path) = ctl.auth.cookie_file() {
        let _ = write!(text, " COOKIEFILE={}", quote(&path.to_string_lossy()));
    }
    text.push_str("\r\n");
    let _ = write!(
        text,
        "250-VERSION Allium={}\r\n250 OK\r\n",
        quote(env!("CARGO_PKG_VERSION"))
    );
    Reply { text, close: false }
}

/// A quoted string with `\` and `"` escaped and anything outside printable ASCII as
/// `\xNN`-free `?`, so a value can never break the line structure.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

fn get_info(ctl: &Control, session: &Session, keys: &[String]) -> Reply {
    let mut text = String::new();
    for key in keys {
        let value: Vec<String> = match key.as_str() {
            "version" => vec![env!("CARGO_PKG_VERSION").to_string()],
            // The control port starts once the client has bootstrapped.
            "status/bootstrap-phase" => {
                vec!["NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"".to_string()]
            }
            "status/circuit-established" => {
                let live = ctl.client.live_consensus().is_ok();
                vec![if live { "1" } else { "0" }.to_string()]
            }
            "net/listeners/socks" => {
                vec![ctl.socks.map(|a| quote(&a.to_string())).unwrap_or_default()]
            }
            "onions/current" => ctl.services.list(Some(session.id)),
            "onions/detached" => ctl.services.list(None),
            _ => return Reply::line(&format!("552 Unrecognized key \"{key}\"")),
        };
        match value.as_slice() {
            [] => {
                let _ = write!(text, "250-{key}=\r\n");
            }
            [one] => {
                let _ = write!(text, "250-{key}={one}\r\n");
            }
            many => {
                // Tor's multi-line form: the value lines end with a lone ".".
                let _ = write!(text, "250+{key}=\r\n{}\r\n.\r\n", many.join("\r\n"));
            }
        }
    }
    text.push_str("250 OK\r\n");
    Reply { text, close: false }
}

async fn add_onion(ctl: &Control, session: &Session, req: AddOnion) -> Reply {
    if !ctl.services.has_room() {
        return Reply::line("551 Too many ephemeral onion services");
    }
    let identity = match &req.key {
        KeySpec::New => IdentityKeypair::generate(&mut rand::rng()),
        KeySpec::Given(seed) => IdentityKeypair::from_secret_bytes(seed),
    };
    let address = match OnionAddress::from_identity(identity.public()) {
        Ok(a) => a,
        Err(_) => return Reply::line("512 Invalid key"),
    };
    let id = service_id(&address);
    let secret = (!req.discard_pk).then(|| base64_encode(identity.secret_bytes().as_slice()));
    // The key file is never read: the key is given.
    let cfg = ServiceConfig::new(std::path::PathBuf::new(), req.ports);
    let service = match launch_with_key(ctl.client.clone(), cfg, identity).await {
        Ok(s) => s,
        Err(e) => return Reply::line(&format!("551 {e}")),
    };
    let owner = (!req.detach).then_some(session.id);
    if let Err(why) = ctl.services.add(id.clone(), service, owner) {
        return Reply::line(&format!("550 {why}"));
    }
    info!("control: ephemeral onion service started");
    let mut text = format!("250-ServiceID={id}\r\n");
    if let Some(secret) = secret {
        let _ = write!(text, "250-PrivateKey={KEY_TYPE}:{secret}\r\n");
    }
    text.push_str("250 OK\r\n");
    Reply { text, close: false }
}

/// The address without `.allium`.
pub(super) fn service_id(address: &OnionAddress) -> String {
    let full = address.to_string();
    full.strip_suffix(crate::onion::address::ADDRESS_SUFFIX)
        .unwrap_or(&full)
        .to_string()
}
