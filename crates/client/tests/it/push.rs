//! Pushes: only what the node lacks, the push index, pins of what changed, and many small files in
//! few requests.

use gridwork_api::frames::Frame;
use gridwork_client::{Client, TransferOptions};
use gridwork_protocol::dev_keypair;
use gridwork_types::Keypair;

use super::support::{indexed_dataset, same_files, TestNode};

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
