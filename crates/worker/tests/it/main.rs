//! Workers against a real node: honest work completes, cheaters are caught, restarts resume.

mod byzantine;
mod containers;
mod data;
mod failures;
mod operations;
mod render;
mod services;
mod train;

use std::time::Duration;

use gridwork_api::{JobStatus, LogStream, Phase};
use gridwork_client::{Client, LogPosition, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::dev_keypair;
use gridwork_transfer::{ChunkStore, DataKey};
use gridwork_types::{
    Address, Amount, DataInput, Equivalence, GpuVendor, Halting, Hardware, Hash, Instructions,
    Payment, Prescription, Program, Requirements, Transaction, TxKind, GRID,
};
use gridwork_worker::{Behavior, CacheLimit, P2pConfig, PricingPolicy, Worker, WorkerConfig};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);

struct Net {
    node: Node,
    client: Client,
    url: String,
    dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

impl Net {
    async fn start() -> Net {
        Net::start_with(|_| {}).await
    }

    /// A node whose configuration `tune` changed first.
    async fn start_with(tune: impl FnOnce(&mut NodeConfig)) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig {
            data_dir: dir.path().join("node"),
            block_interval_ms: 20,
            ..NodeConfig::default()
        };
        tune(&mut config);
        let node = Node::open(&config, GenesisSource::dev(8)).unwrap();
        node.spawn_producer();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(gridwork_node::serve(
            node.clone(),
            listener,
            std::future::pending(),
        ));
        let (stop, _) = watch::channel(false);
        Net {
            client: Client::new(&url).signed_by(dev_keypair(0)),
            node,
            url,
            dir,
            stop,
        }
    }

    fn worker(&self, i: u32, price: u128, behavior: Behavior) -> std::sync::Arc<Worker> {
        self.worker_with_cache(i, price, behavior, None)
    }

    fn worker_with_cache(
        &self,
        i: u32,
        price: u128,
        behavior: Behavior,
        cache: Option<CacheLimit>,
    ) -> std::sync::Arc<Worker> {
        Worker::new(&self.url, self.config(i, price, behavior, cache)).unwrap()
    }

    fn config(
        &self,
        i: u32,
        price: u128,
        behavior: Behavior,
        cache: Option<CacheLimit>,
    ) -> WorkerConfig {
        WorkerConfig {
            owner: None,
            key: dev_keypair(i),
            work_dir: self.dir.path().join(format!("worker{i}")),
            policy: PricingPolicy {
                price_per_task_second: Amount(price),
                capacity: 4,
                max_fee: gridwork_worker::DEFAULT_MAX_FEE,
                allow_network: false,
                cached_discount_pct: gridwork_worker::DEFAULT_CACHED_DISCOUNT_PCT,
                // Unconfined (no launcher): nothing to hold, every job taken.
                hold_memory: true,
            },
            hardware: Hardware {
                gpus: vec![],
                cpu_cores: 2,
                memory_mib: 4_096,
                // What the test jobs run (`sh`, which every job here requires).
                software: vec![gridwork_types::Software {
                    name: "sh".into(),
                    version: String::new(),
                }],
                cpu_score: 0,
            },
            stake: Amount::grid(1_000),
            // Long: the workers must be driven by the event stream, not the poll.
            poll: Duration::from_secs(30),
            heartbeat: Duration::from_secs(20),
            behavior,
            launcher: None,
            p2p: Some(P2pConfig {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                announce: vec![],
            }),
            cache,
            containers: None,
            serve_services: true,
        }
    }

    fn spawn(&self, w: std::sync::Arc<Worker>) -> tokio::task::JoinHandle<()> {
        let stop = self.stop.subscribe();
        tokio::spawn(async move {
            if let Err(e) = w.run(stop).await {
                panic!("worker failed: {e}");
            }
        })
    }

    /// Waits until `check` answers, asking again after each block the node commits (what
    /// it asks about the ledger changes only then), for at most [`WAIT`].
    async fn until_block<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        use tokio::sync::broadcast::error::RecvError;
        // Subscribed before the first look: a block committed in between still wakes us.
        let mut blocks = self.node.ledger().subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            match tokio::time::timeout_at(deadline, blocks.recv()).await {
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => panic!("the node stopped before {what}"),
                Err(_) => panic!("{what} did not happen within {WAIT:?}"),
            }
        }
    }

    async fn wait_providers(&self, n: usize) {
        self.until_block("the workers' registration", async || {
            (self.client.providers().await.unwrap().len() >= n).then_some(())
        })
        .await;
    }

    /// Pushes `src` as the requester (dev0) would for a job input: under a fresh key, granted
    /// to the requester and to the node (which passes it on to each task's workers).
    async fn push_input(&self, src: &std::path::Path) -> DataInput {
        let key = DataKey::generate();
        let pushed = self
            .client
            .push_tree(src, &key, &TransferOptions::with_streams(2))
            .await
            .unwrap();
        let node_key = self.client.chain().await.unwrap().node_key;
        for who in [dev_keypair(0).public(), node_key] {
            self.client
                .share_key(&pushed.cid, &key, &who)
                .await
                .unwrap();
        }
        DataInput {
            cid: pushed.cid,
            claim: key.input_claim(&pushed.cid, &dev_keypair(0).address()),
            name: String::new(),
        }
    }

    /// Runs `program` as a one-task job (one council member) over input tree `input`, and
    /// returns the settled job.
    async fn run_on_input(&self, program: &str, input: DataInput) -> gridwork_api::JobView {
        let mut p = squares(1, 1, 30_000, program);
        p.data = vec![input];
        let job = self.submit(p).await;
        let view = self.wait_finished(&job).await;
        assert_eq!(view.tasks[0].phase, Phase::Settled, "{view:#?}");
        view
    }

    async fn submit(&self, p: Prescription) -> Hash {
        let id = self.submit_as(&dev_keypair(0), p).await.unwrap();
        self.client.wait_committed(&id, WAIT).await.unwrap();
        id
    }

    /// Submits a job signed by `key`; the node's answer.
    async fn submit_as(
        &self,
        key: &gridwork_types::Keypair,
        p: Prescription,
    ) -> Result<Hash, gridwork_client::ClientError> {
        let account = self.client.account(&key.address()).await.unwrap();
        let tx = Transaction {
            from: key.public(),
            nonce: account.next_nonce,
            fee: Amount::ZERO,
            kind: TxKind::SubmitJob {
                prescription: p,
                deposit: Amount::grid(100),
            },
        }
        .sign(self.node.ledger().chain_id(), key);
        self.client.submit(&tx).await
    }

    /// Submits a job of one task, waits for it to settle on exit 0, and reads its
    /// `result.txt` as the requester would.
    async fn one_task_result(&self, p: Prescription) -> String {
        let job = self.submit(p).await;
        let view = self.wait_finished(&job).await;
        let t = &view.tasks[0];
        assert_eq!(t.ended, Some(gridwork_types::RunEnd::SUCCESS), "{view:#?}");
        result_text(self, t.result.as_ref().unwrap()).await
    }

    async fn wait_finished(&self, job: &Hash) -> gridwork_api::JobView {
        self.until_block("the job's end", async || {
            let view = self.client.job(job).await.unwrap().unwrap();
            (view.status != JobStatus::Open).then_some(view)
        })
        .await
    }
}

fn squares(items: u64, council: u8, deadline_ms: u64, program: &str) -> Prescription {
    Prescription {
        data: vec![],
        program: Program {
            command: "sh".into(),
            args: vec!["-c".into(), program.into()],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        instructions: Instructions {
            items,
            chunk: 1,
            // A job requires the program it runs.
            requirements: Requirements {
                software: vec!["sh".into()],
                min_cpu_score: 0,
                ..Requirements::default()
            },
            task_deadline_ms: deadline_ms,
            council_size: council,
        },
        payment: Payment::PerTaskSecond {
            max_price: Amount(GRID / 10),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 1,
            deadline_ms: 2_000,
            reserve_price: None,
            give_up_ms: 0,
        },
        segments: None,
    }
}

const SQUARE: &str =
    "i=$GRIDWORK_ITEM_START; echo \"item $i squared $((i*i))\" > $GRIDWORK_OUTPUTS/result.txt";

async fn result_text(net: &Net, output: &Hash) -> String {
    let (_dir, out) = result_tree(net, output).await;
    std::fs::read_to_string(out.join("result.txt")).unwrap()
}

/// An example job (`examples/<example>/job.toml`) with its text changed by `replacements`
/// (what to find, what to put), as a test submits it: its one input (the script the template
/// added) copied into a directory of its own, as `file`, and pushed. The prescription.
async fn example_job(
    net: &Net,
    example: &str,
    replacements: &[(&str, String)],
    file: &str,
) -> Prescription {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../examples/{example}/job.toml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from} is not in {}", path.display());
        text = text.replace(from, to);
    }
    let job = gridwork_client::JobFile::parse(&text, "job.toml", path.parent().unwrap()).unwrap();
    let [gridwork_client::JobInput {
        source: gridwork_client::Input::Path(script),
        ..
    }] = &job.inputs[..]
    else {
        panic!("the script is the only input: {:?}", job.inputs);
    };
    let dir = net.dir.path().join(example);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(script, dir.join(file)).unwrap();
    let mut p = job.prescription;
    p.data = vec![net.push_input(&dir).await];
    p
}

/// Pulls a task's output tree as its requester would; the directory holding it, and where
/// the tree lies in it.
async fn result_tree(net: &Net, output: &Hash) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let requester = dev_keypair(0);
    let key = net.client.granted_key(output, &requester).await.unwrap();
    let cache = ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    net.client
        .pull_tree(
            output,
            &key,
            &cache,
            &out,
            &TransferOptions::with_streams(2),
        )
        .await
        .unwrap();
    (dir, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_workers_complete_a_job_and_are_paid() {
    let net = Net::start().await;
    for i in 1..=3 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(3).await;
    let before = net
        .client
        .account(&dev_keypair(0).address())
        .await
        .unwrap()
        .balance;
    let p = squares(3, 1, 30_000, SQUARE);
    let state_fee = net
        .client
        .chain()
        .await
        .unwrap()
        .params
        .state_fee(&p)
        .unwrap();
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(view.status, JobStatus::Finished);
    for t in &view.tasks {
        assert_eq!(t.phase, Phase::Settled);
        let text = result_text(&net, t.result.as_ref().unwrap()).await;
        assert_eq!(
            text.trim(),
            format!("item {} squared {}", t.index, t.index * t.index)
        );
    }
    let after = net
        .client
        .account(&dev_keypair(0).address())
        .await
        .unwrap()
        .balance;
    assert_eq!(
        before.0 - after.0,
        view.spent.0 + state_fee.0,
        "the requester paid exactly what was spent and the state fee"
    );
    let earned: u128 = net
        .client
        .providers()
        .await
        .unwrap()
        .iter()
        .map(|p| p.earned.0)
        .sum();
    // What was spent went to the workers but the 5% market fee (spent = work x 1.05);
    // their rewards come on top of the work.
    assert!(
        earned * 105 >= view.spent.0 * 100,
        "{earned} of {}",
        view.spent.0
    );
    assert!(earned < view.spent.0, "rewards are below the fee");
    net.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_mid_task_finishes_it() {
    let net = Net::start().await;
    let first = net.worker(1, GRID / 100, Behavior::Honest);
    let handle = net.spawn(first);
    net.wait_providers(1).await;
    let slow = format!("sleep 1; {SQUARE}");
    let job = net.submit(squares(1, 0, 30_000, &slow)).await;
    // Wait until it runs, then kill the worker in the middle of the task.
    net.until_block("the task's run", async || {
        let view = net.client.job(&job).await.unwrap().unwrap();
        (view.tasks[0].phase == Phase::Committing).then_some(())
    })
    .await;
    handle.abort();
    let _ = handle.await;
    // The same provider starts again with the same work directory.
    net.spawn(net.worker(1, GRID / 100, Behavior::Honest));
    let view = net.wait_finished(&job).await;
    assert_eq!(view.tasks[0].phase, Phase::Settled);
    assert_eq!(
        view.tasks[0].attempt, 0,
        "finished by the restarted worker, not re-auctioned"
    );
    net.stop.send(true).unwrap();
}
