//! When a relay renews its keys: every lifetime and margin in one place, and the pure
//! decision of what is due at a given wall time (the maintenance task acts on it).
//!
//! | What                   | Lifetime | Renewed                                          |
//! |------------------------|----------|--------------------------------------------------|
//! | link key + certificate | 7 days   | fresh key when under 5 days remain (every 2 days) |
//! | onion key              | -        | rotated 14 days after it was made                |
//! | onion-key certificate  | 28 days  | with each rotation; re-signed if under 7 days remain |
//! | previous onion key     | -        | accepted 7 days after the rotation, then dropped |

use std::time::Duration;

use crate::crypto::cert::DEFAULT_ONION_KEY_LIFETIME_SECS;

const DAY: u64 = 24 * 3600;

/// Lifetime of a link-key certificate.
pub const LINK_CERT_LIFETIME: Duration = Duration::from_secs(7 * DAY);
/// A fresh link key is certified once the current certificate has less than this left:
/// peers whose clocks run up to days fast still accept it.
pub const LINK_CERT_RENEW_BEFORE: u64 = 5 * DAY;
/// Age at which the onion key is replaced.
pub const ONION_KEY_ROTATION: u64 = 14 * DAY;
/// Lifetime of an onion-key certificate.
pub const ONION_CERT_LIFETIME: u64 = DEFAULT_ONION_KEY_LIFETIME_SECS;
/// The onion-key certificate is re-signed once it has less than this left (only happens
/// when a rotation is late: a rotation signs a fresh one).
pub const ONION_CERT_RENEW_BEFORE: u64 = 7 * DAY;
/// How long the previous onion key is still accepted after a rotation. A consensus naming
/// it is valid for at most three periods and clients refresh well before; a week is
/// generous for clients that were offline.
pub const PREVIOUS_ONION_KEY_GRACE: u64 = 7 * DAY;
/// How soon a failed renewal (a disk error) is tried again.
pub const RETRY_AFTER_FAILURE: u64 = 600;
/// How far a clock may have run ahead when a certificate was issued before the certificate
/// counts as issued in the future (and is replaced): small steps back (NTP) renew nothing.
pub const FUTURE_TOLERANCE: u64 = DAY;

/// The times the schedule depends on (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimes {
    /// Expiry of the current link-key certificate.
    pub link_cert_expires: u64,
    /// When the current onion key was made (so also when the previous one was retired).
    pub onion_key_created: u64,
    /// Expiry of the current onion key's certificate.
    pub onion_cert_expires: u64,
    /// Whether a previous onion key is still accepted.
    pub has_previous_onion_key: bool,
}

/// What is due now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Make and certify a fresh link key.
    pub renew_link_cert: bool,
    /// Replace the onion key (which also signs a fresh certificate and retires the old
    /// previous key, so the two below are then done too).
    pub rotate_onion_key: bool,
    /// Stop accepting the previous onion key (unless a rotation just replaced it).
    pub drop_previous_onion_key: bool,
    /// Re-sign the current onion key's certificate (unless a rotation just did): also
    /// when the rotation is due but failed, so the key in use never goes uncertified.
    pub resign_onion_cert: bool,
}

impl Due {
    /// Whether anything is due.
    pub fn any(&self) -> bool {
        self.renew_link_cert
            || self.rotate_onion_key
            || self.drop_previous_onion_key
            || self.resign_onion_cert
    }
}

impl KeyTimes {
    fn link_renew_at(&self) -> u64 {
        self.link_cert_expires
            .saturating_sub(LINK_CERT_RENEW_BEFORE)
    }

    fn rotate_at(&self) -> u64 {
        self.onion_key_created.saturating_add(ONION_KEY_ROTATION)
    }

    fn drop_previous_at(&self) -> Option<u64> {
        self.has_previous_onion_key.then(|| {
            self.onion_key_created
                .saturating_add(PREVIOUS_ONION_KEY_GRACE)
        })
    }

    fn resign_at(&self) -> u64 {
        self.onion_cert_expires
            .saturating_sub(ONION_CERT_RENEW_BEFORE)
    }

    /// What is due at `now`. A wall clock that went back makes nothing due early; one that
    /// jumped forward makes everything overdue due at once (each done once, not once per
    /// missed period).
    ///
    /// A certificate that outlives `now` by more than its lifetime (plus
    /// [`FUTURE_TOLERANCE`]) was issued while the clock ran ahead: it is renewed at once, so a clock set back never stretches how long
    /// a key stays certified.
    pub fn due(&self, now: u64) -> Due {
        let horizon = now.saturating_add(FUTURE_TOLERANCE);
        let link_from_future =
            self.link_cert_expires > horizon.saturating_add(LINK_CERT_LIFETIME.as_secs());
        let onion_from_future =
            self.onion_cert_expires > horizon.saturating_add(ONION_CERT_LIFETIME);
        Due {
            renew_link_cert: now >= self.link_renew_at() || link_from_future,
            rotate_onion_key: now >= self.rotate_at(),
            drop_previous_onion_key: self.drop_previous_at().is_some_and(|t| now >= t),
            resign_onion_cert: now >= self.resign_at() || onion_from_future,
        }
    }

    /// The earliest time something becomes due.
    pub fn next_due(&self) -> u64 {
        [
            Some(self.link_renew_at()),
            Some(self.rotate_at()),
            self.drop_previous_at(),
            Some(self.resign_at()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn fresh(now: u64) -> KeyTimes {
        KeyTimes {
            link_cert_expires: now + LINK_CERT_LIFETIME.as_secs(),
            onion_key_created: now,
            onion_cert_expires: now + ONION_CERT_LIFETIME,
            has_previous_onion_key: false,
        }
    }

    #[test]
    fn fresh_keys_are_next_due_for_a_link_renewal_after_two_days() {
        let t = fresh(T0);
        assert!(!t.due(T0).any());
        assert_eq!(t.next_due(), T0 + 2 * DAY);
        assert_eq!(
            t.due(T0 + 2 * DAY),
            Due {
                renew_link_cert: true,
                ..Due::default()
            }
        );
    }

    #[test]
    fn a_rotation_is_due_at_fourteen_days_and_the_previous_key_goes_a_week_later() {
        let mut t = fresh(T0);
        t.link_cert_expires = u64::MAX;
        assert_eq!(t.next_due(), T0 + ONION_KEY_ROTATION);
        assert!(t.due(T0 + ONION_KEY_ROTATION).rotate_onion_key);
        let rotated = KeyTimes {
            onion_key_created: T0 + ONION_KEY_ROTATION,
            onion_cert_expires: T0 + ONION_KEY_ROTATION + ONION_CERT_LIFETIME,
            has_previous_onion_key: true,
            ..t
        };
        let drop_at = T0 + ONION_KEY_ROTATION + PREVIOUS_ONION_KEY_GRACE;
        assert_eq!(rotated.next_due(), drop_at);
        // (The link certificate is left out: it never expires in this test.)
        let onion_only = |d: Due| Due {
            renew_link_cert: false,
            ..d
        };
        assert!(!onion_only(rotated.due(drop_at - 1)).any());
        assert_eq!(
            onion_only(rotated.due(drop_at)),
            Due {
                drop_previous_onion_key: true,
                ..Due::default()
            }
        );
    }

    #[test]
    fn a_certificate_close_to_expiry_is_re_signed_even_without_a_rotation() {
        let t = KeyTimes {
            link_cert_expires: u64::MAX,
            onion_key_created: T0,
            onion_cert_expires: T0 + 10 * DAY,
            has_previous_onion_key: false,
        };
        assert_eq!(t.next_due(), T0 + 3 * DAY);
        assert!(t.due(T0 + 3 * DAY).resign_onion_cert);
    }

    #[test]
    fn a_clock_set_back_a_little_makes_nothing_due() {
        let t = fresh(T0);
        assert!(!t.due(T0 - 600).any());
        assert!(!t.due(T0 - DAY).any());
    }

    #[test]
    fn a_clock_set_back_far_replaces_certificates_from_the_future_only() {
        // Issued while the clock ran 30 days ahead: each outlives now by more than its
        // lifetime, so it is replaced; the key's rotation and grace are not due early.
        let t = fresh(T0);
        for now in [T0 - 30 * DAY, T0 - FUTURE_TOLERANCE - 1, 0] {
            assert_eq!(
                t.due(now),
                Due {
                    renew_link_cert: true,
                    resign_onion_cert: true,
                    ..Due::default()
                }
            );
        }
    }
}
