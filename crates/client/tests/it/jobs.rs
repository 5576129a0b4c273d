//! A job through the API, from submission to settlement.

use gridwork_api::{JobStatus, Phase, PoolStatus};
use gridwork_protocol::dev_keypair;
use gridwork_types::RunEnd;
use gridwork_types::{Amount, TxKind};

use super::support::{TestNode, WAIT};

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
        software: Vec::new(),
        cpu_score: 0,
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
            command: "inputs/render".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
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
        segments: None,
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
                cached: false,
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
        let c = commitment(&out, &RunEnd::SUCCESS, &salt, &k.address());
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
                    ended: RunEnd::SUCCESS,
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
