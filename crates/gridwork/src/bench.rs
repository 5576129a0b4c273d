//! `gridwork bench ...`: the benchmarks that print figures (feature `bench`, on by default).

use anyhow::bail;
use gridwork_node::bench::{run_ledger_bench, LedgerBenchOptions};

use crate::cli::{BenchCommand, Cli};
use crate::output::{emit, rows};

/// `gridwork bench equivalence`: MiB/s of comparing two service answers each way.
fn bench_equivalence(cli: &Cli, mib: usize) -> anyhow::Result<()> {
    use gridwork_types::Equivalence;
    use gridwork_verify::{answers_equivalent, Answer};
    use std::time::Instant;
    if mib == 0 || mib > 1024 {
        bail!("--mib is {mib}; use 1 to 1024");
    }
    // Embeddings as a model server writes them: 16 numbers a vector, a second copy with
    // every number off in its last digits.
    // Vectors enough for `mib` MiB (about 350 bytes each), the same count in every copy.
    let vectors = (mib << 20) as u64 / 350;
    let embeddings = |jitter: f64, first: f64| {
        let mut out = String::from(r#"{"object": "list", "data": ["#);
        for i in 0..vectors {
            out.push_str(&format!(
                r#"{{"object": "embedding", "index": {i}, "embedding": ["#
            ));
            for j in 0..16u64 {
                let x = ((i * 16 + j) as f64 * 0.618_033_988_7).fract() * 2.0 - 1.0;
                let x = if i == 0 && j == 0 {
                    first
                } else {
                    x * (1.0 + jitter)
                };
                out.push_str(&format!("{x}{}", if j < 15 { ", " } else { "]}, " }));
            }
        }
        out.push_str("]}");
        out.into_bytes()
    };
    let a = embeddings(0.0, 0.5);
    let near = embeddings(1e-9, 0.5);
    let far = embeddings(0.0, 0.9);
    let e = Equivalence::NumericTolerance {
        abs_ppb: 0,
        rel_ppb: 10_000,
    };
    fn answer(body: &[u8]) -> Answer<'_> {
        Answer {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
    let size = a.len() as f64 / f64::from(1 << 20);
    let timed = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        let same = f();
        (t.elapsed().as_secs_f64(), same)
    };
    let (same_s, _) = timed(&|| answers_equivalent(&e, answer(&a), answer(&a)).is_same());
    let (near_s, near_same) =
        timed(&|| answers_equivalent(&e, answer(&a), answer(&near)).is_same());
    let (far_s, far_same) = timed(&|| answers_equivalent(&e, answer(&a), answer(&far)).is_same());
    let (hash_s, _) =
        timed(&|| gridwork_types::response_hash(200, "", &a) != gridwork_types::Hash::ZERO);
    if !near_same || far_same {
        bail!(
            "the bench's answers did not compare as built (near: {:?}, far: {:?})",
            answers_equivalent(&e, answer(&a), answer(&near)),
            answers_equivalent(&e, answer(&a), answer(&far))
        );
    }
    let rate = |s: f64| size / s.max(1e-9);
    let doc = serde_json::json!({
        "answer_mib": size,
        "same_bytes_mib_s": rate(same_s),
        "within_tolerance_mib_s": rate(near_s),
        "within_tolerance_ms": near_s * 1e3,
        "differs_at_first_number_ms": far_s * 1e3,
        "blake3_mib_s": rate(hash_s),
    });
    emit(cli.json, &doc, || {
        rows(&[
            (
                "answers",
                format!("{size:.1} MiB of embeddings (JSON) each"),
            ),
            ("same bytes", format!("{:.0} MiB/s", rate(same_s))),
            (
                "within the tolerance",
                format!(
                    "{:.0} MiB/s ({:.1} ms, read to the end)",
                    rate(near_s),
                    near_s * 1e3
                ),
            ),
            (
                "differ at the first number",
                format!("{:.3} ms", far_s * 1e3),
            ),
            (
                "exact (BLAKE3 of one)",
                format!("{:.0} MiB/s", rate(hash_s)),
            ),
        ])
    })
}

pub(crate) fn bench(cli: &Cli, cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Market { .. } => bench_market(cli, cmd),
        BenchCommand::Data {
            size_mib,
            dir,
            streams,
        } => crate::databench::bench_data(cli.json, *size_mib, dir, *streams),
        BenchCommand::Ledger { .. } => bench_ledger(cli, cmd),
        BenchCommand::Hostile {
            dir,
            slow,
            subscribers,
            flood,
            fetches,
            uploads,
            transfers,
            attack_secs,
        } => crate::hostilebench::bench_hostile(
            cli.json,
            dir,
            &crate::hostilebench::HostileLoad {
                slow: *slow,
                subscribers: *subscribers,
                flood: *flood,
                fetches: *fetches,
                uploads: *uploads,
                transfers: *transfers,
                attack_secs: *attack_secs,
            },
        ),
        BenchCommand::Executors {
            image,
            runs,
            dir,
            docker_socket,
        } => crate::execbench::bench_executors(cli.json, image, *runs, dir, docker_socket),
        BenchCommand::Equivalence { mib } => bench_equivalence(cli, *mib),
        BenchCommand::Reopen { db } => {
            let r = gridwork_node::bench::reopen_chain(db)?;
            emit(cli.json, &r, || reopen_rows(&r))
        }
        BenchCommand::Sim {
            seed,
            workers,
            jobs,
            tasks,
            council,
            liars,
            lazy,
            vanishing,
            deaths,
            restarts,
        } => bench_sim(
            cli,
            gridwork_sim::SimConfig {
                seed: *seed,
                workers: *workers,
                jobs: *jobs,
                tasks_per_job: *tasks,
                council: *council,
                liars: *liars,
                lazy: *lazy,
                vanishing: *vanishing,
                deaths: *deaths,
                restarts: *restarts,
                ..gridwork_sim::SimConfig::default()
            },
        ),
    }
}

fn bench_sim(cli: &Cli, cfg: gridwork_sim::SimConfig) -> anyhow::Result<()> {
    let (workers, tasks) = (
        cfg.workers,
        u64::from(cfg.jobs) * u64::from(cfg.tasks_per_job),
    );
    let o = gridwork_sim::simulate(cfg)?;
    let wall_s = o.wall.0.as_secs_f64();
    let report = serde_json::json!({
        "workers": workers,
        "tasks": tasks,
        "wall_s": wall_s,
        "virtual_s": o.virtual_ms as f64 / 1000.0,
        "blocks": o.height,
        "txs": o.txs,
        "refused_in_block": o.refused_in_block,
        "settled": o.settled,
        "failed": o.failed,
        "reopened": o.reopened,
        "slashes": o.slashes,
        "slashes_of_byzantine": o.slashes_of_byzantine,
        "restarts": o.restarts,
        "deaths": o.deaths,
        "service_responses": o.service_responses,
        "service_settlements": o.service_settlements,
        "service_councils": o.service_councils,
        "service_disputes": o.service_disputes,
        "service_owed": o.service_owed,
        "service_paid": o.service_paid,
        "trace": o.trace,
        "state_root": o.state_root,
    });
    emit(cli.json, &report, || {
        rows(&[
            (
                "market",
                format!(
                    "{tasks} tasks with {workers} workers: {} settled, {} failed, {} reopened",
                    o.settled, o.failed, o.reopened
                ),
            ),
            (
                "time",
                format!(
                    "{wall_s:.2} s of wall time for {:.1} s of virtual time ({} blocks, {} txs)",
                    o.virtual_ms as f64 / 1000.0,
                    o.height,
                    o.txs
                ),
            ),
            (
                "faults",
                format!(
                    "{} slashes ({} of Byzantine workers), {} restarts, {} deaths",
                    o.slashes, o.slashes_of_byzantine, o.restarts, o.deaths
                ),
            ),
            (
                "service",
                format!(
                    "{} responses acknowledged in {} settlements ({} GRID owed, {} GRID paid); {} councils, {} disputes",
                    o.service_responses,
                    o.service_settlements,
                    o.service_owed,
                    o.service_paid,
                    o.service_councils,
                    o.service_disputes
                ),
            ),
            ("trace", o.trace.to_string()),
        ])
    })
}

fn reopen_rows(r: &gridwork_node::bench::ReopenReport) -> String {
    rows(&[
        (
            "reopen",
            format!(
                "{:.1} ms to open the chain at height {}",
                r.open_ms, r.height
            ),
        ),
        (
            "hot state",
            format!("{} jobs, {} tasks in memory", r.hot_jobs, r.hot_tasks),
        ),
        (
            "peak memory",
            r.peak_rss_mib
                .map_or("unknown".into(), |m| format!("{m:.1} MiB resident")),
        ),
    ])
}

/// Reopens the bench chain in a fresh process of this binary, so its memory is the reopened
/// node's alone.
fn reopen_in_child(db: &std::path::Path) -> anyhow::Result<gridwork_node::bench::ReopenReport> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--json", "bench", "reopen", "--db"])
        .arg(db)
        .output()?;
    if !out.status.success() {
        bail!(
            "reopening the bench chain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn bench_market(cli: &Cli, cmd: &BenchCommand) -> anyhow::Result<()> {
    if let BenchCommand::Market {
        workers,
        jobs,
        tasks,
        council,
        data_dir,
    } = cmd
    {
        let opts = gridwork_node::bench::MarketBenchOptions {
            workers: *workers,
            jobs: *jobs,
            tasks: *tasks,
            council: *council,
            data_dir: data_dir.clone(),
        };
        let r = gridwork_node::bench::run_market_bench(&opts, |msg| eprintln!("{msg}"))?;
        eprintln!("reopening the chain in a fresh process");
        let reopen = reopen_in_child(&r.db)?;
        let report = serde_json::json!({ "market": r, "reopen": reopen });
        return emit(cli.json, &report, || {
            let mut text = rows(&[
                (
                    "settled",
                    format!(
                        "{} tasks with {} workers in {} blocks",
                        r.tasks_settled, r.workers, r.blocks
                    ),
                ),
                (
                    "throughput",
                    format!(
                        "{:.0} tasks settled/s ({:.2} s)",
                        r.tasks_per_s, r.elapsed_s
                    ),
                ),
                (
                    "assignment",
                    format!(
                        "p50 {:.1} ms, p99 {:.1} ms from task open to executor assigned",
                        r.p50_assign_ms, r.p99_assign_ms
                    ),
                ),
                (
                    "market txs",
                    format!("{} bids, commits and reveals", r.market_txs),
                ),
            ]);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&reopen_rows(&reopen));
            text
        });
    }
    Ok(())
}

fn bench_ledger(cli: &Cli, cmd: &BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Ledger {
        accounts,
        transfers,
        data_dir,
        block_interval_ms,
        max_block_txs,
        batch,
        submitters,
    } = cmd
    else {
        return Ok(());
    };
    let opts = LedgerBenchOptions {
        accounts: *accounts,
        transfers: *transfers,
        data_dir: data_dir.clone(),
        block_interval_ms: *block_interval_ms,
        max_block_txs: *max_block_txs,
        batch: *batch,
        submitters: submitters
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let report = run_ledger_bench(&opts, |msg| eprintln!("{msg}"))?;
    emit(cli.json, &report, || {
        rows(&[
            (
                "transfers",
                format!(
                    "{} from {} accounts in {} blocks",
                    report.transfers, report.accounts, report.blocks
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.0} transfers/s ({:.2} s)",
                    report.transfers_per_s, report.elapsed_s
                ),
            ),
            (
                "confirmation",
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms (at saturation: mostly queueing)",
                    report.p50_confirm_ms, report.p99_confirm_ms
                ),
            ),
            (
                "admission",
                format!(
                    "{:.2} s (signature batches, nonce and balance checks)",
                    report.admission_s
                ),
            ),
            (
                "build+commit",
                format!(
                    "{:.2} s (block execution, state root, redb commit with fsync)",
                    report.build_and_commit_s
                ),
            ),
            (
                "signing",
                format!("{:.2} s before the clock (client side)", report.signing_s),
            ),
            (
                "database",
                format!("{:.1} MiB", report.db_bytes as f64 / (1 << 20) as f64),
            ),
        ])
    })
}
