//! The key service: the node's key, and the hand-off of input keys. A requester grants its
//! inputs' data keys to the node, which grants them on to each task's executor and council
//! when the auction closes (and again at start-up for tasks running then), on a thread of
//! its own subscribed to committed blocks. The grants themselves are the data service's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gridwork_api::KeyGrant;
use gridwork_protocol::{Event, Phase};
use gridwork_transfer::{unwrap_key, wrap_key, DataKey};
use gridwork_types::{Address, DataInput, Hash, Keypair, PublicKey};

use crate::data::DataService;
use crate::ledger::{Committed, Ledger};
use crate::{AdmitError, NodeError};

/// The node's key from `path` (hex of its secret seed), created (readable by the owner only)
/// if missing.
pub(crate) fn load_or_create_key(path: &Path) -> Result<Keypair, NodeError> {
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

/// The key service. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Keys {
    shared: Arc<KeysShared>,
}

struct KeysShared {
    /// The node's own key: requesters grant it their inputs' data keys, and it grants them
    /// on to each task's executor and council.
    key: Keypair,
    /// Where grants are read and written.
    data: DataService,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({})", self.shared.key.address())
    }
}

impl Keys {
    /// The key service of a node holding `key`, its grants in `data`.
    pub(crate) fn new(key: Keypair, data: DataService) -> Keys {
        Keys {
            shared: Arc::new(KeysShared { key, data }),
        }
    }

    /// The node's public key (`node_key` in `GET /v1/chain`): data-plane requests are signed
    /// for it and holder proofs made for it.
    pub fn public_key(&self) -> PublicKey {
        self.shared.key.public()
    }

    /// A secret derived from the node's key for `context` (a BLAKE3 `derive_key` context),
    /// such as its peer transport key: the node needs no second secret, and the key itself
    /// never leaves it.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.shared.key.seed())
    }

    /// Hands input keys to each task's executor and council as blocks commit, on a thread of
    /// its own subscribed to committed blocks: block production does no file work for it. A
    /// hand-off that falls a ring of blocks behind catches up as at start-up (every running
    /// task; recipients that hold a grant are skipped). Workers ask again for a key that is
    /// not there yet. Stops when `stop` is set.
    pub fn spawn_handoff(&self, ledger: Ledger, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        use tokio::sync::broadcast::error::TryRecvError;
        let keys = self.clone();
        let mut blocks = ledger.subscribe();
        std::thread::Builder::new()
            .name("gridwork-key-handoff".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match blocks.try_recv() {
                        Ok(block) => keys.grant_inputs(&ledger, &block),
                        Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(5)),
                        Err(TryRecvError::Lagged(_)) => keys.grant_running_tasks(&ledger),
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
    pub fn grant_inputs(&self, ledger: &Ledger, block: &Committed) {
        let closed = block
            .all_events()
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
                // A service's seats, drawn as they open: its inputs go to its council.
                Event::ServiceCouncil { service, council } => Some((*service, council.clone())),
                _ => None,
            })
            .collect();
        self.grant_to_assigned(ledger, closed);
    }

    /// Grants the inputs of every task that is running now (committing or revealing) to its
    /// executor and council. A node killed between a block's commit and its hand-off would
    /// otherwise leave those workers without keys; at start-up this catches up (recipients
    /// that already hold a grant are skipped, so it is idempotent).
    pub fn grant_running_tasks(&self, ledger: &Ledger) {
        let running = ledger.with_state(|state, _| {
            state
                .jobs()
                .filter(|(_, j)| !j.finished && !j.prescription.data.is_empty())
                .flat_map(|(id, _)| state.tasks_of(id))
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
                .chain(
                    state
                        .services()
                        .filter(|(_, s)| !s.status.is_ended() && !s.spec.data.is_empty())
                        .map(|(id, s)| (*id, s.council.clone())),
                )
                .collect()
        });
        self.grant_to_assigned(ledger, running);
    }

    /// The data key of input `cid` shared with this node whose claim for `requester` is
    /// `claim`, if there is one.
    fn input_key(&self, cid: &Hash, claim: &Hash, requester: &Address) -> Option<DataKey> {
        let me = self.shared.key.address();
        let grants = match self.shared.data.grants(cid) {
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
    pub fn check_inputs(
        &self,
        inputs: &[DataInput],
        requester: &Address,
    ) -> Result<(), AdmitError> {
        if !self.shared.data.is_present() {
            return Ok(());
        }
        for DataInput { cid, claim, .. } in inputs {
            if self.input_key(cid, claim, requester).is_none() {
                let shared = self
                    .shared
                    .data
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

    /// Wraps the inputs of each `(job or service, workers)` for those workers.
    fn grant_to_assigned(&self, ledger: &Ledger, assigned: Vec<(Hash, Vec<Address>)>) {
        if !self.shared.data.is_present() {
            return;
        }
        // One unwrap per input of a job, however many of its tasks closed at once.
        let mut keys: HashMap<(Hash, Hash), Option<DataKey>> = HashMap::new();
        for (job, workers) in assigned {
            let found = ledger.with_state(|state, _| {
                let (data, requester) = match (state.job(&job), state.service(&job)) {
                    (Some(j), _) => (j.prescription.data.clone(), j.requester),
                    (None, Some(s)) => (s.spec.data.clone(), s.requester),
                    (None, None) => return None,
                };
                let recipients: Vec<PublicKey> = workers
                    .iter()
                    .filter_map(|a| state.account(a).public_key)
                    .collect();
                Some((data, requester, recipients))
            });
            let Some((inputs, requester, recipients)) = found else {
                continue;
            };
            for DataInput { cid, claim, .. } in inputs {
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
                if let Err(e) = self.shared.data.add_grants(&cid, new) {
                    tracing::warn!(error = %e, %cid, "cannot grant an input's key");
                }
            }
        }
    }
}
