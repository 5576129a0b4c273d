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
//! supervisor stops every process left beneath it, then kills them all (one at a time, a tree
//! that rebuilds itself would outrun the kills), and ends as the program did.
//!
//! The supervisor itself runs outside the task's Landlock domain, so the task can neither
//! signal nor trace it (Landlock's scoping), and it reads only `/proc` and its own children.
//!
//! A sandbox that cannot be set up (Landlock or a limit refused, the supervisor unable to
//! start its child) is the worker's failure, not the program's: the inner process says so
//! through a pipe on its standard input before it would `exec` (the program itself gets
//! `/dev/null` there), and the supervisor records [`RunStatus::SetupFailed`], which the worker
//! reads as an error of its own rather than as the program's exit 1.

use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{getpid, kill_process, wait, Pid, Signal, WaitOptions, WaitStatus};

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// The deadline passed (or, for a service's server, the worker asked it to stop) and the
    /// supervisor ended it.
    Deadline,
}

impl Exit {
    /// As `--status-file` records it: `exit N`, `signal N` or `deadline`.
    pub fn to_line(self) -> String {
        match self {
            Exit::Code(code) => format!("exit {code}"),
            Exit::Signal(signal) => format!("signal {signal}"),
            Exit::Deadline => "deadline".into(),
        }
    }

    /// Reads what [`Exit::to_line`] wrote.
    pub fn from_line(line: &str) -> Option<Exit> {
        match line.trim().split_once(' ') {
            Some(("exit", n)) => n.parse().ok().map(Exit::Code),
            Some(("signal", n)) => n.parse().ok().map(Exit::Signal),
            None if line.trim() == "deadline" => Some(Exit::Deadline),
            _ => None,
        }
    }
}

/// What `--status-file` records: how the program ended, or that it never started because
/// the sandbox could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// The program ran and ended so.
    Ended(Exit),
    /// The sandbox could not be set up, for this reason (one line); the program did not run.
    SetupFailed(String),
}

impl RunStatus {
    /// One line: [`Exit::to_line`], or `setup <reason>`.
    pub fn to_line(&self) -> String {
        match self {
            RunStatus::Ended(exit) => exit.to_line(),
            RunStatus::SetupFailed(why) => format!("setup {}", one_line(why)),
        }
    }

    /// Reads what [`RunStatus::to_line`] wrote.
    pub fn from_line(line: &str) -> Option<RunStatus> {
        match line.trim().split_once(' ') {
            Some(("setup", why)) => Some(RunStatus::SetupFailed(why.to_string())),
            _ => Exit::from_line(line).map(RunStatus::Ended),
        }
    }
}

/// `text` on one line: line breaks and other control characters as spaces.
fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Where `sandbox-exec --inner` tells its supervisor that the sandbox could not be set up:
/// the pipe the supervisor gave it as its standard input, taken to a descriptor of its own
/// (closed on `exec`) before anything else, because starting the program puts `/dev/null` in
/// its place before a failed `exec` is known.
#[derive(Debug)]
pub struct SetupReport(Option<std::os::fd::OwnedFd>);

impl SetupReport {
    /// Takes the pipe on standard input, if there is one (a supervisor's child); otherwise
    /// reports go nowhere.
    pub fn take() -> SetupReport {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        // A pipe from the supervisor; a socket from the inner process, to its pid namespace's
        // first process.
        let is_pipe = rustix::fs::fstat(fd).is_ok_and(|s| {
            matches!(
                rustix::fs::FileType::from_raw_mode(s.st_mode),
                rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
            )
        });
        SetupReport(
            is_pipe
                .then(|| rustix::io::fcntl_dupfd_cloexec(fd, 3).ok())
                .flatten(),
        )
    }

    /// Says how the program ended, where this process waited for it rather than become it
    /// (a run in a pid namespace of its own): the supervisor reads it as the program's end.
    pub(crate) fn ended(&self, exit: Exit) {
        self.said((RunStatus::Ended(exit).to_line() + "\n").as_bytes());
    }

    /// Waits for `word` from the other end (the first process of a run's pid namespace waits
    /// so until the inner process put it in the run's control group); false if it does not
    /// come.
    pub(crate) fn wait_for(&self, word: &[u8]) -> bool {
        let Some(fd) = &self.0 else {
            return false;
        };
        let mut got = vec![0; word.len()];
        let mut have = 0;
        while have < got.len() {
            match rustix::io::read(fd, &mut got[have..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => have += n,
            }
        }
        got == word
    }

    /// Writes `bytes` as they are.
    pub(crate) fn said(&self, bytes: &[u8]) {
        if let Some(fd) = &self.0 {
            let _ = rustix::io::write(fd, bytes);
        }
    }

    /// Says why the sandbox could not be set up (the program did not run).
    pub fn failed(&self, why: &str) {
        if let Some(fd) = &self.0 {
            let _ = rustix::io::write(fd, one_line(why).as_bytes());
        }
    }
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

/// Runs `inner` (the confined program) as a child, until it exits, `deadline` passes or the
/// file `stop` appears (how a worker ends a service's server), then kills every process left
/// beneath this one; how the program ended, or why the sandbox could not be set up
/// (`inner`'s [`SetupReport`], through the pipe this gives it as its standard input).
pub fn supervise(
    mut inner: Command,
    deadline: Option<Duration>,
    stop: Option<&std::path::Path>,
) -> Result<RunStatus, SuperviseError> {
    let me = getpid();
    rustix::process::set_child_subreaper(Some(me))
        .map_err(|e| failed("becoming the run's subreaper")(e.into()))?;
    let (reports, report_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| failed("making the setup pipe")(e.into()))?;
    inner.stdin(std::process::Stdio::from(report_end));
    let started = Instant::now();
    let child = inner.spawn().map_err(failed("starting the program"))?;
    // The write end now lives only in the child (until it `exec`s the program, which gets
    // `/dev/null` as its standard input instead), so the pipe reads to its end once it is gone.
    drop(inner);
    let program = Pid::from_raw(child.id() as i32);
    let exit = loop {
        if let Some(exit) = reap(program) {
            break exit;
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) || stop.is_some_and(|s| s.exists()) {
            if let Some(pid) = program {
                let _ = kill_process(pid, Signal::KILL);
            }
            break Exit::Deadline;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    end_descendants(me);
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(reports), &mut why);
    Ok(match (why.trim(), exit) {
        ("", _) => RunStatus::Ended(exit),
        // Where the run has a pid namespace, the inner process waits for the program rather
        // than become it, and says how it ended here (its own end cannot always carry it: a
        // signal that process ignores).
        (why, exit) => match RunStatus::from_line(why) {
            Some(RunStatus::Ended(_)) if exit == Exit::Deadline => RunStatus::Ended(exit),
            Some(RunStatus::Ended(told)) => RunStatus::Ended(told),
            _ => RunStatus::SetupFailed(why.to_string()),
        },
    })
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

pub(crate) fn exit_of(status: WaitStatus) -> Exit {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(0),
    }
}

/// Kills every process beneath this one. The whole tree is stopped first and then killed: a
/// stopped process forks no more, so a tree that rebuilds itself (a chain whose leaf forks
/// again as soon as a parent dies) cannot outrun the kills, as it could when they went a
/// level at a time.
fn end_descendants(me: Pid) {
    let mut seen = std::collections::HashSet::new();
    // Until a pass finds nobody new: each pass stops what it finds, and only a process not
    // stopped yet can have started another.
    for _ in 0..1_000 {
        let tree = descendants(me);
        let mut new = false;
        for pid in &tree {
            new |= seen.insert(*pid);
            let _ = kill_process(*pid, Signal::STOP);
        }
        if !new {
            break;
        }
    }
    // A killed process's children become this one's (it is their subreaper); all of them are
    // stopped, so a few passes end them all.
    for _ in 0..100 {
        let tree = descendants(me);
        if tree.is_empty() {
            break;
        }
        for pid in tree {
            let _ = kill_process(pid, Signal::KILL);
        }
        while let Ok(Some(_)) = wait(WaitOptions::NOHANG) {}
        std::thread::sleep(Duration::from_millis(1));
    }
    while let Ok(Some(_)) = wait(WaitOptions::NOHANG) {}
}

/// Every process beneath `root` (its children, theirs, and so on), from each process's
/// parent in `/proc/*/stat`; zombies included.
fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent follows the command's closing parenthesis and the state.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root.as_raw_nonzero().get()];
    while let Some(pid) = next.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            found.push(*child);
            next.push(*child);
        }
    }
    found.into_iter().filter_map(Pid::from_raw).collect()
}

/// Ends this process as the program ended: with its code, or by its signal.
pub fn exit_as(exit: Exit) -> ! {
    match exit {
        Exit::Code(code) => std::process::exit(code),
        Exit::Deadline => {
            let _ = kill_process(getpid(), Signal::KILL);
            std::process::exit(128 + Signal::KILL.as_raw())
        }
        Exit::Signal(signal) => {
            if let Some(signal) = Signal::from_named_raw(signal) {
                let _ = kill_process(getpid(), signal);
            }
            // A signal this process ignores or survives: the shell's convention.
            std::process::exit(128 + signal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Exit, RunStatus};

    #[test]
    fn an_exit_reads_back_as_written_and_nothing_else_reads() {
        for exit in [
            Exit::Code(0),
            Exit::Code(-1),
            Exit::Signal(13),
            Exit::Deadline,
        ] {
            assert_eq!(Exit::from_line(&(exit.to_line() + "\n")), Some(exit));
        }
        for junk in ["", "exit", "exit x", "signal", "deadline 3", "killed 9"] {
            assert_eq!(Exit::from_line(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_setup_failure_reads_back_on_one_line_and_an_exit_as_an_exit() {
        let failed = RunStatus::SetupFailed("cannot apply Landlock rules:\nEINVAL".into());
        assert_eq!(
            failed.to_line(),
            "setup cannot apply Landlock rules: EINVAL"
        );
        assert_eq!(
            RunStatus::from_line(&(failed.to_line() + "\n")),
            Some(RunStatus::SetupFailed(
                "cannot apply Landlock rules: EINVAL".into()
            ))
        );
        let ended = RunStatus::Ended(Exit::Code(3));
        assert_eq!(RunStatus::from_line(&ended.to_line()), Some(ended));
        assert_eq!(RunStatus::from_line("setup"), None);
    }
}
