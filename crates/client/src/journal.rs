//! Checkpoints of a pull: which files are written and on disk, so a pull cut off (even by a
//! crash of the machine) resumes without fetching or writing them again, and so the local
//! cache can be trimmed behind the pull instead of holding the whole tree.
//!
//! Every `checkpoint_bytes` of written files, the pull syncs the file system the files are on
//! (`syncfs`), then appends their manifest indices to the journal and syncs it: the journal
//! never names a file whose bytes could still be lost. The journal is text: a first line
//! `gridwork pull journal v2 <cid>`, then a line `<index> <ctime ns>` per file, with the
//! change time the file had when it was synced. A resumed pull trusts a listed file that
//! still has its size and that change time (any write, truncation, `touch` or `chmod` since
//! moves it); a torn last line, another tree's journal (or one of the first format) or a
//! file changed since count as not written.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gridwork_transfer::{open_inside, ChunkStore, EntryKind, TreeError, TreeManifest, WriteHooks};
use gridwork_types::Hash;

/// The write hooks of a pull: skips the files the journal lists, records and syncs the ones
/// written, and trims the cache at each checkpoint.
pub(crate) struct Checkpoints {
    dest: PathBuf,
    journal: Option<(PathBuf, File)>,
    done: HashSet<usize>,
    /// Chunks (and their bytes) at the start of files not journaled that a cut-off pull
    /// finished, found in the files themselves.
    kept: HashMap<usize, (usize, u64)>,
    /// Files written since the last checkpoint, with their paths.
    pending: Vec<(usize, PathBuf)>,
    pending_bytes: u64,
    every: u64,
    cache: Option<(ChunkStore, u64)>,
    /// Each file entry's chunks, and how many files not yet checkpointed use each chunk:
    /// what a trim must spare.
    files: Vec<Vec<Hash>>,
    needed: HashMap<Hash, u32>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Checkpoints {
    /// Opens (or starts) the journal of pulling tree `cid` into `dest`.
    pub(crate) fn open(
        manifest: &TreeManifest,
        cid: &Hash,
        dest: &Path,
        journal: Option<&Path>,
        every: u64,
        cache: Option<(ChunkStore, u64)>,
    ) -> Result<Checkpoints, TreeError> {
        let header = format!("gridwork pull journal v2 {cid}");
        let mut done = HashMap::new();
        let journal = match journal {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                done = parse_journal(&text, cid)
                    .into_iter()
                    .filter(|&(i, ctime)| in_place(manifest, dest, i) == Some(ctime))
                    .collect();
                // Only whole lines were meant: a torn last one is cut off by rewriting.
                let mut body = header.clone();
                body.push('\n');
                for (i, ctime) in &done {
                    body.push_str(&format!("{i} {ctime}\n"));
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                std::fs::write(path, body).map_err(io(path))?;
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io(path))?;
                Some((path.to_path_buf(), file))
            }
        };
        // What a trim must spare (only a pull that trims needs it: a large tree's chunk
        // lists cost tens of megabytes).
        let (mut files, mut needed) = (Vec::new(), HashMap::new());
        if cache.is_some() {
            files = manifest.entries.iter().map(|e| e.chunks.clone()).collect();
            for (i, chunks) in files.iter().enumerate() {
                if !done.contains_key(&i) {
                    for id in chunks {
                        *needed.entry(*id).or_insert(0) += 1;
                    }
                }
            }
        }
        Ok(Checkpoints {
            dest: dest.to_path_buf(),
            journal,
            done: done.into_keys().collect(),
            kept: HashMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            every: every.max(1),
            cache,
            files,
            needed,
        })
    }

    /// Bytes already in place: whole files, and the kept starts of others.
    pub(crate) fn done_bytes(&self, manifest: &TreeManifest) -> u64 {
        let whole: u64 = self
            .done
            .iter()
            .filter_map(|&i| manifest.entries.get(i))
            .map(|e| e.size)
            .sum();
        whole + self.kept.values().map(|(_, bytes)| bytes).sum::<u64>()
    }

    /// Records the chunks at the start of files (by entry index) that are already in place.
    pub(crate) fn keep_prefixes(&mut self, kept: HashMap<usize, (usize, u64)>) {
        self.kept = kept;
    }

    /// Makes the files written since the last checkpoint durable, lists them in the
    /// journal, and trims the cache (sparing the chunks of files not yet checkpointed).
    fn checkpoint(&mut self) -> Result<(), TreeError> {
        if let Some((path, file)) = &mut self.journal {
            if !self.pending.is_empty() {
                let dir = File::open(&self.dest).map_err(io(&self.dest))?;
                rustix::fs::syncfs(&dir).map_err(|e| io(&self.dest)(e.into()))?;
                let mut lines = String::new();
                for (i, written) in &self.pending {
                    let meta = std::fs::symlink_metadata(written).map_err(io(written))?;
                    lines.push_str(&format!("{i} {}\n", ctime_ns(&meta)));
                }
                file.write_all(lines.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(io(path))?;
            }
        }
        for (i, _) in self.pending.drain(..) {
            for id in self.files.get(i).into_iter().flatten() {
                if let Some(n) = self.needed.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        self.needed.remove(id);
                    }
                }
            }
            self.done.insert(i);
        }
        self.pending_bytes = 0;
        if let Some((store, max)) = &self.cache {
            let needed = &self.needed;
            store.trim_unless(*max, Duration::ZERO, |id| needed.contains_key(id))?;
        }
        Ok(())
    }
}

impl WriteHooks for Checkpoints {
    fn done(&self, index: usize) -> bool {
        self.done.contains(&index)
    }

    fn kept(&self, index: usize) -> (usize, u64) {
        self.kept.get(&index).copied().unwrap_or((0, 0))
    }

    fn written(&mut self, index: usize, path: &Path, bytes: u64) -> Result<(), TreeError> {
        self.pending.push((index, path.to_path_buf()));
        self.pending_bytes += bytes;
        if self.pending_bytes >= self.every {
            self.checkpoint()?;
        }
        Ok(())
    }
}

/// The change time of the file `meta` describes, in ns since the epoch.
/// The files a journal of tree `cid` lists as written, with their change times: none for
/// another tree's journal or one of another format; lines that do not parse are skipped.
pub(crate) fn parse_journal(text: &str, cid: &Hash) -> Vec<(usize, u128)> {
    let mut lines = text.lines();
    if lines.next() != Some(format!("gridwork pull journal v2 {cid}").as_str()) {
        return Vec::new();
    }
    lines
        .filter_map(|l| {
            let (i, ctime) = l.split_once(' ')?;
            Some((i.parse::<usize>().ok()?, ctime.parse::<u128>().ok()?))
        })
        .collect()
}

fn ctime_ns(meta: &std::fs::Metadata) -> u128 {
    use std::os::unix::fs::MetadataExt;
    (meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128).max(0) as u128
}

/// The change time of file entry `index` of `manifest` in `dest`, if it is there with its
/// size, reached without following a link (a file a link leads to is not the pull's).
fn in_place(manifest: &TreeManifest, dest: &Path, index: usize) -> Option<u128> {
    let e = manifest.entries.get(index)?;
    if e.kind != EntryKind::File {
        return None;
    }
    let meta = open_inside(dest, &e.path).ok()??.metadata().ok()?;
    (meta.len() == e.size).then(|| ctime_ns(&meta))
}
