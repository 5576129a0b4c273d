//! `gridwork bench hostile`: the real node binary on loopback under hostile clients, and a
//! normal client's transfers measured before and during the attack.
//!
//! The node runs as a child process of this binary (`gridwork node --dev`, default limits), so
//! its resident memory is its own. The attack, all at once for `attack_secs`:
//! - slow connections: a request's headers sent a byte every few seconds, reopened when the
//!   node cuts them off;
//! - event subscribers that read the status line and then never read again;
//! - a mempool flood: signed transfers from one funded sender, as fast as the node takes them;
//! - fetches of one stored chunk repeated up to the id limit, unsigned;
//! - unsigned uploads declaring 60 MiB bodies.
//!
//! The attackers connect from their own loopback addresses (127.0.n.2, each in a /24 of its
//! own, 60 connections an address), as strangers on other networks would; the normal client
//! uses 127.0.0.1. What the node answered each attacker is
//! counted, and the figures are printed, never asserted on time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridwork_client::Client;
use gridwork_protocol::dev_keypair;
use gridwork_types::{Address, Amount, Hash, Keypair, Transaction, TxKind};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::output::{emit, rows};

/// What to send, and for how long.
#[derive(Debug, Clone)]
pub(crate) struct HostileLoad {
    /// Slow connections held at once.
    pub(crate) slow: usize,
    /// Event subscribers that never read.
    pub(crate) subscribers: usize,
    /// Signed transfers the flooding sender sends.
    pub(crate) flood: u64,
    /// Repeated-id fetches.
    pub(crate) fetches: usize,
    /// Unsigned 60 MiB uploads.
    pub(crate) uploads: usize,
    /// The normal client's transfers in each phase.
    pub(crate) transfers: usize,
    /// How long the attack lasts at least (it also lasts until the normal client is done).
    pub(crate) attack_secs: u64,
}

/// What the attackers were answered.
#[derive(Debug, Default, Serialize)]
struct Answered {
    slow_opened: u64,
    slow_cut_off_at_header_timeout: u64,
    slow_closed_sooner: u64,
    slow_refused_at_connect: u64,
    subscribers_streaming: u64,
    subscribers_refused: u64,
    flood_admitted: u64,
    flood_refused_sender_full: u64,
    flood_refused_other: u64,
    flood_connection_closed: u64,
    flood_other_answer: Option<String>,
    fetches_answered: u64,
    fetch_answer_bytes_max: u64,
    fetch_asked_bytes: u64,
    uploads_refused_before_body: u64,
    uploads_other: u64,
}

/// The normal client's figures in one phase.
#[derive(Debug, Serialize)]
struct Phase {
    committed: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    idle: Phase,
    under_attack: Phase,
    attack: Answered,
    attack_secs: f64,
    node_rss_idle_mib: Option<f64>,
    node_peak_rss_mib: Option<f64>,
}

#[derive(Default)]
struct Counters {
    slow_opened: AtomicU64,
    slow_cut: AtomicU64,
    slow_sooner: AtomicU64,
    slow_refused: AtomicU64,
    subs_ok: AtomicU64,
    subs_refused: AtomicU64,
    flood_ok: AtomicU64,
    flood_full: AtomicU64,
    flood_other: AtomicU64,
    flood_closed: AtomicU64,
    flood_other_answer: std::sync::Mutex<Option<String>>,
    fetches: AtomicU64,
    fetch_max: AtomicU64,
    uploads_refused: AtomicU64,
    uploads_other: AtomicU64,
}

/// The node child, killed when dropped.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl NodeProcess {
    /// A figure of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`), where Linux has it.
    fn memory_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }
}

/// Runs the bench in `dir` (emptied first) and prints its figures.
pub(crate) fn bench_hostile(json: bool, dir: &Path, load: &HostileLoad) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(dir.join("node.log"))?;
    let node = NodeProcess(
        Command::new(std::env::current_exe()?)
            .arg("--home")
            .arg(dir.join("home"))
            .args(["node", "--dev", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.join("node"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the node")?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&node, addr, load))?;
    emit(json, &report, || report_rows(&report))
}

async fn run(node: &NodeProcess, addr: SocketAddr, load: &HostileLoad) -> anyhow::Result<Report> {
    let base = format!("http://{addr}");
    let client = Client::new(&base).signed_by(dev_keypair(0));
    let started = Instant::now();
    while client.health().await.is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the node did not answer /health within 60 s (see its node.log)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain = client.chain().await?;
    let node_key = client.node_key().await?;
    let chunk = store_chunk(addr, &node_key).await?;

    let mut nonce = 0;
    let idle = transfers(&base, &chain.chain_id, &mut nonce, load.transfers).await?;
    let node_rss_idle_mib = node.memory_mib("VmRSS");

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let attack_started = Instant::now();
    let mut attackers = Vec::new();
    // One stranger's share of connections is `http_max_connections_per_ip` (64): spread the
    // slow connections and the subscribers over addresses of their own.
    for i in 0..load.slow {
        let from = attacker_ip(2 + (i / 60) as u8);
        attackers.push(tokio::spawn(slow_connection(
            addr,
            from,
            counters.clone(),
            stop.clone(),
        )));
    }
    let first_sub_ip = 2 + load.slow.div_ceil(60) as u8;
    for i in 0..load.subscribers {
        let from = attacker_ip(first_sub_ip + (i / 60) as u8);
        attackers.push(tokio::spawn(silent_subscriber(
            addr,
            from,
            counters.clone(),
            stop.clone(),
        )));
    }
    let other_n = first_sub_ip + load.subscribers.div_ceil(60) as u8 + 1;
    let other_ip = attacker_ip(other_n);
    attackers.push(tokio::spawn(flood(
        addr,
        other_ip,
        chain.chain_id.clone(),
        load.flood,
        counters.clone(),
        stop.clone(),
    )));
    for _ in 0..load.fetches.min(8) {
        attackers.push(tokio::spawn(repeated_fetches(
            addr,
            other_ip,
            chunk,
            load.fetches.div_ceil(8),
            counters.clone(),
            stop.clone(),
        )));
    }
    for i in 0..load.uploads {
        // Beside the flood and the fetches, within one address's share.
        let from = attacker_ip(other_n + 1 + (i / 60) as u8);
        attackers.push(tokio::spawn(unsigned_upload(addr, from, counters.clone())));
    }
    // Let the attack take hold before the normal client starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let under_attack = transfers(&base, &chain.chain_id, &mut nonce, load.transfers).await?;
    let rest = Duration::from_secs(load.attack_secs).saturating_sub(attack_started.elapsed());
    tokio::time::sleep(rest).await;
    let attack_secs = attack_started.elapsed().as_secs_f64();
    let node_peak_rss_mib = node.memory_mib("VmHWM");
    stop.store(true, Relaxed);
    for a in attackers {
        a.abort();
    }
    let c = &counters;
    let attack = Answered {
        slow_opened: c.slow_opened.load(Relaxed),
        slow_cut_off_at_header_timeout: c.slow_cut.load(Relaxed),
        slow_closed_sooner: c.slow_sooner.load(Relaxed),
        slow_refused_at_connect: c.slow_refused.load(Relaxed),
        subscribers_streaming: c.subs_ok.load(Relaxed),
        subscribers_refused: c.subs_refused.load(Relaxed),
        flood_admitted: c.flood_ok.load(Relaxed),
        flood_refused_sender_full: c.flood_full.load(Relaxed),
        flood_refused_other: c.flood_other.load(Relaxed),
        flood_connection_closed: c.flood_closed.load(Relaxed),
        flood_other_answer: c
            .flood_other_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        fetches_answered: c.fetches.load(Relaxed),
        fetch_answer_bytes_max: c.fetch_max.load(Relaxed),
        fetch_asked_bytes: 32 * gridwork_api::frames::MAX_FETCH_IDS as u64,
        uploads_refused_before_body: c.uploads_refused.load(Relaxed),
        uploads_other: c.uploads_other.load(Relaxed),
    };
    Ok(Report {
        idle,
        under_attack,
        attack,
        attack_secs,
        node_rss_idle_mib,
        node_peak_rss_mib,
    })
}

/// Attacker address `n`: each in a /24 of its own (127.0.n.2), as a botnet's are, so that
/// only the per-address limit and eviction stand between it and the normal client.
fn attacker_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, n, 2))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// `n` transfers from dev account 0, one after another, each timed from submission to its
/// receipt.
async fn transfers(base: &str, chain_id: &str, nonce: &mut u64, n: usize) -> anyhow::Result<Phase> {
    let key = dev_keypair(0);
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let tx = Transaction {
            from: key.public(),
            nonce: *nonce,
            fee: Amount::ZERO,
            kind: TxKind::Transfer {
                to: Address([9; 20]),
                amount: Amount(1),
            },
        }
        .sign(chain_id, &key);
        *nonce += 1;
        // A fresh client each time: a newcomer's connection must be taken too.
        let client = Client::new(base);
        let start = Instant::now();
        let hash = client.submit(&tx).await?;
        client
            .wait_committed(&hash, Duration::from_secs(120))
            .await?;
        took.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| {
        took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Phase {
        committed: took.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: took.last().copied().unwrap_or(0.0),
    })
}

/// A 1 MiB chunk stored by a signed upload of dev account 0: what the fetchers ask for.
async fn store_chunk(
    addr: SocketAddr,
    node_key: &gridwork_types::PublicKey,
) -> anyhow::Result<Hash> {
    let mut chunk = vec![0u8; 1 << 20];
    blake3::Hasher::new()
        .update(b"hostile bench chunk")
        .finalize_xof()
        .fill(&mut chunk);
    let id = Hash::of(&chunk);
    let mut body = Vec::new();
    gridwork_api::frames::push_chunk(&mut body, &id, &chunk);
    let digest = Hash::of(id.as_bytes());
    let headers = signed_headers(node_key, &dev_keypair(0), "POST", "/v1/chunks", &digest);
    let (status, answer) = request(
        addr,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "POST /v1/chunks",
        &headers,
        "application/octet-stream",
        &body,
    )
    .await?;
    if status != 200 {
        bail!(
            "storing the fetched chunk failed: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(id)
}

fn signed_headers(
    node_key: &gridwork_types::PublicKey,
    key: &Keypair,
    method: &str,
    path: &str,
    digest: &Hash,
) -> String {
    let time_ms = gridwork_node::now_ms();
    format!(
        "{}: {digest}\r\n{}: {}\r\n",
        gridwork_api::DIGEST_HEADER,
        gridwork_api::SIGNATURE_HEADER,
        gridwork_api::signature_header(key, node_key, method, path, time_ms, digest)
    )
}

/// One HTTP/1.1 request on a connection of its own: the status and the whole body.
async fn request(
    addr: SocketAddr,
    from: IpAddr,
    line: &str,
    headers: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = connect_from(from, addr).await?;
    s.write_all(
        format!(
            "{line} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Type: {content_type}\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    s.write_all(body).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let status = answer
        .get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let start = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    Ok((status, answer.split_off(start)))
}

/// Slowloris: a request's headers a byte at a time, every 3 s; reopened whenever the node
/// cuts it off.
async fn slow_connection(addr: SocketAddr, from: IpAddr, c: Arc<Counters>, stop: Arc<AtomicBool>) {
    let head = b"GET /v1/chain HTTP/1.1\r\nHost: node\r\nX-Slow: ";
    while !stop.load(Relaxed) {
        let Ok(mut s) = connect_from(from, addr).await else {
            c.slow_refused.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        c.slow_opened.fetch_add(1, Relaxed);
        let opened = Instant::now();
        let mut cut = false;
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if s.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 256];
            // A closed connection reads as its end (or the node's 408) within the wait.
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Ok(Ok(_)) | Ok(Err(_)) => {
                    cut = true;
                    break;
                }
                Err(_) => {}
            }
            if stop.load(Relaxed) {
                break;
            }
        }
        if cut {
            // The header timeout is 10 s; anything sooner made room for someone else (or
            // was refused as it arrived).
            if opened.elapsed() >= Duration::from_secs(9) {
                c.slow_cut.fetch_add(1, Relaxed);
            } else {
                c.slow_sooner.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Subscribes to events, reads the status line, and never reads again; subscribes again when
/// refused or dropped.
async fn silent_subscriber(
    addr: SocketAddr,
    from: IpAddr,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Relaxed) {
        let Ok(mut s) = connect_from(from, addr).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut status = [0u8; 12];
        if s.read_exact(&mut status).await.is_err() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if &status[9..12] == b"200" {
            c.subs_ok.fetch_add(1, Relaxed);
            // Hold it, unread, until the node drops it (lagged, or the write timeout) or the
            // attack ends.
            while !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.peer_addr().is_err() {
                    break;
                }
            }
        } else {
            c.subs_refused.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Signed transfers from dev account 1, in nonce order (the mempool takes a sender's next
/// nonce only), pipelined on one keep-alive connection 256 at a time: as fast as one sender
/// can make the node take them.
async fn flood(
    addr: SocketAddr,
    from: IpAddr,
    chain_id: String,
    n: u64,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let key = dev_keypair(1);
    let mut nonce = 0;
    while nonce < n && !stop.load(Relaxed) {
        let Ok(s) = connect_from(from, addr).await else {
            c.flood_closed.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (read, mut write) = s.into_split();
        let mut read = tokio::io::BufReader::new(read);
        while nonce < n && !stop.load(Relaxed) {
            let batch = (n - nonce).min(256);
            let mut out = Vec::new();
            for k in nonce..nonce + batch {
                let tx = Transaction {
                    from: key.public(),
                    nonce: k,
                    fee: Amount::ZERO,
                    kind: TxKind::Transfer {
                        to: Address([8; 20]),
                        amount: Amount(1),
                    },
                }
                .sign(&chain_id, &key);
                let body = serde_json::json!({
                    "tx": hex::encode(gridwork_types::Encode::to_bytes(&tx))
                })
                .to_string();
                out.extend_from_slice(
                    format!(
                        "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            if write.write_all(&out).await.is_err() {
                c.flood_closed.fetch_add(1, Relaxed);
                break;
            }
            let mut answered = 0;
            while answered < batch {
                let Ok((status, body)) = read_answer(&mut read).await else {
                    break;
                };
                answered += 1;
                let body = String::from_utf8_lossy(&body);
                if (200..300).contains(&status) {
                    c.flood_ok.fetch_add(1, Relaxed);
                } else if body.contains("sender_mempool_full") {
                    c.flood_full.fetch_add(1, Relaxed);
                } else {
                    let mut first = c
                        .flood_other_answer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(format!("{status} {body}"));
                    }
                    c.flood_other.fetch_add(1, Relaxed);
                }
            }
            nonce += answered;
            if answered < batch {
                // The connection closed mid-batch: start again from the first unanswered
                // nonce on a new one.
                c.flood_closed.fetch_add(1, Relaxed);
                break;
            }
        }
    }
}

/// One answer on a keep-alive connection: its status and body (by `Content-Length`).
async fn read_answer<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if r.read_line(&mut header).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok((status, body))
}

/// Unsigned fetches of one chunk repeated up to the id limit (128 KiB asked): the answer
/// used to be 64 MiB.
async fn repeated_fetches(
    addr: SocketAddr,
    from: IpAddr,
    id: Hash,
    n: usize,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let body: Vec<u8> = id.as_bytes().repeat(gridwork_api::frames::MAX_FETCH_IDS);
    for _ in 0..n {
        if stop.load(Relaxed) {
            break;
        }
        if let Ok((200, answer)) = request(
            addr,
            from,
            "POST /v1/chunks/fetch",
            "",
            "application/octet-stream",
            &body,
        )
        .await
        {
            c.fetches.fetch_add(1, Relaxed);
            c.fetch_max.fetch_max(answer.len() as u64, Relaxed);
        }
    }
}

/// An unsigned upload declaring 60 MiB: the node answers from the headers; the body is sent
/// only as far as the node reads it.
async fn unsigned_upload(addr: SocketAddr, from: IpAddr, c: Arc<Counters>) {
    let Ok(mut s) = connect_from(from, addr).await else {
        c.uploads_other.fetch_add(1, Relaxed);
        return;
    };
    let head = format!(
        "POST /v1/chunks HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        60u64 << 20
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut status = [0u8; 12];
    let refused = matches!(
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut status)).await,
        Ok(Ok(_)) if status[9] == b'4'
    );
    if refused {
        c.uploads_refused.fetch_add(1, Relaxed);
    } else {
        c.uploads_other.fetch_add(1, Relaxed);
    }
}

fn report_rows(r: &Report) -> String {
    let phase = |p: &Phase| {
        format!(
            "{} transfers committed: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            p.committed, p.p50_ms, p.p99_ms, p.max_ms
        )
    };
    let mib = |m: Option<f64>| m.map_or("unknown".into(), |m| format!("{m:.0} MiB"));
    let a = &r.attack;
    rows(&[
        ("idle node", phase(&r.idle)),
        ("under attack", phase(&r.under_attack)),
        (
            "slow connections",
            format!(
                "{} opened, {} cut off at the header timeout, {} closed sooner to make room, {} refused at connect",
                a.slow_opened, a.slow_cut_off_at_header_timeout, a.slow_closed_sooner, a.slow_refused_at_connect
            ),
        ),
        (
            "silent subscribers",
            format!(
                "{} streaming, {} refused (cap)",
                a.subscribers_streaming, a.subscribers_refused
            ),
        ),
        (
            "mempool flood",
            format!(
                "{} admitted, {} refused for the sender's share, {} refused otherwise, {} connections closed",
                a.flood_admitted, a.flood_refused_sender_full, a.flood_refused_other, a.flood_connection_closed
            ),
        ),
        (
            "repeated fetches",
            format!(
                "{} answered, at most {} bytes for {} bytes asked",
                a.fetches_answered, a.fetch_answer_bytes_max, a.fetch_asked_bytes
            ),
        ),
        (
            "unsigned uploads",
            format!(
                "{} refused from their headers, {} otherwise",
                a.uploads_refused_before_body, a.uploads_other
            ),
        ),
        (
            "node memory",
            format!(
                "{} resident idle, {} at the peak ({:.0} s of attack)",
                mib(r.node_rss_idle_mib),
                mib(r.node_peak_rss_mib),
                r.attack_secs
            ),
        ),
    ])
}
