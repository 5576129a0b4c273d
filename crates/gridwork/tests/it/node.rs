//! A node's life through the CLI: a dev node, transfers and stakes, a second node refused, kills
//! and restarts, hostile clients.

use std::process::Command;
use std::time::{Duration, Instant};

use gridwork_api::{JobStatus, Phase};
use gridwork_client::Client;
use gridwork_protocol::{dev_keypair, State};
use gridwork_storage::{RedbStore, Store};
use gridwork_types::{Address, Amount, Hash, Transaction, TxKind, GRID};
use serde_json::Value;

use super::support::{
    assert_store_equals_replay, free_port, try_http, units, Cli, NodeProcess, WorkerProcess, BIN,
};

#[test]
fn a_user_runs_a_dev_node_and_moves_and_stakes_grid() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let unbonding = Duration::from_millis(1500);
    let node = NodeProcess::start(
        &home,
        &dir.path().join("data"),
        &["--dev-unbonding-period-ms", "1500"],
    );
    let cli = Cli {
        home,
        api: node.api.clone(),
    };

    // Dev keys were added to the keystore; a new key needs a passphrase.
    let alice = cli.json(
        &["keys", "new", "alice"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    let alice_addr = alice["address"].as_str().unwrap().to_string();
    let list = cli.json(&["keys", "list"], &[]);
    let names: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "dev0", "dev1", "dev2", "dev3"]);
    assert_eq!(
        cli.json(&["keys", "show", "alice"], &[])["address"],
        alice["address"]
    );
    let (_, msg) = cli.fails(&["keys", "new", "bob"], &[]);
    assert!(msg.contains("GRIDWORK_PASSPHRASE"), "{msg}");
    // An empty passphrase is refused for a real key unless asked for in so many words.
    let (_, msg) = cli.fails(&["keys", "new", "bob"], &[("GRIDWORK_PASSPHRASE", "")]);
    assert!(msg.contains("--insecure-no-passphrase"), "{msg}");
    cli.json(&["keys", "new", "carol", "--insecure-no-passphrase"], &[]);

    // Transfer and balance.
    let sent = cli.json(&["--key", "dev0", "transfer", &alice_addr, "12.5"], &[]);
    assert_eq!(sent["status"], "committed");
    let hash = sent["hash"].as_str().unwrap().to_string();
    let bal = cli.json(&["balance", &alice_addr], &[]);
    assert_eq!(units(&bal["balance"]), 12 * GRID + GRID / 2);
    let shown = cli.json(&["tx", "show", &hash], &[]);
    assert_eq!(shown["status"], "committed");
    let height = shown["receipt"]["height"].as_u64().unwrap();
    let block = cli.json(&["block", "show", &height.to_string()], &[]);
    assert!(block["txs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == &Value::String(hash.clone())));
    assert!(
        cli.json(&["block", "show", "latest"], &[])["height"]
            .as_u64()
            .unwrap()
            >= height
    );

    // Alice's key is encrypted: the wrong passphrase is named, the right one signs.
    let bob = dev_keypair(1).address().to_string();
    let (_, msg) = cli.fails(
        &["--key", "alice", "transfer", &bob, "1"],
        &[("GRIDWORK_PASSPHRASE", "wrong")],
    );
    assert!(msg.contains("wrong passphrase"), "{msg}");
    cli.json(
        &["--key", "alice", "transfer", &bob, "1"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );

    // Stake: lock, unbond, early withdraw refused.
    cli.json(
        &["--key", "alice", "stake", "lock", "5"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    cli.json(
        &["--key", "alice", "stake", "unbond", "2"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    let bal = cli.json(&["--key", "alice", "balance"], &[]);
    assert_eq!(
        (units(&bal["stake_locked"]), units(&bal["unbonding_total"])),
        (3 * GRID, 2 * GRID)
    );
    assert_eq!(units(&bal["balance"]), 6 * GRID + GRID / 2);
    let (code, msg) = cli.fails(
        &["--key", "alice", "stake", "withdraw"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    assert_eq!(code, "nothing_to_withdraw", "{msg}");
    let (code, _) = cli.fails(
        &["--key", "alice", "stake", "unbond", "4"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    assert_eq!(code, "unbond_exceeds_locked");
    // After the unbonding period the stake comes back to the balance.
    std::thread::sleep(unbonding);
    cli.json(
        &["--key", "alice", "stake", "withdraw"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    let bal = cli.json(&["--key", "alice", "balance"], &[]);
    assert_eq!(units(&bal["balance"]), 8 * GRID + GRID / 2);
    assert_eq!(units(&bal["unbonding_total"]), 0);

    // Bad input gets clear errors.
    let (_, msg) = cli.fails(&["--key", "dev0", "transfer", "grid1nonsense", "1"], &[]);
    assert!(msg.contains("not a valid address"), "{msg}");
    let (_, msg) = cli.fails(&["--key", "dev0", "transfer", &bob, "1.2.3"], &[]);
    assert!(msg.contains("not an amount"), "{msg}");
    let (code, _) = cli.fails(
        &["--key", "alice", "transfer", &bob, "1000"],
        &[("GRIDWORK_PASSPHRASE", "hunter22")],
    );
    assert_eq!(code, "insufficient_balance");
    let (_, msg) = cli.fails(&["--key", "nobody", "transfer", &bob, "1"], &[]);
    assert!(msg.contains("no key named `nobody`"), "{msg}");
    let (_, msg) = cli.fails(&["transfer", &bob, "1"], &[]);
    assert!(msg.contains("--key"), "{msg}");

    // Text output is readable.
    let out = cli.run(&["balance", &alice_addr], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("balance") && text.contains("8.5 GRID"),
        "{text}"
    );
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    let _first = NodeProcess::start(&home, &data, &[]);
    let out = Command::new(BIN)
        .args(["node", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("GRIDWORK_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[test]
fn a_cli_error_without_a_node_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cli = Cli {
        home: dir.path().to_path_buf(),
        api,
    };
    let (_, msg) = cli.fails(&["balance", &dev_keypair(0).address().to_string()], &[]);
    assert!(msg.contains("gridwork node --dev"), "{msg}");
}

/// SIGKILL in the middle of a stream of transfers: every block the node announced survives,
/// and the stored state equals a replay of the stored blocks from genesis.
#[test]
fn a_node_killed_mid_stream_keeps_every_acknowledged_block() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&home, &data, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&node.api);
    let acknowledged: Vec<(u64, Hash)> = rt.block_on(async {
        let chain = client.chain().await.unwrap();
        let mut events = client.events().await.unwrap();
        let key = dev_keypair(0);
        let sender = {
            let client = client.clone();
            tokio::spawn(async move {
                for nonce in 0.. {
                    let to = Address([(nonce % 200) as u8; 20]);
                    let tx = Transaction {
                        from: key.public(),
                        nonce,
                        fee: Amount::ZERO,
                        kind: TxKind::Transfer {
                            to,
                            amount: Amount(1 + nonce as u128),
                        },
                    }
                    .sign(&chain.chain_id, &key);
                    if client.submit(&tx).await.is_err() {
                        break;
                    }
                }
            })
        };
        let mut acked = Vec::new();
        let start = Instant::now();
        while acked.len() < 8 && start.elapsed() < Duration::from_secs(30) {
            if let Ok(Ok(Some(event))) =
                tokio::time::timeout(Duration::from_secs(5), events.next_block()).await
            {
                acked.push((event.block.height, event.block.hash));
            }
        }
        // Kill while the sender is still streaming.
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        let _ = sender.await;
        acked
    });
    assert!(
        acknowledged.len() >= 3,
        "too few blocks announced: {acknowledged:?}"
    );

    // Replay the stored chain from genesis and compare with the stored state.
    {
        let store = RedbStore::open(&data.join("chain.redb")).unwrap();
        let genesis = gridwork_node::read_genesis(&data.join("genesis.json")).unwrap();
        let (mut replay, block0) = State::genesis(&genesis).unwrap();
        assert_eq!(store.header(0).unwrap().unwrap(), block0.header);
        let head = store.head_height().unwrap().unwrap();
        for h in 1..=head {
            replay
                .apply_block(&store.block(h).unwrap().unwrap())
                .unwrap();
        }
        let stored = store.load_state().unwrap().unwrap();
        assert_eq!(replay.root(), stored.root());
        assert_eq!(replay.head_hash(), stored.head_hash());
        for (height, hash) in &acknowledged {
            assert_eq!(
                store.header(*height).unwrap().map(|h| h.hash()),
                Some(*hash),
                "acknowledged block {height} lost"
            );
        }
    }

    // And the restarted node serves it.
    let node = NodeProcess::start(&home, &data, &[]);
    let client = Client::new(&node.api);
    rt.block_on(async {
        for (height, hash) in &acknowledged {
            let block = client.block(&height.to_string()).await.unwrap().unwrap();
            assert_eq!(block.hash, *hash);
        }
    });
}

/// The hard state: three workers run jobs with encrypted inputs and councils while the node is
/// SIGKILLed 20 times at points drawn from a fixed seed (mid-auction, mid-run, mid-commit,
/// mid-reveal). Each time it restarts on the same directory and port; auctions, deadlines,
/// reveals and settlements carry on, every job finishes with every task settled, and the
/// stored state equals a replay of the stored blocks from genesis.
/// A worker whose node is down while it registers (its stake and registration wait for
/// blocks) waits for the node and registers when it is back, rather than exiting: a CI run
/// once killed its node while three workers were still registering (their software probe had
/// grown slower), they exited, and nobody bid again.
#[test]
fn a_worker_started_while_its_node_is_down_registers_when_the_node_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data) = (dir.path().join("home"), dir.path().join("data"));
    let listen = format!("127.0.0.1:{}", free_port());
    let start = || NodeProcess::start(&home, &data, &["--listen", &listen]);
    let mut node = start();
    let cli = Cli {
        home: home.clone(),
        api: node.api.clone(),
    };
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let _worker = WorkerProcess::start(&cli, "dev1");
    std::thread::sleep(Duration::from_secs(2));
    let _node = start();
    let worker = dev_keypair(1).address().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli.run(&["provider", "show", &worker, "--json"], &[]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never registered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_node_killed_again_and_again_under_a_market_workload_restarts_and_its_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Five dev accounts: the last one's tokens vest, so dev1..=dev3 can all stake.
    let start = || NodeProcess::start(&home, &data, &["--listen", &listen, "--dev-accounts", "5"]);
    let mut node = start();
    let cli = Cli {
        home: home.clone(),
        api: node.api.clone(),
    };
    let _workers = [
        WorkerProcess::start(&cli, "dev1"),
        WorkerProcess::start(&cli, "dev2"),
        WorkerProcess::start(&cli, "dev3"),
    ];
    std::fs::create_dir_all(dir.path().join("scene")).unwrap();
    std::fs::write(dir.path().join("scene/frame.txt"), "frame data\n").unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/job.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let args_line = text
        .lines()
        .find(|l| l.starts_with("args = "))
        .unwrap()
        .to_string();
    let text = text
        .replace(
            &args_line,
            r#"args = ["-c", "sleep 0.3; cat $GRIDWORK_INPUTS/scene/frame.txt > $GRIDWORK_OUTPUTS/frame.txt; echo $GRIDWORK_ITEM_START >> $GRIDWORK_OUTPUTS/frame.txt"]"#,
        )
        .replace("first_bids = 3", "first_bids = 1")
        .replace("deadline_s = 5", "deadline_s = 1")
        .replace("inputs = []", "inputs = [\"./scene\"]");
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, &text).unwrap();
    // Every other job in checkpointed segments: its executors bind checkpoints and its
    // councils replay a drawn segment, across the restarts.
    let segmented = dir.path().join("segmented.toml");
    let in_segments = text.replace("outputs = [\"squares.txt\"]", "outputs = [\"frame.txt\"]")
        + "\n[segments]\ncount = 3\nreplayed = 1\n";
    std::fs::write(&segmented, in_segments).unwrap();
    let submit = |cli: &Cli, job_file: &std::path::Path| -> Hash {
        // The node may be down or just back: a submission the CLI could not confirm is
        // retried (the same key's next nonce makes a duplicate a new job, which is fine).
        for _ in 0..50 {
            let out = cli.run(
                &[
                    "--key",
                    "dev0",
                    "job",
                    "submit",
                    job_file.to_str().unwrap(),
                    "--json",
                ],
                &[],
            );
            if out.status.success() {
                let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
                return doc["job"].as_str().unwrap().parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no job could be submitted");
    };

    let mut jobs = vec![submit(&cli, &job_file)];
    // A service beside the jobs, served by the same three workers through its gateway (a
    // process of its own) while the node is killed: its council, receipts and settlements
    // restart from the store with everything else.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/service");
    let service_file = dir.path().join("service.toml");
    std::fs::write(
        &service_file,
        std::fs::read_to_string(example.join("service.toml"))
            .unwrap()
            .replace("max_unsettled = \"1\"", "max_unsettled = \"0.004\"")
            .replace(
                "inputs = [\"serve.py\"]",
                &format!("inputs = [\"{}\"]", example.join("serve.py").display()),
            ),
    )
    .unwrap();
    let created = cli.json(
        &[
            "--key",
            "dev0",
            "service",
            "create",
            service_file.to_str().unwrap(),
            "--deposit",
            "5",
        ],
        &[],
    );
    let service = created["service"].as_str().unwrap().to_string();
    let user_key = cli.json(&["--key", "dev0", "service", "key", "new", &service], &[])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    struct Gateway(std::process::Child);
    impl Drop for Gateway {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _gateway = Gateway(
        Command::new(BIN)
            .args(["--key", "dev0", "service", "gateway", &service, "--listen"])
            .arg(format!("127.0.0.1:{gateway_port}"))
            .env("GRIDWORK_HOME", &home)
            .env("GRIDWORK_NODE", &node.api)
            .env("GRIDWORK_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bearer = format!("Bearer {user_key}");
    let ask = |n: u32| {
        try_http(
            &gateway_url,
            "POST",
            &format!("/s/{service}/v1/completions"),
            &[("authorization", &bearer)],
            &format!(r#"{{"prompt": "request {n}", "max_tokens": 16}}"#),
        )
    };
    let mut answered = 0;
    // A fixed seed: the kill points are the same every run (as far as timing allows).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    for kill in 0..20 {
        std::thread::sleep(Duration::from_millis(150 + next(900)));
        // Between kills, a user asks (the node may be down: the gateway and members retry).
        // Every ask is answered: served, or refused saying why (forming, members connecting);
        // never left hanging (members once stopped fetching while a settlement sent to a
        // killed node was never paid).
        match ask(kill) {
            Ok((200, _)) => answered += 1,
            Ok((503, _)) => {}
            other => panic!("ask {kill} between kills: {other:?}"),
        }
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        node = start();
        if kill % 5 == 4 {
            let file = if kill % 10 == 4 {
                &segmented
            } else {
                &job_file
            };
            jobs.push(submit(&cli, file));
        }
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&node.api);
    let deadline = Instant::now() + Duration::from_secs(240);
    for job in &jobs {
        loop {
            let view = rt.block_on(client.job(job)).unwrap().unwrap();
            if view.status == JobStatus::Finished {
                for t in &view.tasks {
                    assert_eq!(t.phase, Phase::Settled, "job {job}: {view:?}");
                    if view.prescription.segments.is_some() {
                        assert_eq!(
                            (t.checkpoints.len(), t.replay.len()),
                            (3, 1),
                            "job {job}: {view:?}"
                        );
                    }
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not finish after 20 restarts: {view:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The service serves again after the last restart, and its members were paid across them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if matches!(ask(99), Ok((200, _))) {
            answered += 1;
            break;
        }
        assert!(Instant::now() < deadline, "the service never served again");
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        let s = rt
            .block_on(client.service(&service.parse().unwrap()))
            .unwrap()
            .unwrap();
        if s.members.iter().filter(|m| m.paid.0 > 0).count() == 3 {
            break s;
        }
        assert!(Instant::now() < deadline, "members not paid: {s:?}");
        // Every answer is acknowledged; members settle at half of max_unsettled.
        if matches!(ask(100 + answered), Ok((200, _))) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{answered} requests served across 20 kills of the node");
    assert_eq!(served.status, gridwork_api::ServiceStatus::Up);
    assert_eq!(served.disputes, 0);
    drop(node);
    let state = assert_store_equals_replay(&data);
    let kept = state.service(&service.parse().unwrap()).unwrap();
    assert_eq!(kept.council.len(), 3);
    assert!(kept.paid >= served.paid);
    assert_eq!(state.check_conservation(), Ok(()));
    // Finished, every job left the hot state for the archive.
    assert_eq!(state.jobs().count(), 0);
    let store = RedbStore::open(&data.join("chain.redb")).unwrap();
    for job in &jobs {
        let archived = store.archived_job(job).unwrap().expect("archived");
        assert!(archived.job.finished);
    }
}

/// The real node under every hostile client at once (scaled down): slow connections,
/// subscribers that never read, a mempool flood from one sender, repeated-id fetches and
/// unsigned 60 MiB uploads. A normal client's transfers still commit, and each attacker gets
/// only what the limits allow. Figures, not timings, are asserted; `gridwork bench hostile`
/// prints the timings at full scale.
#[test]
fn a_normal_clients_transfers_commit_while_hostile_clients_attack() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--json", "bench", "hostile", "--dir"])
        .arg(dir.path().join("bench"))
        .args([
            "--slow",
            "150",
            "--subscribers",
            "300",
            "--flood",
            "3000",
            "--fetches",
            "16",
            "--uploads",
            "8",
            "--transfers",
            "10",
            "--attack-secs",
            "12",
        ])
        .env("GRIDWORK_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["idle"]["committed"], 10, "{r}");
    assert_eq!(r["under_attack"]["committed"], 10, "{r}");
    let a = &r["attack"];
    // Slow connections are cut off at the header timeout (10 s).
    assert!(
        a["slow_cut_off_at_header_timeout"].as_u64().unwrap() > 0,
        "{r}"
    );
    // 300 subscribers against a cap of 256.
    assert!(a["subscribers_refused"].as_u64().unwrap() > 0, "{r}");
    assert!(a["subscribers_streaming"].as_u64().unwrap() > 0, "{r}");
    // 128 KiB of repeated ids draws the unsigned cap at most, never 64 MiB.
    assert!(a["fetches_answered"].as_u64().unwrap() > 0, "{r}");
    let max = a["fetch_answer_bytes_max"].as_u64().unwrap();
    assert!(max <= (5 << 20) + 4096 * 37, "{r}");
    assert_eq!(a["uploads_refused_before_body"], 8, "{r}");
    assert!(a["flood_admitted"].as_u64().unwrap() > 0, "{r}");
}
