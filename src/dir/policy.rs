//! Exit policies: which destinations an exit relay is willing to connect to.
//!
//! A policy is an ordered list of rules `accept|reject PREFIX:PORTS`; the first rule that
//! matches a destination decides, and a destination no rule matches is rejected. A rule's
//! prefix belongs to one address family, so `*` in the text form expands to one IPv4 and
//! one IPv6 rule.
//!
//! IPv4-mapped IPv6 destinations (`::ffff:a.b.c.d`) are matched as the IPv4 address they
//! carry: otherwise `reject 10.0.0.0/8` could be bypassed by writing the same destination
//! in IPv6 form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::dir::wire;

mod prefix;
mod text;

use prefix::{special_prefixes, Prefix, LOOPBACK_V4, LOOPBACK_V6, SPECIAL_V4, SPECIAL_V6};

/// Most rules a policy may have (so a policy is at most a couple of KiB on the wire).
pub(crate) const MAX_POLICY_RULES: usize = 64;

/// Why a rule or policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The prefix length exceeds the address width.
    #[error("prefix length {len} is longer than {max} bits")]
    PrefixTooLong {
        /// Given length.
        len: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits after the prefix length are set (the form would not be unique).
    #[error("address {addr}/{len} has host bits set; did you mean {canonical}/{len}?")]
    HostBitsSet {
        /// Address given.
        addr: IpAddr,
        /// Prefix length given.
        len: u8,
        /// The address with host bits cleared.
        canonical: IpAddr,
    },
    /// Port range is empty or includes port 0.
    #[error("invalid port range {lo}-{hi}: need 1 <= lo <= hi")]
    BadPortRange {
        /// Low port.
        lo: u16,
        /// High port.
        hi: u16,
    },
    /// An IPv4-mapped IPv6 prefix: write it as IPv4 instead, so each rule has one form.
    #[error("IPv4-mapped IPv6 prefix {0}: write the IPv4 form")]
    MappedPrefix(Ipv6Addr),
    /// Too many rules.
    #[error("policy has {0} rules; at most {MAX_POLICY_RULES} are allowed")]
    TooManyRules(usize),
    /// Unknown action code on the wire.
    #[error("unknown policy action code {0}")]
    BadActionCode(u8),
    /// A text rule could not be parsed.
    #[error("policy rule {index} ({text:?}): {reason}")]
    Syntax {
        /// Zero-based position of the rule in the input.
        index: usize,
        /// The offending rule text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum PolicyAction {
    /// Refuse the connection. Wire code 0.
    Reject,
    /// Allow the connection. Wire code 1.
    Accept,
}

impl TryFrom<u8> for PolicyAction {
    type Error = PolicyError;
    fn try_from(v: u8) -> Result<Self, PolicyError> {
        match v {
            0 => Ok(Self::Reject),
            1 => Ok(Self::Accept),
            other => Err(PolicyError::BadActionCode(other)),
        }
    }
}

impl From<PolicyAction> for u8 {
    fn from(a: PolicyAction) -> u8 {
        match a {
            PolicyAction::Reject => 0,
            PolicyAction::Accept => 1,
        }
    }
}

/// The wire form of a rule, validated into a [`PolicyRule`] on decode.
#[derive(Clone, Serialize, Deserialize)]
struct RawRule {
    action: PolicyAction,
    prefix: IpAddr,
    prefix_len: u8,
    lo: u16,
    hi: u16,
}

/// One rule: `action` applies to destinations inside `prefix/prefix_len` with a port in
/// `lo..=hi`. Construction validates, so every value is canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct PolicyRule {
    action: PolicyAction,
    prefix: IpAddr,
    prefix_len: u8,
    lo: u16,
    hi: u16,
}

impl TryFrom<RawRule> for PolicyRule {
    type Error = PolicyError;
    fn try_from(r: RawRule) -> Result<Self, PolicyError> {
        PolicyRule::new(r.action, r.prefix, r.prefix_len, r.lo, r.hi)
    }
}

impl From<PolicyRule> for RawRule {
    fn from(r: PolicyRule) -> RawRule {
        RawRule {
            action: r.action,
            prefix: r.prefix,
            prefix_len: r.prefix_len,
            lo: r.lo,
            hi: r.hi,
        }
    }
}

impl PolicyRule {
    /// Builds a rule, refusing non-canonical forms: `prefix_len` beyond the address width,
    /// host bits set, an IPv4-mapped IPv6 prefix, `lo == 0` or `lo > hi`.
    pub fn new(
        action: PolicyAction,
        prefix: IpAddr,
        prefix_len: u8,
        lo: u16,
        hi: u16,
    ) -> Result<Self, PolicyError> {
        let max = Prefix::width(prefix.is_ipv6());
        if prefix_len > max {
            return Err(PolicyError::PrefixTooLong {
                len: prefix_len,
                max,
            });
        }
        if let IpAddr::V6(a) = prefix {
            if a.to_ipv4_mapped().is_some() && prefix_len >= 96 {
                return Err(PolicyError::MappedPrefix(a));
            }
        }
        let p = Prefix::of(prefix, prefix_len);
        let masked = p.bits & Prefix::mask(p.v6, prefix_len);
        if masked != p.bits {
            let canonical = match prefix {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(masked).unwrap_or(0))),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
            };
            return Err(PolicyError::HostBitsSet {
                addr: prefix,
                len: prefix_len,
                canonical,
            });
        }
        if lo == 0 || lo > hi {
            return Err(PolicyError::BadPortRange { lo, hi });
        }
        Ok(Self {
            action,
            prefix,
            prefix_len,
            lo,
            hi,
        })
    }

    /// Accept or reject.
    pub fn action(&self) -> PolicyAction {
        self.action
    }

    /// The network address of the prefix.
    pub fn prefix(&self) -> IpAddr {
        self.prefix
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The inclusive port range.
    pub fn ports(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }

    fn as_prefix(&self) -> Prefix {
        Prefix::of(self.prefix, self.prefix_len)
    }

    fn covers_port(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// Whether the rule matches a destination (already canonicalised).
    fn matches(&self, addr: IpAddr, port: u16) -> bool {
        self.covers_port(port)
            && self
                .as_prefix()
                .contains(&Prefix::of(addr, Prefix::width(addr.is_ipv6())))
    }

    /// Whether the prefix is a whole address family (`/0`).
    fn is_whole_family(&self) -> bool {
        self.prefix_len == 0
    }
}

/// An exit policy: rules in order, first match wins, default reject.
///
/// Wire form: the list of rules (`u64` count ≤ [`MAX_POLICY_RULES`], then each rule as
/// `action u8 | prefix IpAddr | prefix_len u8 | lo u16 | hi u16`; see `docs/protocol.md` §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ExitPolicy {
    #[serde(deserialize_with = "wire::bounded_vec::<_, PolicyRule, MAX_POLICY_RULES>")]
    rules: Vec<PolicyRule>,
}

impl ExitPolicy {
    /// Builds a policy from rules, refusing more than [`MAX_POLICY_RULES`].
    pub fn new(rules: Vec<PolicyRule>) -> Result<Self, PolicyError> {
        if rules.len() > MAX_POLICY_RULES {
            return Err(PolicyError::TooManyRules(rules.len()));
        }
        Ok(Self { rules })
    }

    /// The empty policy: rejects everything (what a non-exit relay publishes).
    pub fn reject_all() -> Self {
        Self { rules: Vec::new() }
    }

    /// Reject every special-purpose range (private, loopback, link-local, CGNAT, multicast,
    /// documentation, NAT64, ...), then accept everything else on every port.
    pub fn default_exit() -> Self {
        Self::default_exit_inner(false)
    }

    /// Like [`Self::default_exit`] but loopback (127.0.0.0/8, ::1) is allowed: for test
    /// networks whose destinations all run on one machine. Never use it on a real network.
    pub fn default_exit_allow_loopback() -> Self {
        Self::default_exit_inner(true)
    }

    fn default_exit_inner(allow_loopback: bool) -> Self {
        let mut rules = special_rejects(allow_loopback);
        for any in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            if let Ok(r) = PolicyRule::new(PolicyAction::Accept, any, 0, 1, 65535) {
                rules.push(r);
            }
        }
        Self { rules }
    }

    /// This policy behind a reject of every special-purpose range (those
    /// [`Self::default_exit`] rejects, loopback included): whatever the rules say, no
    /// destination in those ranges is allowed. Refused if the result has more than
    /// [`MAX_POLICY_RULES`] rules.
    pub fn behind_special_rejects(self) -> Result<Self, PolicyError> {
        let mut rules = special_rejects(false);
        rules.extend(self.rules);
        Self::new(rules)
    }

    /// The rules in order.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// Whether the policy accepts a connection to `addr:port`. Port 0 is never allowed.
    /// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    pub fn allows_ip(&self, addr: IpAddr, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        let addr = addr.to_canonical();
        self.rules
            .iter()
            .find(|r| r.matches(addr, port))
            .is_some_and(|r| r.action == PolicyAction::Accept)
    }

    /// Whether the policy might accept a connection to an unknown address (a hostname the
    /// exit will resolve) on `port`: true if some accept rule covering the port is reached
    /// before rejects covering that port for *both* whole address families (Tor's
    /// "probably accepted" semantics). Rejects of smaller prefixes do not stop the search,
    /// since the name may resolve elsewhere.
    pub fn might_allow_port(&self, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        let (mut v4_closed, mut v6_closed) = (false, false);
        for r in self.rules.iter().filter(|r| r.covers_port(port)) {
            let v6 = r.prefix.is_ipv6();
            let closed = if v6 { v6_closed } else { v4_closed };
            if closed {
                continue;
            }
            match r.action {
                PolicyAction::Accept => return true,
                PolicyAction::Reject if r.is_whole_family() => {
                    if v6 {
                        v6_closed = true;
                    } else {
                        v4_closed = true;
                    }
                }
                PolicyAction::Reject => {}
            }
        }
        false
    }

    /// Whether the policy accepts `port` for at least one public address (one outside
    /// every special-purpose range: private, loopback, link-local, multicast,
    /// documentation, ...). Exact: an accept rule
    /// counts only if some public address in it is not rejected by an earlier rule.
    pub fn allows_port_to_public(&self, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        let mut blocked = special_prefixes(true);
        for r in self.rules.iter().filter(|r| r.covers_port(port)) {
            let p = r.as_prefix();
            match r.action {
                PolicyAction::Reject => blocked.push(p),
                PolicyAction::Accept => {
                    if !p.covered_by(&blocked) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// A reject rule (all ports) for every special-purpose range, IPv4 first, loopback
/// included unless `allow_loopback`.
fn special_rejects(allow_loopback: bool) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    let mut reject = |addr: IpAddr, len: u8| {
        // The constants are canonical, so construction cannot fail; a unit test checks
        // that every constant made it into the policy.
        if let Ok(r) = PolicyRule::new(PolicyAction::Reject, addr, len, 1, 65535) {
            rules.push(r);
        }
    };
    for (a, l) in SPECIAL_V4 {
        reject(IpAddr::V4(Ipv4Addr::from(*a)), *l);
    }
    if !allow_loopback {
        reject(IpAddr::V4(Ipv4Addr::from(LOOPBACK_V4.0)), LOOPBACK_V4.1);
    }
    for (a, l) in SPECIAL_V6 {
        reject(IpAddr::V6(Ipv6Addr::from(*a)), *l);
    }
    if !allow_loopback {
        reject(IpAddr::V6(Ipv6Addr::from(LOOPBACK_V6.0)), LOOPBACK_V6.1);
    }
    rules
}

/// Whether `ip` is a public address: outside every special-purpose range (private,
/// loopback, link-local, multicast, documentation, ...).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    let width = Prefix::width(ip.is_ipv6());
    !Prefix::of(ip, width).covered_by(&special_prefixes(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses_are_told_from_special_ones() {
        for ip in ["203.0.113.1", "10.1.2.3", "127.0.0.1", "::1", "fe80::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn default_exit_rejects_special_and_accepts_public() {
        let p = ExitPolicy::default_exit();
        assert_eq!(p.rules().len(), SPECIAL_V4.len() + SPECIAL_V6.len() + 4);
        for bad in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "172.16.5.5",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(!p.allows_ip(ip(bad), 80), "{bad}");
        }
        for good in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.allows_ip(ip(good), 443), "{good}");
        }
        assert!(!p.allows_ip(ip("1.1.1.1"), 0));
        let lo = ExitPolicy::default_exit_allow_loopback();
        assert!(lo.allows_ip(ip("127.0.0.1"), 8080));
        assert!(lo.allows_ip(ip("::1"), 8080));
        assert!(!lo.allows_ip(ip("10.0.0.1"), 8080));
    }

    #[test]
    fn special_rejects_go_in_front_and_count_towards_the_bound() {
        let specials = SPECIAL_V4.len() + SPECIAL_V6.len() + 2;
        let p: ExitPolicy = "accept *:53".parse().unwrap();
        let behind = p.clone().behind_special_rejects().unwrap();
        assert_eq!(behind.rules().len(), specials + 2);
        assert_eq!(&behind.rules()[specials..], p.rules());
        assert!(behind.rules()[..specials]
            .iter()
            .all(|r| r.action() == PolicyAction::Reject));
        // The same rejects as the default exit policy's, loopback included.
        assert_eq!(
            &behind.rules()[..specials],
            &ExitPolicy::default_exit().rules()[..specials]
        );
        assert!(behind.allows_ip(ip("1.1.1.1"), 53));
        assert!(!behind.allows_ip(ip("127.0.0.1"), 53));
        assert!(!behind.allows_ip(ip("::ffff:192.168.0.1"), 53));
        // Nothing accepted stays nothing accepted.
        let none = ExitPolicy::reject_all().behind_special_rejects().unwrap();
        assert!(!none.might_allow_port(53));
        let room = MAX_POLICY_RULES - specials;
        let fits = ExitPolicy::new(vec![p.rules()[0]; room]).unwrap();
        assert!(fits.behind_special_rejects().is_ok());
        let over = ExitPolicy::new(vec![p.rules()[0]; room + 1]).unwrap();
        assert!(matches!(
            over.behind_special_rejects(),
            Err(PolicyError::TooManyRules(_))
        ));
    }

    #[test]
    fn reject_all_and_might_allow() {
        assert!(!ExitPolicy::reject_all().might_allow_port(80));
        let p: ExitPolicy = "reject *:25, reject 10.0.0.0/8:*, accept *:80-443"
            .parse()
            .unwrap();
        assert!(p.might_allow_port(80));
        assert!(!p.might_allow_port(25));
        assert!(!p.might_allow_port(22));
        // Rejecting only IPv4 for a port leaves IPv6 possible.
        let p: ExitPolicy = "reject *4:80, accept *:80".parse().unwrap();
        assert!(p.might_allow_port(80));
        assert!(!p.allows_ip(ip("1.1.1.1"), 80));
        assert!(p.allows_ip(ip("2001::1"), 80));
    }

    #[test]
    fn public_port_check_is_exact() {
        assert!(ExitPolicy::default_exit().allows_port_to_public(80));
        assert!(!ExitPolicy::default_exit_allow_loopback().allows_port_to_public(0));
        // Only private space accepted: not an exit for the public.
        let p: ExitPolicy = "accept 10.0.0.0/8:*, accept 127.0.0.0/8:*".parse().unwrap();
        assert!(!p.allows_port_to_public(80));
        // Accept a /8 that is half rejected earlier: the other half is public.
        let p: ExitPolicy = "reject 8.0.0.0/9:*, accept 8.0.0.0/8:443".parse().unwrap();
        assert!(p.allows_port_to_public(443));
        let p: ExitPolicy = "reject 8.0.0.0/9:*, reject 8.128.0.0/9:*, accept 8.0.0.0/8:443"
            .parse()
            .unwrap();
        assert!(!p.allows_port_to_public(443));
    }

    #[test]
    fn canonical_validation() {
        use PolicyAction::Accept;
        assert!(matches!(
            PolicyRule::new(Accept, ip("10.0.0.1"), 8, 1, 2),
            Err(PolicyError::HostBitsSet { .. })
        ));
        assert!(matches!(
            PolicyRule::new(Accept, ip("10.0.0.0"), 33, 1, 2),
            Err(PolicyError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            PolicyRule::new(Accept, ip("::"), 129, 1, 2),
            Err(PolicyError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            PolicyRule::new(Accept, ip("10.0.0.0"), 8, 0, 2),
            Err(PolicyError::BadPortRange { .. })
        ));
        assert!(matches!(
            PolicyRule::new(Accept, ip("10.0.0.0"), 8, 3, 2),
            Err(PolicyError::BadPortRange { .. })
        ));
        assert!(matches!(
            PolicyRule::new(Accept, ip("::ffff:10.0.0.0"), 104, 1, 2),
            Err(PolicyError::MappedPrefix(_))
        ));
        assert!(PolicyRule::new(Accept, ip("0.0.0.0"), 0, 1, 65535).is_ok());
    }

    #[test]
    fn text_round_trip_and_errors() {
        let p = ExitPolicy::default_exit();
        let again: ExitPolicy = p.to_string().parse().unwrap();
        assert_eq!(again, p);
        let e = "accept 10.0.0.1/8:80".parse::<ExitPolicy>().unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
        for bad in [
            "allow *:80",
            "accept *",
            "accept *:0",
            "accept *:90-80",
            "accept 1.2.3:80",
            "accept ::1:80",
            "accept *:80 extra",
            "accept [::1:80",
        ] {
            assert!(bad.parse::<ExitPolicy>().is_err(), "{bad}");
        }
        let many = vec!["accept *:80"; 33];
        assert!(matches!(
            ExitPolicy::parse_rules(many),
            Err(PolicyError::TooManyRules(_))
        ));
    }

    #[test]
    fn wire_round_trip_and_strictness() {
        let p = ExitPolicy::default_exit();
        let bytes = crate::codec::encode(&p).unwrap();
        assert_eq!(
            crate::codec::decode::<ExitPolicy>(&bytes, 1 << 16).unwrap(),
            p
        );
        // A bad action byte is refused: first rule's action is right after the count.
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert!(crate::codec::decode::<ExitPolicy>(&bad, 1 << 16).is_err());
        // A count above the bound is refused before decoding elements.
        let mut big = bytes;
        big[..8].copy_from_slice(&65u64.to_be_bytes());
        assert!(crate::codec::decode::<ExitPolicy>(&big, 1 << 16).is_err());
    }
}
