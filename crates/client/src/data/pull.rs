//! Pulls: the manifest, then chunks in tree order from the sources, opened in slices and handed to
//! the file writer.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use gridwork_api::frames::ChunkSource;
use gridwork_transfer::{
    manifest_ids, open, read_manifest, root_children, sealed_prefix, write_tree_with, ChunkParams,
    ChunkStore, DataKey, TreeError, TreeManifest, VerifiedChunk, WriteHooks,
};
use gridwork_types::Hash;

use crate::client::Client;
use crate::journal::Checkpoints;

use super::sources::Sources;
use super::{blocking, DataError, PullReport, Sizer, TransferOptions};

impl Client {
    /// Fetches a tree's root and manifest chunks into `local` and opens the manifest.
    pub async fn tree_manifest(
        &self,
        cid: &Hash,
        key: &DataKey,
        params: ChunkParams,
        local: &ChunkStore,
    ) -> Result<TreeManifest, DataError> {
        fetch_manifest(&Sources::new(&[self], local), cid, key, params, local).await
    }

    /// Fetches tree `cid` from the node into `dest`; chunks already in `local` are not
    /// fetched again.
    pub async fn pull_tree(
        &self,
        cid: &Hash,
        key: &DataKey,
        local: &ChunkStore,
        dest: &Path,
        opts: &TransferOptions,
    ) -> Result<PullReport, DataError> {
        pull_tree_from(&[self], cid, key, local, dest, opts).await
    }
}

/// Slices of a pull opened (decrypted) at once, ahead of the file writer: half the cores, at
/// least 2, at most 16. Opening is most of a pull's CPU time; on 16 cores a 1 GiB pull ran
/// 839 MB/s with 2 (one slice at a time per core pair was the limit), 1,219 with 4, 1,387
/// with 8 and 1,435 with 16 (`bench data`, H100 host, 2026-11-23).
fn open_ahead() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get().div_ceil(2))
        .clamp(2, 16)
}

/// Most plaintext bytes (as estimated from the manifest) opened at once.
const OPEN_SLICE_BYTES: u64 = 8 * 1024 * 1024;

/// The next fetch: chunks (each with its estimated plaintext size) until about `target`
/// bytes, at least one, at most [`MAX_FETCH_IDS`](gridwork_api::frames::MAX_FETCH_IDS).
pub(super) fn next_request(
    remaining: &mut std::iter::Peekable<impl Iterator<Item = (Hash, u64)>>,
    target: u64,
) -> Vec<(Hash, u64)> {
    let (mut batch, mut size) = (Vec::new(), 0u64);
    while let Some(chunk) = remaining.next_if(|_| {
        batch.is_empty() || (size < target && batch.len() < gridwork_api::frames::MAX_FETCH_IDS)
    }) {
        size += chunk.1;
        batch.push(chunk);
    }
    batch
}

/// A fetched batch with its chunks.
pub(super) type Fetched = (Vec<(Hash, u64)>, HashMap<Hash, VerifiedChunk>);

/// A fetched batch cut into slices of at most [`OPEN_SLICE_BYTES`] of estimated plaintext
/// (or one chunk), each with the chunks fetched for it; an error stays one item.
pub(super) fn open_slices(fetched: Result<Fetched, DataError>) -> Vec<Result<Fetched, DataError>> {
    let (batch, mut chunks) = match fetched {
        Ok(fetched) => fetched,
        Err(e) => return vec![Err(e)],
    };
    let mut slices = Vec::new();
    let (mut ids, mut part, mut bytes) = (Vec::new(), HashMap::new(), 0u64);
    for (id, estimate) in batch {
        // A chunk the batch repeats is in the slice that came first; one not fetched is in
        // the local store.
        if let Some(chunk) = chunks.remove(&id) {
            part.insert(id, chunk);
        }
        ids.push((id, estimate));
        bytes += estimate;
        if bytes >= OPEN_SLICE_BYTES {
            slices.push(Ok((std::mem::take(&mut ids), std::mem::take(&mut part))));
            bytes = 0;
        }
    }
    if !ids.is_empty() {
        slices.push(Ok((ids, part)));
    }
    slices
}

/// Puts a chunk into `local` unless it is there.
async fn ensure_local(
    sources: &Sources<'_>,
    id: Hash,
    local: &ChunkStore,
) -> Result<(), DataError> {
    if local.has(&id) {
        return Ok(());
    }
    sources.fetch(vec![id]).await?;
    Ok(())
}

async fn fetch_manifest(
    sources: &Sources<'_>,
    cid: &Hash,
    key: &DataKey,
    params: ChunkParams,
    local: &ChunkStore,
) -> Result<TreeManifest, DataError> {
    ensure_local(sources, *cid, local).await?;
    let root = local.get(cid)?.ok_or(TreeError::Missing { id: *cid })?;
    // The root names id lists, which name the manifest's chunks (a v1 root names those
    // itself).
    fetch_missing(sources, local, &root_children(&root)?).await?;
    fetch_missing(sources, local, &manifest_ids(&root, local)?).await?;
    Ok(read_manifest(cid, key, params, local)?)
}

/// Fetches the chunks of `ids` that `local` lacks: a large tree's manifest is thousands of
/// small chunks, a request per thousand.
async fn fetch_missing(
    sources: &Sources<'_>,
    local: &ChunkStore,
    ids: &[Hash],
) -> Result<(), DataError> {
    for group in local.missing(ids.iter()).chunks(1024) {
        sources.fetch(group.to_vec()).await?;
    }
    Ok(())
}

/// Fetches tree `cid` from `sources` (nodes, peers) into `dest`, `opts.streams` chunks at a
/// time; chunks already in `local` are not fetched again, fetched ones are kept there.
pub async fn pull_tree_from(
    sources: &[&dyn ChunkSource],
    cid: &Hash,
    key: &DataKey,
    local: &ChunkStore,
    dest: &Path,
    opts: &TransferOptions,
) -> Result<PullReport, DataError> {
    let sources = Sources::new(sources, local);
    let manifest = fetch_manifest(&sources, cid, key, opts.params, local).await?;
    let files = manifest
        .entries
        .iter()
        .filter(|e| e.kind == gridwork_transfer::EntryKind::File);
    let (file_count, file_bytes) = files.fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    opts.progress.set_total(file_bytes);
    let mut hooks = Checkpoints::open(
        &manifest,
        cid,
        dest,
        opts.journal.as_deref(),
        opts.checkpoint_bytes,
        opts.cache_max_bytes.map(|max| (local.clone(), max)),
    )?;
    if opts.resume_from_files {
        // What a cut-off pull finished in files it had not journaled yet.
        let partial: Vec<(usize, String, Vec<Hash>)> = manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| e.kind == gridwork_transfer::EntryKind::File && !hooks.done(*i))
            .map(|(i, e)| (i, e.path.clone(), e.chunks.clone()))
            .collect();
        let (key, params, dest) = (key.clone(), opts.params, dest.to_path_buf());
        let kept = blocking(move || {
            let mut kept = HashMap::new();
            for (i, path, chunks) in partial {
                // Read without following a link: one planted there is not taken for the file.
                let prefix = sealed_prefix(&dest, &path, &chunks, &key, params)?;
                if prefix.0 > 0 {
                    kept.insert(i, prefix);
                }
            }
            Ok(kept)
        })
        .await?;
        hooks.keep_prefixes(kept);
    }
    let in_place = hooks.done_bytes(&manifest);
    opts.progress.add(in_place);
    // The chunks of the files still to write, in manifest order, each with its share of its
    // file's size.
    let ids: Vec<(Hash, u64)> = manifest
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !hooks.done(*i))
        .flat_map(|(i, e)| {
            let share = e.size.div_ceil(e.chunks.len().max(1) as u64).max(1);
            e.chunks[hooks.kept(i).0.min(e.chunks.len())..]
                .iter()
                .map(move |id| (*id, share))
        })
        .collect();
    if opts.resume_from_files {
        // Fetched chunks go to their files only; one the tree names again later is kept, so
        // it is not fetched twice.
        let mut seen = HashSet::with_capacity(ids.len());
        let again: HashSet<Hash> = ids
            .iter()
            .filter(|(id, _)| !seen.insert(*id))
            .map(|(id, _)| *id)
            .collect();
        sources.keep_only(again);
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, TreeError>>(4);
    let dest_path = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        write_tree_with(
            &manifest,
            &dest_path,
            std::iter::from_fn(|| rx.blocking_recv()),
            &mut hooks,
        )
    });
    let max = opts.params.max;
    let sizer = Sizer::new();
    // Requests of about the target size, by each chunk's share of its file (a chunk count
    // from an average would let a tree's many small chunks make requests for its large
    // ones hundreds of megabytes).
    let mut remaining = ids.into_iter().peekable();
    let batches = std::iter::from_fn(|| {
        let batch = next_request(&mut remaining, sizer.target());
        (!batch.is_empty()).then_some(batch)
    });
    // Two stages: fetching runs `streams` requests ahead, opening (decryption into
    // plaintext buffers) only `open_ahead()` slices of at most OPEN_SLICE_BYTES ahead of the
    // writer. Opened as soon as fetched, every batch in flight held its plaintext, more
    // buffers than the pool keeps: each miss was a fresh allocation whose pages the kernel
    // zeroed (a fifth of a pull's CPU time).
    // The sizer sees a request's estimated (plaintext) bytes, the measure of its target: the
    // sealed bytes of a compressible tree would never look like a full request.
    let fetch = |wanted: Vec<(Hash, u64)>| {
        let (sources, sizer) = (&sources, &sizer);
        async move {
            if wanted.is_empty() {
                return Ok(HashMap::new());
            }
            let estimated = wanted.iter().map(|(_, n)| n).sum();
            let started = Instant::now();
            let fetched = sources
                .fetch(wanted.into_iter().map(|(id, _)| id).collect())
                .await?;
            sizer.observe(estimated, started.elapsed().as_secs_f64());
            Ok::<_, DataError>(fetched)
        }
    };
    let open_all = |batch: &[(Hash, u64)], fetched: HashMap<Hash, VerifiedChunk>| {
        let (key, store) = (key.clone(), local.clone());
        let ids: Vec<Hash> = batch.iter().map(|(id, _)| *id).collect();
        blocking(move || {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let plain = match fetched.get(&id) {
                    Some(chunk) => open(&key, &id, chunk.bytes(), max),
                    None => {
                        let sealed = store.get(&id)?.ok_or(TreeError::Missing { id })?;
                        open(&key, &id, &sealed, max)
                    }
                };
                out.push(plain.map_err(TreeError::from)?);
            }
            Ok(out)
        })
    };
    let mut plaintexts = stream::iter(batches)
        .map(|batch| {
            let wanted: Vec<(Hash, u64)> = batch
                .iter()
                .filter(|(id, _)| !local.has(id))
                .copied()
                .collect();
            let fetching = fetch(wanted);
            async move { Ok::<_, DataError>((batch, fetching.await?)) }
        })
        .buffered(opts.streams.max(1))
        .flat_map(|fetched| stream::iter(open_slices(fetched)))
        .map(|slice| async {
            let (batch, fetched) = slice?;
            let opened = match open_all(&batch, fetched).await {
                // A chunk left the local store after it was counted there (a trim of the
                // cache to its size): fetch the whole slice from the sources.
                Err(DataError::Tree(TreeError::Missing { .. })) => {
                    open_all(&batch, fetch(batch.clone()).await?).await
                }
                other => other,
            };
            Ok::<_, DataError>((batch, opened?))
        })
        .buffered(open_ahead());
    let mut failure = None;
    'fetching: while let Some(slice) = plaintexts.next().await {
        match slice {
            Ok((batch, plaintexts)) => {
                for plain in plaintexts {
                    opts.progress.add(plain.len() as u64);
                    if tx.send(Ok(plain)).await.is_err() {
                        break 'fetching; // the writer stopped; its error says why
                    }
                }
                // With the writer now: a failure from here on need not keep them.
                for (id, _) in &batch {
                    sources.opened(id);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(plaintexts);
    drop(tx);
    let written = writer
        .await
        .map_err(|e| DataError::Tree(TreeError::Malformed(format!("writing stopped: {e}"))))?;
    if let Some(e) = failure.or(written.err().map(DataError::from)) {
        // Best effort: the pull's own error says what went wrong (a full disk fails this too).
        let (held, store) = (sources.take_held().await, local.clone());
        let _ = blocking(move || {
            held.iter()
                .try_for_each(|c| store.put_verified(c))
                .map_err(DataError::from)
        })
        .await;
        return Err(e);
    }
    let sources = sources.reports();
    Ok(PullReport {
        cid: *cid,
        files: file_count,
        bytes: file_bytes,
        chunks_received: sources.iter().map(|s| s.chunks).sum(),
        bytes_received: sources.iter().map(|s| s.bytes).sum(),
        bytes_in_place: in_place,
        sources,
        request_bytes: sizer.target(),
    })
}
