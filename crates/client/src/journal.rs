//! Checkpoints of a pull: which files are written and on disk, so a pull cut off (even by a
//! crash of the machine) resumes without fetching or writing them again, and so the local
//! cache can be trimmed behind the pull instead of holding the whole tree.
//!
//! Every `checkpoint_bytes` of written files, the pull syncs the file system the files are on
//! (`syncfs`), then appends their manifest indices to the journal and syncs it: the journal
//! never names a file whose bytes could still be lost. The journal is text: a first line
//! `gridwork pull journal v1 <cid>`, then one index per line. A resumed pull trusts a listed
//! file that still has its size; a torn last line, another tree's journal or a file that
//! changed size count as not written.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use gridwork_transfer::{ChunkStore, EntryKind, TreeError, TreeManifest, WriteHooks};
use gridwork_types::Hash;

/// The write hooks of a pull: skips the files the journal lists, records and syncs the ones
/// written, and trims the cache at each checkpoint.
pub(crate) struct Checkpoints {
    dest: PathBuf,
    journal: Option<(PathBuf, File)>,
    done: HashSet<usize>,
    pending: Vec<usize>,
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
        let header = format!("gridwork pull journal v1 {cid}");
        let mut done = HashSet::new();
        let journal = match journal {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut lines = text.lines();
                if lines.next() == Some(header.as_str()) {
                    done = lines
                        .filter_map(|l| l.parse::<usize>().ok())
                        .filter(|&i| in_place(manifest, dest, i))
                        .collect();
                    // Only whole lines were meant: a torn last one is cut off by rewriting.
                }
                let mut body = header.clone();
                body.push('\n');
                for i in &done {
                    body.push_str(&format!("{i}\n"));
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
                if !done.contains(&i) {
                    for id in chunks {
                        *needed.entry(*id).or_insert(0) += 1;
                    }
                }
            }
        }
        Ok(Checkpoints {
            dest: dest.to_path_buf(),
            journal,
            done,
            pending: Vec::new(),
            pending_bytes: 0,
            every: every.max(1),
            cache,
            files,
            needed,
        })
    }

    /// Bytes of the files already in place.
    pub(crate) fn done_bytes(&self, manifest: &TreeManifest) -> u64 {
        self.done
            .iter()
            .filter_map(|&i| manifest.entries.get(i))
            .map(|e| e.size)
            .sum()
    }

    /// Makes the files written since the last checkpoint durable, lists them in the
    /// journal, and trims the cache (sparing the chunks of files not yet checkpointed).
    fn checkpoint(&mut self) -> Result<(), TreeError> {
        if let Some((path, file)) = &mut self.journal {
            if !self.pending.is_empty() {
                let dir = File::open(&self.dest).map_err(io(&self.dest))?;
                rustix::fs::syncfs(&dir).map_err(|e| io(&self.dest)(e.into()))?;
                let lines: String = self.pending.iter().map(|i| format!("{i}\n")).collect();
                file.write_all(lines.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(io(path))?;
            }
        }
        for i in self.pending.drain(..) {
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

    fn written(&mut self, index: usize, bytes: u64) -> Result<(), TreeError> {
        self.pending.push(index);
        self.pending_bytes += bytes;
        if self.pending_bytes >= self.every {
            self.checkpoint()?;
        }
        Ok(())
    }
}

/// Whether file entry `index` of `manifest` is in `dest` with its size.
fn in_place(manifest: &TreeManifest, dest: &Path, index: usize) -> bool {
    let Some(e) = manifest.entries.get(index) else {
        return false;
    };
    let plain = Path::new(&e.path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    e.kind == EntryKind::File
        && plain
        && std::fs::symlink_metadata(dest.join(&e.path))
            .is_ok_and(|m| m.is_file() && m.len() == e.size)
}
