//! The API server: HTTP/1 connections under the limits a public server needs.
//!
//! Anybody on the internet reaches a node's API, so every resource a client can make the
//! node hold has a bound and a clock:
//!
//! - a connection: at most `max_connections_per_ip` from one address (an IPv6 client's /64)
//!   and `max_connections_per_network` from one network (an IPv4 /24, an IPv6 /48), past
//!   either closed as it arrives, and `max_connections` at once; its request headers must
//!   arrive within `header_read_timeout`, which also ends an idle keep-alive connection. At
//!   the global limit a new connection takes the place of an idle one (waiting for its
//!   request's headers, or kept alive between requests) of the network, then the address,
//!   holding the most, one that never had a request answered first, then idle longest
//!   ([`Conns`]): a stranger with many addresses who
//!   fills the table with half-sent requests only ever holds places a newcomer can take,
//!   while a request being answered (until its last byte is written) is never cut;
//! - a request body: no gap between its pieces longer than `body_idle_timeout`, at least
//!   `body_min_rate` a second on average after `header_read_timeout`, and the whole within
//!   `body_timeout` (`api::time_bodies`); each route has its own size limit;
//! - a response: a client that stops reading is cut off once the socket has taken nothing for
//!   `write_idle_timeout`, and one that reads a little now and then once the node has waited
//!   that long in all on it and it took less than `write_min_rate` a second ([`WriteIdle`]),
//!   so an answer it asked for is freed;
//! - memory for bodies: uploads and fetch answers draw on one budget of `body_memory_bytes`,
//!   held until the body is gone (`api::Budget`); a request that cannot get its share within
//!   a few seconds is answered `503 busy`.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{api, Node};

/// How the API server treats connections and bodies: what a public server needs against
/// clients that open connections and send nothing, send slowly, read nothing, or too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's headers must arrive within this; it also bounds how long an idle
    /// keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Connections open at once from one network (an IPv4 /24, an IPv6 /48).
    pub max_connections_per_network: usize,
    /// The longest gap between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// A whole request body must arrive within this.
    pub body_timeout: Duration,
    /// After `header_read_timeout`, a request body must keep arriving at this many bytes a
    /// second on average (each byte that arrives buys the time it takes at this rate).
    pub body_min_rate: u64,
    /// A response the client has not taken a byte of for this long is cut off.
    pub write_idle_timeout: Duration,
    /// A response is cut off once the node has waited `write_idle_timeout` in all on a
    /// client that took less than this many bytes a second meanwhile: a reader that takes a
    /// little now and then would otherwise hold its answer (and its share of the body
    /// budget) for as long as it likes.
    pub write_min_rate: u64,
    /// Bytes of upload bodies and fetch answers held in memory at once.
    pub body_memory_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_connections_per_network: 256,
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(120),
            body_min_rate: DEFAULT_MIN_RATE,
            write_idle_timeout: Duration::from_secs(30),
            write_min_rate: DEFAULT_MIN_RATE,
            body_memory_bytes: 1 << 30,
        }
    }
}

/// The default [`ServeLimits::write_min_rate`] and [`ServeLimits::body_min_rate`]: 4 KiB/s
/// (32 kbit/s) a connection, far below any link a data-plane user has, even one pull's four
/// streams sharing 512 kbit/s.
pub(crate) const DEFAULT_MIN_RATE: u64 = 4 << 10;

/// Serves the API of `node` on `listener` until `shutdown` resolves, with the default
/// [`ServeLimits`].
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(node, listener, ServeLimits::default(), shutdown).await
}

/// The most bytes of a request head a connection buffers.
const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// What one connection is doing: requests being answered (their bodies included), and since
/// when it has had none.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Whether a request of this connection has been answered: a connection that never got
    /// a request through (a half-sent head, or nothing) makes room before one that has.
    answered: std::sync::atomic::AtomicBool,
}

/// Counts a request as in flight until its response body is gone (sent, or dropped with
/// the connection).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, SeqCst);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.answered.store(true, SeqCst);
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// Who a connection counts against: its IPv4 address, or the /64 of an IPv6 one (a single
/// host is routinely given a whole /64, so counting IPv6 addresses one by one would give one
/// client 2^64 shares).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// The network a client's address belongs to: its IPv4 /24, or its IPv6 /48 (what one site is
/// given). A stranger with a whole /48 has 65,536 /64s, one connection each; counted by
/// network too, it holds at most `max_connections_per_network` places.
fn network_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => {
            let mut octets = v4.octets();
            octets[3] = 0;
            IpAddr::V4(octets.into())
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[6..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

/// The open connections: how many from each client and each network, and each one's
/// activity and the signal that closes it.
#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, Open>,
    per_ip: HashMap<IpAddr, usize>,
    per_network: HashMap<IpAddr, usize>,
}

struct Open {
    ip: IpAddr,
    activity: Arc<Activity>,
    close: Arc<tokio::sync::Notify>,
}

/// Why a new connection was not taken.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Its address holds `max_connections_per_ip` already.
    Address,
    /// Its network holds `max_connections_per_network` already.
    Network,
    /// The table is full of connections with requests being answered.
    Busy,
}

impl Conns {
    /// Takes a connection from `ip`, closing an idle one to make room at the global limit.
    fn admit(
        &mut self,
        ip: IpAddr,
        limits: &ServeLimits,
    ) -> Result<(u64, Arc<Activity>, Arc<tokio::sync::Notify>), Refused> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            return Err(Refused::Address);
        }
        let network = network_of(ip);
        if self.per_network.get(&network).copied().unwrap_or(0)
            >= limits.max_connections_per_network
        {
            return Err(Refused::Network);
        }
        if self.open.len() >= limits.max_connections {
            let victim = self
                .open
                .iter()
                .filter(|(_, o)| o.activity.in_flight.load(SeqCst) == 0)
                .max_by_key(|(_, o)| {
                    let since = *o
                        .activity
                        .idle_since
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    (
                        self.per_network
                            .get(&network_of(o.ip))
                            .copied()
                            .unwrap_or(0),
                        self.per_ip.get(&o.ip).copied().unwrap_or(0),
                        !o.activity.answered.load(SeqCst),
                        Reverse(since),
                    )
                })
                .map(|(id, _)| *id)
                .ok_or(Refused::Busy)?;
            if let Some(o) = self.remove(victim) {
                o.close.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            answered: std::sync::atomic::AtomicBool::new(false),
        });
        let close = Arc::new(tokio::sync::Notify::new());
        *self.per_ip.entry(ip).or_insert(0) += 1;
        *self.per_network.entry(network).or_insert(0) += 1;
        self.open.insert(
            id,
            Open {
                ip,
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        Ok((id, activity, close))
    }

    /// Forgets connection `id` (closed, or chosen to make room).
    fn remove(&mut self, id: u64) -> Option<Open> {
        let o = self.open.remove(&id)?;
        for (counts, key) in [
            (&mut self.per_ip, o.ip),
            (&mut self.per_network, network_of(o.ip)),
        ] {
            if let Some(n) = counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
        Some(o)
    }
}

/// The router, with each request counted in its connection's [`Activity`] until its
/// response body is gone.
#[derive(Clone)]
struct Tracked {
    app: axum::Router,
    activity: Arc<Activity>,
    client: api::ClientAddr,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(self.client);
        let answer = tower::ServiceExt::oneshot(self.app.clone(), request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| axum::body::Body::new(Counted { body, in_flight })))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped, and each piece of
/// it until the piece is written: hyper takes a body's pieces into its write queue and drops
/// the body long before a slow client has taken them, and a connection still sending must
/// not look idle.
struct Counted {
    body: axum::body::Body,
    in_flight: InFlight,
}

/// A piece of a response body, holding its request in flight.
struct Piece {
    bytes: axum::body::Bytes,
    _in_flight: InFlight,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl hyper::body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let activity = self.in_flight.0.clone();
        Pin::new(&mut self.body).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| {
                    frame.map_data(|bytes| {
                        axum::body::Bytes::from_owner(Piece {
                            bytes,
                            _in_flight: InFlight::start(&activity),
                        })
                    })
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long a connection told to close may finish the request it is answering.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serves the API of `node` on `listener` with `limits` until `shutdown` resolves; then
/// stops accepting and gives open requests up to 10 s to finish (event streams never do).
pub async fn serve_with(
    node: Node,
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_beside(node, listener, limits, axum::Router::new(), shutdown).await
}

/// [`serve_with`], with `beside` served too, under the same connection limits (a service's
/// gateway: `gridwork node --gateway-key`); its paths must not be the API's.
pub async fn serve_beside(
    node: Node,
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    beside: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = api::router_beside(node, &limits, beside);
    // Every connection task watches `stopping`; `tasks` holds them so shutdown can wait.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let conns: Arc<Mutex<Conns>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(client_of(peer.ip()), &limits);
        let (id, activity, close) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                tracing::debug!(%peer, ?why, "connection limit reached; closing a new connection");
                continue;
            }
        };
        let activity_of_conn = activity.clone();
        let service = hyper_util::service::TowerToHyperService::new(Tracked {
            app: app.clone(),
            activity,
            client: api::ClientAddr(client_of(peer.ip())),
        });
        let io = WriteIdle::new(stream, limits.write_idle_timeout, limits.write_min_rate);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            // Request heads are small; hyper's default buffer (about 400 KiB) would let 1024
            // connections hold 400 MiB outside the body budget.
            .max_buf_size(MAX_HEAD_BUFFER)
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let conns = conns.clone();
        let mut stopping = stopping.clone();
        tasks.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = close.notified() => {
                    // Closed to make room. Chosen while idle, but a request may have begun
                    // since: it may finish, but the connection takes no other and is dropped
                    // after CLOSE_GRACE whatever it is doing (an event stream never ends).
                    // Its place is already given away, so the table is over by the
                    // connections closing, each for at most that long.
                    if activity_of_conn.in_flight.load(SeqCst) > 0 {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                    }
                }
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                }
            }
            conns.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Each connection gives itself CLOSE_GRACE; this bounds the wait for all of them.
    let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// A connection whose writes fail once the peer has taken nothing for `idle`, or once the
/// node has waited `idle` in all on a peer that took less than `min_rate` bytes a second
/// meanwhile: hyper has no write timeout, and a client that asks for a 64 MiB answer and
/// never reads it, or reads a little every so often, would hold the answer (and its
/// connection) for as long as it likes.
///
/// The rate is judged over time spent *waiting* on the socket only: a client that takes
/// everything as fast as it comes is never waited on, and an idle keep-alive connection has
/// nothing to wait for. The kernel wakes a blocked writer only once a good part of its send
/// buffer has drained, so progress comes in bursts; summing waits over a window of `idle`
/// judges the average, not one burst.
struct WriteIdle<T> {
    io: T,
    idle: Duration,
    min_rate: u64,
    /// Armed while a write cannot proceed: fires at the idle deadline or the end of the rate
    /// window, whichever is first.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    /// Time waited, and bytes written, in the current rate window.
    waited: Duration,
    written: u64,
    /// The part of the current wait that an earlier window already judged.
    counted: Duration,
}

impl<T> WriteIdle<T> {
    fn new(io: T, idle: Duration, min_rate: u64) -> Self {
        WriteIdle {
            io,
            idle,
            min_rate,
            stalled: None,
            waiting_since: None,
            waited: Duration::ZERO,
            written: 0,
            counted: Duration::ZERO,
        }
    }

    /// `Pending` from the socket: arms the clock, or fails once the client took nothing for
    /// `idle` or too little over a window of waiting.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        loop {
            let now = Instant::now();
            let since = *self.waiting_since.get_or_insert(now);
            let waiting = now - since;
            if waiting >= self.idle {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took nothing for {} s", self.idle.as_secs()),
                )));
            }
            if self.waited + (waiting - self.counted) >= self.idle {
                // A window of waiting is over: judge what the client took in it.
                let least = self.min_rate.saturating_mul(self.idle.as_secs().max(1));
                if self.written < least {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took {} bytes while the node waited {} s on it, \
                             less than {} bytes a second",
                            self.written,
                            self.idle.as_secs(),
                            self.min_rate
                        ),
                    )));
                }
                // The next window starts now; the rest of this wait counts in it.
                self.waited = Duration::ZERO;
                self.written = 0;
                self.counted = waiting;
            }
            let window_ends = since + self.counted + (self.idle - self.waited);
            let deadline = tokio::time::Instant::from_std(window_ends.min(since + self.idle));
            let clock = self
                .stalled
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if clock.deadline() != deadline {
                clock.as_mut().reset(deadline);
            }
            if clock.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Due: judge again as of now.
        }
    }

    /// Progress: `n` bytes taken; a wait, if any, ends.
    fn progressed(&mut self, n: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed().saturating_sub(self.counted);
        }
        self.counted = Duration::ZERO;
        self.stalled = None;
        self.written += n as u64;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteIdle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteIdle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stall(cx),
            Poll::Ready(Ok(n)) => {
                self.progressed(n);
                Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stall(cx),
            Poll::Ready(Ok(n)) => {
                self.progressed(n);
                Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stall(cx),
            Poll::Ready(Ok(())) => {
                self.progressed(0);
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> ServeLimits {
        ServeLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..ServeLimits::default()
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// An IPv6 client is its /64, its network its /48; an IPv4-mapped address is the IPv4 one.
    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_one_by_its_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let same_site: IpAddr = "2001:db8:1:ffff::1".parse().unwrap();
        let other_site: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(network_of(client_of(a)), network_of(client_of(same_site)));
        assert_ne!(network_of(client_of(a)), network_of(client_of(other_site)));
        assert_eq!(
            network_of(IpAddr::from([192, 0, 2, 7])),
            network_of(IpAddr::from([192, 0, 2, 200]))
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), IpAddr::from([192, 0, 2, 7]));
        assert_eq!(
            client_of(IpAddr::from([192, 0, 2, 7])),
            IpAddr::from([192, 0, 2, 7])
        );
    }

    /// At the global limit a newcomer takes the place of an idle connection of the network,
    /// then the address, holding the most, the longest idle first; connections with a
    /// request in flight are never chosen, and when every place is busy the newcomer is
    /// refused.
    #[test]
    fn a_newcomer_takes_the_place_of_the_busiest_addresses_longest_idle_connection() {
        let limits = limits(4, 3);
        let mut conns = Conns::default();
        let (a1, a1_activity, a1_close) = conns.admit(ip(1), &limits).unwrap();
        let (_a2, _, _) = conns.admit(ip(1), &limits).unwrap();
        let (a3, a3_activity, _) = conns.admit(ip(1), &limits).unwrap();
        let (_b1, b1_activity, _) = conns.admit(ip(2), &limits).unwrap();
        assert_eq!(conns.admit(ip(1), &limits).unwrap_err(), Refused::Address);
        // b1 has been idle longest, but ip 1 holds three: its oldest idle one goes.
        *b1_activity.idle_since.lock().unwrap() -= Duration::from_secs(60);
        *a3_activity.idle_since.lock().unwrap() -= Duration::from_secs(30);
        let _a1_busy = InFlight::start(&a1_activity);
        conns.admit(ip(3), &limits).unwrap();
        assert!(
            conns.open.contains_key(&a1),
            "a connection in flight was chosen"
        );
        assert!(
            !conns.open.contains_key(&a3),
            "not the longest idle of the busiest address"
        );
        assert_eq!(conns.per_ip[&ip(1)], 2);
        assert_eq!(conns.per_ip[&ip(3)], 1);
        drop(a1_close);
        // Everyone busy: the newcomer is refused.
        let busy: Vec<InFlight> = conns
            .open
            .values()
            .map(|o| InFlight::start(&o.activity))
            .collect();
        assert_eq!(conns.admit(ip(4), &limits).unwrap_err(), Refused::Busy);
        drop(busy);
        assert!(conns.admit(ip(4), &limits).is_ok());
        assert_eq!(conns.open.len(), 4);
    }

    /// A stranger with many addresses in one network holds at most the network's share, and
    /// at the global limit its idle connections make room first, however recent.
    #[test]
    fn a_network_of_many_addresses_holds_only_its_share_and_makes_room_first() {
        let limits = ServeLimits {
            max_connections: 6,
            max_connections_per_ip: 3,
            max_connections_per_network: 4,
            ..ServeLimits::default()
        };
        let mut conns = Conns::default();
        let (_, older, _) = conns.admit(IpAddr::from([10, 0, 1, 1]), &limits).unwrap();
        *older.idle_since.lock().unwrap() -= Duration::from_secs(60);
        conns.admit(IpAddr::from([10, 0, 2, 1]), &limits).unwrap();
        for n in 1..=4 {
            conns.admit(IpAddr::from([10, 0, 0, n]), &limits).unwrap();
        }
        assert_eq!(
            conns
                .admit(IpAddr::from([10, 0, 0, 5]), &limits)
                .unwrap_err(),
            Refused::Network
        );
        conns.admit(IpAddr::from([172, 16, 0, 1]), &limits).unwrap();
        assert_eq!(conns.per_network[&IpAddr::from([10, 0, 0, 0])], 3);
        assert_eq!(conns.per_network[&IpAddr::from([10, 0, 1, 0])], 1);
        assert_eq!(conns.open.len(), 6);
    }

    /// Among connections of networks and addresses holding as many, one that never had a
    /// request answered (a half-sent head from a stranger on many networks) makes room
    /// before a client's kept-alive connection, however long that one has been idle.
    #[test]
    fn a_connection_that_never_got_a_request_through_makes_room_first() {
        let limits = limits(2, 4);
        let mut conns = Conns::default();
        let (kept, kept_activity, _) = conns.admit(IpAddr::from([10, 0, 1, 1]), &limits).unwrap();
        drop(InFlight::start(&kept_activity));
        *kept_activity.idle_since.lock().unwrap() -= Duration::from_secs(60);
        let (silent, _, _) = conns.admit(IpAddr::from([10, 0, 2, 1]), &limits).unwrap();
        conns.admit(IpAddr::from([10, 0, 3, 1]), &limits).unwrap();
        assert!(
            conns.open.contains_key(&kept),
            "the kept-alive client was cut"
        );
        assert!(!conns.open.contains_key(&silent));
    }
}
