//! The event stream (`GET /v1/events`): places per client, displacement of the busiest
//! client's oldest stream, resuming from `Last-Event-ID`.

use super::*;

/// The event streams open, by client: one client may hold only
/// [`MAX_EVENT_STREAMS_PER_CLIENT`] of the node's [`MAX_EVENT_SUBSCRIBERS`] (or four addresses
/// would hold them all), and when all are taken a newcomer holding fewer than the busiest
/// client by two or more takes the place of that client's oldest stream, which is told to
/// resume later (so sixteen addresses cannot lock everyone else out; it takes one stream each
/// from 256 addresses).
#[derive(Clone)]
pub(super) struct StreamsPerClient {
    pub(super) open: Arc<std::sync::Mutex<OpenStreams>>,
    pub(super) max: usize,
    pub(super) per_client: usize,
}

impl Default for StreamsPerClient {
    fn default() -> Self {
        StreamsPerClient {
            open: Arc::default(),
            max: MAX_EVENT_SUBSCRIBERS,
            per_client: MAX_EVENT_STREAMS_PER_CLIENT,
        }
    }
}

#[derive(Default)]
pub(super) struct OpenStreams {
    pub(super) next_id: u64,
    pub(super) total: usize,
    /// Each client's streams, oldest first: an id and how to tell it its place was given
    /// away.
    pub(super) by_client:
        std::collections::HashMap<ClientAddr, Vec<(u64, Arc<tokio::sync::Notify>)>>,
}

/// One client's place among the event streams, given back when its stream ends.
pub(super) struct StreamPlace {
    pub(super) streams: StreamsPerClient,
    pub(super) client: ClientAddr,
    pub(super) id: u64,
    /// Notified when a newcomer took this place.
    pub(super) displaced: Arc<tokio::sync::Notify>,
}

/// Why no event stream was opened.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoStream {
    /// The client holds its share.
    ClientFull,
    /// The node serves as many as it may, and nobody holds more than the client by two.
    NodeFull,
}

impl StreamsPerClient {
    pub(super) fn take(&self, client: ClientAddr) -> Result<StreamPlace, NoStream> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.by_client.get(&client).map_or(0, Vec::len);
        if mine >= self.per_client {
            return Err(NoStream::ClientFull);
        }
        if open.total >= self.max {
            let busiest = open
                .by_client
                .iter()
                // Ties go to the client whose oldest stream is oldest: the same choice every time.
                .max_by_key(|(_, streams)| {
                    (
                        streams.len(),
                        std::cmp::Reverse(streams.first().map_or(0, |s| s.0)),
                    )
                })
                .map(|(c, streams)| (*c, streams.len()));
            // Only for a newcomer that then holds fewer than the busiest did: otherwise two
            // clients would take places back and forth.
            let Some((busiest, _)) = busiest.filter(|(_, held)| mine + 1 < *held) else {
                return Err(NoStream::NodeFull);
            };
            let streams = open
                .by_client
                .get_mut(&busiest)
                .expect("the busiest holds some");
            let (_, displaced) = streams.remove(0);
            displaced.notify_one();
            open.total -= 1;
        }
        open.total += 1;
        open.next_id += 1;
        let id = open.next_id;
        let displaced = Arc::new(tokio::sync::Notify::new());
        open.by_client
            .entry(client)
            .or_default()
            .push((id, displaced.clone()));
        Ok(StreamPlace {
            streams: self.clone(),
            client,
            id,
            displaced,
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(streams) = open.by_client.get_mut(&self.client) else {
            return;
        };
        // A displaced stream's place is already someone else's.
        let Some(at) = streams.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        streams.remove(at);
        if streams.is_empty() {
            open.by_client.remove(&self.client);
        }
        open.total -= 1;
    }
}

impl FromRef<ApiState> for StreamsPerClient {
    fn from_ref(state: &ApiState) -> StreamsPerClient {
        state.streams.clone()
    }
}

/// Most event-stream subscribers at once; more get 503 `too_many_subscribers`.
pub(crate) const MAX_EVENT_SUBSCRIBERS: usize = 256;

/// Event streams one client (an address, an IPv6 /64) may hold at once.
pub(crate) const MAX_EVENT_STREAMS_PER_CLIENT: usize = 16;

/// `GET /v1/events`: committed blocks as server-sent events, each with its height as the
/// event id. A subscriber that falls more than the node's ring of blocks behind gets a
/// `lagged` event naming the height it last received and is disconnected (it holds nothing
/// meanwhile); it catches up from `GET /v1/blocks` and subscribes again.
/// `GET /v1/events`: committed blocks as server-sent events, each with its height as the
/// event id. A client that reconnects with `Last-Event-ID: H` first gets the blocks after H
/// that the node still holds (`RECENT_EVENTS`), then live ones; if the block after H is no
/// longer held, a `lagged` event says so and the stream ends (catch up from `GET /v1/blocks`).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "chain",
    summary = "Committed blocks as server-sent events",
    params(
        ("last-event-id" = Option<u64>, Header, description = "Resume after this height"),
    ),
    responses(
        (status = 200, description = "An event stream: `block` events (data: BlockEvent, id: height) and a final `lagged` event if the client fell behind", body = BlockEvent, content_type = "text/event-stream"),
        (status = 400, description = "`bad_last_event_id`: Last-Event-ID is not a height", body = ErrorBody),
        (status = 503, description = "`too_many_subscribers`: poll GET /v1/blocks or retry later", body = ErrorBody),
    ),
)]
pub(super) async fn events(
    State(node): State<Node>,
    State(streams): State<StreamsPerClient>,
    client: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID is the block height of the last event received",
                    )
                })?,
        ),
    };
    // The places below are the cap for clients the server knows; this one bounds the
    // router used on its own, and memory in any case (a displaced stream lets go of its
    // subscription when it is next polled). Subscribed before a place is taken, so a
    // newcomer refused here displaces nobody.
    let sub = node
        .ledger()
        .subscribe_limited(if client.is_some() {
            2 * MAX_EVENT_SUBSCRIBERS
        } else {
            MAX_EVENT_SUBSCRIBERS
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_subscribers",
                format!(
                    "the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams; poll GET /v1/blocks or retry later"
                ),
            )
        })?;
    let place = match client {
        Some(axum::Extension(client)) => Some(streams.take(client).map_err(|why| {
            let message = match why {
                NoStream::ClientFull => format!(
                    "one client may hold at most {MAX_EVENT_STREAMS_PER_CLIENT} event streams; close one, or poll GET /v1/blocks"
                ),
                NoStream::NodeFull => format!(
                    "the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams; poll GET /v1/blocks or retry later"
                ),
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_subscribers", message)
        })?),
        None => None,
    };
    // Subscribed first, then the backlog read: a block committed in between is in both, and
    // is sent once (heights only rise).
    let (backlog, gap) = match resume.map(|h| (h, node.ledger().committed_after(h))) {
        None => (Vec::new(), None),
        Some((_, Ok(backlog))) => (backlog, None),
        Some((after, Err(oldest))) => (Vec::new(), Some((after, oldest))),
    };
    let last = resume.unwrap_or(0);
    let backlog: std::collections::VecDeque<_> = backlog.into();
    let state = ((sub, place), backlog, last, gap);
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        use tokio::sync::broadcast::error::RecvError;
        let ((mut sub, place), mut backlog, last, gap) = state?;
        if let Some((after, oldest)) = gap {
            let event = SseEvent::default()
                .event("lagged")
                .id(after.to_string())
                .data(format!("the node no longer holds the blocks after height {after} (it holds events from height {oldest}); catch up from GET /v1/blocks and subscribe again"));
            return Some((Ok(event), None));
        }
        loop {
            let next = match backlog.pop_front() {
                Some(block) => Ok(block),
                None => {
                    let displaced = async {
                        match &place {
                            Some(p) => p.displaced.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        next = sub.rx.recv() => next,
                        () = displaced => {
                            let event = SseEvent::default()
                                .event("lagged")
                                .id(last.to_string())
                                .data(format!("the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams and gave this one's place to a client holding fewer; subscribe again later with Last-Event-ID: {last}, or poll GET /v1/blocks"));
                            return Some((Ok(event), None));
                        }
                    }
                }
            };
            let block = match next {
                Ok(block) => block,
                // Too slow: say from where to catch up, then end (the subscription is freed).
                Err(RecvError::Lagged(n)) => {
                    let event = SseEvent::default()
                        .event("lagged")
                        .id(last.to_string())
                        .data(format!("{n} blocks missed after height {last}; catch up from GET /v1/blocks and subscribe again"));
                    return Some((Ok(event), None));
                }
                Err(RecvError::Closed) => return None,
            };
            let height = block.height();
            if height <= last {
                continue;
            }
            let event = SseEvent::default()
                .event("block")
                .id(height.to_string())
                .json_data(views::block_event(&block))
                .unwrap_or_else(|_| SseEvent::default().event("error"));
            return Some((Ok(event), Some(((sub, place), backlog, height, None))));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
