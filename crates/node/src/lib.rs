//! The Gridwork node: mempool, block production, durable commit, HTTP API and event stream.
//!
//! [`Node`] holds the ledger and serves it; [`api::router`] puts it on HTTP; [`serve`] runs
//! both. See `docs/architecture.md` for the flows.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

pub mod api;
pub mod bench;
mod config;
mod logs;
mod mempool;
mod metrics;
mod node;
mod pinfile;

pub use config::{ConfigError, NodeConfig, DEFAULT_LISTEN};
pub use logs::LogError;
pub use mempool::{Mempool, MempoolError};
pub use metrics::Metrics;

/// Default for [`NodeConfig::log_limit_bytes`]: 4 MiB per run and stream.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 4 << 20;
pub use node::{
    now_ms, read_genesis, AdmitError, BlockId, GenesisSource, Node, NodeError, Subscription,
    DEV_UNBONDING_PERIOD_MS,
};

/// How the API server treats connections: what a public server needs against clients that
/// open connections and send nothing, or too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's headers must arrive within this; it also bounds how long an idle
    /// keep-alive connection waits for its next request.
    pub header_read_timeout: std::time::Duration,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 64,
        }
    }
}

/// Serves the API of `node` on `listener` until `shutdown` resolves, with the default
/// [`ServeLimits`].
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(node, listener, ServeLimits::default(), shutdown).await
}

/// Serves the API of `node` on `listener` with `limits` until `shutdown` resolves; then
/// stops accepting and gives open requests up to 10 s to finish (event streams never do).
pub async fn serve_with(
    node: Node,
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

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

    let app = api::router(node);
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
    }
    Ok(())
}
