//! The `[control]` table of proxy.toml and starting the control port for `allium proxy`
//! and `allium testnet` (docs/control.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::net::{TcpListener, UnixListener};

use crate::client::control::{serve_tcp, serve_unix, Control, ControlConfig, Events};
use crate::client::Client;

/// `[control]` of proxy.toml. The table's presence turns the control port on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// `false` keeps the table but turns the port off (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A TCP listener; must be a loopback address (e.g. "127.0.0.1:9051").
    pub listen: Option<SocketAddr>,
    /// A Unix socket path instead of (or besides) `listen`.
    pub unix: Option<PathBuf>,
    /// Where the cookie is written (default: `control_auth_cookie` in the data directory).
    pub cookie_file: Option<PathBuf>,
    /// A file whose first line is a password (optional, besides the cookie).
    pub password_file: Option<PathBuf>,
    /// Control connections at once (default 16).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection has to authenticate (default 10).
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
}

fn default_true() -> bool {
    true
}
fn default_max_connections() -> usize {
    16
}
fn default_auth_timeout() -> u64 {
    10
}

impl ControlSection {
    /// The section `allium testnet` uses: TCP on `listen`, cookie in `data_dir`.
    pub fn testnet(listen: SocketAddr) -> ControlSection {
        ControlSection {
            enabled: true,
            listen: Some(listen),
            unix: None,
            cookie_file: None,
            password_file: None,
            max_connections: default_max_connections(),
            auth_timeout_secs: default_auth_timeout(),
        }
    }

    /// Checks the section and makes the library configuration. `data_dir` holds the
    /// default cookie file.
    pub fn config(
        &self,
        data_dir: Option<&Path>,
        socks: SocketAddr,
    ) -> Result<ControlConfig, String> {
        if self.listen.is_none() && self.unix.is_none() {
            return Err("[control] needs `listen` or `unix`".into());
        }
        if let Some(a) = self.listen {
            // Anyone who can reach the port can try credentials: keep it on this machine.
            if !a.ip().is_loopback() {
                return Err(format!("[control] listen = {a} is not a loopback address"));
            }
        }
        let cookie_file = match (&self.cookie_file, data_dir) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(d)) => Some(d.join("control_auth_cookie")),
            (None, None) if self.password_file.is_some() => None,
            (None, None) => {
                return Err(
                    "[control] needs `cookie_file` (or a data_dir for the default one) or `password_file`"
                        .into(),
                )
            }
        };
        Ok(ControlConfig {
            cookie_file,
            password_file: self.password_file.clone(),
            max_connections: self.max_connections.max(1),
            auth_timeout: std::time::Duration::from_secs(self.auth_timeout_secs.max(1)),
            socks: Some(socks),
        })
    }
}

/// A started control port: what to print.
#[derive(Debug)]
pub struct Started {
    /// "127.0.0.1:9051" or "unix:/path".
    pub addresses: Vec<String>,
    /// The cookie file, if any.
    pub cookie_file: Option<PathBuf>,
}

/// Binds the control port's listeners and serves them until `stop` turns true. `events`
/// must be the client's observer (for CIRC events). With `fallback`, a TCP port already
/// in use is replaced by a free one (for `allium testnet`'s default port).
pub async fn start(
    section: &ControlSection,
    cfg: &ControlConfig,
    client: Client,
    events: Arc<Events>,
    stop: tokio::sync::watch::Receiver<bool>,
    fallback: bool,
) -> Result<Started, String> {
    let ctl = Control::new(client, events, cfg).map_err(|e| format!("control port: {e}"))?;
    let mut addresses = Vec::new();
    let wait = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Some(addr) = section.listen {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(_) if fallback => TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .map_err(|e| format!("cannot listen for control on {addr}: {e}"))?,
            Err(e) => return Err(format!("cannot listen for control on {addr}: {e}")),
        };
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        addresses.push(bound.to_string());
        tokio::spawn(serve_tcp(listener, Arc::clone(&ctl), wait(stop.clone())));
    }
    if let Some(path) = &section.unix {
        // A stale socket from an earlier run would make the bind fail.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen for control on {}: {e}", path.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        addresses.push(format!("unix:{}", path.display()));
        tokio::spawn(serve_unix(listener, Arc::clone(&ctl), wait(stop)));
    }
    Ok(Started {
        addresses,
        cookie_file: ctl.cookie_file().map(Path::to_path_buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[control]` table of docs/examples/proxy.toml (commented there), uncommented
    /// as an operator would: it parses and makes the documented configuration.
    #[test]
    fn example_control_table_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/proxy.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find("# [control]")
            .expect("the example has a [control] table");
        let table: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            .filter(|l| !l.is_empty() && (l.starts_with('[') || l.contains(" = ")))
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        struct F {
            control: ControlSection,
        }
        let f: F = toml::from_str(&table).unwrap();
        let c = f.control;
        assert!(c.enabled);
        assert_eq!(c.listen, Some("127.0.0.1:9051".parse().unwrap()));
        let cfg = c
            .config(
                Some(Path::new("/var/lib/allium")),
                "127.0.0.1:9050".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(
            cfg.cookie_file.as_deref(),
            Some(Path::new("/var/lib/allium/proxy/control_auth_cookie"))
        );
        assert_eq!(cfg.max_connections, 16);
        assert_eq!(cfg.auth_timeout, std::time::Duration::from_secs(10));
        // Without cookie_file: control_auth_cookie in the data directory.
        let mut default = c.clone();
        default.cookie_file = None;
        let cfg = default
            .config(Some(Path::new("/d")), "127.0.0.1:9050".parse().unwrap())
            .unwrap();
        assert_eq!(
            cfg.cookie_file.as_deref(),
            Some(Path::new("/d/control_auth_cookie"))
        );
        // Not loopback: refused.
        let mut open = c.clone();
        open.listen = Some("0.0.0.0:9051".parse().unwrap());
        assert!(open
            .config(Some(Path::new("/d")), "127.0.0.1:9050".parse().unwrap())
            .is_err());
        // Nowhere to listen, or no credential: refused.
        let mut none = c.clone();
        none.listen = None;
        assert!(none
            .config(Some(Path::new("/d")), "127.0.0.1:9050".parse().unwrap())
            .is_err());
        assert!(default
            .config(None, "127.0.0.1:9050".parse().unwrap())
            .is_err());
        // A misspelled key is refused.
        assert!(
            toml::from_str::<F>("[control]\nlisten = \"127.0.0.1:1\"\ncookie_fle = \"x\"").is_err()
        );
    }
}
