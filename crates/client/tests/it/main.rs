//! The node's API, exercised through the client as users and workers exercise it.

use std::time::Duration;

use gridwork_api::frames::Frame;
use gridwork_api::{HealthStatus, JobStatus, Phase, PoolStatus, TxState};
use gridwork_client::{
    pull_tree_from, ChunkSource, Client, ClientError, SourceError, TransferOptions,
};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::dev_keypair;
use gridwork_types::{Address, Amount, Keypair, SignedTx, Transaction, TxKind, GRID};

mod exact;

const WAIT: Duration = Duration::from_secs(20);

/// A dev node on a free loopback port with its producer running.
struct TestNode {
    client: Client,
    node: Node,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            data_dir: dir.path().join("data"),
            block_interval_ms: 20,
            ..NodeConfig::default()
        };
        let node = Node::open(&config, GenesisSource::dev(4)).unwrap();
        node.spawn_producer();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(gridwork_node::serve(
            node.clone(),
            listener,
            std::future::pending(),
        ));
        TestNode {
            client: Client::new(&addr.to_string()).signed_by(dev_keypair(0)),
            node,
            _dir: dir,
        }
    }

    fn chain_id(&self) -> String {
        self.node.ledger().chain_id().to_string()
    }

    fn sign(&self, key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
        Transaction {
            from: key.public(),
            nonce,
            fee: Amount::ZERO,
            kind,
        }
        .sign(&self.chain_id(), key)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_is_committed_with_a_receipt_and_announced_on_the_event_stream() {
    let t = TestNode::start().await;
    let mut events = t.client.events().await.unwrap();
    let (alice, bob) = (dev_keypair(0), Keypair::from_seed([9; 32]));
    let hash = t
        .client
        .submit(&t.sign(
            &alice,
            0,
            TxKind::Transfer {
                to: bob.address(),
                amount: Amount::grid(12),
            },
        ))
        .await
        .unwrap();
    let status = t.client.wait_committed(&hash, WAIT).await.unwrap();
    assert_eq!(status.status, TxState::Committed);
    let receipt = status.receipt.unwrap();
    assert_eq!(
        t.client.account(&bob.address()).await.unwrap().balance,
        Amount::grid(12)
    );
    let alice_view = t.client.account(&alice.address()).await.unwrap();
    assert_eq!((alice_view.nonce, alice_view.next_nonce), (1, 1));

    let event = tokio::time::timeout(WAIT, events.next_block())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.block.height, receipt.height);
    assert_eq!(event.receipts[0].tx_hash, hash);

    let block = t
        .client
        .block(&receipt.height.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.txs, Some(vec![hash]));
    let by_hash = t
        .client
        .block(&block.hash.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, block);
    let latest = t.client.block("latest").await.unwrap().unwrap();
    assert!(latest.height >= block.height);
    let list = t.client.blocks(10).await.unwrap();
    assert_eq!(list.first().map(|b| b.height), Some(latest.height));
    assert_eq!(list.last().map(|b| b.height), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_lock_unbond_and_early_withdraw_through_the_api() {
    let t = TestNode::start().await;
    let key = dev_keypair(1);
    let lock = t
        .client
        .submit(&t.sign(
            &key,
            0,
            TxKind::StakeLock {
                amount: Amount::grid(5),
            },
        ))
        .await
        .unwrap();
    let unbond = t
        .client
        .submit(&t.sign(
            &key,
            1,
            TxKind::StakeUnbond {
                amount: Amount::grid(2),
            },
        ))
        .await
        .unwrap();
    t.client.wait_committed(&lock, WAIT).await.unwrap();
    t.client.wait_committed(&unbond, WAIT).await.unwrap();
    let view = t.client.account(&key.address()).await.unwrap();
    assert_eq!(
        (view.stake_locked, view.unbonding_total),
        (Amount::grid(3), Amount::grid(2))
    );

    let err = t
        .client
        .submit(&t.sign(&key, 2, TxKind::StakeWithdraw))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("nothing_to_withdraw"), "{err}");
    assert!(err.to_string().contains("matures at"), "{err}");
    let err = t
        .client
        .submit(&t.sign(
            &key,
            2,
            TxKind::StakeUnbond {
                amount: Amount::grid(4),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unbond_exceeds_locked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_get_stable_error_codes_and_change_nothing() {
    let t = TestNode::start().await;
    let alice = dev_keypair(0);
    let to = Address([7; 20]);
    let transfer = |amount| TxKind::Transfer { to, amount };

    let mut forged = t.sign(&alice, 0, transfer(Amount(1)));
    forged.signature = dev_keypair(2).sign(b"not this");
    let err = t.client.submit(&forged).await.unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"), "{err}");

    let other_chain = Transaction {
        from: alice.public(),
        nonce: 0,
        fee: Amount::ZERO,
        kind: transfer(Amount(1)),
    }
    .sign("another-chain", &alice);
    assert_eq!(
        t.client.submit(&other_chain).await.unwrap_err().code(),
        Some("bad_signature")
    );

    let err = t
        .client
        .submit(&t.sign(&alice, 3, transfer(Amount(1))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("nonce_future"), "{err}");

    let first = t.sign(&alice, 0, transfer(Amount(1)));
    let hash = t.client.submit(&first).await.unwrap();
    // A duplicate is already pending, unless a block took the first in between (a loaded
    // machine): then it is a replay of a committed transaction.
    let dup = t.client.submit(&first).await.unwrap_err();
    match dup.code() {
        Some("already_pending") => {}
        Some("nonce_replayed") => {
            t.client.wait_committed(&hash, WAIT).await.unwrap();
        }
        _ => panic!("a duplicate got {dup}"),
    }
    t.client.wait_committed(&hash, WAIT).await.unwrap();
    let err = t.client.submit(&first).await.unwrap_err();
    assert_eq!(err.code(), Some("nonce_replayed"), "{err}");

    let poor = Keypair::from_seed([11; 32]);
    let err = t
        .client
        .submit(&t.sign(&poor, 0, transfer(Amount(GRID))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("insufficient_balance"), "{err}");
    assert!(err.to_string().contains("can spend 0 GRID"), "{err}");

    let err = t
        .client
        .submit(&t.sign(&alice, 1, transfer(Amount::ZERO)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("zero_amount"));

    // Nothing above changed alice's account beyond the one good transfer.
    assert_eq!(t.client.account(&alice.address()).await.unwrap().nonce, 1);
    assert_eq!(t.client.account(&to).await.unwrap().balance, Amount(1));
}

/// Two cancellations of one job admitted together land in one block: the second is refused
/// by the market there. It is in the block, spent its fee and nonce, reads `failed` with the
/// refusal in its receipt, and waiting for it is an error with the refusal's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_market_refuses_in_its_block_reads_failed_and_says_why() {
    use gridwork_types::{
        Equivalence, Halting, Instructions, Payment, Prescription, Program, Requirements,
    };
    let t = TestNode::start().await;
    let requester = dev_keypair(0);
    let p = Prescription {
        data: vec![],
        program: Program {
            command: "true".into(),
            args: vec![],
        },
        instructions: Instructions {
            items: 1,
            chunk: 1,
            requirements: Requirements::default(),
            task_deadline_ms: 60_000,
            council_size: 0,
        },
        payment: Payment::FixedPerTask {
            max_price: Amount::grid(1),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 1,
            deadline_ms: 10_000,
            reserve_price: None,
            give_up_ms: 0,
        },
    };
    let job = t.sign(
        &requester,
        0,
        TxKind::SubmitJob {
            prescription: p,
            deposit: Amount::grid(2),
        },
    );
    let id = t.client.submit(&job).await.unwrap();
    t.client.wait_committed(&id, WAIT).await.unwrap();
    let cancels: Vec<SignedTx> = [1, 2]
        .map(|n| t.sign(&requester, n, TxKind::CancelJob { job: id }))
        .into();
    let hashes: Vec<_> = t
        .node
        .submit(cancels)
        .into_iter()
        .map(|r| r.expect("both admitted: the job is open"))
        .collect();
    let first = t.client.wait_committed(&hashes[0], WAIT).await.unwrap();
    assert_eq!(first.status, TxState::Committed);
    let err = t.client.wait_committed(&hashes[1], WAIT).await.unwrap_err();
    assert_eq!(err.code(), Some("job_closed"), "{err}");
    assert!(err.to_string().contains("its fee"), "{err}");
    let second = t.client.tx(&hashes[1]).await.unwrap().unwrap();
    assert_eq!(second.status, TxState::Failed);
    let receipt = second.receipt.unwrap();
    assert_eq!(receipt.failure().map(|(code, _)| code), Some("job_closed"));
    assert_eq!(receipt.height, first.receipt.unwrap().height, "one block");
    assert_eq!(
        t.client.account(&requester.address()).await.unwrap().nonce,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let t = TestNode::start().await;
    let http = reqwest::Client::new();
    let base = t.client.base_url().to_string();
    let error_code = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().to_string())
    };

    let resp = http
        .post(format!("{base}/v1/txs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "malformed_json".into()));

    let resp = http
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({"tx": "zz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(resp).await,
        (400, "malformed_transaction".into())
    );

    let resp = http
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({"tx": "00ff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(resp).await,
        (400, "malformed_transaction".into())
    );

    let resp = http
        .get(format!("{base}/v1/accounts/grid1notanaddress"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "bad_request".into()));

    let resp = http
        .get(format!("{base}/v1/blocks/99999"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));

    let resp = http
        .get(format!("{base}/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));

    // The server may close the connection after refusing a body it did not read; a client of
    // its own keeps that from touching the other requests.
    let huge = "00".repeat(100_000);
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({ "tx": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (413, "body_too_large".into()));

    let missing = gridwork_types::Hash([3; 32]);
    assert!(t.client.tx(&missing).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_chain_and_openapi_are_served() {
    let t = TestNode::start().await;
    let health = t.client.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Ok);
    let chain = t.client.chain().await.unwrap();
    assert_eq!(chain.chain_id, "gridwork-dev");
    assert_eq!(chain.total_supply, Amount::grid(1_000_000_000));

    let base = t.client.base_url().to_string();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gridwork_head_height 0"), "{metrics}");
    assert!(metrics.contains("# TYPE gridwork_txs_committed_total counter"));

    let doc: serde_json::Value = reqwest::get(format!("{base}/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/declines",
        "/v1/jobs/{id}/tasks/{task}/logs",
        "/v1/chunks",
        "/v1/chunks/fetch",
        "/v1/chunks/missing",
        "/v1/chunks/{id}",
        "/v1/trees/{cid}/keys",
        "/v1/trees/{cid}/pin",
        "/v1/trees/{cid}/pin-from/{base}",
        "/v1/providers",
        "/v1/providers/{address}",
        "/health",
        "/metrics",
        "/v1/chain",
        "/v1/txs",
        "/v1/txs/{hash}",
        "/v1/accounts/{address}",
        "/v1/blocks",
        "/v1/blocks/{id}",
        "/v1/events",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // Routes with a path parameter document the 400 a bad one gets; signed writes document
    // the refusals of their signature and the busy answer.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.contains('{') {
                assert!(responses.contains_key("400"), "{method} {path}");
            }
        }
    }
    for (method, path) in [
        ("post", "/v1/chunks"),
        ("put", "/v1/chunks/{id}"),
        ("put", "/v1/trees/{cid}/pin"),
        ("put", "/v1/trees/{cid}/pin-from/{base}"),
        ("post", "/v1/trees/{cid}/keys"),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in ["400", "401", "403", "408", "413", "422", "503"] {
            assert!(responses.get(status).is_some(), "{method} {path} {status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::new(&addr.to_string()).chain().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }));
    assert!(err.to_string().contains("gridwork node --dev"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_the_api_from_submission_to_settlement() {
    use gridwork_types::{
        commitment, Equivalence, Gpu, GpuVendor, Halting, Hardware, Hash, Instructions, Payment,
        Prescription, Program, Requirements,
    };
    let t = TestNode::start().await;
    let (requester, exec, council) = (dev_keypair(0), dev_keypair(1), dev_keypair(2));
    let hw = Hardware {
        gpus: vec![Gpu {
            vendor: GpuVendor::Nvidia,
            model: "L4".into(),
            vram_mib: 24_000,
        }],
        cpu_cores: 8,
        memory_mib: 32_000,
    };
    let mut last = None;
    for k in [&exec, &council] {
        t.client
            .submit(&t.sign(
                k,
                0,
                TxKind::StakeLock {
                    amount: Amount::grid(1_000),
                },
            ))
            .await
            .unwrap();
        last = Some(
            t.client
                .submit(&t.sign(
                    k,
                    1,
                    TxKind::RegisterProvider {
                        hardware: hw.clone(),
                        owner: None,
                    },
                ))
                .await
                .unwrap(),
        );
    }
    t.client.wait_committed(&last.unwrap(), WAIT).await.unwrap();
    let p = Prescription {
        data: vec![],
        program: Program {
            command: "render".into(),
            args: vec![],
        },
        instructions: Instructions {
            items: 1,
            chunk: 1,
            requirements: Requirements::default(),
            task_deadline_ms: 60_000,
            council_size: 1,
        },
        payment: Payment::FixedPerTask {
            max_price: Amount::grid(2),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 1,
            deadline_ms: 10_000,
            reserve_price: None,
            give_up_ms: 0,
        },
    };
    let short = t.sign(
        &requester,
        0,
        TxKind::SubmitJob {
            prescription: p.clone(),
            deposit: Amount::grid(1),
        },
    );
    assert_eq!(
        t.client.submit(&short).await.unwrap_err().code(),
        Some("deposit_too_low")
    );
    let submit = t.sign(
        &requester,
        0,
        TxKind::SubmitJob {
            prescription: p,
            deposit: Amount::grid(3),
        },
    );
    let job = t.client.submit(&submit).await.unwrap();
    t.client.wait_committed(&job, WAIT).await.unwrap();
    let view = t.client.job(&job).await.unwrap().unwrap();
    assert_eq!(
        (view.status, view.tasks[0].phase),
        (JobStatus::Open, Phase::Bidding)
    );

    // Only registered providers post reasons: a stranger cannot crowd out real ones.
    let err = t
        .client
        .decline(&job, &dev_keypair(3), "spam")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_a_provider"), "{err}");
    t.client
        .decline(&job, &council, "price too low for my GPU")
        .await
        .unwrap();
    let bid = t
        .client
        .submit(&t.sign(
            &exec,
            2,
            TxKind::Bid {
                job,
                task: 0,
                price: Amount::grid(1),
            },
        ))
        .await
        .unwrap();
    t.client.wait_committed(&bid, WAIT).await.unwrap();
    // The council is drawn at the block after the auction's close.
    let start = std::time::Instant::now();
    let view = loop {
        let view = t.client.job(&job).await.unwrap().unwrap();
        if !view.tasks[0].council.is_empty() {
            break view;
        }
        assert!(start.elapsed() < WAIT, "no council drawn: {view:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(view.tasks[0].executor, Some(exec.address()));
    assert_eq!(view.tasks[0].council, vec![council.address()]);
    assert_eq!(view.declines[0].reason, "price too low for my GPU");

    // A decline names the node it is for and when it was signed: an older one replayed does
    // not overwrite the newer reason, one signed for another node is refused, and so is one
    // signed outside the 10-minute window.
    let node_key = t.client.node_key().await.unwrap();
    let post = |node: gridwork_types::PublicKey, reason: &'static str, time_ms: u64| {
        let message = gridwork_api::decline_message(&node, &job, reason, time_ms);
        let body = serde_json::json!({
            "public_key": hex::encode(council.public().to_bytes()),
            "reason": reason,
            "time_ms": time_ms,
            "signature": hex::encode(council.sign(&message).to_bytes()),
        });
        reqwest::Client::new()
            .post(format!("{}/v1/jobs/{job}/declines", t.client.base_url()))
            .json(&body)
            .send()
    };
    let now = gridwork_node::now_ms();
    let replayed = post(node_key, "an older reason", now - 60_000)
        .await
        .unwrap();
    assert_eq!(replayed.status(), 204);
    let elsewhere = post(dev_keypair(9).public(), "for another node", now)
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 422);
    let stale = post(node_key, "an hour old", now - 3_600_000)
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    let again = t.client.job(&job).await.unwrap().unwrap();
    assert_eq!(again.declines.len(), 1);
    assert_eq!(again.declines[0].reason, "price too low for my GPU");
    assert_eq!(
        t.client
            .provider(&exec.address())
            .await
            .unwrap()
            .unwrap()
            .status,
        PoolStatus::Busy
    );

    let out = Hash::of(b"frame-0001.png");
    let salt = Hash([4; 32]);
    // Market transactions are checked against committed state: reveals wait for the commits.
    let mut commits = Vec::new();
    for (k, n) in [(&exec, 3), (&council, 2)] {
        let c = commitment(&out, &salt, &k.address());
        commits.push(
            t.client
                .submit(&t.sign(
                    k,
                    n,
                    TxKind::Commit {
                        job,
                        task: 0,
                        attempt: 0,
                        commitment: c,
                    },
                ))
                .await
                .unwrap(),
        );
    }
    for h in &commits {
        t.client.wait_committed(h, WAIT).await.unwrap();
    }
    let mut reveal_hash = None;
    for (k, n) in [(&exec, 4), (&council, 3)] {
        // Council members reveal after the executor: wait for each.
        let h = t
            .client
            .submit(&t.sign(
                k,
                n,
                TxKind::Reveal {
                    job,
                    task: 0,
                    attempt: 0,
                    output: out,
                    salt,
                    seconds: 3,
                },
            ))
            .await;
        let h = match h {
            Ok(h) => h,
            Err(e) => panic!("reveal refused: {e}"),
        };
        t.client.wait_committed(&h, WAIT).await.unwrap();
        reveal_hash = Some(h);
    }
    assert!(reveal_hash.is_some());
    let view = t.client.job(&job).await.unwrap().unwrap();
    assert_eq!(
        (view.status.as_str(), view.tasks[0].result),
        ("finished", Some(out))
    );
    // The executor's 1 GRID, the council's 10%, and the 5% market fee on both.
    let work = Amount::grid(1).0 + Amount::grid(1).0 / 10;
    assert_eq!(view.spent, Amount(work + work / 20));
    let provider = t.client.provider(&exec.address()).await.unwrap().unwrap();
    assert_eq!(
        (
            provider.validated,
            provider.streak,
            provider.status.as_str()
        ),
        (1, 1, "available")
    );
    assert_eq!(t.client.providers().await.unwrap().len(), 2);
    // Lists come a page at a time: `next` names where the next page starts.
    let page = |query: String| {
        let url = format!("{}/v1/providers{query}", t.client.base_url());
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<gridwork_api::ProviderList>()
                .await
                .unwrap()
        }
    };
    let first = page("?limit=1".into()).await;
    assert_eq!(first.providers.len(), 1);
    let after = first.next.expect("a second page");
    let second = page(format!("?limit=1&after={after}")).await;
    assert_eq!(second.providers.len(), 1);
    assert!(second.providers[0].address > after);
    assert_eq!(second.next, None);
    let bad = reqwest::get(format!("{}/v1/providers?after=nobody", t.client.base_url()))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_push_only_what_the_node_lacks_and_pull_only_what_is_missing() {
    use gridwork_transfer::{unwrap_key, wrap_key, ChunkParams, ChunkStore, DataKey};
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(src.join("shards")).unwrap();
    for i in 0..8 {
        let mut data = vec![0u8; 200_000];
        blake3::Hasher::new()
            .update(&[i])
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("shards/{i}.bin")), data).unwrap();
    }
    let opts = TransferOptions {
        params: ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 128 * 1024,
        },
        streams: 4,
        ..TransferOptions::default()
    };
    let key = DataKey::generate();

    let first = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(first.files, 8);
    assert_eq!(first.chunks_sent, first.chunks);
    let again = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(
        (again.cid, again.bytes_sent),
        (first.cid, 0),
        "an unchanged tree sends nothing"
    );
    let mut data = std::fs::read(src.join("shards/3.bin")).unwrap();
    data[100_000] ^= 0xff;
    std::fs::write(src.join("shards/3.bin"), data).unwrap();
    let edited = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert!(
        edited.bytes_sent < 300_000,
        "one edit moved {} bytes",
        edited.bytes_sent
    );

    // The requester grants Bob the key; Bob pulls into a fresh store.
    let bob = Keypair::from_seed([21; 32]);
    let grant = wrap_key(&key, &bob.public());
    t.client
        .add_key_grant(&edited.cid, &key, &grant)
        .await
        .unwrap();
    // Writes need the signature of a funded ledger account.
    let unsigned = Client::new(t.client.base_url());
    let err = unsigned.push_tree(&src, &key, &opts).await.unwrap_err();
    assert!(err.to_string().contains("[signature_required]"), "{err}");
    let unfunded = Client::new(t.client.base_url()).signed_by(Keypair::from_seed([77; 32]));
    let err = unfunded.push_tree(&src, &key, &opts).await.unwrap_err();
    assert!(err.to_string().contains("[unfunded_account]"), "{err}");
    let forged = reqwest::Client::new()
        .put(format!(
            "{}/v1/trees/{}/pin",
            t.client.base_url(),
            edited.cid
        ))
        .header(
            "gridwork-signature",
            format!("{}.1.{}", bob.public(), "00".repeat(64)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // A write another node was sent (signed, with a holder proof, for that node) is refused
    // when that node replays it here.
    let path = format!("/v1/trees/{}/pin", edited.cid);
    let elsewhere = Keypair::from_seed([78; 32]).public();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let requester = dev_keypair(0);
    let signature = requester.sign(&gridwork_api::signed_request_message(
        &elsewhere,
        "PUT",
        &path,
        now,
        &gridwork_types::Hash::of(&[]),
    ));
    let replayed = reqwest::Client::new()
        .put(format!("{}{path}", t.client.base_url()))
        .header(
            gridwork_api::DIGEST_HEADER,
            gridwork_types::Hash::of(&[]).to_string(),
        )
        .header(
            "gridwork-signature",
            format!(
                "{}.{now}.{}",
                requester.public(),
                hex::encode(signature.to_bytes())
            ),
        )
        .header(
            gridwork_api::KEY_PROOF_HEADER,
            key.holder_proof(&edited.cid, &elsewhere).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    assert!(replayed.text().await.unwrap().contains("bad_signature"));

    // Someone without the key can neither add a grant nor pin the tree.
    let stranger = DataKey::generate();
    let err = t
        .client
        .add_key_grant(&edited.cid, &stranger, &wrap_key(&stranger, &bob.public()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_key_holder"), "{err}");
    let err = t
        .client
        .pin_tree(&edited.cid, &stranger, &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_key_holder"), "{err}");
    let grants = t.client.key_grants(&edited.cid).await.unwrap();
    let mine = grants
        .iter()
        .find(|g| g.recipient == bob.address())
        .unwrap();
    let wrapped = mine.clone();
    let bobs_key = unwrap_key(&wrapped, &bob).unwrap();
    assert!(
        unwrap_key(&wrapped, &Keypair::from_seed([22; 32])).is_none(),
        "nobody else can"
    );
    let bob_store = ChunkStore::open(dir.path().join("bob-cache"), None).unwrap();
    let out = dir.path().join("copy");
    let pulled = t
        .client
        .pull_tree(&edited.cid, &bobs_key, &bob_store, &out, &opts)
        .await
        .unwrap();
    assert_eq!(pulled.files, 8);
    for i in 0..8 {
        assert_eq!(
            std::fs::read(src.join(format!("shards/{i}.bin"))).unwrap(),
            std::fs::read(out.join(format!("shards/{i}.bin"))).unwrap()
        );
    }
    // A second pull (as after an interruption) fetches nothing already verified.
    let out2 = dir.path().join("copy2");
    let again = t
        .client
        .pull_tree(&edited.cid, &bobs_key, &bob_store, &out2, &opts)
        .await
        .unwrap();
    assert_eq!(again.bytes_received, 0);
    // The wrong key cannot decrypt.
    let err = t
        .client
        .pull_tree(
            &edited.cid,
            &DataKey::generate(),
            &bob_store,
            &dir.path().join("x"),
            &opts,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("data key does not open it"),
        "{err}"
    );
}

/// A source that flips a byte of every chunk it serves (a Byzantine peer).
struct ForgingSource<'a>(&'a Client);

impl ChunkSource for ForgingSource<'_> {
    fn label(&self) -> String {
        "forger".into()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(async move {
            let mut frames = self.0.fetch_chunks(ids).await?;
            for frame in &mut frames {
                if let Frame::Chunk(bytes) = frame {
                    let mut forged = bytes.to_vec();
                    if let Some(b) = forged.last_mut() {
                        *b ^= 1;
                    }
                    *bytes = forged.into();
                }
            }
            Ok(frames)
        })
    }
}

/// A source that answers correctly but `delay` late.
struct SlowSource<'a> {
    inner: &'a Client,
    delay: Duration,
}

impl ChunkSource for SlowSource<'_> {
    fn label(&self) -> String {
        "slow".into()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.fetch_chunks(ids).await
        })
    }
}

/// A source that never answers (a peer whose announced address drops every packet).
struct BlackHoleSource;

impl ChunkSource for BlackHoleSource {
    fn label(&self) -> String {
        "black hole".into()
    }

    fn fetch_chunks<'a>(&'a self, _ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(std::future::pending())
    }
}

/// A source whose connection is cut once a request would take it past `left` chunks.
struct CutSource<'a> {
    inner: &'a Client,
    left: std::sync::atomic::AtomicI64,
}

impl ChunkSource for CutSource<'_> {
    fn label(&self) -> String {
        "cut".into()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(async move {
            let n = ids.len() as i64;
            if self.left.fetch_sub(n, std::sync::atomic::Ordering::SeqCst) < n {
                return Err(SourceError::Unreachable("connection reset".into()));
            }
            self.inner.fetch_chunks(ids).await
        })
    }
}

/// `files` files of `size` random bytes (`seed` apart) in `dir/dataset`, a second old (files
/// changed within a second of a push are read again by the next one), and push options with
/// small chunks and a push index.
async fn indexed_dataset(
    files: u8,
    size: usize,
    seed: u8,
) -> (tempfile::TempDir, std::path::PathBuf, TransferOptions) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        let mut data = vec![0u8; size];
        blake3::Hasher::new()
            .update(&[i, seed])
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("{i}.bin")), data).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let opts = TransferOptions {
        params: gridwork_transfer::ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 64 * 1024,
        },
        index: Some(dir.path().join("index.json")),
        ..TransferOptions::default()
    };
    (dir, src, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_index_skips_unchanged_files_and_sends_again_what_the_node_lost() {
    use gridwork_transfer::{ChunkStore, DataKey};
    let (t, elsewhere) = (TestNode::start().await, TestNode::start().await);
    let (dir, src, opts) = indexed_dataset(6, 150_000, 3).await;
    let key = DataKey::generate();
    let first = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(
        (first.unchanged_files, first.chunks_sent),
        (0, first.chunks)
    );
    let again = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(
        (again.cid, again.unchanged_files, again.bytes_sent),
        (first.cid, 6, 0),
        "nothing read, nothing sent"
    );
    assert_eq!(again.pinned_from, Some(first.cid));

    // Another node holds none of the chunks the index names: every file is read and sent.
    let moved = elsewhere.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(moved.cid, first.cid);
    assert_eq!(
        moved.pinned_from, None,
        "that node never pinned the tree before"
    );
    assert_eq!(
        (moved.unchanged_files, moved.chunks_sent),
        (0, first.chunks)
    );
    let store = ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("copy");
    elsewhere
        .client
        .pull_tree(&moved.cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_push_pins_only_the_changed_chunk_ids_while_the_node_keeps_the_tree_before() {
    use gridwork_transfer::{ChunkStore, DataKey};
    let (t, fresh) = (TestNode::start().await, TestNode::start().await);
    let (dir, src, opts) = indexed_dataset(5, 100_000, 9).await;
    let key = DataKey::generate();
    let first = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(first.pinned_from, None, "no push before it");

    // One file edited, one removed, one added (the edit and the new file are too recent to
    // remember: their chunks still count in the pin the index records).
    std::fs::write(src.join("2.bin"), b"a short new version").unwrap();
    std::fs::remove_file(src.join("4.bin")).unwrap();
    std::fs::write(src.join("new.txt"), b"a file the first push did not have").unwrap();
    let second = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(second.pinned_from, Some(first.cid));
    assert_eq!(second.unchanged_files, 3);
    std::fs::write(src.join("0.bin"), b"edited again").unwrap();
    let third = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(third.pinned_from, Some(second.cid));

    // The pin lists exactly what a push naming every chunk lists.
    let no_index = TransferOptions {
        params: opts.params,
        ..TransferOptions::default()
    };
    let full = fresh.client.push_tree(&src, &key, &no_index).await.unwrap();
    assert_eq!(full.cid, third.cid);
    let kept = t.client.pin_view(&third.cid).await.unwrap().unwrap();
    let expected = fresh.client.pin_view(&full.cid).await.unwrap().unwrap();
    assert_eq!(
        (kept.chunks, kept.chunk_set),
        (expected.chunks, expected.chunk_set)
    );
    let store = ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("copy");
    t.client
        .pull_tree(&third.cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);

    // The pin of the tree pushed before changed since (re-pinned with fewer chunks): the
    // index's record no longer matches, so the push asks about each chunk and names them all.
    t.client.pin_tree(&third.cid, &key, &[]).await.unwrap();
    std::fs::write(src.join("1.bin"), b"and once more").unwrap();
    let fourth = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(fourth.pinned_from, None);
    assert_eq!(
        fourth.unchanged_files, 1,
        "3.bin: asked about, its chunks are still stored"
    );
    let out = dir.path().join("copy-4");
    t.client
        .pull_tree(&fourth.cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_from_a_base_the_node_cannot_use_is_refused_with_a_code_that_says_so() {
    use gridwork_transfer::{chunk_set_digest, DataKey};
    use gridwork_types::Hash;
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "some data").unwrap();
    let key = DataKey::generate();
    let pushed = t
        .client
        .push_tree(dir.path(), &key, &TransferOptions::default())
        .await
        .unwrap();
    let cid = pushed.cid;
    let view = t.client.pin_view(&cid).await.unwrap().unwrap();
    assert!(view.chunks >= 2, "{view:?}");
    assert_eq!(t.client.pin_view(&Hash([4; 32])).await.unwrap(), None);

    // Which chunks the node lacks, asked in JSON and in the binary form: the same answer.
    let url = format!("{}/v1/chunks/missing", t.client.base_url());
    let (held, lacking) = (cid, Hash([4; 32]));
    let json: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "ids": [held, lacking, held] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["missing"], serde_json::json!([lacking]));
    let ask = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let ids: Vec<u8> = [held, lacking, held].iter().flat_map(|id| id.0).collect();
    let bits = ask(ids.clone()).await.unwrap().bytes().await.unwrap();
    assert_eq!(&bits[..], &[0b010]);
    let torn = ask(ids[..40].to_vec()).await.unwrap();
    assert_eq!(torn.status(), 400);
    assert!(torn.text().await.unwrap().contains("bad_ids"));
    // Fetches too: the same frames either way.
    let fetch = format!("{}/v1/chunks/fetch", t.client.base_url());
    let by_json = reqwest::Client::new()
        .post(&fetch)
        .json(&serde_json::json!({ "ids": [held, lacking] }))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let by_ids = reqwest::Client::new()
        .post(&fetch)
        .header("content-type", "application/octet-stream")
        .body(ids[..64].to_vec())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(by_json, by_ids);
    let frames = gridwork_api::frames::read_answer(&by_ids, &[held, lacking], 1 << 20).unwrap();
    assert!(matches!(frames[0], Frame::Chunk(_)) && matches!(frames[1], Frame::Missing));

    // Signed as a client signs, with the tree's key proof for this node.
    let node_key = t.client.node_key().await.unwrap();
    let signer = dev_keypair(0);
    let pin_from = |base: Hash, body: Vec<u8>| {
        let path = format!("/v1/trees/{cid}/pin-from/{base}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let signature = signer.sign(&gridwork_api::signed_request_message(
            &node_key,
            "PUT",
            &path,
            now,
            &Hash::of(&body),
        ));
        reqwest::Client::new()
            .put(format!("{}{path}", t.client.base_url()))
            .header(gridwork_api::DIGEST_HEADER, Hash::of(&body).to_string())
            .header(
                "gridwork-signature",
                format!(
                    "{}.{now}.{}",
                    signer.public(),
                    hex::encode(signature.to_bytes())
                ),
            )
            .header(
                gridwork_api::KEY_PROOF_HEADER,
                key.holder_proof(&cid, &node_key).to_string(),
            )
            .body(body)
            .send()
    };
    let code = |answer: reqwest::Response| async move {
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap();
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
            body,
        )
    };
    let delta = |digest: Hash, added: u32, ids: &[Hash]| {
        let mut body = digest.as_bytes().to_vec();
        body.extend_from_slice(&added.to_le_bytes());
        for id in ids {
            body.extend_from_slice(id.as_bytes());
        }
        body
    };

    let (status, code_, body) = code(
        pin_from(Hash([4; 32]), delta(view.chunk_set, 0, &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code_.as_str()), (409, "pin_base_gone"), "{body}");
    // A base whose chunks with these changes are not the set expected.
    let (status, code_, body) = code(
        pin_from(cid, delta(chunk_set_digest([&Hash([5; 32])]), 0, &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code_.as_str()),
        (409, "pin_set_mismatch"),
        "{body}"
    );
    for malformed in [vec![1u8; 10], delta(view.chunk_set, 2, &[Hash([5; 32])])] {
        let (status, code_, body) = code(pin_from(cid, malformed).await.unwrap()).await;
        assert_eq!((status, code_.as_str()), (400, "bad_pin"), "{body}");
    }
    // The same set from itself is a pin again.
    let (status, _, body) = code(pin_from(cid, delta(view.chunk_set, 0, &[])).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        t.client.pin_view(&cid).await.unwrap(),
        Some(view).map(|v| gridwork_api::PinView {
            until_ms: body["until_ms"].as_u64().unwrap(),
            ..v
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_signs_for_the_new_key_of_a_node_that_refuses_the_old_one() {
    use gridwork_transfer::DataKey;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "some data").unwrap();
    // Two nodes, each with its own key, serve one after the other at the same address.
    let serve = |name: &str, listener: tokio::net::TcpListener| {
        let config = NodeConfig {
            data_dir: dir.path().join(name),
            block_interval_ms: 20,
            ..NodeConfig::default()
        };
        let node = Node::open(&config, GenesisSource::dev(4)).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gridwork_node::serve(node.clone(), listener, async {
            let _ = stopped.await;
        }));
        (node, stop, server)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, stop, server) = serve("first", listener);
    let client = Client::new(&addr.to_string()).signed_by(dev_keypair(0));
    let key = DataKey::generate();
    let opts = TransferOptions::default();
    client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(client.node_key().await.unwrap(), first.keys().public_key());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    first.shutdown();

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (second, _stop, _server) = serve("second", listener);
    assert_ne!(second.keys().public_key(), first.keys().public_key());
    // Signed for the first node's key, the upload is refused; the client asks the key again
    // and the push goes through.
    let pushed = client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(pushed.chunks_sent, pushed.chunks);
    assert_eq!(client.node_key().await.unwrap(), second.keys().public_key());
    second.shutdown();
}

/// A tree of `files` incompressible files of 100 kB pushed to `t` under small chunks; returns
/// its source dir, id, key and options.
async fn pushed_tree(
    t: &TestNode,
    dir: &std::path::Path,
    files: u8,
) -> (
    std::path::PathBuf,
    gridwork_types::Hash,
    gridwork_transfer::DataKey,
    TransferOptions,
) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        let mut data = vec![0u8; 100_000];
        blake3::Hasher::new()
            .update(&[i, 7])
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("{i}.bin")), data).unwrap();
    }
    let opts = TransferOptions {
        params: gridwork_transfer::ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 64 * 1024,
        },
        streams: 4,
        ..TransferOptions::default()
    };
    let key = gridwork_transfer::DataKey::generate();
    let pushed = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(opts.progress.done(), u64::from(files) * 100_000);
    (src, pushed.cid, key, opts)
}

fn same_files(a: &std::path::Path, b: &std::path::Path) {
    let mut names: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_chunk_is_fetched_from_another_source_and_the_forger_is_not_asked_again() {
    let t = TestNode::start().await;
    let empty = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 6).await;
    let forger = ForgingSource(&t.client);
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let sources: [&dyn ChunkSource; 3] = [&forger, &empty.client, &t.client];
    let report = pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let (forged, lacking, honest) = (&report.sources[0], &report.sources[1], &report.sources[2]);
    assert!(forged.rejected >= 1, "{report:?}");
    assert_eq!(forged.chunks, 0, "nothing forged was accepted");
    assert!(
        forged.requests <= opts.streams as u64,
        "after its first forgery was caught, the forger was not asked again: {report:?}"
    );
    assert_eq!(lacking.chunks, 0);
    assert_eq!(
        honest.chunks, report.chunks_received,
        "every chunk came from the honest node"
    );

    // With only liars and sources that lack the chunk, the pull fails and names them.
    let err = pull_tree_from(
        &[&forger, &empty.client],
        &cid,
        &key,
        &gridwork_transfer::ChunkStore::open(dir.path().join("cache2"), None).unwrap(),
        &dir.path().join("out2"),
        &opts,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("forger: sent bytes that do not match the id")
            && err.contains("does not have 1 chunks"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_probe_a_pull_takes_most_chunks_from_the_faster_source() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 12).await;
    let slow = SlowSource {
        inner: &t.client,
        delay: Duration::from_millis(400),
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let sources: [&dyn ChunkSource; 2] = [&slow, &t.client];
    let report = pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let (slow, fast) = (&report.sources[0], &report.sources[1]);
    assert!(slow.chunks >= 1, "the slow source was probed: {report:?}");
    assert!(
        slow.chunks <= 3 && fast.chunks + slow.chunks == report.chunks_received,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_answers_its_probe_is_asked_once_and_the_pull_goes_on() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 6).await;
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    // First in the list, so it is probed with the very first chunk (the root).
    let sources: [&dyn ChunkSource; 2] = [&BlackHoleSource, &t.client];
    // Without a deadline on probes this pull never ends; the guard only turns a hang into
    // a failure.
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        pull_tree_from(&sources, &cid, &key, &store, &out, &opts),
    )
    .await
    .expect("the pull waited on the silent source")
    .unwrap();
    same_files(&src, &out);
    let hole = &report.sources[0];
    assert_eq!(
        (hole.requests, hole.failed, hole.chunks),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.sources[1].chunks, report.chunks_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pull_resumes_without_fetching_finished_chunks_again() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 8).await;
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: std::sync::atomic::AtomicI64::new(12),
    };
    let err = pull_tree_from(&[&cut], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let before = store.used();
    assert!(before > 0);
    let resumed = t
        .client
        .pull_tree(&cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    assert_eq!(
        before + resumed.bytes_received,
        store.used(),
        "the resumed pull fetched exactly what the cut one had not"
    );
    assert!(resumed.chunks_received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_writes_chunks_only_to_files_resumes_from_what_they_hold() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 3 MB: requests of about 1 MB, the first of which gets through before the cut.
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 30).await;
    let opts = TransferOptions {
        resume_from_files: true,
        streams: 1,
        ..opts
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: std::sync::atomic::AtomicI64::new(50),
    };
    let err = pull_tree_from(&[&cut], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let manifest = t
        .client
        .tree_manifest(&cid, &key, opts.params, &store)
        .await
        .unwrap();
    let data = manifest.chunk_ids();
    assert_eq!(
        store.missing(data.iter()).len(),
        data.len(),
        "fetched chunks went to the files only"
    );
    // A finished file altered since: its chunks from the altered one on are fetched again.
    let altered = out.join("0.bin");
    let mut bytes = std::fs::read(&altered).unwrap();
    assert_eq!(
        bytes.len(),
        100_000,
        "the first file was finished before the cut"
    );
    bytes[60_000] ^= 1;
    std::fs::write(&altered, bytes).unwrap();

    let resumed = pull_tree_from(&[&t.client], &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    assert!(resumed.bytes_in_place > 100_000, "{resumed:?}");
    assert!(
        resumed.chunks_received + 10 <= data.len() as u64,
        "{} of {} chunks fetched again",
        resumed.chunks_received,
        data.len()
    );
}

/// A source that fails, after a second, every request that asks for `poison`, and records
/// every id it is asked for.
struct PoisonedSource<'a> {
    inner: &'a Client,
    poison: Option<gridwork_types::Hash>,
    asked: std::sync::Mutex<Vec<gridwork_types::Hash>>,
}

impl ChunkSource for PoisonedSource<'_> {
    fn label(&self) -> String {
        "poisoned".into()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(async move {
            self.asked.lock().unwrap().extend_from_slice(ids);
            if self.poison.is_some_and(|p| ids.contains(&p)) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err(SourceError::Unreachable("connection reset".into()));
            }
            self.inner.fetch_chunks(ids).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_fetched_ahead_of_a_failed_request_are_kept_for_the_next_pull() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 40).await;
    let opts = TransferOptions {
        resume_from_files: true,
        streams: 4,
        ..opts
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let manifest = t
        .client
        .tree_manifest(&cid, &key, opts.params, &store)
        .await
        .unwrap();
    let data = manifest.chunk_ids();
    // Four requests of about 1 MB go out at once. The one for a chunk 30% into the tree
    // fails, a second late: the first request's chunks are written by then, and the answers
    // to the two after it are in hand.
    let first = PoisonedSource {
        inner: &t.client,
        poison: Some(data[data.len() * 3 / 10]),
        asked: Default::default(),
    };
    let out = dir.path().join("out");
    pull_tree_from(&[&first], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    let kept: Vec<_> = data.iter().filter(|id| store.has(id)).copied().collect();
    assert!(
        !kept.is_empty(),
        "chunks fetched past the failed request are in the cache"
    );

    let again = PoisonedSource {
        inner: &t.client,
        poison: None,
        asked: Default::default(),
    };
    pull_tree_from(&[&again], &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let asked = again.asked.lock().unwrap();
    assert!(
        kept.iter().all(|id| !asked.contains(id)),
        "a kept chunk was fetched again"
    );
    assert!(
        asked.len() < data.len() - kept.len(),
        "files held chunks too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_move_in_few_requests() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for i in 0..600u32 {
        let sub = src.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i:04}.txt")),
            format!("line {i}\n").repeat(1 + (i % 50) as usize),
        )
        .unwrap();
    }
    let key = gridwork_transfer::DataKey::generate();
    let opts = TransferOptions::with_streams(4);
    let pushed = t.client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(pushed.files, 600);
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let pulled = t
        .client
        .pull_tree(&pushed.cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    for i in [0u32, 1, 77, 599] {
        let rel = format!("d{}/f{i:04}.txt", i % 7);
        assert_eq!(
            std::fs::read(src.join(&rel)).unwrap(),
            std::fs::read(out.join(&rel)).unwrap()
        );
    }
    let node = &pulled.sources[0];
    assert!(pulled.chunks_received > 600, "{pulled:?}");
    assert!(
        node.requests * 10 < pulled.chunks_received,
        "{} requests for {} chunks",
        node.requests,
        pulled.chunks_received
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cut_off_resumes_from_its_journal_without_writing_or_fetching_synced_files_again() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, mut opts) = pushed_tree(&t, dir.path(), 40).await;
    opts.streams = 1;

    // A whole pull, for comparison.
    let full_store = gridwork_transfer::ChunkStore::open(dir.path().join("full"), None).unwrap();
    let full = t
        .client
        .pull_tree(&cid, &key, &full_store, &dir.path().join("whole"), &opts)
        .await
        .unwrap();

    // Checkpoint after every file, and keep no cache behind the checkpoints.
    let journal = dir.path().join("journal");
    opts.journal = Some(journal.clone());
    opts.checkpoint_bytes = 1;
    opts.cache_max_bytes = Some(0);
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: (full.chunks_received as i64 * 2 / 3).into(),
    };
    let sources: [&dyn ChunkSource; 1] = [&cut];
    pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        text.starts_with(&format!("gridwork pull journal v2 {cid}\n")),
        "{text}"
    );
    // Manifest entries are sorted by path; the journal names them by index.
    let mut names: Vec<String> = (0..40).map(|i| format!("{i}.bin")).collect();
    names.sort();
    let mut synced: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| names[line.split(' ').next().unwrap().parse::<usize>().unwrap()].clone())
        .collect();
    assert!(
        synced.len() >= 3,
        "files were checkpointed before the cut: {text}"
    );
    assert!(
        store.used() < full_store.used() / 2,
        "the cache was trimmed behind the checkpoints: {} of {}",
        store.used(),
        full_store.used()
    );
    let mtimes: Vec<_> = synced
        .iter()
        .map(|name| {
            std::fs::metadata(out.join(name))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();

    // Someone edits a synced file after the cut without changing its size: the resumed pull
    // must not trust it.
    let edited = synced.pop().unwrap();
    let mut bytes = std::fs::read(out.join(&edited)).unwrap();
    bytes[7] ^= 0xff;
    std::fs::write(out.join(&edited), bytes).unwrap();
    let mtimes = mtimes[..synced.len()].to_vec();

    // Resumed: the other synced files are neither fetched nor written again.
    let resumed = t
        .client
        .pull_tree(&cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    for (name, before) in synced.iter().zip(mtimes) {
        let after = std::fs::metadata(out.join(name))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "{name} was written again");
    }
    // Each 100 kB file spans at least two chunks (at most 64 KiB each).
    assert!(
        resumed.chunks_received + 2 * synced.len() as u64 <= full.chunks_received + 2,
        "resumed fetched {} chunks of {} with {} files synced",
        resumed.chunks_received,
        full.chunks_received,
        synced.len()
    );
}
