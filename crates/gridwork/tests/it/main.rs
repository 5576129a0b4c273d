//! The `gridwork` binary, driven as a user drives it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gridwork_api::{JobStatus, Phase};
use gridwork_client::Client;
use gridwork_protocol::{dev_keypair, State};
use gridwork_storage::{RedbStore, Store};
use gridwork_types::{Address, Amount, Hash, Transaction, TxKind, GRID};
use serde_json::Value;

mod readme;

const BIN: &str = env!("CARGO_BIN_EXE_gridwork");

/// A `gridwork node --dev` child process.
struct NodeProcess {
    child: Child,
    api: String,
}

impl NodeProcess {
    fn start(home: &Path, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let listen = if extra.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        };
        let mut child = Command::new(BIN)
            .args(["node", "--dev"])
            .args(listen)
            .args(["--block-interval-ms", "20", "--json", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("GRIDWORK_HOME", home)
            .env("GRIDWORK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut doc = String::new();
        let info: Value = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "node exited before printing its address"
            );
            doc.push_str(&line);
            if let Ok(v) = serde_json::from_str(&doc) {
                break v;
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        NodeProcess {
            child,
            api: info["api"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cli {
    home: PathBuf,
    api: String,
}

impl Cli {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("GRIDWORK_HOME", &self.home)
            .env("GRIDWORK_NODE", &self.api)
            .env_remove("GRIDWORK_PASSPHRASE")
            .env_remove("GRIDWORK_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a command that must succeed and returns its JSON document.
    fn json(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {stdout}"))
    }

    /// Runs a command that must fail and returns (JSON error code, message).
    fn fails(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, env);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            doc["error"]["code"].as_str().unwrap().into(),
            doc["error"]["message"].as_str().unwrap().into(),
        )
    }
}

fn units(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

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

#[test]
fn demo_runs_a_job_to_settlement_and_catches_the_liar() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--liar", "--json", "--data-dir"])
        .arg(dir.path())
        .env("GRIDWORK_HOME", dir.path().join("home"))
        .env("GRIDWORK_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["status"], "finished");
    let tasks = doc["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for t in tasks {
        assert_eq!(t["phase"], "settled");
        let i = t["task"].as_u64().unwrap();
        let want = format!(
            "item {} squared {}\nitem {} squared {}\n",
            2 * i,
            4 * i * i,
            2 * i + 1,
            (2 * i + 1) * (2 * i + 1)
        );
        assert_eq!(t["result"].as_str().unwrap(), want);
        // The requester took the output from the node and, peer to peer, from the executor.
        let executor = format!("peer {}", t["executor"].as_str().unwrap());
        let from = t["from"].as_array().unwrap();
        let peer = from.iter().find(|s| s["source"] == executor.as_str());
        assert!(
            peer.is_some_and(|s| s["chunks"].as_u64().unwrap() >= 1),
            "{from:?}"
        );
    }
    let liar = dev_keypair(4).address().to_string();
    let providers = doc["providers"].as_array().unwrap();
    let liar = providers
        .iter()
        .find(|p| p["address"] == liar.as_str())
        .unwrap();
    assert!(units(&liar["slashed"]) > 0, "the liar was slashed");
    assert_eq!(
        units(&doc["paid"]) + units(&doc["refunded"]),
        units(&doc["deposit"])
    );
}

#[test]
fn a_job_file_is_submitted_shown_and_cancelled_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(&home, &dir.path().join("data"), &[]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/job.example.toml");

    // An input directory is uploaded with the job.
    let job_dir = dir.path().join("job");
    std::fs::create_dir_all(job_dir.join("scene")).unwrap();
    std::fs::write(job_dir.join("scene/frame.txt"), "frame data").unwrap();
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("inputs = []", "inputs = [\"./scene\"]");
    std::fs::write(job_dir.join("job.toml"), text).unwrap();
    let job_file = job_dir.join("job.toml");
    let job_file = job_file.to_str().unwrap();

    let (_, msg) = cli.fails(
        &[
            "--key",
            "dev0",
            "job",
            "submit",
            job_file,
            "--deposit",
            "0.01",
        ],
        &[],
    );
    assert!(
        msg.contains("does not cover the job's maximum cost"),
        "{msg}"
    );

    let before = units(&cli.json(&["--key", "dev0", "balance"], &[])["balance"]);
    let submitted = cli.json(&["--key", "dev0", "job", "submit", job_file], &[]);
    let job = submitted["job"].as_str().unwrap().to_string();
    assert_eq!(submitted["tasks"], 3);
    let status = cli.json(&["job", "status", &job], &[]);
    assert_eq!(status["status"], "open");
    assert_eq!(status["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(status["prescription"]["data"].as_array().unwrap().len(), 1);
    let text = String::from_utf8_lossy(&cli.run(&["job", "status", &job], &[]).stdout).to_string();
    assert!(
        text.contains("bidding") && text.contains("open for bids"),
        "{text}"
    );

    cli.json(&["--key", "dev0", "job", "cancel", &job], &[]);
    assert_eq!(
        cli.json(&["job", "status", &job], &[])["status"],
        "cancelled"
    );
    assert_eq!(
        units(&cli.json(&["--key", "dev0", "balance"], &[])["balance"]),
        before - units(&submitted["state_fee"]),
        "the whole deposit came back (the state fee is not refunded)"
    );

    let (_, msg) = cli.fails(&["job", "status", &"ab".repeat(32)], &[]);
    assert!(msg.contains("not known"), "{msg}");
    let bad = job_dir.join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&example)
            .unwrap()
            .replace("chunk = 2", "chunk = 0"),
    )
    .unwrap();
    let (_, msg) = cli.fails(
        &["--key", "dev0", "job", "submit", bad.to_str().unwrap()],
        &[],
    );
    assert!(msg.contains("instructions.chunk"), "{msg}");
    let (_, msg) = cli.fails(
        &["provider", "show", &dev_keypair(1).address().to_string()],
        &[],
    );
    assert!(msg.contains("not a registered provider"), "{msg}");
}

#[test]
fn task_programs_cannot_write_outside_their_work_directory_or_past_limits() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let outside = dir.path().join("outside.txt");
    let script = format!(
        "echo ok > {w}/in.txt; echo bad > {o}; head -c 3000000 /dev/zero > {w}/big; exit 0",
        w = work.display(),
        o = outside.display()
    );
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--max-file-mib", "1", "--work"])
        .arg(&work)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        work.join("in.txt").exists(),
        "writes inside the work directory work: {stderr}"
    );
    assert!(
        std::fs::metadata(work.join("big")).unwrap().len() <= 1 << 20,
        "the file size limit holds"
    );
    if stderr.contains("Landlock Unsupported") {
        // A kernel without Landlock: the program ran under resource limits only, and said so.
        return;
    }
    assert!(
        !outside.exists(),
        "Landlock stops writes outside the work directory: {stderr}"
    );
}

#[test]
fn task_programs_with_gpus_may_write_their_devices_and_thread_names_and_all_use_shared_memory() {
    // /dev/zero stands for a GPU's node here. CUDA names its threads at start, in the process
    // that calls it: a child of the task's shell here.
    let script = "echo a > /dev/zero && echo gpu-ok; echo b > /dev/random && echo other-ok; \
                  sh -c 'echo worker > /proc/self/task/$$/comm' && echo comm-ok; \
                  echo c > /dev/shm/gridwork-test-$$ && rm /dev/shm/gridwork-test-$$ && echo shm-ok; \
                  exit 0";
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .arg("sandbox-exec")
            .args(extra)
            .arg("--work")
            .arg(dir.path())
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (gpu, stderr) = run(&["--gpu-device", "/dev/zero"]);
    for ok in ["gpu-ok", "comm-ok", "shm-ok"] {
        assert!(gpu.contains(ok), "{ok}: {gpu} {stderr}");
    }
    if stderr.contains("Landlock Unsupported") {
        return;
    }
    assert!(
        !gpu.contains("other-ok"),
        "a device not given stays closed for writing: {gpu} {stderr}"
    );
    let (plain, stderr) = run(&[]);
    assert!(plain.contains("shm-ok"), "{plain} {stderr}");
    for refused in ["gpu-ok", "other-ok", "comm-ok"] {
        assert!(
            !plain.contains(refused),
            "{refused} without GPUs: {plain} {stderr}"
        );
    }
}

#[test]
fn task_programs_cannot_read_the_workers_home_or_other_tasks_beside_their_own() {
    // The layout of a worker: its home with keys, its work directory with two tasks, one of
    // them holding another requester's decrypted input.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mine = home.join("worker/dev1/tasks/a-0-0");
    let other = home.join("worker/dev1/tasks/b-0-0/inputs");
    for d in [&mine.join("inputs"), &other, &home.join("keys")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(mine.join("inputs/data.txt"), "mine\n").unwrap();
    std::fs::write(other.join("data.txt"), "theirs\n").unwrap();
    std::fs::write(home.join("keys/dev1.key"), "secret\n").unwrap();
    let script = format!(
        "cat inputs/data.txt; cat {other}/data.txt; cat {home}/keys/dev1.key; \
         ls {home}/worker/dev1/tasks; head -c 3 /etc/passwd && echo; exit 0",
        other = other.display(),
        home = home.display()
    );
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--hide"])
        .arg(&home)
        .arg("--work")
        .arg(&mine)
        .args(["--", "sh", "-c", &script])
        .current_dir(&mine)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("mine\n"),
        "its own inputs: {stdout} {stderr}"
    );
    assert!(
        stdout.contains("roo\n"),
        "the rest of the system: {stdout} {stderr}"
    );
    if stderr.contains("Landlock Unsupported") {
        return;
    }
    for secret in ["theirs", "secret", "b-0-0"] {
        assert!(!stdout.contains(secret), "{secret}: {stdout} {stderr}");
    }
}

#[test]
fn sandbox_exec_of_a_missing_program_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--work"])
        .arg(dir.path())
        .args(["--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot execute `/no/such/program`"));
}

/// The arguments of `gridwork --key dev1 data pull CID --out OUT EXTRA...`.
fn pull<'a>(cid: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--key",
        "dev1",
        "data",
        "pull",
        cid,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn data_push_moves_only_changes_and_pull_needs_a_granted_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(&home, &dir.path().join("data"), &[]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(src.join("a")).unwrap();
    for i in 0..4u8 {
        let mut bytes = vec![0u8; 300_000];
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = (j as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(i) * 7_919)
                .rotate_left(7) as u8;
        }
        std::fs::write(src.join(format!("a/{i}.bin")), bytes).unwrap();
    }
    std::fs::write(src.join("readme.txt"), "hello").unwrap();
    let src_s = src.to_str().unwrap();
    // Older than a second, so the push index remembers them.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let first = cli.json(&["--key", "dev0", "data", "push", src_s], &[]);
    let cid = first["cid"].as_str().unwrap().to_string();
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(first["unchanged_files"], 0);
    let again = cli.json(&["--key", "dev0", "data", "push", src_s], &[]);
    assert_eq!(
        (
            again["cid"].as_str().unwrap(),
            again["bytes_sent"].as_u64().unwrap(),
            again["unchanged_files"].as_u64().unwrap()
        ),
        (cid.as_str(), 0, 5),
        "nothing sent, no file read again"
    );
    assert_eq!(
        again["pinned_from"].as_str(),
        Some(cid.as_str()),
        "the pin named only the changes since the first push (none)"
    );

    let listing = cli.json(&["--key", "dev0", "data", "ls", &cid], &[]);
    assert!(listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "a/2.bin"));

    // dev1 cannot read it until shared.
    let out = dir.path().join("copy");
    let (_, msg) = cli.fails(&pull(&cid, &out, &[]), &[]);
    assert!(msg.contains("has no key for"), "{msg}");
    cli.json(&["--key", "dev0", "data", "share", &cid, "dev1"], &[]);
    // A peer must be a URL or a provider that announced an endpoint; each says what to do.
    let stranger = dev_keypair(9).address().to_string();
    for (peer, says) in [
        (
            "nonsense",
            "not a URL (http://host:port) nor a provider address",
        ),
        (stranger.as_str(), "no such provider on the ledger"),
    ] {
        let bad = dir.path().join("bad");
        let (_, msg) = cli.fails(&pull(&cid, &bad, &["--peer", peer]), &[]);
        assert!(msg.contains(says), "{peer}: {msg}");
    }
    let pulled = cli.json(&pull(&cid, &out, &[]), &[]);
    assert_eq!(pulled["files"], 5);
    assert_eq!(
        std::fs::read(src.join("a/3.bin")).unwrap(),
        std::fs::read(out.join("a/3.bin")).unwrap()
    );
    let (_, msg) = cli.fails(&pull(&cid, &out, &[]), &[]);
    assert!(msg.contains("not empty"), "{msg}");

    // The node keeps the pushed tree for its retention period (a week by default).
    let week_ms = 7 * 24 * 3600 * 1000;
    let kept = first["pinned_until_ms"].as_u64().unwrap();
    // The node charges the pushing account for what its pinned trees store, against its
    // quota (on by default: 10 GiB).
    let charged = first["account_pinned_bytes"].as_u64().unwrap();
    assert!(
        charged >= first["bytes_sent"].as_u64().unwrap()
            && first["account_quota_bytes"].as_u64() == Some(10 << 30),
        "{first}"
    );
    let usage = cli.json(&["--key", "dev0", "data", "usage"], &[]);
    assert_eq!(
        (&usage["pinned_bytes"], &usage["pending_bytes"]),
        (&first["account_pinned_bytes"], &serde_json::json!(0)),
        "{usage}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        kept > now + week_ms - 3_600_000 && kept <= now + week_ms,
        "{first}"
    );
    // The local cache empties; a pull afterwards fetches everything again from the node.
    let gc = cli.json(&["--key", "dev1", "data", "gc"], &[]);
    assert!(gc["freed_bytes"].as_u64().unwrap() > 0, "{gc}");
    let again = dir.path().join("again");
    let pulled = cli.json(&pull(&cid, &again, &[]), &[]);
    assert!(pulled["chunks_received"].as_u64().unwrap() >= 7, "{pulled}");
    assert_eq!(
        std::fs::read(src.join("a/1.bin")).unwrap(),
        std::fs::read(again.join("a/1.bin")).unwrap()
    );

    // Asked to keep a cache, two pulls at once share it (each process appends to packs it
    // locks); a third pull afterwards finds every chunk in the cache and fetches nothing.
    cli.json(&["data", "gc"], &[]);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::thread::scope(|s| {
        for out in [&one, &two] {
            let cli = &cli;
            let cid = cid.as_str();
            s.spawn(move || cli.json(&pull(cid, out, &["--keep-cache"]), &[]));
        }
    });
    for out in [&one, &two] {
        assert_eq!(
            std::fs::read(src.join("a/2.bin")).unwrap(),
            std::fs::read(out.join("a/2.bin")).unwrap()
        );
    }
    let third = dir.path().join("three");
    let cached = cli.json(&pull(&cid, &third, &[]), &[]);
    assert_eq!(cached["chunks_received"], 0, "{cached}");

    // With no room for a cache, a pull keeps nothing once it finished: the next one fetches
    // everything again.
    let none = [("GRIDWORK_CACHE_MAX_GIB", "0")];
    let four = dir.path().join("four");
    cli.json(&pull(&cid, &four, &["--keep-cache"]), &none);
    let gc = cli.json(&["data", "gc"], &[]);
    assert_eq!(gc["freed_bytes"], 0, "the pull left nothing to free: {gc}");
    let five = dir.path().join("five");
    let refetched = cli.json(&pull(&cid, &five, &[]), &none);
    assert!(
        refetched["chunks_received"].as_u64().unwrap() >= 7,
        "{refetched}"
    );
}

#[test]
fn a_node_serving_peer_to_peer_announces_its_endpoint_and_pulls_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(
        &home,
        &dir.path().join("data"),
        &["--p2p-listen", "127.0.0.1:0"],
    );
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3u8 {
        std::fs::write(
            src.join(format!("{i}.txt")),
            format!("file {i}\n").repeat(50_000),
        )
        .unwrap();
    }
    let pushed = cli.json(
        &["--key", "dev0", "data", "push", src.to_str().unwrap()],
        &[],
    );
    let cid = pushed["cid"].as_str().unwrap().to_string();
    cli.json(&["--key", "dev0", "data", "share", &cid, "dev1"], &[]);
    let out = dir.path().join("copy");
    let pulled = cli.json(&pull(&cid, &out, &[]), &[]);
    let sources = pulled["sources"].as_array().unwrap();
    let by_peer = sources
        .iter()
        .find(|s| s["source"] == "node peer to peer")
        .unwrap_or_else(|| panic!("the node's endpoint was a source: {pulled}"));
    assert!(by_peer["chunks"].as_u64().unwrap() >= 1, "{pulled}");
    assert_eq!(
        std::fs::read(src.join("2.txt")).unwrap(),
        std::fs::read(out.join("2.txt")).unwrap()
    );
}

#[test]
fn an_owner_authorizes_a_worker_and_the_ledger_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(&home, &dir.path().join("data"), &[]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let owner = dev_keypair(0).address().to_string();
    let worker = dev_keypair(1).address().to_string();
    let approval = cli.json(&["--key", "dev0", "provider", "authorize", &worker], &[]);
    assert_eq!(approval["owner"], owner.as_str());
    let token = approval["approval"].as_str().unwrap().to_string();

    // An approval for another worker is refused before anything is sent, naming the fix.
    let (_, msg) = cli.fails(
        &[
            "--key",
            "dev2",
            "worker",
            "--price",
            "0.01",
            "--owner-approval",
            &token,
        ],
        &[("GRIDWORK_LOG", "error")],
    );
    assert!(msg.contains("provider authorize"), "{msg}");
    let (_, msg) = cli.fails(
        &[
            "--key",
            "dev1",
            "worker",
            "--price",
            "0.01",
            "--owner-approval",
            "zz",
        ],
        &[],
    );
    assert!(msg.contains("owner approval"), "{msg}");

    let mut child = Command::new(BIN)
        .args([
            "--key",
            "dev1",
            "worker",
            "--price",
            "0.01",
            "--owner-approval",
            &token,
        ])
        .env("GRIDWORK_HOME", &cli.home)
        .env("GRIDWORK_NODE", &cli.api)
        .env("GRIDWORK_LOG", "warn")
        .env("GRIDWORK_PASSPHRASE", "")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let out = cli.run(&["provider", "show", &worker, "--json"], &[]);
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "the worker never registered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(shown["owner"], owner.as_str());
    let text =
        String::from_utf8_lossy(&cli.run(&["provider", "show", &worker], &[]).stdout).to_string();
    assert!(text.contains(&owner), "{text}");
}

/// A `gridwork worker` child process, killed on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(cli: &Cli, key: &str) -> WorkerProcess {
        WorkerProcess(
            Command::new(BIN)
                .args([
                    "--key",
                    key,
                    "worker",
                    "--price",
                    "0.01",
                    "--poll-ms",
                    "100",
                ])
                .env("GRIDWORK_HOME", &cli.home)
                .env("GRIDWORK_NODE", &cli.api)
                .env("GRIDWORK_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_requester_follows_a_running_tasks_log_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(&home, &dir.path().join("data"), &[]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let _workers = [
        WorkerProcess::start(&cli, "dev1"),
        WorkerProcess::start(&cli, "dev2"),
    ];
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
            r#"args = ["-c", "echo rendering frame $GRIDWORK_ITEM_START; sleep 1; cat $GRIDWORK_INPUTS/frame.txt > $GRIDWORK_OUTPUTS/frame.txt"]"#,
        )
        .replace("items = 6", "items = 2")
        .replace("first_bids = 3", "first_bids = 1")
        .replace("inputs = []", "inputs = [\"./scene\"]");
    // The input is pushed encrypted; only the executor and council get its key.
    std::fs::create_dir_all(dir.path().join("scene")).unwrap();
    std::fs::write(dir.path().join("scene/frame.txt"), "frame data\n").unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, text).unwrap();
    let job = cli.json(
        &["--key", "dev0", "job", "submit", job_file.to_str().unwrap()],
        &[],
    )["job"]
        .as_str()
        .unwrap()
        .to_string();

    // --follow prints the executor's output as it comes and returns once the task is decided.
    let out = cli.run(&["--key", "dev0", "job", "logs", &job, "--follow"], &[]);
    let followed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{followed}");
    assert!(followed.contains("rendering frame 0\n"), "{followed}");
    assert!(followed.ends_with("== task 0 settled ==\n"), "{followed}");

    let logs = cli.json(&["--key", "dev0", "job", "logs", &job], &[]);
    assert_eq!(logs["logs"][0]["data"], "rendering frame 0\n");
    let stderr = cli.json(
        &["--key", "dev0", "job", "logs", &job, "--stream", "stderr"],
        &[],
    );
    assert_eq!(stderr["logs"][0]["data"], "");
    let (_, msg) = cli.fails(&["--key", "dev0", "job", "logs", &job, "--task", "7"], &[]);
    assert!(msg.contains("no task 7"), "{msg}");

    // The requester decrypts the accepted output; anybody else is refused.
    let out = dir.path().join("results");
    let results = cli.json(
        &[
            "--key",
            "dev0",
            "job",
            "results",
            &job,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(results["results"][0]["files"], 2, "{results}");
    assert_eq!(
        std::fs::read_to_string(out.join("task-0/frame.txt")).unwrap(),
        "frame data\n"
    );
    let (_, msg) = cli.fails(
        &[
            "--key",
            "dev3",
            "job",
            "results",
            &job,
            "--out",
            dir.path().join("stolen").to_str().unwrap(),
        ],
        &[],
    );
    assert!(msg.contains("has no key for"), "{msg}");
}

/// A port nobody listens on now, so a restarted node keeps the address its workers know.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replays the stored chain from genesis and checks that the stored state is that replay.
fn assert_store_equals_replay(data: &Path) -> State {
    let store = RedbStore::open(&data.join("chain.redb")).unwrap();
    let genesis = gridwork_node::read_genesis(&data.join("genesis.json")).unwrap();
    let (mut replay, block0) = State::genesis(&genesis).unwrap();
    assert_eq!(store.header(0).unwrap().unwrap(), block0.header);
    let head = store.head_height().unwrap().unwrap();
    for h in 1..=head {
        replay
            .apply_block(&store.block(h).unwrap().unwrap())
            .unwrap_or_else(|e| panic!("replaying block {h}: {e}"));
    }
    let stored = store.load_state().unwrap().unwrap();
    assert_eq!(replay.root(), stored.root());
    assert_eq!(replay.head_hash(), stored.head_hash());
    // The archive (finished jobs, outside the state root) is the replay's too.
    for (key, value) in replay.take_changes().entries {
        if key[0] == gridwork_protocol::PREFIX_ARCHIVE {
            let id = Hash(key[1..].try_into().unwrap());
            let replayed: gridwork_protocol::ArchivedJob =
                gridwork_types::Decode::from_bytes(&value.unwrap()).unwrap();
            assert_eq!(
                store.archived_job(&id).unwrap(),
                Some(replayed),
                "archived job {id}"
            );
        }
    }
    stored
}

/// The hard state: three workers run jobs with encrypted inputs and councils while the node is
/// SIGKILLed 20 times at points drawn from a fixed seed (mid-auction, mid-run, mid-commit,
/// mid-reveal). Each time it restarts on the same directory and port; auctions, deadlines,
/// reveals and settlements carry on, every job finishes with every task settled, and the
/// stored state equals a replay of the stored blocks from genesis.
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
            r#"args = ["-c", "sleep 0.3; cat $GRIDWORK_INPUTS/frame.txt > $GRIDWORK_OUTPUTS/frame.txt; echo $GRIDWORK_ITEM_START >> $GRIDWORK_OUTPUTS/frame.txt"]"#,
        )
        .replace("first_bids = 3", "first_bids = 1")
        .replace("deadline_s = 5", "deadline_s = 1")
        .replace("inputs = []", "inputs = [\"./scene\"]");
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, text).unwrap();
    let submit = |cli: &Cli| -> Hash {
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

    let mut jobs = vec![submit(&cli)];
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
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        node = start();
        if kill % 5 == 4 {
            jobs.push(submit(&cli));
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
    drop(node);
    let state = assert_store_equals_replay(&data);
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
