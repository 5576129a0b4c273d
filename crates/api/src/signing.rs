//! Signed data-plane requests: the headers, and the message a write signs.

use gridwork_types::{Hash, PublicKey};

/// The header that signs a data-plane write (chunk uploads, pins, key grants):
/// `<public key hex>.<time ms>.<signature hex>` over [`signed_request_message`]. A node takes
/// such writes only from ledger accounts that hold funds or stake.
pub const SIGNATURE_HEADER: &str = "gridwork-signature";

/// The header that carries the digest a signed request signs (hex, see
/// [`signed_request_message`]), so a node checks the signer before it reads a byte of the
/// body, then checks the body against the digest.
pub const DIGEST_HEADER: &str = "gridwork-digest";

/// How far a signed request's time may be from the node's clock.
pub const SIGNATURE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// What a data-plane write signs: `"gridwork data request v2\n" || node key [32] || method ||
/// "\n" || path || "\n" || time_ms u64 LE || digest`, where `node` is the key of the node the
/// request is for (`node_key` in `GET /v1/chain`: a request signed for one node is refused
/// by every other) and `digest` is BLAKE3 of the chunk ids the request uploads (each chunk is
/// checked against its id) or else of its body. The digest also travels in [`DIGEST_HEADER`].
pub fn signed_request_message(
    node: &PublicKey,
    method: &str,
    path: &str,
    time_ms: u64,
    digest: &Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(96 + method.len() + path.len());
    m.extend_from_slice(b"gridwork data request v2\n");
    m.extend_from_slice(&node.to_bytes());
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(path.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&time_ms.to_le_bytes());
    m.extend_from_slice(digest.as_bytes());
    m
}

/// The value of [`SIGNATURE_HEADER`] for a request `key` signs for `node` at `time_ms`:
/// `public key "." time_ms "." hex signature` over [`signed_request_message`].
pub fn signature_header(
    key: &gridwork_types::Keypair,
    node: &PublicKey,
    method: &str,
    path: &str,
    time_ms: u64,
    digest: &Hash,
) -> String {
    let message = signed_request_message(node, method, path, time_ms, digest);
    format!(
        "{}.{time_ms}.{}",
        key.public(),
        hex::encode(key.sign(&message).to_bytes())
    )
}

/// The header that carries a request's proof that it holds a tree's data key (hex of
/// `DataKey::holder_proof` for the node's key), on `PUT /v1/trees/{cid}/pin` and `POST /v1/trees/{cid}/keys`.
pub const KEY_PROOF_HEADER: &str = "gridwork-key-proof";

/// Why a [`SIGNATURE_HEADER`] value does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// Malformed, or the signature does not verify; says which.
    #[error("the {SIGNATURE_HEADER} header {0}; it is <public key hex>.<time ms>.<signature hex>")]
    Bad(&'static str),
    /// Signed too far from the receiver's clock.
    #[error("the request was signed at {signed_ms} ms, {off_s} s from this clock; sign it again (and check the clock)")]
    Expired {
        /// When it was signed.
        signed_ms: u64,
        /// How far from the receiver's clock, in seconds.
        off_s: u64,
    },
}

/// The key that signed a request whose [`SIGNATURE_HEADER`] is `value`, for the receiver of
/// key `node` at its time `now_ms` (within [`SIGNATURE_WINDOW_MS`]).
pub fn verify_signature_header(
    value: &str,
    node: &PublicKey,
    method: &str,
    path: &str,
    digest: &Hash,
    now_ms: u64,
) -> Result<PublicKey, SignatureProblem> {
    let mut parts = value.split('.');
    let (Some(key), Some(time), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureProblem::Bad("has not three parts"));
    };
    let key: PublicKey = key
        .parse()
        .map_err(|_| SignatureProblem::Bad("names no valid public key"))?;
    let time_ms: u64 = time
        .parse()
        .map_err(|_| SignatureProblem::Bad("has no valid time"))?;
    let sig: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureProblem::Bad("has no 64-byte signature"))?;
    if now_ms.abs_diff(time_ms) > SIGNATURE_WINDOW_MS {
        return Err(SignatureProblem::Expired {
            signed_ms: time_ms,
            off_s: now_ms.abs_diff(time_ms) / 1000,
        });
    }
    let message = signed_request_message(node, method, path, time_ms, digest);
    key.verify(&message, &gridwork_types::Signature::from_bytes(&sig))
        .map_err(|_| {
            SignatureProblem::Bad(
                "does not verify for this request to this receiver (it signs the receiver's key)",
            )
        })?;
    Ok(key)
}
