//! WAL positions and timelines as newtypes.
//!
//! PostgreSQL prints an LSN as `X/Y` (two hex halves); Patroni stores it in the DCS as a plain
//! integer. Keeping it a `u64` newtype means comparisons and lag arithmetic can never mix up a
//! position with a byte count by accident.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in the write-ahead log, in bytes since the start of WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes by which `self` is behind `ahead` (zero when it is not behind).
    pub fn lag_behind(self, ahead: Lsn) -> u64 {
        ahead.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// The text was not an LSN of the form `X/Y`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL position (expected hex X/Y): {0:?}")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LsnParseError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

/// A PostgreSQL timeline ID: bumped by every promotion.
pub type Timeline = u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_postgres_notation() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
    }

    #[test]
    fn rejects_garbage() {
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn lag_saturates() {
        assert_eq!(Lsn(10).lag_behind(Lsn(25)), 15);
        assert_eq!(Lsn(30).lag_behind(Lsn(25)), 0);
    }
}
