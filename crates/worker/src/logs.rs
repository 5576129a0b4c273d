//! Streams a running task's `stdout.log` and `stderr.log` to the node, about twice a second,
//! so `gridwork job logs --follow` shows progress while the task runs.
//!
//! Each stream is tailed from the worker's file and appended at the node's size (the node
//! skips bytes it already has, so a retried append is harmless). Text goes out at UTF-8
//! character boundaries; invalid bytes become U+FFFD. When the node's log is full the
//! stream stops; the whole output stays in the task directory. A worker that restarts and
//! runs the task again appends after what the node already holds, with a marker line.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gridwork_api::LogStream;
use gridwork_client::{Client, ClientError, LogPosition};
use gridwork_types::{Hash, Keypair};
use tokio::sync::watch;

/// The most bytes one append carries.
const MAX_APPEND: u64 = 64 * 1024;

/// How often new output goes out.
const INTERVAL: Duration = Duration::from_millis(500);

struct Tail {
    at: LogPosition,
    path: PathBuf,
    /// Bytes of the file read so far.
    read: u64,
    /// Read but not yet sent (an incomplete character, or a failed append).
    pending: Vec<u8>,
    /// Bytes the node holds.
    node_size: u64,
    stopped: bool,
}

/// Tails `dir/stdout.log` and `dir/stderr.log` of the run of `(job, task, attempt)` until
/// `done` turns true, then sends the rest and returns.
pub(crate) async fn stream(
    client: Client,
    key: Keypair,
    dir: PathBuf,
    (job, task, attempt): (Hash, u32, u32),
    mut done: watch::Receiver<bool>,
) {
    let mut tails = Vec::new();
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let at = LogPosition {
            job,
            task,
            attempt,
            stream,
        };
        let me = key.address();
        let node_size = match client
            .task_log(&job, task, Some(&me), Some(attempt), stream, u64::MAX)
            .await
        {
            Ok(log) => log.size,
            Err(e) => {
                tracing::warn!(error = %e, %job, task, "task logs are not streamed");
                return;
            }
        };
        let pending = if node_size > 0 {
            b"\n[gridwork] the worker restarted; the task runs again\n".to_vec()
        } else {
            Vec::new()
        };
        tails.push(Tail {
            at,
            path: dir.join(format!("{}.log", stream.as_str())),
            read: 0,
            pending,
            node_size,
            stopped: false,
        });
    }
    loop {
        let finished = *done.borrow();
        for tail in &mut tails {
            tail.flush(&client, &key, finished).await;
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            changed = done.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

impl Tail {
    /// Sends what the file gained; with `last`, everything including an incomplete character.
    async fn flush(&mut self, client: &Client, key: &Keypair, last: bool) {
        while !self.stopped {
            let more = read_from(&self.path, self.read, MAX_APPEND, &mut self.pending);
            self.read += more;
            let text = take_text(&mut self.pending, last);
            if text.is_empty() {
                return;
            }
            match client.append_log(key, self.at, self.node_size, &text).await {
                Ok(size) => self.node_size = size,
                Err(ClientError::Api { code, message, .. }) if code == "log_full" => {
                    tracing::warn!(%message, job = %self.at.job, task = self.at.task, "task log full on the node");
                    self.stopped = true;
                }
                Err(e) => {
                    // Keep the text for the next try.
                    let mut rest = std::mem::take(&mut self.pending);
                    self.pending = text.into_bytes();
                    self.pending.append(&mut rest);
                    tracing::debug!(error = %e, "log append failed; retrying");
                    return;
                }
            }
            if more < MAX_APPEND {
                return;
            }
        }
    }
}

/// Appends up to `max` bytes of `path` from `offset` to `out`; returns how many.
fn read_from(path: &Path, offset: u64, max: u64, out: &mut Vec<u8>) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    file.take(max).read_to_end(out).map_or(0, |n| n as u64)
}

/// Takes the text at the front of `buf` up to the last complete UTF-8 character (all of it
/// when `all`), replacing invalid bytes.
fn take_text(buf: &mut Vec<u8>, all: bool) -> String {
    let cut = if all {
        buf.len()
    } else {
        buf.len() - incomplete_tail(buf)
    };
    let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
    buf.drain(..cut);
    text
}

/// How many bytes at the end of `buf` start a character that is not complete yet.
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_character_boundaries() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut buf = b"ab".to_vec();
        buf.extend_from_slice(&euro[..2]);
        assert_eq!(take_text(&mut buf, false), "ab");
        assert_eq!(buf, &euro[..2]);
        buf.push(euro[2]);
        buf.push(b'c');
        assert_eq!(take_text(&mut buf, false), "€c");
        assert!(buf.is_empty());
        // Invalid bytes are replaced, and the end of a run flushes an incomplete tail.
        let mut buf = vec![b'x', 0xFF, b'y', 0xE2];
        assert_eq!(take_text(&mut buf, false), "x\u{FFFD}y");
        assert_eq!(take_text(&mut buf, true), "\u{FFFD}");
        assert!(buf.is_empty());
    }
}
