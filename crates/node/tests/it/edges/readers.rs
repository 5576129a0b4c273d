//! Slow readers and stalled senders: what they hold of the body budget, and for how long.

use super::*;

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
