//! Scanning a tree before packing it: names and links checked, hard links, the walk over
//! directories on several threads, and the tree's digest.

use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use gridwork_types::Hash;

use crate::pack::{FileRoot, Scanned, ScannedFile};

use super::{io, Entry, EntryKind, Loss, NameRule, NotKept, TreeError};

/// Checks that `path` may be in a tree: relative, `/`-separated plain names, none of them
/// `..` and none with a backslash. Push checks every path it finds by this function and pull
/// every path it reads, so a tree that pushes always pulls.
pub(super) fn check_path(path: &str) -> Result<(), TreeError> {
    let bad = || TreeError::UnsafePath {
        path: path.to_string(),
    };
    if path.contains('\\') {
        return Err(TreeError::BadName {
            path: path.to_string(),
            rule: NameRule::NoBackslash,
        });
    }
    let mut names = 0;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    if names == 0 || path.split('/').any(|n| n.is_empty() || n == ".") {
        return Err(bad());
    }
    Ok(())
}

/// Whether a link at `link` (a `/`-separated path in the tree) pointing to `target` stays
/// inside the tree: relative, and never climbing above the tree's root. A tree with any
/// other link is refused when scanned ([`TreeError::UnsafePath`]).
pub fn link_stays_inside(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(unix)]
pub(crate) fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
pub(crate) fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// A tree's files (path, relative name, metadata), its other entries (directories, links,
/// FIFOs, hard links) and what a pull will not give back, as found on disk. A single file is
/// a tree of one file.
type Scan = (Scanned, Vec<Entry>, Vec<NotKept>);

/// Walks the tree at `root`: directories are listed on every core (a stat per entry is most
/// of a re-push of many small files), each entry's metadata read relative to its directory.
/// Deterministic order: directories by path, each one's children by name. Every name is
/// checked as a pull checks it, so what pushes pulls.
pub(super) fn scan(root: &Path) -> Result<Scan, TreeError> {
    let meta = std::fs::symlink_metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        let name = match root.file_name() {
            None => "file".to_string(),
            Some(n) => n
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| TreeError::BadName {
                    path: n.to_string_lossy().into_owned(),
                    rule: NameRule::Utf8,
                })?,
        };
        check_path(&name)?;
        let mut not_kept = Vec::new();
        set_id_bits(&name, &meta, &mut not_kept);
        let file = ScannedFile::new(name, &meta);
        let scanned = Scanned {
            root: FileRoot::File(root.to_path_buf()),
            files: vec![file],
        };
        return Ok((scanned, Vec::new(), not_kept));
    }
    let walk = Walk {
        state: Mutex::new(WalkState {
            dirs: vec![(root.to_path_buf(), String::new())],
            listing: 0,
            failed: None,
        }),
        wake: Condvar::new(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listed: Vec<Vec<Listed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(|| walk.work())).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let state = walk.state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = state.failed {
        return Err(e);
    }
    // A thread that stopped without its directories would leave them out of the tree.
    if listed.len() != threads {
        return Err(TreeError::Malformed("a scanning thread panicked".into()));
    }
    let mut listed: Vec<Listed> = listed.into_iter().flatten().collect();
    listed.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut files = Vec::with_capacity(listed.iter().map(|l| l.files.len()).sum());
    let mut entries = Vec::with_capacity(listed.iter().map(|l| l.entries.len()).sum());
    let mut not_kept = Vec::new();
    for l in listed {
        files.extend(l.files);
        entries.extend(l.entries);
        not_kept.extend(l.not_kept);
    }
    not_kept.sort_by(|a, b| a.path.cmp(&b.path));
    hard_links(&mut files, &mut entries);
    let scanned = Scanned {
        root: FileRoot::Dir(root.to_path_buf()),
        files,
    };
    Ok((scanned, entries, not_kept))
}

/// Turns every file that is another name of a file found before it in path order into a
/// [`EntryKind::HardLink`] entry naming that first one: its data is packed once, and a pull
/// links the names again.
fn hard_links(files: &mut Vec<ScannedFile>, entries: &mut Vec<Entry>) {
    let mut first: std::collections::HashMap<(u64, u64), &str> = Default::default();
    for f in files.iter() {
        if let Some(inode) = f.inode() {
            let name = first.entry(inode).or_insert(f.rel.as_str());
            if f.rel.as_str() < *name {
                *name = &f.rel;
            }
        }
    }
    let first: std::collections::HashMap<(u64, u64), String> = first
        .into_iter()
        .map(|(inode, name)| (inode, name.to_string()))
        .collect();
    files.retain(|f| {
        let Some(target) = f.inode().and_then(|inode| first.get(&inode)) else {
            return true;
        };
        if *target == f.rel {
            return true;
        }
        entries.push(Entry {
            path: f.rel.clone(),
            kind: EntryKind::HardLink,
            mode: f.mode,
            size: 0,
            chunks: vec![],
            target: Some(target.clone()),
        });
        false
    });
}

/// Notes in `not_kept` that the entry at `path` has setuid or setgid bits a pull drops.
fn set_id_bits(path: &str, meta: &std::fs::Metadata, not_kept: &mut Vec<NotKept>) {
    let mode = mode_of(meta);
    if mode & 0o6000 != 0 {
        not_kept.push(NotKept {
            path: path.to_string(),
            loss: Loss::SetIdBits { mode },
        });
    }
}

/// Directories left to list, shared by the threads of a [`scan`].
struct Walk {
    state: Mutex<WalkState>,
    wake: Condvar,
}

struct WalkState {
    /// Directories found and not yet listed: path on disk, path in the tree.
    dirs: Vec<(PathBuf, String)>,
    /// Threads listing one now (each may find more).
    listing: usize,
    failed: Option<TreeError>,
}

/// One directory's files and other entries.
struct Listed {
    prefix: String,
    files: Vec<ScannedFile>,
    entries: Vec<Entry>,
    not_kept: Vec<NotKept>,
}

impl Walk {
    fn lock(&self) -> MutexGuard<'_, WalkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists directories until none is left or one failed.
    fn work(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        loop {
            let (dir, prefix) = {
                let mut st = self.lock();
                loop {
                    if st.failed.is_some() {
                        return out;
                    }
                    if let Some(next) = st.dirs.pop() {
                        st.listing += 1;
                        break next;
                    }
                    if st.listing == 0 {
                        return out;
                    }
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = list_dir(&dir, prefix);
            let mut st = self.lock();
            st.listing -= 1;
            match result {
                Ok((listed, subdirs)) => {
                    st.dirs.extend(subdirs);
                    out.push(listed);
                }
                Err(e) => {
                    st.failed.get_or_insert(e);
                }
            }
            drop(st);
            self.wake.notify_all();
        }
    }
}

/// The entries of directory `dir` (`prefix` in the tree) and its subdirectories to list.
fn list_dir(dir: &Path, prefix: String) -> Result<(Listed, Vec<(PathBuf, String)>), TreeError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    children.sort_by_key(|e| e.file_name());
    let mut listed = Listed {
        prefix,
        files: Vec::new(),
        entries: Vec::new(),
        not_kept: Vec::new(),
    };
    let mut subdirs = Vec::new();
    for child in children {
        let path = child.path();
        let name = child.file_name();
        let in_tree = |name: &str| {
            if listed.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", listed.prefix)
            }
        };
        let rel = match name.to_str() {
            Some(name) => in_tree(name),
            None => {
                return Err(TreeError::BadName {
                    path: in_tree(&name.to_string_lossy()),
                    rule: NameRule::Utf8,
                })
            }
        };
        check_path(&rel)?;
        // Relative to the directory (`statx` at its descriptor): no walk of the whole path.
        let meta = child.metadata().map_err(io(&path))?;
        let kind = meta.file_type();
        if meta.is_dir() || meta.is_file() {
            set_id_bits(&rel, &meta, &mut listed.not_kept);
        }
        if meta.is_dir() {
            listed.entries.push(Entry {
                path: rel.clone(),
                kind: EntryKind::Dir,
                mode: mode_of(&meta),
                size: 0,
                chunks: vec![],
                target: None,
            });
            subdirs.push((path, rel));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| TreeError::BadName {
                    path: rel.clone(),
                    rule: NameRule::Utf8LinkTarget,
                })?
                .to_string();
            if !link_stays_inside(&rel, &target) {
                return Err(TreeError::UnsafePath {
                    path: format!("{rel} -> {target}"),
                });
            }
            listed.entries.push(Entry {
                path: rel,
                kind: EntryKind::Link,
                mode: 0o777,
                size: 0,
                chunks: vec![],
                target: Some(target),
            });
        } else if meta.is_file() {
            listed.files.push(ScannedFile::new(rel, &meta));
        } else {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                listed.entries.push(Entry {
                    path: rel,
                    kind: EntryKind::Fifo,
                    mode: mode_of(&meta),
                    size: 0,
                    chunks: vec![],
                    target: None,
                });
            } else {
                let loss = if kind.is_socket() {
                    Loss::Socket
                } else {
                    Loss::Device
                };
                listed.not_kept.push(NotKept { path: rel, loss });
            }
        }
    }
    Ok((listed, subdirs))
}

/// BLAKE3 of a tree's plaintext: every path in order with its kind, mode, size and content
/// hash (files) or target (links). Two trees with the same digest unpack to the same files;
/// it does not depend on any key, so independent runs that produce the same outputs agree.
pub fn tree_digest(root: &Path) -> Result<Hash, TreeError> {
    let (scanned, mut entries, _) = scan(root)?;
    for f in &scanned.files {
        let mut h = blake3::Hasher::new();
        let path = &scanned.root.path(f);
        let file = super::open_scanned(path)?;
        h.update_reader(file).map_err(io(path))?;
        entries.push(Entry {
            path: f.rel.clone(),
            kind: EntryKind::File,
            mode: f.mode,
            size: f.size,
            chunks: vec![Hash(*h.finalize().as_bytes())],
            target: None,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes = serde_json::to_vec(&entries).map_err(|e| TreeError::Malformed(e.to_string()))?;
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork/tree-digest/v1\n");
    h.update(&bytes);
    Ok(Hash(*h.finalize().as_bytes()))
}
