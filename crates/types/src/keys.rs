//! ed25519 keys and signatures.
//!
//! # One verdict per signature
//!
//! Verification follows ZIP-215 (through `ed25519-zebra`), single and batched alike: `S` must
//! be canonical (below the group order), `A` and `R` may be any encoding of a curve point, and
//! the check is cofactored (`[8][S]B = [8]R + [8][k]A`). Because the batch equation is the
//! single one times random weights, a batch accepts exactly what one-by-one checks accept:
//! admission, block building and every replica reach the same verdict on every signature,
//! including crafted ones with small-order components (`dalek`'s strict single check and its
//! uncofactored batch disagreed on those with probability 1/8).
//!
//! On top of ZIP-215 one rule is ours: a public key of small order is refused when it is
//! decoded ([`PublicKey::from_bytes`]). Anyone could sign for such a key, so no account may
//! have one; the rule depends on the key's bytes alone, so it too is the same everywhere.
//!
//! A third party cannot re-encode a valid signature into another valid one (`k` hashes `R`'s
//! bytes, and `S` must be canonical), so a transaction's hash is fixed once it is signed.

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
    /// The key from its 32 bytes. Points of small order are refused: anybody can sign for
    /// them.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        match VerifyingKey::from_bytes(bytes) {
            Ok(key) if !key.is_weak() => Ok(PublicKey(key)),
            _ => Err(KeyError::InvalidPublicKey),
        }
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

    /// Verifies `sig` over `msg` under ZIP-215 (see the module docs).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        ed25519_zebra::VerificationKey::try_from(self.to_bytes())
            .and_then(|key| key.verify(&sig.0, msg))
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
/// The fast path is one ZIP-215 batch verification of all; only when it fails are the items
/// checked one by one with [`PublicKey::verify`] to find which. Both follow the same rule, so
/// the results are those of checking each alone (see the module docs).
pub fn verify_batch(items: &[(PublicKey, &[u8], Signature)]) -> Vec<Result<(), KeyError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, msg, sig) in items {
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(key.to_bytes()),
            sig.0,
            *msg,
        ));
    }
    if batch.verify(rand_core::OsRng).is_ok() {
        return vec![Ok(()); items.len()];
    }
    items.iter().map(|(k, m, s)| k.verify(m, s)).collect()
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

    /// An order-8 point (one of the eight small-order points of the curve).
    const ORDER_8: &str = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";

    fn small_order_point() -> curve25519_dalek::EdwardsPoint {
        let bytes: [u8; 32] = hex::decode(ORDER_8).unwrap().try_into().unwrap();
        let t = curve25519_dalek::edwards::CompressedEdwardsY(bytes)
            .decompress()
            .unwrap();
        use curve25519_dalek::traits::IsIdentity;
        assert!(t.is_small_order() && !t.is_identity());
        t
    }

    /// A signature by `key` whose `R` carries a small-order component: `R = [r]B + T`,
    /// `S = r + k a`. The cofactorless equation fails by `T`; the cofactored one holds.
    fn signature_with_torsion_in_r(key: &Keypair, msg: &[u8]) -> Signature {
        use curve25519_dalek::{constants::ED25519_BASEPOINT_POINT as B, Scalar};
        use sha2::{Digest, Sha512};
        let a = key.0.to_scalar();
        let r = Scalar::from_hash(Sha512::new().chain_update(b"nonce").chain_update(msg));
        let big_r = (r * B + small_order_point()).compress();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(key.public().to_bytes())
                .chain_update(msg),
        );
        let s = r + k * a;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(big_r.as_bytes());
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    /// A signature by `key` whose `R` is a small-order point in a non-canonical encoding
    /// (`y + p` for `y` = 1, the identity, or 0, an order-4 point; only `y < 19` have one):
    /// `S = k a`, so `[8]S B = [8]R + [8]k A` holds. ZIP-215 decodes non-canonical points,
    /// strict decoders refuse them.
    fn signature_with_non_canonical_r(key: &Keypair, msg: &[u8], y: u8) -> Signature {
        use curve25519_dalek::Scalar;
        use sha2::{Digest, Sha512};
        // p = 2^255 - 19, little-endian, plus y.
        let mut big_r = [0xffu8; 32];
        big_r[0] = 0xed + y;
        big_r[31] = 0x7f;
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(big_r)
                .chain_update(key.public().to_bytes())
                .chain_update(msg),
        );
        let s = k * key.0.to_scalar();
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&big_r);
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    /// The same signature with `S + l` (not reduced): the same equation, another encoding.
    fn with_unreduced_s(sig: &Signature) -> Signature {
        // l, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut bytes = sig.to_bytes();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(bytes[32 + i]) + u16::from(L[i]) + carry;
            bytes[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        Signature::from_bytes(&bytes)
    }

    /// Test vectors for the signatures where implementations part ways. Each must get one
    /// verdict from the single check and from every batch it sits in, whatever the batch's
    /// random weights (64 batches: the old uncofactored batch accepted the first vector with
    /// probability 1/8 each time while the strict single check refused it).
    #[test]
    fn single_and_batch_checks_agree_on_small_order_and_non_canonical_signatures() {
        let key = Keypair::from_seed([5; 32]);
        let others: Vec<Keypair> = (10..13u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let msg = b"transfer 1 GRID".as_slice();
        let torsion = signature_with_torsion_in_r(&key, msg);
        let honest = key.sign(msg);
        let vectors = [
            ("torsion in R", torsion, Ok(())),
            (
                "S not reduced",
                with_unreduced_s(&honest),
                Err(KeyError::BadSignature),
            ),
            (
                "torsion in R, S not reduced",
                with_unreduced_s(&torsion),
                Err(KeyError::BadSignature),
            ),
            ("honest", honest, Ok(())),
            (
                "non-canonical R: the identity as y = p + 1",
                signature_with_non_canonical_r(&key, msg, 1),
                Ok(()),
            ),
            (
                "non-canonical R: an order-4 point as y = p",
                signature_with_non_canonical_r(&key, msg, 0),
                Ok(()),
            ),
        ];
        // What changed: dalek's strict check refuses the torsion and non-canonical vectors.
        assert!(key.public().0.verify_strict(msg, &torsion.0).is_err());
        for (_, sig, _) in &vectors[4..] {
            assert!(key.public().0.verify_strict(msg, &sig.0).is_err());
        }
        for (name, sig, verdict) in &vectors {
            assert_eq!(key.public().verify(msg, sig), *verdict, "{name}: single");
            for _ in 0..64 {
                let mut items: Vec<(PublicKey, &[u8], Signature)> = others
                    .iter()
                    .map(|k| (k.public(), msg, k.sign(msg)))
                    .collect();
                items.insert(1, (key.public(), msg, *sig));
                let results = verify_batch(&items);
                assert_eq!(results[1], *verdict, "{name}: batch");
                assert!(results.iter().enumerate().all(|(i, r)| i == 1 || r.is_ok()));
            }
        }
    }

    /// Anyone can sign for a small-order key, so no transaction may carry one.
    #[test]
    fn small_order_public_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let order_8: [u8; 32] = hex::decode(ORDER_8).unwrap().try_into().unwrap();
        for bytes in [identity, order_8] {
            assert_eq!(
                PublicKey::from_bytes(&bytes),
                Err(KeyError::InvalidPublicKey)
            );
            assert!(<PublicKey as Decode>::from_bytes(&bytes).is_err());
        }
    }

    #[test]
    fn batch_of_good_signatures_passes() {
        let k = Keypair::from_seed([9; 32]);
        let sig = k.sign(b"m");
        assert_eq!(verify_batch(&[(k.public(), b"m", sig)]), vec![Ok(())]);
    }
}
