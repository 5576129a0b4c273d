//! Confining a task process: resource limits and Landlock, then `exec`.
//!
//! The worker does not confine itself; it starts `gridwork sandbox-exec`, which calls
//! [`confine_and_exec`]: set the resource limits, restrict the file system with Landlock, then
//! replace itself with the task's program, which inherits both. This keeps the confinement in
//! safe Rust (no code between `fork` and `exec`). A task may read and execute everywhere
//! except beneath the paths it is hidden from (`Confinement::hidden`: the worker's home, with
//! its keys, its chunk cache and the work directories of other tasks, whose inputs lie there
//! decrypted; see [`readable_roots`]); it may write only
//!
//! - inside its work directory, and to `/dev/null`;
//! - regular files in `/dev/shm`, POSIX shared memory: Python's `multiprocessing` locks and
//!   queues, PyTorch's data loader workers and NCCL keep theirs there;
//! - with GPUs (`Confinement::gpu_devices`, found by [`gpu_devices`]): to those device nodes
//!   (opened for writing by every GPU runtime: `/dev/nvidiactl`, `/dev/nvidia0`,
//!   `/dev/nvidia-uvm`; `/dev/dri/renderD*` and `/dev/kfd` for AMD and Intel), and to files
//!   under `/proc`, because CUDA's start names its threads in `/proc/<pid>/task/<tid>/comm`,
//!   of whatever process calls it (a task's children too), and fails with error 304 ("OS call
//!   failed or operation not supported") when it cannot. Both seen on an H100 (2026-11-23).
//!   Landlock rules name inodes, not patterns, so no narrower rule reaches the threads of
//!   processes not yet started. Such a run therefore has a pid namespace and a `/proc` of its
//!   own ([`pid_init`]): the processes under it are the run's alone, so the files it may write
//!   there are theirs (a worker's `oom_score_adj` was writable before). `/proc/sys` and the
//!   like stay root's to write.
//!
//! Beyond the file system, at Landlock's sixth ABI: a task truncates only what it may write
//! (`truncate(2)` by path needs no open for writing), opens no TCP connection and listens on
//! no TCP port unless `Confinement::network` allows it, and signals (or reaches through
//! abstract UNIX sockets) only processes of its own sandbox, not its worker.
//!
//! On a root worker (the container executor needs one) a task does not run as root: root in
//! its own user namespace, mapped to the host's root, would pass the permission checks of
//! every root-owned file and socket the host has outside `/run` and `/tmp`. The process hands
//! its run directory to `nobody` (65534), keeps only the groups of the GPU device nodes it may
//! open (a render node is `root:render` 0660), and becomes `nobody` before anything else
//! ([`drop_root`]).
//!
//! Before Landlock, the process takes namespaces of its own (in a user namespace mapping only
//! its own uid and gid; see [`own_mounts`]): no network unless allowed (UDP and abstract
//! sockets included), a private `/dev/shm`, its own `tmp/` at `/tmp` and `/var/tmp`, nothing at
//! the user's `/run/user/<uid>`, and no socket under `/run` (Docker's among them).
//!
//! Landlock needs Linux 5.13 or later with the LSM enabled; where the kernel lacks it the
//! program still runs, under the resource limits alone, and [`confine_and_exec`] says so on
//! standard error.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use rlimit::Resource;

/// Limits for one task process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The only directory it may write to.
    pub work: PathBuf,
    /// Address-space limit in MiB.
    pub memory_mib: Option<u64>,
    /// Largest file it may write, in MiB.
    pub max_file_mib: Option<u64>,
    /// CPU seconds.
    pub cpu_seconds: Option<u64>,
    /// GPU device nodes (or directories of them) it may open for reading and writing; with
    /// any, it may also write files under `/proc` (see the module docs).
    pub gpu_devices: Vec<PathBuf>,
    /// Paths it may not read (its own work directory may lie beneath one).
    pub hidden: Vec<PathBuf>,
    /// May it open TCP connections and listen on TCP ports (no: neither)?
    pub network: bool,
    /// It is a service's server: it answers HTTP on the UNIX socket `GRIDWORK_SOCKET` names,
    /// `http.sock` in its `TMPDIR` (the run's `tmp/`), where the worker reaches it.
    pub serve: bool,
    /// The run's control group (a directory in each hierarchy, `crate::cgroup`), which the
    /// program starts in; none: the sandbox's own.
    pub cgroups: Vec<PathBuf>,
}

/// Why confinement failed (the program was not started).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// A resource limit could not be set.
    #[error("cannot set the {what} limit: {source}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Landlock failed in a way other than "not supported".
    #[error("cannot apply Landlock rules: {0}")]
    Landlock(String),
    /// The first process of the run's pid namespace could not be started or failed.
    #[error("cannot start the run in a pid namespace of its own: {0}")]
    PidInit(String),
    /// The run's control group could not be opened or entered.
    #[error("{0}")]
    Cgroup(String),
    /// A root worker's task could not be made to run as `nobody`.
    #[error("cannot run the task as nobody: {0}")]
    Identity(String),
    /// The program could not be executed.
    #[error("cannot execute `{command}`: {source}")]
    Exec {
        /// The command.
        command: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ConfineError {
    /// The exit code a shell gives a program it cannot execute, where this is the program's
    /// failure (the job's to fix) rather than the sandbox's: 127 when it is not there, 126
    /// for every other reason its file gives (not executable, not an executable format, an
    /// interpreter that is not one: `EIO`, `ELIBBAD`, `EINVAL`..., arguments too long). `None`
    /// for every failure of the sandbox itself (a limit, Landlock, the host out of memory,
    /// processes or open files): a requester's binary must not make its own failure read as
    /// the worker's, which commits nothing and is dropped (found by a review: an ELF whose
    /// interpreter was a text file failed with `EIO`, read as the sandbox's).
    pub fn program_exit_code(&self) -> Option<i32> {
        let ConfineError::Exec { source, .. } = self else {
            return None;
        };
        if source.kind() == std::io::ErrorKind::NotFound {
            return Some(127);
        }
        let errno = source
            .raw_os_error()
            .map(rustix::io::Errno::from_raw_os_error);
        use rustix::io::Errno;
        match errno {
            Some(Errno::NOTDIR | Errno::LOOP | Errno::NAMETOOLONG) => Some(127),
            Some(Errno::AGAIN | Errno::NFILE | Errno::MFILE | Errno::NOMEM) | None => None,
            Some(_) => Some(126),
        }
    }
}

/// Whether Landlock rules took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    /// All requested restrictions apply.
    Enforced,
    /// Some apply (an older kernel ABI).
    Partial,
    /// The kernel does not support Landlock.
    Unsupported,
}

/// Gives this process (and so the program it becomes) namespaces of its own, inside a user
/// namespace that maps only the worker's own uid and gid, so no privilege is needed:
///
/// - unless `c.network`, a network namespace with no interface up: no TCP, no UDP, no
///   abstract UNIX socket of the host (Landlock covers only TCP);
/// - a private, empty `/dev/shm` (POSIX shared memory: other tasks' segments are out of
///   reach, and nothing a task leaves there outlives it);
/// - an empty, read-only `/run` in place of the host's, where its daemons keep their sockets
///   (Docker's and containerd's, which are root on the host; a database's; the system and the
///   user's D-Bus, and through it `systemd-run --user`, which starts processes outside every
///   sandbox): Landlock does not cover connecting to a socket by its path, and covering the
///   sockets one by one missed those made, or made again, after the run started. A job with
///   the network keeps `/run/systemd/resolve` (where `/etc/resolv.conf` points on hosts that
///   run systemd-resolved);
/// - its own `tmp/` (in its work directory) at `/tmp` and `/var/tmp`, in place of the host's,
///   where other users' sockets lie (an ssh-agent's, an X server's); `TMPDIR` is then `/tmp`;
/// - `/dev/null` in place of Docker's socket where `/var/run` is not `/run`, of any socket
///   among `c.hidden` (a worker's own `--docker-socket`), and of the sockets under whichever of
///   `/run`, `/tmp` and `/var/tmp` holds the work directory (and so is kept).
///
/// With GPUs (`c.gpu_devices`), also a pid namespace of its own, whose first process mounts
/// a `/proc` of its own ([`pid_init`]): a task with a GPU may write files under `/proc`, and
/// in its own only its own processes' files are there.
///
/// Says whether `/tmp` is the run's own `tmp/` and whether the pid namespace was made. Fails
/// (and the run goes on with the shared mounts, saying so) where the host forbids
/// unprivileged user namespaces, or the process has threads (it has none here).
fn own_mounts(c: &Confinement) -> Result<Own, String> {
    use rustix::mount::{
        mount, mount_bind, mount_change, mount_remount, move_mount, open_tree, MountFlags,
        MountPropagationFlags, MoveMountFlags, OpenTreeFlags,
    };
    use rustix::thread::UnshareFlags;
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let tmp = c.work.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let work = c
        .work
        .canonicalize()
        .map_err(|e| format!("{}: {e}", c.work.display()))?;
    // A shared directory is replaced unless the work directory lies beneath it (its paths
    // would vanish); then its sockets are covered one by one, found before the namespaces
    // are made, as the host sees them.
    let replaceable = |shared: &Path| {
        shared.is_dir() && !shared.canonicalize().is_ok_and(|s| work.starts_with(s))
    };
    let replaced_tmp: Vec<&Path> = ["/var/tmp", "/tmp"]
        .map(Path::new)
        .into_iter()
        .filter(|s| replaceable(s))
        .collect();
    let run = Path::new("/run");
    let cover_run = replaceable(run);
    let sockets: Vec<PathBuf> = ["/var/tmp", "/tmp", "/run"]
        .map(Path::new)
        .into_iter()
        .filter(|d| d.is_dir() && !replaced_tmp.contains(d) && !(cover_run && *d == run))
        .flat_map(|dir| sockets_beneath(dir, 4))
        .filter(|s| !s.starts_with(&work))
        .collect();
    let mut flags = UnshareFlags::NEWUSER | UnshareFlags::NEWNS;
    if !c.network {
        flags |= UnshareFlags::NEWNET;
    }
    let pid = !c.gpu_devices.is_empty();
    if pid {
        flags |= UnshareFlags::NEWPID;
    }
    #[allow(deprecated)] // `unshare_unsafe` only differs for CLONE_FILES, not asked for here.
    rustix::thread::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    let write =
        |file: &str, text: String| std::fs::write(file, text).map_err(|e| format!("{file}: {e}"));
    write("/proc/self/uid_map", format!("{0} {0} 1", uid.as_raw()))?;
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/gid_map", format!("{0} {0} 1", gid.as_raw()))?;
    // Nothing mounted from here on reaches the host's namespace.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    let hidden_flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("tmpfs", "/dev/shm", "tmpfs", hidden_flags, c"mode=1777")
        .map_err(|e| format!("/dev/shm: {e}"))?;
    let is_socket = |path: &Path| {
        std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        })
    };
    let defaults = ["/run/docker.sock", "/var/run/docker.sock"].map(PathBuf::from);
    for socket in defaults.iter().chain(&c.hidden) {
        if is_socket(socket) {
            mount_bind("/dev/null", socket).map_err(|e| format!("{}: {e}", socket.display()))?;
        }
    }
    // One this user cannot reach the path of (a directory it may list but not search) it
    // cannot connect to either.
    for socket in &sockets {
        if is_socket(socket) {
            let _ = mount_bind("/dev/null", socket);
        }
    }
    if cover_run {
        let resolve = Path::new("/run/systemd/resolve");
        // Taken before `/run` is covered, put back after.
        let kept = (c.network && resolve.is_dir())
            .then(|| {
                open_tree(
                    rustix::fs::CWD,
                    resolve,
                    OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .ok()
            })
            .flatten();
        mount("tmpfs", run, "tmpfs", hidden_flags, c"mode=755,size=64k")
            .map_err(|e| format!("/run: {e}"))?;
        if let Some(tree) = kept {
            std::fs::create_dir_all(resolve).map_err(|e| format!("{}: {e}", resolve.display()))?;
            move_mount(
                &tree,
                "",
                rustix::fs::CWD,
                resolve,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| format!("{}: {e}", resolve.display()))?;
        }
        mount_remount(run, hidden_flags | MountFlags::RDONLY, c"")
            .map_err(|e| format!("/run read-only: {e}"))?;
    } else {
        let user_run = format!("/run/user/{}", uid.as_raw());
        if Path::new(&user_run).is_dir() && !work.starts_with(&user_run) {
            mount(
                "tmpfs",
                user_run.as_str(),
                "tmpfs",
                hidden_flags | MountFlags::RDONLY,
                c"mode=0",
            )
            .map_err(|e| format!("{user_run}: {e}"))?;
        }
    }
    // `/tmp` last: where this fails, `TMPDIR` (the worker's link in the host's `/tmp`) stays.
    for shared in &replaced_tmp {
        mount_bind(&tmp, *shared).map_err(|e| format!("{}: {e}", shared.display()))?;
    }
    Ok(Own {
        tmp: replaced_tmp.contains(&Path::new("/tmp")),
        pid,
    })
}

/// What [`own_mounts`] gave the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Own {
    /// `/tmp` is the run's own `tmp/`.
    tmp: bool,
    /// The run's processes start in a pid namespace of their own.
    pid: bool,
}

/// The UNIX sockets beneath `dir`, at most `depth` directories down, links not followed
/// (what cannot be read is skipped).
fn sockets_beneath(dir: &Path, depth: u32) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_socket() {
            found.push(entry.path());
        } else if kind.is_dir() && depth > 0 {
            found.extend(sockets_beneath(&entry.path(), depth - 1));
        }
    }
    found
}

/// Applies the limits and the Landlock rules to this process.
pub fn confine(c: &Confinement) -> Result<LandlockStatus, ConfineError> {
    // One file-creation mask everywhere, so equal programs leave equal modes in their
    // outputs (modes are part of an output's content id).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let mib = |m: u64| m.saturating_mul(1024 * 1024);
    if let Some(m) = c.memory_mib {
        Resource::AS
            .set(mib(m), mib(m))
            .map_err(|source| ConfineError::Limit {
                what: "memory",
                source,
            })?;
    }
    if let Some(m) = c.max_file_mib {
        Resource::FSIZE
            .set(mib(m), mib(m))
            .map_err(|source| ConfineError::Limit {
                what: "file size",
                source,
            })?;
    }
    if let Some(s) = c.cpu_seconds {
        Resource::CPU
            .set(s, s)
            .map_err(|source| ConfineError::Limit {
                what: "cpu time",
                source,
            })?;
    }
    // The highest ABI this crate has vetted: truncation (3), TCP bind and connect (4), device
    // ioctls (5), and scoping of signals and abstract UNIX sockets to the task's own
    // processes (6). An older kernel enforces what it knows (`LandlockStatus::Partial`).
    let abi = ABI::V6;
    let err = |e: &dyn std::fmt::Display| ConfineError::Landlock(e.to_string());
    // Writing through `>` opens with O_TRUNC, so every place a task may write, it may truncate.
    let write = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| err(&e))?
        .scope(Scope::from_all(abi))
        .map_err(|e| err(&e))?;
    // Handled with no port allowed: no TCP connection out, no TCP port listened on.
    let ruleset = if c.network {
        ruleset
    } else {
        ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| err(&e))?
    };
    let status = ruleset
        .create()
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(
            readable_roots(&c.hidden),
            AccessFs::from_read(abi),
        ))
        .map_err(|e| err(&e))?
        // Its `tmp/` by name too: bound at `/tmp` (see `own_mounts`), a path through it
        // climbs from there to `/`, never passing the work directory.
        .add_rules(path_beneath_rules(
            [
                c.work.as_path(),
                &c.work.join("tmp"),
                Path::new("/dev/null"),
            ],
            AccessFs::from_all(abi),
        ))
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(
            ["/dev/shm"],
            write | AccessFs::MakeReg | AccessFs::RemoveFile,
        ))
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(
            &c.gpu_devices,
            write | AccessFs::IoctlDev,
        ))
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(
            c.gpu_devices.first().map(|_| "/proc"),
            AccessFs::WriteFile | AccessFs::Truncate,
        ))
        .map_err(|e| err(&e))?
        .restrict_self()
        .map_err(|e| err(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unsupported,
    })
}

/// Pathname UNIX sockets, at Landlock's ninth ABI (Linux 7.1): the process connects only to
/// sockets beneath its work directory (its own `tmp/`: Python's `multiprocessing`, its own
/// servers), and, with the network, to systemd-resolved's beneath `/run/systemd/resolve`.
/// Before it, a task reached every socket of the host its user's permissions let it
/// (LXD's under `/var/snap`, sssd's under `/var/lib/sss`, one in another user's home) outside
/// `/run`, `/tmp` and `/var/tmp`, which its own mounts cover. A second Landlock layer, so an
/// older kernel enforces the first in full and ignores this one: whether it holds here.
pub(crate) fn confine_unix_sockets(c: &Confinement) -> Result<bool, ConfineError> {
    let err = |e: &dyn std::fmt::Display| ConfineError::Landlock(e.to_string());
    let mut reachable = vec![c.work.clone(), c.work.join("tmp")];
    if c.network {
        reachable.push(PathBuf::from("/run/systemd/resolve"));
    }
    let status = Ruleset::default()
        .handle_access(AccessFs::ResolveUnix)
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(&reachable, AccessFs::ResolveUnix))
        .map_err(|e| err(&e))?
        .restrict_self()
        .map_err(|e| err(&e))?;
    Ok(status.ruleset == RulesetStatus::FullyEnforced)
}

/// What to grant reading so that everything is readable but what lies beneath `hidden`:
/// `/` itself when nothing is hidden; else every entry of `/` and, on the way down to each
/// hidden path, every entry beside the way (Landlock only grants; it cannot take a subtree
/// back). An entry that resolves (a symbolic link) into a hidden path, or to a directory
/// holding one, is left out. Hidden paths that do not exist are ignored. Listing the
/// directories on the way (`ls /`) is refused too: names beside them would be readable, and
/// so would the hidden entry's own name.
pub fn readable_roots(hidden: &[PathBuf]) -> Vec<PathBuf> {
    let hidden: Vec<PathBuf> = hidden
        .iter()
        .filter_map(|h| h.canonicalize().ok())
        .collect();
    if hidden.is_empty() {
        return vec![PathBuf::from("/")];
    }
    let mut roots = Vec::new();
    let mut on_the_way = vec![PathBuf::from("/")];
    while let Some(dir) = on_the_way.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if hidden.iter().any(|h| real.starts_with(h)) {
                continue;
            }
            if hidden.iter().any(|h| h.starts_with(&real)) {
                // A directory holding a hidden path: go down it, unless this is a link to it
                // (the directory itself is on a way already).
                if real == path {
                    on_the_way.push(path);
                }
                continue;
            }
            roots.push(path);
        }
    }
    roots.sort();
    roots
}

/// The GPU device nodes under `dev` (normally `/dev`) a task needs to use its GPUs: NVIDIA's
/// (`nvidia*`, `nvidia-caps/`), the DRM render nodes (`dri/`) and AMD's compute node (`kfd`).
/// Sorted; empty on a machine without GPUs.
pub fn gpu_devices(dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("nvidia") || n == "dri" || n == "kfd")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Confines this process and replaces it with `command args`. Returns only on failure.
///
/// With GPUs, where the run has a pid namespace of its own, this process does not become the
/// program: it starts `init` (given the write end of a pipe for the program's end, to pass to
/// `gridwork sandbox-exec --pid-init-status-fd`), the namespace's first process, which mounts
/// its `/proc`, confines itself and starts the program ([`pid_init`]); this process waits for
/// it and ends as the program ended.
pub fn confine_and_exec(
    c: &Confinement,
    command: &str,
    args: &[String],
    init: &dyn Fn(&Path, std::os::fd::OwnedFd) -> std::process::Command,
    report: &crate::supervise::SetupReport,
) -> ConfineError {
    // This executable, held open: the run's own mounts may cover the path it was started
    // from (one beneath /tmp, where a clean clone's build lies), and a run with GPUs starts it
    // again as its pid namespace's first process.
    let exe = std::fs::File::open("/proc/self/exe");
    if let Err(why) = first_to_die() {
        eprintln!(
            "gridwork sandbox: {why}: out of memory, the kernel may end the worker before the task"
        );
    }
    // Opened while this process may write it; entered just before the program starts.
    let entry = match crate::cgroup::Entry::open(&c.cgroups) {
        Ok(entry) => entry,
        Err(e) => return ConfineError::Cgroup(e.to_string()),
    };
    if let Err(why) = drop_root(c) {
        return ConfineError::Identity(why);
    }
    let own = own_mounts(c);
    if let Err(why) = &own {
        eprintln!("gridwork sandbox: no namespaces of its own ({why}): /dev/shm, /tmp, the host's sockets and UDP stay shared and reachable");
    }
    let own = own.ok();
    if own.is_some_and(|o| o.pid) {
        let exe = match exe {
            Ok(exe) => exe,
            Err(e) => return ConfineError::PidInit(format!("opening /proc/self/exe: {e}")),
        };
        return wait_for_init(c, own.is_some_and(|o| o.tmp), init, report, &entry, &exe);
    }
    if let Err(e) = entry.admit(std::process::id()) {
        return ConfineError::Cgroup(e.to_string());
    }
    if let Err(e) = confine_saying(c) {
        return e;
    }
    let source = program_command(c, command, args, own.is_some_and(|o| o.tmp)).exec();
    ConfineError::Exec {
        command: command.to_string(),
        source,
    }
}

/// [`confine`] and [`confine_unix_sockets`], saying on standard error what of Landlock does
/// not hold here.
fn confine_saying(c: &Confinement) -> Result<(), ConfineError> {
    let status = confine(c)?;
    confine_unix_sockets(c)?;
    match status {
        LandlockStatus::Enforced => {}
        LandlockStatus::Partial => eprintln!("gridwork sandbox: Landlock Partial on this kernel (an older ABI): some restrictions (truncation, TCP, signals) do not apply"),
        LandlockStatus::Unsupported => eprintln!("gridwork sandbox: Landlock Unsupported on this kernel; running under resource limits only"),
    }
    Ok(())
}

/// The program's command: standard input `/dev/null`; `TMPDIR` its own `/tmp` where it has
/// one (short enough for socket paths); a server's `GRIDWORK_SOCKET`.
fn program_command(
    c: &Confinement,
    command: &str,
    args: &[String],
    own_tmp: bool,
) -> std::process::Command {
    let mut program = std::process::Command::new(command);
    program.args(args).stdin(std::process::Stdio::null());
    set_program_env(&mut program, c, own_tmp);
    program
}

fn set_program_env(cmd: &mut std::process::Command, c: &Confinement, own_tmp: bool) {
    if own_tmp {
        cmd.env("TMPDIR", "/tmp");
    }
    if c.serve {
        let tmp = match own_tmp {
            true => "/tmp".to_string(),
            false => {
                std::env::var("TMPDIR").unwrap_or_else(|_| c.work.join("tmp").display().to_string())
            }
        };
        cmd.env("GRIDWORK_SOCKET", format!("{tmp}/{SERVICE_SOCKET}"));
    }
}

/// Starts the pid namespace's first process (`init`, with `CAP_SYS_ADMIN` in the run's user
/// namespace for its mount of `/proc` alone), moves it into the run's control group
/// (`entry`) and tells it to go on, waits for it, and ends as the program did (as `init` says
/// on the socket it gets as its standard input; as `init` itself ended where it said
/// nothing: it could not start the program). Returns `init`'s failure to set up.
fn wait_for_init(
    c: &Confinement,
    own_tmp: bool,
    init: &dyn Fn(&Path, std::os::fd::OwnedFd) -> std::process::Command,
    report: &crate::supervise::SetupReport,
    entry: &crate::cgroup::Entry,
    exe: &std::fs::File,
) -> ConfineError {
    use crate::supervise::{Exit, RunStatus};
    use rustix::thread::CapabilitySet;
    let fail =
        |what: &str, e: &dyn std::fmt::Display| ConfineError::PidInit(format!("{what}: {e}"));
    // Made in the user namespace, this process holds every capability in it; the one `init`
    // needs goes on across its `exec` as an ambient capability.
    let raised = rustix::thread::capabilities(None).and_then(|mut sets| {
        sets.inheritable |= CapabilitySet::SYS_ADMIN;
        rustix::thread::set_capabilities(None, sets)?;
        rustix::thread::configure_capability_in_ambient_set(CapabilitySet::SYS_ADMIN, true)
    });
    if let Err(e) = raised {
        return fail("raising CAP_SYS_ADMIN for init", &e);
    }
    // Both ways: "go" to `init` once it is in the run's group, how the program ended back.
    let (said, say) = match std::os::unix::net::UnixStream::pair() {
        Ok(ends) => ends,
        Err(e) => return fail("making init's socket", &e),
    };
    // Started by its descriptor: the kernel opens the file before it closes the descriptors
    // marked close-on-exec, this one among them.
    let exe = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(exe)
    ));
    let mut cmd = init(&exe, std::os::fd::OwnedFd::from(say));
    set_program_env(&mut cmd, c, own_tmp);
    let child = cmd.spawn();
    // Not this process's to keep: it only waits.
    let _ = rustix::thread::clear_ambient_capability_set();
    // The write end lives only in `init` now, so the pipe ends with it.
    drop(cmd);
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return fail("starting init", &e),
    };
    let mut said = said;
    // Once `init` has started (what its start pages in is the worker's, not the run's: the
    // program alone is what the job's memory holds), into the group, then on.
    let mut ready = [0; READY.len()];
    let entered = std::io::Read::read_exact(&mut said, &mut ready)
        .and_then(|()| match &ready == READY {
            true => Ok(()),
            false => Err(std::io::Error::other("init said something else than ready")),
        })
        .and_then(|()| entry.admit(child.id()))
        .and_then(|()| std::io::Write::write_all(&mut said, GO));
    if let Err(e) = entered {
        let _ = child.kill();
        let _ = child.wait();
        return ConfineError::Cgroup(e.to_string());
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(e) => return fail("running init", &e),
    };
    let mut line = String::new();
    let _ = std::io::Read::read_to_string(&mut said, &mut line);
    // Exactly one line, as `init` writes it.
    let told = line
        .strip_suffix('\n')
        .filter(|l| !l.contains('\n'))
        .and_then(RunStatus::from_line);
    let exit = match told {
        Some(RunStatus::Ended(exit)) => exit,
        _ if !line.trim().is_empty() => return ConfineError::PidInit(line.trim().to_string()),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::Code(125),
            }
        }
    };
    // To the supervisor as well: this process cannot always end by the program's signal.
    report.ended(exit);
    crate::supervise::exit_as(exit)
}

/// What `init` says once it has started, waiting to be put in the run's control group.
const READY: &[u8; 6] = b"ready\n";

/// What the inner process sends `init` once it is in the run's control group.
const GO: &[u8] = b"go\n";

/// The first process of a run's pid namespace (`gridwork sandbox-exec --pid-init`): mounts
/// the namespace's own `/proc` (so the files a task with a GPU may write there are its own
/// processes' alone), gives up every capability, confines itself, starts the program and
/// reaps every process of the namespace (orphans come to it) until the program ends; then it
/// says how on `report` and exits, which ends every process left in the namespace. Returns
/// only on failure, before the program started.
pub fn pid_init(
    c: &Confinement,
    command: &str,
    args: &[String],
    report: &crate::supervise::SetupReport,
) -> ConfineError {
    use rustix::mount::{mount, MountFlags};
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if let Err(e) = mount("proc", "/proc", "proc", flags, c"") {
        eprintln!("gridwork sandbox: cannot mount a /proc of the run's own ({e}): the host's stays, whose files of this user's other processes a task with a GPU may write");
    }
    let dropped = rustix::thread::clear_ambient_capability_set().and_then(|()| {
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        )
    });
    if let Err(e) = dropped {
        return ConfineError::PidInit(format!("giving up capabilities: {e}"));
    }
    // The program runs as this process's user, in its Landlock domain: where this process is
    // dumpable, the program could open its pipe through `/proc/1/fd` (or write its memory)
    // and say how the run ended for it (a review made a finished run read as a failed setup,
    // which its worker commits nothing for). Not dumpable, `/proc/1` is root's, and the
    // program has no capability to pass that.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        return ConfineError::PidInit(format!("making init not dumpable: {e}"));
    }
    // In the run's control group from here: what `init` holds already is the worker's.
    report.said(READY);
    if !report.wait_for(GO) {
        return ConfineError::PidInit(
            "the inner process did not put init in the run's group".into(),
        );
    }
    if let Err(e) = confine_saying(c) {
        return e;
    }
    let mut program = std::process::Command::new(command);
    program.args(args).stdin(std::process::Stdio::null());
    let child = match program.spawn() {
        Ok(child) => child,
        Err(source) => {
            return ConfineError::Exec {
                command: command.to_string(),
                source,
            }
        }
    };
    let program = rustix::process::Pid::from_raw(child.id() as i32);
    let exit = loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if Some(pid) == program => {
                break crate::supervise::exit_of(status)
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return ConfineError::PidInit(format!("waiting for the program: {e}")),
        }
    };
    report.ended(exit);
    std::process::exit(0)
}

/// What of the sandbox holds on this machine, found by confining a process exactly as a
/// task's is confined (`gridwork sandbox-exec --check`), not by reading kernel versions: a
/// kernel can be new and still forbid user namespaces, or boot without the Landlock LSM.
/// A worker runs the check when it starts and warns its provider of every weakness, with
/// what it costs and how to mend it ([`SandboxCheck::weaknesses`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxCheck {
    /// Whether the worker runs as root, so that its tasks run as `nobody`.
    pub root: bool,
    /// Why a root worker's task could not become `nobody` (its every run would fail).
    pub identity: Option<String>,
    /// Why the task could not have namespaces of its own (`None`: it has them).
    pub namespaces: Option<String>,
    /// Whether the Landlock rules took effect: `enforced`, `partial` or `unsupported`.
    pub landlock: LandlockStatus,
    /// Why applying the Landlock rules failed outright (every run would fail).
    pub landlock_error: Option<String>,
    /// The supplementary groups a task keeps (a worker not run as root keeps its user's:
    /// an unprivileged user namespace cannot drop them).
    pub groups: Vec<u32>,
    /// Why runs are not held to their job's memory, CPUs or a number of processes by a
    /// control group of their own (`None`: they are); set by the worker, which makes the
    /// groups (`crate::cgroup`), not by the confined check.
    #[serde(default)]
    pub limits: Option<String>,
    /// Whether a task connects only to pathname UNIX sockets beneath its run (Landlock's
    /// ninth ABI, Linux 7.1; before it, to whatever sockets its user may reach outside the
    /// `/run`, `/tmp` and `/var/tmp` its namespaces cover: said by `gridwork probe`, not
    /// counted a weakness, no kernel before 7.1 having it).
    #[serde(default)]
    pub unix_sockets: bool,
}

impl SandboxCheck {
    /// Confines this process as a task's would be and says what held. The process is left
    /// confined: run it in a process of its own, which then exits.
    pub fn run(c: &Confinement) -> SandboxCheck {
        let root = rustix::process::getuid().is_root();
        let identity = drop_root(c).err();
        let namespaces = own_mounts(c).err();
        let (landlock, landlock_error) = match confine(c) {
            Ok(status) => (status, None),
            Err(e) => (LandlockStatus::Unsupported, Some(e.to_string())),
        };
        let unix_sockets = landlock_error.is_none() && confine_unix_sockets(c).unwrap_or(false);
        // Groups as the kernel checks them (the namespace shows unmapped ones as nobody). A
        // root worker's tasks keep only its GPU nodes' groups, on purpose.
        let groups = std::fs::read_to_string("/proc/self/status")
            .ok()
            .filter(|_| !root)
            .and_then(|status| {
                let line = status
                    .lines()
                    .find(|l| l.starts_with("Groups:"))?
                    .to_string();
                Some(
                    line.trim_start_matches("Groups:")
                        .split_whitespace()
                        .filter_map(|g| g.parse::<u32>().ok())
                        .filter(|g| *g != rustix::process::getgid().as_raw())
                        .collect(),
                )
            })
            .unwrap_or_default();
        SandboxCheck {
            root,
            identity,
            namespaces,
            landlock,
            landlock_error,
            groups,
            limits: None,
            unix_sockets,
        }
    }

    /// Every way tasks here are less confined than Gridwork's sandbox, each with what it
    /// exposes and the fix; empty where the whole sandbox holds.
    pub fn weaknesses(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(why) = &self.identity {
            found.push(format!(
                "a root worker's tasks cannot be made to run as nobody ({why}): every process task fails to start; map uid and gid 65534 into the worker's user namespace, or run the worker as a user of its own"
            ));
        }
        if let Some(why) = &self.landlock_error {
            found.push(format!(
                "the Landlock rules cannot be applied ({why}): every process task fails to start"
            ));
        }
        if !self.groups.is_empty() {
            let listed: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            found.push(format!(
                "tasks keep this user's supplementary groups ({}): a file or socket open to one of them is open to tasks (a daemon's socket for the lxd, incus or docker group is root on this machine); run the worker as a user of its own with no other groups, or as root (its tasks run as nobody)",
                listed.join(", ")
            ));
        }
        if let Some(why) = &self.namespaces {
            found.push(format!(
                "no namespaces of their own ({why}): tasks share /dev/shm, /tmp and the host's sockets, and may send UDP; allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 on Debian kernels before 5.10; kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04)"
            ));
        }
        if let Some(why) = &self.limits {
            found.push(format!(
                "runs are not held to their job's memory and CPUs, nor to {} processes: jobs that set their memory are declined, and a task may take every CPU or fork without end; {why}",
                crate::cgroup::PIDS_LIMIT
            ));
        }
        match self.landlock {
            LandlockStatus::Enforced => {}
            LandlockStatus::Partial => found.push(
                "Landlock at an older ABI: some of truncation by path, TCP connect and bind, and the scoping of signals and abstract sockets are not enforced, so a task may truncate files it can only read, use TCP, or signal its worker; Linux 6.12 or later enforces them all".into(),
            ),
            LandlockStatus::Unsupported if self.landlock_error.is_none() => found.push(
                "no Landlock on this kernel: tasks can read the worker's keys and chunk cache and other tasks' decrypted inputs, and write wherever this user can; use Linux 5.13 or later (6.12 for all of it) with `landlock` in its lsm= boot list, or --executor docker".into(),
            ),
            LandlockStatus::Unsupported => {}
        }
        found
    }

    /// One line for people: `full (...)` or `weaker: N weaknesses`.
    pub fn summary(&self) -> String {
        let weaknesses = self.weaknesses().len();
        if weaknesses > 0 {
            return format!(
                "weaker than Gridwork's sandbox: {weaknesses} weakness{}",
                if weaknesses == 1 { "" } else { "es" }
            );
        }
        format!(
            "full (Landlock, namespaces of its own{})",
            if self.root {
                ", tasks run as nobody"
            } else {
                ""
            }
        )
    }
}

/// Makes this process (and the task it becomes, and everything it starts) the first the
/// kernel ends when the machine runs out of memory: a task that spreads its memory over
/// many processes would otherwise make its worker the largest target, and a worker ended
/// that way misses its deadlines and is slashed. Raising one's own score needs no privilege.
fn first_to_die() -> Result<(), String> {
    std::fs::write("/proc/self/oom_score_adj", "1000")
        .map_err(|e| format!("cannot raise /proc/self/oom_score_adj: {e}"))
}

/// The name of a service server's socket in its run's `tmp/`.
pub const SERVICE_SOCKET: &str = "http.sock";

/// The uid and gid a root worker's tasks run as.
pub(crate) const NOBODY: u32 = 65534;

/// A root worker's tasks run as `nobody` (65534), who must be able to reach their run directories
/// beneath `work_dir`: the first existing directory on its path that others may not search
/// (mode without `o+x`, such as `/root`, 0700), with its mode, or `None` when every one may
/// be searched. With one, every task would fail the same way on that worker (its inputs and
/// outputs out of reach), be settled as the program's failure, and a service's server would
/// not start; a root worker refuses to start instead, naming the directory.
pub fn unsearchable_for_tasks(work_dir: &Path) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    work_dir.ancestors().find_map(|dir| {
        let meta = std::fs::metadata(dir).ok()?;
        let mode = meta.mode() & 0o7777;
        (meta.is_dir() && mode & 0o001 == 0 && meta.uid() != NOBODY)
            .then(|| (dir.to_path_buf(), mode))
    })
}

/// On a root worker: hands the run directory `c.work` (everything beneath it; no link
/// followed) to [`NOBODY`], keeps only the groups of the GPU device nodes the task may open,
/// and becomes `nobody`, for good (real, effective and saved ids). Nothing for a worker that is
/// not root: its tasks run as its own user.
fn drop_root(c: &Confinement) -> Result<(), String> {
    use rustix::process::{Gid, Uid};
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::getuid().is_root() {
        return Ok(());
    }
    fn hand_over(path: &Path) -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
                let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
                hand_over(&entry.path())?;
            }
        }
        Ok(())
    }
    hand_over(&c.work)?;
    // The nodes' groups: a directory of them (`/dev/dri` is `root:root`) by its entries (a
    // render node is `root:render`, 0660).
    let nodes = c
        .gpu_devices
        .iter()
        .flat_map(|d| match std::fs::read_dir(d) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => vec![d.clone()],
        });
    let mut groups: Vec<Gid> = nodes
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| m.gid())
        .filter(|g| *g != 0)
        .map(Gid::from_raw)
        .collect();
    groups.sort_by_key(|g| g.as_raw());
    groups.dedup();
    rustix::thread::set_thread_groups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    rustix::thread::set_thread_res_gid(
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
    )
    .map_err(|e| format!("setresgid: {e}"))?;
    rustix::thread::set_thread_res_uid(
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
    )
    .map_err(|e| format!("setresuid: {e}"))?;
    if rustix::process::getuid().is_root() || rustix::process::geteuid().is_root() {
        return Err("still root after setresuid".into());
    }
    // A change of ids makes the process undumpable, which leaves its /proc files root's: it
    // could not write its own user namespace's maps. Dumpable again, as any process of
    // `nobody` is (Landlock still keeps every other process from tracing it).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(|e| format!("making the process dumpable again: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A work directory beneath a directory others may not search (`/root`, a `mktemp -d`)
    /// is named with its mode; one beneath searchable directories is not.
    #[test]
    fn a_directory_nobody_cannot_search_above_the_work_directory_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let closed = dir.path().join("closed");
        for (d, mode) in [(&open, 0o755), (&closed, 0o700)] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Not made yet: its existing ancestors are what count.
        assert_eq!(
            unsearchable_for_tasks(&closed.join("worker/dev1")),
            Some((closed.clone(), 0o700))
        );
        let reachable = unsearchable_for_tasks(&open.join("worker/dev1"));
        assert!(
            reachable
                .as_ref()
                .is_none_or(|(d, _)| !d.starts_with(dir.path())),
            "{reachable:?}"
        );
    }

    #[test]
    fn gpu_devices_lists_nvidia_dri_and_kfd_nodes_and_nothing_else() {
        let dev = tempfile::tempdir().unwrap();
        for name in [
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "kfd",
            "null",
            "sda",
            "nvme0",
        ] {
            std::fs::write(dev.path().join(name), b"").unwrap();
        }
        for name in ["nvidia-caps", "dri", "shm"] {
            std::fs::create_dir(dev.path().join(name)).unwrap();
        }
        let names: Vec<String> = gpu_devices(dev.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "dri",
                "kfd",
                "nvidia-caps",
                "nvidia-uvm",
                "nvidia0",
                "nvidiactl"
            ]
        );
        assert!(gpu_devices(&dev.path().join("missing")).is_empty());
    }

    #[test]
    fn readable_roots_cover_everything_but_the_hidden_paths() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path().canonicalize().unwrap();
        let home = base.join("home");
        for dir in ["home/keys", "home/worker/tasks", "beside/deep", "home-not"] {
            std::fs::create_dir_all(base.join(dir)).unwrap();
        }
        std::fs::write(base.join("file"), b"").unwrap();
        std::os::unix::fs::symlink(base.join("home/keys"), base.join("to-keys")).unwrap();
        std::os::unix::fs::symlink(&base, base.join("to-base")).unwrap();
        std::os::unix::fs::symlink(base.join("beside"), base.join("to-beside")).unwrap();
        let roots = readable_roots(&[home.clone(), base.join("no-such-dir")]);
        let under: Vec<String> = roots
            .iter()
            .filter_map(|r| r.strip_prefix(&base).ok())
            .map(|r| r.display().to_string())
            .collect();
        assert_eq!(under, ["beside", "file", "home-not", "to-beside"]);
        // Every entry of `/` but the one holding the base, and nothing beneath the home.
        for entry in std::fs::read_dir("/").unwrap().filter_map(Result::ok) {
            let path = entry.path();
            let holds_base = base.starts_with(path.canonicalize().unwrap_or_default());
            assert_eq!(roots.contains(&path), !holds_base, "{}", path.display());
        }
        assert!(roots.iter().all(|r| !r.starts_with(&home)));
        assert_eq!(readable_roots(&[]), [PathBuf::from("/")]);
    }

    fn whole() -> SandboxCheck {
        SandboxCheck {
            root: true,
            identity: None,
            namespaces: None,
            landlock: LandlockStatus::Enforced,
            landlock_error: None,
            groups: Vec::new(),
            limits: None,
            unix_sockets: false,
        }
    }

    #[test]
    fn a_whole_sandbox_has_no_weakness_and_says_so() {
        assert!(whole().weaknesses().is_empty());
        assert_eq!(
            whole().summary(),
            "full (Landlock, namespaces of its own, tasks run as nobody)"
        );
    }

    #[test]
    fn each_weakness_names_what_it_exposes_and_the_fix() {
        let no_namespaces = SandboxCheck {
            namespaces: Some("unshare: Operation not permitted".into()),
            ..whole()
        };
        let [w] = &no_namespaces.weaknesses()[..] else {
            panic!("{:?}", no_namespaces.weaknesses())
        };
        assert!(w.contains("Operation not permitted") && w.contains("/dev/shm"));
        assert!(w.contains("max_user_namespaces"), "{w}");
        let partial = SandboxCheck {
            landlock: LandlockStatus::Partial,
            ..whole()
        };
        assert!(partial.weaknesses()[0].contains("Linux 6.12"));
        let none = SandboxCheck {
            landlock: LandlockStatus::Unsupported,
            ..whole()
        };
        assert!(none.weaknesses()[0].contains("worker's keys"));
        let grouped = SandboxCheck {
            root: false,
            groups: vec![108],
            ..whole()
        };
        assert!(grouped.weaknesses()[0].contains("supplementary groups (108)"));
        let unlimited = SandboxCheck {
            limits: Some("no cgroup memory controller is mounted".into()),
            ..whole()
        };
        let [w] = &unlimited.weaknesses()[..] else {
            panic!("{:?}", unlimited.weaknesses())
        };
        assert!(
            w.contains("no cgroup memory controller") && w.contains("declined"),
            "{w}"
        );
        let broken = SandboxCheck {
            identity: Some("setresuid: Invalid argument".into()),
            landlock: LandlockStatus::Unsupported,
            landlock_error: Some("ruleset: bad".into()),
            ..whole()
        };
        // A failure to apply the rules is said once, as the failure it is.
        let said = broken.weaknesses();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said.iter().all(|w| w.contains("fails to start")));
        assert_eq!(
            broken.summary(),
            "weaker than Gridwork's sandbox: 2 weaknesses"
        );
    }
}
