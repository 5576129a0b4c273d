//! Prometheus metrics, kept in atomics and rendered in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters and gauges of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    head_height: AtomicU64,
    blocks: AtomicU64,
    txs_committed: AtomicU64,
    txs_admitted: AtomicU64,
    txs_refused: AtomicU64,
    mempool: AtomicU64,
    commit_micros: AtomicU64,
    http_requests: AtomicU64,
}

impl Metrics {
    pub(crate) fn set_head(&self, height: u64) {
        self.head_height.store(height, Relaxed);
    }

    pub(crate) fn head(&self) -> u64 {
        self.head_height.load(Relaxed)
    }

    pub(crate) fn set_mempool(&self, len: usize) {
        self.mempool.store(len as u64, Relaxed);
    }

    pub(crate) fn admitted(&self, ok: u64, refused: u64) {
        self.txs_admitted.fetch_add(ok, Relaxed);
        self.txs_refused.fetch_add(refused, Relaxed);
    }

    pub(crate) fn block_committed(&self, height: u64, txs: u64, took: Duration) {
        self.head_height.store(height, Relaxed);
        self.blocks.fetch_add(1, Relaxed);
        self.txs_committed.fetch_add(txs, Relaxed);
        self.commit_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub(crate) fn http_request(&self) {
        self.http_requests.fetch_add(1, Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "gridwork_head_height",
            "gauge",
            "Height of the last committed block.",
            self.head_height.load(Relaxed).to_string(),
        );
        metric(
            "gridwork_blocks_committed_total",
            "counter",
            "Blocks committed since start.",
            self.blocks.load(Relaxed).to_string(),
        );
        metric(
            "gridwork_txs_committed_total",
            "counter",
            "Transactions committed since start.",
            self.txs_committed.load(Relaxed).to_string(),
        );
        metric(
            "gridwork_txs_admitted_total",
            "counter",
            "Transactions admitted to the mempool.",
            self.txs_admitted.load(Relaxed).to_string(),
        );
        metric(
            "gridwork_txs_refused_total",
            "counter",
            "Transactions refused at admission.",
            self.txs_refused.load(Relaxed).to_string(),
        );
        metric(
            "gridwork_mempool_transactions",
            "gauge",
            "Transactions waiting.",
            self.mempool.load(Relaxed).to_string(),
        );
        let secs = self.commit_micros.load(Relaxed) as f64 / 1e6;
        metric(
            "gridwork_block_build_and_commit_seconds_total",
            "counter",
            "Time spent building and durably committing blocks.",
            format!("{secs:.6}"),
        );
        metric(
            "gridwork_http_requests_total",
            "counter",
            "HTTP requests served.",
            self.http_requests.load(Relaxed).to_string(),
        );
        out
    }
}
