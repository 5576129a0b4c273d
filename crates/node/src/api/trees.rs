//! Routes of trees on the data plane: pins (and a re-push's pin from the tree before) and
//! key grants, each written only by a holder of the tree's key.

use super::*;

#[utoipa::path(
    get,
    path = "/v1/trees/{cid}/pin",
    tag = "data",
    summary = "What the node keeps of a pinned tree",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The pin", body = PinView),
        (status = 400, description = "`bad_request`: not a tree id", body = ErrorBody),
        (status = 404, description = "`not_pinned`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn get_pin(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    // Unsigned, and a pin file may list two million chunks: reading, decoding and sorting it
    // draws on the client's part of the body budget.
    let size = usize::try_from(node.data().pin_file_bytes(&cid)).unwrap_or(usize::MAX);
    let _memory = budget.take_unsigned(size.saturating_mul(2)).await?;
    let view = {
        let node = node.clone();
        blocking(move || node.data().pin_view(&cid)).await?
    };
    match view {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_pinned",
            format!("tree {cid} is not pinned on this node"),
        )),
    }
}

/// Chunk ids of 32 bytes each, end to end, or a `bad_pin` error naming the length.
pub(super) fn chunk_ids(bytes: &[u8]) -> Result<Vec<Hash>, ApiError> {
    if bytes.len() % 32 != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_pin",
            format!(
                "a pin lists chunk ids of 32 bytes each; got {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Hash))
        .collect())
}

/// The pin's answer: until when, and what the pinner's account now keeps.
pub(super) fn pinned(node: &Node, cid: &Hash, until_ms: u64, pinner: &Address) -> Response {
    let (used, quota) = node.data().pinned_bytes(pinner);
    Json(PinAnswer {
        cid: *cid,
        until_ms,
        account_pinned_bytes: used,
        account_quota_bytes: quota,
    })
    .into_response()
}

#[utoipa::path(
    put,
    path = "/v1/trees/{cid}/pin",
    tag = "data",
    summary = "Pin a tree (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The tree's chunk ids, 32 bytes each; the digest is BLAKE3 of the body"),
    responses(
        (status = 200, description = "Pinned", body = PinAnswer),
        (status = 400, description = "`bad_request` (bad tree id or key proof), `bad_digest`, `key_proof_required`, `bad_pin`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`tree_incomplete`: a chunk named is not stored", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
pub(super) async fn pin_tree(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let path = format!("/v1/trees/{cid}/pin");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        frames::MAX_UPLOAD_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let pinner = write.signer;
    let ids = chunk_ids(&write.body)?;
    let until_ms = {
        let node = node.clone();
        blocking(move || node.data().pin_tree(&cid, &ids, &proof, &pinner)).await?
    };
    Ok(pinned(&node, &cid, until_ms, &pinner))
}

/// `PUT /v1/trees/{cid}/pin-from/{base}`: body `chunk_set [32] || added u32 LE || added ids
/// || removed ids` (docs/data-plane.md).
#[utoipa::path(
    put,
    path = "/v1/trees/{cid}/pin-from/{base}",
    tag = "data",
    summary = "Pin a tree as changes to a pinned base (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("base" = Hash, Path, description = "Base tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "chunk_set [32] || added count u32 LE || added ids || removed ids (docs/data-plane.md); the digest is BLAKE3 of the body"),
    responses(
        (status = 200, description = "Pinned", body = PinAnswer),
        (status = 400, description = "`bad_request` (bad tree ids or key proof), `bad_digest`, `key_proof_required`, `bad_pin`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`pin_base_gone`, `pin_set_mismatch`, `tree_incomplete`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
pub(super) async fn pin_tree_from(
    State(node): State<Node>,
    budget: Budget,
    Path((cid, base)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let base: Hash = parse("base tree id", &base)?;
    let path = format!("/v1/trees/{cid}/pin-from/{base}");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        frames::MAX_UPLOAD_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let (pinner, body) = (write.signer, &write.body);
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_pin",
            format!(
                "a pin from a base is the expected chunk set digest (32 bytes), the count of ids added (u32 LE), the ids added and the ids removed (32 bytes each); got {} bytes",
                body.len()
            ),
        )
    };
    let chunk_set = body
        .get(..32)
        .and_then(|b| b.try_into().ok())
        .map(Hash)
        .ok_or_else(bad)?;
    let added = body
        .get(32..36)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(bad)? as usize;
    let ids = chunk_ids(&body[36..])?;
    if added > ids.len() {
        return Err(bad());
    }
    let (added, removed) = ids.split_at(added);
    let (added, removed) = (added.to_vec(), removed.to_vec());
    let until_ms = {
        let node = node.clone();
        blocking(move || {
            node.data()
                .pin_tree_from(&cid, &base, &added, &removed, &chunk_set, &proof, &pinner)
        })
        .await?
    };
    Ok(pinned(&node, &cid, until_ms, &pinner))
}

#[utoipa::path(
    get,
    path = "/v1/trees/{cid}/keys",
    tag = "data",
    summary = "Data keys granted for a tree",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The grants, one per recipient", body = KeyGrants),
        (status = 400, description = "`bad_request`: not a tree id", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn get_grants(
    State(node): State<Node>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    Ok(Json(KeyGrants {
        keys: node.data().grants(&cid)?,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/trees/{cid}/keys",
    tag = "data",
    summary = "Grant a tree's data key to a recipient (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = KeyGrant, description = "The wrapped key; the digest is BLAKE3 of the body"),
    responses(
        (status = 204, description = "Granted", body = ()),
        (status = 400, description = "`bad_request` (bad tree id, key proof or body), `bad_digest`, `key_proof_required`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`tree_not_pinned`, `too_many_grants`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn post_grant(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let path = format!("/v1/trees/{cid}/keys");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("POST", &path),
        MAX_BODY_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let grant: KeyGrant = serde_json::from_slice(&write.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not a key grant: {e}"),
        )
    })?;
    node.data()
        .add_grants_as_holder(&cid, vec![grant], &proof)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
