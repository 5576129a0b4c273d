//! Running a task's program as a confined process.
//!
//! Each task gets its own work directory. The program may write only beneath its `run/`
//! (`inputs/`, `outputs/`, `tmp/`), where it starts; what the worker keeps of the run lies
//! beside it, where the program can neither write nor plant links: `stdout.log` and
//! `stderr.log` (the program writes them through descriptors the worker opened), the run's
//! `result.json` and the outputs of others it judged. It starts with a clean environment
//! (only `PATH`, `HOME`,
//! `TMPDIR`, `LANG` and the `GRIDWORK_*` variables below), in its own process group, and the
//! whole group is killed at the deadline. With a [`Launcher`] (the `gridwork` binary) the
//! program also runs under Landlock and resource limits (see `confine.rs`), beneath a
//! supervisor that ends it and everything it started at the deadline (see `supervise.rs`);
//! the worker's own kill is then a backstop `SUPERVISOR_GRACE` (5 s) later.
//!
//! Variables: `GRIDWORK_JOB`, `GRIDWORK_TASK`, `GRIDWORK_ITEM_START`, `GRIDWORK_ITEM_END`
//! (exclusive), `GRIDWORK_INPUTS`, `GRIDWORK_OUTPUTS`; for a job in checkpointed segments
//! also `GRIDWORK_SEGMENT`, `GRIDWORK_SEGMENTS` and `GRIDWORK_CHECKPOINT`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gridwork_types::{Program, RunEnd};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the program ended (never [`RunEnd::MissingOutput`]: outputs are checked after).
    pub ended: RunEnd,
    /// Wall time in whole seconds, at least 1.
    pub seconds: u64,
}

/// A task's environment.
#[derive(Debug, Clone)]
pub struct TaskEnv {
    /// Job id (hex).
    pub job: String,
    /// Task index.
    pub task: u32,
    /// Items `[start, end)`.
    pub items: (u64, u64),
    /// For a job in checkpointed segments: the segment this run is, and how many the task
    /// has. The run starts from the checkpoint in `checkpoint/` beside the inputs (but
    /// segment 0, which starts from the inputs alone) and leaves the next in its outputs.
    pub segment: Option<(u32, u32)>,
    /// The memory and CPUs the run is held to (the job's), where the launcher can hold them
    /// (`Launcher::cgroups`).
    pub limits: crate::cgroup::RunLimits,
}

/// The directory of the checkpoint a segment starts from, in a run's directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

impl TaskEnv {
    /// `GRIDWORK_SEGMENT`, `GRIDWORK_SEGMENTS` and (past the first segment)
    /// `GRIDWORK_CHECKPOINT`, for a run whose directory the program sees as `run`.
    pub fn segment_vars(&self, run: &str) -> Vec<(&'static str, String)> {
        let Some((index, count)) = self.segment else {
            return Vec::new();
        };
        let mut vars = vec![
            ("GRIDWORK_SEGMENT", index.to_string()),
            ("GRIDWORK_SEGMENTS", count.to_string()),
        ];
        if index > 0 {
            vars.push(("GRIDWORK_CHECKPOINT", format!("{run}/{CHECKPOINT_DIR}")));
        }
        vars
    }
}

/// Starts task programs through `gridwork sandbox-exec`, which confines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// The `gridwork` executable.
    pub exe: PathBuf,
    /// Address-space limit per task, in MiB (none: GPU runtimes reserve large address
    /// ranges, so the default leaves it open).
    pub memory_mib: Option<u64>,
    /// Largest file a task may write, in MiB.
    pub max_file_mib: Option<u64>,
    /// The GPUs' device nodes a task may open for writing (`confine::gpu_devices`).
    pub gpu_devices: Vec<PathBuf>,
    /// Paths a task may not read: the worker's home and work directory (keys, chunk cache,
    /// the decrypted inputs of other tasks).
    pub hidden: Vec<PathBuf>,
    /// Where each run gets a control group holding it to its job's memory and CPUs and to
    /// [`crate::cgroup::PIDS_LIMIT`] processes, or why none can be made here (runs are then
    /// not held to them, and jobs that set their memory are declined).
    pub cgroups: Result<crate::cgroup::Cgroups, crate::cgroup::Unavailable>,
}

impl Launcher {
    /// The sandbox's self-check (`gridwork sandbox-exec --check`, see
    /// [`crate::SandboxCheck`]), confined as this launcher confines tasks, in a run
    /// directory `dir/run` made for it and removed after.
    pub fn check(&self, dir: &Path) -> Result<crate::SandboxCheck, SandboxError> {
        let run = run_dir(dir);
        let err = |source| SandboxError {
            command: "gridwork sandbox-exec --check".into(),
            dir: dir.display().to_string(),
            source,
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(&run).map_err(err)?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("sandbox-exec")
            .arg("--check")
            .arg("--work")
            .arg(&run);
        for d in &self.gpu_devices {
            cmd.arg("--gpu-device").arg(d);
        }
        for h in &self.hidden {
            cmd.arg("--hide").arg(h);
        }
        let output = cmd.stdin(Stdio::null()).output();
        let _ = std::fs::remove_dir_all(dir);
        let output = output.map_err(err)?;
        if !output.status.success() {
            return Err(err(std::io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))));
        }
        let mut check: crate::SandboxCheck =
            serde_json::from_slice(&output.stdout).map_err(|e| err(std::io::Error::other(e)))?;
        check.limits = match &self.cgroups {
            Ok(cgroups) => match cgroups.missing() {
                missing if missing.is_empty() => None,
                missing => Some(format!(
                    "the {} controller{} cannot be used here",
                    missing.join(" and "),
                    if missing.len() == 1 { "" } else { "s" }
                )),
            },
            Err(why) => Some(why.to_string()),
        };
        Ok(check)
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{command}` in {dir}: {source}")]
pub struct SandboxError {
    command: String,
    dir: String,
    source: std::io::Error,
}

impl SandboxError {
    pub(crate) fn new(command: &str, dir: &Path, source: std::io::Error) -> SandboxError {
        SandboxError {
            command: command.to_string(),
            dir: dir.display().to_string(),
            source,
        }
    }
}

/// What must live as long as a run's program: the short link to its `tmp/` and its control
/// group (removed, with anything left in it, when dropped).
pub(crate) struct RunGuard {
    pub(crate) _short_tmp: Option<ShortTmp>,
    pub(crate) cgroup: Option<crate::cgroup::RunCgroup>,
}

/// A short path for a task's `tmp/`: a symbolic link in `/tmp`, removed on drop. Programs
/// make Unix sockets in TMPDIR (Python's `multiprocessing` does, and with it PyTorch's data
/// loaders), a socket's path has at most 107 bytes, and a task directory's own path can be
/// longer: a data loader in a task failed with "AF_UNIX path too long" (H100 host,
/// 2026-11-23). Landlock judges the directory the link resolves to, inside the work directory.
/// Where the sandbox gives the run namespaces of its own, its `tmp/` is its `/tmp` and
/// `TMPDIR` is `/tmp` itself (`confine::own_mounts`); the link serves the runs without (no
/// launcher, or a host that forbids user namespaces).
pub(crate) struct ShortTmp(pub(crate) PathBuf);

impl ShortTmp {
    /// A link to `target`, or `None` where none can be made (TMPDIR is then the long path).
    pub(crate) fn new(target: &Path) -> Option<ShortTmp> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let link = Path::new("/tmp").join(format!("gridwork-{}-{n}", std::process::id()));
        // A link left by an earlier worker process of the same id.
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&link);
        }
        std::os::unix::fs::symlink(target, &link).ok()?;
        Some(ShortTmp(link))
    }
}

impl Drop for ShortTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long past the deadline the worker waits for a supervised run to end before it kills
/// the run's process group itself.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// Where a task's program runs, and all it may write: `run/` of its work directory.
pub fn run_dir(work: &Path) -> PathBuf {
    work.join("run")
}

/// The inputs and outputs directories of a task's work directory (in its [`run_dir`]).
pub fn layout(work: &Path) -> (PathBuf, PathBuf) {
    let run = run_dir(work);
    (run.join("inputs"), run.join("outputs"))
}

/// How `sandbox-exec` supervises a program: a task's run until its deadline, with its end
/// recorded in the status file, or a service's server until the stop file appears.
pub(crate) struct Supervision<'a> {
    /// When the run ends at the latest.
    pub(crate) deadline: Option<Duration>,
    /// Where the supervisor records how the program ended.
    pub(crate) status_file: &'a Path,
    /// A server's: it is stopped once this file exists.
    pub(crate) stop_file: Option<&'a Path>,
}

/// The command that runs `program` in `work` (through `sandbox-exec` with a launcher), its
/// clean environment, and what must live as long as the program ([`RunGuard`]: the short
/// link to its `tmp/`, see [`ShortTmp`], and its control group where the launcher makes
/// them). Standard input is `/dev/null`; output is the caller's to direct.
pub(crate) fn task_command(
    program: &Program,
    work: &Path,
    env: &TaskEnv,
    launcher: Option<&Launcher>,
    sup: &Supervision<'_>,
) -> Result<(tokio::process::Command, RunGuard), crate::cgroup::CgroupError> {
    let (inputs, outputs) = layout(work);
    let run_dir = run_dir(work);
    let serve = sup.stop_file.is_some();
    let cgroup = match launcher.map(|l| &l.cgroups) {
        Some(Ok(cgroups)) => Some(cgroups.create(env.limits)?),
        _ => None,
    };
    let mut cmd = match launcher {
        None => {
            let mut cmd = tokio::process::Command::new(&program.command);
            cmd.args(&program.args);
            cmd
        }
        Some(l) => {
            let mut cmd = tokio::process::Command::new(&l.exe);
            cmd.arg("sandbox-exec").arg("--work").arg(&run_dir);
            if let Some(m) = l.memory_mib {
                cmd.arg("--memory-mib").arg(m.to_string());
            }
            if let Some(m) = l.max_file_mib {
                cmd.arg("--max-file-mib").arg(m.to_string());
            }
            for d in &l.gpu_devices {
                cmd.arg("--gpu-device").arg(d);
            }
            for h in &l.hidden {
                cmd.arg("--hide").arg(h);
            }
            for dir in cgroup.iter().flat_map(|c| c.dirs()) {
                cmd.arg("--cgroup").arg(dir);
            }
            // The supervisor ends the run at the deadline (a server when told to stop),
            // leftovers in sessions of their own included; the worker's own kill is the
            // backstop.
            if let Some(deadline) = sup.deadline {
                cmd.arg("--deadline-ms")
                    .arg(deadline.as_millis().to_string());
            }
            if let Some(stop) = sup.stop_file {
                cmd.arg("--stop-file").arg(stop).arg("--serve");
            }
            cmd.arg("--status-file").arg(sup.status_file);
            // A job that asks for the network has it only on a provider that allows it (the
            // worker declined it otherwise).
            if program.network {
                cmd.arg("--network");
            }
            cmd.arg("--").arg(&program.command).args(&program.args);
            cmd
        }
    };
    cmd.current_dir(&run_dir)
        .env_clear()
        .env("PATH", crate::software::TASK_PATH)
        .env("HOME", &run_dir)
        .env("LANG", "C.UTF-8")
        .env("GRIDWORK_JOB", &env.job)
        .env("GRIDWORK_TASK", env.task.to_string())
        .env("GRIDWORK_ITEM_START", env.items.0.to_string())
        .env("GRIDWORK_ITEM_END", env.items.1.to_string())
        .env("GRIDWORK_INPUTS", &inputs)
        .env("GRIDWORK_OUTPUTS", &outputs)
        .envs(env.segment_vars(&run_dir.display().to_string()))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let tmp = run_dir.join("tmp");
    let short_tmp = ShortTmp::new(&tmp);
    let tmpdir = short_tmp.as_ref().map_or(&tmp, |s| &s.0);
    cmd.env("TMPDIR", tmpdir);
    if serve && launcher.is_none() {
        // Unconfined (tests): the socket where the sandbox would put it.
        cmd.env(
            "GRIDWORK_SOCKET",
            tmpdir.join(crate::confine::SERVICE_SOCKET),
        );
    }
    Ok((
        cmd,
        RunGuard {
            _short_tmp: short_tmp,
            cgroup,
        },
    ))
}

/// Runs `program` in `work` until it exits or `deadline` passes.
pub async fn run(
    program: &Program,
    work: &Path,
    env: &TaskEnv,
    deadline: Duration,
    launcher: Option<&Launcher>,
) -> Result<RunOutcome, SandboxError> {
    let err = |source| SandboxError {
        command: program.command.clone(),
        dir: work.display().to_string(),
        source,
    };
    let (inputs, outputs) = layout(work);
    let run_dir = run_dir(work);
    // Where the supervisor says how the program ended; beside the run, out of its reach.
    let status_file = work.join("run-status");
    let _ = std::fs::remove_file(&status_file);
    for dir in [&inputs, &outputs, &run_dir.join("tmp")] {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let stdout = std::fs::File::create(work.join("stdout.log")).map_err(err)?;
    let stderr = std::fs::File::create(work.join("stderr.log")).map_err(err)?;
    let (mut cmd, guard) = task_command(
        program,
        work,
        env,
        launcher,
        &Supervision {
            deadline: Some(deadline),
            status_file: &status_file,
            stop_file: None,
        },
    )
    .map_err(|e| err(std::io::Error::other(e)))?;
    cmd.stdout(stdout).stderr(stderr);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(err)?;
    let seconds = |s: Instant| s.elapsed().as_secs().max(1);
    let backstop = match launcher {
        Some(_) => deadline + SUPERVISOR_GRACE,
        None => deadline,
    };
    match tokio::time::timeout(backstop, child.wait()).await {
        Ok(status) => {
            let status = status.map_err(err)?;
            use crate::supervise::{Exit, RunStatus};
            let supervised = launcher
                .and_then(|_| std::fs::read_to_string(&status_file).ok())
                .and_then(|line| RunStatus::from_line(&line));
            let supervised = match supervised {
                // The worker's own failure, not the program's: nothing to commit to.
                Some(RunStatus::SetupFailed(why)) => {
                    return Err(err(std::io::Error::other(format!(
                        "the sandbox could not be set up, the program did not run: {why}"
                    ))))
                }
                Some(RunStatus::Ended(exit)) => Some(exit),
                None => None,
            };
            let ended = match supervised {
                Some(Exit::Code(code)) => exit_code(code),
                Some(Exit::Signal(signal)) => signal_end(signal),
                Some(Exit::Deadline) => RunEnd::Timeout {},
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (Some(code), _) => exit_code(code),
                        (None, Some(signal)) => signal_end(signal),
                        (None, None) => RunEnd::Signal { signal: 9 },
                    }
                }
            };
            // A run that failed after the kernel ended one of its processes for going past
            // the job's memory failed for that (a program that survives losing a child and
            // succeeds, succeeded). One ended because the machine ran out of memory, not
            // the run, is the worker's failure: nothing to commit to.
            use crate::cgroup::OomKill;
            let oom = guard
                .cgroup
                .as_ref()
                .map_or(OomKill::None, |c| c.oom_kill());
            let ended = match (&ended, oom) {
                (RunEnd::Exit { .. } | RunEnd::Signal { .. }, OomKill::OwnLimit)
                    if !ended.is_success() =>
                {
                    RunEnd::OutOfMemory {}
                }
                (RunEnd::Exit { .. } | RunEnd::Signal { .. }, OomKill::Host)
                    if !ended.is_success() =>
                {
                    return Err(err(std::io::Error::other(
                        "the machine ran out of memory and the kernel ended a process of the run, whose own limit it had not reached",
                    )));
                }
                _ => ended,
            };
            Ok(RunOutcome {
                ended,
                seconds: seconds(started),
            })
        }
        Err(_) => {
            // The whole process group (its id is the child's pid), so children of a shell
            // die too.
            if let Some(pgid) = child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32))
            {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            Ok(RunOutcome {
                ended: RunEnd::Timeout {},
                seconds: seconds(started),
            })
        }
    }
}

/// An exit code as the ledger keeps it: the low byte, as a parent sees it on Linux.
fn exit_code(code: i32) -> RunEnd {
    RunEnd::Exit {
        code: (code & 0xff) as u8,
    }
}

fn signal_end(signal: i32) -> RunEnd {
    RunEnd::Signal {
        signal: u8::try_from(signal).unwrap_or(u8::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> TaskEnv {
        TaskEnv {
            job: "j".into(),
            task: 3,
            items: (6, 9),
            segment: None,
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_task_in_a_deep_work_directory_gets_a_tmpdir_short_enough_for_unix_sockets() {
        let base = tempfile::tempdir().unwrap();
        let work = base
            .path()
            .join("w".repeat(60))
            .join(format!("{}-0-0", "ab".repeat(32)));
        let p = Program {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                "printf %s \"$TMPDIR\" > outputs/tmpdir; echo hi > \"$TMPDIR/note\"".into(),
            ],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        };
        let outcome = run(&p, &work, &env(), Duration::from_secs(10), None)
            .await
            .unwrap();
        assert_eq!(outcome.ended, RunEnd::SUCCESS);
        let tmpdir = std::fs::read_to_string(work.join("run/outputs/tmpdir")).unwrap();
        assert!(work.join("run/tmp").as_os_str().len() > 107);
        // Room for a program's own directory and socket name beneath it.
        assert!(tmpdir.len() <= 40, "{tmpdir}");
        assert_eq!(
            std::fs::read_to_string(work.join("run/tmp/note")).unwrap(),
            "hi\n"
        );
        assert!(
            std::fs::symlink_metadata(&tmpdir).is_err(),
            "the link goes with the task"
        );
    }

    #[tokio::test]
    async fn runs_with_a_clean_environment_in_its_work_directory() {
        let work = tempfile::tempdir().unwrap();
        let p = Program {
            command: "sh".into(),
            args: vec!["-c".into(), "echo $GRIDWORK_ITEM_START-$GRIDWORK_ITEM_END > $GRIDWORK_OUTPUTS/out.txt; env > env.txt; pwd".into()], outputs: Vec::new(), image: None, network: false, vendor_images: Vec::new(),
        };
        let outcome = run(&p, work.path(), &env(), Duration::from_secs(10), None)
            .await
            .unwrap();
        assert_eq!(outcome.ended, RunEnd::SUCCESS);
        let out = std::fs::read_to_string(work.path().join("run/outputs/out.txt")).unwrap();
        assert_eq!(out.trim(), "6-9");
        // Nothing of the worker's own environment reaches the task (the shell adds PWD,
        // SHLVL and _ itself).
        let allowed = ["PATH", "HOME", "TMPDIR", "LANG", "PWD", "SHLVL", "_"];
        for line in std::fs::read_to_string(work.path().join("run/env.txt"))
            .unwrap()
            .lines()
        {
            let key = line.split('=').next().unwrap();
            assert!(
                key.starts_with("GRIDWORK_") || allowed.contains(&key),
                "leaked {key}"
            );
        }
        let pwd = std::fs::read_to_string(work.path().join("stdout.log")).unwrap();
        assert_eq!(
            std::path::Path::new(pwd.trim()),
            work.path().join("run").canonicalize().unwrap()
        );
    }

    #[tokio::test]
    async fn the_deadline_kills_the_whole_process_group() {
        let work = tempfile::tempdir().unwrap();
        let p = Program {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                "sleep 30 & sleep 30; echo late > late.txt".into(),
            ],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        };
        let outcome = run(&p, work.path(), &env(), Duration::from_millis(300), None)
            .await
            .unwrap();
        assert_eq!(outcome.ended, RunEnd::Timeout {});
        assert!(!work.path().join("run/late.txt").exists());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let work = tempfile::tempdir().unwrap();
        let p = Program {
            command: "/no/such/program".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        };
        let err = run(&p, work.path(), &env(), Duration::from_secs(1), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/no/such/program"), "{err}");
    }
}
