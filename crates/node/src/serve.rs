//! The API server: HTTP/1 connections under the limits a public server needs.
//!
//! Anybody on the internet reaches a node's API, so every resource a client can make the
//! node hold has a bound and a clock:
//!
//! - a connection: at most `max_connections` at once and `max_connections_per_ip` from one
//!   address (past a limit, closed as it arrives); its request headers must arrive within
//!   `header_read_timeout`, which also ends an idle keep-alive connection;
//! - a request body: no gap between its pieces longer than `body_idle_timeout`, and the whole
//!   within `body_timeout` (`api::time_bodies`); each route has its own size limit;
//! - a response: a client that stops reading is cut off once the socket has taken nothing for
//!   `write_idle_timeout` ([`WriteIdle`]), so an answer it asked for is freed;
//! - memory for bodies: uploads and fetch answers draw on one budget of `body_memory_bytes`,
//!   held until the body is gone (`api::Budget`); a request that cannot get its share within
//!   a few seconds is answered `503 busy`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

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
    /// The longest gap between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// A whole request body must arrive within this.
    pub body_timeout: Duration,
    /// A response the client has not taken a byte of for this long is cut off.
    pub write_idle_timeout: Duration,
    /// Bytes of upload bodies and fetch answers held in memory at once.
    pub body_memory_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 64,
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(120),
            write_idle_timeout: Duration::from_secs(30),
            body_memory_bytes: 1 << 30,
        }
    }
}

/// Serves the API of `node` on `listener` until `shutdown` resolves, with the default
/// [`ServeLimits`].
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(node, listener, ServeLimits::default(), shutdown).await
}

/// One connection's place in the per-address count, given back when it closes.
struct Slot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves the API of `node` on `listener` with `limits` until `shutdown` resolves; then
/// stops accepting and gives open requests up to 10 s to finish (event streams never do).
pub async fn serve_with(
    node: Node,
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = api::router_with(node, &limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let counts: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
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
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing a new connection");
            continue;
        };
        let slot = {
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = c.entry(peer.ip()).or_insert(0);
            if *n >= limits.max_connections_per_ip {
                tracing::debug!(%peer, "per-address connection limit reached");
                continue;
            }
            *n += 1;
            Slot {
                counts: counts.clone(),
                ip: peer.ip(),
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let io = WriteIdle::new(stream, limits.write_idle_timeout);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    Ok(())
}

/// A connection whose writes fail once the peer has taken nothing for `idle`: hyper has no
/// write timeout, and a client that asks for a 64 MiB answer and never reads it would hold
/// the answer (and its connection) for as long as it likes.
struct WriteIdle<T> {
    io: T,
    idle: Duration,
    /// Armed when a write could not proceed; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteIdle<T> {
    fn new(io: T, idle: Duration) -> Self {
        WriteIdle {
            io,
            idle,
            stalled: None,
        }
    }

    /// `Pending` from the socket: arms the clock, or fails once it ran out.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let idle = self.idle;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {} s", idle.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
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
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
