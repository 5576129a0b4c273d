//! Account addresses: the first 20 bytes of BLAKE3(public key), written in bech32 with the
//! human-readable prefix `grid` (for example `grid1qyq...`). The bech32 checksum catches typos.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32, Hrp};

use crate::encoding::{Decode, DecodeError, Encode, Reader};

/// The human-readable prefix of every address.
const HRP: &str = "grid";

/// A 20-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

/// A string that is not a Gridwork address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not bech32, or the checksum does not match (a typo).
    #[error(
        "`{input}` is not a valid address (bad bech32 or checksum; addresses look like grid1...)"
    )]
    Malformed {
        /// What was given.
        input: String,
    },
    /// Valid bech32 with another prefix.
    #[error("`{input}` has prefix `{prefix}`; Gridwork addresses start with `grid1`")]
    WrongPrefix {
        /// What was given.
        input: String,
        /// The prefix found.
        prefix: String,
    },
    /// Valid bech32 of the wrong length.
    #[error("`{input}` holds {len} bytes; an address holds 20")]
    WrongLength {
        /// What was given.
        input: String,
        /// Bytes found.
        len: usize,
    },
}

impl Address {
    /// The address of an ed25519 public key.
    pub fn from_public_key(key: &[u8; 32]) -> Address {
        let hash = blake3::hash(key);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash.as_bytes()[..20]);
        Address(out)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(HRP);
        match bech32::encode::<Bech32>(hrp, &self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hrp, data) = bech32::decode(s).map_err(|_| AddressError::Malformed {
            input: s.to_string(),
        })?;
        if hrp.as_str() != HRP {
            return Err(AddressError::WrongPrefix {
                input: s.to_string(),
                prefix: hrp.to_string(),
            });
        }
        let bytes: [u8; 20] =
            data.as_slice()
                .try_into()
                .map_err(|_| AddressError::WrongLength {
                    input: s.to_string(),
                    len: data.len(),
                })?;
        Ok(Address(bytes))
    }
}

impl Encode for Address {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0)
    }
}

impl Decode for Address {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Address(r.array()?))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bech32() {
        let a = Address::from_public_key(&[7; 32]);
        let s = a.to_string();
        assert!(s.starts_with("grid1"), "{s}");
        assert_eq!(s.parse::<Address>(), Ok(a));
    }

    #[test]
    fn rejects_a_typo() {
        let mut s = Address::from_public_key(&[7; 32]).to_string();
        let last = s.pop().map(|c| if c == 'q' { 'p' } else { 'q' });
        s.extend(last);
        assert!(matches!(
            s.parse::<Address>(),
            Err(AddressError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_another_prefix() {
        let s = bech32::encode::<Bech32>(Hrp::parse_unchecked("cosmos"), &[1; 20]).unwrap();
        assert!(matches!(
            s.parse::<Address>(),
            Err(AddressError::WrongPrefix { .. })
        ));
    }
}
