//! Writes the seed corpus, `fuzz/seeds/<target>/<n>`: valid inputs of every format, so a
//! short run starts deep in each decoder. Run from `fuzz/` after a format changes:
//! `RUSTFLAGS="--cfg fuzzing" cargo run --example seeds`.

use gridwork_api::frames::{encode_fetch_request, push_chunk, push_frame, Frame};
use gridwork_types::{
    Address, Amount, Block, Encode, Hardware, Hash, Header, Keypair, OwnerApproval, RunEnd,
    SignedTx, Software, Transaction, TxKind,
};

fn tx(kind: TxKind, nonce: u64) -> SignedTx {
    let key = Keypair::from_seed([3; 32]);
    Transaction {
        from: key.public(),
        nonce,
        fee: Amount::ZERO,
        kind,
    }
    .sign("gridwork-fuzz", &key)
}

fn main() {
    let mut seeds: Vec<(&str, Vec<u8>)> = gridwork_fuzz::seeds();
    let job = Hash([4; 32]);
    let mut txs = vec![
        tx(
            TxKind::Transfer {
                to: Address([8; 20]),
                amount: Amount::grid(3),
            },
            0,
        ),
        tx(TxKind::StakeLock { amount: Amount::grid(10) }, 1),
        tx(
            TxKind::RegisterProvider {
                hardware: Hardware {
                    gpus: Vec::new(),
                    cpu_cores: 16,
                    memory_mib: 65_536,
                    software: vec![Software {
                        name: "blender".into(),
                        version: "4.1.0".into(),
                    }],
                                    cpu_score: 0,
},
                owner: None::<OwnerApproval>,
            },
            2,
        ),
        tx(TxKind::Heartbeat, 3),
        tx(TxKind::Bid { job, task: 2, price: Amount::grid(1), cached: true }, 4),
        tx(
            TxKind::Reveal {
                job,
                task: 2,
                attempt: 1,
                output: Hash([5; 32]),
                salt: Hash([6; 32]),
                seconds: 42,
                ended: RunEnd::Exit { code: 1 },
            },
            5,
        ),
        tx(
            TxKind::Judge {
                job,
                task: 2,
                attempt: 1,
                round: 0,
                equivalent: vec![Address([1; 20]), Address([2; 20])],
            },
            6,
        ),
    ];
    if let Some(prescription) = gridwork_fuzz::example_prescription() {
        txs.push(tx(
            TxKind::SubmitJob {
                prescription,
                deposit: Amount::grid(5),
            },
            7,
        ));
    }
    for t in &txs {
        seeds.push(("signed_tx", t.to_bytes()));
        seeds.push((
            "api_json",
            [&[0u8][..], format!("{{\"tx\":\"{}\"}}", hex(&t.to_bytes())).as_bytes()].concat(),
        ));
    }
    let header = Header {
        height: 7,
        parent: Hash([1; 32]),
        timestamp_ms: 1_700_000_000_000,
        proposer: Address([2; 20]),
        tx_count: txs.len() as u32,
        tx_root: gridwork_types::tx_root(&txs.iter().map(SignedTx::hash).collect::<Vec<_>>()),
        state_root: Hash([3; 32]),
    };
    seeds.push(("block", header.to_bytes()));
    seeds.push(("block", Block { header, txs }.to_bytes()));

    let mut body = Vec::new();
    push_chunk(&mut body, &Hash::of(b"one"), b"one");
    push_frame(&mut body, &Hash([2; 32]), &Frame::Missing);
    push_frame(&mut body, &Hash([3; 32]), &Frame::Deferred);
    seeds.push(("frames", body));
    // A member's stream: two data frames and its signed end, cut every 7 bytes.
    let mut stream = vec![7];
    stream.extend(gridwork_types::StreamFrame::data(b"data: a\n\n"));
    stream.extend(gridwork_types::StreamFrame::data(b""));
    let signed = gridwork_types::StreamResponse {
        service: Hash([1; 32]),
        request: Hash([2; 32]),
        response: gridwork_types::response_hash(200, "text/event-stream", b"data: a\n\n"),
        units: 9,
    }
    .sign("gridwork-fuzz", &Keypair::from_seed([3; 32]));
    stream.extend(gridwork_types::StreamFrame::end(&signed));
    seeds.push(("stream_frames", stream));
    // Two embeddings a hair apart, behind the split byte; and a judge task of two answers.
    let a = br#"{"data": [{"embedding": [0.12345678, -1.5e-3, 7], "index": 0}], "model": "m-2"}"#;
    let b = br#"{"data": [{"embedding": [0.12345691, -1.5000001e-3, 7], "index": 0}], "model": "m-2"}"#;
    let mut pair = vec![u8::try_from(a.len()).expect("a short answer")];
    pair.extend_from_slice(a);
    pair.extend_from_slice(b);
    seeds.push(("service_answers", pair));
    let judged = |body: &[u8], seed: u8| gridwork_types::JudgedAnswer {
        status: 200,
        content_type: "application/json".into(),
        body: body.to_vec(),
        signed: gridwork_types::StreamResponse {
            service: Hash([1; 32]),
            request: Hash([2; 32]),
            response: gridwork_types::response_hash(200, "application/json", body),
            units: body.len() as u64,
        }
        .sign("gridwork-fuzz", &Keypair::from_seed([seed; 32])),
    };
    let task = gridwork_types::JudgeTask {
        request: Hash([2; 32]),
        answers: vec![judged(a, 5), judged(b, 6)],
    };
    seeds.push(("service_answers", task.to_bytes()));
    // Two 4x4 RGB frames a level apart, behind the split byte.
    let frame = |level: u8| {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 4, 4);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().expect("a PNG header");
        w.write_image_data(&[level; 48]).expect("PNG pixels");
        drop(w);
        out
    };
    let (a, b) = (frame(100), frame(101));
    let mut pair = vec![u8::try_from(a.len()).expect("a small PNG")];
    pair.extend(a);
    pair.extend(b);
    seeds.push(("png_pixels", pair));
    // Two numpy arrays of f32, a hair apart, behind the split byte.
    let npy = |bump: f32| {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let mut header = header.to_string();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend(u16::try_from(header.len()).expect("a short header").to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(1.0f32.to_le_bytes());
        out.extend((2.0f32 + bump).to_le_bytes());
        out
    };
    let (a, b) = (npy(0.0), npy(1e-7));
    let mut pair = vec![u8::try_from(a.len()).expect("a small array")];
    pair.extend(a);
    pair.extend(b);
    seeds.push(("tensors", pair));
    seeds.push(("fetch_request", encode_fetch_request(&[Hash([1; 32]), Hash([2; 32])])));

    let entries = vec![
        entry("a", gridwork_transfer::EntryKind::Dir, None),
        entry("a/b.txt", gridwork_transfer::EntryKind::File, None),
        entry("a/c", gridwork_transfer::EntryKind::Link, Some("b.txt")),
        entry("a/d", gridwork_transfer::EntryKind::HardLink, Some("a/b.txt")),
        entry("e", gridwork_transfer::EntryKind::Fifo, None),
    ];
    let v2 = gridwork_transfer::fuzzing::encode_manifest(&entries);
    seeds.push(("manifest", [&[0u8][..], &v2].concat()));
    let v1 = serde_json::json!({"format": "gridwork-tree-v1", "entries": entries});
    seeds.push(("manifest", [&[1u8][..], v1.to_string().as_bytes()].concat()));
    let mut root = b"gridwork/tree/v2\n".to_vec();
    root.extend_from_slice(&[9; 64]);
    seeds.push(("tree_root", root));
    seeds.push(("pack_index", pack_index_body()));

    let post_log = serde_json::json!({"attempt": 1, "stream": "stdout", "offset": 0, "data": "hello\n",
        "public_key": "aa".repeat(32), "signature": "bb".repeat(64)});
    let decline = serde_json::json!({"public_key": "aa".repeat(32), "reason": "no GPU", "signature": "bb".repeat(64)});
    let grant = serde_json::json!({"recipient": Address([1; 20]), "ephemeral": "cc".repeat(32), "ciphertext": "dd".repeat(48)});
    let ids = serde_json::json!({"ids": [Hash([1; 32]), Hash([2; 32])]});
    for (route, body) in [(1u8, post_log), (2, decline), (3, grant), (4, ids)] {
        seeds.push(("api_json", [&[route][..], body.to_string().as_bytes()].concat()));
    }

    let mut counts = std::collections::HashMap::new();
    for (target, bytes) in seeds {
        let n = counts.entry(target).or_insert(0);
        let dir = std::path::Path::new("seeds").join(target);
        std::fs::create_dir_all(&dir).expect("seeds directory");
        std::fs::write(dir.join(n.to_string()), bytes).expect("seed file");
        *n += 1;
    }
    println!("wrote seeds: {counts:?}");
}

fn entry(path: &str, kind: gridwork_transfer::EntryKind, target: Option<&str>) -> gridwork_transfer::Entry {
    let file = kind == gridwork_transfer::EntryKind::File;
    gridwork_transfer::Entry {
        path: path.into(),
        kind,
        mode: 0o644,
        size: if file { 5 } else { 0 },
        chunks: if file { vec![Hash([7; 32])] } else { Vec::new() },
        target: target.map(str::to_string),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A push index body as docs/data-plane.md specifies it: one pinned tree, one file.
fn pack_index_body() -> Vec<u8> {
    let mut b = b"GWPIDX\0\x02".to_vec();
    b.extend_from_slice(&[1; 32]);
    for p in [8192u32, 32768, 65536] {
        b.extend_from_slice(&p.to_le_bytes());
    }
    b.push(1);
    b.extend_from_slice(&[2; 32]);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&[3; 32]);
    b.extend_from_slice(&1u64.to_le_bytes());
    let path = b"dir/file.bin";
    b.extend_from_slice(&(path.len() as u32).to_le_bytes());
    b.extend_from_slice(path);
    for v in [4096u64, 1_700_000_000_000_000_000, 1_700_000_000_000_000_001, 77, 2049] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&[4; 32]);
    b
}
