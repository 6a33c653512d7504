//! The text form of exit policies (`accept|reject ADDR:PORTS`, as in relay.toml): parsing
//! and display.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ExitPolicy, PolicyAction, PolicyError, PolicyRule, MAX_POLICY_RULES};

impl fmt::Display for PolicyRule {
    /// The text form, e.g. `reject 10.0.0.0/8:*` or `accept [::]/0:80-443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            PolicyAction::Accept => "accept",
            PolicyAction::Reject => "reject",
        };
        match self.prefix {
            IpAddr::V4(a) => write!(f, "{action} {a}/{}:", self.prefix_len)?,
            IpAddr::V6(a) => write!(f, "{action} [{a}]/{}:", self.prefix_len)?,
        }
        match (self.lo, self.hi) {
            (1, 65535) => f.write_str("*"),
            (lo, hi) if lo == hi => write!(f, "{lo}"),
            (lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

impl ExitPolicy {
    /// Parses the text form, one rule per item: `accept|reject ADDR:PORTS` where ADDR is
    /// `*` (both families), `*4`, `*6`, `a.b.c.d[/len]` or `[v6][/len]`, and PORTS is `*`,
    /// `p` or `lo-hi`. Errors name the rule's position and text.
    pub fn parse_rules<I, S>(rules: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for (index, text) in rules.into_iter().enumerate() {
            let text = text.as_ref();
            let parsed = parse_rule(text).map_err(|reason| PolicyError::Syntax {
                index,
                text: text.to_string(),
                reason,
            })?;
            out.extend(parsed);
            if out.len() > MAX_POLICY_RULES {
                return Err(PolicyError::TooManyRules(out.len()));
            }
        }
        Ok(Self { rules: out })
    }
}

impl FromStr for ExitPolicy {
    type Err = PolicyError;

    /// Parses rules separated by commas or newlines, e.g.
    /// `"reject 10.0.0.0/8:*, accept *:80-443"`. Empty items are ignored.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Self::parse_rules(
            s.split([',', '\n'])
                .map(str::trim)
                .filter(|item| !item.is_empty()),
        )
    }
}

impl fmt::Display for ExitPolicy {
    /// Rules in text form joined by `, ` (parsable by [`ExitPolicy::from_str`]); the empty
    /// policy displays as `reject *:*`, which parses back to the same rejection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("reject *:*");
        }
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses one text rule into one or two rules (`*` covers both families).
fn parse_rule(text: &str) -> Result<Vec<PolicyRule>, String> {
    let mut words = text.split_whitespace();
    let action = match words.next() {
        Some("accept") => PolicyAction::Accept,
        Some("reject") => PolicyAction::Reject,
        Some(other) => return Err(format!("expected \"accept\" or \"reject\", got {other:?}")),
        None => return Err("empty rule".into()),
    };
    let target = words
        .next()
        .ok_or_else(|| "missing ADDR:PORTS after the action".to_string())?;
    if let Some(extra) = words.next() {
        return Err(format!("unexpected {extra:?} after ADDR:PORTS"));
    }
    let (addr, ports) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("expected ADDR:PORTS, got {target:?}"))?;
    let (lo, hi) = parse_ports(ports)?;
    let prefixes: Vec<(IpAddr, u8)> = match addr {
        "*" => vec![
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        ],
        "*4" => vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)],
        "*6" => vec![(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)],
        other => vec![parse_prefix(other)?],
    };
    prefixes
        .into_iter()
        .map(|(a, l)| PolicyRule::new(action, a, l, lo, hi).map_err(|e| e.to_string()))
        .collect()
}

fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.rsplit_once('/') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u8>()
                    .map_err(|_| format!("bad prefix length {l:?}"))?,
            ),
        ),
        None => (s, None),
    };
    let ip: IpAddr = if let Some(inner) = addr.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unterminated IPv6 address {addr:?}"))?;
        IpAddr::V6(
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("bad IPv6 address {inner:?}"))?,
        )
    } else {
        IpAddr::V4(
            addr.parse::<Ipv4Addr>()
                .map_err(|_| format!("bad address {addr:?} (IPv6 goes in brackets)"))?,
        )
    };
    let len = len.unwrap_or(if ip.is_ipv6() { 128 } else { 32 });
    Ok((ip, len))
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("bad port {p:?} (1-65535)"))
    };
    if s == "*" {
        return Ok((1, 65535));
    }
    match s.split_once('-') {
        Some((lo, hi)) => Ok((port(lo)?, port(hi)?)),
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}
