//! Secret-key files in the relay's data directory. The only module in `crypto` that does
//! I/O.
//!
//! Format (exactly 41 bytes): `"ALLIUMK1"(8) | key_type(1) | secret(32)` where key_type is
//! 1 for the ed25519 identity seed and 2 for an x25519 onion secret. Files are written with
//! mode 0600 through a temporary file and an atomic rename, and loading refuses anything
//! that is not exactly that format or that group/other can access. Unix only.
//!
//! Beside the onion key lies `onion_key.created` ([`OnionKeyMeta`]), saying when it was
//! made, so a restarted relay keeps its rotation schedule.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::CryptoRng;
use zeroize::Zeroizing;

use crate::bytes::{Reader, Writer};
use crate::crypto::keys::{
    IdentityKeypair, IdentityPublic, OnionKeypair, OnionPublic, SECRET_KEY_LEN,
};
use crate::crypto::onion_key_meta::{OnionKeyMeta, OnionKeyMetaError, ONION_KEY_META_LEN};
use crate::crypto::onion_keys::RelayOnionKeys;

/// Magic bytes at the start of every key file (format version 1).
pub const KEY_FILE_MAGIC: &[u8; 8] = b"ALLIUMK1";
/// Exact length of a key file.
pub const KEY_FILE_LEN: usize = KEY_FILE_MAGIC.len() + 1 + SECRET_KEY_LEN;
/// File name of the identity key inside the data directory.
pub const IDENTITY_KEY_FILE: &str = "identity_key";
/// File name of the current onion key inside the data directory.
pub const ONION_KEY_FILE: &str = "onion_key";
/// File name of the previous onion key (kept during the rotation grace period).
pub const PREVIOUS_ONION_KEY_FILE: &str = "onion_key.prev";
/// File name of the record of when the current onion key was made.
pub const ONION_KEY_META_FILE: &str = "onion_key.created";

/// Which key a file holds; the byte after the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyType {
    /// ed25519 identity seed.
    Identity = 1,
    /// x25519 onion secret.
    Onion = 2,
    /// x25519 onion-service client-authorisation secret.
    ClientAuth = 3,
}

impl core::fmt::Display for KeyType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            KeyType::Identity => "identity (1)",
            KeyType::Onion => "onion (2)",
            KeyType::ClientAuth => "onion client authorisation (3)",
        })
    }
}

/// A key file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file does not exist.
    #[error("key file {} does not exist", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// An operating-system error.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("key file {} is not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or other have some permission on the file.
    #[error(
        "key file {} has insecure permissions {mode:o}: group/other must have no access (chmod 600)",
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not exactly [`KEY_FILE_LEN`] bytes.
    #[error("key file {} has the wrong length: expected {KEY_FILE_LEN} bytes, found {found}", path.display())]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Bytes found (capped at `KEY_FILE_LEN + 1`: "more than expected").
        found: usize,
    },
    /// The file does not start with [`KEY_FILE_MAGIC`].
    #[error("key file {} is not an allium key file (bad magic)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file holds a different kind of key.
    #[error("key file {} holds the wrong key type: expected {expected}, found byte {found}", path.display())]
    WrongKeyType {
        /// The file.
        path: PathBuf,
        /// Type required.
        expected: KeyType,
        /// Type byte found.
        found: u8,
    },
    /// The onion-key record (`onion_key.created`) is malformed.
    #[error("key file {}: {source}", path.display())]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: OnionKeyMetaError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `secret` as a key file of type `kind` at `path`, replacing any existing file
/// atomically: a crash leaves either the old file or the new one, never a torn file.
pub fn write_key_file(
    path: &Path,
    kind: KeyType,
    secret: &[u8; SECRET_KEY_LEN],
) -> Result<(), KeyFileError> {
    let mut buf = Zeroizing::new([0u8; KEY_FILE_LEN]);
    let mut w = Writer::new(&mut *buf);
    w.put(KEY_FILE_MAGIC, "magic")
        .and_then(|()| w.u8(kind as u8, "key type"))
        .and_then(|()| w.put(secret, "secret"))
        .map_err(|e| io_err(path)(io::Error::other(e)))?;
    write_private_file(path, &*buf)
}

/// Writes `bytes` to `path` (mode 0600), replacing any existing file atomically.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A stale temporary from a crash may exist with unknown permissions; `create_new`
    // below guarantees the file we write was created by us with mode 0600.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

/// Makes a rename durable by syncing the containing directory.
fn sync_parent(path: &Path) -> Result<(), KeyFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Opens `path`, checks it is a regular file only its owner can access, and reads at most
/// `buf.len()` bytes of it into `buf`, returning how many.
fn read_private_file(path: &Path, buf: &mut [u8]) -> Result<usize, KeyFileError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    // Check the opened file itself (not the path again) so the checks and the read refer
    // to the same inode.
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }

    let mut filled = 0usize;
    while let Some(space) = buf.get_mut(filled..).filter(|s| !s.is_empty()) {
        match file.read(space) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    Ok(filled)
}

/// Reads and strictly validates a key file of type `kind`, returning its secret.
pub fn read_key_file(
    path: &Path,
    kind: KeyType,
) -> Result<Zeroizing<[u8; SECRET_KEY_LEN]>, KeyFileError> {
    // One byte more than expected, in a fixed zeroized buffer: a huge file cannot make us
    // allocate, and no secret bytes end up in a reallocated Vec.
    let mut buf = Zeroizing::new([0u8; KEY_FILE_LEN + 1]);
    let filled = read_private_file(path, &mut *buf)?;
    let bad_length = || KeyFileError::BadLength {
        path: path.to_path_buf(),
        found: filled,
    };
    if filled != KEY_FILE_LEN {
        return Err(bad_length());
    }
    // `magic | type | secret`: KEY_FILE_LEN is their sum, so no read below is short.
    let mut r = Reader::new(buf.get(..filled).ok_or_else(bad_length)?);
    if r.array_ref::<{ KEY_FILE_MAGIC.len() }>("magic")
        .map_err(|_| bad_length())?
        != KEY_FILE_MAGIC
    {
        return Err(KeyFileError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let found = r.u8("key type").map_err(|_| bad_length())?;
    if found != kind as u8 {
        return Err(KeyFileError::WrongKeyType {
            path: path.to_path_buf(),
            expected: kind,
            found,
        });
    }
    let secret = r
        .array_ref::<SECRET_KEY_LEN>("secret")
        .map_err(|_| bad_length())?;
    r.finish().map_err(|_| bad_length())?;
    // Copied straight into the zeroizing buffer, with no temporary copy of the secret.
    let mut out = Zeroizing::new([0u8; SECRET_KEY_LEN]);
    out.copy_from_slice(secret);
    Ok(out)
}

/// Creates the data directory (mode 0700) if it does not exist.
fn ensure_dir(dir: &Path) -> Result<(), KeyFileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Loads the identity key from `dir/identity_key`, or generates and writes one if the file
/// does not exist. Any other problem with an existing file is an error: silently replacing
/// an identity key would change the relay's identity.
pub fn load_or_create_identity<R: CryptoRng + ?Sized>(
    dir: &Path,
    rng: &mut R,
) -> Result<IdentityKeypair, KeyFileError> {
    let path = dir.join(IDENTITY_KEY_FILE);
    match read_key_file(&path, KeyType::Identity) {
        Ok(secret) => Ok(IdentityKeypair::from_secret_bytes(&secret)),
        Err(KeyFileError::Missing { .. }) => {
            ensure_dir(dir)?;
            let kp = IdentityKeypair::generate(rng);
            write_key_file(&path, KeyType::Identity, &kp.secret_bytes())?;
            Ok(kp)
        }
        Err(e) => Err(e),
    }
}

/// Loads the current onion key from `dir/onion_key`, or generates and writes one if the
/// file does not exist.
pub fn load_or_create_onion<R: CryptoRng + ?Sized>(
    dir: &Path,
    rng: &mut R,
) -> Result<OnionKeypair, KeyFileError> {
    let path = dir.join(ONION_KEY_FILE);
    match read_key_file(&path, KeyType::Onion) {
        Ok(secret) => Ok(OnionKeypair::from_secret_bytes(&secret)),
        Err(KeyFileError::Missing { .. }) => {
            ensure_dir(dir)?;
            let kp = OnionKeypair::generate(rng);
            write_key_file(&path, KeyType::Onion, &kp.secret_bytes())?;
            Ok(kp)
        }
        Err(e) => Err(e),
    }
}

/// Loads the previous onion key from `dir/onion_key.prev`, if that file exists.
pub fn load_previous_onion(dir: &Path) -> Result<Option<OnionKeypair>, KeyFileError> {
    match read_key_file(&dir.join(PREVIOUS_ONION_KEY_FILE), KeyType::Onion) {
        Ok(secret) => Ok(Some(OnionKeypair::from_secret_bytes(&secret))),
        Err(KeyFileError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads (creating if needed) the current onion key and loads the previous one if present.
pub fn load_relay_onion_keys<R: CryptoRng + ?Sized>(
    dir: &Path,
    identity: IdentityPublic,
    rng: &mut R,
) -> Result<RelayOnionKeys, KeyFileError> {
    let current = load_or_create_onion(dir, rng)?;
    let previous = load_previous_onion(dir)?;
    Ok(RelayOnionKeys::new(identity, current, previous))
}

/// Rotates the onion key on disk and in `keys`: the current key is written to
/// `onion_key.prev` (replacing any older one) and a fresh key to `onion_key`, each
/// atomically. Returns nothing secret; the caller certifies `keys.current()` next and
/// records its creation time ([`write_onion_key_meta`]).
///
/// Written from memory, not renamed, so a deleted `onion_key` cannot stop a rotation. A
/// crash between the two writes leaves the old key in both files; the next load then finds
/// it older than its record allows and rotates again, which is safe.
pub fn rotate_onion_key<R: CryptoRng + ?Sized>(
    dir: &Path,
    keys: &mut RelayOnionKeys,
    rng: &mut R,
) -> Result<(), KeyFileError> {
    let next = OnionKeypair::generate(rng);
    write_key_file(
        &dir.join(PREVIOUS_ONION_KEY_FILE),
        KeyType::Onion,
        &keys.current().secret_bytes(),
    )?;
    write_key_file(
        &dir.join(ONION_KEY_FILE),
        KeyType::Onion,
        &next.secret_bytes(),
    )?;
    keys.rotate(next);
    Ok(())
}

/// Reads `dir/onion_key.created`, if it exists (strictly: a malformed record is an error
/// naming the file).
pub fn read_onion_key_meta(dir: &Path) -> Result<Option<OnionKeyMeta>, KeyFileError> {
    let path = dir.join(ONION_KEY_META_FILE);
    let mut buf = [0u8; ONION_KEY_META_LEN + 1];
    let filled = match read_private_file(&path, &mut buf) {
        Ok(n) => n,
        Err(KeyFileError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = buf.get(..filled).unwrap_or_default();
    OnionKeyMeta::parse(bytes)
        .map(Some)
        .map_err(|source| KeyFileError::BadMeta { path, source })
}

/// Writes `dir/onion_key.created` (mode 0600, atomically).
pub fn write_onion_key_meta(dir: &Path, meta: &OnionKeyMeta) -> Result<(), KeyFileError> {
    write_private_file(&dir.join(ONION_KEY_META_FILE), &meta.encode())
}

/// When the onion key `current` was made, from its record in `dir`. With no record, or a
/// record of another key (the key file was deleted or replaced), the key is taken as made
/// `now` and a record saying so is written. A time after `now` (a clock that was wrong)
/// reads as `now`, so a rotation is never put off beyond one period.
pub fn load_onion_key_created(
    dir: &Path,
    current: &OnionPublic,
    now: u64,
) -> Result<u64, KeyFileError> {
    match read_onion_key_meta(dir)? {
        Some(meta) if meta.onion == *current => Ok(meta.created_unix.min(now)),
        _ => {
            let meta = OnionKeyMeta {
                onion: *current,
                created_unix: now,
            };
            write_onion_key_meta(dir, &meta)?;
            Ok(now)
        }
    }
}

/// Removes `onion_key.prev` (once its certificate has expired) and forgets it in `keys`.
pub fn drop_previous_onion_key(dir: &Path, keys: &mut RelayOnionKeys) -> Result<(), KeyFileError> {
    let prev_path = dir.join(PREVIOUS_ONION_KEY_FILE);
    // Forgotten in memory whatever happens to the file: a data directory that cannot be
    // written must not keep an old key accepted.
    keys.drop_previous();
    match fs::remove_file(&prev_path) {
        Ok(()) => sync_parent(&prev_path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&prev_path)(e)),
    }
}
