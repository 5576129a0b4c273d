//! The node's key, key grants of trees, and the hand-off of input keys: a requester grants its inputs' data keys
//! to the node, which grants them on to each task's executor and council when the auction
//! closes (and again at start-up for tasks running then).

use super::*;

/// The node's key from `path` (hex of its secret seed), created (readable by the owner only)
/// if missing.
pub(super) fn load_or_create_key(path: &Path) -> Result<Keypair, NodeError> {
    let err = |message: String| NodeError::File {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // The key unwraps every input key granted to this node: it is for its owner only.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "the node key is readable by others (mode {:o}); `chmod 600` it (and consider it exposed)",
                    mode & 0o777
                )));
            }
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err("not a node key (64 hex digits); move it away to make a new one".into())
                })?;
            Ok(Keypair::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = Keypair::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            file.write_all(hex::encode(key.seed()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The most distinct key grants one recipient may hold for one tree.
pub(super) const MAX_GRANTS_PER_RECIPIENT: usize = 4;

impl Node {
    /// The key grants of a tree.
    pub fn grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, NodeError> {
        let dir = self
            .shared
            .grants_dir
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?;
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
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
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
    pub(super) fn add_grants(&self, cid: &Hash, new: Vec<KeyGrant>) -> Result<(), NodeError> {
        let _guard = self
            .shared
            .grants_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = self
            .shared
            .grants_dir
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?;
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

    /// Hands input keys to each task's executor and council as blocks commit, on a thread of
    /// its own subscribed to committed blocks: block production does no file work for it. A
    /// hand-off that falls a ring of blocks behind catches up as at start-up (every running
    /// task; recipients that hold a grant are skipped). Workers ask again for a key that is
    /// not there yet. Stops with [`Node::shutdown`].
    pub fn spawn_key_handoff(&self) -> JoinHandle<()> {
        use tokio::sync::broadcast::error::TryRecvError;
        let node = self.clone();
        let mut blocks = self.shared.events.subscribe();
        std::thread::Builder::new()
            .name("gridwork-key-handoff".into())
            .spawn(move || {
                while !node.shared.stop.load(Ordering::Relaxed) {
                    match blocks.try_recv() {
                        Ok(block) => node.grant_inputs(&block),
                        Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(5)),
                        Err(TryRecvError::Lagged(_)) => node.grant_running_tasks(),
                        Err(TryRecvError::Closed) => break,
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the key hand-off thread: {e}"))
    }

    /// For every auction the block closed, wraps the data keys of the job's inputs that were
    /// granted to this node for the executor and the council, so they can fetch and decrypt
    /// them (and nobody else can). Inputs not granted to the node are the requester's to
    /// share. Failures are logged: the worker retries and the requester can share by hand.
    pub(super) fn grant_inputs(&self, block: &BlockEvent) {
        let closed = block
            .events
            .iter()
            .chain(block.receipts.iter().flat_map(|r| r.events.iter()))
            .filter_map(|e| match e {
                Event::AuctionClosed {
                    job,
                    executor,
                    council,
                    ..
                } => Some((
                    *job,
                    std::iter::once(*executor).chain(council.clone()).collect(),
                )),
                // The council is drawn a block after the auction (and again for silent
                // members' seats).
                Event::CouncilDrawn { job, council, .. } => Some((*job, council.clone())),
                _ => None,
            })
            .collect();
        self.grant_to_assigned(closed);
    }

    /// Grants the inputs of every task that is running now (committing or revealing) to its
    /// executor and council. A node killed between a block's commit and its hand-off would
    /// otherwise leave those workers without keys; at start-up this catches up (recipients
    /// that already hold a grant are skipped, so it is idempotent).
    pub(super) fn grant_running_tasks(&self) {
        let running = {
            let inner = self.lock();
            inner
                .state
                .jobs()
                .filter(|(_, j)| !j.finished && !j.prescription.data.is_empty())
                .flat_map(|(id, _)| inner.state.tasks_of(id))
                .filter(|(_, t)| {
                    matches!(
                        t.phase,
                        Phase::Committing | Phase::Revealing | Phase::Judging
                    )
                })
                .map(|(k, t)| {
                    (
                        k.job,
                        t.executor.iter().chain(&t.council).copied().collect(),
                    )
                })
                .collect()
        };
        self.grant_to_assigned(running);
    }

    /// The data key of input `cid` shared with this node whose claim for `requester` is
    /// `claim`, if there is one.
    pub(super) fn input_key(
        &self,
        cid: &Hash,
        claim: &Hash,
        requester: &Address,
    ) -> Option<DataKey> {
        let me = self.shared.key.address();
        let grants = match self.grants(cid) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, %cid, "cannot read the grants of an input");
                return None;
            }
        };
        grants
            .iter()
            .filter(|g| g.recipient == me)
            .filter_map(|g| unwrap_key(g, &self.shared.key))
            .find(|key| key.input_claim(cid, requester) == *claim)
    }

    /// Admission of a job on a node with a data plane: every input's key must have been
    /// shared with the node, and the job's claim must prove that the requester holds it.
    /// (The hand-off at auction close checks again; this refuses a thief's job, or an honest
    /// mistake, before any provider is assigned work it could not do.)
    pub(super) fn check_inputs(
        &self,
        inputs: &[DataInput],
        requester: &Address,
    ) -> Result<(), AdmitError> {
        if self.shared.grants_dir.is_none() {
            return Ok(());
        }
        for DataInput { cid, claim } in inputs {
            if self.input_key(cid, claim, requester).is_none() {
                let shared = self
                    .grants(cid)
                    .is_ok_and(|g| g.iter().any(|g| g.recipient == self.shared.key.address()));
                return Err(AdmitError::InputNotHeld {
                    cid: *cid,
                    why: if shared {
                        "the job's claim that its requester holds the tree's key does not check out"
                    } else {
                        "its key was never shared with this node"
                    },
                });
            }
        }
        Ok(())
    }

    /// Wraps the inputs of each `(job, workers)` for those workers.
    pub(super) fn grant_to_assigned(&self, assigned: Vec<(Hash, Vec<Address>)>) {
        if self.shared.grants_dir.is_none() {
            return;
        }
        // One unwrap per input of a job, however many of its tasks closed at once.
        let mut keys: HashMap<(Hash, Hash), Option<DataKey>> = HashMap::new();
        for (job, workers) in assigned {
            let (inputs, requester, recipients) = {
                let inner = self.lock();
                let Some(j) = inner.state.job(&job) else {
                    continue;
                };
                let recipients: Vec<PublicKey> = workers
                    .iter()
                    .filter_map(|a| inner.state.account(a).public_key)
                    .collect();
                (j.prescription.data.clone(), j.requester, recipients)
            };
            for DataInput { cid, claim } in inputs {
                // Only a key the requester proved, in the job, that it holds: a job naming
                // somebody else's tree gets nothing of it.
                let key = keys
                    .entry((job, cid))
                    .or_insert_with(|| self.input_key(&cid, &claim, &requester));
                let Some(key) = key.clone() else {
                    tracing::warn!(%cid, %job, %requester, "not handing out an input's key: the job's claim to hold it does not check out (or the key was not shared with this node)");
                    continue;
                };
                // Wraps are deterministic, so a recipient that already has this node's grant
                // gets the identical grant (a no-op). A recipient holding only somebody else's
                // grant (possibly a wrong key planted by a holder) still gets the right one.
                let new: Vec<KeyGrant> = recipients.iter().map(|r| wrap_key(&key, r)).collect();
                if let Err(e) = self.add_grants(&cid, new) {
                    tracing::warn!(error = %e, %cid, "cannot grant an input's key");
                }
            }
        }
    }
}
