//! Moving trees in the data plane's format: push only what the node lacks, pull only what
//! the local store lacks, several streams at once, every chunk checked against its id.
//!
//! A push is a pipeline: packing threads seal chunks into a bounded channel; batches of them
//! ask the node which it lacks (one round trip per batch) and upload only those, while the
//! next chunks are being packed; the root object goes last, so a tree the node names is
//! complete. A pull fetches chunks in tree order from one or more [`ChunkSource`]s, checks
//! each against its id once, keeps it in the local store (so an interrupted pull resumes
//! where it stopped) and hands the opened plaintext straight to the file writer.
//!
//! Several sources: the first requests probe each source; afterwards each chunk goes to the
//! source with the lowest expected finishing time (requests in flight over measured rate), so
//! the fastest takes most. A probe has 3 s while another source could be asked: a source that
//! does not answer it (an unreachable peer) is then asked only if no other is left. A chunk
//! that does not match its id is fetched from another source and the source that sent it is
//! not asked again.

mod chunks;
mod keys;
mod outputs;
mod pull;
mod push;
mod sources;
#[cfg(test)]
mod tests;

pub use outputs::{output_key, EmptyOutputs};
pub use pull::pull_tree_from;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gridwork_transfer::{ChunkParams, ChunkStore, NotKept, StoreError, TreeError};
use gridwork_types::{Address, Hash};
use serde::Serialize;

use crate::client::ClientError;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The node failed or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Packing, opening or unpacking failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No source has a chunk the tree needs.
    #[error("no source has chunk {id} (asked: {asked})")]
    Missing {
        /// The chunk.
        id: Hash,
        /// The sources asked, and what each said.
        asked: String,
    },
    /// Nobody granted this key the tree's data key.
    #[error("tree {cid} has no key for {address}; ask its owner to run `gridwork data share {cid} {address}`")]
    NoGrant {
        /// The tree.
        cid: Hash,
        /// Who asked.
        address: Address,
    },
    /// Every key granted to this key is not the tree's (a holder granted a wrong one).
    #[error("the keys granted to {address} for tree {cid} do not open it (a holder shared a wrong key); ask its owner to run `gridwork data share {cid} {address}` again")]
    WrongKeyGranted {
        /// The tree.
        cid: Hash,
        /// Who asked.
        address: Address,
    },
}

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Chunk sizes for file data.
    pub params: ChunkParams,
    /// Requests in flight at once.
    pub streams: usize,
    /// Where the transfer counts its bytes, for a progress display.
    pub progress: Progress,
    /// Push only: also keep the sealed chunks in this store (a worker that serves its
    /// outputs to peers).
    pub keep: Option<ChunkStore>,
    /// Pull only: the journal of files written and synced (see `journal.rs`): a pull run
    /// again with the same journal skips them. None: a resumed pull writes every file again,
    /// from the chunks its local store kept.
    pub journal: Option<std::path::PathBuf>,
    /// Pull only: bytes of written files between checkpoints (a `syncfs` and a journal
    /// line per file), and between trims of the local store.
    pub checkpoint_bytes: u64,
    /// Pull only: at each checkpoint, trim the local store to this many bytes, least
    /// recently used first (chunks of files not yet checkpointed stay).
    pub cache_max_bytes: Option<u64>,
    /// Push only: the tree's [`PackIndex`](gridwork_transfer::PackIndex) from the last push.
    /// Files that look as it knows them (and whose chunks the node still has) are not read
    /// again; a successful push writes it anew. None: every file is read.
    pub index: Option<std::path::PathBuf>,
    /// Pull only: fetched chunks go to their files only, not also to the local store (a
    /// chunk the tree names twice aside), so each byte is written once; a pull run again into
    /// the same directory finds the chunks a cut-off pull finished in the files themselves
    /// (re-cut, re-sealed and compared with the manifest's ids). Off: fetched chunks are kept
    /// in the local store (a worker's cache that serves peers) and a resumed pull takes them
    /// from there.
    pub resume_from_files: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            params: ChunkParams::DEFAULT,
            streams: 8,
            progress: Progress::default(),
            keep: None,
            journal: None,
            checkpoint_bytes: 1 << 30,
            cache_max_bytes: None,
            index: None,
            resume_from_files: false,
        }
    }
}

impl TransferOptions {
    /// Default options with `streams` requests in flight.
    pub fn with_streams(streams: usize) -> TransferOptions {
        TransferOptions {
            streams,
            ..TransferOptions::default()
        }
    }
}

/// File bytes a transfer has handled, out of how many; shared with whoever displays them.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<ProgressCounts>);

#[derive(Debug, Default)]
struct ProgressCounts {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// File bytes packed (push) or written (pull) so far.
    pub fn done(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    /// File bytes in the tree (0 until known).
    pub fn total(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.done.fetch_add(n, Ordering::Relaxed);
    }

    fn set_total(&self, n: u64) {
        self.0.total.store(n, Ordering::Relaxed);
    }
}

/// Request sizes that adapt to measured throughput: a request should take between 50 and
/// 500 ms at the rate it achieved, so a size doubles after a full request that finished
/// sooner and halves after one that took longer, between 256 KiB and 16 MiB. Small requests
/// keep a slow link responsive; large ones spread per-request costs on a fast one.
#[derive(Debug)]
struct Sizer {
    target: AtomicU64,
}

impl Sizer {
    const MIN: u64 = 256 * 1024;
    const MAX: u64 = 16 * 1024 * 1024;

    fn new() -> Sizer {
        Sizer {
            target: AtomicU64::new(1024 * 1024),
        }
    }

    fn target(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    fn observe(&self, bytes: u64, seconds: f64) {
        let target = self.target();
        if seconds < 0.05 && bytes >= target / 2 {
            self.target
                .store((target * 2).min(Sizer::MAX), Ordering::Relaxed);
        } else if seconds > 0.5 {
            self.target
                .store((target / 2).max(Sizer::MIN), Ordering::Relaxed);
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The tree's content id.
    pub cid: Hash,
    /// Files in the tree.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks of the tree.
    pub chunks: u64,
    /// Files not read again: unchanged since the last push (see [`TransferOptions::index`]).
    pub unchanged_files: u64,
    /// Chunks actually sent.
    pub chunks_sent: u64,
    /// Bytes actually sent.
    pub bytes_sent: u64,
    /// The request size the transfer settled on (adapted to measured throughput).
    pub request_bytes: u64,
    /// The tree pushed before (from [`TransferOptions::index`]) whose pin the node still
    /// kept: the pin named only the chunk ids that changed since, and the index's chunks were
    /// not asked about one by one.
    pub pinned_from: Option<Hash>,
    /// Until when the node keeps the tree (ms since the epoch; each push pins it again).
    pub pinned_until_ms: u64,
    /// Bytes of pinned trees the node charges the pushing account, this one included.
    pub account_pinned_bytes: u64,
    /// The most the node lets the account keep pinned (none: no limit).
    pub account_quota_bytes: Option<u64>,
    /// What a pull of the tree will not give back as it was (setuid bits, device nodes,
    /// sockets), in path order: a push tells its user ([`NotKept`] displays as a sentence).
    pub not_kept: Vec<NotKept>,
}

/// What the node answered a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Pinned {
    /// Until when it keeps the tree (ms since the epoch).
    pub until_ms: u64,
    /// Bytes of pinned trees it charges the signer, this one included.
    #[serde(default)]
    pub account_pinned_bytes: u64,
    /// The signer's quota of pinned bytes (none: no limit).
    #[serde(default)]
    pub account_quota_bytes: Option<u64>,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// The tree's content id.
    pub cid: Hash,
    /// Files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks fetched from sources (the rest came from the local store).
    pub chunks_received: u64,
    /// Bytes fetched.
    pub bytes_received: u64,
    /// File bytes already in place, not fetched: files the journal lists, and the chunks a
    /// cut-off pull finished (see [`TransferOptions::resume_from_files`]).
    pub bytes_in_place: u64,
    /// What each source did.
    pub sources: Vec<SourceReport>,
    /// The request size the transfer settled on (adapted to measured throughput).
    pub request_bytes: u64,
}

/// What one source did during a pull.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The source.
    pub source: String,
    /// Chunks it delivered that matched their ids.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Chunks it sent that did not match their ids (it was not asked again).
    pub rejected: u64,
    /// Requests that failed (unreachable, refused, malformed).
    pub failed: u64,
    /// Chunks it said it does not have.
    pub lacked: u64,
}

/// Runs blocking work (hashing, sealing, file I/O) off the async threads that move bytes.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(op).await.map_err(|e| {
        DataError::Store(StoreError::Io {
            path: "transfer worker".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?
}
