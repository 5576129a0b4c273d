//! Workers against a real node: honest work completes, cheaters are caught, restarts resume.

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
            },
            hardware: Hardware {
                gpus: vec![],
                cpu_cores: 2,
                memory_mib: 4_096,
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
        },
        instructions: Instructions {
            items,
            chunk: 1,
            requirements: Requirements::default(),
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
    }
}

const SQUARE: &str =
    "i=$GRIDWORK_ITEM_START; echo \"item $i squared $((i*i))\" > $GRIDWORK_OUTPUTS/result.txt";

async fn result_text(net: &Net, output: &Hash) -> String {
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
    let dir = out;
    std::fs::read_to_string(dir.join("result.txt")).unwrap()
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

/// A Byzantine spammer: Sybil accounts that keep the node's mempool full of free
/// transfers, so that a step paying the chain's minimum fee finds no room.
struct Spammer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: std::thread::JoinHandle<u64>,
}

impl Spammer {
    /// Starts filling `node`'s mempool from the dev accounts `sybils`; it refills as blocks
    /// take transactions out.
    fn start(node: &Node, sybils: &[u32]) -> Spammer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let keys: Vec<_> = sybils.iter().map(|i| dev_keypair(*i)).collect();
        let (node, stopping) = (node.clone(), stop.clone());
        let task = std::thread::spawn(move || {
            let mut sent = 0;
            while !stopping.load(Ordering::Relaxed) {
                for key in &keys {
                    // As many as one sender may have waiting, from its next nonce.
                    let next = node.ledger().account(&key.address()).next_nonce;
                    let txs = (next..next + 16)
                        .map(|nonce| {
                            Transaction {
                                from: key.public(),
                                nonce,
                                fee: Amount::ZERO,
                                kind: TxKind::Transfer {
                                    to: Address([9; 20]),
                                    amount: Amount(1),
                                },
                            }
                            .sign(node.ledger().chain_id(), key)
                        })
                        .collect();
                    sent += node.submit(txs).iter().filter(|r| r.is_ok()).count() as u64;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        });
        Spammer { stop, task }
    }

    /// Stops; how many transactions it got into the mempool.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.join().unwrap()
    }
}

/// Spam cannot keep honest workers from their deadlines: with the mempool kept full of free
/// transactions, a worker's bid, commit, reveal and verdict are refused as underpriced at the
/// chain's minimum fee, and go again at the fee the node names (up to `--max-fee`), which a
/// block takes first. Without that, steps got in only through the moments between a block
/// and the spammer's refill: the same job took 14 s here instead of under 2 s, and a spammer
/// with more accounts or a faster link closes those moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spammer_filling_the_mempool_does_not_keep_honest_workers_from_their_deadlines() {
    // A small pool and small blocks: the spammer refills faster than blocks drain it.
    let net = Net::start_with(|c| {
        c.mempool_capacity = 24;
        c.mempool_max_per_sender = 12;
        c.max_block_txs = 4;
    })
    .await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100, Behavior::Honest));
    }
    net.wait_providers(2).await;
    let job = net.submit(squares(2, 1, 30_000, SQUARE)).await;
    let spammer = Spammer::start(&net.node, &[5, 6]);
    let view = net.wait_finished(&job).await;
    let spam = spammer.stop();
    assert_eq!(view.status, JobStatus::Finished, "{view:#?}");
    assert!(
        view.tasks.iter().all(|t| t.phase == Phase::Settled),
        "{view:#?}"
    );
    assert!(
        spam > 24,
        "the spammer kept the pool full: {spam} transactions"
    );
    // The workers paid to get past the spam, and no more than their cap.
    let workers: Vec<Address> = (1..=2).map(|i| dev_keypair(i).address()).collect();
    let ledger = net.node.ledger();
    let mut fees = Vec::new();
    for header in ledger.headers(usize::MAX, None).unwrap() {
        for hash in ledger
            .block_tx_hashes(header.height)
            .unwrap()
            .unwrap_or_default()
        {
            if let Some(gridwork_node::TxLookup::Committed(record)) = ledger.tx(&hash).unwrap() {
                if workers.contains(&record.tx.tx.sender()) {
                    fees.push(record.tx.tx.fee);
                }
            }
        }
    }
    assert!(
        fees.iter().any(|f| *f > Amount::ZERO),
        "no worker step had to outbid the spam: {fees:?}"
    );
    assert!(fees.iter().all(|f| *f <= gridwork_worker::DEFAULT_MAX_FEE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_executor_is_caught_and_the_requester_gets_the_right_result() {
    let net = Net::start().await;
    // The liar asks the least, so it wins the first auction.
    let liar = net.worker(1, GRID / 1000, Behavior::LyingExecutor);
    let liar_address = liar.address();
    net.spawn(liar);
    for i in 2..=4 {
        net.spawn(net.worker(i, GRID / 100, Behavior::Honest));
    }
    net.wait_providers(4).await;
    // The auction waits for all four bids, so the cheapest (the liar) wins the first round.
    let mut p = squares(1, 1, 30_000, SQUARE);
    p.halting.first_bids = 4;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let task = &view.tasks[0];
    assert_eq!(task.phase, Phase::Settled);
    assert!(task.attempt >= 1, "the first attempt was rejected");
    assert_ne!(task.executor, Some(liar_address));
    assert_eq!(
        result_text(&net, task.result.as_ref().unwrap())
            .await
            .trim(),
        "item 0 squared 0"
    );
    let liar = net.client.provider(&liar_address).await.unwrap().unwrap();
    assert!(liar.slashed.0 > 0 && liar.failed >= 1, "{liar:?}");
    net.stop.send(true).unwrap();
}

/// `LazyCouncilMember` with real workers, under numeric tolerance: every run prints a value
/// that differs a little, so the parties must fetch and compare each other's outputs. The lazy
/// member commits a made-up output and names everyone as equivalent; the executor and the two
/// honest members name each other, not it. The result settles; the lazy member is slashed and
/// earns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_council_member_is_slashed_and_the_honest_runs_decide() {
    let net = Net::start().await;
    for i in 1..=3 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    // The dearest bid: it never executes, so it sits on the council.
    let lazy = net.worker(4, GRID / 10, Behavior::LazyCouncilMember);
    let lazy_address = lazy.address();
    net.spawn(lazy);
    net.wait_providers(4).await;
    let program = "echo \"value 1.0000$(date +%N)\" > $GRIDWORK_OUTPUTS/result.txt";
    let mut p = squares(1, 3, 30_000, program);
    p.halting.first_bids = 4;
    p.equivalence = Equivalence::NumericTolerance {
        abs_ppb: 0,
        rel_ppb: 1_000_000,
    };
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert!(t.council.contains(&lazy_address), "{view:#?}");
    assert_eq!(t.judged.len(), 4, "everyone judged: {view:#?}");
    let lazy = net.client.provider(&lazy_address).await.unwrap().unwrap();
    assert!(lazy.slashed.0 > 0 && lazy.earned.0 == 0, "{lazy:?}");
    for member in t.council.iter().filter(|a| **a != lazy_address) {
        let honest = net.client.provider(member).await.unwrap().unwrap();
        assert!(honest.earned.0 > 0 && honest.slashed.0 == 0, "{honest:?}");
    }
    net.stop.send(true).unwrap();
}

/// The Blender case with real workers: every run of the program writes a different
/// file (a timestamp in its "metadata"), under exact hash. The executor and its one council
/// member disagree; the council grows by two; the four runs, compared on their files, agree
/// with nobody. The program is judged nondeterministic: nobody is slashed, the job ends (no
/// task sits in bidding), and the task's note says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nondeterministic_program_ends_the_job_and_slashes_nobody() {
    let net = Net::start().await;
    let mut workers = Vec::new();
    for i in 1..=4 {
        let w = net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest);
        workers.push(w.address());
        net.spawn(w);
    }
    net.wait_providers(4).await;
    let program = "echo \"render $(date +%N)\" > $GRIDWORK_OUTPUTS/frame.png";
    let p = squares(1, 1, 30_000, program);
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Failed, "{view:#?}");
    assert!(t.note.contains("nondeterministic"), "{}", t.note);
    assert_eq!(
        (t.round, t.council.len(), t.judged.len()),
        (1, 3, 4),
        "{view:#?}"
    );
    for w in &workers {
        let p = net.client.provider(w).await.unwrap().unwrap();
        assert_eq!(p.slashed.0, 0, "{p:?}");
    }
    let executor = net
        .client
        .provider(&t.executor.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        executor.earned.0 > 0,
        "the requester paid for the run it asked for"
    );
    net.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanishing_executor_is_replaced_after_its_deadline() {
    let net = Net::start().await;
    // It checks its stake at every heartbeat.
    let ghost = WorkerConfig {
        heartbeat: Duration::from_millis(300),
        ..net.config(1, GRID / 1000, Behavior::VanishingExecutor, None)
    };
    let ghost = Worker::new(&net.url, ghost).unwrap();
    let ghost_address = ghost.address();
    net.spawn(ghost);
    net.spawn(net.worker(2, GRID / 100, Behavior::Honest));
    net.wait_providers(2).await;
    let mut p = squares(1, 0, 1_500, SQUARE);
    p.halting.first_bids = 2;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(view.tasks[0].phase, Phase::Settled);
    assert!(
        view.tasks[0].attempt >= 1,
        "the ghost won and vanished first"
    );
    assert_ne!(view.tasks[0].executor, Some(ghost_address));
    let ghost = net.client.provider(&ghost_address).await.unwrap().unwrap();
    assert!(ghost.slashed.0 > 0, "missing the deadline costs stake");
    // The worker tops its stake back up to the level it was told, from its balance.
    net.until_block("the stake's top-up", async || {
        let account = net.client.account(&ghost_address).await.unwrap();
        (account.stake_locked == Amount::grid(1_000)).then_some(())
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_say_why_they_do_not_bid() {
    let net = Net::start().await;
    net.spawn(net.worker(1, GRID / 100, Behavior::Honest));
    net.wait_providers(1).await;
    let mut p = squares(1, 0, 30_000, SQUARE);
    p.instructions.requirements = Requirements {
        gpu_vendor: Some(GpuVendor::Nvidia),
        min_gpus: 1,
        ..Default::default()
    };
    let job = net.submit(p).await;
    let start = std::time::Instant::now();
    loop {
        let view = net.client.job(&job).await.unwrap().unwrap();
        if let Some(d) = view.declines.first() {
            assert!(d.reason.contains("nvidia GPU"), "{}", d.reason);
            assert_eq!(view.tasks[0].phase, Phase::Bidding);
            break;
        }
        assert!(start.elapsed() < WAIT, "no decline posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    net.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_streams_its_logs_to_the_node() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let program = "echo started; echo 'a warning' >&2; sleep 3; echo finished; \
                   echo ok > $GRIDWORK_OUTPUTS/result.txt";
    let job = net.submit(squares(1, 1, 30_000, program)).await;

    // While the program sleeps, what it printed so far is already on the node.
    let start = std::time::Instant::now();
    let (log, phase) = loop {
        let view = net.client.job(&job).await.unwrap().unwrap();
        let t = &view.tasks[0];
        if t.executor.is_some() {
            let log = net
                .client
                .task_log(&job, 0, None, None, LogStream::Stdout, 0)
                .await
                .unwrap();
            if !log.data.is_empty() {
                break (log, t.phase);
            }
        }
        assert!(start.elapsed() < WAIT, "no log arrived: {view:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(log.data, "started\n");
    assert_eq!(phase, Phase::Committing, "the task was still running");

    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    let executor = t.executor.unwrap();
    let stdout = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stdout, 0)
        .await
        .unwrap();
    assert_eq!(stdout.provider, executor);
    assert_eq!(stdout.data, "started\nfinished\n");
    assert_eq!(stdout.size, 17);
    let stderr = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stderr, 0)
        .await
        .unwrap();
    assert_eq!(stderr.data, "a warning\n");
    // The council member's re-run is logged too.
    let member = t.council[0];
    let theirs = net
        .client
        .task_log(&job, 0, Some(&member), None, LogStream::Stdout, 8)
        .await
        .unwrap();
    assert_eq!(theirs.data, "finished\n");

    // Nobody else can write into a task's log.
    let at = LogPosition {
        job,
        task: 0,
        attempt: t.attempt,
        stream: LogStream::Stdout,
    };
    let err = net
        .client
        .append_log(&dev_keypair(5), at, 17, "forged\n")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_assigned"), "{err}");

    // Nor read it: a log carries what the program printed of its inputs. A stranger's
    // signed read is refused, and so is an unsigned one; the council member reads it.
    let url = net.client.base_url().to_string();
    let stranger = Client::new(&url).signed_by(dev_keypair(5));
    let err = stranger
        .task_log(&job, 0, None, None, LogStream::Stdout, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_permitted"), "{err}");
    let err = Client::new(&url)
        .task_log(&job, 0, None, None, LogStream::Stdout, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("signature_required"), "{err}");
    let member_key = (1..=2)
        .map(dev_keypair)
        .find(|k| k.address() == member)
        .unwrap();
    let read = Client::new(&url)
        .signed_by(member_key)
        .task_log(&job, 0, None, None, LogStream::Stdout, 0)
        .await
        .unwrap();
    assert_eq!(read.data, "started\nfinished\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_reach_only_the_task_and_a_tolerant_council_checks_through_its_grant() {
    let net = Net::start().await;
    let mut workers = Vec::new();
    for i in 1..=3 {
        let w = net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest);
        workers.push(w.clone());
        net.spawn(w);
    }
    net.wait_providers(3).await;

    // The requester pushes an encrypted input and lets the node pass its key on.
    let requester = dev_keypair(0);
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("scene.txt"), "frame data 42\n").unwrap();
    let key = DataKey::generate();
    let pushed = net
        .client
        .push_tree(&src, &key, &TransferOptions::with_streams(2))
        .await
        .unwrap();
    let node_key = net.client.chain().await.unwrap().node_key;
    for who in [requester.public(), node_key] {
        net.client.share_key(&pushed.cid, &key, &who).await.unwrap();
    }

    // Each run appends a number that differs a little between runs: the council member must
    // fetch the executor's output (through the executor's grant) to judge it.
    let program = "cat $GRIDWORK_INPUTS/scene.txt > $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"jitter 1.0000$(date +%N)\" >> $GRIDWORK_OUTPUTS/result.txt";
    let mut p = squares(1, 1, 30_000, program);
    p.data = vec![DataInput {
        cid: pushed.cid,
        claim: key.input_claim(&pushed.cid, &requester.address()),
    }];
    p.equivalence = Equivalence::NumericTolerance {
        abs_ppb: 0,
        rel_ppb: 1_000_000,
    };
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.revealed.len(), 2);
    assert_eq!(
        t.judged.len(),
        2,
        "both judged the other's output: {view:#?}"
    );
    assert_ne!(
        t.revealed[0].1, t.revealed[1].1,
        "the runs differed, so the council judged the executor's files"
    );
    let text = result_text(&net, t.result.as_ref().unwrap()).await;
    assert!(text.starts_with("frame data 42\njitter 1.0000"), "{text}");

    // Every worker announced where it serves chunks; the council member fetched part of the
    // executor's output from the executor itself, peer to peer.
    for w in &workers {
        let record = net.client.provider(&w.address()).await.unwrap().unwrap();
        let peer = record.peer.expect("a peer address on the ledger");
        assert!(peer.addrs[0].starts_with("127.0.0.1:"), "{peer:?}");
    }
    let council = workers
        .iter()
        .find(|w| w.address() == t.council[0])
        .unwrap();
    let executors_output = t
        .revealed
        .iter()
        .find(|(who, _)| Some(*who) == t.executor)
        .map(|(_, output)| *output)
        .unwrap();
    let pulls = council.recent_pulls();
    let (_, sources) = pulls
        .iter()
        .find(|(cid, _)| *cid == executors_output)
        .expect("the council member pulled the executor's output");
    assert!(
        sources[1].source.contains(&t.executor.unwrap().to_string()) && sources[1].chunks >= 1,
        "the council member took chunks of the executor's output from the executor: {sources:?}"
    );
    assert!(council.peer_chunks() >= sources[1].chunks);

    // The input's key went to the requester, the node, the executor and the council only.
    let mut granted: Vec<Address> = net
        .client
        .key_grants(&pushed.cid)
        .await
        .unwrap()
        .iter()
        .map(|g| g.recipient)
        .collect();
    granted.sort();
    let mut expected = vec![
        requester.address(),
        node_key.address(),
        t.executor.unwrap(),
        t.council[0],
    ];
    expected.sort();
    assert_eq!(granted, expected);
    let outsider = (1..=3)
        .map(dev_keypair)
        .find(|k| !expected.contains(&k.address()))
        .unwrap();
    let err = net
        .client
        .granted_key(&pushed.cid, &outsider)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no key for"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_no_room_for_a_cache_still_run_jobs_and_keep_nothing() {
    let net = Net::start().await;
    // Every tick trims everything: chunks leave the cache while tasks pull inputs and serve
    // outputs, which must then come from the node.
    let limit = CacheLimit {
        max_bytes: 0,
        spare: Duration::ZERO,
    };
    let workers: Vec<_> = (1..=2)
        .map(|i| {
            net.worker_with_cache(i, GRID / 100 + u128::from(i), Behavior::Honest, Some(limit))
        })
        .collect();
    for w in &workers {
        net.spawn(w.clone());
    }
    net.wait_providers(2).await;
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("scene.txt"), "frame data 7\n".repeat(10_000)).unwrap();
    let input = net.push_input(&src).await;
    let view = net
        .run_on_input(
            "cat $GRIDWORK_INPUTS/scene.txt > $GRIDWORK_OUTPUTS/result.txt",
            input,
        )
        .await;
    let text = result_text(&net, view.tasks[0].result.as_ref().unwrap()).await;
    assert_eq!(text, "frame data 7\n".repeat(10_000));
    // Each worker's last tick trimmed what the job left.
    let start = std::time::Instant::now();
    while workers.iter().any(|w| w.cache_bytes() > 0) {
        assert!(
            start.elapsed() < WAIT,
            "a worker kept chunks past its limit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fetch_inputs_from_the_nodes_peer_endpoint_beside_http() {
    use gridwork_p2p::{Peer, TRANSPORT_KEY_CONTEXT};
    let net = Net::start().await;
    let peer = Peer::bind(
        net.node.keys().derive_secret(TRANSPORT_KEY_CONTEXT),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        net.node.data().chunks(),
    )
    .await
    .unwrap();
    net.node.set_peer(Some(peer.announcement(&[])));
    let announced = net.client.chain().await.unwrap().node_peer.unwrap();
    assert_eq!(announced.endpoint, peer.endpoint_key());

    let workers: Vec<_> = (1..=2)
        .map(|i| net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest))
        .collect();
    for w in &workers {
        net.spawn(w.clone());
    }
    net.wait_providers(2).await;
    // An input of several chunks (about 1 MiB each), so both of the node's transports serve.
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible bytes (xorshift), so the sealed chunks stay about 1 MiB.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..(6 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(src.join("weights.bin"), &data).unwrap();
    let input = net.push_input(&src).await;
    let view = net
        .run_on_input(
            "wc -c < $GRIDWORK_INPUTS/weights.bin > $GRIDWORK_OUTPUTS/result.txt",
            input,
        )
        .await;
    let text = result_text(&net, view.tasks[0].result.as_ref().unwrap()).await;
    assert_eq!(text.trim(), (6 << 20).to_string());
    let executor = workers
        .iter()
        .find(|w| Some(w.address()) == view.tasks[0].executor)
        .unwrap();
    let pulls = executor.recent_pulls();
    let (_, sources) = pulls
        .iter()
        .find(|(cid, _)| *cid == input.cid)
        .expect("the executor pulled the input");
    let by_peer = sources
        .iter()
        .find(|s| s.source == "node peer to peer")
        .expect("the node's endpoint was a source");
    assert!(by_peer.chunks >= 1, "{sources:?}");
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_while_its_node_is_gone_stops() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then closed.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let cfg = WorkerConfig {
        owner: None,
        key: dev_keypair(1),
        work_dir: dir.path().join("worker"),
        policy: PricingPolicy {
            price_per_task_second: Amount(1),
            capacity: 1,
            max_fee: gridwork_worker::DEFAULT_MAX_FEE,
        },
        hardware: Hardware::default(),
        stake: Amount::grid(1_000),
        poll: Duration::from_millis(50),
        heartbeat: Duration::from_secs(20),
        behavior: Behavior::Honest,
        launcher: None,
        p2p: None,
        cache: None,
    };
    let worker = Worker::new(&url, cfg).unwrap();
    let (stop, stopped) = watch::channel(false);
    stop.send(true).unwrap();
    // It used to retry forever; WAIT only bounds a hang.
    let served = tokio::time::timeout(WAIT, worker.serve(stopped)).await;
    assert!(
        matches!(served, Ok(Ok(()))),
        "a stopping worker with no task gives up on a node that does not answer"
    );
}

/// `KeyThief`: input content ids are public. A thief names a victim's input in its own job,
/// with a made-up claim and then with the victim's own claim copied from the victim's job,
/// hoping to win the task with its own provider and so receive the victim's key. The node
/// refuses both jobs, names the input and says what is missing; the thief's account never
/// appears among the tree's grants, while the victim's job over the same input is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_thief_naming_someone_elses_input_gets_no_job_and_no_key() {
    let net = Net::start().await;
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("secret.txt"), "the victim's data\n").unwrap();
    let victims = net.push_input(&src).await;
    let thief = dev_keypair(5);

    for (how, claim) in [
        ("a made-up claim", Hash([0x5a; 32])),
        ("the victim's claim", victims.claim),
        (
            "a claim made with another key",
            DataKey::generate().input_claim(&victims.cid, &thief.address()),
        ),
    ] {
        let mut p = squares(1, 1, 30_000, "cat $GRIDWORK_INPUTS/secret.txt");
        p.data = vec![DataInput {
            cid: victims.cid,
            claim,
        }];
        let err = net.submit_as(&thief, p).await.unwrap_err();
        assert_eq!(err.code(), Some("input_not_held"), "{how}: {err}");
        assert!(err.to_string().contains(&victims.cid.to_string()), "{err}");
    }
    // An input never shared with the node is refused with its own reason.
    let mut p = squares(1, 1, 30_000, "true");
    p.data = vec![DataInput {
        cid: Hash([0x77; 32]),
        claim: Hash([0x77; 32]),
    }];
    let err = net.submit_as(&thief, p).await.unwrap_err();
    assert!(
        err.to_string().contains("never shared with this node"),
        "{err}"
    );

    // The victim's own job over the same input goes in.
    let mut p = squares(1, 1, 30_000, "cat $GRIDWORK_INPUTS/secret.txt");
    p.data = vec![victims];
    net.submit(p).await;
    let grants = net.node.data().grants(&victims.cid).unwrap();
    assert!(grants.iter().all(|g| g.recipient != thief.address()));
}

/// `KeyPoisoner`: anyone who once held an input's key (a past executor, say) may post grants
/// for it, and plants a wrong key for every provider that might run the next job on it. The
/// node still hands each assigned worker the right key (its own grant is not skipped because
/// another exists), and workers take only a key that opens the tree's pin lock: the job
/// settles on the real input instead of the workers failing and being slashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_planted_for_the_workers_does_not_stop_the_job() {
    use gridwork_transfer::wrap_key;
    let net = Net::start().await;
    for i in 1..=3 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(3).await;
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("scene.txt"), "the real scene\n").unwrap();
    let key = DataKey::generate();
    let pushed = net
        .client
        .push_tree(&src, &key, &TransferOptions::with_streams(2))
        .await
        .unwrap();
    let node_key = net.client.chain().await.unwrap().node_key;
    for who in [dev_keypair(0).public(), node_key] {
        net.client.share_key(&pushed.cid, &key, &who).await.unwrap();
    }
    let wrong = DataKey::generate();
    for i in 1..=3 {
        net.client
            .add_key_grant(
                &pushed.cid,
                &key,
                &wrap_key(&wrong, &dev_keypair(i).public()),
            )
            .await
            .unwrap();
    }
    let input = DataInput {
        cid: pushed.cid,
        claim: key.input_claim(&pushed.cid, &dev_keypair(0).address()),
    };
    let view = net
        .run_on_input(
            "cat $GRIDWORK_INPUTS/scene.txt > $GRIDWORK_OUTPUTS/result.txt",
            input,
        )
        .await;
    let text = result_text(&net, view.tasks[0].result.as_ref().unwrap()).await;
    assert_eq!(text, "the real scene\n");
    let providers = net.client.providers().await.unwrap();
    assert!(providers.iter().all(|p| p.slashed.0 == 0), "{providers:?}");
}

/// Checks `text` with `promtool check metrics` (format and naming lints). Fails, never
/// skips, where promtool is missing: CI installs it with `scripts/test-deps.sh`.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool could not be run ({e}); install it with scripts/test-deps.sh")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` from `base` (`http://host:port`) over a plain connection: status and body.
async fn http_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// A market workload with a liar, an input tree and a result pulled back: the node's
/// `/metrics` shows the auctions, the settlement, the slash, the bytes both ways, the
/// collection and the routes taken (by template), and the workers' `/metrics` their runs;
/// promtool accepts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_market_workload_and_pass_promtool() {
    let net = Net::start().await;
    let liar = net.worker(1, GRID / 1000, Behavior::LyingExecutor);
    net.spawn(liar);
    let mut honest = Vec::new();
    for i in 2..=4 {
        let w = net.worker(i, GRID / 100, Behavior::Honest);
        honest.push(w.clone());
        net.spawn(w);
    }
    net.wait_providers(4).await;
    let src = net.dir.path().join("input");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("scene.txt"), "frame data 42\n").unwrap();
    let input = net.push_input(&src).await;
    let program = "cat $GRIDWORK_INPUTS/scene.txt > $GRIDWORK_OUTPUTS/result.txt";
    let mut p = squares(1, 1, 30_000, program);
    p.data = vec![input];
    // The auction waits for all four bids, so the cheapest (the liar) wins the first round.
    p.halting.first_bids = 4;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let task = &view.tasks[0];
    assert_eq!(task.phase, Phase::Settled, "{view:#?}");
    assert_eq!(
        result_text(&net, task.result.as_ref().unwrap()).await,
        "frame data 42\n"
    );
    net.node.collect_garbage().unwrap();
    assert_eq!(http_get(&net.url, "/no/such/route").await.0, 404);

    let (status, text) = http_get(&net.url, "/metrics").await;
    assert_eq!(status, 200);
    promtool_check(&text);
    // Market: two auctions at least (the liar's round, then an honest one), one settlement,
    // the liar's slash, pay for the work.
    assert!(
        sample(&text, "gridwork_auctions_closed_total") >= 2.0,
        "{text}"
    );
    assert_eq!(sample(&text, "gridwork_tasks_settled_total"), 1.0, "{text}");
    assert!(sample(&text, "gridwork_slashes_total") >= 1.0, "{text}");
    assert!(
        sample(&text, "gridwork_slashed_base_units_total") > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "gridwork_work_paid_base_units_total") > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "gridwork_jobs_submitted_total"),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "gridwork_jobs_open"), 0.0, "{text}");
    assert_eq!(sample(&text, "gridwork_tasks_open{phase=\"bidding\"}"), 0.0);
    assert!(text.contains("# TYPE gridwork_rewards_paid_base_units_total counter"));
    // Data plane: the input and outputs came in, the result went out, a collection ran.
    assert!(
        sample(&text, "gridwork_data_received_bytes_total") > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "gridwork_data_served_bytes_total") > 0.0,
        "{text}"
    );
    assert!(sample(&text, "gridwork_store_bytes") > 0.0, "{text}");
    assert!(sample(&text, "gridwork_store_chunks") > 0.0, "{text}");
    assert!(sample(&text, "gridwork_quota_used_bytes") > 0.0, "{text}");
    assert!(
        sample(&text, "gridwork_account_quota_bytes") > 0.0,
        "{text}"
    );
    assert!(sample(&text, "gridwork_gc_runs_total") >= 1.0, "{text}");
    // HTTP: routes by template, never by raw path; unknown paths under one label.
    assert!(
        sample(
            &text,
            "gridwork_http_requests_total{route=\"/v1/jobs/{id}\",method=\"GET\",status=\"200\"}"
        ) > 0.0
    );
    assert_eq!(
        sample(
            &text,
            "gridwork_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
        ),
        1.0
    );
    assert!(
        !text.contains("/no/such/route"),
        "raw paths are never labels"
    );
    assert!(!text.contains(&job.to_string()), "ids are never labels");
    assert!(
        sample(
            &text,
            "gridwork_http_request_duration_seconds_count{route=\"/v1/chunks/fetch\"}"
        ) > 0.0
    );

    // The workers: the executor that settled ran once and succeeded.
    let executor = honest
        .iter()
        .find(|w| Some(w.address()) == task.executor)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gridwork_worker::serve_metrics(
        executor.metrics(),
        listener,
        std::future::pending(),
    ));
    let (status, text) = http_get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    promtool_check(&text);
    assert!(
        sample(
            &text,
            "gridwork_worker_tasks_finished_total{role=\"executor\",outcome=\"success\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(sample(&text, "gridwork_worker_task_run_seconds_count") >= 1.0);
    assert_eq!(sample(&text, "gridwork_worker_tasks_running"), 0.0);
    // With a GPU, as NVML would report it.
    let gpus = [gridwork_worker::GpuSample {
        index: 0,
        model: "NVIDIA H100 80GB HBM3".into(),
        utilization: 0.97,
        memory_used_bytes: 60 << 30,
        memory_total_bytes: 80 << 30,
    }];
    promtool_check(&executor.metrics().render_with(Some(&gpus)));
    net.stop.send(true).unwrap();
}
