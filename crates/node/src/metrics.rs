//! Prometheus metrics of one node: counts kept as the node works, gauges read from the
//! ledger and the chunk store when scraped, written in the text exposition format
//! (`gridwork_api::exposition`).
//!
//! # Families
//!
//! `docs/operations.md` lists every family with its meaning. Ledger counters come from the
//! producer ([`Metrics::block_committed`]); market counters from the events of each committed
//! block ([`Metrics::block_events`]); market gauges (open tasks by phase, open jobs,
//! providers) and data-plane gauges (store size, quota use) are read at scrape time
//! ([`Gauges`]), so they never drift from the state they describe.
//!
//! # Design decisions
//!
//! - HTTP requests are counted by route *template* (`/v1/jobs/{id}`), method and status, never
//!   by raw path: a label per path would let any client grow the node's memory and every
//!   scraper's database without bound. Requests no route matched count under `unmatched`,
//!   and methods outside the standard set under `other`.
//! - Amounts are counted in base units (`..._base_units_total`, 10^-18 GRID), exactly, in
//!   `u128`: a float would lose the low digits of large sums.
//! - Data-plane bytes count what the HTTP API received and served; peer-to-peer serving
//!   (`gridwork-p2p`) reads the chunk store directly and is not counted here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use gridwork_api::exposition::{Exposition, Histogram, Kind};
use gridwork_protocol::Event;

use crate::GcReport;

/// Counters and gauges of one node.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    head_height: AtomicU64,
    blocks: AtomicU64,
    txs_committed: AtomicU64,
    txs_admitted: AtomicU64,
    txs_refused: AtomicU64,
    mempool: AtomicU64,
    commit_micros: AtomicU64,
    market: Mutex<MarketCounts>,
    data: DataCounts,
    http: Mutex<HttpCounts>,
}

/// What committed blocks did to the market.
#[derive(Debug, Default)]
struct MarketCounts {
    jobs_submitted: u64,
    auctions_closed: u64,
    tasks_settled: u64,
    tasks_reopened: u64,
    tasks_failed: u64,
    slashes: u64,
    slashed: u128,
    paid_for_work: u128,
    rewards: u128,
}

#[derive(Debug, Default)]
struct DataCounts {
    received_bytes: AtomicU64,
    served_bytes: AtomicU64,
    gc_runs: AtomicU64,
    gc_freed_bytes: AtomicU64,
    gc_pins_expired: AtomicU64,
}

#[derive(Debug, Default)]
struct HttpCounts {
    /// By (route, method, status).
    requests: BTreeMap<(String, &'static str, u16), u64>,
    /// Seconds to the response head, by route.
    latency: BTreeMap<String, Histogram>,
}

/// Open tasks by phase, in the order [`Gauges::tasks_open`] holds them.
pub(crate) const OPEN_PHASES: [&str; 4] = ["bidding", "committing", "revealing", "judging"];

/// What a scrape reads from the node's state.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Open tasks per phase of [`OPEN_PHASES`].
    pub(crate) tasks_open: [u64; 4],
    pub(crate) jobs_open: u64,
    pub(crate) providers: u64,
    /// Chunk bytes and chunks stored (none without a chunk store).
    pub(crate) store: Option<(u64, u64)>,
    /// Bytes charged to accounts (pinned and pending uploads) and the per-account quota
    /// (none: no limit), for a node that keeps pins.
    pub(crate) quota: Option<(u64, Option<u64>)>,
}

/// A method label from a bounded set.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        _ => "other",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts stay meaningful after a panic elsewhere: each update is one step.
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Counts the market events of one committed block.
    pub(crate) fn block_events<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut m = lock(&self.market);
        for event in events {
            match event {
                Event::JobSubmitted { .. } => m.jobs_submitted += 1,
                Event::AuctionClosed { .. } => m.auctions_closed += 1,
                Event::TaskSettled {
                    paid, council_paid, ..
                } => {
                    m.tasks_settled += 1;
                    m.paid_for_work += paid.0 + council_paid.0;
                }
                Event::RunsDisagreed { paid, .. } => m.paid_for_work += paid.0,
                Event::TaskReopened { .. } => m.tasks_reopened += 1,
                Event::TaskFailed { .. } => m.tasks_failed += 1,
                Event::Slashed { amount, .. } => {
                    m.slashes += 1;
                    m.slashed += amount.0;
                }
                Event::ProofOfCompute { reward, .. } => m.rewards += reward.0,
                _ => {}
            }
        }
    }

    /// Bytes of chunk uploads received over HTTP.
    pub(crate) fn data_received(&self, bytes: usize) {
        self.data.received_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Bytes of chunks served over HTTP.
    pub(crate) fn data_served(&self, bytes: usize) {
        self.data.served_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn gc_ran(&self, report: &GcReport) {
        self.data.gc_runs.fetch_add(1, Relaxed);
        self.data
            .gc_freed_bytes
            .fetch_add(report.freed_bytes, Relaxed);
        self.data
            .gc_pins_expired
            .fetch_add(report.pins_expired, Relaxed);
    }

    /// One answered request: its route template (`None`: no route matched), method, status
    /// and the time to its response head.
    pub(crate) fn http_request(
        &self,
        route: Option<&str>,
        method: &'static str,
        status: u16,
        took: Duration,
    ) {
        let route = route.unwrap_or("unmatched");
        let mut http = lock(&self.http);
        *http
            .requests
            .entry((route.to_string(), method, status))
            .or_insert(0) += 1;
        match http.latency.get_mut(route) {
            Some(h) => h.observe(took.as_secs_f64()),
            None => {
                let mut h = Histogram::new(Histogram::LATENCY_SECONDS);
                h.observe(took.as_secs_f64());
                http.latency.insert(route.to_string(), h);
            }
        }
    }

    /// Seconds spent building and committing blocks since start.
    pub(crate) fn commit_seconds(&self) -> f64 {
        self.commit_micros.load(Relaxed) as f64 / 1e6
    }

    /// The text exposition format, with `gauges` read from the node now.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut e = Exposition::new();
        self.render_ledger(&mut e);
        self.render_market(&mut e, gauges);
        self.render_data(&mut e, gauges);
        self.render_http(&mut e);
        e.finish()
    }

    fn render_ledger(&self, e: &mut Exposition) {
        use Kind::{Counter, Gauge};
        e.single(
            "gridwork_head_height",
            Gauge,
            "Height of the last committed block.",
            self.head_height.load(Relaxed),
        )
        .single(
            "gridwork_blocks_committed_total",
            Counter,
            "Blocks committed since start.",
            self.blocks.load(Relaxed),
        )
        .single(
            "gridwork_txs_committed_total",
            Counter,
            "Transactions committed since start.",
            self.txs_committed.load(Relaxed),
        )
        .single(
            "gridwork_txs_admitted_total",
            Counter,
            "Transactions admitted to the mempool.",
            self.txs_admitted.load(Relaxed),
        )
        .single(
            "gridwork_txs_refused_total",
            Counter,
            "Transactions refused at admission.",
            self.txs_refused.load(Relaxed),
        )
        .single(
            "gridwork_mempool_transactions",
            Gauge,
            "Transactions waiting.",
            self.mempool.load(Relaxed),
        )
        .single(
            "gridwork_block_build_and_commit_seconds_total",
            Counter,
            "Time spent building and durably committing blocks.",
            self.commit_seconds(),
        );
    }

    fn render_market(&self, e: &mut Exposition, gauges: &Gauges) {
        use Kind::{Counter, Gauge};
        let name = "gridwork_tasks_open";
        e.family(
            name,
            Gauge,
            "Tasks of open jobs not yet settled, failed or cancelled, by phase.",
        );
        for (phase, n) in OPEN_PHASES.iter().zip(gauges.tasks_open) {
            e.sample(name, &[("phase", phase)], n);
        }
        let m = lock(&self.market);
        e.single(
            "gridwork_jobs_open",
            Gauge,
            "Jobs not yet finished or cancelled.",
            gauges.jobs_open,
        )
        .single(
            "gridwork_providers",
            Gauge,
            "Providers registered on the ledger.",
            gauges.providers,
        )
        .single(
            "gridwork_jobs_submitted_total",
            Counter,
            "Jobs submitted in blocks committed since start.",
            m.jobs_submitted,
        )
        .single(
            "gridwork_auctions_closed_total",
            Counter,
            "Task auctions closed (an executor and council chosen) since start.",
            m.auctions_closed,
        )
        .single(
            "gridwork_tasks_settled_total",
            Counter,
            "Tasks whose result was accepted and paid since start.",
            m.tasks_settled,
        )
        .single(
            "gridwork_tasks_reopened_total",
            Counter,
            "Tasks sent back to auction since start.",
            m.tasks_reopened,
        )
        .single(
            "gridwork_tasks_failed_total",
            Counter,
            "Tasks that gave up since start.",
            m.tasks_failed,
        )
        .single(
            "gridwork_slashes_total",
            Counter,
            "Times stake was taken from a provider since start.",
            m.slashes,
        )
        .single(
            "gridwork_slashed_base_units_total",
            Counter,
            "Stake taken from providers since start, in base units (1e-18 GRID).",
            m.slashed,
        )
        .single(
            "gridwork_work_paid_base_units_total",
            Counter,
            "Paid out of escrow to executors and councils since start, in base units (1e-18 GRID).",
            m.paid_for_work,
        )
        .single(
            "gridwork_rewards_paid_base_units_total",
            Counter,
            "Rewards paid to executors from the node-rewards pool since start, in base units (1e-18 GRID).",
            m.rewards,
        );
    }

    fn render_data(&self, e: &mut Exposition, gauges: &Gauges) {
        use Kind::{Counter, Gauge};
        let d = &self.data;
        e.single(
            "gridwork_data_received_bytes_total",
            Counter,
            "Bytes of chunk upload bodies received over HTTP.",
            d.received_bytes.load(Relaxed),
        )
        .single(
            "gridwork_data_served_bytes_total",
            Counter,
            "Bytes of chunks served over HTTP (GET /v1/chunks/{id}, POST /v1/chunks/fetch).",
            d.served_bytes.load(Relaxed),
        )
        .single(
            "gridwork_gc_runs_total",
            Counter,
            "Garbage collections of the chunk store since start.",
            d.gc_runs.load(Relaxed),
        )
        .single(
            "gridwork_gc_freed_bytes_total",
            Counter,
            "Chunk bytes garbage collection freed since start.",
            d.gc_freed_bytes.load(Relaxed),
        )
        .single(
            "gridwork_gc_pins_expired_total",
            Counter,
            "Pins that ran out and were dropped by garbage collection since start.",
            d.gc_pins_expired.load(Relaxed),
        );
        if let Some((bytes, chunks)) = gauges.store {
            e.single(
                "gridwork_store_bytes",
                Gauge,
                "Chunk bytes held by the chunk store.",
                bytes,
            )
            .single(
                "gridwork_store_chunks",
                Gauge,
                "Chunks held by the chunk store.",
                chunks,
            );
        }
        if let Some((used, quota)) = gauges.quota {
            e.single(
                "gridwork_quota_used_bytes",
                Gauge,
                "Bytes charged to accounts (pinned trees and uploads not yet pinned), all accounts together.",
                used,
            );
            if let Some(quota) = quota {
                e.single(
                    "gridwork_account_quota_bytes",
                    Gauge,
                    "The most bytes of pinned trees and pending uploads one account may hold.",
                    quota,
                );
            }
        }
    }

    fn render_http(&self, e: &mut Exposition) {
        let http = lock(&self.http);
        let name = "gridwork_http_requests_total";
        e.family(
            name,
            Kind::Counter,
            "HTTP requests answered, by route template (unmatched: no route), method and status.",
        );
        for ((route, method, status), n) in &http.requests {
            let status = status.to_string();
            e.sample(
                name,
                &[("route", route), ("method", method), ("status", &status)],
                *n,
            );
        }
        let name = "gridwork_http_request_duration_seconds";
        e.family(
            name,
            Kind::Histogram,
            "Seconds from a request's arrival to its response head, by route template.",
        );
        for (route, h) in &http.latency {
            e.histogram(name, &[("route", route)], h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_types::{Address, Amount, Hash};

    #[test]
    fn market_events_count_settlements_slashes_and_amounts() {
        let m = Metrics::default();
        let job = Hash([1; 32]);
        let who = Address([2; 20]);
        m.block_events(&[
            Event::Slashed {
                provider: who,
                amount: Amount(u128::from(u64::MAX) * 3),
                job,
                task: 0,
                reason: "lied".into(),
            },
            Event::TaskSettled {
                job,
                task: 0,
                attempt: 1,
                executor: who,
                output: job,
                paid: Amount(10),
                council_paid: Amount(5),
                ended: gridwork_types::RunEnd::SUCCESS,
            },
        ]);
        let text = m.render(&Gauges::default());
        assert!(text.contains("gridwork_slashes_total 1\n"), "{text}");
        assert!(
            text.contains(&format!(
                "gridwork_slashed_base_units_total {}\n",
                u128::from(u64::MAX) * 3
            )),
            "{text}"
        );
        assert!(text.contains("gridwork_tasks_settled_total 1\n"), "{text}");
        assert!(
            text.contains("gridwork_work_paid_base_units_total 15\n"),
            "{text}"
        );
    }

    #[test]
    fn requests_are_labelled_by_route_template_and_unmatched_paths_share_one_label() {
        let m = Metrics::default();
        let ms = Duration::from_millis(3);
        m.http_request(Some("/v1/jobs/{id}"), "GET", 200, ms);
        m.http_request(Some("/v1/jobs/{id}"), "GET", 200, ms);
        m.http_request(None, "GET", 404, ms);
        m.http_request(None, method_label(&axum::http::Method::TRACE), 404, ms);
        let text = m.render(&Gauges::default());
        assert!(
            text.contains(
                "gridwork_http_requests_total{route=\"/v1/jobs/{id}\",method=\"GET\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gridwork_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gridwork_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"+Inf\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gridwork_http_request_duration_seconds_count{route=\"/v1/jobs/{id}\"} 2\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_open_phase_is_written_even_at_zero() {
        let gauges = Gauges {
            tasks_open: [3, 0, 0, 1],
            ..Gauges::default()
        };
        let text = Metrics::default().render(&gauges);
        for (phase, n) in OPEN_PHASES.iter().zip(gauges.tasks_open) {
            assert!(
                text.contains(&format!("gridwork_tasks_open{{phase=\"{phase}\"}} {n}\n")),
                "{text}"
            );
        }
        assert!(
            !text.contains("gridwork_store_bytes"),
            "no store, no family"
        );
    }
}
