//! Shared by the tests: a dev node on a loopback port, chunk sources that misbehave (forging, slow,
//! silent, cut off, poisoned), and trees to push.

use std::time::Duration;

use gridwork_api::frames::Frame;
use gridwork_client::{ChunkSource, Client, SourceError, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::dev_keypair;
use gridwork_types::{Amount, Keypair, SignedTx, Transaction, TxKind};

pub(super) const WAIT: Duration = Duration::from_secs(20);

/// A dev node on a free loopback port with its producer running.
pub(super) struct TestNode {
    pub(super) client: Client,
    pub(super) node: Node,
    pub(super) _dir: tempfile::TempDir,
}

impl TestNode {
    pub(super) async fn start() -> TestNode {
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

    pub(super) fn chain_id(&self) -> String {
        self.node.ledger().chain_id().to_string()
    }

    pub(super) fn sign(&self, key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
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

/// A source that flips a byte of every chunk it serves (a Byzantine peer).
pub(super) struct ForgingSource<'a>(pub(super) &'a Client);

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
pub(super) struct SlowSource<'a> {
    pub(super) inner: &'a Client,
    pub(super) delay: Duration,
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
pub(super) struct BlackHoleSource;

impl ChunkSource for BlackHoleSource {
    fn label(&self) -> String {
        "black hole".into()
    }

    fn fetch_chunks<'a>(&'a self, _ids: &'a [gridwork_types::Hash]) -> gridwork_client::Fetch<'a> {
        Box::pin(std::future::pending())
    }
}

/// A source whose connection is cut once a request would take it past `left` chunks.
pub(super) struct CutSource<'a> {
    pub(super) inner: &'a Client,
    pub(super) left: std::sync::atomic::AtomicI64,
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
pub(super) async fn indexed_dataset(
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

/// A tree of `files` incompressible files of 100 kB pushed to `t` under small chunks; returns
/// its source dir, id, key and options.
pub(super) async fn pushed_tree(
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

pub(super) fn same_files(a: &std::path::Path, b: &std::path::Path) {
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

/// A source that fails, after a second, every request that asks for `poison`, and records
/// every id it is asked for.
pub(super) struct PoisonedSource<'a> {
    pub(super) inner: &'a Client,
    pub(super) poison: Option<gridwork_types::Hash>,
    pub(super) asked: std::sync::Mutex<Vec<gridwork_types::Hash>>,
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
