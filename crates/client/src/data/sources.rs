//! The sources of a pull: which one gets the next request (probes, expected finishing time), and
//! each answer checked against its ids.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gridwork_api::frames::{ChunkSource, Frame, SourceError};
use gridwork_transfer::{ChunkStore, VerifiedChunk};
use gridwork_types::Hash;

use super::{blocking, DataError, SourceReport};

/// How long a probe (one chunk from a source not yet measured) may take while another source
/// could be asked instead; past it the source counts as failing for the rest of the pull.
const PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// The sources of a pull, with what each has done so far.
pub(super) struct Sources<'a> {
    sources: &'a [&'a dyn ChunkSource],
    state: Mutex<Vec<SourceState>>,
    /// Where verified chunks go as soon as they are checked, so a pull cut off later keeps
    /// them.
    local: ChunkStore,
    /// None: every verified chunk goes there. Some: only the chunks the tree names more than
    /// once; the others are held until opened for the writer, and put there only if the pull
    /// fails first (fetched before a cut, they are not fetched again).
    unwritten: Arc<Mutex<Option<Unwritten>>>,
    /// A permit per answer being checked: checks run on to the end when the pull that asked
    /// stops, so a failed pull waits for them before it keeps what they held.
    checks: Arc<tokio::sync::Semaphore>,
}

/// Answers checked at once, at most (more than any pull has in flight).
const CHECKS: u32 = 1 << 16;

/// Chunks a pull that writes only its files holds between fetch and file.
struct Unwritten {
    /// Chunks the tree names more than once: kept in the local store.
    again: HashSet<Hash>,
    /// Fetched, not yet opened for the writer.
    held: HashMap<Hash, VerifiedChunk>,
}

#[derive(Debug, Default, Clone)]
struct SourceState {
    in_flight: u64,
    requests: u64,
    chunks: u64,
    bytes: u64,
    seconds: f64,
    rejected: u64,
    failed: u64,
    lacked: u64,
    /// Failed requests since the last answer.
    failing: u64,
}

impl<'a> Sources<'a> {
    pub(super) fn new(sources: &'a [&'a dyn ChunkSource], local: &ChunkStore) -> Sources<'a> {
        Sources {
            sources,
            state: Mutex::new(vec![SourceState::default(); sources.len()]),
            local: local.clone(),
            unwritten: Arc::new(Mutex::new(None)),
            checks: Arc::new(tokio::sync::Semaphore::new(CHECKS as usize)),
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, Option<Unwritten>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, keep only the chunks in `again` in the local store, and hold the others
    /// until [`Sources::opened`].
    pub(super) fn keep_only(&self, again: HashSet<Hash>) {
        *self.unwritten() = Some(Unwritten {
            again,
            held: HashMap::new(),
        });
    }

    /// Chunk `id` is opened for the writer: no longer held.
    pub(super) fn opened(&self, id: &Hash) {
        if let Some(u) = self.unwritten().as_mut() {
            u.held.remove(id);
        }
    }

    /// The chunks fetched and not yet handed to the writer, once every check in progress
    /// ended (taken: a failed pull puts them into the local store, so a pull run again does
    /// not fetch them).
    pub(super) async fn take_held(&self) -> Vec<VerifiedChunk> {
        let _all = self.checks.acquire_many(CHECKS).await;
        match self.unwritten().as_mut() {
            Some(u) => std::mem::take(&mut u.held).into_values().collect(),
            None => Vec::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Vec<SourceState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source to ask next, among those not yet `tried` for this chunk and never caught
    /// lying: one not yet measured and idle (the probe), else the one expected to finish
    /// soonest. Marks the request in flight; says whether it is a probe, and whether another
    /// source not failing could be asked instead.
    fn pick(&self, tried: &[usize]) -> Option<(usize, bool, bool)> {
        let mut state = self.state();
        let usable = |i: &usize| !tried.contains(i) && state[*i].rejected == 0;
        let mut candidates: Vec<usize> = (0..state.len()).filter(usable).collect();
        // A source whose last request failed (unreachable, timed out) is asked only when no
        // other is left, so a dead peer costs one timeout, not one per request.
        if candidates.iter().any(|i| state[*i].failing == 0) {
            candidates.retain(|i| state[*i].failing == 0);
        }
        let rate = |s: &SourceState| (s.seconds > 0.0).then(|| s.bytes as f64 / s.seconds);
        let known: Vec<f64> = candidates.iter().filter_map(|i| rate(&state[*i])).collect();
        let best_known = known.iter().copied().fold(0.0, f64::max);
        let chosen = candidates
            .iter()
            .copied()
            .find(|i| rate(&state[*i]).is_none() && state[*i].in_flight == 0)
            .or_else(|| {
                candidates.iter().copied().min_by(|a, b| {
                    let cost = |i: usize| {
                        let s = &state[i];
                        // An unmeasured source counts as slow until its probe returns.
                        let r = rate(s).unwrap_or(best_known / 4.0).max(1.0);
                        (s.in_flight + 1) as f64 / r
                    };
                    cost(*a).total_cmp(&cost(*b))
                })
            })?;
        let probe = rate(&state[chosen]).is_none();
        let alternative = candidates
            .iter()
            .any(|&i| i != chosen && state[i].failing == 0);
        state[chosen].in_flight += 1;
        Some((chosen, probe, alternative))
    }

    /// The chunks `ids` from whichever sources deliver ones that match their ids, each kept
    /// in the local store as soon as it is checked.
    pub(super) async fn fetch(
        &self,
        ids: Vec<Hash>,
    ) -> Result<HashMap<Hash, VerifiedChunk>, DataError> {
        let mut need: Vec<Hash> = ids;
        need.sort_unstable();
        need.dedup();
        let mut got = HashMap::with_capacity(need.len());
        let mut tried = Vec::new();
        let mut said = Vec::new();
        while !need.is_empty() {
            let Some((i, probe, alternative)) = self.pick(&tried) else {
                return Err(DataError::Missing {
                    id: need[0],
                    asked: if said.is_empty() {
                        "no usable source".into()
                    } else {
                        said.join("; ")
                    },
                });
            };
            // A probe asks for one chunk, so an unmeasured slow source costs one chunk's wait.
            let most = if probe {
                1
            } else {
                gridwork_api::frames::MAX_FETCH_IDS
            };
            let ask = &need[..need.len().min(most)];
            let label = self.sources[i].label();
            let started = Instant::now();
            let request = self.sources[i].fetch_chunks(ask);
            // A probe that keeps the chunk waiting while another source could send it has a
            // deadline: a source that never answers cannot hold the pull up. (3 s, not less:
            // a peer's first request includes its QUIC handshake, on a loaded machine too.)
            let answer = if probe && alternative {
                tokio::time::timeout(PROBE_PATIENCE, request)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SourceError::Unreachable(format!(
                            "no answer to a one-chunk probe in {} ms",
                            PROBE_PATIENCE.as_millis()
                        )))
                    })
            } else {
                request.await
            };
            let seconds = started.elapsed().as_secs_f64();
            let checked = match answer {
                Ok(frames) if frames.len() == ask.len() => {
                    let (asked, store) = (ask.to_vec(), self.local.clone());
                    let unwritten = self.unwritten.clone();
                    let permit = self.checks.clone().acquire_owned().await;
                    blocking(move || {
                        let _checking = permit;
                        check_frames(asked, frames, &store, &unwritten)
                    })
                    .await?
                }
                Ok(_) => Checked::failed("answered other ids than asked"),
                Err(e) => Checked::failed(&e.to_string()),
            };
            let mut state = self.state();
            let s = &mut state[i];
            s.in_flight -= 1;
            s.requests += 1;
            s.rejected += checked.forged;
            s.lacked += checked.lacked;
            s.failed += u64::from(checked.failure.is_some());
            s.failing = if checked.failure.is_some() {
                s.failing + 1
            } else {
                0
            };
            let bytes: u64 = checked.ok.iter().map(|c| c.bytes().len() as u64).sum();
            if !checked.ok.is_empty() {
                s.chunks += checked.ok.len() as u64;
                s.bytes += bytes;
                s.seconds += seconds;
            }
            drop(state);
            if let Some(f) = &checked.failure {
                said.push(format!("{label}: {f}"));
            }
            if checked.forged > 0 {
                said.push(format!(
                    "{label}: sent bytes that do not match the id ({} chunks)",
                    checked.forged
                ));
            }
            if checked.lacked > 0 {
                said.push(format!("{label}: does not have {} chunks", checked.lacked));
            }
            // A source that only deferred part of the answer may be asked again; one that
            // failed, lacked or lied is not asked again for these chunks.
            if checked.failure.is_some()
                || checked.forged > 0
                || checked.lacked > 0
                || checked.ok.is_empty()
            {
                tried.push(i);
            }
            for c in checked.ok {
                got.insert(*c.id(), c);
            }
            need.retain(|id| !got.contains_key(id));
        }
        Ok(got)
    }

    pub(super) fn reports(&self) -> Vec<SourceReport> {
        self.state()
            .iter()
            .zip(self.sources)
            .map(|(s, source)| SourceReport {
                source: source.label(),
                chunks: s.chunks,
                bytes: s.bytes,
                requests: s.requests,
                rejected: s.rejected,
                failed: s.failed,
                lacked: s.lacked,
            })
            .collect()
    }
}

/// What a source's answer held, after checking each chunk against its id.
struct Checked {
    ok: Vec<VerifiedChunk>,
    forged: u64,
    lacked: u64,
    failure: Option<String>,
}

impl Checked {
    fn failed(why: &str) -> Checked {
        Checked {
            ok: Vec::new(),
            forged: 0,
            lacked: 0,
            failure: Some(why.to_string()),
        }
    }
}

/// Checks each chunk of an answer against its id and keeps the good ones in `store` (or
/// holds them in `unwritten`: see [`Sources`]).
fn check_frames(
    ids: Vec<Hash>,
    frames: Vec<Frame>,
    store: &ChunkStore,
    unwritten: &Mutex<Option<Unwritten>>,
) -> Result<Checked, DataError> {
    let mut checked = Checked {
        ok: Vec::new(),
        forged: 0,
        lacked: 0,
        failure: None,
    };
    for (id, frame) in ids.into_iter().zip(frames) {
        match frame {
            Frame::Chunk(bytes) => match VerifiedChunk::check(id, bytes) {
                Ok(c) => {
                    let mut unwritten = unwritten.lock().unwrap_or_else(|p| p.into_inner());
                    match unwritten.as_mut() {
                        Some(u) if !u.again.contains(c.id()) => {
                            u.held.insert(*c.id(), c.clone());
                        }
                        _ => {
                            drop(unwritten);
                            store.put_verified(&c)?;
                        }
                    }
                    checked.ok.push(c);
                }
                Err(_) => checked.forged += 1,
            },
            Frame::Missing => checked.lacked += 1,
            Frame::Deferred => {}
        }
    }
    Ok(checked)
}
