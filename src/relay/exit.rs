//! The exit role: opening streams to destinations for clients, under an exit policy.
//!
//! Names are resolved here, at the exit (never by the client). The policy is checked
//! against every resolved address, so a hostname cannot be used to reach an address the
//! policy refuses (e.g. `localhost` or a name pointing into a private network).

use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::cell::{EndReason, TargetAddr};
use crate::dir::ExitPolicy;

/// How a relay acts as an exit.
#[derive(Debug, Clone)]
pub struct ExitConfig {
    /// Which destinations TCP streams may go to.
    pub policy: ExitPolicy,
    /// Which destinations UDP flows may go to: separate from `policy`, and by default
    /// [`ExitPolicy::reject_all`] (an operator opts in; see `exit_udp_policy`).
    pub udp_policy: ExitPolicy,
    /// Timeouts.
    pub timeouts: ExitTimeouts,
    /// How connections to destinations are opened (directly, unless the operator routes
    /// exit traffic elsewhere, e.g. through an outbound proxy).
    pub connector: Arc<dyn ExitConnector>,
}

/// How an exit opens its TCP connection to an address the policy allowed. The policy is
/// applied before, on the destination's address; the connector only carries it out.
pub trait ExitConnector: Send + Sync + std::fmt::Debug {
    /// Opens a connection to `addr` (the caller bounds it with the connect timeout).
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>>;
}

/// The default connector: a direct TCP connection to the destination.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

impl ExitConnector for DirectConnector {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        Box::pin(TcpStream::connect(addr))
    }
}

/// Exit timeouts, in seconds (the `[exit]` table of relay.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExitTimeouts {
    /// Resolving a name and connecting to the destination.
    pub connect_secs: u64,
    /// A stream on which nothing arrives from the destination for this long is closed.
    pub idle_secs: u64,
}

impl Default for ExitTimeouts {
    fn default() -> Self {
        ExitTimeouts {
            connect_secs: 10,
            idle_secs: 300,
        }
    }
}

impl ExitConfig {
    /// An exit with TCP `policy`, no UDP, default timeouts and direct connections.
    pub fn new(policy: ExitPolicy) -> Self {
        ExitConfig {
            policy,
            udp_policy: ExitPolicy::reject_all(),
            timeouts: ExitTimeouts::default(),
            connector: Arc::new(DirectConnector),
        }
    }

    /// A quick refusal before any work: the policy cannot allow this target at all.
    pub fn precheck(&self, target: &TargetAddr, port: u16) -> Result<(), EndReason> {
        precheck_policy(&self.policy, target, port)
    }

    /// Resolves `target` (if a name) and returns the addresses the policy allows.
    pub async fn allowed_addrs(
        &self,
        target: &TargetAddr,
        port: u16,
    ) -> Result<Vec<SocketAddr>, EndReason> {
        self.allowed_by(&self.policy, target, port).await
    }

    /// Resolves `target` (if a name) and returns the addresses `policy` allows: the policy
    /// is applied after resolution, so a name cannot lead where an address may not.
    pub(crate) async fn allowed_by(
        &self,
        policy: &ExitPolicy,
        target: &TargetAddr,
        port: u16,
    ) -> Result<Vec<SocketAddr>, EndReason> {
        let resolved = resolve(target, port, self.connect_timeout()).await?;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| policy.allows_ip(a.ip(), a.port()))
            .collect();
        if allowed.is_empty() {
            Err(EndReason::ExitPolicy)
        } else {
            Ok(allowed)
        }
    }

    /// Opens a TCP connection to `target:port`, trying each allowed address in turn.
    pub async fn connect(
        &self,
        target: &TargetAddr,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), EndReason> {
        let addrs = self.allowed_addrs(target, port).await?;
        let mut last = EndReason::ConnectRefused;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout(), self.connector.connect(addr)).await {
                Ok(Ok(stream)) if is_own_address(stream.local_addr().ok(), addr) => {
                    last = EndReason::ExitPolicy;
                }
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
                Ok(Err(e)) => last = end_reason_for(&e),
                Err(_) => last = EndReason::Timeout,
            }
        }
        Err(last)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.connect_secs.max(1))
    }

    /// The idle timeout of exit streams.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.idle_secs.max(1))
    }
}

/// Whether `policy` can allow `target:port` at all (for a name: might, on that port).
pub(crate) fn precheck_policy(
    policy: &ExitPolicy,
    target: &TargetAddr,
    port: u16,
) -> Result<(), EndReason> {
    let allowed = match target {
        TargetAddr::Ip(ip) => policy.allows_ip(*ip, port),
        TargetAddr::Hostname(_) => policy.might_allow_port(port),
    };
    if allowed {
        Ok(())
    } else {
        Err(EndReason::ExitPolicy)
    }
}

/// Resolves a target to socket addresses (a literal address resolves to itself).
pub(crate) async fn resolve(
    target: &TargetAddr,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, EndReason> {
    match target {
        TargetAddr::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        TargetAddr::Hostname(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(addrs)) => {
                    // A hostile resolver cannot make us hold an unbounded list.
                    let addrs: Vec<SocketAddr> = addrs.take(16).collect();
                    if addrs.is_empty() {
                        Err(EndReason::ResolveFailed)
                    } else {
                        Ok(addrs)
                    }
                }
                Ok(Err(_)) => Err(EndReason::ResolveFailed),
                Err(_) => Err(EndReason::Timeout),
            }
        }
    }
}

/// Resolves a name for RESOLVE: every address, policy not applied (nothing is contacted).
pub(crate) async fn resolve_name(
    target: &TargetAddr,
    timeout: Duration,
) -> Result<Vec<IpAddr>, EndReason> {
    Ok(resolve(target, 1, timeout)
        .await?
        .into_iter()
        .map(|a| a.ip())
        .collect())
}

/// Whether `dest` is an address of this host other than loopback (the kernel then sends
/// from `dest` itself): a resolver or SNMP agent on the exit's public address must not be
/// reachable through it, whatever the policy says. Loopback is the policy's to allow
/// (test networks do).
pub(crate) fn is_own_address(local: Option<SocketAddr>, dest: SocketAddr) -> bool {
    !dest.ip().is_loopback() && local.is_some_and(|l| l.ip() == dest.ip())
}

fn end_reason_for(e: &std::io::Error) -> EndReason {
    match e.kind() {
        ErrorKind::ConnectionRefused => EndReason::ConnectRefused,
        ErrorKind::TimedOut => EndReason::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => EndReason::ConnectionReset,
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::AddrNotAvailable => EndReason::NoRoute,
        _ => EndReason::Misc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_are_refused_but_loopback_is_the_policys() {
        let at = |s: &str| s.parse::<SocketAddr>().ok();
        let dest = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|_| unreachable!());
        // The kernel sends to a local address from that address itself.
        assert!(is_own_address(at("192.0.2.7:40000"), dest("192.0.2.7:53")));
        assert!(is_own_address(
            at("[2001:db8::7]:40000"),
            dest("[2001:db8::7]:161")
        ));
        // Elsewhere, or loopback (which the policy allows or refuses), or unknown: not ours.
        assert!(!is_own_address(
            at("192.0.2.7:40000"),
            dest("198.51.100.1:53")
        ));
        assert!(!is_own_address(at("127.0.0.1:40000"), dest("127.0.0.1:53")));
        assert!(!is_own_address(None, dest("192.0.2.7:53")));
    }
}
