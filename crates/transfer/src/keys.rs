//! Data keys and their wrapping for recipients.
//!
//! Each tree is sealed under one random 32-byte data key. A recipient gets the key wrapped
//! for its account key: an ephemeral X25519 key agrees a secret with the recipient's ed25519
//! key in Montgomery form; `BLAKE3::derive_key("gridwork key wrap v1", shared || ephemeral ||
//! recipient)` keys a ChaCha20-Poly1305 encryption (zero nonce: the key is used once) of the
//! data key.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use gridwork_types::{Address, Hash, Keypair, PublicKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// The key a tree's chunks are sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// The key of a tree whose plaintext digest ([`crate::tree_digest`]) is `digest`, bound
    /// to `context` (a job and task): whoever produces the same tree in the same context
    /// derives the same key, so equal results get equal content ids; without the plaintext
    /// (or a grant) nobody can derive it.
    pub fn convergent(context: &[u8], digest: &Hash) -> DataKey {
        let mut material = Vec::with_capacity(context.len() + 32);
        material.extend_from_slice(context);
        material.extend_from_slice(digest.as_bytes());
        DataKey(blake3::derive_key(
            "gridwork convergent tree key v1",
            &material,
        ))
    }

    /// A fresh random key.
    pub fn generate() -> DataKey {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        DataKey(k)
    }

    /// The proof, for tree `cid` on the node whose key is `node`, that a request comes from
    /// a holder of this key: `BLAKE3::derive_key("gridwork tree holder proof v2", key || cid
    /// || node key)`. A node keeps only its [`proof_lock`] (from the first pin) and lets a
    /// request pin the tree again or add key grants only if its proof opens that lock, so
    /// nobody without the key can fill a tree's grants or extend its retention. It reveals
    /// nothing of the key, differs per tree, and differs per node: a node that saw it cannot
    /// replay it to another.
    pub fn holder_proof(&self, cid: &Hash, node: &PublicKey) -> Hash {
        let mut material = [0u8; 96];
        material[..32].copy_from_slice(&self.0);
        material[32..64].copy_from_slice(cid.as_bytes());
        material[64..].copy_from_slice(&node.to_bytes());
        Hash(blake3::derive_key(
            "gridwork tree holder proof v2",
            &material,
        ))
    }
}

impl DataKey {
    /// A job's claim that its requester holds this key for the input tree `cid`
    /// ([`gridwork_types::DataInput::claim`]): only a holder can make it, it names the
    /// requester (a thief who copies it into its own job fails the check), and it reveals
    /// nothing of the key or of the holder proofs.
    pub fn input_claim(&self, cid: &Hash, requester: &Address) -> Hash {
        let mut material = [0u8; 84];
        material[..32].copy_from_slice(&self.0);
        material[32..64].copy_from_slice(cid.as_bytes());
        material[64..].copy_from_slice(&requester.0);
        Hash(blake3::derive_key("gridwork job input claim v1", &material))
    }
}

/// What a node keeps of a tree's [`DataKey::holder_proof`]: `BLAKE3(proof)`. Knowing it
/// does not let anyone make the proof.
pub fn proof_lock(proof: &Hash) -> Hash {
    Hash::of(proof.as_bytes())
}

/// A data key wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Who can unwrap it.
    pub recipient: Address,
    /// The ephemeral X25519 public key, hex.
    pub ephemeral: String,
    /// The encrypted data key, hex.
    pub ciphertext: String,
}

fn wrapping_cipher(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> ChaCha20Poly1305 {
    let mut material = Vec::with_capacity(96);
    material.extend_from_slice(shared);
    material.extend_from_slice(ephemeral);
    material.extend_from_slice(recipient);
    let key = blake3::derive_key("gridwork key wrap v1", &material);
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// Wraps `key` for `recipient`.
///
/// Deterministic: the ephemeral secret is derived from the key and the recipient, so whoever
/// wraps one key for one recipient makes the same grant. Sharing again is then a no-op on the
/// node (identical grants are kept once), not one more entry in the tree's bounded grant
/// list; and the node can re-post its hand-off grants without piling them up. Anyone able to
/// derive the ephemeral secret already holds the key, and the same plaintext under the same
/// cipher key gives the same ciphertext: nothing but "the same key again" is revealed.
pub fn wrap_key(key: &DataKey, recipient: &PublicKey) -> WrappedKey {
    let recipient_x = recipient.to_x25519();
    let mut material = [0u8; 64];
    material[..32].copy_from_slice(&key.0);
    material[32..].copy_from_slice(&recipient_x);
    let secret = blake3::derive_key("gridwork key wrap ephemeral v1", &material);
    let ephemeral = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
    let shared = MontgomeryPoint(recipient_x).mul_clamped(secret).to_bytes();
    let ciphertext = wrapping_cipher(&shared, &ephemeral, &recipient_x)
        .encrypt(Nonce::from_slice(&[0u8; 12]), key.0.as_slice())
        .unwrap_or_default();
    WrappedKey {
        recipient: recipient.address(),
        ephemeral: hex(&ephemeral),
        ciphertext: hex(&ciphertext),
    }
}

/// Unwraps a data key with the recipient's keypair; `None` if it was not wrapped for it.
pub fn unwrap_key(wrapped: &WrappedKey, me: &Keypair) -> Option<DataKey> {
    let ephemeral: [u8; 32] = unhex(&wrapped.ephemeral)?.try_into().ok()?;
    let ciphertext = unhex(&wrapped.ciphertext)?;
    let shared = MontgomeryPoint(ephemeral)
        .mul_clamped(me.x25519_secret())
        .to_bytes();
    let plain = wrapping_cipher(&shared, &ephemeral, &me.public().to_x25519())
        .decrypt(Nonce::from_slice(&[0u8; 12]), ciphertext.as_slice())
        .ok()?;
    Some(DataKey(plain.try_into().ok()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_unwraps() {
        let key = DataKey::generate();
        let (alice, bob) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let wrapped = wrap_key(&key, &alice.public());
        assert_eq!(wrapped.recipient, alice.address());
        assert_eq!(unwrap_key(&wrapped, &alice), Some(key));
        assert_eq!(unwrap_key(&wrapped, &bob), None);
    }

    #[test]
    fn holder_proofs_differ_per_key_tree_and_node_and_open_only_their_lock() {
        let (key, other) = (DataKey::generate(), DataKey::generate());
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        let (node, second) = (
            Keypair::from_seed([3; 32]).public(),
            Keypair::from_seed([4; 32]).public(),
        );
        let lock = proof_lock(&key.holder_proof(&a, &node));
        assert_eq!(
            proof_lock(&key.holder_proof(&a, &node)),
            lock,
            "deterministic"
        );
        assert_ne!(
            proof_lock(&key.holder_proof(&b, &node)),
            lock,
            "bound to the tree"
        );
        assert_ne!(
            proof_lock(&other.holder_proof(&a, &node)),
            lock,
            "bound to the key"
        );
        assert_ne!(
            proof_lock(&key.holder_proof(&a, &second)),
            lock,
            "bound to the node: a node cannot replay what it was sent to another"
        );
        assert_ne!(
            key.holder_proof(&a, &node),
            lock,
            "the lock is not the proof"
        );
    }
}
