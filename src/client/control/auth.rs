//! Who may use the control port: the holder of the cookie file (32 random bytes, mode
//! 0600, rewritten at every start) or of the password (kept in a file, never in the
//! configuration). Credentials are compared in constant time, as SHA-256 digests so that
//! a length difference tells nothing either.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::line::Credential;

/// Cookie length, as Tor's.
pub const COOKIE_LEN: usize = 32;

/// The accepted credentials.
pub(super) struct Auth {
    cookie: Option<([u8; 32], PathBuf)>,
    password: Option<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Auth {
    /// Writes a fresh cookie to `cookie_file` (mode 0600, replacing an older one) and/or
    /// reads the password from `password_file` (its first line). At least one is needed.
    pub(super) fn new(
        cookie_file: Option<&Path>,
        password_file: Option<&Path>,
    ) -> std::io::Result<Auth> {
        let cookie = match cookie_file {
            Some(path) => {
                let cookie = Zeroizing::new(rand::random::<[u8; COOKIE_LEN]>());
                write_private(path, cookie.as_slice())?;
                Some((digest(cookie.as_slice()), path.to_path_buf()))
            }
            None => None,
        };
        let password = match password_file {
            Some(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path)?);
                let line = text.lines().next().unwrap_or_default();
                if line.is_empty() {
                    return Err(std::io::Error::other(format!(
                        "{}: the control password file is empty",
                        path.display()
                    )));
                }
                Some(digest(line.as_bytes()))
            }
            None => None,
        };
        if cookie.is_none() && password.is_none() {
            return Err(std::io::Error::other(
                "the control port needs a cookie file or a password file",
            ));
        }
        Ok(Auth { cookie, password })
    }

    /// The cookie file, if cookie authentication is on.
    pub(super) fn cookie_file(&self) -> Option<&Path> {
        self.cookie.as_ref().map(|(_, p)| p.as_path())
    }

    /// Whether password authentication is on.
    pub(super) fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether `cred` is the cookie (hex) or the password (quoted).
    pub(super) fn check(&self, cred: &Credential) -> bool {
        let (expected, given) = match cred {
            Credential::None => return false,
            Credential::Hex(b) => (self.cookie.as_ref().map(|(d, _)| d), b),
            Credential::Quoted(b) => (self.password.as_ref(), b),
        };
        let given = digest(given);
        expected.is_some_and(|e| bool::from(e.ct_eq(&given)))
    }
}

/// Writes `bytes` to `path` readable by its owner only (the old file is replaced).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A new file (the old one removed), so no one else holds it open with wider rights.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_private_and_only_it_authenticates() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("allium-ctl-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("cookie");
        let auth = Auth::new(Some(&path), None).unwrap();
        let cookie = std::fs::read(&path).unwrap();
        assert_eq!(cookie.len(), COOKIE_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(auth.check(&Credential::Hex(Zeroizing::new(cookie.clone()))));
        let mut wrong = cookie.clone();
        wrong[0] ^= 1;
        assert!(!auth.check(&Credential::Hex(Zeroizing::new(wrong))));
        assert!(!auth.check(&Credential::Hex(Zeroizing::new(cookie[..31].to_vec()))));
        assert!(!auth.check(&Credential::Quoted(Zeroizing::new(cookie.clone()))));
        assert!(!auth.check(&Credential::None));
        // A restart writes a new cookie: the old one no longer works.
        let again = Auth::new(Some(&path), None).unwrap();
        assert!(!again.check(&Credential::Hex(Zeroizing::new(cookie))));

        let pw = dir.join("password");
        std::fs::write(&pw, "correct horse\n").unwrap();
        let auth = Auth::new(None, Some(&pw)).unwrap();
        assert!(auth.check(&Credential::Quoted(Zeroizing::new(
            b"correct horse".to_vec()
        ))));
        assert!(!auth.check(&Credential::Quoted(Zeroizing::new(b"correct".to_vec()))));
        assert!(!auth.check(&Credential::Hex(Zeroizing::new(b"correct horse".to_vec()))));
        assert!(Auth::new(None, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
