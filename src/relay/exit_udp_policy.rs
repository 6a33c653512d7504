//! The exit's UDP policy: which destinations UDP flows may go to, separate from TCP's.
//!
//! UDP is off unless the operator opts in (`[exit] udp_policy` in relay.toml). The
//! operator's rules always sit behind a reject of every special-purpose range (private,
//! loopback, link-local, multicast, ...): unlike TCP, whose `policy` replaces the default
//! and so carries its own rejects, an operator's UDP rules cannot open those ranges (a
//! datagram to the exit's own resolver or LAN is the abuse to fear most). Test networks
//! build their exits' UDP policy directly and may allow loopback.

use std::net::SocketAddr;

use crate::cell::{EndReason, TargetAddr};
use crate::dir::{ExitPolicy, PolicyError};

use super::exit::{precheck_policy, ExitConfig};

/// The UDP policy for `[exit] udp_policy`: `None` (key absent) rejects all UDP; rules are
/// parsed as the TCP policy's and put behind the special-purpose rejects.
pub fn udp_policy_from_config<S: AsRef<str>>(
    rules: Option<&[S]>,
) -> Result<ExitPolicy, PolicyError> {
    match rules {
        None => Ok(ExitPolicy::reject_all()),
        Some(rules) => ExitPolicy::parse_rules(rules.iter())?.behind_special_rejects(),
    }
}

impl ExitConfig {
    /// A quick refusal before any work: the UDP policy cannot allow this target at all
    /// (always, on an exit without a UDP policy).
    pub fn precheck_udp(&self, target: &TargetAddr, port: u16) -> Result<(), EndReason> {
        precheck_policy(&self.udp_policy, target, port)
    }

    /// Resolves `target` (if a name) and returns the addresses the UDP policy allows
    /// (none: [`EndReason::ExitPolicy`]).
    pub async fn allowed_udp_addrs(
        &self,
        target: &TargetAddr,
        port: u16,
    ) -> Result<Vec<SocketAddr>, EndReason> {
        self.allowed_by(&self.udp_policy, target, port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Hostname;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn exit_with_udp(udp: ExitPolicy) -> ExitConfig {
        let mut e = ExitConfig::new(ExitPolicy::default_exit_allow_loopback());
        e.udp_policy = udp;
        e
    }

    #[test]
    fn absent_key_rejects_all_udp() {
        let p = udp_policy_from_config::<String>(None).unwrap();
        assert_eq!(p, ExitPolicy::reject_all());
        // And a new exit has no UDP, whatever its TCP policy.
        let e = ExitConfig::new(ExitPolicy::default_exit());
        assert_eq!(e.udp_policy, ExitPolicy::reject_all());
        for (addr, port) in [("1.1.1.1", 53), ("8.8.8.8", 443), ("2606:4700::1111", 53)] {
            assert_eq!(
                e.precheck_udp(&TargetAddr::Ip(ip(addr)), port),
                Err(EndReason::ExitPolicy)
            );
        }
        let name = TargetAddr::Hostname(Hostname::new("example.com").unwrap());
        assert_eq!(e.precheck_udp(&name, 53), Err(EndReason::ExitPolicy));
    }

    #[test]
    fn operator_rules_sit_behind_the_special_range_rejects() {
        let p = udp_policy_from_config(Some(&["accept *:53", "accept *:443"])).unwrap();
        for (addr, port) in [("1.1.1.1", 53), ("9.9.9.9", 443), ("2606:4700::1111", 53)] {
            assert!(p.allows_ip(ip(addr), port), "{addr}:{port}");
        }
        // Ports the operator did not open.
        assert!(!p.allows_ip(ip("1.1.1.1"), 123));
        // Special-purpose ranges stay closed on the opened ports.
        for addr in [
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "fe80::1",
            "fc00::1",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.allows_ip(ip(addr), 53), "{addr}");
        }
        // Even an explicit accept of a private range cannot open it.
        let p =
            udp_policy_from_config(Some(&["accept 10.0.0.0/8:*", "accept 127.0.0.1:53"])).unwrap();
        assert!(!p.allows_ip(ip("10.1.2.3"), 53));
        assert!(!p.allows_ip(ip("127.0.0.1"), 53));
        assert!(!p.allows_port_to_public(53));
    }

    #[test]
    fn bad_or_too_many_udp_rules_are_refused() {
        assert!(udp_policy_from_config(Some(&["accept *:0"])).is_err());
        assert!(udp_policy_from_config(Some(&["allow *:53"])).is_err());
        // The special-range rejects count towards the rule bound.
        let many = vec!["accept *:53"; 30];
        assert!(matches!(
            udp_policy_from_config(Some(&many)),
            Err(PolicyError::TooManyRules(_))
        ));
        // An empty list is an explicit "no UDP" (nothing accepted).
        let p = udp_policy_from_config::<&str>(Some(&[])).unwrap();
        assert!(!p.might_allow_port(53));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_for_udp() {
        let e = exit_with_udp(udp_policy_from_config(Some(&["accept *:*"])).unwrap());
        let name = TargetAddr::Hostname(Hostname::new("localhost").unwrap());
        // The port might be allowed, so the precheck lets the name through ...
        assert_eq!(e.precheck_udp(&name, 53), Ok(()));
        // ... and resolution lands on loopback, which the policy refuses.
        assert_eq!(
            e.allowed_udp_addrs(&name, 53).await,
            Err(EndReason::ExitPolicy)
        );
        let lo = TargetAddr::Ip(ip("127.0.0.1"));
        assert_eq!(e.precheck_udp(&lo, 53), Err(EndReason::ExitPolicy));
        // TCP on the same exit (a loopback-allowing test policy) is unaffected.
        assert!(e.allowed_addrs(&lo, 53).await.is_ok());
    }

    #[tokio::test]
    async fn allowed_udp_addrs_follow_the_udp_policy_not_the_tcp_one() {
        let e = exit_with_udp(ExitPolicy::default_exit_allow_loopback());
        let lo = TargetAddr::Ip(ip("127.0.0.1"));
        assert_eq!(
            e.allowed_udp_addrs(&lo, 5353).await,
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 5353))])
        );
        let mut tcp_only = e.clone();
        tcp_only.udp_policy = ExitPolicy::reject_all();
        assert_eq!(
            tcp_only.allowed_udp_addrs(&lo, 5353).await,
            Err(EndReason::ExitPolicy)
        );
        assert!(tcp_only.allowed_addrs(&lo, 5353).await.is_ok());
    }
}
