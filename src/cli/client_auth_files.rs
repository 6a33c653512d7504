//! Onion-service client-authorisation keys on disk: a client's secret in an allium key
//! file (type 3, mode 0600, as strict as every key file), and a service's authorised
//! clients as one `<name>.auth` file each (`x25519:<64 lowercase hex>`, one line) in a
//! directory only its owner can access.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::crypto::keyfile::{read_key_file, write_key_file, KeyType};
use crate::onion::client_auth::MAX_AUTH_CLIENTS;
use crate::onion::{ClientAuthPublic, ClientAuthSecret};

/// Longest `.auth` file read: the key line and a newline.
const MAX_AUTH_FILE_LEN: u64 = 7 + 64 + 1;

/// Refuses a file or directory group or other can access: a writable one would let
/// anyone on the host add a client.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has insecure permissions {mode:o}: group/other must have no access (chmod {})",
            path.display(),
            if meta.is_dir() { "700" } else { "600" }
        ));
    }
    Ok(())
}

/// Reads one `<name>.auth` file: the key line, optionally followed by one newline.
fn read_auth_file(path: &Path) -> Result<ClientAuthPublic, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    check_private(path, &meta)?;
    let mut text = String::new();
    file.take(MAX_AUTH_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    line.parse().map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads every `*.auth` file of `dir` (other names are ignored), sorted by file name;
/// refuses an insecure directory or file, a malformed key, a key listed twice, none at
/// all, or more than [`MAX_AUTH_CLIENTS`].
pub(crate) fn load_authorized_clients(dir: &Path) -> Result<Vec<ClientAuthPublic>, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    check_private(dir, &meta)?;
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|x| x == "auth") {
            if paths.len() == MAX_AUTH_CLIENTS {
                return Err(format!(
                    "{}: more than {MAX_AUTH_CLIENTS} authorised clients",
                    dir.display()
                ));
            }
            paths.push(path);
        }
    }
    paths.sort();
    let mut keys: Vec<ClientAuthPublic> = Vec::with_capacity(paths.len());
    for path in &paths {
        let key = read_auth_file(path)?;
        if keys.contains(&key) {
            return Err(format!("{}: this key is listed twice", path.display()));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(format!("{}: no <name>.auth file", dir.display()));
    }
    Ok(keys)
}

/// Loads a client's authorisation key file (type 3, mode 0600, exact format).
pub(crate) fn load_client_key(path: &Path) -> Result<ClientAuthSecret, String> {
    let secret = read_key_file(path, KeyType::ClientAuth).map_err(|e| e.to_string())?;
    Ok(ClientAuthSecret::from_secret_bytes(&secret))
}

/// `allium onion-auth-keygen --key-file PATH`: writes a new key (refusing to replace an
/// existing file) and returns the public line for the service's `<name>.auth` file.
pub(crate) fn keygen(path: &Path) -> Result<String, String> {
    if path.exists() {
        return Err(format!("{} exists; not replacing a key", path.display()));
    }
    let key = ClientAuthSecret::generate(&mut rand::rng());
    write_key_file(path, KeyType::ClientAuth, &key.secret_bytes()).map_err(|e| e.to_string())?;
    Ok(key.public().to_string())
}

/// One `[[client_auth]]` entry of proxy.toml: the key this client presents to one onion
/// service (docs/protocol.md §8.4.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthEntry {
    /// The service, `<address>.allium`.
    pub onion: String,
    /// The key file `allium onion-auth-keygen` wrote (mode 0600).
    pub key_file: PathBuf,
}

/// Loads the `[[client_auth]]` keys: one per address, each file strict.
pub fn client_auth_keys(
    entries: &[ClientAuthEntry],
) -> Result<Vec<(crate::onion::OnionAddress, crate::onion::ClientAuthSecret)>, String> {
    let mut out: Vec<(crate::onion::OnionAddress, _)> = Vec::new();
    for e in entries {
        let address: crate::onion::OnionAddress = e
            .onion
            .parse()
            .map_err(|err| format!("[[client_auth]] onion: {err}"))?;
        if out.iter().any(|(a, _)| *a == address) {
            return Err("[[client_auth]]: an onion address is listed twice".into());
        }
        out.push((address, load_client_key(&e.key_file)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("allium-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn keygen_and_auth_directory_round_trip_strictly() {
        let d = tmp("dir");
        let key_path = d.join("alice.key");
        let line = keygen(&key_path).unwrap();
        assert!(keygen(&key_path).is_err(), "never replaces a key");
        let key = load_client_key(&key_path).unwrap();
        assert_eq!(key.public().to_string(), line);
        let clients = d.join("clients");
        std::fs::create_dir(&clients).unwrap();
        std::fs::set_permissions(&clients, Permissions::from_mode(0o700)).unwrap();
        assert!(load_authorized_clients(&clients)
            .unwrap_err()
            .contains("no <name>.auth"));
        write(&clients.join("alice.auth"), &format!("{line}\n"), 0o600);
        write(&clients.join("README"), "ignored", 0o644);
        assert_eq!(
            load_authorized_clients(&clients).unwrap(),
            vec![key.public()]
        );
        // Listed twice, malformed, insecure file, insecure directory: refused, named.
        write(&clients.join("copy.auth"), &line, 0o600);
        assert!(load_authorized_clients(&clients)
            .unwrap_err()
            .contains("twice"));
        write(&clients.join("copy.auth"), &format!("{line}\n\n"), 0o600);
        assert!(load_authorized_clients(&clients)
            .unwrap_err()
            .contains("copy.auth"));
        std::fs::remove_file(clients.join("copy.auth")).unwrap();
        std::fs::set_permissions(clients.join("alice.auth"), Permissions::from_mode(0o644))
            .unwrap();
        assert!(load_authorized_clients(&clients)
            .unwrap_err()
            .contains("insecure"));
        std::fs::set_permissions(clients.join("alice.auth"), Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(&clients, Permissions::from_mode(0o755)).unwrap();
        assert!(load_authorized_clients(&clients)
            .unwrap_err()
            .contains("insecure"));
        // The client key file is as strict as every key file.
        std::fs::set_permissions(&key_path, Permissions::from_mode(0o644)).unwrap();
        assert!(load_client_key(&key_path).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
