//! Services served by workers through a gateway: a lying member (`LyingMember`) is outvoted,
//! slashed, barred and replaced while the stream goes on, and what members were paid adds up.

use super::*;

use std::sync::Arc;

use gridwork_gateway::{ApiKeys, Dispatcher};
use gridwork_types::{ResponseMethod, ServiceSpec, StreamPrice};

/// The example model (`examples/service/serve.py`) as a service whose answer is the most
/// common of all three members' (weighted, weight 1).
async fn example_service(net: &Net) -> (Hash, ServiceSpec) {
    example_service_within(net, 10_000).await
}

/// [`example_service`] whose responses may take `max_response_ms`.
async fn example_service_within(net: &Net, max_response_ms: u64) -> (Hash, ServiceSpec) {
    let spec = example_spec(net, max_response_ms).await;
    (create_service(net, spec.clone()).await, spec)
}

/// The example model's service, its input pushed: run by `sh` on the workers' Python.
pub(super) async fn example_spec(net: &Net, max_response_ms: u64) -> ServiceSpec {
    let src = net.dir.path().join("model");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/service/serve.py"),
        src.join("serve.py"),
    )
    .unwrap();
    let mut input = net.push_input(&src).await;
    input.name = "model".into();
    ServiceSpec {
        program: Program {
            command: "sh".into(),
            args: vec!["-c".into(), "exec python3 inputs/model/serve.py".into()],
            outputs: vec![],
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        data: vec![input],
        requirements: Requirements {
            software: vec!["sh".into()],
            ..Requirements::default()
        },
        method: ResponseMethod::Weighted { weight_bps: 10_000 },
        council_size: 3,
        max_price: StreamPrice {
            per_response: Amount(GRID / 1_000),
            per_unit: Amount(GRID / 1_000_000),
        },
        equivalence: Equivalence::ExactHash {},
        max_response_ms,
        response_ms_per_kib: 0,
        max_downtime_ms: 0,
        max_unsettled: Amount(GRID / 100),
        gateway: dev_keypair(0).public(),
    }
}

/// Publishes `spec` (with a deposit of 5 GRID); its id once committed.
pub(super) async fn create_service(net: &Net, spec: ServiceSpec) -> Hash {
    let id = net
        .client
        .sign_and_send(
            &dev_keypair(0),
            Amount::ZERO,
            TxKind::CreateService {
                spec,
                deposit: Amount::grid(5),
            },
        )
        .await
        .unwrap();
    net.client.wait_committed(&id, WAIT).await.unwrap();
    id
}

/// What a user's request gets: status and body.
pub(super) type Asked = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send>>;

/// The service's gateway, in this process, with the requester's key, announced on the
/// ledger; how a user with a key asks it for a completion.
pub(super) async fn gateway(net: &Net, id: Hash, spec: ServiceSpec) -> impl Fn(String) -> Asked {
    let (url, key) = gateway_at(net, id, spec).await;
    let http = reqwest::Client::new();
    move |prompt: String| -> Asked {
        let http = http.clone();
        let url = format!("{url}/s/{id}/v1/completions");
        let key = key.clone();
        Box::pin(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .body(format!(r#"{{"prompt": "{prompt}", "max_tokens": 24}}"#))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }
}

/// The service's gateway, in this process, announced on the ledger: its URL and a user's key.
async fn gateway_at(net: &Net, id: Hash, spec: ServiceSpec) -> (String, String) {
    let chain = net.client.chain().await.unwrap();
    let d = Arc::new(Dispatcher::new(id, spec, &chain.chain_id, dev_keypair(0)));
    let keys_file = net.dir.path().join("api-keys");
    let key = ApiKeys::new_key(&keys_file).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum_serve(
        listener,
        gridwork_gateway::router(d.clone(), Arc::new(ApiKeys::open(&keys_file))),
    ));
    let gateway_key = gridwork_gateway::GatewayKey::new(net.client.clone(), dev_keypair(0));
    gridwork_gateway::announce(&gateway_key, &d, &url)
        .await
        .unwrap();
    tokio::spawn(gridwork_gateway::keep(
        gateway_key,
        d.clone(),
        net.stop.subscribe(),
    ));
    (url, key)
}

/// Providers killed mid-answer (the issue's "killed mid-stream"): a user reading a token
/// stream under the optimistic method, two of the three members killed after its first
/// tokens, reads it to its end, whole: it goes on from the member that lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stream_survives_members_killed_mid_answer() {
    let net = Net::start().await;
    let mut spec = example_spec(&net, 20_000).await;
    spec.method = ResponseMethod::Optimistic {};
    let id = create_service(&net, spec.clone()).await;
    let mut handles = Vec::new();
    for i in 1..=3 {
        handles.push(net.spawn(net.worker(i, GRID / 100, Behavior::Honest)));
    }
    let (url, key) = gateway_at(&net, id, spec).await;
    let http = reqwest::Client::new();
    let ask = |stream: bool| {
        http.post(format!("{url}/s/{id}/v1/completions"))
            .bearer_auth(&key)
            .body(format!(
                r#"{{"prompt": "mid-stream", "max_tokens": 40, "stream": {stream}, "token_ms": 100}}"#
            ))
            .send()
    };
    // Until the council serves.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ask(false).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut r = ask(true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = r.chunk().await.unwrap().expect("a first token").to_vec();
    // Two of three members die, whichever the user's answer was following.
    for handle in handles.drain(..2) {
        handle.abort();
        let _ = handle.await;
    }
    while let Some(piece) = r.chunk().await.expect("the stream broke off") {
        seen.extend_from_slice(&piece);
    }
    let body = String::from_utf8(seen).unwrap();
    assert_eq!(body.matches("data: ").count(), 41, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    net.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_member_is_outvoted_slashed_and_replaced_while_the_stream_goes_on() {
    let net = Net::start().await;
    let (id, spec) = example_service(&net).await;
    let liar = dev_keypair(3).address();
    for (i, behavior) in [
        (1, Behavior::Honest),
        (2, Behavior::Honest),
        (3, Behavior::LyingMember),
    ] {
        net.spawn(net.worker(i, GRID / 100, behavior));
    }
    let ask = gateway(&net, id, spec).await;
    // Until the council of three (the liar among them) serves: the honest answer outvotes
    // the liar's.
    let first = served(&ask, "the first").await;
    assert!(!first.contains("made up"), "{first}");
    // A fourth provider subscribes, to take the liar's seat.
    net.spawn(net.worker(4, GRID / 100, Behavior::Honest));
    // The gateway saw the liar's answer differ and sent the evidence: slashed and barred.
    net.until_block("the liar's slash", async || {
        let s = net.client.service(&id).await.unwrap()?;
        s.barred.contains(&liar).then_some(())
    })
    .await;
    let p = net.client.provider(&liar).await.unwrap().unwrap();
    assert!(p.slashed.0 > 0, "{p:?}");
    // Its seat went to the fourth provider, and the stream goes on, honestly.
    net.until_block("the seat refilled", async || {
        let s = net.client.service(&id).await.unwrap()?;
        (s.council.contains(&dev_keypair(4).address())
            && s.status == gridwork_api::ServiceStatus::Up)
            .then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = ask("after the liar".into()).await;
        if status == 200 {
            assert!(!body.contains("made up"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream stopped: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What members were paid adds up: the service's total is theirs, and the escrow paid it
    // with the market fee.
    let s = net.client.service(&id).await.unwrap().unwrap();
    let members: u128 = s.members.iter().map(|m| m.paid.0).sum();
    assert_eq!(members, s.paid.0);
    let spent = Amount::grid(5).0 - s.escrow.0;
    assert!(
        spent >= s.paid.0 && spent <= s.paid.0 + s.paid.0 / 20 + 8,
        "spent {spent}, paid {}",
        s.paid.0
    );
    net.stop.send(true).unwrap();
}

/// What `ask` gets for `prompt` once the service serves (it may be forming, or its members
/// connecting): the answer's body.
pub(super) async fn served(ask: &impl Fn(String) -> Asked, prompt: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = ask(prompt.to_string()).await;
        if status == 200 {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

/// `BrokenServer`: a service whose program exits at once (its model will not load), the same
/// on every member. Each member tries it a few times, backing off, then leaves the service
/// (unsubscribes) and does not offer to serve it again; before, each tried every second until
/// the gateway dropped it, pulling the inputs again each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_a_service_whose_server_never_starts_and_do_not_come_back() {
    let net = Net::start().await;
    let mut spec = example_spec(&net, 10_000).await;
    spec.program.args = vec!["-c".into(), "echo cannot load the model >&2; exit 3".into()];
    let id = create_service(&net, spec).await;
    for i in 1..=3 {
        net.spawn(net.worker(i, GRID / 100, Behavior::Honest));
    }
    net.until_block("the council seated", async || {
        let s = net.client.service(&id).await.unwrap()?;
        (s.council.len() == 3).then_some(())
    })
    .await;
    net.until_block("every member gone", async || {
        let s = net.client.service(&id).await.unwrap()?;
        (s.council.is_empty() && s.subscribers.is_empty()).then_some(())
    })
    .await;
    // They stay away: a worker looks at the services every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = net.client.service(&id).await.unwrap().unwrap();
    assert!(
        s.council.is_empty() && s.subscribers.is_empty(),
        "a member came back: {s:?}"
    );
    assert!(
        s.barred.is_empty(),
        "nobody is slashed for the program's failure"
    );
    net.stop.send(true).unwrap();
}

/// A member killed mid-stream: the gateway names it late, drops it, and a waiting subscriber
/// takes its seat; the stream answers again (c re-formed), with no slash for anybody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_is_dropped_and_the_council_reformed() {
    let net = Net::start().await;
    let (id, spec) = example_service_within(&net, 2_000).await;
    let mut handles: Vec<(Address, tokio::task::JoinHandle<()>)> = Vec::new();
    for i in 1..=3 {
        handles.push((
            dev_keypair(i).address(),
            net.spawn(net.worker(i, GRID / 100, Behavior::Honest)),
        ));
    }
    let ask = gateway(&net, id, spec).await;
    let until_answered = async |what: &str| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = ask(what.to_string()).await;
            if status == 200 {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    until_answered("before").await;
    // A fourth provider waits as a subscriber; then one member dies.
    net.spawn(net.worker(4, GRID / 100, Behavior::Honest));
    net.until_block("the fourth subscription", async || {
        let s = net.client.service(&id).await.unwrap()?;
        (s.subscribers.len() == 4).then_some(())
    })
    .await;
    let (dead, handle) = handles.remove(0);
    handle.abort();
    let _ = handle.await;
    until_answered("after").await;
    let s = net.client.service(&id).await.unwrap().unwrap();
    assert!(!s.council.contains(&dead), "{s:?}");
    assert!(s.council.contains(&dev_keypair(4).address()), "{s:?}");
    assert_eq!(s.status, gridwork_api::ServiceStatus::Up);
    for i in 1..=4 {
        let p = net
            .client
            .provider(&dev_keypair(i).address())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.slashed, Amount::ZERO, "dropping costs no stake");
    }
    net.stop.send(true).unwrap();
}

/// `LyingMember` under a tolerance: the example model's embeddings with jitter (each answer's
/// numbers off in their last digits, as a GPU's are), compared within a relative 1e-5. Honest
/// members' answers differ in their bytes, so hashes prove nothing: the gateway sends the
/// answers to the members to judge, and their signed judgements slash the liar (its answer
/// beyond the tolerance), never the honest, who go on serving with its replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_beyond_the_tolerance_is_judged_by_its_council_and_slashed() {
    let net = Net::start().await;
    let mut spec = example_spec(&net, 10_000).await;
    spec.program.args = vec![
        "-c".into(),
        "exec python3 inputs/model/serve.py --jitter 1e-7".into(),
    ];
    spec.equivalence = Equivalence::NumericTolerance {
        abs_ppb: 0,
        rel_ppb: 10_000,
    };
    let id = create_service(&net, spec.clone()).await;
    let liar = dev_keypair(3).address();
    for (i, behavior) in [
        (1, Behavior::Honest),
        (2, Behavior::Honest),
        (3, Behavior::LyingMember),
    ] {
        net.spawn(net.worker(i, GRID / 100, behavior));
    }
    let (url, key) = gateway_at(&net, id, spec).await;
    let http = reqwest::Client::new();
    let embed = async |text: &str| {
        let r = http
            .post(format!("{url}/s/{id}/v1/embeddings"))
            .bearer_auth(&key)
            .body(format!(r#"{{"input": "{text}", "dimensions": 16}}"#))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let first = loop {
        let (status, body) = embed("the first").await;
        if status == 200 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!first.contains("made up"), "{first}");
    // The same input again: an honest answer, not the same bytes.
    let (status, again) = embed("the first").await;
    assert_eq!(status, 200, "{again}");
    assert!(!again.contains("made up"), "{again}");
    assert_ne!(
        first, again,
        "the jitter makes every answer's last digits its own"
    );
    net.spawn(net.worker(4, GRID / 100, Behavior::Honest));
    net.until_block("the liar judged and slashed", async || {
        let s = net.client.service(&id).await.unwrap()?;
        s.barred.contains(&liar).then_some(())
    })
    .await;
    let p = net.client.provider(&liar).await.unwrap().unwrap();
    assert!(p.slashed.0 > 0, "{p:?}");
    for i in [1, 2] {
        let p = net
            .client
            .provider(&dev_keypair(i).address())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.slashed, Amount::ZERO, "honest member {i} was slashed");
    }
    let s = net.client.service(&id).await.unwrap().unwrap();
    assert!(!s.barred.contains(&dev_keypair(1).address()));
    assert!(!s.barred.contains(&dev_keypair(2).address()));
    net.until_block("the seat refilled", async || {
        let s = net.client.service(&id).await.unwrap()?;
        (s.council.contains(&dev_keypair(4).address())
            && s.status == gridwork_api::ServiceStatus::Up)
            .then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = embed("after the liar").await;
        if status == 200 {
            assert!(!body.contains("made up"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service stopped: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    net.stop.send(true).unwrap();
}

/// `ResendingGateway` end to end: a requester's gateway that sends its member the same
/// request again and again (the member's server answers in other bytes each run, under a
/// tolerance) gets one answer, signed once: two signatures over one request would be slashed
/// as two answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answers_a_request_sent_again_once() {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::HeaderMap;
    use gridwork_types::{Decode, Encode, SignedResponse, StreamReceipt};
    use std::sync::atomic::{AtomicU64, Ordering};

    let net = Net::start().await;
    let mut spec = example_spec(&net, 10_000).await;
    spec.council_size = 1;
    let id = create_service(&net, spec).await;
    let chain = net.client.chain().await.unwrap().chain_id;
    // The double: the same request at every fetch; each response counted and acknowledged.
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        * (1 << 20);
    let body = br#"{"prompt": "again", "max_tokens": 8}"#.to_vec();
    let request = gridwork_types::request_hash(&id, seq, "POST", "/v1/completions", "", &body);
    let answered = Arc::new(AtomicU64::new(0));
    #[derive(Clone)]
    struct Double {
        body: Vec<u8>,
        seq: u64,
        request: Hash,
        answered: Arc<AtomicU64>,
        chain: String,
        service: Hash,
    }
    let double = Double {
        body,
        seq,
        request,
        answered: answered.clone(),
        chain,
        service: id,
    };
    let app = axum::Router::new()
        .route(
            "/m/{service}/next",
            axum::routing::get(|State(d): State<Double>| async move {
                (
                    [
                        ("gridwork-seq", d.seq.to_string()),
                        ("gridwork-request", d.request.to_string()),
                        ("gridwork-method", "POST".to_string()),
                        ("gridwork-path", "/v1/completions".to_string()),
                        ("gridwork-content-type", String::new()),
                    ],
                    d.body.clone(),
                )
            }),
        )
        .route(
            "/m/{service}/responses/{seq}",
            axum::routing::post(
                |State(d): State<Double>,
                 UrlPath((_, _)): UrlPath<(String, u64)>,
                 headers: HeaderMap| async move {
                    let signed = headers
                        .get("gridwork-response")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|h| hex::decode(h).ok())
                        .and_then(|b| SignedResponse::from_bytes(&b).ok())
                        .expect("a signed response");
                    let n = d.answered.fetch_add(1, Ordering::SeqCst) + 1;
                    let receipt = StreamReceipt {
                        service: d.service,
                        provider: signed.provider.address(),
                        responses: n,
                        units: signed.response.units * n,
                        owed: Amount(GRID),
                    }
                    .sign(&d.chain, &dev_keypair(0));
                    hex::encode(receipt.to_bytes())
                },
            ),
        )
        .with_state(double);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum_serve(listener, app));
    let announce = net
        .client
        .sign_and_send(
            &dev_keypair(0),
            Amount::ZERO,
            TxKind::AnnounceGateway { service: id, url },
        )
        .await
        .unwrap();
    net.client.wait_committed(&announce, WAIT).await.unwrap();
    net.spawn(net.worker(1, GRID / 100, Behavior::Honest));
    let deadline = tokio::time::Instant::now() + WAIT;
    while answered.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The double keeps sending it; the member does not answer it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    net.stop.send(true).unwrap();
}
