//! What providers and requesters see of a running worker: logs, declines, stopping, metrics.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_say_why_they_do_not_bid() {
    let net = Net::start().await;
    net.spawn(net.worker(1, GRID / 100, Behavior::Honest));
    net.wait_providers(1).await;
    let mut p = squares(1, 0, 30_000, SQUARE);
    p.instructions.requirements = Requirements {
        gpu_vendor: Some(GpuVendor::Nvidia),
        min_gpus: 1,
        min_cpu_score: 0,
        ..p.instructions.requirements
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

/// A job that needs a CPU score is judged by the score the ledger keeps for the worker, not
/// the one it declares: once the ledger's is lower (a score the councils took is 0 there),
/// the worker declines, saying so, instead of bidding only to be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_judges_a_job_that_needs_a_score_by_the_score_the_ledger_keeps() {
    let net = Net::start().await;
    let mut cfg = net.config(1, GRID / 100, Behavior::Honest, None);
    cfg.hardware.cpu_score = 5_000;
    net.spawn(Worker::new(&net.url, cfg.clone()).unwrap());
    net.wait_providers(1).await;
    // The ledger keeps 1,000 for it (as if its score were checked down).
    let lowered = Hardware {
        cpu_score: 1_000,
        ..cfg.hardware.clone()
    };
    net.client
        .sign_and_send(
            &dev_keypair(1),
            gridwork_types::Amount::ZERO,
            TxKind::RegisterProvider {
                hardware: lowered,
                owner: None,
            },
        )
        .await
        .unwrap();
    net.until_block("the ledger keeps the lower score", async || {
        let p = net
            .client
            .provider(&dev_keypair(1).address())
            .await
            .ok()??;
        (p.hardware.cpu_score == 1_000).then_some(())
    })
    .await;
    let mut p = squares(1, 0, 30_000, SQUARE);
    p.instructions.requirements.min_cpu_score = 2_000;
    let job = net.submit(p).await;
    let start = std::time::Instant::now();
    loop {
        let view = net.client.job(&job).await.unwrap().unwrap();
        if let Some(d) = view.declines.first() {
            assert!(
                d.reason.contains("CPU score of 2000; has 1000"),
                "{}",
                d.reason
            );
            assert!(view.tasks[0].bids.is_empty(), "{view:#?}");
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
            allow_network: false,
            cached_discount_pct: gridwork_worker::DEFAULT_CACHED_DISCOUNT_PCT,
            // Unconfined (no launcher): nothing to hold, every job taken.
            hold_memory: true,
        },
        hardware: Hardware::default(),
        stake: Amount::grid(1_000),
        poll: Duration::from_millis(50),
        heartbeat: Duration::from_secs(20),
        behavior: Behavior::Honest,
        launcher: None,
        p2p: None,
        cache: None,
        containers: None,
        serve_services: true,
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
