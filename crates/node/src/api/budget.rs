//! Memory for bodies: the budget every buffered body draws on, bodies read on it as they
//! arrive, their clock, signed writes read after their headers, and answers that hold their
//! share until sent.

use super::*;

/// How long a request waits for its share of the body budget before it is answered `busy`.
pub(super) const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Memory for the bodies the API holds (uploads being read, fetch answers being sent), in
/// KiB permits: a request takes its share before it reads or builds a body and gives it back
/// when the body is gone, so a thousand uploads at once wait or are told `busy` instead of
/// taking 64 GiB.
///
/// Unsigned work (whole-chunk reads, unsigned fetches, missing-chunk questions) also draws on
/// its client's part, an eighth of the whole ([`UNSIGNED_SHARE`]; at least 72 MiB where the
/// whole has it): a stranger reading slowly from a few addresses cannot hold the budget
/// everyone's data plane needs.
#[derive(Clone)]
pub(super) struct Budget {
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    pub(super) total_kib: usize,
    /// Each client's part for unsigned work.
    pub(super) clients:
        Arc<std::sync::Mutex<std::collections::HashMap<ClientAddr, Arc<tokio::sync::Semaphore>>>>,
    /// The client of this request (none when the router is used without `serve_with`).
    pub(super) client: Option<ClientAddr>,
}

/// The part of the budget one client's unsigned work may hold: one in this many.
pub(super) const UNSIGNED_SHARE: usize = 8;

/// A share of the budget: the whole's, and for unsigned work its client's too.
pub(super) struct Share {
    pub(super) all: tokio::sync::OwnedSemaphorePermit,
    pub(super) client: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Share {
    pub(super) fn merge(&mut self, other: Share) {
        self.all.merge(other.all);
        match (&mut self.client, other.client) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Gives back what the share holds beyond `bytes`.
    pub(super) fn shrink(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024).max(1);
        for permit in std::iter::once(&mut self.all).chain(self.client.as_mut()) {
            if permit.num_permits() > keep {
                drop(permit.split(permit.num_permits() - keep));
            }
        }
    }
}

pub(super) fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the node is holding as many request and answer bodies as it allows; try again shortly",
    )
}

impl Budget {
    pub(super) fn new(bytes: usize) -> Self {
        let total_kib = bytes.div_ceil(1024).max(1);
        Budget {
            permits: Arc::new(tokio::sync::Semaphore::new(total_kib)),
            total_kib,
            clients: Arc::default(),
            client: None,
        }
    }

    /// A share of `bytes` for a signed request, waited for at most [`BUSY_WAIT`].
    pub(super) async fn take(&self, bytes: usize) -> Result<Share, ApiError> {
        let kib = self.kib(bytes, self.total_kib);
        match tokio::time::timeout(BUSY_WAIT, self.permits.clone().acquire_many_owned(kib)).await {
            Ok(Ok(all)) => Ok(Share { all, client: None }),
            _ => Err(busy()),
        }
    }

    /// A share of `bytes` for unsigned work: from the client's part first, then the whole,
    /// both within [`BUSY_WAIT`].
    pub(super) async fn take_unsigned(&self, bytes: usize) -> Result<Share, ApiError> {
        let Some(client) = self.client else {
            return self.take(bytes).await;
        };
        // At least room for the largest unsigned request (a 16 MiB missing-chunk question
        // and its answer), where the whole has it.
        let part_kib = (self.total_kib / UNSIGNED_SHARE).max(self.total_kib.min(72 << 10));
        let part = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if !clients.contains_key(&client) {
                // Parts nobody holds go as new clients come, so the map follows the clients
                // of the moment (a pass over it per new client, not per request).
                clients.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < part_kib);
            }
            clients
                .entry(client)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(part_kib)))
                .clone()
        };
        let both = async {
            let mine = part.acquire_many_owned(self.kib(bytes, part_kib)).await;
            let all = self
                .permits
                .clone()
                .acquire_many_owned(self.kib(bytes, self.total_kib))
                .await;
            (mine, all)
        };
        match tokio::time::timeout(BUSY_WAIT, both).await {
            Ok((Ok(mine), Ok(all))) => Ok(Share {
                all,
                client: Some(mine),
            }),
            _ => Err(busy()),
        }
    }

    pub(super) fn kib(&self, bytes: usize, most: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024).clamp(1, most)).unwrap_or(u32::MAX)
    }
}

impl Budget {
    pub(super) async fn take_for(&self, reader: Reader, bytes: usize) -> Result<Share, ApiError> {
        match reader {
            Reader::Signed => self.take(bytes).await,
            Reader::Unsigned => self.take_unsigned(bytes).await,
        }
    }
}

/// The budget, for the client a request came from.
impl axum::extract::FromRequestParts<ApiState> for Budget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &ApiState,
    ) -> Result<Budget, Self::Rejection> {
        Ok(Budget {
            client: parts.extensions.get::<ClientAddr>().copied(),
            ..state.budget.clone()
        })
    }
}

/// How long a request body may take: no gap longer than `idle`, the whole within `whole`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyClock {
    pub(super) idle: Duration,
    pub(super) whole: Duration,
    /// A body must have arrived at `min_rate` bytes a second after this (and within
    /// `whole` in any case): a 64 KiB JSON body trickled a byte at a time would otherwise
    /// hold its connection, which nobody may take while a request is in flight, for `whole`.
    pub(super) grace: Duration,
    pub(super) min_rate: u64,
}

/// A request body that stopped arriving in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body {0}")]
pub(super) struct BodyTimedOut(&'static str);

/// Whether `path` is a council member's streamed response to the node's gateway
/// (`/m/<service>/streams/<seq>`, `gridwork node --gateway`): a model writes tokens at its own
/// pace, slower than the minimum rate a body owes, so such a body is timed by the gateway
/// instead (it must end within its request's time, and only a seated member, signing, may
/// open one per request it was sent).
fn is_member_stream(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (Some(""), Some("m"), Some(_), Some("streams"), Some(_), None)
    )
}

/// Puts every request body on the clock ([`BodyClock`]): a client that sends headers and then
/// a byte a minute holds nothing for long, except a member's stream ([`is_member_stream`]).
pub(super) async fn time_bodies(
    State(clock): State<BodyClock>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (req.headers().get(header::CONTENT_LENGTH).is_none()
            && req.headers().get(header::TRANSFER_ENCODING).is_none());
    if empty || is_member_stream(req.uri().path()) {
        return next.run(req).await;
    }
    let start = tokio::time::Instant::now();
    let whole = start + clock.whole;
    let req = req.map(|body| {
        let timed = futures_util::stream::unfold(
            Some((body.into_data_stream(), 0u64)),
            move |state| async move {
                let (mut stream, received) = state?;
                let now = tokio::time::Instant::now();
                // What has arrived buys time at the minimum rate (after the grace).
                let earned =
                    Duration::from_secs_f64(received as f64 / clock.min_rate.max(1) as f64);
                let paced = start + clock.grace + earned;
                let (deadline, why) = if paced < whole {
                    (paced, "arrived slower than the node's minimum rate")
                } else {
                    (whole, "took longer than the node waits for a whole body")
                };
                let left = deadline.saturating_duration_since(now);
                let (wait, why) = if clock.idle < left {
                    (
                        clock.idle,
                        "paused longer than the node waits between pieces",
                    )
                } else {
                    (left, why)
                };
                match tokio::time::timeout(wait, stream.next()).await {
                    Ok(Some(Ok(bytes))) => {
                        let received = received + bytes.len() as u64;
                        Some((Ok(bytes), Some((stream, received))))
                    }
                    Ok(Some(Err(e))) => Some((Err(e), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(axum::Error::new(BodyTimedOut(why))), None)),
                }
            },
        );
        Body::from_stream(timed)
    });
    next.run(req).await
}

/// The `body_timeout` error, if `error` comes of a body that stopped arriving in time.
pub(super) fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(late) = cause.downcast_ref::<BodyTimedOut>() {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                late.to_string(),
            ));
        }
        source = cause.source();
    }
    None
}

/// Why a body could not be read: too large, too slow, or broken.
pub(super) fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        if let Some(late) = cause.downcast_ref::<BodyTimedOut>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                late.to_string(),
            );
        }
        source = cause.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_body",
        format!("the request body could not be read: {e}"),
    )
}

/// The budget a body takes at first and then in steps as it arrives.
pub(super) const BODY_STEP: usize = 256 * 1024;

/// Who a body is read for: a signed write draws on the whole budget; unsigned work on its
/// client's part too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    Signed,
    Unsigned,
}

/// The length a request declares (`Content-Length`), if any.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads a body of at most `limit` bytes, taking its share of the budget as its bytes
/// arrive rather than for its declared length: a client that declares 64 MiB and trickles
/// holds what it sent, not 64 MiB (sixteen such uploads from one funded account used to hold
/// the whole budget). Every body the API buffers is read this way, unsigned questions too
/// (a 16 MiB missing-chunk question used to be read whole before its share was asked).
pub(super) async fn read_body_budgeted(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
    budget: &Budget,
    reader: Reader,
) -> Result<(Bytes, Share), ApiError> {
    use http_body_util::BodyExt;
    if declared.is_some_and(|d| d > limit) {
        return Err(too_large(limit));
    }
    let first = declared.map_or(BODY_STEP, |d| d.clamp(1, BODY_STEP));
    let mut memory = budget.take_for(reader, first).await?;
    let mut held = first;
    // Address space for the declared length; pages are touched (and resident) as written.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e, limit))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = out.len() + data.len();
        if len > limit {
            return Err(too_large(limit));
        }
        if len > held {
            let more = (len - held).next_multiple_of(BODY_STEP).max(held / 4);
            memory.merge(budget.take_for(reader, more).await?);
            held += more;
        }
        out.extend_from_slice(&data);
    }
    Ok((Bytes::from(out), memory))
}

pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("this route takes bodies of at most {limit} bytes; send less at once"),
    )
}

/// A signed data-plane write. The signer is checked from the headers before a byte of the
/// body is read (an unsigned 60 MiB upload used to be read and parsed first): the signature
/// covers the digest in [`DIGEST_HEADER`]; then the body is read, within the route's limit and
/// the memory budget, and must match that digest ([`SignedWrite::expect`]).
pub(super) struct SignedWrite {
    pub(super) signer: Address,
    pub(super) digest: Hash,
    pub(super) body: Bytes,
    /// The body's share of the budget, held while the write is handled.
    pub(super) _memory: Share,
}

impl SignedWrite {
    pub(super) async fn read(
        node: &Node,
        budget: &Budget,
        headers: &HeaderMap,
        body: Body,
        (method, path): (&str, &str),
        limit: usize,
    ) -> Result<SignedWrite, ApiError> {
        if !headers.contains_key(SIGNATURE_HEADER) {
            return Err(signature_required());
        }
        let digest = headers
            .get(DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "digest_required",
                    format!(
                        "a signed write carries the digest its signature covers in the \
                         {DIGEST_HEADER} header (hex BLAKE3; gridwork's client sends it)"
                    ),
                )
            })?;
        let digest: Hash = digest.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_digest",
                format!("the {DIGEST_HEADER} header is not 64 hex digits"),
            )
        })?;
        let signer = data_signer(node, headers, method, path, &digest)?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let (body, memory) =
            read_body_budgeted(body, limit, declared, budget, Reader::Signed).await?;
        Ok(SignedWrite {
            signer,
            digest,
            body,
            _memory: memory,
        })
    }

    /// Refuses a body that is not the one signed.
    pub(super) fn expect(&self, actual: &Hash) -> Result<(), ApiError> {
        if *actual == self.digest {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!(
                "the body's digest is {actual}, not the {} the request signed; nothing was stored",
                self.digest
            ),
        ))
    }
}

/// A response body whose bytes hold their share of the body budget until the last of them is
/// written or dropped. The share goes with the bytes, not the body: hyper takes a body's
/// bytes into its write queue and drops the body long before a client that does not read
/// has taken them.
pub(super) fn held_body(bytes: Bytes, memory: Share) -> Body {
    struct Held {
        bytes: Bytes,
        _memory: Share,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    Body::from(Bytes::from_owner(Held {
        bytes,
        _memory: memory,
    }))
}

#[cfg(test)]
mod tests {
    use super::is_member_stream;

    /// Only a member's stream to the gateway is off the body clock; every other body, the
    /// gateway's own member routes among them, stays on it.
    #[test]
    fn only_a_members_stream_is_timed_by_the_gateway() {
        assert!(is_member_stream("/m/abc/streams/7"));
        for path in [
            "/m/abc/responses/7",
            "/m/abc/streams/7/x",
            "/m/abc/streams",
            "/s/abc/streams/7",
            "/v1/chunks",
            "/m//streams/7/",
            "m/abc/streams/7",
        ] {
            assert!(!is_member_stream(path), "{path}");
        }
    }
}
