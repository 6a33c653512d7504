//! Wall-clock time as the protocol uses it: whole seconds since the Unix epoch. Every
//! conversion of wall time to protocol seconds goes through here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now_unix() -> u64 {
    to_unix(SystemTime::now())
}

/// `t` in whole seconds since the Unix epoch (0 for a time before 1970, so a clock set
/// before 1970 makes certificates look unexpired rather than panicking; a certificate
/// still needs a valid signature).
pub fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whole_seconds_and_zero_before_the_epoch() {
        assert_eq!(to_unix(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(to_unix(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(now_unix() > 1_600_000_000);
    }
}
