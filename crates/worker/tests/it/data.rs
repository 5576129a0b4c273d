//! Workers and the data plane: encrypted inputs reach only the task, caches, peers.

use super::*;

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
        name: String::new(),
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
            input.clone(),
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

/// Two inputs that each hold a `same.txt` (from `dir-a` and `dir-b`), named after their
/// directories, land apart under `$GRIDWORK_INPUTS`: the run reads both. They used to land
/// as one `same.txt`, the second silently overwriting the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_inputs_land_under_their_names_and_do_not_overwrite_each_other() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let mut data = Vec::new();
    for name in ["dir-a", "dir-b"] {
        let src = net.dir.path().join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("same.txt"), format!("from {name}\n")).unwrap();
        let mut input = net.push_input(&src).await;
        input.name = name.into();
        data.push(input);
    }
    let program = "cat $GRIDWORK_INPUTS/dir-a/same.txt $GRIDWORK_INPUTS/dir-b/same.txt \
                   > $GRIDWORK_OUTPUTS/result.txt";
    let mut p = squares(1, 1, 30_000, program);
    p.data = data;
    assert_eq!(net.one_task_result(p).await, "from dir-a\nfrom dir-b\n");
    net.stop.send(true).unwrap();
}

/// A requester's inputs lay a trap for the worker that places them: an unnamed input carries
/// the links `l1 -> .` and `w -> l1/../outputs` (each stays inside its tree when read alone;
/// together they reach the run's outputs), and a named input is called `w`. Pulled in order,
/// the named input would be written through the link into the outputs, where the program
/// would publish it as its own. Placed as the worker places inputs (each pulled apart, then
/// renamed into place, replacing nothing, named first), `w` is the named input's directory
/// and the link stays behind; and since the trap's `w` would have landed where the named
/// input is, the run does not start on part of its inputs: it ends as "could not start", the
/// same for executor and council, its stderr naming `w`, and nothing reached the outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_cannot_write_through_links_that_other_inputs_carry() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let trap = net.dir.path().join("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::os::unix::fs::symlink(".", trap.join("l1")).unwrap();
    std::os::unix::fs::symlink("l1/../outputs", trap.join("w")).unwrap();
    let trap = net.push_input(&trap).await;
    let payload = net.dir.path().join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(payload.join("planted.txt"), "planted\n").unwrap();
    let mut named = net.push_input(&payload).await;
    named.name = "w".into();
    let program =
        "if test -e $GRIDWORK_OUTPUTS/planted.txt; then echo escaped; else echo contained; fi \
                   > $GRIDWORK_OUTPUTS/result.txt; \
                   cat $GRIDWORK_INPUTS/w/planted.txt >> $GRIDWORK_OUTPUTS/result.txt";
    let mut p = squares(1, 1, 30_000, program);
    p.data = vec![trap, named];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(
        t.ended,
        Some(gridwork_types::RunEnd::NotStarted {}),
        "{view:#?}"
    );
    let stderr = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stderr, 0)
        .await
        .unwrap();
    assert!(stderr.data.contains("`w` of input"), "{}", stderr.data);
    if let Some(result) = &t.result {
        let (_dir, out) = result_tree(&net, result).await;
        assert!(!out.join("planted.txt").exists(), "the payload escaped");
    }
    net.stop.send(true).unwrap();
}
