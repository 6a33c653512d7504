//! The table `allium testnet` prints at startup: each relay's flags and the selection
//! weight the consensus gives it, measured by the authorities or not yet.

use std::fmt::Write as _;

use crate::crypto::IdentityPublic;
use crate::dir::Consensus;

/// Bytes per second, human-readable (`1.25 MB/s`).
fn rate(bytes_per_second: u64) -> String {
    // Display only: precision loss above 2^53 B/s does not matter.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes_per_second as f64;
    if b >= 1e6 {
        format!("{:.2} MB/s", b / 1e6)
    } else {
        format!("{:.1} kB/s", b / 1e3)
    }
}

/// One line per relay of `relays` (name, identity): its weight, whether measured, and its
/// flags; "not listed" for a relay the consensus lacks.
pub(crate) fn weights_table(consensus: &Consensus, relays: &[(String, IdentityPublic)]) -> String {
    let mut out = String::new();
    for (name, id) in relays {
        let short: String = id.to_string().chars().take(8).collect();
        let line = match consensus.relay(id) {
            Some(e) => format!(
                "  {name:<9} {short}  {:>12}  {:<10}  {:?}",
                rate(e.bandwidth),
                if e.measured { "measured" } else { "unmeasured" },
                e.flags
            ),
            None => format!("  {name:<9} {short}  not listed"),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_read_naturally() {
        assert_eq!(rate(20_000), "20.0 kB/s");
        assert_eq!(rate(1_250_000), "1.25 MB/s");
    }
}
