//! Token amounts: integer base units, 10^18 of them to one GRID.
//!
//! The ledger only ever sees base units (`u128`). People type and read decimal GRID
//! ("12.5"); JSON carries base units as strings because a `u128` does not fit a JSON number.

use std::fmt;
use std::str::FromStr;

use crate::encoding::{Decode, DecodeError, Encode, Reader};

/// Decimal places of one GRID.
pub const DECIMALS: u32 = 18;
/// Base units in one GRID.
pub const GRID: u128 = 10u128.pow(DECIMALS);

/// An amount of GRID in base units.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

/// A string that is not an amount of GRID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Not a decimal number.
    #[error("`{input}` is not an amount: write a decimal number of GRID such as 12.5")]
    NotANumber {
        /// What was given.
        input: String,
    },
    /// More than 18 digits after the point.
    #[error("`{input}` has more than 18 decimal places; GRID is divisible to 10^-18")]
    TooPrecise {
        /// What was given.
        input: String,
    },
    /// Larger than a u128 of base units.
    #[error("`{input}` is too large to be an amount")]
    TooLarge {
        /// What was given.
        input: String,
    },
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);

    /// Whole GRID.
    pub const fn grid(n: u64) -> Amount {
        Amount(n as u128 * GRID)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` when `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `self - other`, floored at zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Parses decimal GRID ("12.5", "0.000000000000000001", "3").
    pub fn parse_grid(input: &str) -> Result<Amount, AmountError> {
        let s = input.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(AmountError::NotANumber {
                input: input.to_string(),
            });
        }
        if frac.len() > DECIMALS as usize {
            return Err(AmountError::TooPrecise {
                input: input.to_string(),
            });
        }
        let too_large = || AmountError::TooLarge {
            input: input.to_string(),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let frac_units: u128 = if frac.is_empty() {
            0
        } else {
            let scale = 10u128.pow(DECIMALS - frac.len() as u32);
            frac.parse::<u128>().map_err(|_| too_large())? * scale
        };
        whole
            .checked_mul(GRID)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(too_large)
    }
}

/// Displays decimal GRID without trailing zeros: `12.5`, `0`, `0.000000000000000001`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / GRID;
        let frac = self.0 % GRID;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:018}");
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl Amount {
    /// For people: the amount rounded to six significant digits of its fraction, marked `~`
    /// when rounded (`0.016666666666666666` shows as `~0.0166667`); exact amounts show as
    /// they are. JSON and anything read back keep [`Display`](fmt::Display)'s exact form.
    pub fn rounded(self) -> Rounded {
        Rounded(self)
    }
}

/// [`Amount::rounded`].
#[derive(Clone, Copy, Debug)]
pub struct Rounded(Amount);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SIGNIFICANT: usize = 6;
        let whole = self.0 .0 / GRID;
        let frac = format!("{:018}", self.0 .0 % GRID);
        let digits = frac.trim_end_matches('0');
        let leading = digits.len() - digits.trim_start_matches('0').len();
        let keep = leading + SIGNIFICANT;
        if digits.len() <= keep {
            return write!(f, "{}", self.0);
        }
        // Round half up at `keep` decimals; a carry may reach the whole part.
        let scale = 10u128.pow((18 - keep) as u32);
        let units = (self.0 .0 % GRID + scale / 2) / scale;
        let one = 10u128.pow(keep as u32);
        let (whole, units) = (whole + units / one, units % one);
        let text = format!("{units:0keep$}");
        let text = text.trim_end_matches('0');
        if text.is_empty() {
            write!(f, "~{whole}")
        } else {
            write!(f, "~{whole}.{text}")
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} GRID")
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse_grid(s)
    }
}

impl Encode for Amount {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out)
    }
}

impl Decode for Amount {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Amount(u128::decode(r)?))
    }
}

/// JSON and TOML carry base units as a decimal string.
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<u128>().map(Amount).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not an amount in base units (a string of digits, 10^18 per GRID)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_amounts_keep_six_significant_digits_and_say_so() {
        let show = |base: u128| Amount(base).rounded().to_string();
        assert_eq!(show(GRID / 60), "~0.0166667");
        assert_eq!(show(GRID * 697_000_000), "697000000");
        assert_eq!(show(GRID / 4), "0.25");
        assert_eq!(show(1), "0.000000000000000001");
        assert_eq!(show(GRID * 2 / 3), "~0.666667");
        assert_eq!(show(GRID - 1), "~1");
        assert_eq!(show(GRID + GRID / 3), "~1.333333");
    }
    use proptest::prelude::*;

    #[test]
    fn parses_decimal_grid() {
        assert_eq!(Amount::parse_grid("12.5"), Ok(Amount(12 * GRID + GRID / 2)));
        assert_eq!(Amount::parse_grid(".5"), Ok(Amount(GRID / 2)));
        assert_eq!(Amount::parse_grid("0.000000000000000001"), Ok(Amount(1)));
        assert!(matches!(
            Amount::parse_grid("1.0000000000000000001"),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            Amount::parse_grid("-1"),
            Err(AmountError::NotANumber { .. })
        ));
        assert!(matches!(
            Amount::parse_grid("."),
            Err(AmountError::NotANumber { .. })
        ));
        assert!(matches!(
            Amount::parse_grid("1e5"),
            Err(AmountError::NotANumber { .. })
        ));
        assert!(matches!(
            Amount::parse_grid("999999999999999999999999999"),
            Err(AmountError::TooLarge { .. })
        ));
    }

    #[test]
    fn serializes_as_base_unit_string() {
        let json = serde_json::to_string(&Amount::grid(2)).unwrap();
        assert_eq!(json, "\"2000000000000000000\"");
        assert_eq!(
            serde_json::from_str::<Amount>(&json).unwrap(),
            Amount::grid(2)
        );
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(units in any::<u128>()) {
            let a = Amount(units);
            prop_assert_eq!(Amount::parse_grid(&a.to_string()), Ok(a));
        }
    }
}
