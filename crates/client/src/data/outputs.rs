//! The keys of runs' outputs, and what a run that left nothing reveals.
//!
//! A run's outputs are sealed under a convergent key: over the job, task, attempt and round,
//! and the outputs' plaintext digest, so runs of one attempt that agree produce the same
//! content id (what the ledger compares under exact-hash equivalence), and an id revealed
//! in one attempt or round is worth nothing in another. Everything in it is public but the
//! outputs, so anyone can tell the content id of *empty* outputs: `job status` says so when
//! that is the accepted result.

use gridwork_transfer::{pack, tree_digest, ChunkParams, ChunkStore, DataKey};
use gridwork_types::Hash;

use super::DataError;

/// The key a run of (`job`, `task`, `attempt`, `round`) seals outputs of plaintext digest
/// `digest` (`gridwork_transfer::tree_digest`) under.
pub fn output_key(job: &Hash, task: u32, attempt: u32, round: u8, digest: &Hash) -> DataKey {
    let mut context = job.as_bytes().to_vec();
    context.extend_from_slice(&task.to_le_bytes());
    context.extend_from_slice(&attempt.to_le_bytes());
    context.push(round);
    DataKey::convergent(&context, digest)
}

/// The content ids of empty outputs, as a worker pushes them (default chunk sizes): an empty
/// directory packed in a scratch directory (removed on drop), sending nothing. One serves
/// every task of a job (`job status`): the scan and the store are set up once.
pub struct EmptyOutputs {
    scratch: std::path::PathBuf,
    digest: Hash,
    store: ChunkStore,
}

impl EmptyOutputs {
    /// A scratch directory with an empty outputs directory and a chunk store.
    pub fn new() -> Result<EmptyOutputs, DataError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch =
            std::env::temp_dir().join(format!("gridwork-empty-{}-{n}", std::process::id()));
        let empty = scratch.join("outputs");
        std::fs::create_dir_all(&empty).map_err(|source| gridwork_transfer::TreeError::Io {
            path: empty.display().to_string(),
            source,
        })?;
        // Built before the checks below, so the scratch directory goes however they end.
        let mut outputs = EmptyOutputs {
            scratch,
            digest: Hash([0; 32]),
            store: ChunkStore::open(empty.with_file_name("chunks"), None)?,
        };
        outputs.digest = tree_digest(&empty)?;
        Ok(outputs)
    }

    /// The content id of empty outputs for (`job`, `task`, `attempt`, `round`).
    pub fn cid(&self, job: &Hash, task: u32, attempt: u32, round: u8) -> Result<Hash, DataError> {
        let key = output_key(job, task, attempt, round, &self.digest);
        let (cid, _) = pack(
            &self.scratch.join("outputs"),
            &key,
            ChunkParams::DEFAULT,
            &self.store,
        )?;
        Ok(cid)
    }
}

impl Drop for EmptyOutputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
