//! Task logs: what the programs of executors and council members print, streamed to the node
//! while they run (off the ledger; see `Node::append_log`).
//!
//! One log per (job, task, attempt, provider, stream), append-only, at most `limit` bytes.
//! A node with a data directory keeps them as files under `logs/<job>/`; one without keeps
//! them in memory. A job's logs go once the job has left the open jobs and nothing was
//! written to them for the retention period ([`TaskLogs::prune`], run with garbage
//! collection): a log carries what a program printed of its inputs, so it is not kept forever.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use gridwork_api::LogStream;
use gridwork_types::{Address, Hash};

/// Names one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LogKey {
    pub(crate) job: Hash,
    pub(crate) task: u32,
    pub(crate) attempt: u32,
    pub(crate) provider: Address,
    pub(crate) stream: LogStream,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The append starts past the end of the log.
    #[error(
        "the log holds {size} bytes; an append must start at or before that (offset {offset})"
    )]
    Gap {
        /// What the node holds.
        size: u64,
        /// Where the append started.
        offset: u64,
    },
    /// The append would pass the size limit.
    #[error(
        "the log is full ({limit} bytes per run and stream); later output stays on the worker"
    )]
    Full {
        /// The limit.
        limit: u64,
    },
    /// The log file failed.
    #[error("task log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) struct TaskLogs {
    root: Option<PathBuf>,
    limit: u64,
    /// In-memory logs (no data directory), or the sizes of file logs seen so far.
    mem: Mutex<HashMap<LogKey, Vec<u8>>>,
    /// When each job's in-memory logs were last written (ms since the epoch).
    written: Mutex<HashMap<Hash, u64>>,
}

/// The most one read returns.
pub(crate) const MAX_READ: u64 = 1 << 20;

impl TaskLogs {
    pub(crate) fn new(root: Option<PathBuf>, limit: u64) -> TaskLogs {
        TaskLogs {
            root,
            limit,
            mem: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, key: &LogKey) -> Option<PathBuf> {
        self.root.as_ref().map(|r| {
            r.join(key.job.to_string()).join(format!(
                "{}-{}-{}-{}.log",
                key.task,
                key.attempt,
                key.provider,
                key.stream.as_str()
            ))
        })
    }

    fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Appends `data` at `offset`; bytes the log already holds are skipped. Returns the size.
    pub(crate) fn append(&self, key: &LogKey, offset: u64, data: &[u8]) -> Result<u64, LogError> {
        // One lock for every log: appends are small and a second apart per run.
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = self.path(key) else {
            let log = mem.entry(*key).or_default();
            let fresh = Self::fresh(log.len() as u64, offset, data, self.limit)?;
            log.extend_from_slice(fresh);
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.job, crate::now_ms());
            return Ok(log.len() as u64);
        };
        let io = Self::io(&path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(&io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(&io)?;
        let size = file.metadata().map_err(&io)?.len();
        let fresh = Self::fresh(size, offset, data, self.limit)?;
        file.write_all(fresh).map_err(&io)?;
        Ok(size + fresh.len() as u64)
    }

    /// The part of `data` (starting at `offset`) that a log of `size` bytes lacks.
    fn fresh(size: u64, offset: u64, data: &[u8], limit: u64) -> Result<&[u8], LogError> {
        if offset > size {
            return Err(LogError::Gap { size, offset });
        }
        let skip = usize::try_from(size - offset).unwrap_or(usize::MAX);
        let fresh = data.get(skip..).unwrap_or_default();
        if size + fresh.len() as u64 > limit {
            return Err(LogError::Full { limit });
        }
        Ok(fresh)
    }

    /// Up to [`MAX_READ`] bytes from `offset`, and the log's size (0 and nothing for a log
    /// nobody wrote).
    pub(crate) fn read(&self, key: &LogKey, offset: u64) -> Result<(Vec<u8>, u64), LogError> {
        let Some(path) = self.path(key) else {
            let mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
            let log = mem.get(key).map(Vec::as_slice).unwrap_or_default();
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
            let end = start.saturating_add(MAX_READ as usize).min(log.len());
            return Ok((log[start..end].to_vec(), log.len() as u64));
        };
        let io = Self::io(&path);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io(e)),
        };
        let size = file.metadata().map_err(&io)?.len();
        let mut out = Vec::new();
        if offset < size {
            file.seek(SeekFrom::Start(offset)).map_err(&io)?;
            file.take(MAX_READ).read_to_end(&mut out).map_err(&io)?;
        }
        Ok((out, size))
    }
}

impl TaskLogs {
    /// Drops the logs of every job that `open` does not name and that nobody wrote to since
    /// `before_ms`; returns how many jobs' logs went.
    pub(crate) fn prune(&self, open: impl Fn(&Hash) -> bool, before_ms: u64) -> u64 {
        let Some(root) = &self.root else {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<Hash> = written
                .iter()
                .filter(|(job, at)| !open(job) && **at < before_ms)
                .map(|(job, _)| *job)
                .collect();
            let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
            mem.retain(|key, _| !gone.contains(&key.job));
            written.retain(|job, _| !gone.contains(job));
            return gone.len() as u64;
        };
        let Ok(dirs) = std::fs::read_dir(root) else {
            return 0;
        };
        let mut pruned = 0;
        for dir in dirs.flatten() {
            let Some(job) = dir
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Hash>().ok())
            else {
                continue;
            };
            if open(&job) {
                continue;
            }
            // The newest write to any of the job's logs.
            let newest = std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .max()
                .unwrap_or(0);
            if newest < before_ms && std::fs::remove_dir_all(dir.path()).is_ok() {
                pruned += 1;
            }
        }
        pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LogKey {
        LogKey {
            job: Hash([1; 32]),
            task: 2,
            attempt: 0,
            provider: Address([3; 20]),
            stream: LogStream::Stdout,
        }
    }

    fn both(limit: u64) -> (tempfile::TempDir, [TaskLogs; 2]) {
        let dir = tempfile::tempdir().unwrap();
        let logs = [
            TaskLogs::new(None, limit),
            TaskLogs::new(Some(dir.path().join("logs")), limit),
        ];
        (dir, logs)
    }

    #[test]
    fn appends_in_order_skip_repeats_and_refuse_gaps() {
        let (_dir, logs) = both(1 << 20);
        for logs in &logs {
            assert_eq!(logs.append(&key(), 0, b"hello ").unwrap(), 6);
            // A retried append that the node already took is accepted once.
            assert_eq!(logs.append(&key(), 0, b"hello ").unwrap(), 6);
            assert_eq!(logs.append(&key(), 3, b"lo world").unwrap(), 11);
            let err = logs.append(&key(), 20, b"x").unwrap_err();
            assert!(matches!(err, LogError::Gap { size: 11, .. }), "{err}");
            assert_eq!(logs.read(&key(), 0).unwrap(), (b"hello world".to_vec(), 11));
            assert_eq!(logs.read(&key(), 6).unwrap(), (b"world".to_vec(), 11));
            assert_eq!(logs.read(&key(), 99).unwrap(), (Vec::new(), 11));
            let other = LogKey {
                stream: LogStream::Stderr,
                ..key()
            };
            assert_eq!(logs.read(&other, 0).unwrap(), (Vec::new(), 0));
        }
    }

    #[test]
    fn logs_of_closed_jobs_go_after_the_retention_and_open_ones_stay() {
        let (_dir, logs) = both(1 << 20);
        for logs in &logs {
            let open_job = LogKey {
                job: Hash([9; 32]),
                ..key()
            };
            logs.append(&key(), 0, b"printed a secret").unwrap();
            logs.append(&open_job, 0, b"still running").unwrap();
            let now = crate::now_ms();
            // Written just now: kept whatever the job.
            assert_eq!(logs.prune(|_| false, now - 60_000), 0);
            assert_eq!(logs.read(&key(), 0).unwrap().1, 16);
            // Past the retention: the closed job's logs go, the open job's stay.
            assert_eq!(logs.prune(|job| *job == open_job.job, now + 60_000), 1);
            assert_eq!(logs.read(&key(), 0).unwrap(), (Vec::new(), 0));
            assert_eq!(logs.read(&open_job, 0).unwrap().1, 13);
        }
    }

    #[test]
    fn a_full_log_refuses_more_and_keeps_what_it_has() {
        let (_dir, logs) = both(8);
        for logs in &logs {
            logs.append(&key(), 0, b"12345").unwrap();
            let err = logs.append(&key(), 5, b"6789").unwrap_err();
            assert!(matches!(err, LogError::Full { limit: 8 }), "{err}");
            assert_eq!(logs.read(&key(), 0).unwrap(), (b"12345".to_vec(), 5));
        }
    }
}
