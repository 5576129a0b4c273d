//! Routes of the data plane's chunks: uploads, reads, missing-chunk questions and fetches,
//! with the signatures and key proofs the data plane's writes carry (pins and key grants of
//! trees are in `trees.rs`).

use super::*;

/// The chunk ids a question names: `{"ids": [hex]}`, or (with `content-type:
/// application/octet-stream`) ids of 32 bytes end to end; with whether it was binary.
pub(super) fn asked_ids(headers: &HeaderMap, body: &[u8]) -> Result<(Vec<Hash>, bool), ApiError> {
    let binary = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if !binary {
        let Json(asked) = Json::<ChunkIds>::from_bytes(body).map_err(json_rejection)?;
        return Ok((asked.ids, false));
    }
    if body.len() % 32 != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_ids",
            format!(
                "a binary question is chunk ids of 32 bytes each; got {} bytes",
                body.len()
            ),
        ));
    }
    let ids = body
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Hash))
        .collect();
    Ok((ids, true))
}

/// `POST /v1/chunks/missing`: `{"ids": [hex]}` answered `{"missing": [hex]}`, or ids in the
/// binary form ([`asked_ids`]) answered with one bit per id asked, set when the node lacks it
/// (bit `i % 8` of byte `i / 8`): a fifth of the bytes, and none of the hex.
#[utoipa::path(
    post,
    path = "/v1/chunks/missing",
    tag = "data",
    summary = "Which of these chunks the node lacks",
    request_body(content((ChunkIds = "application/json"), (Binary = "application/octet-stream")), description = IDS_BODY_DOC),
    responses(
        (status = 200, description = "JSON: the ids lacking; binary: one bit per id asked, set when lacking (bit i % 8 of byte i / 8)", content((MissingChunks = "application/json"), (Binary = "application/octet-stream"))),
        (status = 400, description = "`malformed_json`, `bad_ids` (binary ids not a multiple of 32 bytes), `bad_body`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`too_many_ids` (more than 1,000,000), `body_too_large` (more than 16 MiB)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn missing_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (body, mut memory) = read_body_budgeted(
        body,
        MISSING_BODY_BYTES,
        declared_length(&headers),
        &budget,
        Reader::Unsigned,
    )
    .await?;
    let (ids, binary) = asked_ids(&headers, &body)?;
    drop(body);
    if ids.len() > 1_000_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ids",
            "ask about at most 1,000,000 chunks at once",
        ));
    }
    // Unsigned and up to 16 MiB each way: the question's share carries over to its ids (no
    // larger than the body they were read from), then the answer's is added (a question that
    // cannot get its share is told `busy` and dropped; one that asked the client's part for
    // more while holding its body would wait on itself on a small budget). The store is asked
    // off the async threads.
    memory.shrink(32 * ids.len());
    let answer_bytes = if binary {
        ids.len().div_ceil(8)
    } else {
        67 * ids.len() + 16
    };
    memory.merge(budget.take_unsigned(answer_bytes).await?);
    let reader = node.clone();
    let (ids, missing) = blocking(move || {
        let missing = reader.data().missing_chunks(&ids)?;
        Ok((ids, missing))
    })
    .await?;
    let answer = if binary {
        let lacking: std::collections::HashSet<&Hash> = missing.iter().collect();
        let mut bits = vec![0u8; ids.len().div_ceil(8)];
        for (i, id) in ids.iter().enumerate() {
            if lacking.contains(id) {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        bits
    } else {
        serde_json::to_vec(&MissingChunks { missing }).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?
    };
    drop(ids);
    memory.shrink(answer.len());
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        held_body(Bytes::from(answer), memory),
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/v1/chunks/{id}",
    tag = "data",
    summary = "Upload one chunk (signed)",
    params(
        ("id" = Hash, Path, description = "Chunk id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The sealed chunk; the digest is BLAKE3 of its id"),
    responses(
        (status = 201, description = "Stored", body = ()),
        (status = 400, description = "`bad_request` (not a chunk id), `bad_digest`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large` (more than 8 MiB)", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`, `chunk_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
pub(super) async fn put_chunk(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: Hash = parse("chunk id", &id)?;
    let path = format!("/v1/chunks/{id}");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        MAX_CHUNK_BYTES,
    )
    .await?;
    write.expect(&ids_digest([id].iter()))?;
    node.metrics().data_received(write.body.len());
    blocking(move || node.data().put_chunk_by(&id, &write.body, &write.signer)).await?;
    Ok(StatusCode::CREATED.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/chunks/{id}",
    tag = "data",
    summary = "One chunk, or a byte range of it",
    params(
        ("id" = Hash, Path, description = "Chunk id: 64 hex digits"),
        ("range" = Option<String>, Header, description = "One range: `bytes=a-b`, `bytes=a-` or `bytes=-n`"),
    ),
    responses(
        (status = 200, description = "The sealed chunk", content_type = "application/octet-stream", body = Binary),
        (status = 206, description = "The range asked", content_type = "application/octet-stream", body = Binary),
        (status = 400, description = "`bad_request`: not a chunk id", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 416, description = "The range cannot be served; Content-Range names the size"),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn get_chunk(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: Hash = parse("chunk id", &id)?;
    // Unsigned, and held until the client takes it: a chunk read draws on the body budget
    // like a fetch answer, or a thousand readers that never read would hold 8 MiB each.
    let mut memory = budget.take_unsigned(MAX_CHUNK_BYTES).await?;
    let reader = node.clone();
    let found = blocking(move || reader.data().chunk(&id)).await?;
    let Some(bytes) = found else {
        return Err(ApiError::not_found(format!("chunk {id}")));
    };
    memory.shrink(bytes.len());
    let bytes = Bytes::from(bytes);
    let octets = (header::CONTENT_TYPE, "application/octet-stream");
    let ranges = (header::ACCEPT_RANGES, "bytes");
    let Some(range) = headers.get(header::RANGE) else {
        node.metrics().data_served(bytes.len());
        return Ok(([octets, ranges], held_body(bytes, memory)).into_response());
    };
    let total = bytes.len();
    match byte_range(range.to_str().unwrap_or_default(), total) {
        Some((start, end)) => {
            node.metrics().data_served(end + 1 - start);
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [
                    octets,
                    ranges,
                    (
                        header::CONTENT_RANGE,
                        &format!("bytes {start}-{end}/{total}") as &str,
                    ),
                ],
                held_body(bytes.slice(start..=end), memory),
            )
                .into_response())
        }
        None => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
    }
}

/// The inclusive byte range a `Range: bytes=...` header asks of `total` bytes (one range:
/// `a-b`, `a-`, or the last `-n`), or `None` if it cannot be served.
pub(super) fn byte_range(header: &str, total: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if total == 0 || spec.contains(',') {
        return None;
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (total.checked_sub(n.min(total))?, total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

/// `POST /v1/chunks`: several chunks in one body (frames, see `gridwork_api::frames`).
#[utoipa::path(
    post,
    path = "/v1/chunks",
    tag = "data",
    summary = "Upload several chunks (signed)",
    params(
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "Frames (gridwork_api::frames); the digest is BLAKE3 of the frames' chunk ids in order"),
    responses(
        (status = 200, description = "Stored", body = ChunksStored),
        (status = 400, description = "`bad_digest`, `bad_frames`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`, `chunk_mismatch` (a chunk is not its id)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
pub(super) async fn put_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("POST", "/v1/chunks"),
        frames::MAX_UPLOAD_BYTES + 1024 * 1024,
    )
    .await?;
    let parsed = frames::parse_frames(&write.body, MAX_CHUNK_BYTES)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_frames", e.to_string()))?;
    write.expect(&ids_digest(parsed.iter().map(|(id, _)| id)))?;
    node.metrics().data_received(write.body.len());
    let stored = blocking(move || {
        let mut n = 0u64;
        for (id, frame) in &parsed {
            if let frames::Frame::Chunk(bytes) = frame {
                node.data().put_chunk_by(id, bytes, &write.signer)?;
                n += 1;
            }
        }
        // Uploads are synced as they arrive, every 64 MiB: the disk writes while the push
        // goes on, and the pin's sync finds little left (it took seconds at the end of a
        // 1 GiB push), and the push's pace is the disk's.
        node.data().sync_chunks_every(64 << 20)?;
        Ok(n)
    })
    .await?;
    Ok(Json(ChunksStored { stored }).into_response())
}

/// `POST /v1/chunks/fetch {"ids": [...]}`: several chunks in one response (frames).
///
/// A fetch signed by a funded account (`gridwork-signature` over the body's digest) is
/// answered up to [`frames::MAX_RESPONSE_BYTES`]; an unsigned one up to
/// [`frames::UNSIGNED_RESPONSE_BYTES`] (the rest deferred): a stranger's few ids cannot make
/// the node build and hold 64 MiB. The answer holds its share of the body budget until sent.
#[utoipa::path(
    post,
    path = "/v1/chunks/fetch",
    tag = "data",
    summary = "Fetch several chunks",
    params(
        ("gridwork-signature" = Option<String>, Header, description = FETCH_SIGNATURE_DOC),
    ),
    request_body(content((ChunkIds = "application/json"), (Binary = "application/octet-stream")), description = IDS_BODY_DOC),
    responses(
        (status = 200, description = "Frames (gridwork_api::frames): each id's chunk, missing, or deferred (ask again)", content_type = "application/octet-stream", body = Binary),
        (status = 400, description = "`malformed_json`, `bad_ids`, `bad_body`", body = ErrorBody),
        (status = 401, description = "`bad_signature`, `signature_expired` (only when signed)", body = ErrorBody),
        (status = 403, description = "`unfunded_account` (only when signed)", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`too_many_ids`, `body_too_large` (more than 1 MiB)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn fetch_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The ids are read on the unsigned part whether or not the request is signed: the
    // signature covers the body, so it is checked once the body is in.
    let (body, question) = read_body_budgeted(
        body,
        FETCH_BODY_BYTES,
        declared_length(&headers),
        &budget,
        Reader::Unsigned,
    )
    .await?;
    let (ids, _) = asked_ids(&headers, &body)?;
    if ids.len() > frames::MAX_FETCH_IDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ids",
            format!("fetch at most {} chunks at once", frames::MAX_FETCH_IDS),
        ));
    }
    let signed = headers.contains_key(SIGNATURE_HEADER);
    let max_bytes = if signed {
        data_signer(
            &node,
            &headers,
            "POST",
            "/v1/chunks/fetch",
            &Hash::of(&body),
        )?;
        frames::MAX_RESPONSE_BYTES
    } else {
        frames::UNSIGNED_RESPONSE_BYTES
    };
    // Room for the largest answer: the cap, one chunk past it, a frame header per id.
    let room = max_bytes + MAX_CHUNK_BYTES + 37 * ids.len();
    let mut memory = if signed {
        budget.take(room).await?
    } else {
        budget.take_unsigned(room).await?
    };
    drop((body, question));
    let reader = node.clone();
    let out = blocking(move || reader.data().fetch_answer(&ids, max_bytes)).await?;
    // The buffer is what memory holds, and a pooled one may be larger than the answer.
    memory.shrink(out.capacity());
    let length = out.len();
    node.metrics().data_served(length);
    // The body goes back to the buffer pool once sent, and its share of the budget with it.
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        held_body(frames::share(out), memory),
    )
        .into_response())
}

/// `PUT /v1/trees/{cid}/pin`: the body is the tree's chunk ids, 32 bytes each; the node
/// keeps them for its retention period from now.
/// The funded ledger account that signed a data-plane write (`gridwork-signature`), or why
/// the write is refused.
pub(super) fn data_signer(
    node: &Node,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    digest: &Hash,
) -> Result<Address, ApiError> {
    let address = request_signer(node, headers, method, path, digest)?;
    let account = node.ledger().account(&address);
    let held = Amount(
        account
            .account
            .balance
            .0
            .saturating_add(account.account.stake_locked.0),
    );
    let min = node.data().data_min_funds();
    if held < min {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unfunded_account",
            format!(
                "{address} holds {held} (balance and stake) on the ledger; the node stores data \
                 only for accounts holding at least {min} (send it some GRID first)"
            ),
        ));
    }
    Ok(address)
}

/// The account that signed a request (`gridwork-signature` over [`signed_request_message`]
/// for this node, within the time window), or why it is refused.
pub(super) fn request_signer(
    node: &Node,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    digest: &Hash,
) -> Result<Address, ApiError> {
    let refused = |status, code, message: String| ApiError::new(status, code, message);
    let value = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(signature_required)?;
    use gridwork_api::SignatureProblem;
    match gridwork_api::verify_signature_header(
        value,
        &node.keys().public_key(),
        method,
        path,
        digest,
        crate::now_ms(),
    ) {
        Ok(key) => Ok(key.address()),
        Err(e @ SignatureProblem::Expired { .. }) => Err(refused(
            StatusCode::UNAUTHORIZED,
            "signature_expired",
            e.to_string(),
        )),
        Err(e @ SignatureProblem::Bad(_)) => Err(refused(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{e} (a node's requests sign the node_key of GET /v1/chain)"),
        )),
    }
}

pub(super) fn signature_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "signature_required",
        format!(
            "uploads, pins and key grants must be signed by a funded ledger account in the \
             {SIGNATURE_HEADER} header (gridwork signs with --key)"
        ),
    )
}

/// BLAKE3 of the ids, in order: what an upload signs.
pub(super) fn ids_digest<'a>(ids: impl Iterator<Item = &'a Hash>) -> Hash {
    let bytes: Vec<u8> = ids.flat_map(|id| id.0).collect();
    Hash::of(&bytes)
}

/// The holder proof a request to pin a tree or share its key carries.
pub(super) fn key_proof(headers: &HeaderMap) -> Result<Hash, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "key_proof_required",
            format!(
                "pinning a tree or sharing its key needs the {KEY_PROOF_HEADER} header: the hex of \
                 BLAKE3 derive_key(\"gridwork tree holder proof v2\", data key || tree id || \
                 node key) (gridwork's client sends it)"
            ),
        )
    };
    let value = headers
        .get(KEY_PROOF_HEADER)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    parse("key proof", value)
}
