//! Holding a process task to its job's memory and CPUs, and to a number of processes: a
//! control group for each run.
//!
//! A container gets the job's memory (`requirements.min_memory_mib`, no swap beyond it) and
//! CPUs (`min_cpu_cores`) from its engine; a process task gets them here. The worker finds at
//! start where it may make control groups ([`Cgroups::find`]): beneath its own group in each
//! cgroup v1 hierarchy it can write (memory, and cpu and pids where mounted), or beneath its
//! own group in the unified (v2) hierarchy, moving itself into a leaf `gridwork-worker` first
//! where it must (v2 lets a group that holds processes hand no controller to its children).
//! For each run it makes `gridwork-run-<worker tag>-<pid>-<n>` with the run's limits
//! ([`Cgroups::create`]); `sandbox-exec --cgroup` opens it while it may still write it and
//! puts the program into it just before it starts ([`Entry`]: the sandbox's own processes
//! stay out, charged to the worker), so the program and everything it starts are held to
//! the limits and cannot leave: the group's files are root's (a root worker's tasks run as
//! `nobody`) or out of the task's Landlock reach. After the run the worker asks whether the
//! kernel's OOM killer ended one of its processes, and for whose memory
//! ([`RunCgroup::oom_kill`]: the run's own limit makes it `RunEnd::OutOfMemory`, the
//! machine's a failure of the worker's), and removes the group, killing anything left in it
//! (on a thread of its own where that takes more than a moment). A worker clears at start
//! the groups an earlier process of itself left, and no other worker's.
//!
//! Where no group can be made (a worker that is not root and has no delegated group of its
//! own), the worker says so at start and in `gridwork probe` ([`Unavailable`]), runs process
//! tasks without these limits, and declines jobs that set their memory: a run held to it on
//! one worker and not on another could end differently on each, and the honest one could be
//! out-voted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The most processes (and threads) a run may have at once; the same for containers.
pub const PIDS_LIMIT: u64 = 4096;

/// The CPU time a run's CPUs are counted in, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// How close (bytes) to its v1 limit a group's high-water mark must come for the limit to
/// count as reached: the kernel charges in batches of 64 pages.
const WITHIN_LIMIT: u64 = 256 << 10;

/// The name of the leaf a v2 worker moves itself into.
const WORKER_LEAF: &str = "gridwork-worker";

/// The prefix of a run's group.
const RUN_PREFIX: &str = "gridwork-run-";

/// What one run is held to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Memory in MiB, swap included (none: the worker's whole memory).
    pub memory_mib: Option<u64>,
    /// CPUs' worth of time (none: every CPU).
    pub cpus: Option<u32>,
}

impl RunLimits {
    /// A job's: its `min_memory_mib` and `min_cpu_cores`, where set.
    pub fn of(requirements: &gridwork_types::Requirements) -> RunLimits {
        RunLimits {
            memory_mib: Some(requirements.min_memory_mib).filter(|m| *m > 0),
            cpus: Some(requirements.min_cpu_cores).filter(|c| *c > 0),
        }
    }
}

/// Where this worker makes its runs' control groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    layout: Layout,
    /// Whose groups these are: a short digest of the worker's own name (its work directory),
    /// in each group's name, so a worker clears only what an earlier run of itself left.
    tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// cgroup v1: the worker's own group in each hierarchy it may write.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    /// cgroup v2: the group the runs' groups go beneath, and whether it hands them the cpu
    /// and pids controllers (memory it must).
    V2 {
        base: PathBuf,
        cpu: bool,
        pids: bool,
    },
}

/// Why runs cannot be held to their job's memory here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// No memory controller is mounted.
    #[error("no cgroup memory controller is mounted (neither a cgroup v1 hierarchy with `memory` nor cgroup2 with it in {dir})")]
    NoMemoryController {
        /// Where it was looked for.
        dir: String,
    },
    /// The worker may not make groups beneath its own.
    #[error("the worker may not make control groups in {dir} ({why}): run it as root, or in a group of its own that it may write (`systemd-run --user --scope -p Delegate=yes gridwork worker ...`)")]
    NotWritable {
        /// Its group.
        dir: String,
        /// What the kernel said.
        why: String,
    },
    /// cgroup v2: other processes share the worker's group, so it can hand no controller on.
    #[error("other processes share the worker's control group {dir}, so it cannot hand its runs the memory controller: start the worker in a group of its own (`systemd-run --scope -p Delegate=yes gridwork worker ...`)")]
    Shared {
        /// Its group.
        dir: String,
    },
    /// `/proc/self/mountinfo` or `/proc/self/cgroup` could not be read.
    #[error("cannot read {path}: {why}")]
    Proc {
        /// The file.
        path: &'static str,
        /// What the kernel said.
        why: String,
    },
}

/// Why a run's group could not be made (the run does not start; the worker's failure).
#[derive(Debug, thiserror::Error)]
#[error("cannot make the run's control group {dir}: {what}: {source}")]
pub struct CgroupError {
    dir: String,
    what: String,
    source: std::io::Error,
}

fn cgroup_error(dir: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let dir = dir.display().to_string();
    let what = what.into();
    move |source| CgroupError { dir, what, source }
}

/// Each run's group in this process gets its own number.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    /// Where this process may make control groups for the runs of worker `owner` (its work
    /// directory: one worker process uses it at a time), cleared of the groups an earlier
    /// process of that worker left (one killed mid-run); on cgroup v2 this process may move
    /// into a leaf of its group. Other workers' groups are never touched: a hierarchy may be
    /// shared with workers in other pid namespaces, whose process ids mean nothing here
    /// (a review found a worker could clear a live one's groups that way).
    pub fn find(owner: &str) -> Result<Cgroups, Unavailable> {
        let tag = gridwork_types::Hash::of(owner.as_bytes()).to_string()[..12].to_string();
        let read = |path: &'static str| {
            std::fs::read_to_string(path).map_err(|e| Unavailable::Proc {
                path,
                why: e.to_string(),
            })
        };
        let found = locate(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?);
        let cgroups = match found {
            Located {
                memory: Some(memory),
                cpu,
                pids,
                ..
            } => {
                writable(&memory)?;
                Cgroups {
                    layout: Layout::V1 {
                        memory,
                        cpu: cpu.filter(|d| writable(d).is_ok()),
                        pids: pids.filter(|d| writable(d).is_ok()),
                    },
                    tag,
                }
            }
            Located {
                unified: Some(own), ..
            } => Cgroups {
                layout: unified_base(&own)?,
                tag,
            },
            Located { .. } => {
                return Err(Unavailable::NoMemoryController {
                    dir: "/sys/fs/cgroup".into(),
                })
            }
        };
        cgroups.clear_leftovers();
        Ok(cgroups)
    }

    /// Makes a group for one run, held to `limits` and [`PIDS_LIMIT`] processes.
    pub fn create(&self, limits: RunLimits) -> Result<RunCgroup, CgroupError> {
        let name = format!(
            "{RUN_PREFIX}{}-{}-{}",
            self.tag,
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let memory_bytes = limits.memory_mib.map(|m| m.saturating_mul(1 << 20));
        let cpu_quota = limits
            .cpus
            .map(|c| u64::from(c).saturating_mul(CPU_PERIOD_US));
        let mut run = RunCgroup {
            dirs: Vec::new(),
            memory_events: PathBuf::new(),
            limit_reached: Vec::new(),
        };
        let mut make = |dir: PathBuf| -> Result<PathBuf, CgroupError> {
            std::fs::create_dir(&dir).map_err(cgroup_error(&dir, "making it"))?;
            run.dirs.push(dir.clone());
            Ok(dir)
        };
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(cgroup_error(dir, format!("writing {value} to {file}")))
        };
        match &self.layout {
            Layout::V1 { memory, cpu, pids } => {
                let dir = make(memory.join(&name))?;
                if let Some(bytes) = memory_bytes {
                    write(&dir, "memory.limit_in_bytes", bytes.to_string())?;
                    // Swap too, where the kernel accounts it: no swap beyond the limit.
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        write(&dir, "memory.memsw.limit_in_bytes", bytes.to_string())?;
                    }
                }
                run.memory_events = dir.join("memory.oom_control");
                run.limit_reached = ["memory", "memory.memsw"]
                    .map(|m| {
                        (
                            dir.join(format!("{m}.max_usage_in_bytes")),
                            dir.join(format!("{m}.limit_in_bytes")),
                        )
                    })
                    .into_iter()
                    .filter(|(most, _)| most.exists())
                    .collect();
                if let Some(cpu) = cpu {
                    let dir = make(cpu.join(&name))?;
                    if let Some(quota) = cpu_quota {
                        write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                        write(&dir, "cpu.cfs_quota_us", quota.to_string())?;
                    }
                }
                if let Some(pids) = pids {
                    let dir = make(pids.join(&name))?;
                    write(&dir, "pids.max", PIDS_LIMIT.to_string())?;
                }
            }
            Layout::V2 { base, cpu, pids } => {
                let dir = make(base.join(&name))?;
                if let Some(bytes) = memory_bytes {
                    write(&dir, "memory.max", bytes.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir, "memory.swap.max", "0".into())?;
                    }
                }
                if let (true, Some(quota)) = (cpu, cpu_quota) {
                    write(&dir, "cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if *pids {
                    write(&dir, "pids.max", PIDS_LIMIT.to_string())?;
                }
                run.memory_events = dir.join("memory.events");
            }
        }
        Ok(run)
    }

    /// Whether runs are held to their CPUs and to a number of processes too (memory they
    /// always are): the controllers this worker may not use, by name.
    pub fn missing(&self) -> Vec<&'static str> {
        let (cpu, pids) = match &self.layout {
            Layout::V1 { cpu, pids, .. } => (cpu.is_some(), pids.is_some()),
            Layout::V2 { cpu, pids, .. } => (*cpu, *pids),
        };
        let mut missing = Vec::new();
        if !cpu {
            missing.push("cpu");
        }
        if !pids {
            missing.push("pids");
        }
        missing
    }

    /// The directories runs' groups are made in.
    fn bases(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1 { memory, cpu, pids } => std::iter::once(memory)
                .chain(cpu)
                .chain(pids)
                .map(PathBuf::as_path)
                .collect(),
            Layout::V2 { base, .. } => vec![base.as_path()],
        }
    }

    /// Removes the groups an earlier process of this worker left (its tag, another process
    /// id), ending what is left in them.
    fn clear_leftovers(&self) {
        let mine = format!("{RUN_PREFIX}{}-", self.tag);
        let now = format!("{mine}{}-", std::process::id());
        for base in self.bases() {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                if name.starts_with(&mine) && !name.starts_with(&now) {
                    remove_group(&entry.path());
                }
            }
        }
    }
}

/// What [`locate`] found: the worker's own group in each hierarchy that matters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Located {
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    pids: Option<PathBuf>,
    unified: Option<PathBuf>,
}

/// The worker's own group in each mounted hierarchy, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`. A hierarchy mounted from a group of its own (a container's, without
/// a cgroup namespace) shows paths beneath that group's: they are taken relative to it.
fn locate(mountinfo: &str, cgroup: &str) -> Located {
    // Each process's group, by the controllers of its hierarchy ("" for v2).
    let groups: Vec<(&str, &str)> = cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    let mut found = Located::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(options)) =
            (left.get(3), left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        let own = |path: &str| {
            let inside = match *root {
                "/" => path,
                root => path.strip_prefix(root).unwrap_or(path),
            };
            Path::new(point).join(inside.trim_start_matches('/'))
        };
        match *fstype {
            "cgroup2" => {
                if let Some((_, path)) = groups.iter().find(|(c, _)| c.is_empty()) {
                    found.unified.get_or_insert_with(|| own(path));
                }
            }
            "cgroup" => {
                let controllers: Vec<&str> = options.split(',').collect();
                let group = |name: &str| {
                    groups
                        .iter()
                        .find(|(c, _)| c.split(',').any(|c| c == name))
                        .map(|(_, path)| own(path))
                };
                for (name, slot) in [
                    ("memory", &mut found.memory),
                    ("cpu", &mut found.cpu),
                    ("pids", &mut found.pids),
                ] {
                    if controllers.contains(&name) && slot.is_none() {
                        *slot = group(name);
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// Whether this process may make groups in `dir`: it makes one and removes it.
fn writable(dir: &Path) -> Result<(), Unavailable> {
    let probe = dir.join(format!("gridwork-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .and_then(|()| std::fs::remove_dir(&probe))
        .map_err(|e| Unavailable::NotWritable {
            dir: dir.display().to_string(),
            why: e.to_string(),
        })
}

/// cgroup v2: the group runs' groups go beneath. The worker's own, once it hands on the
/// memory controller; to hand it on, the group may hold no process, so the worker moves
/// into a leaf of it first (a worker in that leaf already, a second in one process say,
/// uses its parent).
fn unified_base(own: &Path) -> Result<Layout, Unavailable> {
    let base = match own.file_name() {
        Some(name) if name == WORKER_LEAF => own.parent().unwrap_or(own).to_path_buf(),
        _ => own.to_path_buf(),
    };
    let read = |file: &str| std::fs::read_to_string(base.join(file)).unwrap_or_default();
    let has = |text: &str, name: &str| text.split_whitespace().any(|c| c == name);
    if !has(&read("cgroup.controllers"), "memory") {
        return Err(Unavailable::NoMemoryController {
            dir: base.display().to_string(),
        });
    }
    writable(&base)?;
    if !has(&read("cgroup.subtree_control"), "memory") {
        let enable = || std::fs::write(base.join("cgroup.subtree_control"), "+memory");
        if enable().is_err() {
            let leaf = base.join(WORKER_LEAF);
            let moved = std::fs::create_dir_all(&leaf).and_then(|()| {
                std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
            });
            if moved.and_then(|()| enable()).is_err() {
                return Err(Unavailable::Shared {
                    dir: base.display().to_string(),
                });
            }
        }
    }
    // CPUs and processes where the group may hand them on too.
    let controllers = read("cgroup.controllers");
    for name in ["cpu", "pids"] {
        if has(&controllers, name) {
            let _ = std::fs::write(base.join("cgroup.subtree_control"), format!("+{name}"));
        }
    }
    let enabled = read("cgroup.subtree_control");
    Ok(Layout::V2 {
        cpu: has(&enabled, "cpu"),
        pids: has(&enabled, "pids"),
        base,
    })
}

/// One run's control group (a directory in each hierarchy), removed when dropped.
#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<PathBuf>,
    /// `memory.events` (v2) or `memory.oom_control` (v1): both count `oom_kill`.
    memory_events: PathBuf,
    /// What says the run's own limit was reached on v1: the high-water marks beside their
    /// limits (`memory.max_usage_in_bytes` and `memory.limit_in_bytes`, and the same for
    /// memory and swap, whose limit is met first where swap is accounted; v1's `failcnt`
    /// stays 0 on some kernels). Empty on v2, whose `memory.events` counts it (`oom`).
    limit_reached: Vec<(PathBuf, PathBuf)>,
}

/// Whether, and why, the kernel's OOM killer ended a process of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomKill {
    /// It did not.
    None,
    /// For the run's own memory, past the job's `min_memory_mib`: the program's doing, the
    /// same on every worker.
    OwnLimit,
    /// With the run's own limit not reached: the machine (or the worker's own group) ran out
    /// of memory, and the run's processes, which the kernel ends first, went. The worker's
    /// failure, not the program's: a requester's large job on the same worker must not make
    /// another job's run read as out of memory there alone (found by a review).
    Host,
}

impl RunCgroup {
    /// Its directories, which `sandbox-exec --cgroup` joins.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether the kernel ended a process of the run for its memory, and whose memory.
    pub fn oom_kill(&self) -> OomKill {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let events = read(&self.memory_events);
        if count(&events, "oom_kill") == 0 {
            return OomKill::None;
        }
        let number = |path: &Path| read(path).trim().parse::<u64>().unwrap_or(0);
        let reached = match self.limit_reached.is_empty() {
            // v2: times the group's own limit set the OOM killer off.
            true => count(&events, "oom") > 0,
            // v1: the most the group held came within a charge batch of one of its limits.
            false => self
                .limit_reached
                .iter()
                .any(|(most, limit)| number(most).saturating_add(WITHIN_LIMIT) >= number(limit)),
        };
        match reached {
            true => OomKill::OwnLimit,
            false => OomKill::Host,
        }
    }
}

impl Drop for RunCgroup {
    /// Removes the group, ending anything left in it. A process being killed holds its group
    /// for a moment (one stuck in a GPU driver longer): where the first try fails, the rest
    /// goes on a thread of its own rather than hold up the worker's (async) caller.
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        let mut left = Vec::new();
        for dir in dirs.into_iter().rev() {
            kill_members(&dir);
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => left.push(dir),
                _ => {}
            }
        }
        if !left.is_empty() {
            let _ = std::thread::Builder::new()
                .name("gridwork-cgroup".into())
                .spawn(move || left.iter().for_each(|d| remove_group(d)));
        }
    }
}

/// The count `name` of a `memory.events` or `memory.oom_control` file.
fn count(events: &str, name: &str) -> u64 {
    events
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends every process in the group `dir` SIGKILL.
fn kill_members(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Kills every process left in the group `dir` and removes it (a process being killed still
/// holds it for a moment, so a few tries).
fn remove_group(dir: &Path) {
    for _ in 0..200 {
        kill_members(dir);
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            _ => return,
        }
    }
    tracing::warn!(group = %dir.display(), "a run's control group could not be removed");
}

/// A run's control group, opened to move a process into it. Opened while the sandbox may
/// still write it (root, or the worker's user), it moves a process later too, after the
/// sandbox gave that up: the kernel checks a move against the credentials the file was opened
/// with. So only the program (or the first process of its pid namespace, just before it
/// starts the program) goes in, and what the sandbox's own processes hold is charged to the
/// worker, not to the run: a run with GPUs, which has one more such process waiting beside
/// it, gets the same memory as one without (a review found 11 MiB against 1.3 MiB charged,
/// and runs near their limit ending differently on the two kinds of worker).
#[derive(Debug)]
pub struct Entry(Vec<(PathBuf, std::fs::File)>);

impl Entry {
    /// Opens the group `dirs` (a directory in each hierarchy) for moving processes in.
    pub fn open(dirs: &[PathBuf]) -> std::io::Result<Entry> {
        dirs.iter()
            .map(|dir| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
                    .map_err(|e| joining(dir, e))?;
                Ok((dir.clone(), file))
            })
            .collect::<std::io::Result<_>>()
            .map(Entry)
    }

    /// Moves process `pid` (as this process's pid namespace numbers it: the host's, for a
    /// sandbox) into the group, with every thread.
    pub fn admit(&self, pid: u32) -> std::io::Result<()> {
        for (dir, file) in &self.0 {
            std::io::Write::write_all(&mut &*file, pid.to_string().as_bytes())
                .map_err(|e| joining(dir, e))?;
        }
        Ok(())
    }
}

fn joining(dir: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("joining the run's control group {}: {e}", dir.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// On a hybrid host the worker's group in each v1 hierarchy is found, memory's where
    /// the process is, not at the hierarchy's root.
    #[test]
    fn the_workers_own_group_is_found_in_each_v1_hierarchy() {
        let cgroup = "8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(
            locate(HYBRID_MOUNTS, cgroup),
            Located {
                memory: Some("/sys/fs/cgroup/memory/process_api/abc".into()),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
                unified: Some("/sys/fs/cgroup/unified".into()),
            }
        );
    }

    /// A unified host: only the v2 group; joined controllers (`cpu,cpuacct`) are matched by
    /// name; a hierarchy mounted from a container's group strips that group's path.
    #[test]
    fn unified_and_container_mounts_are_read_relative_to_their_root() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            locate(unified, "0::/user.slice/user-1000.slice/session-2.scope\n"),
            Located {
                unified: Some("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope".into()),
                ..Located::default()
            }
        );
        let container =
            "50 40 0:32 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            locate(container, "3:cpu,cpuacct:/docker/abc/inner\n").cpu,
            Some("/sys/fs/cgroup/cpu,cpuacct/inner".into())
        );
    }

    /// A group left by a worker killed mid-run (its process gone) is cleared when a worker
    /// next finds its groups, and what still ran in it ended; a live worker's is left alone.
    #[test]
    fn groups_left_by_a_worker_that_is_gone_are_cleared_with_what_ran_in_them() {
        let owner = format!("/var/lib/gridwork/test-{}", std::process::id());
        let Ok(cgroups) = Cgroups::find(&owner) else {
            // Not root here, nor delegated: nothing this test can make.
            assert!(
                !rustix::process::geteuid().is_root(),
                "root may make groups here"
            );
            return;
        };
        let base = cgroups.bases()[0].to_path_buf();
        let mut gone = std::process::Command::new("true").spawn().expect("true");
        let dead = gone.id();
        gone.wait().expect("waited");
        let tag = &cgroups.tag;
        let left = base.join(format!("{RUN_PREFIX}{tag}-{dead}-0"));
        let live = base.join(format!("{RUN_PREFIX}{tag}-{}-999999", std::process::id()));
        // Another worker's, whose process this one cannot see (another pid namespace).
        let other = Cgroups::find("/elsewhere").expect("found").tag;
        let others = base.join(format!("{RUN_PREFIX}{other}-{dead}-0"));
        for dir in [&left, &live, &others] {
            std::fs::create_dir(dir).expect("a group");
        }
        let mut straggler = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep");
        join_pid(&left, straggler.id());
        Cgroups::find(&owner).expect("found again");
        assert!(!left.exists(), "the leftover group was cleared");
        assert!(straggler.wait().expect("waited").code().is_none(), "killed");
        assert!(live.exists(), "this process's own group stays");
        assert!(others.exists(), "another worker's group stays");
        remove_group(&live);
        remove_group(&others);
    }

    fn join_pid(dir: &Path, pid: u32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("joined");
    }

    /// The kernel's counts are read from either version's files, a name never for another
    /// that begins with it; anything else counts none.
    #[test]
    fn oom_counts_are_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(count(v1, "oom_kill"), 2);
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 3\noom_group_kill 0\n";
        assert_eq!((count(v2, "oom"), count(v2, "oom_kill")), (1, 3));
        assert_eq!(count("", "oom_kill"), 0);
        assert_eq!(count("oom_kill_disable 1\n", "oom_kill"), 0);
    }

    /// A kill counts against the program only where the run's own limit was reached (v1:
    /// its failcnt; v2: its `oom` count); one without is the machine's.
    #[test]
    fn an_oom_kill_is_the_programs_only_where_its_own_limit_was_reached() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect(name);
            path
        };
        let limit = (64u64 << 20).to_string();
        let v1 = |kills: &str, most: u64, memsw_most: u64| RunCgroup {
            dirs: Vec::new(),
            memory_events: file(
                "memory.oom_control",
                &format!("under_oom 0\noom_kill {kills}\n"),
            ),
            limit_reached: vec![
                (
                    file("memory.max_usage_in_bytes", &most.to_string()),
                    file("memory.limit_in_bytes", &limit),
                ),
                (
                    file("memory.memsw.max_usage_in_bytes", &memsw_most.to_string()),
                    file("memory.memsw.limit_in_bytes", &limit),
                ),
            ],
        };
        let mib = |m: u64| m << 20;
        assert_eq!(v1("0", mib(64), mib(64)).oom_kill(), OomKill::None);
        assert_eq!(v1("1", mib(64), mib(64)).oom_kill(), OomKill::OwnLimit);
        assert_eq!(
            v1("1", mib(10), mib(64) - 4096).oom_kill(),
            OomKill::OwnLimit
        );
        assert_eq!(v1("1", mib(10), mib(10)).oom_kill(), OomKill::Host);
        let v2 = |events: &str| {
            let events = file("memory.events", events);
            RunCgroup {
                dirs: Vec::new(),
                memory_events: events,
                limit_reached: Vec::new(),
            }
        };
        assert_eq!(
            v2("max 3\noom 1\noom_kill 1\n").oom_kill(),
            OomKill::OwnLimit
        );
        assert_eq!(v2("max 0\noom 0\noom_kill 1\n").oom_kill(), OomKill::Host);
        assert_eq!(v2("oom 0\noom_kill 0\n").oom_kill(), OomKill::None);
    }

    /// A v2 run's limits land in the files the kernel reads (checked on a directory laid
    /// out as a delegated group, which this machine's kernel, v1 for memory, cannot give).
    #[test]
    fn a_v2_run_is_given_the_jobs_memory_without_swap_its_cpus_and_the_process_limit() {
        let base = tempfile::tempdir().expect("temp dir");
        let cgroups = Cgroups {
            layout: Layout::V2 {
                base: base.path().to_path_buf(),
                cpu: true,
                pids: true,
            },
            tag: "test".into(),
        };
        // What the kernel would make in a new group.
        let run = cgroups
            .create(RunLimits {
                memory_mib: Some(512),
                cpus: Some(2),
            })
            .expect("made");
        let dir = run.dirs()[0].clone();
        assert!(dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(RUN_PREFIX)));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
        assert_eq!(read("memory.max"), (512u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(read("pids.max"), "4096");
        assert_eq!(run.oom_kill(), OomKill::None);
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").expect("events");
        assert_eq!(run.oom_kill(), OomKill::OwnLimit);
        // Gone with the run (a plain directory here: its files go first).
        for f in ["memory.max", "cpu.max", "pids.max", "memory.events"] {
            std::fs::remove_file(dir.join(f)).expect(f);
        }
        drop(run);
        assert!(!dir.exists());
        // No limits asked: only the process count.
        let run = cgroups.create(RunLimits::default()).expect("made");
        let dir = run.dirs()[0].clone();
        assert!(!dir.join("memory.max").exists() && !dir.join("cpu.max").exists());
        assert!(dir.join("pids.max").exists());
        std::fs::remove_file(dir.join("pids.max")).expect("pids.max");
    }
}
