//! `gridwork bench ledger`: signed transfers through admission, block production and durable
//! commit, on a real redb store, in one process.
//!
//! The transfers are generated and signed before the clock starts (signing is the client's
//! cost). Then a submitter feeds them to [`Node::submit`] in batches (one batch signature
//! verification each) as fast as the node admits them, while the Solo producer cuts blocks
//! and commits each with one fsync. Confirmation latency of a transaction is the time from
//! the start of its batch's submission to the commit of its block; at saturation it is mostly
//! queueing, which the report says.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gridwork_consensus::Solo;
use gridwork_protocol::{Allocation, Genesis, Params};
use gridwork_storage::RedbStore;
use gridwork_types::{Address, Amount, Hash, Keypair, SignedTx, Transaction, TxKind, GRID};
use serde::Serialize;

use crate::node::{Node, NodeError};

/// What to run.
#[derive(Debug, Clone)]
pub struct LedgerBenchOptions {
    /// Funded sender accounts.
    pub accounts: u32,
    /// Signed transfers to push through.
    pub transfers: u64,
    /// Where the bench chain is written (a fresh `bench.redb` inside it).
    pub data_dir: PathBuf,
    /// Block interval of the Solo producer.
    pub block_interval_ms: u64,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Transactions per submission batch.
    pub batch: usize,
    /// Threads submitting concurrently (as concurrent API clients would).
    pub submitters: usize,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerBenchReport {
    /// Sender accounts.
    pub accounts: u32,
    /// Transfers committed.
    pub transfers: u64,
    /// Blocks it took.
    pub blocks: u64,
    /// Wall time from the first submission to the last commit.
    pub elapsed_s: f64,
    /// Committed transfers per second over `elapsed_s`.
    pub transfers_per_s: f64,
    /// Median confirmation latency.
    pub p50_confirm_ms: f64,
    /// 99th percentile confirmation latency.
    pub p99_confirm_ms: f64,
    /// Threads that submitted.
    pub submitters: usize,
    /// Time spent in admission (signature batches, nonce and balance checks), summed over
    /// the submitting threads.
    pub admission_s: f64,
    /// Time the producer spent building blocks and committing them durably.
    pub build_and_commit_s: f64,
    /// Seconds spent signing before the clock started (not in the figures above).
    pub signing_s: f64,
    /// Bytes of the database file afterwards.
    pub db_bytes: u64,
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The bench data directory could not be prepared.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Transactions were refused that should not have been.
    #[error("{count} transfers were refused at admission; first: {first}")]
    Refused {
        /// How many.
        count: usize,
        /// The first error.
        first: String,
    },
}

/// What one submitting thread did.
struct SubmitterOutcome {
    /// When each transfer (by index) was handed to the node.
    times: Vec<(usize, Instant)>,
    /// Time spent inside `Node::submit`.
    admission: Duration,
    /// Refusals, which a correct bench never has.
    refused: Vec<String>,
}

fn bench_key(i: u32) -> Keypair {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork-bench-key");
    h.update(&i.to_le_bytes());
    Keypair::from_seed(*h.finalize().as_bytes())
}

/// Runs the ledger bench.
pub fn run_ledger_bench(
    opts: &LedgerBenchOptions,
    progress: impl Fn(&str),
) -> Result<LedgerBenchReport, BenchError> {
    if opts.accounts == 0 || opts.transfers == 0 {
        return Err(BenchError::Options(
            "--accounts and --transfers must be at least 1".into(),
        ));
    }
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| BenchError::Io {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(&opts.data_dir).map_err(io(&opts.data_dir))?;
    let db = opts.data_dir.join("bench.redb");
    if db.exists() {
        std::fs::remove_file(&db).map_err(io(&db))?;
    }

    progress(&format!(
        "generating {} accounts and signing {} transfers",
        opts.accounts, opts.transfers
    ));
    let sign_start = Instant::now();
    let keys: Vec<Keypair> = (0..opts.accounts).map(bench_key).collect();
    let each = 1_000_000 * GRID;
    let genesis = Genesis {
        chain_id: "gridwork-bench".into(),
        timestamp_ms: crate::now_ms(),
        total_supply: Amount(each * u128::from(opts.accounts)),
        rewards_pool: Amount::ZERO,
        params: Params::default(),
        allocations: keys
            .iter()
            .map(|k| Allocation {
                address: k.address(),
                amount: Amount(each),
                vesting: None,
            })
            .collect(),
    };
    let mut nonces = vec![0u64; keys.len()];
    let txs: Vec<SignedTx> = (0..opts.transfers)
        .map(|i| {
            let from = (i % u64::from(opts.accounts)) as usize;
            let to = keys[(from + 1) % keys.len()].address();
            let tx = Transaction {
                from: keys[from].public(),
                nonce: nonces[from],
                fee: Amount::ZERO,
                kind: TxKind::Transfer {
                    to,
                    amount: Amount(1 + i as u128 % 1000),
                },
            };
            nonces[from] += 1;
            tx.sign(&genesis.chain_id, &keys[from])
        })
        .collect();
    let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
    let index: HashMap<Hash, usize> = hashes.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let signing_s = sign_start.elapsed().as_secs_f64();

    let store = RedbStore::open(&db).map_err(NodeError::from)?;
    let consensus = Solo::new(opts.block_interval_ms, opts.max_block_txs, Address([0; 20]));
    let capacity = (opts.transfers as usize).max(1);
    let node = Node::with_store(
        Box::new(store),
        Some(&genesis),
        Box::new(consensus),
        capacity,
    )?;

    // Collect commit times from the event stream on its own thread.
    let mut events = node.subscribe();
    let total = opts.transfers as usize;
    let collector = std::thread::spawn(move || {
        let mut committed: Vec<(Instant, Vec<Hash>)> = Vec::new();
        let mut seen = 0usize;
        while seen < total {
            match events.blocking_recv() {
                Ok(event) => {
                    seen += event.receipts.len();
                    committed.push((
                        Instant::now(),
                        event.receipts.iter().map(|r| r.tx_hash).collect(),
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        committed
    });

    // Each sender's transfers go to one submitter, so they arrive in nonce order.
    let submitters = opts.submitters.max(1);
    let mut groups: Vec<Vec<(usize, SignedTx)>> = vec![Vec::new(); submitters];
    for (i, tx) in txs.into_iter().enumerate() {
        let sender = i % opts.accounts as usize;
        groups[sender % submitters].push((i, tx));
    }

    progress("running admission, block production and durable commit");
    let producer = node.spawn_producer();
    let start = Instant::now();
    let batch = opts.batch.max(1);
    let outcomes: Vec<SubmitterOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let node = node.clone();
                scope.spawn(move || {
                    let mut times = Vec::with_capacity(group.len());
                    let mut admission = Duration::ZERO;
                    let mut refused = Vec::new();
                    let mut rest = group;
                    while !rest.is_empty() {
                        let chunk: Vec<(usize, SignedTx)> =
                            rest.drain(..batch.min(rest.len())).collect();
                        let t = Instant::now();
                        times.extend(chunk.iter().map(|(i, _)| (*i, t)));
                        let results = node.submit(chunk.into_iter().map(|(_, tx)| tx).collect());
                        admission += t.elapsed();
                        refused.extend(
                            results
                                .into_iter()
                                .filter_map(Result::err)
                                .map(|e| e.to_string()),
                        );
                    }
                    SubmitterOutcome {
                        times,
                        admission,
                        refused,
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut submitted_at = vec![start; total];
    let mut admission = Duration::ZERO;
    let mut refused = Vec::new();
    for outcome in outcomes {
        for (i, t) in outcome.times {
            submitted_at[i] = t;
        }
        admission += outcome.admission;
        refused.extend(outcome.refused);
    }
    if !refused.is_empty() {
        node.shutdown();
        let _ = producer.join();
        return Err(BenchError::Refused {
            count: refused.len(),
            first: refused[0].clone(),
        });
    }
    let committed = collector.join().unwrap_or_default();
    let elapsed = committed
        .last()
        .map_or(start.elapsed(), |(t, _)| t.duration_since(start));
    node.shutdown();
    let _ = producer.join();

    let mut latencies: Vec<f64> = Vec::with_capacity(total);
    for (at, tx_hashes) in &committed {
        for h in tx_hashes {
            if let Some(&i) = index.get(h) {
                latencies.push(at.duration_since(submitted_at[i]).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let build_and_commit_s = node
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("gridwork_block_build_and_commit_seconds_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    Ok(LedgerBenchReport {
        accounts: opts.accounts,
        transfers: latencies.len() as u64,
        blocks: committed.len() as u64,
        elapsed_s: elapsed.as_secs_f64(),
        transfers_per_s: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_confirm_ms: pct(0.50),
        p99_confirm_ms: pct(0.99),
        submitters,
        admission_s: admission.as_secs_f64(),
        build_and_commit_s,
        signing_s,
        db_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_commits_every_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LedgerBenchOptions {
            accounts: 10,
            transfers: 500,
            data_dir: dir.path().to_path_buf(),
            block_interval_ms: 5,
            max_block_txs: 100,
            batch: 64,
            submitters: 2,
        };
        let report = run_ledger_bench(&opts, |_| {}).unwrap();
        assert_eq!(report.transfers, 500);
        assert!(report.blocks >= 5, "at most 100 per block: {report:?}");
        assert!(report.p50_confirm_ms <= report.p99_confirm_ms);
    }
}
