//! `gridwork demo`: a dev node, workers (one of them a liar) and a sample job in one process.
//! Built with the `demo` feature (on by default), which turns on the worker's test doubles.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridwork_api::JobStatus;
use gridwork_client::{Client, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::{dev_keypair, max_task_cost};
use gridwork_transfer::ChunkStore;
use gridwork_types::{
    Address, Amount, Equivalence, Halting, Instructions, Payment, Prescription, Program,
    Requirements, TxKind, GRID,
};
use gridwork_worker::sandbox::Launcher;
use gridwork_worker::{
    gpu_devices, probe, Behavior, CacheLimit, P2pConfig, PricingPolicy, Worker, WorkerConfig,
};
use serde_json::json;
use tokio::sync::watch;

use crate::cli::{Cli, DemoArgs};
use crate::commands::{runtime, sign_and_send};
use crate::data::PeerSources;
use crate::output::emit;

/// The demo's data directory (`--data-dir`, else `temp`) and its dev node, opened.
pub(crate) fn open_node(
    args: &DemoArgs,
    temp: &Path,
) -> anyhow::Result<(std::path::PathBuf, Node)> {
    let base = std::path::absolute(args.data_dir.clone().unwrap_or_else(|| temp.to_path_buf()))
        .context("resolving --data-dir")?;
    // The demo's workers keep their work beneath it.
    crate::worker::check_tasks_reach(&base, "--data-dir")?;
    let config = NodeConfig {
        data_dir: base.join("node"),
        block_interval_ms: 50,
        ..NodeConfig::default()
    };
    let node = Node::open(&config, GenesisSource::dev(6)).context("starting the demo node")?;
    Ok((base, node))
}

/// Serves `node` (its API, producer and key hand-off) on a free local port: its URL, what
/// stops it, and the server's task.
pub(crate) async fn serve_node(
    node: &Node,
) -> anyhow::Result<(
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_node, node_stopping) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gridwork_node::run(
        node.clone(),
        listener,
        gridwork_node::ServeLimits::default(),
        axum::Router::new(),
        async {
            let _ = node_stopping.await;
        },
    ));
    Ok((url, stop_node, server))
}

/// A demo worker: dev key `i`, asking `price` per task-second, confined as a provider's
/// worker would be, serving chunks peer to peer.
pub(crate) fn worker_config(
    base: &Path,
    i: u32,
    price: u128,
    behavior: Behavior,
    hardware: &gridwork_types::Hardware,
) -> WorkerConfig {
    let cgroups = gridwork_worker::cgroup::Cgroups::find(
        &base.join(format!("worker{i}")).display().to_string(),
    );
    WorkerConfig {
        owner: None,
        key: dev_keypair(i),
        work_dir: base.join(format!("worker{i}")),
        policy: PricingPolicy {
            price_per_task_second: Amount(price),
            capacity: 4,
            max_fee: gridwork_worker::DEFAULT_MAX_FEE,
            allow_network: false,
            cached_discount_pct: gridwork_worker::DEFAULT_CACHED_DISCOUNT_PCT,
            hold_memory: cgroups.is_ok(),
        },
        hardware: hardware.clone(),
        stake: Amount::grid(1_000),
        poll: Duration::from_secs(5),
        heartbeat: Duration::from_secs(20),
        behavior,
        launcher: std::env::current_exe().ok().map(|exe| Launcher {
            exe,
            memory_mib: None,
            max_file_mib: Some(1_024),
            gpu_devices: gpu_devices(Path::new("/dev")),
            hidden: vec![base.to_path_buf()],
            cgroups,
        }),
        // The demo's workers fetch inputs and each other's outputs peer to peer.
        p2p: Some(P2pConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            announce: vec![],
        }),
        cache: Some(CacheLimit {
            max_bytes: 1 << 30,
            spare: Duration::from_secs(600),
        }),
        containers: None,
        serve_services: true,
    }
}

/// The sample job: each task squares its items; a council member checks each task.
fn sample_job(items: u64) -> Prescription {
    let script = "for i in $(seq $GRIDWORK_ITEM_START $((GRIDWORK_ITEM_END - 1))); do \
                  echo \"item $i squared $((i * i))\"; done > $GRIDWORK_OUTPUTS/squares.txt";
    Prescription {
        data: Vec::new(),
        program: Program {
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        instructions: Instructions {
            items,
            chunk: 2,
            // The job requires the program it runs.
            requirements: Requirements {
                software: vec!["sh".into()],
                min_cpu_score: 0,
                ..Requirements::default()
            },
            task_deadline_ms: 30_000,
            council_size: 1,
        },
        payment: Payment::PerTaskSecond {
            max_price: Amount(GRID / 10),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 3,
            deadline_ms: 1_000,
            reserve_price: None,
            give_up_ms: 0,
        },
        segments: None,
    }
}

pub(crate) fn demo(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    if args.items == 0 {
        bail!("--items must be at least 1");
    }
    let temp = tempdir()?;
    let (base, node) = open_node(args, &temp)?;
    let say = |line: String| {
        if !cli.json {
            println!("{line}");
        }
    };
    let result = runtime()?.block_on(async {
        let (url, stop_node, server) = serve_node(&node).await?;
        say(format!("node      {url} (chain {}, data in {})", node.ledger().chain_id(), base.display()));

        let (stop, _) = watch::channel(false);
        let mut workers = Vec::new();
        let mut names = vec![(1, GRID / 100, Behavior::Honest), (2, GRID / 80, Behavior::Honest), (3, GRID / 60, Behavior::Honest)];
        if args.liar {
            names.push((4, GRID / 200, Behavior::LyingExecutor));
        }
        // What this machine offers tasks, found once for all three workers.
        let mut hardware = probe();
        hardware.software = gridwork_worker::software::probe_software(&[]);
        for (i, price, behavior) in names {
            let w = Worker::new(&url, worker_config(&base, i, price, behavior, &hardware))?;
            let label = if behavior == Behavior::Honest { "worker" } else { "liar" };
            say(format!("{label:<9} dev{i} {} asks {} GRID per task-second", w.address(), Amount(price).rounded()));
            let rx = stop.subscribe();
            workers.push(tokio::spawn(async move { w.run(rx).await }));
        }
        // The requester signs its uploads: nodes store data for funded accounts only.
        let client = Client::new(&url).signed_by(dev_keypair(0));
        let wanted = workers.len();
        let started = Instant::now();
        while client.providers().await?.len() < wanted {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the demo workers did not register within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let requester = dev_keypair(0);
        let mut prescription = sample_job(args.items);
        prescription.halting.first_bids = wanted as u32;
        let params = client.chain().await?.params;
        let per_task = max_task_cost(&prescription, &params).unwrap_or(Amount::ZERO);
        let deposit = Amount(per_task.0 * u128::from(prescription.instructions.task_count()));
        let before = client.account(&requester.address()).await?.balance;
        let (job, _) = sign_and_send(&client, &requester, Amount::ZERO, TxKind::SubmitJob { prescription, deposit }, true).await?;
        say(format!("job       {job}: {} items in {} tasks, deposit {deposit} GRID", args.items, args.items.div_ceil(2)));

        let mut last = String::new();
        let view = loop {
            let view = client.job(&job).await?.context("the job vanished")?;
            let line: Vec<String> = view.tasks.iter().map(|t| format!("{}:{}", t.index, t.phase)).collect();
            let line = format!("progress  {} settled of {}  [{}]", view.settled, view.tasks.len(), line.join(" "));
            if line != last {
                say(line.clone());
                last = line;
            }
            if view.status != JobStatus::Open {
                break view;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the demo job did not finish in five minutes: `gridwork job status {job}` on {url}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let after = client.account(&requester.address()).await?.balance;
        let mut tasks = Vec::new();
        let cache = ChunkStore::open(base.join("requester-chunks"), None)?;
        for t in &view.tasks {
            let (text, from) = match t.result {
                Some(cid) => {
                    let dir = base.join("results").join(format!("task-{}", t.index));
                    let key = client.granted_key(&cid, &requester).await?;
                    // From the node and, peer to peer, the executor that kept its output.
                    let holders: Vec<Address> = t.executor.into_iter().collect();
                    let opts = TransferOptions::with_streams(4);
                    let report = PeerSources::resolve(&client, &[], &holders)
                        .await?
                        .pull(&client, &cid, &key, &cache, &dir, &opts)
                        .await?;
                    let from: Vec<_> = report
                        .sources
                        .iter()
                        .map(|s| json!({ "source": s.source, "chunks": s.chunks }))
                        .collect();
                    let text = std::fs::read_to_string(dir.join("squares.txt")).unwrap_or_default();
                    (text, from)
                }
                None => (String::new(), Vec::new()),
            };
            tasks.push(json!({ "task": t.index, "phase": t.phase, "attempt": t.attempt, "executor": t.executor, "council": t.council, "price": t.price, "output": t.result, "result": text, "from": from }));
        }
        let providers = client.providers().await?;
        let _ = stop.send(true);
        for w in workers {
            let _ = w.await;
        }
        let _ = stop_node.send(());
        let _ = server.await;
        anyhow::Ok(json!({
            "job": job,
            "status": view.status,
            "deposit": deposit,
            "paid": Amount(before.0 - after.0),
            "refunded": Amount(deposit.0 - (before.0 - after.0)),
            "tasks": tasks,
            "providers": providers,
        }))
    });
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let doc = result?;
    emit(cli.json, &doc, || {
        let mut out = String::from("\nsettlement");
        for t in doc["tasks"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  task {} {} (attempt {}) by {} at {} GRID/s: {}",
                t["task"],
                t["phase"].as_str().unwrap_or(""),
                t["attempt"],
                t["executor"].as_str().unwrap_or("-"),
                amount(&t["price"]),
                t["result"]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .replace('\n', "; ")
            ));
            let from: Vec<String> = t["from"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let source = s["source"].as_str().unwrap_or("");
                    let name = if source.starts_with("peer ") {
                        "from the executor peer to peer"
                    } else {
                        "from the node"
                    };
                    format!("{} {name}", s["chunks"])
                })
                .collect();
            if !from.is_empty() {
                out.push_str(&format!("\n    output chunks: {}", from.join(", ")));
            }
        }
        out.push_str(&format!(
            "\n  requester paid {} GRID of its {} GRID deposit; {} GRID refunded",
            amount(&doc["paid"]),
            amount(&doc["deposit"]),
            amount(&doc["refunded"])
        ));
        for p in doc["providers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  provider {} earned {} GRID, slashed {} GRID, {} validated, {} failed",
                p["address"].as_str().unwrap_or(""),
                amount(&p["earned"]),
                amount(&p["slashed"]),
                p["validated"],
                p["failed"]
            ));
        }
        out
    })
}

pub(crate) fn amount(v: &serde_json::Value) -> Amount {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "gridwork-demo-{}-{}",
        std::process::id(),
        gridwork_node::now_ms()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
