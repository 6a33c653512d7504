//! Key files: creation mode, strict loading, rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use allium::crypto::keyfile::{
    drop_previous_onion_key, load_onion_key_created, load_or_create_identity, load_or_create_onion,
    load_relay_onion_keys, read_key_file, read_onion_key_meta, rotate_onion_key, write_key_file,
    write_onion_key_meta, KeyFileError, KeyType, IDENTITY_KEY_FILE, KEY_FILE_LEN, ONION_KEY_FILE,
    ONION_KEY_META_FILE, PREVIOUS_ONION_KEY_FILE,
};
use allium::crypto::onion_key_meta::ONION_KEY_META_LEN;
use allium::crypto::{OnionKeyMeta, OnionKeyMetaError, OnionPublic};
use proptest::prelude::*;

/// A fresh, empty directory under the system temp dir (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "allium-keyfile-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn create_then_load_is_stable_and_private() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    let id1 = load_or_create_identity(&dir.0, &mut rng).expect("create");
    let id2 = load_or_create_identity(&dir.0, &mut rng).expect("load");
    assert_eq!(id1.public(), id2.public());
    let on1 = load_or_create_onion(&dir.0, &mut rng).expect("create");
    let on2 = load_or_create_onion(&dir.0, &mut rng).expect("load");
    assert_eq!(on1.public(), on2.public());
    assert_eq!(mode(&dir.0.join(IDENTITY_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.0.join(ONION_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.0), 0o700);
    let raw = fs::read(dir.0.join(IDENTITY_KEY_FILE)).expect("read");
    assert_eq!(raw.len(), KEY_FILE_LEN);
    assert_eq!(&raw[..9], b"ALLIUMK1\x01");
}

#[test]
fn strict_loading_errors_name_the_file() {
    let dir = TempDir::new();
    fs::create_dir_all(&dir.0).expect("mkdir");
    let path = dir.0.join("k");
    write_key_file(&path, KeyType::Onion, &[7; 32]).expect("write");
    assert_eq!(
        *read_key_file(&path, KeyType::Onion).expect("read"),
        [7; 32]
    );

    let check = |err: KeyFileError, needle: &str| {
        let msg = err.to_string();
        assert!(msg.contains(path.to_str().expect("utf8")), "{msg}");
        assert!(msg.contains(needle), "{msg}");
    };

    // Wrong type.
    match read_key_file(&path, KeyType::Identity) {
        Err(e @ KeyFileError::WrongKeyType { .. }) => check(e, "wrong key type"),
        other => panic!("unexpected {other:?}"),
    }

    // Group/world readable.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    match read_key_file(&path, KeyType::Onion) {
        Err(e @ KeyFileError::InsecurePermissions { .. }) => check(e, "insecure permissions"),
        other => panic!("unexpected {other:?}"),
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).expect("chmod");
    assert!(matches!(
        read_key_file(&path, KeyType::Onion),
        Err(KeyFileError::InsecurePermissions { .. })
    ));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");

    let good = fs::read(&path).expect("read");
    // Wrong lengths: short, long, empty.
    for bad in [&good[..40], &[good.as_slice(), b"x"].concat()[..], &[][..]] {
        fs::write(&path, bad).expect("write");
        match read_key_file(&path, KeyType::Onion) {
            Err(e @ KeyFileError::BadLength { .. }) => check(e, "wrong length"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Bad magic.
    let mut bad = good.clone();
    bad[0] ^= 1;
    fs::write(&path, &bad).expect("write");
    match read_key_file(&path, KeyType::Onion) {
        Err(e @ KeyFileError::BadMagic { .. }) => check(e, "bad magic"),
        other => panic!("unexpected {other:?}"),
    }
    // Missing file, and a directory instead of a file.
    assert!(matches!(
        read_key_file(&dir.0.join("nope"), KeyType::Onion),
        Err(KeyFileError::Missing { .. })
    ));
    let sub = dir.0.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(matches!(
        read_key_file(&sub, KeyType::Onion),
        Err(KeyFileError::NotAFile { .. }) | Err(KeyFileError::Io { .. })
    ));
}

#[test]
fn corrupt_identity_file_is_not_replaced() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    load_or_create_identity(&dir.0, &mut rng).expect("create");
    let path = dir.0.join(IDENTITY_KEY_FILE);
    fs::write(&path, b"garbage").expect("write");
    assert!(matches!(
        load_or_create_identity(&dir.0, &mut rng),
        Err(KeyFileError::BadLength { .. })
    ));
    assert_eq!(fs::read(&path).expect("read"), b"garbage");
}

#[test]
fn rotation_on_disk() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    let id = load_or_create_identity(&dir.0, &mut rng).expect("id");
    let mut keys = load_relay_onion_keys(&dir.0, id.public(), &mut rng).expect("keys");
    assert!(keys.previous().is_none());
    let first = *keys.current().public();
    rotate_onion_key(&dir.0, &mut keys, &mut rng).expect("rotate");
    let second = *keys.current().public();
    assert_ne!(first, second);
    assert_eq!(keys.previous().map(|k| *k.public()), Some(first));
    assert_eq!(mode(&dir.0.join(PREVIOUS_ONION_KEY_FILE)), 0o600);

    let reloaded = load_relay_onion_keys(&dir.0, id.public(), &mut rng).expect("reload");
    assert_eq!(*reloaded.current().public(), second);
    assert_eq!(reloaded.previous().map(|k| *k.public()), Some(first));

    drop_previous_onion_key(&dir.0, &mut keys).expect("drop");
    assert!(keys.previous().is_none());
    assert!(!dir.0.join(PREVIOUS_ONION_KEY_FILE).exists());
}

#[test]
fn rotation_works_after_the_current_key_file_was_deleted() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    let id = load_or_create_identity(&dir.0, &mut rng).expect("id");
    let mut keys = load_relay_onion_keys(&dir.0, id.public(), &mut rng).expect("keys");
    let first = *keys.current().public();
    fs::remove_file(dir.0.join(ONION_KEY_FILE)).expect("rm");
    rotate_onion_key(&dir.0, &mut keys, &mut rng).expect("rotate from memory");
    let reloaded = load_relay_onion_keys(&dir.0, id.public(), &mut rng).expect("reload");
    assert_eq!(reloaded.current().public(), keys.current().public());
    assert_eq!(reloaded.previous().map(|k| *k.public()), Some(first));
}

#[test]
fn the_onion_key_record_keeps_the_age_of_its_own_key_only() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    let onion = *load_or_create_onion(&dir.0, &mut rng)
        .expect("onion")
        .public();
    assert_eq!(read_onion_key_meta(&dir.0).expect("read"), None);
    // No record: the key counts as made now, and that is written down.
    assert_eq!(
        load_onion_key_created(&dir.0, &onion, 1000).expect("age"),
        1000
    );
    assert_eq!(mode(&dir.0.join(ONION_KEY_META_FILE)), 0o600);
    assert_eq!(
        load_onion_key_created(&dir.0, &onion, 5000).expect("age"),
        1000
    );
    // A time after now (a clock that was wrong) reads as now.
    assert_eq!(
        load_onion_key_created(&dir.0, &onion, 500).expect("age"),
        500
    );
    // A record of another key (the key file was replaced) does not apply.
    let other = OnionPublic::from_bytes([9; 32]);
    assert_eq!(
        load_onion_key_created(&dir.0, &other, 7000).expect("age"),
        7000
    );
    assert_eq!(
        read_onion_key_meta(&dir.0).expect("read"),
        Some(OnionKeyMeta {
            onion: other,
            created_unix: 7000
        })
    );
}

#[test]
fn a_malformed_or_exposed_onion_key_record_is_an_error_naming_it() {
    let dir = TempDir::new();
    fs::create_dir_all(&dir.0).expect("mkdir");
    let path = dir.0.join(ONION_KEY_META_FILE);
    let meta = OnionKeyMeta {
        onion: OnionPublic::from_bytes([3; 32]),
        created_unix: 42,
    };
    write_onion_key_meta(&dir.0, &meta).expect("write");
    let mut raw = fs::read(&path).expect("read");
    raw.push(0);
    fs::write(&path, &raw).expect("write");
    match read_onion_key_meta(&dir.0) {
        Err(e @ KeyFileError::BadMeta { .. }) => {
            assert!(e.to_string().contains(ONION_KEY_META_FILE), "{e}")
        }
        other => panic!("expected BadMeta, got {other:?}"),
    }
    write_onion_key_meta(&dir.0, &meta).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        read_onion_key_meta(&dir.0),
        Err(KeyFileError::InsecurePermissions { .. })
    ));
}

#[test]
fn onion_key_meta_seeds_parse_and_reencode() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/onion_key_meta");
    let mut n = 0;
    for entry in fs::read_dir(&seeds).expect("seeds") {
        let bytes = fs::read(entry.expect("entry").path()).expect("read");
        let meta = OnionKeyMeta::parse(&bytes).expect("seed parses");
        assert_eq!(meta.encode().to_vec(), bytes);
        n += 1;
    }
    assert!(n >= 1);
}

proptest! {
    #[test]
    fn onion_key_meta_encode_then_parse(key in any::<[u8; 32]>(), created in any::<u64>()) {
        let meta = OnionKeyMeta { onion: OnionPublic::from_bytes(key), created_unix: created };
        let bytes = meta.encode();
        prop_assert_eq!(bytes.len(), ONION_KEY_META_LEN);
        prop_assert_eq!(OnionKeyMeta::parse(&bytes), Ok(meta));
    }

    #[test]
    fn onion_key_meta_parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        match OnionKeyMeta::parse(&bytes) {
            Ok(meta) => prop_assert_eq!(meta.encode().to_vec(), bytes),
            Err(OnionKeyMetaError::BadLength(n)) => {
                prop_assert_eq!(n, bytes.len());
                prop_assert_ne!(n, ONION_KEY_META_LEN);
            }
            Err(OnionKeyMetaError::BadMagic) => prop_assert_ne!(&bytes[..8], b"ALLIUMT1"),
        }
    }
}
