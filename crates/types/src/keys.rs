//! ed25519 keys and signatures.
//!
//! Verification is strict (`verify_strict`): it rejects small-order keys and non-canonical
//! signatures, so one signature has one encoding and a transaction hash cannot be malleated.
//! [`verify_batch`] checks many signatures at once and falls back to strict single checks to
//! name the bad ones.
//!
//! A known gap: the batch equation uses random weights and is not cofactored, so a signature
//! crafted with a small-order component in `R`, which the strict single check refuses, passes
//! a batch with probability at most 1/8. With one sequencer this only decides admission; before
//! validators verify each other's blocks, single and batch checks must share one rule
//! (ZIP-215, as in ed25519-zebra) so that every node reaches the same verdict.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::address::Address;
use crate::encoding::{Decode, DecodeError, Encode, Reader};

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// 32 bytes that are not a point on the curve.
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    BadSignature,
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_bytes().cmp(&other.to_bytes())
    }
}

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The account address of this key.
    pub fn address(&self) -> Address {
        Address::from_public_key(&self.to_bytes())
    }

    /// The key as an X25519 public key (its Montgomery form), for key agreement with
    /// [`Keypair::x25519_secret`] (the conversion age uses for ssh-ed25519 recipients).
    pub fn to_x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// Strictly verifies `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.0
            .verify_strict(msg, &sig.0)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.to_bytes()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    /// A key from 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 32] = hex::decode(s.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(KeyError::InvalidPublicKey)?;
        PublicKey::from_bytes(&bytes)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Encode for PublicKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes())
    }
}

impl Decode for PublicKey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        PublicKey::from_bytes(&r.array()?).map_err(|_| DecodeError::Invalid { what: "public key" })
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl Signature {
    /// The 64 bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }

    /// A signature from its 64 bytes (validity is checked at verification).
    pub fn from_bytes(bytes: &[u8; 64]) -> Signature {
        Signature(ed25519_dalek::Signature::from_bytes(bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_bytes()))
    }
}

impl Encode for Signature {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes())
    }
}

impl Decode for Signature {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Signature::from_bytes(&r.array()?))
    }
}

/// An ed25519 signing key with its public key.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Keypair {
        Keypair(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key whose secret is `seed` (deterministic: tests, dev accounts, keystore).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(&seed))
    }

    /// The secret seed. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The X25519 secret matching [`PublicKey::to_x25519`] (unclamped; clamp when
    /// multiplying). Handle with care.
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.0.to_scalar_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The account address.
    pub fn address(&self) -> Address {
        self.public().address()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg))
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

/// Verifies many `(key, message, signature)` triples, one result each.
///
/// The fast path is one batch verification of all; only when it fails are the items checked
/// one by one with [`PublicKey::verify`] to find which. Weak keys and non-canonical `s` skip
/// the batch and get the strict single check. See the module docs for the one case where a
/// batch can accept what the single check refuses.
pub fn verify_batch(items: &[(PublicKey, &[u8], Signature)]) -> Vec<Result<(), KeyError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items.iter().map(|(_, _, s)| s.0).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.0).collect();
    let no_weak_parts = items
        .iter()
        .all(|(k, _, s)| !k.0.is_weak() && s_is_canonical(s));
    if no_weak_parts && ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        return vec![Ok(()); items.len()];
    }
    items.iter().map(|(k, m, s)| k.verify(m, s)).collect()
}

/// Whether the scalar half of a signature is below the group order (reduced), as strict
/// verification requires.
fn s_is_canonical(sig: &Signature) -> bool {
    // The order l = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let bytes = sig.to_bytes();
    let s = &bytes[32..];
    for i in (0..32).rev() {
        if s[i] != L[i] {
            return s[i] < L[i];
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names_the_bad_signature() {
        let keys: Vec<Keypair> = (0..4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let msgs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        sigs[2] = keys[2].sign(b"something else");
        let items: Vec<_> = keys
            .iter()
            .zip(&msgs)
            .zip(&sigs)
            .map(|((k, m), s)| (k.public(), m.as_slice(), *s))
            .collect();
        let results = verify_batch(&items);
        assert_eq!(
            results,
            vec![Ok(()), Ok(()), Err(KeyError::BadSignature), Ok(())]
        );
    }

    #[test]
    fn batch_of_good_signatures_passes() {
        let k = Keypair::from_seed([9; 32]);
        let sig = k.sign(b"m");
        assert_eq!(verify_batch(&[(k.public(), b"m", sig)]), vec![Ok(())]);
    }
}
