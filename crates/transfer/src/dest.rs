//! Writing a tree inside its destination without ever following a link there.
//!
//! A pull, fresh or resumed, writes into a directory that others may change while it runs or
//! between its runs: a link planted where the tree has a directory or a file would otherwise
//! take the pull's writes outside the destination. So no name below the destination is
//! resolved by path. Each directory is opened relative to the one above it (`openat` with
//! `O_NOFOLLOW | O_DIRECTORY`), and every file, link, FIFO and hard link is made relative to
//! its directory's descriptor: what a walk finds is used if it is a real directory, and
//! anything else in the way (a link, a file where the tree has a directory) is removed (the
//! name only, never what a link points to) and made anew. A directory where the tree has
//! something else is removed only if it is empty, else refused ([`TreeError::InTheWay`]).
//! Files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` after whatever had the name is
//! removed, so a link planted in between makes the pull fail, not write through it.
//!
//! The destination itself is the caller's choice and may be reached through links. Descriptors
//! do not stop someone with write access to the destination from moving a directory elsewhere
//! while the pull writes into it; what they guarantee is that no name the pull resolves goes
//! through a link.
//!
//! Files are written sparse: an aligned 4 KiB block of zeros is skipped, not written, and the
//! file's length set at its end, so a file with holes comes back with holes (as `cp
//! --sparse=always` and `rsync -S` do; a file that held written zeros comes back sparse too,
//! the same bytes in less disk).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::tree::TreeError;

/// Blocks of zeros this long, at multiples of it in the file, become holes.
const HOLE_BLOCK: u64 = 4096;

/// A destination directory, open for writing a tree into it.
pub(crate) struct Dest {
    root: PathBuf,
    root_fd: Rc<OwnedFd>,
    /// The directory walked to last and its path in the tree: entries come in path order, so
    /// most share it, or lie below it.
    last: Option<(String, Rc<OwnedFd>)>,
}

/// Opens directory `name` in `dir` without following a link; `None` if it is not there or
/// is not a directory.
fn open_dir(dir: &OwnedFd, name: &str) -> Result<Option<OwnedFd>, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type of `name` in `dir`, not following a link; `None` if it is not there.
fn type_at(dir: &OwnedFd, name: &str) -> Result<Option<FileType>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `path` split into its parent's path and its last name (`""` for the root's children).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Dest {
    /// Opens `root` (made if missing; reached through links if the caller's path has them).
    pub(crate) fn open(root: &Path) -> Result<Dest, TreeError> {
        std::fs::create_dir_all(root).map_err(crate::tree::io(root))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(root, flags, Mode::empty())
            .map_err(|e| crate::tree::io(root)(e.into()))?;
        Ok(Dest {
            root: root.to_path_buf(),
            root_fd: Rc::new(fd),
            last: None,
        })
    }

    /// The error of `path` (in the tree) failing with `e`.
    fn err(&self, path: &str) -> impl Fn(Errno) -> TreeError + '_ {
        let at = self.root.join(path);
        move |e| TreeError::Io {
            path: at.display().to_string(),
            source: e.into(),
        }
    }

    /// The directory at `path` in the tree, made (with its parents) where missing, with
    /// whatever else is in the way removed; each made or found directory stays open to its
    /// owner for writing (the tree's modes are set after its contents).
    pub(crate) fn dir(&mut self, path: &str) -> Result<Rc<OwnedFd>, TreeError> {
        Ok(self
            .walk(path, true)?
            .unwrap_or_else(|| self.root_fd.clone()))
    }

    /// [`dir`](Self::dir) that makes and removes nothing: `None` if some part of `path` is
    /// not a directory.
    fn find_dir(&mut self, path: &str) -> Result<Option<Rc<OwnedFd>>, TreeError> {
        self.walk(path, false)
    }

    fn walk(&mut self, path: &str, make: bool) -> Result<Option<Rc<OwnedFd>>, TreeError> {
        if path.is_empty() {
            return Ok(Some(self.root_fd.clone()));
        }
        let (mut fd, mut at) = (self.root_fd.clone(), 0);
        if let Some((last, last_fd)) = &self.last {
            if last == path {
                return Ok(Some(last_fd.clone()));
            }
            if path.starts_with(last.as_str()) && path.as_bytes().get(last.len()) == Some(&b'/') {
                (fd, at) = (last_fd.clone(), last.len() + 1);
            }
        }
        for name in path[at..].split('/') {
            let here = &path[..at + name.len()];
            at += name.len() + 1;
            let next = match open_dir(&fd, name).map_err(self.err(here))? {
                Some(next) => next,
                None if !make => return Ok(None),
                None => {
                    self.remove_in_way(&fd, name, here)?;
                    match rustix::fs::mkdirat(&*fd, name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.err(here)(e)),
                    }
                    // Made just now: something that took the name since is not followed.
                    open_dir(&fd, name)
                        .map_err(self.err(here))?
                        .ok_or_else(|| self.err(here)(Errno::NOTDIR))?
                }
            };
            if make {
                // A directory a pull before left read-only. Best effort: one owned by someone
                // else fails what is made in it, with that path.
                let st = rustix::fs::fstat(&next).map_err(self.err(here))?;
                let mode = st.st_mode & 0o7777;
                if mode & 0o700 != 0o700 {
                    let _ = rustix::fs::fchmod(&next, Mode::from_raw_mode(mode | 0o700));
                }
            }
            fd = Rc::new(next);
        }
        self.last = Some((path.to_string(), fd.clone()));
        Ok(Some(fd))
    }

    /// Removes `name` from `dir` (`path` in the tree) unless it is missing: a link goes (not
    /// what it points to), as does any other non-directory or an empty directory; a directory
    /// with entries is refused.
    fn remove_in_way(&self, dir: &OwnedFd, name: &str, path: &str) -> Result<(), TreeError> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR | Errno::PERM) => {
                match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(Errno::NOTEMPTY | Errno::EXIST) => Err(TreeError::InTheWay {
                        path: path.to_string(),
                    }),
                    Err(e) => Err(self.err(path)(e)),
                }
            }
            Err(e) => Err(self.err(path)(e)),
        }
    }

    /// A new, empty file at `path` (whatever had the name removed first), open for writing.
    pub(crate) fn create_file(&mut self, path: &str) -> Result<File, TreeError> {
        let (parent, name) = split(path);
        let dir = self.dir(parent)?;
        self.remove_in_way(&dir, name, path)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &*dir,
            name,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(self.err(path))?;
        Ok(File::from(fd))
    }

    /// The regular file at `path`, open for writing and cut to its first `keep` bytes (a
    /// resumed pull keeps what it wrote before). Anything else there is an error: the caller
    /// counted on those bytes.
    pub(crate) fn reopen_file(&mut self, path: &str, keep: u64) -> Result<File, TreeError> {
        let (parent, name) = split(path);
        let dir = self.dir(parent)?;
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*dir, name, flags, Mode::empty()).map_err(self.err(path))?;
        let st = rustix::fs::fstat(&fd).map_err(self.err(path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.err(path)(Errno::INVAL));
        }
        let file = File::from(fd);
        file.set_len(keep)
            .map_err(crate::tree::io(&self.root.join(path)))?;
        Ok(file)
    }

    /// A symbolic link at `path` to `target`, in place of whatever had the name.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        let (parent, name) = split(path);
        let dir = self.dir(parent)?;
        self.remove_in_way(&dir, name, path)?;
        rustix::fs::symlinkat(target, &*dir, name).map_err(self.err(path))
    }

    /// A hard link at `path` to the regular file at `target` (both paths in the tree), in
    /// place of whatever else had the name.
    pub(crate) fn hard_link(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        let (tparent, tname) = split(target);
        let tdir = self.dir(tparent)?;
        let st = rustix::fs::statat(&*tdir, tname, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.err(target))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.err(target)(Errno::INVAL));
        }
        let (parent, name) = split(path);
        let dir = self.dir(parent)?;
        match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(here) if here.st_ino == st.st_ino && here.st_dev == st.st_dev => return Ok(()),
            _ => self.remove_in_way(&dir, name, path)?,
        }
        rustix::fs::linkat(&*tdir, tname, &*dir, name, AtFlags::empty()).map_err(self.err(path))
    }

    /// A FIFO at `path` with permission bits `mode` (one already there is kept).
    pub(crate) fn fifo(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        let (parent, name) = split(path);
        let dir = self.dir(parent)?;
        if type_at(&dir, name).map_err(self.err(path))? != Some(FileType::Fifo) {
            self.remove_in_way(&dir, name, path)?;
            rustix::fs::mkfifoat(&*dir, name, Mode::from_raw_mode(0o600))
                .map_err(self.err(path))?;
        }
        // Opened to set its mode by descriptor: a read end does not wait for a writer.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*dir, name, flags, Mode::empty()).map_err(self.err(path))?;
        let st = rustix::fs::fstat(&fd).map_err(self.err(path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
            return Err(self.err(path)(Errno::INVAL));
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(self.err(path))
    }

    /// Sets the permission bits of the directory at `path`, if it is one.
    pub(crate) fn set_dir_mode(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        if let Some(fd) = self.find_dir(path)? {
            rustix::fs::fchmod(&*fd, Mode::from_raw_mode(mode)).map_err(self.err(path))?;
        }
        Ok(())
    }

    /// The regular file at `path`, open for reading; `None` if some part of `path` is not a
    /// directory (a link is not one) or the file is not there or not a regular file.
    pub(crate) fn open_existing(&mut self, path: &str) -> Result<Option<File>, TreeError> {
        let (parent, name) = split(path);
        let Some(dir) = self.find_dir(parent)? else {
            return Ok(None);
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::NXIO) => return Ok(None),
            Err(e) => return Err(self.err(path)(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(self.err(path))?;
        Ok((FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| File::from(fd)))
    }
}

/// Writes `plain` at byte `at` of `file`, whose bytes from `at` on read as zeros (it was cut
/// there): the parts of `plain` in each aligned block of the file that are all zeros are
/// skipped, so a block that holds nothing else stays a hole.
pub(crate) fn write_sparse(file: &File, at: u64, plain: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut start = 0usize;
    // The bytes not yet written from `run` to `start` hold data.
    let mut run = 0usize;
    while start < plain.len() {
        let offset = at + start as u64;
        let end = ((offset / HOLE_BLOCK + 1) * HOLE_BLOCK - at).min(plain.len() as u64) as usize;
        let block = &plain[start..end];
        // Zeros are already there: a block's zero part at a chunk's edge is skipped too.
        if is_zero(block) {
            if run < start {
                file.write_all_at(&plain[run..start], at + run as u64)?;
            }
            run = end;
        }
        start = end;
    }
    if run < plain.len() {
        file.write_all_at(&plain[run..], at + run as u64)?;
    }
    Ok(())
}

fn is_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(16);
    let words_zero = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    words_zero && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_every_byte_reads_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        // A chunk that starts mid-block: data, 64 KiB of zeros, data.
        let mut plain = vec![7u8; 100];
        plain.extend(vec![0u8; 64 * 1024]);
        plain.extend(vec![9u8; 5000]);
        write_sparse(&file, 1000, &plain).unwrap();
        file.set_len(1000 + plain.len() as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..1000], &[0u8; 1000][..]);
        assert_eq!(&back[1000..], &plain[..]);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.blocks() * 512 < 32 * 1024,
            "{} bytes allocated",
            meta.blocks() * 512
        );
    }
}
