//! Chunks between peers over iroh on loopback: a pull from a peer alone, and a pull that
//! skips an unreachable peer for the node.

use std::net::SocketAddr;

use gridwork_client::{pull_tree_from, ChunkSource, Client, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_p2p::{transport_secret, Peer};
use gridwork_transfer::{ChunkParams, ChunkStore, DataKey};
use gridwork_types::{Keypair, PeerAddr};

async fn node(dir: &std::path::Path) -> Client {
    let config = NodeConfig {
        data_dir: dir.join("node"),
        block_interval_ms: 20,
        ..NodeConfig::default()
    };
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gridwork_node::serve(node, listener, std::future::pending()));
    Client::new(&addr.to_string()).signed_by(gridwork_protocol::dev_keypair(0))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn opts() -> TransferOptions {
    TransferOptions {
        params: ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 64 * 1024,
        },
        streams: 4,
        ..TransferOptions::default()
    }
}

fn same_files(a: &std::path::Path, b: &std::path::Path) {
    for entry in std::fs::read_dir(a).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_pulled_from_a_peer_alone_arrives_whole_and_an_unreachable_peer_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let client = node(dir.path()).await;
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5u8 {
        let mut data = vec![0u8; 150_000];
        blake3::Hasher::new()
            .update(&[i])
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("{i}.bin")), data).unwrap();
    }
    let key = DataKey::generate();
    let pushed = client.push_tree(&src, &key, &opts()).await.unwrap();

    // Worker A holds the tree (it pulled it from the node) and serves its store.
    let a_store = ChunkStore::open(dir.path().join("a"), None).unwrap();
    client
        .pull_tree(
            &pushed.cid,
            &key,
            &a_store,
            &dir.path().join("a-copy"),
            &opts(),
        )
        .await
        .unwrap();
    let a = Peer::bind(
        transport_secret(&Keypair::from_seed([1; 32])),
        loopback(),
        Some(a_store),
    )
    .await
    .unwrap();
    let announced = a.announcement(&[]);
    assert_eq!(announced.addrs.len(), 1, "{announced:?}");

    // Worker B fetches from A alone.
    let b = Peer::bind(
        transport_secret(&Keypair::from_seed([2; 32])),
        loopback(),
        None,
    )
    .await
    .unwrap();
    let from_a = b.source(&announced, "peer a").unwrap();
    let b_store = ChunkStore::open(dir.path().join("b"), None).unwrap();
    let out = dir.path().join("b-copy");
    let report = pull_tree_from(&[&from_a], &pushed.cid, &key, &b_store, &out, &opts())
        .await
        .unwrap();
    same_files(&src, &out);
    assert_eq!(report.sources[0].chunks, report.chunks_received);
    assert!(report.chunks_received as usize >= 5);

    // A peer that answers nothing at its address is given up on; the node delivers.
    let nobody = PeerAddr {
        endpoint: Keypair::from_seed([3; 32]).public(),
        addrs: vec!["127.0.0.1:9".into()],
    };
    let gone = b.source(&nobody, "peer gone").unwrap();
    let c_store = ChunkStore::open(dir.path().join("c"), None).unwrap();
    let out = dir.path().join("c-copy");
    let sources: [&dyn ChunkSource; 2] = [&gone, &client];
    let report = pull_tree_from(&sources, &pushed.cid, &key, &c_store, &out, &opts())
        .await
        .unwrap();
    same_files(&src, &out);
    assert!(report.sources[0].failed >= 1, "{report:?}");
    assert_eq!(report.sources[1].chunks, report.chunks_received);
    a.shutdown().await;
    b.shutdown().await;
}

/// `n` chunks of `size` bytes in a new store at `dir`.
fn filled_store(
    dir: &std::path::Path,
    n: u8,
    size: usize,
) -> (ChunkStore, Vec<gridwork_types::Hash>) {
    let store = ChunkStore::open(dir, None).unwrap();
    let ids = (0..n)
        .map(|i| {
            let mut data = vec![0u8; size];
            blake3::Hasher::new()
                .update(&[i, 9])
                .finalize_xof()
                .fill(&mut data);
            let id = gridwork_types::Hash::of(&data);
            store.put(&id, &data).unwrap();
            id
        })
        .collect();
    (store, ids)
}

/// A raw connection to `server` from a fresh endpoint: streams it opens and never reads.
async fn raw_connection(server: &PeerAddr) -> (iroh::Endpoint, iroh::endpoint::Connection) {
    dial(server, 42, [127, 0, 0, 1]).await.unwrap()
}

/// A connection to `server` from a fresh endpoint with key `seed` at address `ip`, or why
/// not.
async fn dial(
    server: &PeerAddr,
    seed: u8,
    ip: [u8; 4],
) -> Result<(iroh::Endpoint, iroh::endpoint::Connection), String> {
    let endpoint = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(iroh::SecretKey::from_bytes(&[seed; 32]))
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_address_lookup()
        .bind_addr(SocketAddr::from((ip, 0)))
        .unwrap()
        .bind()
        .await
        .unwrap();
    let id = iroh::EndpointId::from_bytes(&server.endpoint.to_bytes()).unwrap();
    let target = server
        .sockets()
        .unwrap()
        .into_iter()
        .fold(iroh::EndpointAddr::new(id), |a, s| a.with_ip_addr(s));
    let connect = endpoint.connect(target, gridwork_p2p::ALPN);
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(connection)) => Ok((endpoint, connection)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no handshake within 10 s".into()),
    }
}

/// Whether `connection` gets an answer to a request for `id`.
async fn answered(connection: &iroh::endpoint::Connection, id: gridwork_types::Hash) -> bool {
    let ask = async {
        let (mut send, mut recv) = connection.open_bi().await.ok()?;
        send.write_all(&request(&[id])).await.ok()?;
        send.finish().ok()?;
        recv.read_to_end(16 << 20).await.ok()
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(10), ask).await,
        Ok(Some(answer)) if answer.len() > 4 << 20
    )
}

/// Endpoint keys are free, so connections are capped per address and in all: a stranger's
/// keys from one address get that address's places, the server's last place goes to
/// whoever asks first, and a closed connection's place is given again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_are_capped_per_address_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let (server, announced, ids) = serving_six_chunks(
        dir.path(),
        gridwork_p2p::PeerLimits {
            connections: 3,
            connections_per_address: 2,
            ..gridwork_p2p::PeerLimits::default()
        },
    )
    .await;
    let one = [127, 0, 0, 1];
    let mut held = Vec::new();
    for seed in 10..12 {
        let (endpoint, connection) = dial(&announced, seed, one).await.unwrap();
        assert!(
            answered(&connection, ids[0]).await,
            "key {seed} was not served"
        );
        held.push((endpoint, connection));
    }
    // A third key from the same address is refused (or its connection serves nothing).
    if let Ok((_endpoint, third)) = dial(&announced, 12, one).await {
        assert!(
            !answered(&third, ids[0]).await,
            "a third connection from one address was served"
        );
    }
    // Another address gets the last place; a third address finds the server full.
    let (_e2, two) = dial(&announced, 13, [127, 0, 0, 2]).await.unwrap();
    assert!(answered(&two, ids[1]).await);
    if let Ok((_endpoint, three)) = dial(&announced, 14, [127, 0, 0, 3]).await {
        assert!(
            !answered(&three, ids[0]).await,
            "a connection past the server's cap was served"
        );
    }
    // Closing one gives its place back.
    let (endpoint, connection) = held.pop().unwrap();
    connection.close(0u32.into(), b"done");
    endpoint.close().await;
    let mut again = None;
    for _ in 0..50 {
        if let Ok((endpoint, connection)) = dial(&announced, 15, [127, 0, 0, 3]).await {
            if answered(&connection, ids[2]).await {
                again = Some((endpoint, connection));
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        again.is_some(),
        "a closed connection's place was not given again"
    );
    server.shutdown().await;
}

fn request(ids: &[gridwork_types::Hash]) -> Vec<u8> {
    gridwork_api::frames::encode_fetch_request(ids)
}

/// A peer under `limits` serving six 4 MiB chunks from a store in `dir`: the peer, its
/// announcement and the chunks' ids.
async fn serving_six_chunks(
    dir: &std::path::Path,
    limits: gridwork_p2p::PeerLimits,
) -> (Peer, PeerAddr, Vec<gridwork_types::Hash>) {
    let (store, ids) = filled_store(&dir.join("server"), 6, 4 << 20);
    let server = gridwork_p2p::Peer::bind_with(
        transport_secret(&Keypair::from_seed([1; 32])),
        loopback(),
        Some(store),
        limits,
    )
    .await
    .unwrap();
    let announced = server.announcement(&[]);
    (server, announced, ids)
}

/// A peer that opens streams and never reads their answers holds only its own places: its
/// next request waits, another peer is served at once, and once the stuck answers time out
/// the peer's next request is answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_holds_only_its_own_places() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (server, announced, ids) = serving_six_chunks(
        dir.path(),
        gridwork_p2p::PeerLimits {
            streams_per_peer: 2,
            answer_timeout: Duration::from_secs(3),
            ..gridwork_p2p::PeerLimits::default()
        },
    )
    .await;

    let (_endpoint, greedy) = raw_connection(&announced).await;
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let (mut send, recv) = greedy.open_bi().await.unwrap();
        send.write_all(&request(&ids)).await.unwrap();
        send.finish().unwrap();
        stuck.push(recv);
    }
    // Its third request waits for a place of its own.
    let third = {
        let greedy = greedy.clone();
        let one = ids[0];
        tokio::spawn(async move {
            let (mut send, mut recv) = greedy.open_bi().await.unwrap();
            send.write_all(&request(&[one])).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(16 << 20).await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third stream was answered beside two stuck ones"
    );

    // Another peer is served meanwhile.
    let other = Peer::bind(
        transport_secret(&Keypair::from_seed([2; 32])),
        loopback(),
        None,
    )
    .await
    .unwrap();
    let source = other.source(&announced, "server").unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(20), source.fetch_chunks(&ids[..1]))
        .await
        .expect("another peer was kept waiting")
        .unwrap();
    assert!(matches!(frames[0], gridwork_api::frames::Frame::Chunk(_)));

    // The stuck answers are reset at their timeout; the third is answered.
    let answer = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .expect("the third request was never answered")
        .unwrap()
        .unwrap();
    assert!(answer.len() > 4 << 20);
    for mut recv in stuck {
        assert!(
            recv.read_to_end(64 << 20).await.is_err(),
            "a stuck answer was sent whole"
        );
    }
    server.shutdown().await;
    other.shutdown().await;
}

/// `AnswerHoarder`: one address opens two connections and never reads their answers. It
/// holds only its address's share of the answer places (two of four here), so a peer at
/// another address is answered at once. (The places were shared by all: two connections of
/// one address held every one of them for the answer timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_only_its_share_of_the_answer_places() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (server, announced, ids) = serving_six_chunks(
        dir.path(),
        gridwork_p2p::PeerLimits {
            streams_per_peer: 2,
            answers_at_once: 4,
            answers_per_address: 2,
            request_timeout: Duration::from_secs(3),
            answer_timeout: Duration::from_secs(30),
            ..gridwork_p2p::PeerLimits::default()
        },
    )
    .await;
    let (mut hoarded, mut connections) = (Vec::new(), Vec::new());
    for seed in [42, 43] {
        let (endpoint, connection) = dial(&announced, seed, [127, 0, 0, 1]).await.unwrap();
        for _ in 0..2 {
            let (mut send, recv) = connection.open_bi().await.unwrap();
            send.write_all(&request(&ids)).await.unwrap();
            send.finish().unwrap();
            hoarded.push(recv);
        }
        connections.push((endpoint, connection));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_other, connection) = dial(&announced, 44, [127, 0, 0, 2]).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&request(&ids[..1])).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(16 << 20))
        .await
        .expect("a peer at another address was kept waiting")
        .expect("and reset");
    assert!(answer.len() > 4 << 20);
    drop((hoarded, connections));
    server.shutdown().await;
}

/// The answer places are shared by every peer: a request that cannot get one in time is
/// reset (its peer asks elsewhere) rather than queued behind the peers holding them, so
/// strangers cannot pile up requests without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_no_place_to_be_answered_in_time_is_reset() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (_server, announced, ids) = serving_six_chunks(
        dir.path(),
        gridwork_p2p::PeerLimits {
            answers_at_once: 1,
            request_timeout: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(60),
            ..gridwork_p2p::PeerLimits::default()
        },
    )
    .await;
    // A peer takes the one place with a 24 MiB answer it never reads.
    let (_endpoint, greedy) = raw_connection(&announced).await;
    let (mut send, _stuck) = greedy.open_bi().await.unwrap();
    send.write_all(&request(&ids)).await.unwrap();
    send.finish().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let other = Peer::bind(
        transport_secret(&Keypair::from_seed([2; 32])),
        loopback(),
        None,
    )
    .await
    .unwrap();
    let source = other.source(&announced, "server").unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(20), source.fetch_chunks(&ids[..1]))
        .await
        .expect("the request waited past its place's clock");
    assert!(answered.is_err(), "answered beside a held place");
}
