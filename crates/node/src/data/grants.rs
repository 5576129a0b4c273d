//! Key grants of trees: a tree's data key wrapped for each recipient, kept beside its pin
//! (`DATA_DIR/grants/<cid>.json`).

use gridwork_api::KeyGrant;
use gridwork_transfer::proof_lock;
use gridwork_types::Hash;

use super::{write_durably, DataService};
use crate::NodeError;

/// The most distinct key grants one recipient may hold for one tree.
const MAX_GRANTS_PER_RECIPIENT: usize = 4;

impl DataService {
    /// The key grants of a tree.
    pub fn grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, NodeError> {
        let dir = &self.parts()?.grants_dir;
        let path = dir.join(format!("{cid}.json"));
        match std::fs::read(&path) {
            // A damaged file is an error, never an empty list: the next write would erase
            // every grant.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: format!("the key grants do not parse: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Adds grants to a tree on behalf of a holder of its data key: `proof` is the sender's
    /// [`DataKey::holder_proof`](gridwork_transfer::DataKey::holder_proof) and must open the
    /// lock the tree's first pin set, so nobody without the key can fill the tree's grants
    /// (or slip a wrong one in for a recipient the node will grant to).
    pub fn add_grants_as_holder(
        &self,
        cid: &Hash,
        new: Vec<KeyGrant>,
        proof: &Hash,
    ) -> Result<(), NodeError> {
        let pins = &self.parts()?.pins;
        let lock = {
            let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
            let pin = self
                .read_pin(cid)?
                .ok_or(NodeError::TreeNotPinned { cid: *cid })?;
            match pin.lock {
                Some(lock) => lock,
                // A pin of an older format: the first holder to share claims it.
                None => {
                    let lock = proof_lock(proof);
                    let path = pins.dir.join(format!("{cid}.pin"));
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, pin.encode(&lock))
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .map_err(|e| NodeError::File {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })?;
                    lock
                }
            }
        };
        if proof_lock(proof) != lock {
            return Err(NodeError::NotKeyHolder {
                cid: *cid,
                what: "share its key",
            });
        }
        self.add_grants(cid, new)
    }

    /// Adds grants to a tree (kept beside earlier grants for the same recipient; an
    /// identical one is a no-op), in one write. At most 256 per tree.
    pub(crate) fn add_grants(&self, cid: &Hash, new: Vec<KeyGrant>) -> Result<(), NodeError> {
        let parts = self.parts()?;
        let _guard = parts.grants_lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = &parts.grants_dir;
        if !self.chunk_store()?.has(cid) {
            return Err(NodeError::NotFound {
                what: format!("tree {cid}"),
            });
        }
        let mut grants = self.grants(cid)?;
        // Grants are never replaced: a holder may post a wrong one by mistake, and it must
        // not push out a right one. A recipient tries each of its grants (and checks it
        // against the pin lock). Wraps are deterministic, so a right grant posted again is
        // identical and kept once; each recipient holds at most a few distinct ones, so junk
        // cannot crowd a recipient's grants or cost the node much unwrapping.
        let before = grants.len();
        for grant in new {
            if grants.contains(&grant) {
                continue;
            }
            let held = grants
                .iter()
                .filter(|g| g.recipient == grant.recipient)
                .count();
            if held >= MAX_GRANTS_PER_RECIPIENT {
                return Err(NodeError::TooManyGrants);
            }
            grants.push(grant);
        }
        if grants.len() == before {
            return Ok(());
        }
        if grants.len() > 256 {
            return Err(NodeError::TooManyGrants);
        }
        let file_err = |e: std::io::Error| NodeError::File {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(file_err)?;
        let path = dir.join(format!("{cid}.json"));
        let tmp = path.with_extension("tmp");
        write_durably(&tmp, &serde_json::to_vec(&grants).unwrap_or_default()).map_err(file_err)?;
        std::fs::rename(&tmp, &path).map_err(file_err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
        Ok(())
    }
}
