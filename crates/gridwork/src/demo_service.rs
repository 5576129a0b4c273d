//! `gridwork demo service`: a dev node, three providers and the example model served as a
//! service under each response method (optimistic, weighted, unanimous), through a gateway in
//! this process: the answers, the latency through the gateway against the server called
//! directly, the receipts, and what each provider earned; and a fourth service whose answers
//! are embeddings that differ in their last digits from member to member (the model's
//! jitter, as a GPU's floats do), compared within a tolerance. `--liar` adds a provider that
//! makes its answers up (`LyingMember`), caught by the council and slashed (on the fourth,
//! by the council's signed judgements).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridwork_client::{Client, TransferOptions};
use gridwork_gateway::{ApiKeys, Dispatcher};
use gridwork_protocol::dev_keypair;
use gridwork_transfer::DataKey;
use gridwork_types::{
    Amount, DataInput, Equivalence, Program, Requirements, ResponseMethod, ServiceSpec,
    StreamPrice, TxKind, GRID,
};
use gridwork_worker::{probe, Behavior, Worker};
use serde_json::json;
use tokio::sync::watch;

use crate::cli::{Cli, DemoArgs};
use crate::commands::{runtime, sign_and_send};
use crate::output::emit;

/// The example model, carried in the binary so the demo runs from anywhere.
const SERVE_PY: &str = include_str!("../../../examples/service/serve.py");

/// What the demo asks its services.
const COMPLETIONS: &str = "/v1/completions";
const EMBEDDINGS: &str = "/v1/embeddings";
/// The model's jitter on the tolerant service: each number off by a relative 1e-7 at most.
const JITTER: &str = "1e-7";

/// Tokens in the demo's streamed request, and the model's time for each.
const STREAM_TOKENS: usize = 40;
const TOKEN_MS: u64 = 25;

/// One streamed answer as the user saw it.
struct StreamSeen {
    /// When its first event arrived, and its end, after it was asked.
    first_ms: f64,
    whole_ms: f64,
    /// Its events (`data:` lines), `[DONE]` among them.
    events: usize,
    body: String,
    /// Streams that broke off before it (asked again, as a chat client would).
    broken: usize,
}

/// Asks service `id` through its gateway `gw` for a streamed answer (server-sent events, a
/// token each [`TOKEN_MS`]), as a chat client would, and times its first event and its end.
/// Told to wait (503, the council re-forming), or an answer broken off (a liar streamed a lie
/// no honest member continues), it asks again shortly after.
async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
) -> anyhow::Result<StreamSeen> {
    let body = format!(
        r#"{{"prompt": "a streamed answer", "max_tokens": {STREAM_TOKENS}, "stream": true, "token_ms": {TOKEN_MS}}}"#
    );
    let asked = Instant::now();
    let mut broken = 0;
    loop {
        let t = Instant::now();
        let mut request = http.post(url).body(body.clone());
        if let Some(key) = api_key {
            request = request.bearer_auth(key);
        }
        let mut r = request.send().await?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                || asked.elapsed() > Duration::from_secs(120)
            {
                bail!("the streamed request to {url}: {status} {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut seen = Vec::new();
        let mut first = None;
        let whole = loop {
            match r.chunk().await {
                Ok(Some(piece)) => {
                    seen.extend_from_slice(&piece);
                    if first.is_none() && seen.windows(5).any(|w| w == b"data:") {
                        first = Some(t.elapsed());
                    }
                }
                Ok(None) => break true,
                Err(e) if asked.elapsed() > Duration::from_secs(120) => {
                    bail!("the streamed answer of {url} broke off: {e}")
                }
                Err(_) => break false,
            }
        };
        if !whole {
            broken += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let whole = t.elapsed();
        let body = String::from_utf8_lossy(&seen).into_owned();
        return Ok(StreamSeen {
            first_ms: first.unwrap_or(whole).as_secs_f64() * 1e3,
            whole_ms: whole.as_secs_f64() * 1e3,
            events: body.matches("data:").count(),
            body,
            broken,
        });
    }
}

/// The three methods the demo serves the model under.
/// The demo's services: a name, the response method, the equivalence and the path asked.
fn methods() -> [(&'static str, ResponseMethod, Equivalence, &'static str); 4] {
    let exact = Equivalence::ExactHash {};
    [
        (
            "optimistic",
            ResponseMethod::Optimistic {},
            exact.clone(),
            COMPLETIONS,
        ),
        (
            "weighted",
            ResponseMethod::Weighted { weight_bps: 5_000 },
            exact.clone(),
            COMPLETIONS,
        ),
        (
            "unanimous",
            ResponseMethod::Unanimous {},
            exact,
            COMPLETIONS,
        ),
        (
            "tolerant",
            ResponseMethod::Weighted { weight_bps: 5_000 },
            Equivalence::NumericTolerance {
                abs_ppb: 0,
                rel_ppb: 10_000,
            },
            EMBEDDINGS,
        ),
    ]
}

/// Milliseconds at percentile `p` of `sorted`.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p)
        .div_ceil(100)
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

pub(crate) fn demo_service(
    cli: &Cli,
    args: &DemoArgs,
    requests: usize,
    liar: bool,
) -> anyhow::Result<()> {
    if requests == 0 {
        bail!("--requests must be at least 1");
    }
    let mut hardware = probe();
    hardware.software = gridwork_worker::software::probe_software(&[]);
    if !hardware.software.iter().any(|s| s.name == "python3") {
        bail!("the demo's model is a Python script: install python3 (Debian: apt install python3)");
    }
    let temp = std::env::temp_dir().join(format!("gridwork-demo-service-{}", std::process::id()));
    let (base, node) = crate::demo::open_node(args, &temp)?;
    let say = |line: String| {
        if !cli.json {
            println!("{line}");
        }
    };
    let result = runtime()?.block_on(async {
        let (url, stop_node, server) = crate::demo::serve_node(&node).await?;
        say(format!("node      {url} (chain {})", node.ledger().chain_id()));
        let (stop, _) = watch::channel(false);
        // With a liar, it takes a seat on every council from the start (three providers for
        // three seats), and a fourth, honest one joins once they serve, to take its seat.
        let roster = if liar {
            vec![(1, Behavior::Honest), (2, Behavior::Honest), (4, Behavior::LyingMember)]
        } else {
            vec![(1, Behavior::Honest), (2, Behavior::Honest), (3, Behavior::Honest)]
        };
        let start = |i: u32, behavior: Behavior| -> anyhow::Result<tokio::task::JoinHandle<Result<(), gridwork_worker::WorkerError>>> {
            let w = Worker::new(
                &url,
                crate::demo::worker_config(&base, i, GRID / 100, behavior, &hardware),
            )?;
            let label = if behavior == Behavior::Honest { "provider" } else { "liar" };
            say(format!("{label:<9} dev{i} {}", w.address()));
            let rx = stop.subscribe();
            Ok(tokio::spawn(async move { w.run(rx).await }))
        };
        let mut workers = Vec::new();
        for (i, behavior) in roster {
            workers.push(start(i, behavior)?);
        }
        let requester = dev_keypair(0);
        let client = Client::new(&url).signed_by(requester.clone());
        // The model, pushed encrypted; its key reaches each service's council only.
        let model = base.join("model");
        std::fs::create_dir_all(&model)?;
        std::fs::write(model.join("serve.py"), SERVE_PY)?;
        let key = DataKey::generate();
        let pushed = client
            .push_tree(&model, &key, &TransferOptions::with_streams(2))
            .await?;
        let chain = client.chain().await?;
        for who in [requester.public(), chain.node_key] {
            client.share_key(&pushed.cid, &key, &who).await?;
        }
        let input = DataInput {
            cid: pushed.cid,
            claim: key.input_claim(&pushed.cid, &requester.address()),
            name: "model".into(),
        };
        let mut services = Vec::new();
        for (name, method, equivalence, path) in methods() {
            let mut args = vec!["inputs/model/serve.py".to_string()];
            if path == EMBEDDINGS {
                args.extend(["--jitter".to_string(), JITTER.to_string()]);
            }
            let spec = ServiceSpec {
                program: Program {
                    command: "python3".into(),
                    args,
                    outputs: vec![],
                    image: None,
                    network: false,
                    vendor_images: Vec::new(),
                },
                data: vec![input.clone()],
                requirements: Requirements {
                    software: vec!["python3".into()],
                    ..Requirements::default()
                },
                method,
                council_size: 3,
                max_price: StreamPrice {
                    per_response: Amount(GRID / 1_000),
                    per_unit: Amount(GRID / 1_000_000),
                },
                equivalence,
                max_response_ms: 10_000,
                response_ms_per_kib: 0,
                max_downtime_ms: 0,
                max_unsettled: Amount(GRID / 100),
                gateway: requester.public(),
            };
            let (id, _) = sign_and_send(
                &client,
                &requester,
                Amount::ZERO,
                TxKind::CreateService {
                    spec: spec.clone(),
                    deposit: Amount::grid(10),
                },
                true,
            )
            .await?;
            say(format!("service   {id} ({name}, a council of 3, asked {path})"));
            services.push((name, id, spec, path));
        }
        // One gateway per service, in this process.
        let keys_file = base.join("api-keys");
        let api_key = ApiKeys::new_key(&keys_file)?;
        let mut gateways = Vec::new();
        // One key for the three: its transactions go one at a time.
        let gateway_key = gridwork_gateway::GatewayKey::new(client.clone(), requester.clone());
        for (name, id, spec, path) in &services {
            let d = Arc::new(Dispatcher::new(*id, spec.clone(), &chain.chain_id, requester.clone()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let gw = format!("http://{}", listener.local_addr()?);
            let app = gridwork_gateway::router(d.clone(), Arc::new(ApiKeys::open(&keys_file)));
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            gridwork_gateway::announce(&gateway_key, &d, &gw)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            tokio::spawn(gridwork_gateway::keep(
                gateway_key.clone(),
                d,
                stop.subscribe(),
            ));
            say(format!("gateway   {gw}/s/{id}/ ({name})"));
            gateways.push((*name, *id, gw, *path));
        }
        // The server called directly, for the gateway's added latency.
        let direct_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut direct = tokio::process::Command::new("python3")
            .arg(model.join("serve.py"))
            .env("GRIDWORK_PORT", direct_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the model directly")?;
        let http = reqwest::Client::new();
        let body = |n: usize, path: &str| {
            if path == EMBEDDINGS {
                format!(r#"{{"input": "request {n} to a council", "dimensions": 16}}"#)
            } else {
                format!(r#"{{"prompt": "request {n} to a council", "max_tokens": 32}}"#)
            }
        };
        let started = Instant::now();
        let mut direct_times = Vec::new();
        for n in 0..requests {
            let t = Instant::now();
            loop {
                match http
                    .post(format!("http://127.0.0.1:{direct_port}{COMPLETIONS}"))
                    .body(body(n, COMPLETIONS))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await?;
                        break;
                    }
                    _ if started.elapsed() < Duration::from_secs(30) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    _ => bail!("the model did not start on its own"),
                }
            }
            direct_times.push(t.elapsed());
        }
        let direct_stream = stream_once(
            &http,
            &format!("http://127.0.0.1:{direct_port}/v1/completions"),
            None,
        )
        .await?;
        let _ = direct.kill().await;
        direct_times.sort();
        say(format!(
            "direct    {requests} requests to the model itself: p50 {:.1} ms, p99 {:.1} ms\n           streamed ({STREAM_TOKENS} tokens, one each {TOKEN_MS} ms): first event after {:.0} ms, whole after {:.0} ms",
            percentile(&direct_times, 50),
            percentile(&direct_times, 99),
            direct_stream.first_ms,
            direct_stream.whole_ms,
        ));
        let mut rows = Vec::new();
        let mut spare = liar;
        for (name, id, gw, path) in &gateways {
            // Until its council is drawn, its servers started and connected.
            let formed = Instant::now();
            let first = loop {
                let r = http
                    .post(format!("{gw}/s/{id}{path}"))
                    .bearer_auth(&api_key)
                    .body(body(0, path))
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                if status.is_success() {
                    break text;
                }
                if formed.elapsed() > Duration::from_secs(120) {
                    bail!("service {id} did not serve within two minutes: {status} {text}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let ready_s = formed.elapsed().as_secs_f64();
            if std::mem::take(&mut spare) {
                workers.push(start(3, Behavior::Honest)?);
            }
            let mut times = Vec::new();
            // Answers "not serving now" (503: the council re-forming once the liar is caught),
            // each tried again shortly after, as a user's client would.
            let mut refused = 0;
            let t0 = Instant::now();
            for n in 0..requests {
                let asked = Instant::now();
                loop {
                    let t = Instant::now();
                    let r = http
                        .post(format!("{gw}/s/{id}{path}"))
                        .bearer_auth(&api_key)
                        .body(body(n, path))
                        .send()
                        .await?;
                    let status = r.status();
                    if status.is_success() {
                        r.bytes().await?;
                        times.push(t.elapsed());
                        break;
                    }
                    let text = r.text().await.unwrap_or_default();
                    if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                        || asked.elapsed() > Duration::from_secs(120)
                    {
                        bail!("request {n} to service {id} ({name}): {status} {text}");
                    }
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let rps = times.len() as f64 / t0.elapsed().as_secs_f64();
            times.sort();
            let streamed =
                stream_once(&http, &format!("{gw}/s/{id}/v1/completions"), Some(&api_key))
                    .await?;
            // Optimistic answers with the first response: the liar's, when it is first (the
            // others catch it after).
            let shown: String = first.chars().take(72).collect();
            say(format!(
                "{name:<11}{} answered ({refused} times told to wait while the council re-formed): p50 {:.1} ms, p99 {:.1} ms, {rps:.0} requests/s (ready after {ready_s:.1} s)\n           first answer: {}\n           streamed ({STREAM_TOKENS} tokens, one each {TOKEN_MS} ms): first event after {:.0} ms, whole after {:.0} ms, {} events ({} broken off before)",
                times.len(),
                percentile(&times, 50),
                percentile(&times, 99),
                shown.escape_debug(),
                streamed.first_ms,
                streamed.whole_ms,
                streamed.events,
                streamed.broken,
            ));
            rows.push(json!({
                "method": name, "service": id, "answered": times.len(), "refused": refused,
                "p50_ms": percentile(&times, 50), "p99_ms": percentile(&times, 99), "rps": rps,
                "ready_s": ready_s,
                "stream": {
                    "first_ms": streamed.first_ms, "whole_ms": streamed.whole_ms,
                    "events": streamed.events, "body": streamed.body, "broken": streamed.broken,
                },
            }));
        }
        // The liar sat on every council from the start: until each caught it (the evidence goes
        // once every member answered, or judged, a request it lied on).
        if liar {
            let liar = dev_keypair(4).address();
            let since = Instant::now();
            for (name, id, _, _) in &gateways {
                while !client
                    .service(id)
                    .await?
                    .is_some_and(|s| s.barred.contains(&liar))
                {
                    if since.elapsed() > Duration::from_secs(60) {
                        bail!("the liar was not caught on the {name} service within a minute");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // Members settle as they go; what is left they settle as they stop.
        let _ = stop.send(true);
        for w in workers {
            let _ = w.await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut paid = Vec::new();
        for (name, id, _, _) in &gateways {
            if let Some(s) = client.service(id).await? {
                for m in &s.members {
                    paid.push(json!({ "method": name, "provider": m.provider, "responses": m.responses, "paid": m.paid }));
                }
                if !s.barred.is_empty() {
                    say(format!("caught    on {name}: {} slashed and barred", s.barred.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
                }
            }
        }
        let providers = client.providers().await?;
        let _ = stop_node.send(());
        let _ = server.await;
        anyhow::Ok(json!({
            "direct_p50_ms": percentile(&direct_times, 50),
            "direct_p99_ms": percentile(&direct_times, 99),
            "direct_stream": {
                "first_ms": direct_stream.first_ms, "whole_ms": direct_stream.whole_ms,
                "events": direct_stream.events,
            },
            "methods": rows,
            "members": paid,
            "providers": providers,
        }))
    });
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let doc = result?;
    emit(cli.json, &doc, || {
        let mut out = String::from("\nwhat each member was acknowledged and paid");
        for m in doc["members"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  {:<10} {} {} responses, paid {} GRID",
                m["method"].as_str().unwrap_or(""),
                m["provider"].as_str().unwrap_or(""),
                m["responses"],
                crate::demo::amount(&m["paid"])
            ));
        }
        for p in doc["providers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  provider {} earned {} GRID, slashed {} GRID",
                p["address"].as_str().unwrap_or(""),
                crate::demo::amount(&p["earned"]),
                crate::demo::amount(&p["slashed"]),
            ));
        }
        out
    })
}
