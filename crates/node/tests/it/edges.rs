//! The API under hostile clients, over raw sockets: what a stranger or a slow client can make
//! the node read, hold and send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gridwork_node::{GenesisSource, Node, ServeLimits};
use gridwork_protocol::dev_keypair;
use gridwork_types::{Amount, Hash, Keypair, Transaction, TxKind};

use super::config;

/// A node serving on loopback with `limits`; the directory lives as long as the test.
fn serving(limits: ServeLimits) -> (Node, SocketAddr, tempfile::TempDir) {
    serving_on(limits, std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

/// A node serving on `listener` with `limits`.
fn serving_on(
    limits: ServeLimits,
    listener: std::net::TcpListener,
) -> (Node, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let served = node.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            gridwork_node::serve_with(served, listener, limits, std::future::pending()).await
        })
    });
    (node, addr, dir)
}

/// The `gridwork-signature` and `gridwork-digest` headers of a write signed by dev key 0 (a
/// funded account) for `node`.
fn signed(node: &Node, method: &str, path: &str, digest: &Hash) -> String {
    signed_by(node, &dev_keypair(0), method, path, digest)
}

/// The same headers signed by `key`.
fn signed_by(node: &Node, key: &Keypair, method: &str, path: &str, digest: &Hash) -> String {
    let signature = gridwork_api::signature_header(
        key,
        &node.keys().public_key(),
        method,
        path,
        gridwork_node::now_ms(),
        digest,
    );
    format!(
        "{}: {digest}\r\n{}: {signature}\r\n",
        gridwork_api::DIGEST_HEADER,
        gridwork_api::SIGNATURE_HEADER,
    )
}

/// A blocking connection to `addr` from a socket `set_up` prepared (bound to another
/// loopback address, given a small receive window).
fn connect_with(addr: SocketAddr, set_up: impl FnOnce(&tokio::net::TcpSocket)) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    set_up(&socket);
    let s = rt
        .block_on(socket.connect(addr))
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Status line and body of the answer on `s` (read to its end or its length).
fn answer(s: &mut TcpStream) -> (String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|l| raw.len() >= end + 4 + l) {
                break;
            }
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer");
    let status = String::from_utf8_lossy(&raw[..end])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (status, raw[end + 4..].to_vec())
}

/// Four unsigned 60 MiB uploads used to be read and parsed before their signature was checked
/// (node memory 31 -> 258 MiB). The signer is now checked from the headers: the refusal comes
/// back before a byte of the body was sent, and so does a signed body larger than the route
/// takes.
#[test]
fn an_unsigned_upload_is_refused_before_its_body_is_read() {
    let (node, addr, _dir) = serving(ServeLimits::default());
    let head = |extra: &str, length: usize| {
        format!(
            "POST /v1/chunks HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\n{extra}Content-Length: {length}\r\n\r\n"
        )
    };
    for (extra, code) in [
        (String::new(), "signature_required"),
        (
            format!("{}: 5.5.5\r\n", gridwork_api::SIGNATURE_HEADER),
            "digest_required",
        ),
        (
            signed(&node, "POST", "/v1/chunks", &Hash([1; 32])),
            "body_too_large",
        ),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head(&extra, 200 << 20).as_bytes()).unwrap();
        // Not a byte of the body follows.
        let (status, body) = answer(&mut s);
        let body = String::from_utf8_lossy(&body);
        assert!(status.contains(" 4"), "{status}");
        assert!(body.contains(code), "{code}: {body}");
    }
}

/// A signed upload whose body is not the one signed (a captured signature replayed with other
/// chunks) stores nothing.
#[test]
fn a_body_other_than_the_signed_one_stores_nothing() {
    let (node, addr, _dir) = serving(ServeLimits::default());
    let chunk = b"a sealed chunk".to_vec();
    let id = Hash::of(&chunk);
    let mut body = Vec::new();
    gridwork_api::frames::push_chunk(&mut body, &id, &chunk);
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/chunks HTTP/1.1\r\nHost: node\r\n{}Content-Length: {}\r\n\r\n",
        signed(&node, "POST", "/v1/chunks", &Hash([7; 32])),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let (status, answer_body) = answer(&mut s);
    assert!(status.contains(" 422"), "{status}");
    assert!(String::from_utf8_lossy(&answer_body).contains("digest_mismatch"));
    assert!(node.data().chunk(&id).unwrap().is_none());

    // The same body under a signature of its own ids is stored.
    let digest = Hash::of(id.as_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/chunks HTTP/1.1\r\nHost: node\r\n{}Content-Length: {}\r\n\r\n",
        signed(&node, "POST", "/v1/chunks", &digest),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let (status, _) = answer(&mut s);
    assert!(status.contains(" 200"), "{status}");
    assert!(node.data().chunk(&id).unwrap().is_some());
}

/// A body that stops arriving is cut off at the idle timeout and one that trickles at the
/// whole-body timeout, with a code that says which.
#[test]
fn a_body_that_stalls_or_trickles_is_cut_off() {
    let limits = ServeLimits {
        body_idle_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(1500),
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let head = format!(
        "POST /v1/chunks HTTP/1.1\r\nHost: node\r\n{}Content-Length: 100000\r\n\r\n",
        signed(&node, "POST", "/v1/chunks", &Hash([1; 32]))
    );

    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&[0; 10]).unwrap();
    let started = Instant::now();
    let (status, body) = answer(&mut stalled);
    assert!(status.contains(" 408"), "{status}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("body_timeout") && body.contains("paused"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut trickle = TcpStream::connect(addr).unwrap();
    trickle.write_all(head.as_bytes()).unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = trickle.try_clone().unwrap();
        for _ in 0..40 {
            if s.write_all(&[0; 10]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        trickle
    });
    let mut trickle = writer.join().unwrap();
    let (status, body) = answer(&mut trickle);
    assert!(status.contains(" 408"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("longer than the node waits for a whole body"));
}

/// `n` chunks of `size` random-looking bytes in the node's store.
fn store_chunks(node: &Node, n: usize, size: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            let mut bytes = vec![0u8; size];
            let mut x = i as u64 + 1;
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let id = Hash::of(&bytes);
            node.data().put_chunk(&id, &bytes).unwrap();
            id
        })
        .collect()
}

fn fetch_request(node: Option<&Node>, ids: &[Hash]) -> Vec<u8> {
    let body: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
    let signature = node
        .map(|n| signed(n, "POST", "/v1/chunks/fetch", &Hash::of(&body)))
        .unwrap_or_default();
    let mut request = format!(
        "POST /v1/chunks/fetch HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\n{signature}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// A stranger's fetch is answered small: chunks past 4 MiB are deferred, while a funded
/// account's signed fetch of the same ids gets them all.
#[test]
fn an_unsigned_fetch_is_answered_small() {
    let (node, addr, _dir) = serving(ServeLimits::default());
    let ids = store_chunks(&node, 12, 1 << 20);
    let frames_of = |signed: Option<&Node>| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&fetch_request(signed, &ids)).unwrap();
        let (status, body) = answer(&mut s);
        assert!(status.contains(" 200"), "{status}");
        let frames = gridwork_api::frames::read_answer(&body.into(), &ids, 8 << 20).unwrap();
        frames
            .iter()
            .filter(|f| matches!(f, gridwork_api::frames::Frame::Chunk(_)))
            .count()
    };
    assert_eq!(frames_of(None), 4);
    assert_eq!(frames_of(Some(&node)), 12);
}

/// A client that asks for a large answer and never reads it is cut off once the socket takes
/// nothing for the write timeout, and the answer's memory goes back to the budget: the next
/// client is served rather than told `busy`.
#[test]
fn a_reader_that_never_reads_is_cut_off_and_its_answer_freed() {
    let limits = ServeLimits {
        write_idle_timeout: Duration::from_millis(500),
        // Room for one signed answer (the 64 MiB cap and a chunk past it), not two.
        body_memory_bytes: 80 << 20,
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let ids = store_chunks(&node, 12, 4 << 20);
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    idle.write_all(&fetch_request(Some(&node), &ids)).unwrap();
    // Never read: the answer (48 MiB) outgrows the socket buffers.
    std::thread::sleep(Duration::from_secs(2));
    let mut next = TcpStream::connect(addr).unwrap();
    next.write_all(&fetch_request(Some(&node), &ids[..2]))
        .unwrap();
    let (status, body) = answer(&mut next);
    assert!(
        status.contains(" 200"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    // The idle one got a part of its answer and then the end of the connection.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match idle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the idle reader was held open: {e}"),
        }
    }
    assert!(got < 48 << 20, "{got} bytes: the whole answer was sent");
}

/// Reads server-sent events from `s` until one whose text contains `until`; returns all read.
fn events_until(s: &mut TcpStream, until: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 64 << 10];
    while !text.contains(until) {
        let n = s.read(&mut buf).expect("the stream went quiet");
        assert!(n > 0, "the stream ended before {until:?}: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

fn commit_transfer(node: &Node, nonce: u64) {
    let tx = super::transfer(node.ledger().chain_id(), 0, nonce, 1);
    assert!(node.submit(vec![tx])[0].is_ok());
    node.ledger().produce_block(true).unwrap().unwrap();
}

/// A subscriber that reconnects with `Last-Event-ID` gets the blocks it missed, then live
/// ones; one that comes back after the node stopped holding them is told to catch up.
#[test]
fn an_event_stream_resumes_from_its_last_event_id() {
    let (node, addr, _dir) = serving(ServeLimits::default());
    for nonce in 0..3 {
        commit_transfer(&node, nonce);
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: node\r\nLast-Event-ID: 1\r\n\r\n")
        .unwrap();
    let text = events_until(&mut s, "id: 3\n");
    assert!(
        text.contains("id: 2\n") && !text.contains("id: 1\n"),
        "{text}"
    );
    commit_transfer(&node, 3);
    let text = events_until(&mut s, "id: 4\n");
    assert!(!text.contains("id: 3\n"), "a block was sent twice: {text}");

    for nonce in 4..(4 + gridwork_node::RECENT_EVENTS as u64 + 2) {
        commit_transfer(&node, nonce);
    }
    let mut late = TcpStream::connect(addr).unwrap();
    late.write_all(b"GET /v1/events HTTP/1.1\r\nHost: node\r\nLast-Event-ID: 1\r\n\r\n")
        .unwrap();
    let text = events_until(&mut late, "catch up from GET /v1/blocks");
    assert!(text.contains("event: lagged"), "{text}");
}

/// Accounts are free to make, so a quota for every funded account was a quota for every dust
/// account a Sybil funds with one base unit. Writes need `chunk_min_funds` (1 GRID by default)
/// held; the refusal names the minimum, and the same account is served once it holds it.
#[test]
fn a_dust_account_gets_no_quota() {
    let (node, addr, _dir) = serving(ServeLimits::default());
    let sybil = Keypair::from_seed([42; 32]);
    let fund = |nonce: u64, amount: Amount| {
        let tx = Transaction {
            from: dev_keypair(0).public(),
            nonce,
            fee: Amount::ZERO,
            kind: TxKind::Transfer {
                to: sybil.public().address(),
                amount,
            },
        }
        .sign(node.ledger().chain_id(), &dev_keypair(0));
        assert!(node.submit(vec![tx])[0].is_ok());
        node.ledger().produce_block(true).unwrap().unwrap();
    };
    let upload = || {
        let chunk = b"a sealed chunk of a dust account".to_vec();
        let id = Hash::of(&chunk);
        let mut body = Vec::new();
        gridwork_api::frames::push_chunk(&mut body, &id, &chunk);
        // An upload's signature covers its chunk ids.
        let digest = Hash::of(id.as_bytes());
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!(
                "POST /v1/chunks HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
                signed_by(&node, &sybil, "POST", "/v1/chunks", &digest),
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let (status, body) = answer(&mut s);
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    fund(0, Amount(1));
    let (status, body) = upload();
    assert!(status.contains(" 403"), "{status}");
    assert!(body.contains("unfunded_account"), "{body}");
    assert!(body.contains(&Amount::grid(1).to_string()), "{body}");
    fund(1, Amount::grid(1));
    let (status, body) = upload();
    assert!(status.contains(" 200"), "{status}: {body}");
    assert_eq!(
        node.data().storage(&sybil.public().address()).min_funds,
        Amount::grid(1)
    );
}

/// Sends `request` on a new connection to `addr`; the status line and body of the answer.
fn ask(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let (status, body) = answer(&mut s);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// api-fuzz (schemathesis ST201): `limit=2147483648` was answered 200 while the document
/// said the limit was a 32-bit integer. The limit is now a u32, as documented: past it, 400.
#[test]
fn a_blocks_limit_past_u32_is_refused_as_documented() {
    let (_node, addr, _dir) = serving(ServeLimits::default());
    let get = |q: &str| {
        ask(
            addr,
            &format!(
                "GET /v1/blocks?limit={q} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let (status, _) = get("4294967295");
    assert!(status.contains(" 200"), "{status}");
    let (status, body) = get("4294967296");
    assert!(status.contains(" 400"), "{status}");
    assert!(body.contains("\"bad_request\""), "{body}");
}

/// A task index that is not a number was answered by axum in plain text, not the documented
/// error body.
#[test]
fn a_task_index_that_is_not_a_number_is_an_error_body() {
    let (_node, addr, _dir) = serving(ServeLimits::default());
    let path = format!("/v1/jobs/{}/tasks/first/logs", Hash([7; 32]));
    let (status, body) = ask(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"),
    );
    assert!(status.contains(" 400"), "{status}");
    assert!(
        body.contains("\"bad_request\"") && body.contains("task index"),
        "{body}"
    );
}

/// A JSON body that stalls was answered 400 `malformed_json`; it is the documented 408
/// `body_timeout`, as for the signed writes.
#[test]
fn a_json_body_that_stalls_is_a_body_timeout() {
    let limits = ServeLimits {
        body_idle_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let (_node, addr, _dir) = serving(limits);
    let (status, body) = ask(
        addr,
        "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tx\": \"",
    );
    assert!(status.contains(" 408"), "{status}");
    assert!(body.contains("\"body_timeout\""), "{body}");
}

/// A chunk question past its route's limit was answered by axum in plain text, not the
/// documented error body.
#[test]
fn a_chunk_question_past_its_limit_is_an_error_body() {
    let (_node, addr, _dir) = serving(ServeLimits::default());
    for (path, limit) in [
        ("/v1/chunks/fetch", 1 << 20),
        ("/v1/chunks/missing", 16 << 20),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            limit + 32
        );
        s.write_all(head.as_bytes()).unwrap();
        // The node may answer and close before the whole body is sent.
        let _ = s.write_all(&vec![0; limit + 32]);
        let (status, body) = answer(&mut s);
        let body = String::from_utf8_lossy(&body);
        assert!(status.contains(" 413"), "{path}: {status}");
        assert!(body.contains("\"body_too_large\""), "{path}: {body}");
    }
}

/// Readers of whole chunks that never read hold their answers' share of the body budget
/// until the bytes are taken, not just until the node has queued them: with room for two
/// 6 MiB answers, a third reader waits and is told `busy`, and is served once the idle
/// readers go. (An unbudgeted chunk read let a thousand such readers hold 8 MiB each.)
#[test]
fn chunk_readers_that_never_read_hold_the_body_budget_until_their_bytes_are_taken() {
    let limits = ServeLimits {
        write_idle_timeout: Duration::from_secs(120),
        body_memory_bytes: 16 << 20,
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let id = store_chunks(&node, 1, 6 << 20)[0];
    let get = format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\n\r\n");
    // Two readers that never read: the socket buffers take far less than 6 MiB each.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(get.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(
            format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let (status, body) = answer(&mut third);
    assert!(status.contains(" 503"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("busy"));
    drop(idle);
    let mut fourth = TcpStream::connect(addr).unwrap();
    fourth
        .write_all(
            format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let (status, body) = answer(&mut fourth);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), 6 << 20);
}

/// At the connection limit a newcomer takes an idle connection's place, never one still
/// sending an answer: a slow reader of a 6 MiB chunk keeps its connection while a connection
/// that sent nothing makes room. (The request used to count as answered once hyper had
/// queued the body, so the slow reader was the one cut.)
#[test]
fn a_connection_still_sending_its_answer_is_not_the_one_that_makes_room() {
    let limits = ServeLimits {
        max_connections: 2,
        write_idle_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let id = store_chunks(&node, 1, 6 << 20)[0];
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(
        format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let _silent = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut newcomer = TcpStream::connect(addr).unwrap();
    newcomer
        .write_all(b"GET /health HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, _) = answer(&mut newcomer);
    assert!(status.contains(" 200"), "{status}");
    let (status, body) = answer(&mut slow);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), 6 << 20, "the slow reader's answer was cut");
}

/// One client holds at most 16 of the node's 256 event streams (four addresses used to hold
/// them all, and workers lost their block wake-ups); a stream it closes gives its place back.
#[test]
fn one_client_holds_only_its_share_of_event_streams() {
    let (_node, addr, _dir) = serving(ServeLimits::default());
    let subscribe = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: node\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head).into_owned(), s)
    };
    let mut open: Vec<TcpStream> = (0..16)
        .map(|_| {
            let (status, s) = subscribe();
            assert!(status.ends_with("200"), "{status}");
            s
        })
        .collect();
    let (status, mut refused) = subscribe();
    assert!(status.ends_with("503"), "{status}");
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).contains("too_many_subscribers"));
    drop(open.pop());
    // The node notices the closed stream at its next write (a keep-alive within 15 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, s) = subscribe();
        if status.ends_with("200") {
            open.push(s);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A signed upload holds the budget for what it has sent, not for what it declares: four
/// uploads that declare 60 MiB and stall after 1 KiB (a funded account's cheap way to hold
/// the whole budget) leave room for everyone else's writes.
#[test]
fn a_stalled_upload_holds_the_budget_for_what_it_sent_not_what_it_declared() {
    let limits = ServeLimits {
        body_memory_bytes: 80 << 20,
        body_idle_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let stalled: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!(
                    "POST /v1/chunks HTTP/1.1\r\nHost: node\r\n{}Content-Length: {}\r\n\r\n",
                    signed(&node, "POST", "/v1/chunks", &Hash([i; 32])),
                    60 << 20
                )
                .as_bytes(),
            )
            .unwrap();
            s.write_all(&[0u8; 1024]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let chunk = b"an honest upload".to_vec();
    let id = Hash::of(&chunk);
    let mut body = Vec::new();
    gridwork_api::frames::push_chunk(&mut body, &id, &chunk);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        format!(
            "POST /v1/chunks HTTP/1.1\r\nHost: node\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
            signed(&node, "POST", "/v1/chunks", &Hash::of(id.as_bytes())),
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let (status, answer_body) = answer(&mut s);
    assert!(
        status.contains(" 200"),
        "{status}: {}",
        String::from_utf8_lossy(&answer_body)
    );
    drop(stalled);
}

/// Unsigned reads draw on their client's part of the budget too: one address whose readers
/// never read fills its own part and is told `busy`, while another address is served.
#[test]
fn one_address_of_slow_readers_holds_only_its_part_of_the_budget() {
    let limits = ServeLimits {
        body_memory_bytes: 256 << 20,
        write_idle_timeout: Duration::from_secs(120),
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let id = store_chunks(&node, 1, 6 << 20)[0];
    let get = format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n");
    // The part is 72 MiB: twelve 6 MiB answers fill it.
    let mut idle = Vec::new();
    let refused = loop {
        assert!(
            idle.len() < 20,
            "twenty readers from one address were all served"
        );
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(get.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        if head.ends_with(b"503") {
            break s;
        }
        idle.push(s);
    };
    assert!(idle.len() >= 10, "refused after {} readers", idle.len());
    drop(refused);
    // Another address is served meanwhile.
    let mut other = connect_with(addr, |socket| {
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    });
    other.write_all(get.as_bytes()).unwrap();
    let (status, body) = answer(&mut other);
    let length = body.len();
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(length, 6 << 20);
}

/// A reader that takes a little every so often frees its answer as one that takes nothing
/// does: the kernel wakes a writer only once a good part of its send buffer has drained, so a
/// trickle leaves the node's writes without progress and the write clock cuts it (the kernel
/// may still hand the trickler what it had buffered). Its budget comes back for the next
/// reader.
#[test]
fn a_reader_that_trickles_frees_its_answer_at_the_write_timeout() {
    let limits = ServeLimits {
        write_idle_timeout: Duration::from_secs(2),
        body_memory_bytes: 10 << 20,
        ..ServeLimits::default()
    };
    let (node, addr, _dir) = serving(limits);
    let id = store_chunks(&node, 1, 7 << 20)[0];
    let get = format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n");
    let mut trickler = connect_with(addr, |socket| {
        // A small window: the kernel cannot take the whole answer off the node's hands.
        socket.set_recv_buffer_size(4096).unwrap();
    });
    trickler.write_all(get.as_bytes()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(trickler.read(&mut buf), Ok(0) | Err(_)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // The trickler's answer holds 7 MiB of the 10 MiB budget until it is cut; then another
    // reader gets its share (8 MiB, a whole chunk's) within the 5 s a request waits.
    std::thread::sleep(Duration::from_secs(4));
    let mut next = TcpStream::connect(addr).unwrap();
    next.write_all(get.as_bytes()).unwrap();
    let (status, body) = answer(&mut next);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), 7 << 20);
    reading.join().unwrap();
}

/// A reader that keeps taking a little, so the node's writes never stall for the idle
/// timeout, is still cut off once the node has waited that long in all on it and it took
/// less than the minimum rate meanwhile; the budget its answer held comes back at once. The
/// node's send buffer is small here so that progress comes often: the write-idle clock alone
/// never fires on this reader, which would hold its 6 MiB for over a minute.
#[test]
fn a_reader_below_the_minimum_rate_is_cut_off_though_it_keeps_reading() {
    let limits = ServeLimits {
        write_idle_timeout: Duration::from_secs(3),
        write_min_rate: 1 << 20,
        body_memory_bytes: 8 << 20,
        ..ServeLimits::default()
    };
    let listener = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(32 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = rt.enter();
        socket.listen(64).unwrap().into_std().unwrap()
    };
    let (node, addr, _dir) = serving_on(limits, listener);
    let id = store_chunks(&node, 1, 6 << 20)[0];
    let get = format!("GET /v1/chunks/{id} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n");
    let mut slow = connect_with(addr, |socket| {
        socket.set_recv_buffer_size(4096).unwrap();
    });
    slow.write_all(get.as_bytes()).unwrap();
    let started = Instant::now();
    let reading = std::thread::spawn(move || {
        // About 80 KB/s: 8 KiB every 100 ms, until the node ends the answer (or 60 s).
        let mut buf = [0u8; 8192];
        let mut taken = 0usize;
        while started.elapsed() < Duration::from_secs(60) {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => taken += n,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (taken, started.elapsed())
    });
    // The slow answer holds 6 MiB of the 8 MiB budget: the next reader's 8 MiB share waits
    // (up to 5 s) and gets it once the slow reader is cut, about 3 s in.
    std::thread::sleep(Duration::from_millis(500));
    let mut next = TcpStream::connect(addr).unwrap();
    next.write_all(get.as_bytes()).unwrap();
    let (status, body) = answer(&mut next);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), 6 << 20);
    let (taken, took) = reading.join().unwrap();
    assert!(
        taken < 6 << 20 && took < Duration::from_secs(30),
        "the slow reader took {taken} bytes in {took:?}: it was not cut off"
    );
}

/// Sixteen addresses (each in a /24 of its own) holding sixteen event streams each no longer
/// lock everyone else out: a newcomer's stream takes the place of the oldest stream of the
/// first of them, which gets a `lagged` event saying so, with the height to resume from, and
/// ends.
#[test]
fn a_newcomer_gets_an_event_stream_from_a_client_holding_the_most() {
    let (_node, addr, _dir) = serving(ServeLimits::default());
    let subscribe = |from: u8| {
        let mut s = connect_with(addr, |socket| {
            socket
                .bind(SocketAddr::from(([127, from, 0, 2], 0)))
                .unwrap();
        });
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: node\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head).into_owned(), s)
    };
    let mut held = Vec::new();
    for from in 2..18u8 {
        for _ in 0..16 {
            let (status, s) = subscribe(from);
            assert!(status.ends_with("200"), "{status}");
            held.push(s);
        }
    }
    // The node is full, and one of those sixteen is two below nobody: refused.
    let (status, _) = subscribe(2);
    assert!(status.ends_with("503"), "{status}");
    let (status, _newcomer) = subscribe(40);
    assert!(status.ends_with("200"), "a newcomer was refused: {status}");
    // The oldest stream of the first address is told and ends.
    let mut oldest = held.remove(0);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("gave this one's place") {
        match oldest.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(
        seen.contains("event: lagged") && seen.contains("gave this one's place"),
        "{seen}"
    );
}

/// A request body must keep arriving at the minimum rate after the grace: a JSON body
/// trickled at 1 KB/s (a connection nobody may take while its request is in flight) is cut
/// off within seconds, not at the whole-body timeout, while one sent at once is read.
#[test]
fn a_json_body_trickled_below_the_minimum_rate_is_cut_off() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        body_min_rate: 4096,
        ..ServeLimits::default()
    };
    let (_node, addr, _dir) = serving(limits);
    let head = "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
    let mut trickle = TcpStream::connect(addr).unwrap();
    trickle.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let writer = {
        let mut s = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..600 {
                if s.write_all(&[b' '; 100]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (status, body) = answer(&mut trickle);
    assert!(status.contains(" 408"), "{status}");
    assert!(
        String::from_utf8_lossy(&body).contains("slower than the node's minimum rate"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(trickle);
    writer.join().unwrap();
    // A body sent at once is read (and judged on what it says).
    let mut prompt = TcpStream::connect(addr).unwrap();
    let body = "{}";
    prompt
        .write_all(
            format!(
                "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let (status, _) = answer(&mut prompt);
    assert!(!status.contains(" 408"), "{status}");
}

/// Unsigned chunk questions are read on their client's part of the body budget as their
/// bytes arrive: three 16 MiB missing-chunk questions from one address, each left one id
/// short, hold most of its part (72 MiB here), so its next large question is told `busy`
/// while the same question from another address is answered. (The whole question used to
/// be read before its share was asked: stalled questions held 16 MiB each outside the
/// budget, and the next one was served.)
#[test]
fn stalled_chunk_questions_hold_their_clients_part_of_the_budget() {
    let limits = ServeLimits {
        body_memory_bytes: 256 << 20,
        body_idle_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let (_node, addr, _dir) = serving(limits);
    const LEN: usize = 16 << 20;
    let head = format!(
        "POST /v1/chunks/missing HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\nContent-Length: {LEN}\r\n\r\n"
    );
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&vec![0u8; LEN - 32]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // A whole question, written from a thread: the node may stop reading it.
    let ask = |mut s: TcpStream| {
        let mut writer = s.try_clone().unwrap();
        let head = head.clone();
        let sent = std::thread::spawn(move || {
            writer
                .set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&vec![0u8; LEN]);
        });
        let answered = answer(&mut s);
        drop(s);
        sent.join().unwrap();
        answered
    };
    let (status, body) = ask(TcpStream::connect(addr).unwrap());
    assert!(
        status.contains(" 503"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("busy"));
    let other = connect_with(addr, |socket| {
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    });
    let (status, body) = ask(other);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), (LEN / 32).div_ceil(8), "one bit per id asked");
    drop(stalled);
}

/// The largest missing-chunk question (16 MiB of ids) is answered on a small body budget
/// (32 MiB): its body's share carries over to its ids, and only the answer's is added. (Asking
/// the client's part for ids and answer while still holding the body's share waited on itself
/// and answered `busy` after 5 s, on an idle node.)
#[test]
fn the_largest_missing_chunk_question_is_answered_on_a_small_budget() {
    let limits = ServeLimits {
        body_memory_bytes: 32 << 20,
        body_idle_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let (_node, addr, _dir) = serving(limits);
    const LEN: usize = 16 << 20;
    let head = format!(
        "POST /v1/chunks/missing HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(addr).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![0u8; LEN]);
    });
    let (status, body) = answer(&mut s);
    sent.join().unwrap();
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), (LEN / 32).div_ceil(8), "one bit per id asked");
}
