//! Chunks peer to peer between workers (and anyone else holding a chunk store), over iroh:
//! QUIC connections authenticated by endpoint keys, dialled at the direct addresses a
//! provider publishes on the ledger (`AnnouncePeer`). Relays and public discovery are off: a
//! peer is reachable at the addresses it announced or not at all.
//!
//! The protocol (ALPN `gridwork/chunks/1`) is the node's batched fetch over a QUIC stream:
//! the requester opens a bidirectional stream, writes `count u32 LE || id [32] * count` and
//! finishes; the server answers with one frame per id (`gridwork_api::frames`: the chunk,
//! missing, or deferred past 64 MiB) and finishes. Chunks are named by the BLAKE3 of their
//! bytes, so the requester checks every one ([`PeerSource`] is a
//! [`gridwork_api::frames::ChunkSource`] and the pull checks what any source returns); a server
//! never sees plaintext. One connection per peer carries many streams at once; a server
//! handles at most [`PeerLimits::streams_per_peer`] of one connection at a time,
//! [`PeerLimits::answers_per_address`] for one address and [`PeerLimits::answers_at_once`] in
//! all, and resets a stream whose request or answer is not moved in time: a peer that never
//! reads holds its own places, nobody else's. Connections are capped in all
//! ([`PeerLimits::connections`]) and per address ([`PeerLimits::connections_per_address`]);
//! a new one proves its source address first (a QUIC retry) and is refused before its
//! handshake past either cap.
//!
//! Why not iroh-blobs: its provider serves from a store of its own (a second copy of every
//! chunk, or memory), and its BLAKE3 verified streaming guards multi-gigabyte blobs; our chunks
//! are at most 4 MiB and already checked whole by their names, served straight from the
//! worker's chunk store.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridwork_api::frames::{self, ChunkSource, Fetch, Frame, SourceError};
use gridwork_transfer::ChunkStore;
use gridwork_types::{Hash, Keypair, PeerAddr, PublicKey};
use iroh::endpoint::{presets, Accepting, Connection, IncomingAddr};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, SecretKey};

/// The protocol's ALPN.
pub const ALPN: &[u8] = b"gridwork/chunks/1";

/// The largest sealed chunk a peer may answer with.
const MAX_SEALED: usize = 8 * 1024 * 1024;

/// How long dialling a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a serving peer gives the peers that ask it: anybody can make an endpoint key and
/// dial, so every resource a request takes is bounded per peer and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Requests of one connection handled at once; its further streams wait (QUIC flow
    /// control holds the peer back) until one of them is answered.
    pub streams_per_peer: usize,
    /// Answers built or being sent to all peers at once (each up to 64 MiB).
    pub answers_at_once: usize,
    /// Of those, the most for peers at one address (an IPv6 peer's /64), whatever number of
    /// connections they hold: two connections that never read used to hold every place.
    pub answers_per_address: usize,
    /// A request (at most 4096 ids) must arrive within this, and then find a place among
    /// the answers within this again (or its stream is reset and the peer asks elsewhere).
    pub request_timeout: Duration,
    /// An answer must be taken within this, or its stream is reset.
    pub answer_timeout: Duration,
    /// Connections served at once; more are refused as they arrive. Endpoint keys are free,
    /// so this and the next bound what strangers can open, not what one key can.
    pub connections: usize,
    /// Connections served at once from one address (an IPv6 peer's /64).
    pub connections_per_address: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            streams_per_peer: 4,
            answers_at_once: 8,
            answers_per_address: 2,
            request_timeout: Duration::from_secs(10),
            answer_timeout: REQUEST_TIMEOUT,
            connections: 256,
            connections_per_address: 16,
        }
    }
}

/// Why the peer endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// The listen address was refused.
    #[error("cannot listen for peers on {addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
}

/// The BLAKE3 `derive_key` context of a transport key.
pub const TRANSPORT_KEY_CONTEXT: &str = "gridwork p2p transport key v1";

/// The transport key of a worker: derived from its signing key, so the worker needs no second
/// secret, yet never the signing key itself (a TLS handshake signs what a peer chooses). A
/// node derives its own the same way (`Node::derive_secret(TRANSPORT_KEY_CONTEXT)`).
pub fn transport_secret(key: &Keypair) -> [u8; 32] {
    blake3::derive_key(TRANSPORT_KEY_CONTEXT, &key.seed())
}

/// A peer endpoint: dials other peers and, if it was given a store, serves it.
#[derive(Debug, Clone)]
pub struct Peer {
    endpoint: Endpoint,
    router: Option<Router>,
}

impl Peer {
    /// Binds an endpoint at `bind` (relays and discovery off) with the transport key
    /// `secret`; serves `store` to other peers if given, under the default [`PeerLimits`].
    pub async fn bind(
        secret: [u8; 32],
        bind: SocketAddr,
        store: Option<ChunkStore>,
    ) -> Result<Peer, P2pError> {
        Peer::bind_with(secret, bind, store, PeerLimits::default()).await
    }

    /// [`Peer::bind`] with `limits` on what it serves.
    pub async fn bind_with(
        secret: [u8; 32],
        bind: SocketAddr,
        store: Option<ChunkStore>,
        limits: PeerLimits,
    ) -> Result<Peer, P2pError> {
        let refused = |message: String| P2pError::Bind {
            addr: bind,
            message,
        };
        let endpoint = Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::from_bytes(&secret))
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_address_lookup()
            .bind_addr(bind)
            .map_err(|e| refused(e.to_string()))?
            .bind()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let router = store.map(|store| {
            let places = Places::new(limits);
            let filter = places.clone();
            Router::builder(endpoint.clone())
                // A source address is proved first (a QUIC retry token, one round trip):
                // places are counted by address, and a spoofed one would let a few packets
                // fill a server's places or an honest worker's share. Then the connection
                // is refused before the handshake's cryptography when the address or the
                // server is already full; `on_accepting` takes the place itself.
                .incoming_filter(Arc::new(move |incoming| {
                    use iroh::protocol::IncomingFilterOutcome as Outcome;
                    if !incoming.remote_addr_validated() {
                        Outcome::Retry
                    } else if filter.has_room(client_of(&incoming.remote_addr())) {
                        Outcome::Accept
                    } else {
                        Outcome::Reject
                    }
                }))
                .accept(
                    ALPN,
                    Arc::new(ChunkServer {
                        store,
                        answers: Arc::new(tokio::sync::Semaphore::new(
                            limits.answers_at_once.max(1),
                        )),
                        limits,
                        places,
                        held: Mutex::default(),
                        answers_by_address: Mutex::default(),
                    }),
                )
                .spawn()
        });
        Ok(Peer { endpoint, router })
    }

    /// The endpoint key other peers authenticate this one by.
    pub fn endpoint_key(&self) -> PublicKey {
        // Both are ed25519 public keys; iroh's is always a valid point.
        PublicKey::from_bytes(self.endpoint.id().as_bytes()).unwrap_or_else(|_| unreachable_key())
    }

    /// The sockets it listens on.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.endpoint.bound_sockets()
    }

    /// What to announce on the ledger: the endpoint key and `addrs` (the addresses other
    /// workers reach this one at), or the bound sockets when they are specific.
    pub fn announcement(&self, addrs: &[SocketAddr]) -> PeerAddr {
        let addrs: Vec<SocketAddr> = if addrs.is_empty() {
            self.bound()
                .into_iter()
                .filter(|a| !a.ip().is_unspecified())
                .collect()
        } else {
            addrs.to_vec()
        };
        PeerAddr {
            endpoint: self.endpoint_key(),
            addrs: addrs
                .iter()
                .take(PeerAddr::MAX_ADDRS)
                .map(|a| a.to_string())
                .collect(),
        }
    }

    /// A chunk source for the peer at `addr`, named `label` in reports; it dials on first use.
    pub fn source(&self, addr: &PeerAddr, label: impl Into<String>) -> Option<PeerSource> {
        let id = iroh::EndpointId::from_bytes(&addr.endpoint.to_bytes()).ok()?;
        let sockets = addr.sockets().ok()?;
        let target = sockets
            .into_iter()
            .fold(EndpointAddr::new(id), |a, s| a.with_ip_addr(s));
        Some(PeerSource {
            endpoint: self.endpoint.clone(),
            target,
            label: label.into(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Stops serving and closes the endpoint.
    pub async fn shutdown(&self) {
        if let Some(r) = &self.router {
            let _ = r.shutdown().await;
        }
        self.endpoint.close().await;
    }
}

/// Never reached: an iroh endpoint id is a valid ed25519 point. A fixed valid key keeps the
/// type total without a panic.
fn unreachable_key() -> PublicKey {
    Keypair::from_seed([0; 32]).public()
}

/// Who a connection counts against: its IPv4 address or its IPv6 /64 (one host's usual
/// allocation); `None` for a connection with no IP address (a relay's, and relays are off).
fn client_of(addr: &IncomingAddr) -> Option<IpAddr> {
    let IncomingAddr::Ip(socket) = addr else {
        return None;
    };
    Some(match socket.ip().to_canonical() {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    })
}

/// The connections being served, in all and per address.
#[derive(Debug, Clone)]
struct Places {
    limits: PeerLimits,
    taken: Arc<Mutex<PlacesTaken>>,
}

#[derive(Debug, Default)]
struct PlacesTaken {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A connection's place, given back when dropped.
#[derive(Debug)]
struct Place {
    taken: Arc<Mutex<PlacesTaken>>,
    client: Option<IpAddr>,
}

impl Places {
    fn new(limits: PeerLimits) -> Self {
        Places {
            limits,
            taken: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlacesTaken> {
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn room_in(&self, taken: &PlacesTaken, client: Option<IpAddr>) -> bool {
        taken.total < self.limits.connections.max(1)
            && client.is_none_or(|c| {
                taken.by_client.get(&c).copied().unwrap_or(0)
                    < self.limits.connections_per_address.max(1)
            })
    }

    fn has_room(&self, client: Option<IpAddr>) -> bool {
        self.room_in(&self.lock(), client)
    }

    fn take(&self, client: Option<IpAddr>) -> Option<Place> {
        let mut taken = self.lock();
        if !self.room_in(&taken, client) {
            return None;
        }
        taken.total += 1;
        if let Some(c) = client {
            *taken.by_client.entry(c).or_default() += 1;
        }
        Some(Place {
            taken: self.taken.clone(),
            client,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        taken.total -= 1;
        if let Some(c) = self.client {
            if let Some(n) = taken.by_client.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    taken.by_client.remove(&c);
                }
            }
        }
    }
}

/// Refused: the server or the peer's address has as many connections as it serves.
#[derive(Debug, thiserror::Error)]
#[error("too many peer connections (from this address or in all); try again later")]
struct NoPlace;

/// Refused: the handshake did not finish within [`HANDSHAKE_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("the handshake did not finish in time")]
struct HandshakeTimedOut;

/// How long an incoming handshake may hold its connection's place.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a chunk store: one request per stream, under [`PeerLimits`].
#[derive(Debug)]
struct ChunkServer {
    store: ChunkStore,
    limits: PeerLimits,
    /// Places for answers, shared by all connections.
    answers: Arc<tokio::sync::Semaphore>,
    /// Places for connections.
    places: Places,
    /// Places taken while a connection's handshake ran, by its `stable_id`, until its
    /// handler picks them up.
    held: Mutex<HashMap<usize, Place>>,
    /// Each address's share of the answer places (while any of its answers is held).
    answers_by_address: Mutex<HashMap<IpAddr, Arc<tokio::sync::Semaphore>>>,
}

impl ChunkServer {
    /// The answer places of peers at `client`: its own share, then the common ones.
    fn answer_places(&self, client: Option<IpAddr>) -> AnswerPlaces {
        let own = client.map(|c| {
            let mut all = self
                .answers_by_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Shares nobody holds go as new addresses come.
            if !all.contains_key(&c) {
                all.retain(|_, share| Arc::strong_count(share) > 1);
            }
            all.entry(c)
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(
                        self.limits.answers_per_address.max(1),
                    ))
                })
                .clone()
        });
        AnswerPlaces {
            own,
            all: self.answers.clone(),
        }
    }
}

/// Where a connection's streams get their answer places.
struct AnswerPlaces {
    own: Option<Arc<tokio::sync::Semaphore>>,
    all: Arc<tokio::sync::Semaphore>,
}

impl AnswerPlaces {
    /// A place of the address's share and one of all: both held while the answer is.
    async fn take(
        &self,
    ) -> Option<(
        Option<tokio::sync::OwnedSemaphorePermit>,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let own = match &self.own {
            Some(own) => Some(own.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let all = self.all.clone().acquire_owned().await.ok()?;
        Some((own, all))
    }
}

impl ProtocolHandler for ChunkServer {
    async fn on_accepting(&self, accepting: Accepting) -> Result<Connection, AcceptError> {
        // The place is taken before the handshake, so handshakes in progress count too.
        let Some(place) = self.places.take(client_of(&accepting.remote_addr())) else {
            return Err(AcceptError::from_err(NoPlace));
        };
        // A handshake holds its place for HANDSHAKE_TIMEOUT at most, not QUIC's idle timeout.
        let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, accepting)
            .await
            .map_err(|_| AcceptError::from_err(HandshakeTimedOut))??;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connection.stable_id(), place);
        Ok(connection)
    }

    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let place = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&connection.stable_id());
        let answer_places = Arc::new(self.answer_places(place.as_ref().and_then(|p| p.client)));
        let limits = self.limits;
        let mine = Arc::new(tokio::sync::Semaphore::new(limits.streams_per_peer.max(1)));
        // A stream is accepted only with a place of this peer's: the rest wait unopened.
        while let Ok(place) = mine.clone().acquire_owned().await {
            let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                break;
            };
            let store = self.store.clone();
            let answers = answer_places.clone();
            tokio::spawn(async move {
                let _place = place;
                let read = recv.read_to_end(4 + 32 * frames::MAX_FETCH_IDS);
                let request = match tokio::time::timeout(limits.request_timeout, read).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "peer request not read");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("peer request not sent in time");
                        let _ = recv.stop(0u32.into());
                        return;
                    }
                };
                let Some(ids) = frames::parse_fetch_request(&request) else {
                    tracing::debug!("malformed peer request");
                    return;
                };
                drop(request);
                // Waiting for an answer's place is on a clock too: otherwise requests queue
                // without bound behind the peers that hold the places.
                let waited = tokio::time::timeout(limits.request_timeout, answers.take()).await;
                let Ok(Some(_answering)) = waited else {
                    tracing::debug!("no place to answer a peer in time");
                    let _ = send.reset(1u32.into());
                    return;
                };
                let answer = tokio::task::spawn_blocking(move || answer(&store, &ids)).await;
                if let Ok(body) = answer {
                    match tokio::time::timeout(limits.answer_timeout, send.write_all(&body)).await {
                        Ok(Ok(())) => {
                            let _ = send.finish();
                        }
                        Ok(Err(_)) => {}
                        Err(_) => {
                            tracing::debug!("peer took too long to read an answer");
                            let _ = send.reset(0u32.into());
                        }
                    }
                    frames::give_back(body);
                }
            });
        }
        Ok(())
    }
}

/// One frame per id: the chunk (checked against its id by the store), missing (a damaged
/// chunk counts as missing), or deferred past the response limit.
fn answer(store: &ChunkStore, ids: &[Hash]) -> Vec<u8> {
    // Repeats are answered once (`answer_fetch`), so they size nothing.
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let capacity = store.stored_bytes(&distinct) as usize + 37 * ids.len();
    frames::answer_fetch(ids, capacity, frames::MAX_RESPONSE_BYTES, |id, out| {
        Ok::<_, std::convert::Infallible>(store.read_into(id, out).unwrap_or(false))
    })
    .unwrap_or_default()
}

/// Another peer's chunk store, as a source for pulls.
#[derive(Debug)]
pub struct PeerSource {
    endpoint: Endpoint,
    target: EndpointAddr,
    label: String,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl PeerSource {
    fn failed(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::Unreachable(message.to_string())
    }

    /// The connection, dialled on first use and again after it closed.
    async fn connection(&self) -> Result<Connection, SourceError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.endpoint.connect(self.target.clone(), ALPN),
        )
        .await
        .map_err(|_| self.failed("no answer within 5 s"))?
        .map_err(|e| self.failed(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn fetch(&self, ids: &[Hash]) -> Result<Vec<Frame>, SourceError> {
        let connection = self.connection().await?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| self.failed(e))?;
        send.write_all(&frames::encode_fetch_request(ids))
            .await
            .map_err(|e| self.failed(e))?;
        send.finish().map_err(|e| self.failed(e))?;
        let limit = frames::MAX_RESPONSE_BYTES + ids.len() * (37 + MAX_SEALED.min(1 << 20));
        let body = recv.read_to_end(limit).await.map_err(|e| self.failed(e))?;
        frames::read_answer(&body.into(), ids, MAX_SEALED).map_err(SourceError::BadAnswer)
    }
}

impl ChunkSource for PeerSource {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [Hash]) -> Fetch<'a> {
        Box::pin(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, self.fetch(ids))
                .await
                .map_err(|_| self.failed("no answer within 120 s"))?
        })
    }
}
