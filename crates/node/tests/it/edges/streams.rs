//! Event streams under hostile clients: resuming, places per client, displacement.

use super::*;

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
    let tx = crate::transfer(node.ledger().chain_id(), 0, nonce, 1);
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
