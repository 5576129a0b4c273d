//! Routes of the ledger and the market: transactions, accounts, blocks, jobs, providers,
//! declines and task logs.

use super::*;

#[utoipa::path(
    post,
    path = "/v1/txs",
    tag = "chain",
    summary = "Submit a signed transaction to the mempool",
    request_body = SubmitTx,
    responses(
        (status = 202, description = "Accepted into the mempool", body = Submitted),
        (status = 400, description = "`malformed_json` (not a SubmitTx), `malformed_transaction` (not hex, or not a transaction)", body = ErrorBody),
        (status = 403, description = "`input_not_held`: a job names an input tree whose key the node was not given", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`already_pending`: the same transaction waits in the mempool", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `transaction_too_large`", body = ErrorBody),
        (status = 422, description = "The ledger refuses it; the code names why (`bad_signature`, `nonce_replayed`, `nonce_future`, `fee_too_low`, `insufficient_balance`, ...)", body = ErrorBody),
        (status = 429, description = "`sender_mempool_full`: the sender has as many transactions pending as one account may", body = ErrorBody),
        (status = 503, description = "`mempool_full`, `mempool_underpriced` (the pool is full: the message names the fee that takes the place of cheaper transactions), `halted`", body = ErrorBody),
    ),
)]
pub(super) async fn submit_tx(
    State(node): State<Node>,
    body: Result<Json<SubmitTx>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(json_rejection)?;
    let bytes = hex::decode(body.tx.trim())
        .map_err(|e| AdmitError::Malformed(format!("`tx` is not hex: {e}")))?;
    let hash = node.submit_bytes(&bytes)?;
    Ok((StatusCode::ACCEPTED, Json(Submitted { hash })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/txs/{hash}",
    tag = "chain",
    summary = "A transaction, pending or committed",
    params(
        ("hash" = Hash, Path, description = "Transaction hash: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The transaction and, once committed, its receipt", body = TxStatus),
        (status = 400, description = "`bad_request`: not a hash", body = ErrorBody),
        (status = 404, description = "`not_found`: neither pending nor in a block", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn get_tx(
    State(node): State<Node>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash: Hash = parse("transaction hash", &hash)?;
    match node.ledger().tx(&hash)? {
        Some(found) => Ok(Json(views::tx(hash, found)).into_response()),
        None => Err(ApiError::not_found(format!("transaction {hash}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{address}",
    tag = "chain",
    summary = "An account",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "The account (all zero if it never held anything)", body = AccountView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
    ),
)]
pub(super) async fn get_account(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    let now = node.ledger().account(&address);
    Ok(Json(views::account(address, &now)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{address}/storage",
    tag = "data",
    summary = "What the node stores for an account",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "Pinned and pending bytes, and the quota", body = StorageView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
    ),
)]
pub(super) async fn get_storage(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    Ok(Json(node.data().storage(&address)).into_response())
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) limit: Option<u32>,
    pub(super) before: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/blocks",
    tag = "chain",
    summary = "Recent blocks, newest first",
    params(
        ("limit" = Option<u32>, Query, description = "At most this many (default 20; more than 1000 is 1000)"),
        ("before" = Option<u64>, Query, description = "Only blocks below this height"),
    ),
    responses(
        (status = 200, description = "Block headers, newest first", body = BlockList),
        (status = 400, description = "`bad_request`: a query parameter is not a number", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn list_blocks(
    State(node): State<Node>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = q.limit.unwrap_or(20).min(1000) as usize;
    Ok(Json(BlockList {
        blocks: (node.ledger().headers(limit, q.before)?)
            .iter()
            .map(|h| BlockView::new(h, None))
            .collect(),
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/blocks/{id}",
    tag = "chain",
    summary = "A block by height or hash",
    params(
        ("id" = String, Path, pattern = "^(latest|[0-9]{1,20}|(0x)?[0-9a-fA-F]{64})$", description = "`latest`, a height, or a block hash"),
    ),
    responses(
        (status = 200, description = "The block header and its transaction hashes", body = BlockView),
        (status = 400, description = "`bad_request`: not a block id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such block", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub(super) async fn get_block(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: BlockId = id
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let Some((height, header)) = node.ledger().block_header(id)? else {
        return Err(ApiError::not_found("block"));
    };
    // Unsigned, and a full block's answer is over a megabyte: it draws on the body budget
    // like a chunk read, or readers that never read would each hold one. The share is taken
    // from the header's count before the hashes are read.
    let count = header.tx_count as usize;
    let mut memory = budget
        .take_unsigned(BLOCK_JSON_BYTES + BLOCK_JSON_BYTES_PER_TX * count)
        .await?;
    let block = BlockView::new(&header, node.ledger().block_tx_hashes(height)?);
    let mut json = Vec::with_capacity(BLOCK_JSON_BYTES + BLOCK_JSON_BYTES_PER_TX * count);
    serde_json::to_writer(&mut json, &block).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding block: {e}"),
        )
    })?;
    memory.shrink(json.capacity());
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        held_body(Bytes::from(json), memory),
    )
        .into_response())
}

/// What a block's JSON takes besides its transactions' hashes (the header's fields).
pub(super) const BLOCK_JSON_BYTES: usize = 1024;

/// What each transaction hash takes in a block's JSON (64 hex digits, quotes and a comma).
pub(super) const BLOCK_JSON_BYTES_PER_TX: usize = 67;

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job and its tasks",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "`bad_request`: not a job id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job", body = ErrorBody),
    ),
)]
pub(super) async fn get_job(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Hash = parse("job id", &id)?;
    match views::job_on(&node, &id) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::not_found(format!("job {id}"))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/declines",
    tag = "jobs",
    summary = "A provider says why it will not bid",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
    ),
    request_body = PostDecline,
    responses(
        (status = 204, description = "Recorded", body = ()),
        (status = 400, description = "`bad_request` (bad job id, key or signature hex), `malformed_json`", body = ErrorBody),
        (status = 401, description = "`signature_expired`: `time_ms` more than 10 minutes from the node's clock", body = ErrorBody),
        (status = 403, description = "`not_a_provider`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`bad_signature`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn post_decline(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: Result<Json<PostDecline>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id: Hash = parse("job id", &id)?;
    let Json(body) = body.map_err(json_rejection)?;
    let (key, sig) = signer(&body.public_key, &body.signature)?;
    let now = crate::now_ms();
    if now.abs_diff(body.time_ms) > SIGNATURE_WINDOW_MS {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_expired",
            format!(
                "the decline was signed at {} ms, {} s from the node's clock; sign it again (and check the clock)",
                body.time_ms,
                now.abs_diff(body.time_ms) / 1000
            ),
        ));
    }
    node.records()
        .decline(&id, &key, &body.reason, body.time_ms, &sig)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A request's signer: its public key and signature from hex.
pub(super) fn signer(
    public_key: &str,
    signature: &str,
) -> Result<(PublicKey, Signature), ApiError> {
    let bad = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} is not valid hex of the right length"),
        )
    };
    let key: [u8; 32] = hex::decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("public_key"))?;
    let key = PublicKey::from_bytes(&key).map_err(|_| bad("public_key"))?;
    let sig: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature"))?;
    Ok((key, Signature::from_bytes(&sig)))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/tasks/{task}/logs",
    tag = "jobs",
    summary = "An executor or council member appends its run's output",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
        ("task" = u32, Path, description = "Task index"),
    ),
    request_body = PostLog,
    responses(
        (status = 200, description = "Appended; the size of the log now", body = LogAppended),
        (status = 400, description = "`bad_request` (bad job id, task index, key or signature hex), `malformed_json`", body = ErrorBody),
        (status = 403, description = "`not_assigned`: the signer neither executes nor checks this task", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job or task", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`log_gap`: `offset` is past the end of the node's copy", body = ErrorBody),
        (status = 413, description = "`log_full`, `body_too_large`", body = ErrorBody),
        (status = 422, description = "`bad_signature`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn post_log(
    State(node): State<Node>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<PostLog>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, task) = task_path(path)?;
    let Json(body) = body.map_err(json_rejection)?;
    let (key, sig) = signer(&body.public_key, &body.signature)?;
    let size = node.records().append_log(&id, task, &body, &key, &sig)?;
    Ok(Json(LogAppended { size }).into_response())
}

/// The job id and task index of a task's path, with errors the API reports (axum's own
/// answer to a task index that is not a number is plain text).
pub(super) fn task_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Hash, u32), ApiError> {
    let Path((id, task)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok((parse("job id", &id)?, parse("task index", &task)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    pub(super) provider: Option<String>,
    pub(super) attempt: Option<u32>,
    pub(super) stream: Option<LogStream>,
    #[serde(default)]
    pub(super) offset: u64,
}

/// A task log is what a program printed of its decrypted inputs: the request is signed
/// (`gridwork-signature` over the path, with the digest of the query string) by the job's
/// requester, the provider whose log it is, or the task's executor or a council member.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/tasks/{task}/logs",
    tag = "jobs",
    summary = "Part of a task run's log (signed)",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
        ("task" = u32, Path, description = "Task index"),
        ("gridwork-signature" = String, Header, description = LOG_SIGNATURE_DOC),
        ("provider" = Option<Address>, Query, description = "Whose run (default: the executor)"),
        ("attempt" = Option<u32>, Query, description = "The attempt (default: the current one)"),
        ("stream" = Option<LogStream>, Query, description = "stdout (default) or stderr"),
        ("offset" = Option<u64>, Query, description = "Byte offset to read from (default 0)"),
    ),
    responses(
        (status = 200, description = "The log from `offset`, at most 1 MiB", body = TaskLog),
        (status = 400, description = "`bad_request`: bad job id, task index or query", body = ErrorBody),
        (status = 401, description = "`signature_required`, `bad_signature`, `signature_expired`", body = ErrorBody),
        (status = 403, description = "`not_permitted`: the signer is not the requester, the provider, the executor or a council member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job, task, run or log", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
pub(super) async fn get_log(
    State(node): State<Node>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (id, task) = task_path(path)?;
    if !headers.contains_key(SIGNATURE_HEADER) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_required",
            format!(
                "task logs are read by the job's requester, the task's executor and its council \
                 only: sign the request in the {SIGNATURE_HEADER} header (gridwork signs with --key)"
            ),
        ));
    }
    let digest = Hash::of(uri.query().unwrap_or_default().as_bytes());
    let reader = request_signer(&node, &headers, "GET", uri.path(), &digest)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{e}; use ?provider=ADDRESS&attempt=N&stream=stdout|stderr&offset=BYTES"),
        )
    })?;
    let provider = q
        .provider
        .as_deref()
        .map(|p| parse::<Address>("provider", p))
        .transpose()?;
    let log = node.records().task_log(
        &id,
        task,
        provider,
        q.attempt,
        q.stream.unwrap_or(LogStream::Stdout),
        q.offset,
        &reader,
    )?;
    Ok(Json(log).into_response())
}

/// `?after=&limit=` of a paged list.
#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) after: Option<String>,
    pub(super) limit: Option<u32>,
}

impl PageQuery {
    pub(super) fn read(
        query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<PageQuery, ApiError> {
        let Query(q) = query
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        Ok(q)
    }

    /// The `after` cursor as a `what` (an address, a job id), if given.
    pub(super) fn after<T: FromStr>(&self, what: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.after.as_deref().map(|a| parse(what, a)).transpose()
    }

    pub(super) fn limit(&self) -> usize {
        self.limit.map_or(gridwork_api::MAX_PAGE, |l| {
            (l as usize).clamp(1, gridwork_api::MAX_PAGE)
        })
    }
}

#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "jobs",
    summary = "Registered providers, a page at a time",
    params(
        ("after" = Option<Address>, Query, description = "Only providers after this address (the `next` of the page before)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and most: 1000)"),
    ),
    responses(
        (status = 200, description = "Providers in address order; `next` names where the next page starts", body = ProviderList),
        (status = 400, description = "`bad_request`: `after` is not an address or `limit` not a number", body = ErrorBody),
    ),
)]
pub(super) async fn list_providers(
    State(node): State<Node>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = PageQuery::read(query)?;
    let (found, next) = node.ledger().providers_page(q.after("address")?, q.limit());
    let providers = found.into_iter().map(views::provider).collect();
    Ok(Json(ProviderList { providers, next }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/services/{id}",
    tag = "services",
    summary = "A service (stream task): its council, status and what it paid",
    params(
        ("id" = Hash, Path, description = "Service id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The service", body = ServiceView),
        (status = 400, description = "`bad_request`: not a service id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such service", body = ErrorBody),
    ),
)]
pub(super) async fn get_service(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Hash = parse("service id", &id)?;
    match node.ledger().service(&id) {
        Some((s, now, fee)) => Ok(Json(views::service(id, s, now, fee)).into_response()),
        None => Err(ApiError::not_found(format!("service {id}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/services",
    tag = "services",
    summary = "Services not closed, a page at a time",
    params(
        ("after" = Option<Hash>, Query, description = "Only services after this id (the `next` of the page before)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and most: 1000)"),
    ),
    responses(
        (status = 200, description = "Ids of services not closed, in id order; `next` names where the next page starts", body = ServiceList),
        (status = 400, description = "`bad_request`: `after` is not a service id or `limit` not a number", body = ErrorBody),
    ),
)]
pub(super) async fn list_services(
    State(node): State<Node>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = PageQuery::read(query)?;
    let (open, next) = node
        .ledger()
        .services_page(q.after("service id")?, q.limit());
    Ok(Json(ServiceList { open, next }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/providers/{address}",
    tag = "jobs",
    summary = "A provider",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "The provider", body = ProviderView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
        (status = 404, description = "`not_found`: not a provider", body = ErrorBody),
    ),
)]
pub(super) async fn get_provider(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    match node.ledger().provider(&address) {
        Some(p) => Ok(Json(views::provider(p)).into_response()),
        None => Err(ApiError::not_found(format!("provider {address}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Open jobs, a page at a time",
    params(
        ("after" = Option<Hash>, Query, description = "Only jobs after this id (the `next` of the page before)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and most: 1000)"),
    ),
    responses(
        (status = 200, description = "Ids of jobs neither finished nor cancelled, in id order; `next` names where the next page starts", body = JobList),
        (status = 400, description = "`bad_request`: `after` is not a job id or `limit` not a number", body = ErrorBody),
    ),
)]
pub(super) async fn list_jobs(
    State(node): State<Node>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = PageQuery::read(query)?;
    let (open, next) = node.ledger().open_jobs_page(q.after("job id")?, q.limit());
    Ok(Json(JobList { open, next }).into_response())
}
