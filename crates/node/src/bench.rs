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
use gridwork_protocol::{Allocation, Genesis, Params, Phase};
use gridwork_storage::RedbStore;
use gridwork_types::{Address, Amount, Hash, Keypair, SignedTx, Transaction, TxKind, GRID};
use serde::Serialize;

use crate::{Node, NodeError};

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

/// `dir/name`, with `dir` created and any earlier database of that name removed.
fn fresh_db(dir: &std::path::Path, name: &str) -> Result<PathBuf, BenchError> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| BenchError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let db = dir.join(name);
    if db.exists() {
        std::fs::remove_file(&db).map_err(io(&db))?;
    }
    Ok(db)
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
    let db = fresh_db(&opts.data_dir, "bench.redb")?;

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
    let mut events = node.ledger().subscribe();
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
    let build_and_commit_s = node.metrics().commit_seconds();
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
    fn small_market_bench_settles_every_task() {
        let dir = tempfile::tempdir().unwrap();
        let opts = MarketBenchOptions {
            workers: 5,
            jobs: 2,
            tasks: 3,
            council: 1,
            data_dir: dir.path().to_path_buf(),
        };
        let report = run_market_bench(&opts, |_| {}).unwrap();
        assert_eq!(report.tasks_settled, 6);
        assert!(report.p50_assign_ms <= report.p99_assign_ms);
    }

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

/// What reopening a chain cost (`bench market` runs it in a fresh process, so the resident
/// memory is the reopened node's alone).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReopenReport {
    /// Wall time of `Node::with_store` on the stored chain: reading the hot state, rebuilding
    /// the maps, checking the state root.
    pub open_ms: f64,
    /// The head it reopened at.
    pub height: u64,
    /// Jobs and tasks in the hot state after reopening.
    pub hot_jobs: usize,
    /// Tasks in the hot state.
    pub hot_tasks: usize,
    /// Peak resident memory of the process, in MiB (Linux), if known.
    pub peak_rss_mib: Option<f64>,
}

/// Opens the chain stored at `db` as a node does at start and reports what it cost.
pub fn reopen_chain(db: &std::path::Path) -> Result<ReopenReport, BenchError> {
    let start = Instant::now();
    let store = RedbStore::open(db).map_err(NodeError::from)?;
    let node = Node::with_store(
        Box::new(store),
        None,
        Box::new(Solo::new(0, 1_000_000, Address([0; 20]))),
        1_000_000,
    )?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let (hot_jobs, hot_tasks) = node.ledger().hot_jobs_and_tasks();
    Ok(ReopenReport {
        open_ms,
        height: node.ledger().facts()?.height,
        hot_jobs,
        hot_tasks,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// This process's peak resident memory in MiB (Linux `VmHWM`, since start or the last
/// reset through `/proc/self/clear_refs`); `None` elsewhere.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// What `bench market` runs.
#[derive(Debug, Clone)]
pub struct MarketBenchOptions {
    /// Simulated workers (providers that bid, run instantly and vote honestly).
    pub workers: u32,
    /// Jobs submitted at once.
    pub jobs: u32,
    /// Tasks per job.
    pub tasks: u32,
    /// Council size of every job.
    pub council: u8,
    /// Where the bench chain is written.
    pub data_dir: PathBuf,
}

/// What `bench market` measured.
#[derive(Debug, Clone, Serialize)]
pub struct MarketBenchReport {
    /// Workers.
    pub workers: u32,
    /// Tasks settled.
    pub tasks_settled: u64,
    /// Blocks it took.
    pub blocks: u64,
    /// Wall time from the jobs' block to the last settlement.
    pub elapsed_s: f64,
    /// Settled tasks per second.
    pub tasks_per_s: f64,
    /// Transactions the market needed (bids, commits, reveals).
    pub market_txs: u64,
    /// Median time from a task opening to its executor being assigned.
    pub p50_assign_ms: f64,
    /// 99th percentile of the same.
    pub p99_assign_ms: f64,
    /// The bench chain's database (what `reopen_chain` opens).
    pub db: PathBuf,
}

/// Runs J jobs of T tasks through bids, auctions, councils, commit-reveal and settlement on
/// one node with a real store. The simulated workers skip execution (their result is known at
/// once), so the figures are the ledger's and the node's cost per task, not a program's.
pub fn run_market_bench(
    opts: &MarketBenchOptions,
    progress: impl Fn(&str),
) -> Result<MarketBenchReport, BenchError> {
    use gridwork_types::{
        commitment, Equivalence, Halting, Hardware, Instructions, Payment, Prescription, Program,
        Requirements, RunEnd,
    };
    if opts.workers < u32::from(opts.council) + 1 || opts.jobs == 0 || opts.tasks == 0 {
        return Err(BenchError::Options(
            "need jobs and tasks, and more workers than the council size".into(),
        ));
    }
    let db = fresh_db(&opts.data_dir, "market-bench.redb")?;
    let requester = bench_key(u32::MAX);
    let workers: Vec<Keypair> = (0..opts.workers).map(bench_key).collect();
    let each = 10_000_000 * GRID;
    let mut allocations: Vec<Allocation> = workers
        .iter()
        .map(|k| Allocation {
            address: k.address(),
            amount: Amount(each),
            vesting: None,
        })
        .collect();
    allocations.push(Allocation {
        address: requester.address(),
        amount: Amount(each),
        vesting: None,
    });
    let now = crate::now_ms();
    let genesis = Genesis {
        chain_id: "gridwork-market-bench".into(),
        timestamp_ms: now,
        total_supply: Amount(each * (u128::from(opts.workers) + 1) + 1_000_000 * GRID),
        rewards_pool: Amount(1_000_000 * GRID),
        params: Params {
            heartbeat_timeout_ms: 3_600_000,
            emission_start_ms: now,
            emission_total: Amount(1_000_000 * GRID),
            ..Params::default()
        },
        allocations,
    };
    let store = RedbStore::open(&db).map_err(NodeError::from)?;
    let consensus = Solo::new(0, 1_000_000, Address([0; 20]));
    let node = Node::with_store(
        Box::new(store),
        Some(&genesis),
        Box::new(consensus),
        1_000_000,
    )?;
    let chain = genesis.chain_id.clone();
    let mut nonces: HashMap<Address, u64> = HashMap::new();
    let mut sign = |k: &Keypair, kind: TxKind| {
        let n = nonces.entry(k.address()).or_insert(0);
        let tx = Transaction {
            from: k.public(),
            nonce: *n,
            fee: Amount::ZERO,
            kind,
        }
        .sign(&chain, k);
        *n += 1;
        tx
    };
    let submit = |node: &Node, txs: Vec<SignedTx>| -> Result<(), BenchError> {
        let refused: Vec<String> = node
            .submit(txs)
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        match refused.first() {
            Some(first) => Err(BenchError::Refused {
                count: refused.len(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    };
    let block = |node: &Node| -> Result<(), BenchError> {
        node.ledger().produce_block(true)?;
        Ok(())
    };

    progress(&format!("registering {} workers", opts.workers));
    let txs = workers
        .iter()
        .map(|k| {
            sign(
                k,
                TxKind::StakeLock {
                    amount: Amount::grid(1_000),
                },
            )
        })
        .collect();
    submit(&node, txs)?;
    block(&node)?;
    let txs = workers
        .iter()
        .map(|k| {
            sign(
                k,
                TxKind::RegisterProvider {
                    hardware: Hardware::default(),
                    owner: None,
                },
            )
        })
        .collect();
    submit(&node, txs)?;
    block(&node)?;

    let prescription = Prescription {
        data: Vec::new(),
        program: Program {
            command: "inputs/true".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        instructions: Instructions {
            items: u64::from(opts.tasks),
            chunk: 1,
            requirements: Requirements::default(),
            task_deadline_ms: 3_600_000,
            council_size: opts.council,
        },
        payment: Payment::FixedPerTask {
            max_price: Amount::grid(1),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 3.min(opts.workers),
            deadline_ms: 3_600_000,
            reserve_price: None,
            give_up_ms: 0,
        },
        segments: None,
    };
    let per_task =
        gridwork_protocol::max_task_cost(&prescription, &genesis.params).unwrap_or(Amount::ZERO);
    let deposit = Amount(per_task.0 * u128::from(opts.tasks));
    progress(&format!(
        "running {} jobs of {} tasks with councils of {}",
        opts.jobs, opts.tasks, opts.council
    ));
    let start = Instant::now();
    let mut job_ids = Vec::new();
    let txs: Vec<SignedTx> = (0..opts.jobs)
        .map(|_| {
            sign(
                &requester,
                TxKind::SubmitJob {
                    prescription: prescription.clone(),
                    deposit,
                },
            )
        })
        .collect();
    job_ids.extend(txs.iter().map(SignedTx::hash));
    submit(&node, txs)?;
    block(&node)?;
    let opened = Instant::now();
    let total = u64::from(opts.jobs) * u64::from(opts.tasks);
    let mut assigned_ms: Vec<f64> = Vec::with_capacity(total as usize);
    let mut seen_assigned = std::collections::HashSet::new();
    let (mut blocks, mut market_txs, mut settled) = (0u64, 0u64, 0u64);
    let output = Hash::of(b"bench output");
    let salt = Hash::of(b"bench salt");
    let by_address: HashMap<Address, &Keypair> = workers.iter().map(|k| (k.address(), k)).collect();
    let mut round = 0usize;
    while settled < total {
        let mut txs = Vec::new();
        settled = 0;
        for (j, id) in job_ids.iter().enumerate() {
            let Some(view) = crate::api::views::job_on(&node, id) else {
                continue;
            };
            for t in &view.tasks {
                match t.phase {
                    Phase::Bidding => {
                        // Three workers bid, rotating so load spreads.
                        for b in 0..3.min(workers.len()) {
                            let k =
                                &workers[(j * 7 + t.index as usize + b + round) % workers.len()];
                            if !t.bids.iter().any(|b| b.provider == k.address()) {
                                txs.push(sign(
                                    k,
                                    TxKind::Bid {
                                        job: *id,
                                        task: t.index,
                                        price: Amount::grid(1),
                                        cached: false,
                                    },
                                ));
                            }
                        }
                    }
                    Phase::Committing => {
                        if seen_assigned.insert((*id, t.index)) {
                            assigned_ms.push(opened.elapsed().as_secs_f64() * 1e3);
                        }
                        for who in t.executor.iter().chain(t.council.iter()) {
                            if !t.committed.contains(who) {
                                let c = commitment(&output, &RunEnd::SUCCESS, &salt, who);
                                let kind = TxKind::Commit {
                                    job: *id,
                                    task: t.index,
                                    attempt: t.attempt,
                                    commitment: c,
                                };
                                txs.push(sign(by_address[who], kind));
                            }
                        }
                    }
                    Phase::Revealing => {
                        let exec_revealed = t.revealed.iter().any(|(p, _)| Some(*p) == t.executor);
                        for who in t.executor.iter().chain(t.council.iter()) {
                            let is_exec = Some(*who) == t.executor;
                            if (is_exec || exec_revealed)
                                && !t.revealed.iter().any(|(p, _)| p == who)
                            {
                                let kind = TxKind::Reveal {
                                    job: *id,
                                    task: t.index,
                                    attempt: t.attempt,
                                    output,
                                    salt,
                                    seconds: 1,
                                    ended: RunEnd::SUCCESS,
                                };
                                txs.push(sign(by_address[who], kind));
                            }
                        }
                    }
                    Phase::Settled => settled += 1,
                    _ => {}
                }
            }
        }
        if settled >= total {
            break;
        }
        market_txs += txs.len() as u64;
        submit(&node, txs)?;
        block(&node)?;
        blocks += 1;
        round += 1;
        if round > 10_000 {
            return Err(BenchError::Options(
                "the market did not settle within 10,000 rounds".into(),
            ));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assigned_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        assigned_ms
            .get(((assigned_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(MarketBenchReport {
        workers: opts.workers,
        tasks_settled: settled,
        blocks,
        elapsed_s: elapsed,
        tasks_per_s: settled as f64 / elapsed.max(1e-9),
        market_txs,
        p50_assign_ms: pct(0.5),
        p99_assign_ms: pct(0.99),
        db,
    })
}
