//! Jobs through the CLI: the demo, job files, owner approvals, and a running task's log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gridwork_protocol::dev_keypair;
use serde_json::Value;

use super::support::{http, units, Cli, NodeProcess, WorkerProcess, BIN};

/// `gridwork demo service --liar`: the model served under each response method through a
/// gateway, and its embeddings within a tolerance, every request answered with the council's
/// answer (never the liar's), the liar caught and slashed wherever it sat (the demo waits for
/// that), every member that served paid.
#[test]
fn demo_service_serves_under_each_method_and_catches_the_liar() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--json", "--data-dir"])
        .arg(dir.path())
        .args(["service", "--requests", "5", "--liar"])
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
    let methods = doc["methods"].as_array().unwrap();
    // The three methods, and embeddings within a tolerance (the liar judged by the council).
    assert_eq!(methods.len(), 4);
    assert_eq!(methods[3]["method"], "tolerant");
    for m in methods {
        assert_eq!(m["answered"], 5, "{m}");
        assert!(m["p50_ms"].as_f64().unwrap() > 0.0);
        // A streamed answer (server-sent events, 40 tokens, 25 ms each) comes whole under
        // every method: its 40 events and `[DONE]`.
        let stream = &m["stream"];
        assert_eq!(stream["events"], 41, "{m}");
        assert!(
            stream["body"]
                .as_str()
                .unwrap()
                .contains("data: [DONE]\n\n"),
            "{m}"
        );
    }
    // Under the optimistic method it is piped to the user as the model writes it: its first
    // event arrives while the model still has most of a second of tokens to write (buffered
    // whole, the first event would come with the last).
    let optimistic = &methods[0]["stream"];
    let (first, whole) = (
        optimistic["first_ms"].as_f64().unwrap(),
        optimistic["whole_ms"].as_f64().unwrap(),
    );
    assert!(whole - first >= 500.0, "not streamed: {optimistic}");
    let liar = dev_keypair(4).address().to_string();
    let providers = doc["providers"].as_array().unwrap();
    let liar = providers
        .iter()
        .find(|p| p["address"] == liar.as_str())
        .unwrap();
    assert!(units(&liar["slashed"]) > 0, "the liar was slashed: {doc}");
    // Every member that answered was paid for it.
    for m in doc["members"].as_array().unwrap() {
        if m["responses"].as_u64().unwrap() > 0 {
            assert!(units(&m["paid"]) > 0, "{m}");
        }
    }
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
            &format!(
                // The program also tries to read the SSH key in the home of the user running
                // the worker: tasks may not, so the frame holds only the input.
                r#"args = ["-c", "echo rendering frame $GRIDWORK_ITEM_START; sleep 1; cat $GRIDWORK_INPUTS/scene/frame.txt > $GRIDWORK_OUTPUTS/frame.txt; cat {}/.ssh/id_ed25519 >> $GRIDWORK_OUTPUTS/frame.txt 2>/dev/null; true"]"#,
                dir.path().join("user-home").display()
            ),
        )
        .replace("items = 6", "items = 2")
        .replace("first_bids = 3", "first_bids = 1")
        .replace("outputs = [\"squares.txt\"]", "outputs = [\"frame.txt\"]")
        .replace("inputs = []", "inputs = [\"./scene\"]");
    // The input is pushed encrypted; only the executor and council get its key.
    std::fs::create_dir_all(dir.path().join("scene")).unwrap();
    std::fs::write(dir.path().join("scene/frame.txt"), "frame data\n").unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, text).unwrap();
    let job = submit(&cli, &job_file);

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
    assert_eq!(results["results"][0]["files"], 1, "{results}");
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

    // A program that fails everywhere: `job status` shows the task settled on a failed run,
    // its exit code, what was paid, and the end of the executor's stderr.
    let failing = std::fs::read_to_string(&job_file).unwrap().replace(
        text_args(&std::fs::read_to_string(&job_file).unwrap()).as_str(),
        r#"args = ["-c", "echo 'error: scene.blend not found' >&2; exit 3"]"#,
    );
    std::fs::write(&job_file, failing).unwrap();
    let job = submit(&cli, &job_file);
    let watched = cli.json(&["job", "watch", &job], &[]);
    assert_eq!(watched["tasks"][0]["ended"]["kind"], "exit", "{watched}");
    assert_eq!(watched["tasks"][0]["ended"]["code"], 3, "{watched}");
    let out = cli.run(&["--key", "dev0", "job", "status", &job], &[]);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{status}");
    assert!(
        status.contains("1 task(s) settled on a failed run"),
        "{status}"
    );
    assert!(status.contains("task 0: exit 3"), "{status}");
    assert!(
        status.contains("| error: scene.blend not found"),
        "{status}"
    );

    // A program that succeeds and leaves nothing: `job status` says so (anyone can tell the
    // content id empty outputs get).
    let empty = std::fs::read_to_string(&job_file)
        .unwrap()
        .replace(
            text_args(&std::fs::read_to_string(&job_file).unwrap()).as_str(),
            r#"args = ["-c", "true"]"#,
        )
        .replace("outputs = [\"frame.txt\"]", "outputs = []");
    std::fs::write(&job_file, empty).unwrap();
    let job = submit(&cli, &job_file);
    cli.json(&["job", "watch", &job], &[]);
    let out = cli.run(&["job", "status", &job], &[]);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("1 task(s) exited 0 but left no outputs"),
        "{status}"
    );
}

/// The `args = ...` line of a job file.
/// The training example through the real binary: submitted from its job file, run in
/// checkpointed segments by a confined worker (`sandbox-exec`), checked by a council member
/// replaying two drawn segments, its status saying so, and `job results` pulling the trained
/// weights and drawing the loss curve.
#[test]
fn a_training_job_is_trained_checked_by_replays_and_its_loss_curve_drawn() {
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
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train");
    std::fs::copy(example.join("train.py"), dir.path().join("train.py")).unwrap();
    let text = std::fs::read_to_string(example.join("job.toml"))
        .unwrap()
        .replace("steps = 400", "steps = 60")
        .replace("checkpoint_every = 50", "checkpoint_every = 10");
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, text).unwrap();
    let out = cli.run(
        &["--key", "dev0", "job", "submit", job_file.to_str().unwrap()],
        &[],
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("replays 2 of each task's 6 segments")
            && said.contains("caught with probability 33% a task"),
        "{said}"
    );
    let job = said
        .lines()
        .find_map(|l| l.strip_prefix("job").map(|rest| rest.trim().to_string()))
        .unwrap();
    // `job watch --out` pulls each result as it settles.
    let early = dir.path().join("as-they-settle");
    let watched = cli.json(
        &[
            "--key",
            "dev0",
            "job",
            "watch",
            &job,
            "--out",
            early.to_str().unwrap(),
        ],
        &[],
    );
    assert!(early.join("task-0/w1.npy").is_file(), "{watched}");
    assert!(early.join("task-0-loss.png").is_file(), "{watched}");
    let task = &watched["tasks"][0];
    assert_eq!(task["phase"], "settled", "{watched}");
    assert_eq!(
        task["checkpoints"].as_array().unwrap().len(),
        6,
        "{watched}"
    );
    assert_eq!(task["replay"].as_array().unwrap().len(), 2, "{watched}");
    assert_eq!(task["result"], task["checkpoints"][5], "{watched}");
    let shown = cli.run(&["job", "status", &job], &[]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("6 bound; replaying segments"), "{shown}");
    // Each worker measured its CPU score when it first started here and declared it.
    let dev1 = dev_keypair(1).address().to_string();
    let provider = cli.json(&["provider", "show", &dev1], &[]);
    assert!(
        provider["hardware"]["cpu_score"].as_u64().unwrap() > 0,
        "{provider}"
    );
    let shown = cli.run(&["provider", "show", &dev1], &[]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("MiB memory, score "), "{shown}");

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
    assert!(out.join("task-0/w1.npy").is_file(), "{results}");
    let plot = results["results"][0]["loss_plot"].as_str().unwrap();
    assert!(plot.ends_with("task-0-loss.png"), "{results}");
    assert!(std::fs::read(plot).unwrap().starts_with(b"\x89PNG"));
    let loss = std::fs::read_to_string(out.join("task-0/loss.csv")).unwrap();
    assert_eq!(loss.lines().count(), 61, "{loss}");
}

fn text_args(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("args = "))
        .unwrap()
        .to_string()
}

/// Submits `job_file` as the requester (`dev0`); the job id.
fn submit(cli: &Cli, job_file: &std::path::Path) -> String {
    cli.json(
        &["--key", "dev0", "job", "submit", job_file.to_str().unwrap()],
        &[],
    )["job"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A requester publishes the example service through the CLI, providers subscribe, the
/// ledger draws its council (one seat per owner) and the service is up; the requester funds
/// it; a provider cannot close it; the requester closes it, and its members stop at once.
#[test]
fn a_service_is_published_served_by_a_drawn_council_funded_and_closed_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // dev1..dev4 funded (the last dev account vests).
    let node = NodeProcess::start(&home, &dir.path().join("data"), &["--dev-accounts", "6"]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let _workers = ["dev1", "dev2", "dev3", "dev4"].map(|k| WorkerProcess::start(&cli, k));
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/service/service.toml");
    let created = cli.json(
        &[
            "--key",
            "dev0",
            "service",
            "create",
            example.to_str().unwrap(),
        ],
        &[],
    );
    let id = created["service"].as_str().unwrap().to_string();
    assert_eq!(created["deposit"], created["reserve"], "{created}");
    let status = cli.json(&["service", "status", &id], &[]);
    assert_eq!(status["status"], "forming");
    assert_eq!(status["spec"]["method"]["kind"], "weighted");
    assert_eq!(status["spec"]["requirements"]["software"][0], "python3");

    // Each provider subscribes once it is registered (it registers as it starts): through the
    // CLI here, unless its worker, which subscribes to the services it can run, was first.
    for key in ["dev1", "dev2", "dev3", "dev4"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = cli.run(&["--key", key, "service", "subscribe", &id, "--json"], &[]);
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() || text.contains("already subscribed") {
                break;
            }
            // The worker signs with the same key meanwhile (it registers, beats, subscribes):
            // one of the two may find its nonce taken, and asks again (seen in CI).
            let raced = ["nonce_replayed", "nonce_future", "already_pending"]
                .iter()
                .any(|code| text.contains(code));
            assert!(
                raced
                    || text.contains("not_a_provider")
                    || text.contains("not a registered provider"),
                "{text}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{key} never registered: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let s = cli.json(&["service", "status", &id], &[]);
        if s["status"] == "up" {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "never up: {s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["council"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["subscribers"].as_array().unwrap().len(), 4);
    let listed = cli.json(&["service", "list"], &[]);
    assert!(listed["open"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == id.as_str()));
    let shown = cli.run(&["service", "status", &id], &[]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("3 of 3 seats"), "{shown}");
    // Its periods: it formed, and is up now.
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("periods") && l.contains("forming ") && l.ends_with("up now")),
        "{shown}"
    );
    assert!(
        shown.contains("weighted: the most common response of the first 2 of 3 members"),
        "{shown}"
    );

    let escrow = |s: &serde_json::Value| units(&s["escrow"]);
    let before = escrow(&status);
    cli.json(&["--key", "dev0", "service", "fund", &id, "2"], &[]);
    let funded = cli.json(&["service", "status", &id], &[]);
    assert_eq!(
        escrow(&funded),
        before + 2 * 10u128.pow(gridwork_types::DECIMALS)
    );

    let (_, msg) = cli.fails(&["--key", "dev1", "service", "close", &id], &[]);
    assert!(msg.contains("only the requester"), "{msg}");
    cli.json(&["--key", "dev0", "service", "close", &id], &[]);
    let closing = cli.json(&["service", "status", &id], &[]);
    assert_eq!(closing["status"], "closing");
    assert!(closing["council"].as_array().unwrap().is_empty());
    let (_, msg) = cli.fails(&["--key", "dev0", "service", "status", "beef"], &[]);
    assert!(msg.contains("not a service id"), "{msg}");
}

/// The example service served end to end through the real binary: the requester publishes
/// it and runs its gateway; three workers subscribe on their own, are drawn into its council,
/// start the model in their sandboxes and fetch requests from the gateway; a user with a key
/// gets answers (the same prompt, the same answer; no key, no answer), every member is
/// acknowledged each response it gave, and members settle on the ledger as they go.
#[test]
fn a_service_is_served_by_its_council_through_its_gateway_and_members_are_paid() {
    served_and_paid(GatewayAt::OwnProcess);
}

/// The same with the requester's own node as the gateway (`gridwork --key dev0 node
/// --gateway`): no process or port of its own; the node finds the service of its key, says
/// on the ledger that it listens at the API's address, and users and members reach it there.
#[test]
fn a_requesters_node_is_the_gateway_of_its_services_on_its_own_address() {
    served_and_paid(GatewayAt::TheNode);
}

/// Where a service's gateway runs.
enum GatewayAt {
    /// `gridwork service gateway`, a process and port of its own.
    OwnProcess,
    /// The requester's node (`node --gateway`).
    TheNode,
}

fn served_and_paid(at: GatewayAt) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node_args: &[&str] = match at {
        GatewayAt::OwnProcess => &["--dev-accounts", "6"],
        GatewayAt::TheNode => &["--dev-accounts", "6", "--gateway", "--key", "dev0"],
    };
    let node = NodeProcess::start(&home, &dir.path().join("data"), node_args);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    // Settled every few responses: a member settles at half of max_unsettled.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/service");
    let text = std::fs::read_to_string(example.join("service.toml"))
        .unwrap()
        .replace("max_unsettled = \"1\"", "max_unsettled = \"0.004\"")
        .replace(
            "inputs = [\"serve.py\"]",
            &format!("inputs = [\"{}\"]", example.join("serve.py").display()),
        );
    let file = dir.path().join("service.toml");
    std::fs::write(&file, text).unwrap();
    // Well above the reserve: members settle as they go.
    let created = cli.json(
        &[
            "--key",
            "dev0",
            "service",
            "create",
            file.to_str().unwrap(),
            "--deposit",
            "1",
        ],
        &[],
    );
    let id = created["service"].as_str().unwrap().to_string();
    let _workers = ["dev1", "dev2", "dev3"].map(|k| WorkerProcess::start(&cli, k));

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (url, _gateway) = match at {
        GatewayAt::OwnProcess => {
            let (url, process) = gateway_process(&cli, &id);
            (url, Some(Kill(process)))
        }
        GatewayAt::TheNode => (node.api.clone(), None),
    };
    let key = cli.json(&["--key", "dev0", "service", "key", "new", &id], &[])["key"]
        .as_str()
        .unwrap()
        .to_string();
    asked_and_paid(&cli, &id, &url, &key);
    if let GatewayAt::TheNode = at {
        strangers_are_not_served(&cli, &url, &file, &id);
    }
}

/// What a node that is a gateway refuses strangers (found by a review): `StrangersService`,
/// a service another requester (dev4) made naming the node's gateway key, is not served nor
/// announced (the node would sign and pay for it); `UnreadBody`, a request with no key, is
/// refused before its body is read (here a 16 MB body never sent to the node's own service).
fn strangers_are_not_served(cli: &Cli, url: &str, file: &std::path::Path, served: &str) {
    let public = cli.json(&["keys", "show", "dev0"], &[])["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("# gateway = "), "the example names where");
    let named = text.replace(
        "# gateway = \"<public key hex>\"",
        &format!("gateway = \"{public}\""),
    );
    let strangers = file.with_file_name("strangers.toml");
    std::fs::write(&strangers, named).unwrap();
    let created = cli.json(
        &[
            "--key",
            "dev4",
            "service",
            "create",
            strangers.to_str().unwrap(),
        ],
        &[],
    );
    let id = created["service"].as_str().unwrap().to_string();
    let path = format!("/s/{id}/v1/completions");
    let (status, body) = http(url, "POST", &path, &[], "{}");
    assert_eq!(status, 404, "{body}");
    let status = cli.json(&["service", "status", &id], &[]);
    assert_eq!(status["gateway_url"], "", "{status}");
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /s/{served}/x HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: 16000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// `gridwork service gateway` for service `id` with the requester's key (the file names no
/// other), on a port of its own: its URL and its process.
fn gateway_process(cli: &Cli, id: &str) -> (String, std::process::Child) {
    let mut gateway = Command::new(BIN)
        .args([
            "--key",
            "dev0",
            "service",
            "gateway",
            id,
            "--listen",
            "127.0.0.1:0",
            "--json",
        ])
        .env("GRIDWORK_HOME", &cli.home)
        .env("GRIDWORK_NODE", &cli.api)
        .env("GRIDWORK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(gateway.stdout.take().unwrap());
        let mut doc = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "the gateway exited"
            );
            doc.push_str(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&doc) {
                std::thread::spawn(move || for _ in reader.lines() {});
                break v["url"].as_str().unwrap().to_string();
            }
        }
    };
    (url, gateway)
}

/// A user with `key` asks service `id` through its gateway at `url` until the council
/// answers; the same prompt gets the same answer, no key none; every member is paid.
fn asked_and_paid(cli: &Cli, id: &str, url: &str, key: &str) {
    let bearer = format!("Bearer {key}");
    let path = format!("/s/{id}/v1/completions");
    let ask = |prompt: &str| {
        http(
            url,
            "POST",
            &path,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            &format!(r#"{{"prompt": "{prompt}", "max_tokens": 40}}"#),
        )
    };
    // The council forms and every member's server starts: until then the gateway says the
    // service is not serving (503), or the council did not answer in time (504).
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let (status, body) = ask("a council of");
        if status == 200 {
            break body;
        }
        assert!([503, 504].contains(&status), "{status}: {body}");
        assert!(Instant::now() < deadline, "never served: {status} {body}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let answer: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(answer["completion"].as_str().unwrap().chars().count(), 40);
    assert_eq!(
        ask("a council of").1,
        first,
        "the same prompt, the same answer"
    );
    assert_ne!(ask("another prompt").1, first);
    let (status, body) = http(url, "POST", &path, &[], "{}");
    assert_eq!(status, 401, "{body}");
    for n in 0..6 {
        let (status, body) = ask(&format!("prompt {n}"));
        assert_eq!(status, 200, "{body}");
    }
    // A token stream (server-sent events): each member streams it to the gateway, which
    // answers it whole under the weighted method.
    let (status, body) = http(
        url,
        "POST",
        &path,
        &[("authorization", &bearer)],
        r#"{"prompt": "streamed", "max_tokens": 20, "stream": true, "token_ms": 5}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("data: ").count(), 21, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // OpenAI's own client (PyPI `openai`, from scripts/test-deps.sh) with the gateway as its
    // base URL and the user's key: a chat completion whole, then streamed, the same text.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(root.join("target/openai-venv/bin/python"))
        .arg(root.join("examples/service/chat.py"))
        .args([&format!("{url}/s/{id}/v1"), key, "a council of"])
        .output()
        .expect("OpenAI's client, installed by scripts/test-deps.sh");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("tokens:   32"), "{said}");
    // Weighted, half the council: 10 answers, and every member was asked each request.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = cli.json(&["service", "status", id], &[]);
        let members = s["members"].as_array().unwrap();
        let paid: Vec<u128> = members.iter().map(|m| units(&m["paid"])).collect();
        if members.len() == 3 && paid.iter().all(|p| *p > 0) {
            break s;
        }
        assert!(Instant::now() < deadline, "members not paid: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(units(&status["paid"]) > 0, "{status}");
    assert_eq!(status["disputes"], 0);
    assert_eq!(status["spec"]["gateway"].as_str().unwrap().len(), 64);
    assert_eq!(status["gateway_url"], url);
    // What the gateway says of its users' answers: every one counted, with its latency.
    let seen = &status["gateway_stats"];
    assert!(seen["answered"].as_u64().unwrap() >= 10, "{status}");
    assert!(seen["streamed"].as_u64().is_some(), "{status}");
    assert!(seen["p50_ms"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["gateway_error"].is_null(), "{status}");
    let out = cli.run(&["service", "status", id], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("latency p50"), "{text}");
}
