//! The supervisor of a run: every process a task leaves behind ends with its run.
//!
//! A program can outlive its run by starting a process in a session of its own (`setsid`,
//! a daemon's double fork): it leaves the process group the worker kills at the deadline, and
//! used to keep running after the task was committed, with the worker's uid. `gridwork
//! sandbox-exec` therefore does not become the program: it stays as the run's supervisor, a
//! *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so every orphaned descendant of the program
//! is re-parented to it rather than to init, and starts the confined program as its child
//! (through `sandbox-exec --inner`, which confines itself and `exec`s it, so no code runs
//! between `fork` and `exec`). When the program exits, or the run's deadline passes, the
//! supervisor kills whatever is left beneath it and ends as the program did.
//!
//! The supervisor itself runs outside the task's Landlock domain, so the task can neither
//! signal nor trace it (Landlock's scoping), and it reads only `/proc` and its own children.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{getpid, kill_process, wait, Pid, Signal, WaitOptions, WaitStatus};

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it (the supervisor's own `SIGKILL` at the deadline among them).
    Signal(i32),
}

/// Why the run could not be supervised.
#[derive(Debug, thiserror::Error)]
#[error("cannot supervise the run: {what}: {source}")]
pub struct SuperviseError {
    what: &'static str,
    source: std::io::Error,
}

fn failed(what: &'static str) -> impl Fn(std::io::Error) -> SuperviseError {
    move |source| SuperviseError { what, source }
}

/// Runs `inner` (the confined program) as a child, until it exits or `deadline` passes, then
/// kills every process left beneath this one; how the program ended.
pub fn supervise(mut inner: Command, deadline: Option<Duration>) -> Result<Exit, SuperviseError> {
    let me = getpid();
    rustix::process::set_child_subreaper(Some(me))
        .map_err(|e| failed("becoming the run's subreaper")(e.into()))?;
    let started = Instant::now();
    let child = inner.spawn().map_err(failed("starting the program"))?;
    let program = Pid::from_raw(child.id() as i32);
    let exit = loop {
        if let Some(exit) = reap(program) {
            break exit;
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            if let Some(pid) = program {
                let _ = kill_process(pid, Signal::KILL);
            }
            break Exit::Signal(Signal::KILL.as_raw());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    end_descendants(me);
    Ok(exit)
}

/// Reaps every child that ended (any child: `wait`, not `waitpid(None)`, which waits only
/// for children of this process group, and so never for one that started a session of its
/// own); how `program` ended, if it was among them.
fn reap(program: Option<Pid>) -> Option<Exit> {
    let mut ended = None;
    while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
        if Some(pid) == program {
            ended = Some(exit_of(status));
        }
    }
    ended
}

fn exit_of(status: WaitStatus) -> Exit {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(0),
    }
}

/// Kills every process beneath this one, until none is left: a killed process's children
/// become this one's in turn (it is their subreaper).
fn end_descendants(me: Pid) {
    // Bounded, so a fork bomb racing the kills cannot keep the run alive for ever (a round
    // takes about a millisecond).
    for _ in 0..10_000 {
        let children = children_of(me);
        if children.is_empty() {
            break;
        }
        for pid in children {
            let _ = kill_process(pid, Signal::KILL);
        }
        while let Ok(Some(_)) = wait(WaitOptions::NOHANG) {}
        std::thread::sleep(Duration::from_millis(1));
    }
    while let Ok(Some(_)) = wait(WaitOptions::NOHANG) {}
}

/// The children of `pid`, from `/proc/<pid>/task/<pid>/children`, or where the kernel lacks
/// that file, from every process's parent in `/proc/*/stat`.
fn children_of(pid: Pid) -> Vec<Pid> {
    let raw = pid.as_raw_nonzero().get();
    let listed = Path::new("/proc")
        .join(raw.to_string())
        .join("task")
        .join(raw.to_string())
        .join("children");
    if let Ok(text) = std::fs::read_to_string(&listed) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(Pid::from_raw)
            .collect();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // The parent follows the command's closing parenthesis and the state.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(raw)
            })
        })
        .filter_map(Pid::from_raw)
        .collect()
}

/// Ends this process as the program ended: with its code, or by its signal.
pub fn exit_as(exit: Exit) -> ! {
    match exit {
        Exit::Code(code) => std::process::exit(code),
        Exit::Signal(signal) => {
            if let Some(signal) = Signal::from_named_raw(signal) {
                let _ = kill_process(getpid(), signal);
            }
            // A signal this process ignores or survives: the shell's convention.
            std::process::exit(128 + signal)
        }
    }
}
