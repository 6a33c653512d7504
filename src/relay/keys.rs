//! Everything secret a relay holds, loaded together, and renewed in place while it runs
//! (`key_maintenance.rs` decides when, from `key_schedule.rs`).
//!
//! Readers take snapshots ([`RelayKeys::link_auth`], [`RelayKeys::onion_keys`]): a channel
//! or handshake in progress keeps the credentials it started with, and the next one sees
//! the renewed ones. Only the identity never changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::crypto::keyfile::{self, KeyFileError};
use crate::crypto::{
    IdentityKeypair, IdentityPublic, OnionKeyCert, OnionKeyMeta, OnionKeypair, RelayOnionKeys,
};
use crate::link::LinkAuth;
use crate::sync::{lock, read, write};

use super::key_schedule::{
    KeyTimes, LINK_CERT_LIFETIME, ONION_CERT_LIFETIME, PREVIOUS_ONION_KEY_GRACE,
    RETRY_AFTER_FAILURE,
};

/// A relay's keys: identity, onion keys (current and previous) with the current key's
/// certificate, and the link key with its certificate.
#[derive(Debug)]
pub struct RelayKeys {
    identity: IdentityKeypair,
    /// Where the identity and onion keys live; `None`: in memory only.
    dir: Option<PathBuf>,
    link: RwLock<Arc<LinkAuth>>,
    onion: RwLock<OnionState>,
    /// Held while renewing, so two renewals never interleave their file writes.
    renewing: Mutex<()>,
    descriptor_changed: Notify,
    link_cert_renewals: AtomicU64,
    onion_key_rotations: AtomicU64,
}

/// The onion keys with the current key's certificate and age, replaced as a whole.
#[derive(Debug, Clone)]
struct OnionState {
    keys: Arc<RelayOnionKeys>,
    cert: OnionKeyCert,
    /// When the current key was made (Unix seconds).
    created: u64,
}

impl RelayKeys {
    /// Fresh keys held only in memory (tests and the single-process test network).
    pub fn generate(clock: &Clock) -> Self {
        let mut rng = rand::rng();
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = RelayOnionKeys::new(identity.public(), OnionKeypair::generate(&mut rng), None);
        let now = clock.now_unix();
        Self::assemble(identity, onion, now, None, now)
    }

    /// Loads the identity and onion keys from `dir`, creating any that are missing (files
    /// mode 0600; a file that is malformed or readable by others is an error naming it).
    /// The current onion key's age comes from its record beside it (a key without one
    /// counts as made now).
    pub fn load_or_create(dir: &Path, clock: &Clock) -> Result<Self, KeyFileError> {
        let mut rng = rand::rng();
        let now = clock.now_unix();
        let identity = keyfile::load_or_create_identity(dir, &mut rng)?;
        let onion = keyfile::load_relay_onion_keys(dir, identity.public(), &mut rng)?;
        let created = keyfile::load_onion_key_created(dir, onion.current().public(), now)?;
        Ok(Self::assemble(
            identity,
            onion,
            created,
            Some(dir.to_path_buf()),
            now,
        ))
    }

    fn assemble(
        identity: IdentityKeypair,
        onion: RelayOnionKeys,
        created: u64,
        dir: Option<PathBuf>,
        now: u64,
    ) -> Self {
        let cert = sign_onion_cert(&identity, &onion, now);
        let link = new_link_auth(&identity, now);
        RelayKeys {
            identity,
            dir,
            link: RwLock::new(Arc::new(link)),
            onion: RwLock::new(OnionState {
                keys: Arc::new(onion),
                cert,
                created,
            }),
            renewing: Mutex::new(()),
            descriptor_changed: Notify::new(),
            link_cert_renewals: AtomicU64::new(0),
            onion_key_rotations: AtomicU64::new(0),
        }
    }

    /// The relay's public identity.
    pub fn identity(&self) -> IdentityPublic {
        self.identity.public()
    }

    /// The identity keypair (for signing descriptors).
    pub fn identity_keypair(&self) -> &IdentityKeypair {
        &self.identity
    }

    /// The onion keys accepted in circuit handshakes now (a snapshot).
    pub fn onion_keys(&self) -> Arc<RelayOnionKeys> {
        Arc::clone(&read(&self.onion).keys)
    }

    /// The certificate of the current onion key, as published in the descriptor.
    pub fn onion_cert(&self) -> OnionKeyCert {
        read(&self.onion).cert.clone()
    }

    /// When the current onion key was made (Unix seconds on the relay's clock).
    pub fn onion_key_created(&self) -> u64 {
        read(&self.onion).created
    }

    /// The link-handshake credentials for a new channel (a snapshot).
    pub fn link_auth(&self) -> Arc<LinkAuth> {
        Arc::clone(&read(&self.link))
    }

    /// Woken (one stored permit) when the onion key or its certificate changed, so the
    /// descriptor is republished at once.
    pub fn descriptor_changed(&self) -> &Notify {
        &self.descriptor_changed
    }

    /// Link certificates renewed since start.
    pub fn link_cert_renewals(&self) -> u64 {
        self.link_cert_renewals.load(Ordering::Relaxed)
    }

    /// Onion keys rotated since start.
    pub fn onion_key_rotations(&self) -> u64 {
        self.onion_key_rotations.load(Ordering::Relaxed)
    }

    /// The times the schedule depends on.
    pub(crate) fn times(&self) -> KeyTimes {
        let onion = read(&self.onion);
        KeyTimes {
            link_cert_expires: read(&self.link).cert().expires(),
            onion_key_created: onion.created,
            onion_cert_expires: onion.cert.expires_unix(),
            has_previous_onion_key: onion.keys.previous().is_some(),
        }
    }

    /// Renews whatever is due at `now` and returns when to look again.
    pub(crate) fn maintain(&self, now: u64) -> u64 {
        let _renewing = lock(&self.renewing);
        // A clock that ran ahead and was set back: the key's age counts from now, not from
        // a time that has not come, or its rotation would wait for the whole difference.
        {
            let mut onion = write(&self.onion);
            if onion.created > now {
                onion.created = now;
            }
        }
        let due = self.times().due(now);
        if due.renew_link_cert {
            self.renew_link_cert(now);
        }
        let (mut rotated, mut failed) = (false, false);
        if due.rotate_onion_key {
            rotated = self.rotate_onion_key(now).is_ok();
            failed = !rotated;
        }
        // A rotation replaced the previous key and signed a fresh certificate; without one
        // (or when it failed) each is done on its own schedule.
        if due.drop_previous_onion_key && !rotated {
            failed |= self.drop_previous_onion_key().is_err();
        }
        if due.resign_onion_cert && !rotated {
            self.resign_onion_cert(now);
        }
        if failed {
            // The failed step is still due: try again later, not in a tight loop.
            return now.saturating_add(RETRY_AFTER_FAILURE);
        }
        // Never sooner than a second from now: a clock stuck at 0 cannot spin us.
        self.times().next_due().max(now.saturating_add(1))
    }

    fn renew_link_cert(&self, now: u64) {
        let link = new_link_auth(&self.identity, now);
        let expires = link.cert().expires();
        *write(&self.link) = Arc::new(link);
        self.link_cert_renewals.fetch_add(1, Ordering::Relaxed);
        info!("relay: new link key certified (valid until {expires})");
    }

    fn rotate_onion_key(&self, now: u64) -> Result<(), KeyFileError> {
        let mut keys = RelayOnionKeys::clone(&read(&self.onion).keys);
        let mut rng = rand::rng();
        match &self.dir {
            Some(dir) => {
                let written = keyfile::rotate_onion_key(dir, &mut keys, &mut rng).and_then(|()| {
                    let meta = OnionKeyMeta {
                        onion: *keys.current().public(),
                        created_unix: now,
                    };
                    keyfile::write_onion_key_meta(dir, &meta)
                });
                if let Err(e) = written {
                    warn!("relay: onion-key rotation failed, will retry: {e}");
                    return Err(e);
                }
            }
            None => keys.rotate(OnionKeypair::generate(&mut rng)),
        }
        let cert = sign_onion_cert(&self.identity, &keys, now);
        *write(&self.onion) = OnionState {
            keys: Arc::new(keys),
            cert,
            created: now,
        };
        self.onion_key_rotations.fetch_add(1, Ordering::Relaxed);
        self.descriptor_changed.notify_one();
        info!(
            "relay: onion key rotated; the previous one is accepted until {}",
            now.saturating_add(PREVIOUS_ONION_KEY_GRACE)
        );
        Ok(())
    }

    fn drop_previous_onion_key(&self) -> Result<(), KeyFileError> {
        let mut state = read(&self.onion).clone();
        let mut keys = RelayOnionKeys::clone(&state.keys);
        let removed = match &self.dir {
            // Forgets the key in memory even when the file cannot be removed.
            Some(dir) => keyfile::drop_previous_onion_key(dir, &mut keys),
            None => {
                keys.drop_previous();
                Ok(())
            }
        };
        state.keys = Arc::new(keys);
        *write(&self.onion) = state;
        info!("relay: previous onion key dropped (no longer accepted)");
        if let Err(e) = &removed {
            // Loading drops an expired previous key again, so a restart cannot revive it.
            warn!("relay: could not remove the previous onion key's file: {e}");
        }
        removed
    }

    fn resign_onion_cert(&self, now: u64) {
        let mut state = read(&self.onion).clone();
        state.cert = sign_onion_cert(&self.identity, &state.keys, now);
        let expires = state.cert.expires_unix();
        *write(&self.onion) = state;
        self.descriptor_changed.notify_one();
        info!("relay: onion-key certificate re-signed (valid until {expires})");
    }
}

fn sign_onion_cert(identity: &IdentityKeypair, onion: &RelayOnionKeys, now: u64) -> OnionKeyCert {
    OnionKeyCert::sign(
        identity,
        onion.current().public(),
        now.saturating_add(ONION_CERT_LIFETIME),
    )
}

fn new_link_auth(identity: &IdentityKeypair, now: u64) -> LinkAuth {
    LinkAuth::generate(
        identity.signing_key(),
        &mut rand::rng(),
        now,
        LINK_CERT_LIFETIME,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::key_schedule::ONION_KEY_ROTATION;
    use std::time::{Duration, UNIX_EPOCH};

    const DAY: u64 = 86_400;
    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_failed_rotation_is_retried_later_and_the_certificate_still_renewed() {
        let dir = std::env::temp_dir().join(format!("allium-keys-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(T0));
        let keys = RelayKeys::load_or_create(&dir, &clock).expect("keys");
        let first = *keys.onion_keys().current().public();
        // The data directory is replaced by a file: every write fails, even as root.
        std::fs::remove_dir_all(&dir).expect("rm");
        std::fs::write(&dir, b"not a directory").expect("file");

        let late = T0 + 22 * DAY;
        assert_eq!(keys.maintain(late), late + RETRY_AFTER_FAILURE);
        assert_eq!(keys.onion_key_rotations(), 0);
        assert_eq!(
            keys.onion_keys().current().public(),
            &first,
            "still the old key"
        );
        assert!(
            keys.onion_cert().verify(late + 20 * DAY).is_ok(),
            "re-signed anyway"
        );
        assert!(keys.link_auth().cert().expires() > late);

        std::fs::remove_file(&dir).expect("rm file");
        std::fs::create_dir(&dir).expect("mkdir");
        let later = late + RETRY_AFTER_FAILURE;
        // Next: the link key renewed at `late`, two days on.
        assert_eq!(keys.maintain(later), late + 2 * DAY);
        assert_eq!(keys.onion_key_rotations(), 1);
        assert_eq!(keys.onion_key_created(), later);
        assert!(dir.join(keyfile::PREVIOUS_ONION_KEY_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_clock_that_ran_a_year_ahead_and_was_set_back_shortens_no_lifetime() {
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(T0));
        let keys = RelayKeys::generate(&clock);
        let ahead = T0 + 365 * DAY;
        // Everything is overdue a year on: new link key, rotation, certificates from then.
        keys.maintain(ahead);
        assert_eq!(keys.onion_key_created(), ahead);
        let leaked_link = keys.link_auth();
        let stolen_onion = *keys.onion_keys().current().public();

        // Set back to the true time: certificates issued "in the future" are replaced now,
        // the key's age counts from now, and the previous key's grace ends a week from now.
        let next = keys.maintain(T0);
        assert!(keys.link_auth().cert().expires() <= T0 + LINK_CERT_LIFETIME.as_secs());
        assert_ne!(
            keys.link_auth().static_public(),
            leaked_link.static_public()
        );
        assert!(keys.onion_cert().expires_unix() <= T0 + ONION_CERT_LIFETIME);
        assert_eq!(keys.onion_key_created(), T0);
        assert!(next <= T0 + PREVIOUS_ONION_KEY_GRACE);
        keys.maintain(T0 + ONION_KEY_ROTATION);
        keys.maintain(T0 + ONION_KEY_ROTATION + PREVIOUS_ONION_KEY_GRACE);
        assert!(
            keys.onion_keys().find(&stolen_onion).is_none(),
            "the key made while the clock ran ahead is gone three weeks after the fix"
        );
    }

    #[test]
    fn an_unremovable_previous_key_file_is_forgotten_in_memory_anyway() {
        let dir = std::env::temp_dir().join(format!("allium-keys-prev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(T0));
        let keys = RelayKeys::load_or_create(&dir, &clock).expect("keys");
        keys.maintain(T0 + ONION_KEY_ROTATION);
        let previous = *keys.onion_keys().previous().expect("previous").public();
        // onion_key.prev replaced by a non-empty directory: it cannot be removed.
        let prev = dir.join(keyfile::PREVIOUS_ONION_KEY_FILE);
        std::fs::remove_file(&prev).expect("rm");
        std::fs::create_dir_all(prev.join("x")).expect("mkdir");
        keys.maintain(T0 + ONION_KEY_ROTATION + PREVIOUS_ONION_KEY_GRACE);
        assert!(keys.onion_keys().find(&previous).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
