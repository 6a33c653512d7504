//! The tokens that let an authority's own bandwidth scanner download filler from the
//! authority (GET_MEASUREMENT, `docs/protocol.md` §6.15.1). Only a token the scanner issued in
//! this process, for a measurement in progress, is answered; anyone else is refused, so no
//! client can make an authority send bulk data.

use std::collections::HashMap;

use crate::clock::Clock;
use crate::dir::request::{DirResponse, DirStatus, MAX_MEASUREMENT_CHUNK};
use crate::sync::lock;

/// A token lives at most this long (seconds), even if its measurement never ends.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 60;
/// Most measurements in progress at once (a scanner runs a handful in parallel).
pub(crate) const MAX_TOKENS: usize = 64;

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IssueError {
    /// [`MAX_TOKENS`] measurements are already in progress.
    #[error("too many measurements in progress")]
    Full,
}

#[derive(Debug)]
struct Grant {
    issued_at: u64,
    /// Bytes still to be served under this token: a leaked token is worth no more than
    /// the one measurement it was issued for.
    remaining: u64,
}

/// The table of live tokens, bounded by [`MAX_TOKENS`].
#[derive(Debug)]
pub(crate) struct MeasureTokens {
    clock: Clock,
    grants: std::sync::Mutex<HashMap<[u8; 16], Grant>>,
}

impl MeasureTokens {
    /// An empty table reading time from `clock`.
    pub(crate) fn new(clock: Clock) -> Self {
        MeasureTokens {
            clock,
            grants: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether a grant issued at `issued_at` is over at `now` (also when the clock went
    /// back past its issue: its age is then unknown).
    fn expired(issued_at: u64, now: u64) -> bool {
        now < issued_at || now - issued_at >= TOKEN_LIFETIME_SECS
    }

    /// A fresh random token good for `budget` bytes over at most [`TOKEN_LIFETIME_SECS`].
    pub(crate) fn issue(&self, budget: u64) -> Result<[u8; 16], IssueError> {
        let now = self.clock.now_unix();
        let mut grants = lock(&self.grants);
        grants.retain(|_, g| !Self::expired(g.issued_at, now));
        if grants.len() >= MAX_TOKENS {
            return Err(IssueError::Full);
        }
        let token: [u8; 16] = rand::random();
        grants.insert(
            token,
            Grant {
                issued_at: now,
                remaining: budget,
            },
        );
        Ok(token)
    }

    /// Ends the measurement of `token`: nothing more is served under it.
    pub(crate) fn revoke(&self, token: &[u8; 16]) {
        lock(&self.grants).remove(token);
    }

    /// Tokens live now (expired ones count until the next `issue` sweeps them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.grants).len()
    }

    /// Answers GET_MEASUREMENT: `len` zero bytes (every relay cell is encrypted, so the
    /// content does not matter) if `token` is live and has that many bytes left, else
    /// REFUSED.
    pub(crate) fn serve(&self, token: &[u8; 16], len: u32) -> DirResponse {
        if len == 0 || len > MAX_MEASUREMENT_CHUNK {
            return DirResponse::error(DirStatus::BadRequest, "bad measurement length");
        }
        let now = self.clock.now_unix();
        let mut grants = lock(&self.grants);
        let Some(grant) = grants.get_mut(token) else {
            return DirResponse::error(DirStatus::Refused, "no such measurement");
        };
        if Self::expired(grant.issued_at, now) {
            grants.remove(token);
            return DirResponse::error(DirStatus::Refused, "no such measurement");
        }
        let Some(left) = grant.remaining.checked_sub(u64::from(len)) else {
            return DirResponse::error(DirStatus::Refused, "measurement budget spent");
        };
        grant.remaining = left;
        drop(grants);
        // `len` ≤ 1 MiB was checked above.
        DirResponse::ok(vec![0; usize::try_from(len).unwrap_or(0)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn table() -> (Clock, MeasureTokens) {
        let clock = Clock::simulated(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        (clock.clone(), MeasureTokens::new(clock))
    }

    #[tokio::test(start_paused = true)]
    async fn serves_only_its_own_live_tokens_within_budget() {
        let (_clock, t) = table();
        let token = t.issue(3000).unwrap();
        let resp = t.serve(&token, 1000);
        assert_eq!(resp.status, DirStatus::Ok);
        assert_eq!(resp.body.len(), 1000);
        assert_eq!(t.serve(&token, 2000).status, DirStatus::Ok);
        // The budget is spent: a leaked token buys nothing more.
        assert_eq!(t.serve(&token, 1).status, DirStatus::Refused);
        // A guessed token, however close to a real one.
        let mut other = t.issue(1 << 20).unwrap();
        other[0] ^= 1;
        assert_eq!(t.serve(&other, 10).status, DirStatus::Refused);
        assert_eq!(t.serve(&[0; 16], 10).status, DirStatus::Refused);
        // Revoked when the measurement ends.
        let token = t.issue(1 << 20).unwrap();
        t.revoke(&token);
        assert_eq!(t.serve(&token, 10).status, DirStatus::Refused);
        assert_eq!(
            t.serve(&token, MAX_MEASUREMENT_CHUNK + 1).status,
            DirStatus::BadRequest
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_on_the_clock() {
        let (clock, t) = table();
        let token = t.issue(1 << 20).unwrap();
        tokio::time::sleep(Duration::from_secs(TOKEN_LIFETIME_SECS - 1)).await;
        assert_eq!(t.serve(&token, 10).status, DirStatus::Ok);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(t.serve(&token, 10).status, DirStatus::Refused);
        // A clock set back past the issue ends the token too (its age is unknown).
        let token = t.issue(1 << 20).unwrap();
        clock.jump_back(Duration::from_secs(5));
        assert_eq!(t.serve(&token, 10).status, DirStatus::Refused);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_expired_tokens_make_room() {
        let (_clock, t) = table();
        for _ in 0..MAX_TOKENS {
            t.issue(1).unwrap();
        }
        assert_eq!(t.issue(1), Err(IssueError::Full));
        assert_eq!(t.len(), MAX_TOKENS);
        tokio::time::sleep(Duration::from_secs(TOKEN_LIFETIME_SECS)).await;
        t.issue(1).unwrap();
        assert_eq!(t.len(), 1);
    }
}
