//! The task records: what the node keeps off the ledger for the market, providers' reasons
//! for not bidding and task logs, each written and read only by the parties. Their state is
//! their own; who the parties are is read from the ledger.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use gridwork_api::{Decline, LogStream, PostLog, TaskLog};
use gridwork_types::{Address, Hash, PublicKey, Signature};

use crate::ledger::Ledger;
use crate::logs::{LogKey, TaskLogs};
use crate::NodeError;

/// The task records. Cheap to clone; clones share them.
#[derive(Clone)]
pub struct TaskRecords {
    shared: Arc<RecordsShared>,
}

struct RecordsShared {
    /// Why providers declined jobs (newest per provider, bounded per job).
    declines: Mutex<HashMap<Hash, Vec<Decline>>>,
    /// What task programs printed.
    logs: TaskLogs,
    /// How long a closed job's logs are kept after their last write.
    log_retention_ms: u64,
    /// The node's key, which declines are signed for.
    node_key: PublicKey,
    ledger: Ledger,
}

impl std::fmt::Debug for TaskRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskRecords")
    }
}

impl TaskRecords {
    /// Records kept in `logs`, for the node holding `node_key`.
    pub(crate) fn new(
        ledger: Ledger,
        node_key: PublicKey,
        logs: TaskLogs,
        log_retention_ms: u64,
    ) -> TaskRecords {
        TaskRecords {
            shared: Arc::new(RecordsShared {
                declines: Mutex::new(HashMap::new()),
                logs,
                log_retention_ms,
                node_key,
                ledger,
            }),
        }
    }

    /// The reasons providers gave for not bidding on `job`.
    pub fn declines(&self, job: &Hash) -> Vec<Decline> {
        self.shared
            .declines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Drops the logs of jobs closed and unwritten since `now_ms` less the retention;
    /// returns how many jobs' logs went.
    pub fn prune_logs(&self, now_ms: u64) -> u64 {
        let open: HashSet<Hash> = self.shared.ledger.with_state(|state, _| {
            state
                .jobs()
                .filter(|(_, j)| !j.finished && !j.cancelled)
                .map(|(id, _)| *id)
                .collect()
        });
        self.shared.logs.prune(
            |job| open.contains(job),
            now_ms.saturating_sub(self.shared.log_retention_ms),
        )
    }

    /// Records a provider's reason for not bidding on a job (checked: signed by the
    /// provider's key, the job exists). Keeps the newest reason per provider, 100 per job.
    pub fn decline(
        &self,
        job: &Hash,
        public_key: &PublicKey,
        reason: &str,
        time_ms: u64,
        signature: &Signature,
    ) -> Result<(), NodeError> {
        let message = gridwork_api::decline_message(&self.shared.node_key, job, reason, time_ms);
        public_key
            .verify(&message, signature)
            .map_err(|_| NodeError::BadSignature { what: "decline" })?;
        let provider = public_key.address();
        let (job_open, registered) = self.shared.ledger.with_state(|state, _| {
            (
                state.job(job).is_some(),
                state.provider(&provider).is_some(),
            )
        });
        if !job_open {
            return Err(NodeError::NotFound {
                what: format!("job {job}"),
            });
        }
        // Strangers cannot crowd out real reasons: a provider is registered and staked.
        if !registered {
            return Err(NodeError::NotAProvider { address: provider });
        }
        let reason: String = reason.chars().take(500).collect();
        let mut declines = self
            .shared
            .declines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Reasons for jobs that left the hot state go with them (a look-up per job that has
        // reasons, not a pass over every open job).
        self.shared.ledger.with_state(|state, _| {
            declines.retain(|id, _| state.job(id).is_some());
        });
        let list = declines.entry(*job).or_default();
        // A replayed older decline does not overwrite the provider's newer reason.
        if list
            .iter()
            .any(|d| d.provider == provider && d.time_ms >= time_ms)
        {
            return Ok(());
        }
        list.retain(|d| d.provider != provider);
        list.push(Decline {
            provider,
            reason,
            time_ms,
        });
        if list.len() > 100 {
            list.remove(0);
        }
        Ok(())
    }

    /// Appends to the log of a task run: `public_key` must be the executor's or a council
    /// member's of `post.attempt`, the current attempt, and `signature` its signature over
    /// [`gridwork_api::log_message`]. Returns the log's size.
    pub fn append_log(
        &self,
        job: &Hash,
        task: u32,
        post: &PostLog,
        public_key: &PublicKey,
        signature: &Signature,
    ) -> Result<u64, NodeError> {
        let message = gridwork_api::log_message(
            job,
            task,
            post.attempt,
            post.stream,
            post.offset,
            &post.data,
        );
        public_key
            .verify(&message, signature)
            .map_err(|_| NodeError::BadSignature { what: "log" })?;
        let provider = public_key.address();
        let (attempt, executor, council) = self.task_assignment(job, task)?;
        let assigned = executor == Some(provider) || council.contains(&provider);
        if attempt != post.attempt || !assigned {
            return Err(NodeError::NotAssigned {
                provider,
                task,
                attempt: post.attempt,
            });
        }
        let key = LogKey {
            job: *job,
            task,
            attempt: post.attempt,
            provider,
            stream: post.stream,
        };
        Ok(self
            .shared
            .logs
            .append(&key, post.offset, post.data.as_bytes())?)
    }

    /// A task's current attempt, executor and council.
    fn task_assignment(
        &self,
        job: &Hash,
        task: u32,
    ) -> Result<(u32, Option<Address>, Vec<Address>), NodeError> {
        self.task_parties(job, task)
            .map(|(attempt, executor, council, _)| (attempt, executor, council))
    }

    /// A task's current attempt, executor, council and its job's requester.
    fn task_parties(
        &self,
        job: &Hash,
        task: u32,
    ) -> Result<(u32, Option<Address>, Vec<Address>, Address), NodeError> {
        let key = gridwork_protocol::TaskKey {
            job: *job,
            index: task,
        };
        let not_found = || NodeError::NotFound {
            what: format!("task {task} of job {job}"),
        };
        let ledger = &self.shared.ledger;
        let found = ledger.with_state(|state, archiving| {
            let archiving = archiving
                .iter()
                .find(|(id, _)| id == job)
                .and_then(|(_, a)| Some((a.tasks.get(task as usize)?, a.job.requester)));
            let hot = state.task(&key).zip(state.job(job).map(|j| j.requester));
            hot.or(archiving)
                .map(|(t, requester)| (t.attempt, t.executor, t.council.clone(), requester))
        });
        if let Some(found) = found {
            return Ok(found);
        }
        // A finished job's tasks are in the archive.
        let archived = ledger.store().archived_job(job)?.ok_or_else(not_found)?;
        let t = archived.tasks.get(task as usize).ok_or_else(not_found)?;
        Ok((
            t.attempt,
            t.executor,
            t.council.clone(),
            archived.job.requester,
        ))
    }

    /// Part of a task run's log from `offset`, read by `reader`. `provider` defaults to the
    /// task's executor and `attempt` to its current attempt.
    ///
    /// A log is what a program printed of its (decrypted) inputs, so only the job's requester,
    /// the provider who wrote it, and the task's current executor and council may read it.
    #[allow(clippy::too_many_arguments)]
    pub fn task_log(
        &self,
        job: &Hash,
        task: u32,
        provider: Option<Address>,
        attempt: Option<u32>,
        stream: LogStream,
        offset: u64,
        reader: &Address,
    ) -> Result<TaskLog, NodeError> {
        let (current, executor, council, requester) = self.task_parties(job, task)?;
        let provider = provider.or(executor).ok_or_else(|| NodeError::NotFound {
            what: format!(
                "an executor of task {task} (the auction is still open); name --provider"
            ),
        })?;
        let allowed = *reader == requester
            || *reader == provider
            || executor == Some(*reader)
            || council.contains(reader);
        if !allowed {
            return Err(NodeError::NotPermitted {
                reader: *reader,
                what: format!("the logs of task {task} of job {job}"),
            });
        }
        let attempt = attempt.unwrap_or(current);
        let key = LogKey {
            job: *job,
            task,
            attempt,
            provider,
            stream,
        };
        let (bytes, size) = self.shared.logs.read(&key, offset)?;
        // Cut at a character boundary; the rest comes with the next read.
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
        };
        Ok(TaskLog {
            job: *job,
            task,
            attempt,
            provider,
            stream,
            offset,
            data: text,
            size,
        })
    }
}
