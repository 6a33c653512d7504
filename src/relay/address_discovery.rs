//! Learning this relay's public address from the directory authorities, for a relay that
//! listens on an unspecified address (`0.0.0.0` / `::`) and has no `advertise`.
//!
//! Each authority's NETINFO names the address it sees our connection come from
//! (docs/protocol.md §5.6). We take the address that a strict majority of the *configured*
//! authorities report, so authorities that lie (or see us through some other route) can
//! move it only if they are a majority, the same trust the consensus itself rests on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::dir::AuthorityInfo;
use crate::link::{self, LinkConfig};

/// Time each authority has to complete the link handshake.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two "cannot learn" warnings: retries are quieter than that.
const WARN_EVERY_SECS: u64 = 300;

/// What the authorities said about our address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressVerdict {
    /// A strict majority of the configured authorities report this address.
    Agreed(IpAddr),
    /// No address has a majority.
    NoMajority {
        /// How many authorities completed the handshake.
        answered: usize,
        /// How many are configured.
        configured: usize,
    },
}

impl std::fmt::Display for AddressVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressVerdict::Agreed(ip) => write!(f, "the authorities agree on {ip}"),
            AddressVerdict::NoMajority { answered: 0, .. } => f.write_str("none answered"),
            AddressVerdict::NoMajority {
                answered,
                configured,
            } => write!(
                f,
                "{answered} of {configured} answered, no address reported by a majority: they disagree or too few answered"
            ),
        }
    }
}

/// The address a strict majority of `configured` authorities report in `answers` (one
/// entry per authority that answered).
pub fn majority_address(answers: &[IpAddr], configured: usize) -> AddressVerdict {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for ip in answers {
        *counts.entry(*ip).or_default() += 1;
    }
    match counts.into_iter().max_by_key(|(_, n)| *n) {
        Some((ip, n)) if n * 2 > configured => AddressVerdict::Agreed(ip),
        _ => AddressVerdict::NoMajority {
            answered: answers.len(),
            configured,
        },
    }
}

/// Opens a link channel to each authority (as a client: no identity is shown, and our
/// NETINFO carries no clock) and returns the address each one reports for us.
pub async fn ask_authorities(authorities: &[AuthorityInfo], clock: &Clock) -> Vec<IpAddr> {
    let mut tasks = JoinSet::new();
    for a in authorities {
        let a = *a;
        let cfg = LinkConfig {
            handshake_timeout: ASK_TIMEOUT,
            clock: clock.clone(),
            ..LinkConfig::default()
        };
        tasks.spawn(async move {
            let expected = a.identity.to_verifying_key().ok()?;
            let chan = link::connect(a.addr, &expected, None, &cfg).await.ok()?;
            // An authority listening on a dual-stack socket sees IPv4 peers as
            // ::ffff:a.b.c.d: advertise the IPv4 address itself.
            let seen = chan.seen_as.ip().to_canonical();
            chan.sender.close();
            Some(seen)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(ip)) = joined {
            out.push(ip);
        }
    }
    out
}

/// Asks every authority and takes the majority answer.
pub async fn learn_public_ip(authorities: &[AuthorityInfo], clock: &Clock) -> AddressVerdict {
    let answers = ask_authorities(authorities, clock).await;
    majority_address(&answers, authorities.len())
}

/// The address to put in the descriptor: the configured one, or, when that is
/// unspecified, the one learned from the authorities at each publish round.
#[derive(Debug)]
pub(crate) struct AdvertisedAddress {
    configured: SocketAddr,
    learned: Option<IpAddr>,
    last_warning: Option<u64>,
}

impl AdvertisedAddress {
    /// `configured`: `advertise`, or the listen address when it is not set.
    pub(crate) fn new(configured: SocketAddr) -> Self {
        AdvertisedAddress {
            configured,
            learned: None,
            last_warning: None,
        }
    }

    /// The address to publish now, re-learned from the authorities if it is not
    /// configured; `None` if it has never been learned. Logs when the learned address
    /// changes, and warns (at most every few minutes) when it cannot be learned.
    pub(crate) async fn resolve(
        &mut self,
        authorities: &[AuthorityInfo],
        clock: &Clock,
    ) -> Option<SocketAddr> {
        if !self.configured.ip().is_unspecified() {
            return Some(self.configured);
        }
        let port = self.configured.port();
        match learn_public_ip(authorities, clock).await {
            AddressVerdict::Agreed(ip) => {
                if self.learned != Some(ip) {
                    // Our own public address: not a client's, fine to log.
                    info!(
                        "relay: the authorities see this relay at {ip}; advertising {}",
                        SocketAddr::new(ip, port)
                    );
                }
                self.learned = Some(ip);
                self.last_warning = None;
            }
            verdict @ AddressVerdict::NoMajority { .. } => {
                let now = clock.now_unix();
                let due = self
                    .last_warning
                    .is_none_or(|t| now.saturating_sub(t) >= WARN_EVERY_SECS);
                if due {
                    self.last_warning = Some(now);
                    let keeping = match self.learned {
                        Some(ip) => format!(" (still advertising {})", SocketAddr::new(ip, port)),
                        None => String::new(),
                    };
                    warn!(
                        "relay: cannot learn this relay's public address from the authorities ({verdict}); set `advertise = \"IP:PORT\"` in [relay]{keeping}"
                    );
                }
            }
        }
        self.learned.map(|ip| SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_strict_majority_of_the_configured_authorities_decides() {
        let a = ip("203.0.113.5");
        let liar = ip("198.51.100.66");
        assert_eq!(
            majority_address(&[a, a, liar], 3),
            AddressVerdict::Agreed(a)
        );
        assert_eq!(majority_address(&[a], 1), AddressVerdict::Agreed(a));
        // Half is not a majority; nor is a minority whose honest peers did not answer.
        assert!(matches!(
            majority_address(&[a, liar], 2),
            AddressVerdict::NoMajority { answered: 2, .. }
        ));
        assert!(matches!(
            majority_address(&[liar], 3),
            AddressVerdict::NoMajority { answered: 1, .. }
        ));
        assert!(matches!(
            majority_address(&[], 3),
            AddressVerdict::NoMajority { answered: 0, .. }
        ));
    }
}
