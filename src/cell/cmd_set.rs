//! A set of command bytes: how a receiving context (see [`super::restricted`]) checks which
//! commands its parser will even look at.
//!
//! A peer must not be able to reach the parser of a message that is illegal where it is
//! received (a client has no business parsing CREATE; a relay never accepts CONNECTED).
//! Each context's parser checks the command byte against its `SET` before any body
//! parsing.

use super::error::{CellError, CellResult};

/// A set of one-byte command codes plus a description of where it applies (used in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdSet {
    /// Bit `c` set for code `c` < 128 ...
    low: u128,
    /// ... and bit `c - 128` for the others.
    high: u128,
    context: &'static str,
}

impl CmdSet {
    /// Builds a set from command codes; `context` reads like "on a client's channel".
    pub const fn new(codes: &[u8], context: &'static str) -> Self {
        let (mut low, mut high) = (0u128, 0u128);
        let mut rest = codes;
        while let [c, tail @ ..] = rest {
            if *c < 128 {
                low |= 1 << *c;
            } else {
                high |= 1 << (*c - 128);
            }
            rest = tail;
        }
        CmdSet { low, high, context }
    }

    /// Whether `code` is in the set.
    pub const fn contains(&self, code: u8) -> bool {
        if code < 128 {
            self.low & (1 << code) != 0
        } else {
            self.high & (1 << (code - 128)) != 0
        }
    }

    /// Where this set applies.
    pub const fn context(&self) -> &'static str {
        self.context
    }

    /// Refuses `code` with [`CellError::CommandNotAllowed`] unless it is in the set.
    pub fn check(&self, code: u8) -> CellResult<()> {
        if self.contains(code) {
            Ok(())
        } else {
            Err(CellError::CommandNotAllowed {
                command: code,
                context: self.context,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_exact() {
        let set = CmdSet::new(&[0, 63, 64, 200, 255], "in a test");
        for code in 0..=255u8 {
            let expected = matches!(code, 0 | 63 | 64 | 200 | 255);
            assert_eq!(set.contains(code), expected, "code {code}");
            assert_eq!(set.check(code).is_ok(), expected);
        }
    }
}
