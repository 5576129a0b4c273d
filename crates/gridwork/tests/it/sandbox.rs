//! The task sandbox: what a task program may not write or read, GPUs, and a missing program.

use std::process::Command;

use gridwork_types::RunEnd;

use super::support::BIN;

#[test]
fn task_programs_cannot_write_outside_their_work_directory_or_past_limits() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let outside = dir.path().join("outside.txt");
    let script = format!(
        "echo ok > {w}/in.txt; echo bad > {o}; head -c 3000000 /dev/zero > {w}/big; exit 0",
        w = work.display(),
        o = outside.display()
    );
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--max-file-mib", "1", "--work"])
        .arg(&work)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        work.join("in.txt").exists(),
        "writes inside the work directory work: {stderr}"
    );
    assert!(
        std::fs::metadata(work.join("big")).unwrap().len() <= 1 << 20,
        "the file size limit holds"
    );
    if stderr.contains("Landlock Unsupported") {
        // A kernel without Landlock: the program ran under resource limits only, and said so.
        return;
    }
    assert!(
        !outside.exists(),
        "Landlock stops writes outside the work directory: {stderr}"
    );
}

#[test]
fn task_programs_with_gpus_may_write_their_devices_and_thread_names_and_all_use_shared_memory() {
    // /dev/zero stands for a GPU's node here. CUDA names its threads at start, in the process
    // that calls it: a child of the task's shell here.
    let script = "echo a > /dev/zero && echo gpu-ok; echo b > /dev/random && echo other-ok; \
                  sh -c 'echo worker > /proc/self/task/$$/comm' && echo comm-ok; \
                  echo c > /dev/shm/gridwork-test-$$ && rm /dev/shm/gridwork-test-$$ && echo shm-ok; \
                  exit 0";
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .arg("sandbox-exec")
            .args(extra)
            .arg("--work")
            .arg(dir.path())
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (gpu, stderr) = run(&["--gpu-device", "/dev/zero"]);
    for ok in ["gpu-ok", "comm-ok", "shm-ok"] {
        assert!(gpu.contains(ok), "{ok}: {gpu} {stderr}");
    }
    if stderr.contains("Landlock Unsupported") {
        return;
    }
    assert!(
        !gpu.contains("other-ok"),
        "a device not given stays closed for writing: {gpu} {stderr}"
    );
    let (plain, stderr) = run(&[]);
    assert!(plain.contains("shm-ok"), "{plain} {stderr}");
    for refused in ["gpu-ok", "other-ok", "comm-ok"] {
        assert!(
            !plain.contains(refused),
            "{refused} without GPUs: {plain} {stderr}"
        );
    }
}

/// With a GPU a task may write files under `/proc` (CUDA names its threads there), and used
/// to reach those of every process of its user there: the worker's `oom_score_adj` among
/// them, to make it the kernel's first choice out of memory. The run now has a pid namespace
/// and a `/proc` of its own: the task writes its own threads' names and sees, and writes,
/// nothing of other processes; the program's end still reads as it was (its code, or the
/// signal that ended it).
#[test]
fn a_task_with_a_gpu_writes_under_proc_for_its_own_processes_alone() {
    // As a worker not run as root: the task and the process it goes after are one user
    // (a root worker's tasks run as nobody, and could not write root's processes' files).
    let as_user = |program: &str| {
        let mut cmd = as_nobody_if_root(program);
        cmd.stdin(std::process::Stdio::null());
        cmd
    };
    let mut victim = as_user("sleep").arg("300").spawn().unwrap();
    let pid = victim.id();
    let adj = format!("/proc/{pid}/oom_score_adj");
    let before = std::fs::read_to_string(&adj).unwrap();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // And `PipeForger` (found by a review): the run's first process holds the pipe on which
    // it says how the program ended; the program, its user, tries every descriptor of it to
    // say it ended well (or to garble the line into a setup failure).
    let script = format!(
        "echo 1000 > /proc/{pid}/oom_score_adj && echo wrote-other; \
         ls /proc | grep -qx {pid} && echo sees-other; \
         for fd in /proc/1/fd/*; do printf 'exit 0\\nx' > $fd && echo forged; done 2>/dev/null; \
         echo mine > /proc/self/task/$$/comm && echo comm-ok; kill -TERM $$"
    );
    let status_file = dir.path().join("status");
    let out = as_user(BIN)
        .args(["sandbox-exec", "--gpu-device", "/dev/zero", "--work"])
        .arg(dir.path().join("run"))
        .arg("--status-file")
        .arg(&status_file)
        .args(["--", "bash", "-c", &script])
        .output();
    let after = std::fs::read_to_string(&adj);
    let _ = victim.kill();
    let _ = victim.wait();
    let out = out.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if stderr.contains("no namespaces of its own") {
        eprintln!("skipped: no user namespaces here ({stderr})");
        return;
    }
    assert!(stdout.contains("comm-ok"), "{stdout} {stderr}");
    assert!(!stdout.contains("wrote-other"), "{stdout} {stderr}");
    assert!(!stdout.contains("sees-other"), "{stdout} {stderr}");
    assert!(!stdout.contains("forged"), "{stdout} {stderr}");
    assert_eq!(after.unwrap(), before, "the other process's oom_score_adj");
    assert_eq!(
        std::fs::read_to_string(&status_file).unwrap(),
        "signal 15\n",
        "{stderr}"
    );
}

#[test]
fn task_programs_cannot_read_the_workers_home_or_other_tasks_beside_their_own() {
    // The layout of a worker: its home with keys, its work directory with two tasks, one of
    // them holding another requester's decrypted input.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mine = home.join("worker/dev1/tasks/a-0-0");
    let other = home.join("worker/dev1/tasks/b-0-0/inputs");
    for d in [&mine.join("inputs"), &other, &home.join("keys")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(mine.join("inputs/data.txt"), "mine\n").unwrap();
    std::fs::write(other.join("data.txt"), "theirs\n").unwrap();
    std::fs::write(home.join("keys/dev1.key"), "secret\n").unwrap();
    let script = format!(
        "cat inputs/data.txt; cat {other}/data.txt; cat {home}/keys/dev1.key; \
         ls {home}/worker/dev1/tasks; head -c 3 /etc/passwd && echo; exit 0",
        other = other.display(),
        home = home.display()
    );
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--hide"])
        .arg(&home)
        .arg("--work")
        .arg(&mine)
        .args(["--", "sh", "-c", &script])
        .current_dir(&mine)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("mine\n"),
        "its own inputs: {stdout} {stderr}"
    );
    assert!(
        stdout.contains("roo\n"),
        "the rest of the system: {stdout} {stderr}"
    );
    if stderr.contains("Landlock Unsupported") {
        return;
    }
    for secret in ["theirs", "secret", "b-0-0"] {
        assert!(!stdout.contains(secret), "{secret}: {stdout} {stderr}");
    }
}

/// A program that is not there: a clear error, and exit 127 as a shell says it (the job's
/// to fix, told apart from the program's own failures).
#[test]
fn sandbox_exec_of_a_missing_program_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--work"])
        .arg(dir.path())
        .args(["--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot execute `/no/such/program`"));
}

/// `BadInterpreter` (found by a review): a requester's binary whose interpreter is not one
/// (here `true` with its dynamic loader's path pointed at a text file) fails to execute with
/// `EIO`, which read as the sandbox's own failure (exit 125, "setup"), so every worker
/// committed nothing and was dropped. It is the program's failure: 126, as a shell says, with
/// or without a pid namespace (a GPU).
#[test]
fn a_program_whose_interpreter_is_no_interpreter_fails_as_the_programs_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut elf = std::fs::read("/bin/true").unwrap();
    let loaders: [&[u8]; 2] = [
        b"/lib64/ld-linux-x86-64.so.2",
        b"/lib/ld-linux-aarch64.so.1",
    ];
    let Some((at, len)) = loaders.iter().find_map(|l| {
        elf.windows(l.len())
            .position(|w| w == *l)
            .map(|at| (at, l.len()))
    }) else {
        eprintln!("skipped: no known dynamic loader named in /bin/true");
        return;
    };
    let text = b"/etc/hostname";
    elf[at..at + len].fill(0);
    elf[at..at + text.len()].copy_from_slice(text);
    let bad = dir.path().join("bad");
    std::fs::write(&bad, &elf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    for gpu in [&[][..], &["--gpu-device", "/dev/zero"][..]] {
        let status = dir.path().join("status");
        let out = Command::new(BIN)
            .arg("sandbox-exec")
            .args(gpu)
            .arg("--work")
            .arg(dir.path())
            .arg("--status-file")
            .arg(&status)
            .arg("--")
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{gpu:?}: {stderr}");
        assert_eq!(
            std::fs::read_to_string(&status).unwrap(),
            "exit 126\n",
            "{gpu:?}: {stderr}"
        );
    }
}

/// Runs `script` under `sandbox-exec` with `work` as its work directory; its output, and
/// whether the kernel enforces Landlock in full.
fn sandboxed(work: &std::path::Path, script: &str) -> (std::process::Output, bool) {
    sandboxed_with(&[], work, script)
}

/// [`sandboxed`] with more `sandbox-exec` options.
fn sandboxed_with(
    options: &[&str],
    work: &std::path::Path,
    script: &str,
) -> (std::process::Output, bool) {
    let out = Command::new(BIN)
        .arg("sandbox-exec")
        .args(options)
        .arg("--work")
        .arg(work)
        .args(["--", "bash", "-c", script])
        .output()
        .unwrap();
    let enforced = !String::from_utf8_lossy(&out.stderr).contains("gridwork sandbox: Landlock");
    (out, enforced)
}

/// Escape seen: `truncate(2)` (by path, no open for writing) emptied a file outside the work
/// directory (Landlock's second ABI does not handle truncation). The sandbox handles the highest ABI it knows, so a task
/// may truncate only its own files.
#[test]
fn a_task_cannot_truncate_a_file_outside_its_work_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "the worker's data\n").unwrap();
    let script = format!(
        "python3 -c 'import os; os.truncate(\"{v}\", 0)'; \
         echo mine > {w}/own && python3 -c 'import os; os.truncate(\"{w}/own\", 2)' && echo own-ok",
        v = victim.display(),
        w = work.display()
    );
    let (out, enforced) = sandboxed(&work, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("own-ok"), "its own files: {out:?}");
    if enforced {
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "the worker's data\n",
            "{out:?}"
        );
    }
}

/// Escape seen: a task fetched a page over loopback. A task opens no TCP connection and
/// listens on no TCP port (until jobs can ask for network and providers allow it).
#[test]
fn a_task_cannot_connect_or_listen_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "echo GET > /dev/tcp/127.0.0.1/{port} && echo connected; \
         python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); print(\"listening\")' 2>/dev/null; \
         echo done"
    );
    let (out, enforced) = sandboxed(dir.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done"), "{out:?}");
    if enforced {
        assert!(!stdout.contains("connected"), "{out:?}");
        assert!(!stdout.contains("listening"), "{out:?}");
        assert!(
            listener.accept().is_err(),
            "nothing reached the listener: {out:?}"
        );
    }
    // A run allowed the network (a job that asks, on a provider that allows) has it.
    let (out, _) = sandboxed_with(&["--network"], dir.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("connected"), "{out:?}");
    assert!(stdout.contains("listening"), "{out:?}");
}

/// Escape seen: the task killed its worker (same uid), which was then slashed for missing
/// its deadline. A task signals only processes of its own sandbox.
#[test]
fn a_task_cannot_signal_processes_outside_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut outsider = Command::new("sleep").arg("30").spawn().unwrap();
    let script = format!(
        "kill -TERM {pid} && echo killed; sleep 5 & kill -TERM $! && echo own-ok",
        pid = outsider.id()
    );
    let (out, enforced) = sandboxed(dir.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("own-ok"), "its own children: {out:?}");
    let alive = outsider.try_wait().unwrap().is_none();
    let _ = outsider.kill();
    if enforced {
        assert!(!stdout.contains("killed"), "{out:?}");
        assert!(alive, "the outsider lives: {out:?}");
    }
}

/// A worker's environment may hold its key's passphrase (`GRIDWORK_PASSPHRASE`). A task reads
/// the environment, memory and open files of no process outside its run, even where the
/// worker runs as root (as here in CI): Landlock refuses the kernel's ptrace check for any
/// process outside the task's domain. Its own processes it may read.
#[test]
fn a_task_cannot_read_the_environment_of_a_process_outside_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Command::new("sleep")
        .arg("30")
        .env("GRIDWORK_PASSPHRASE", "correct horse battery staple")
        .spawn()
        .unwrap();
    let script = format!(
        "cat /proc/{pid}/environ && echo; ls -l /proc/{pid}/fd/ && echo listed; \
         head -c 1 /proc/{pid}/mem && echo mem; \
         OWN=mine sleep 5 & sleep 0.2; tr '\\0' '\\n' < /proc/$!/environ | grep -q OWN=mine && echo own-ok",
        pid = worker.id()
    );
    let (out, enforced) = sandboxed(dir.path(), &script);
    let _ = worker.kill();
    let _ = worker.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("own-ok"), "its own processes: {out:?}");
    if enforced {
        assert!(!stdout.contains("correct horse"), "{out:?}");
        assert!(!stdout.contains("listed"), "{out:?}");
        assert!(!stdout.contains("mem"), "{out:?}");
    }
}

/// Whether process `pid` still runs (a zombie counts as ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        state != Some("Z")
    })
}

/// Escape seen: a `setsid` child survived its run, with the worker's uid, after the task was
/// committed. Every process a run starts ends with it: a process in a session of its own and a
/// daemon's double fork alike. (Their output goes elsewhere, so nothing waits for them to
/// close the run's pipes.)
#[test]
fn a_process_a_task_leaves_behind_ends_with_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().display();
    let script = format!(
        "setsid sleep 300 >/dev/null 2>&1 & echo $! > {w}/session; \
         (setsid sh -c 'echo $$ > {w}/daemon; exec sleep 300' >/dev/null 2>&1 &); \
         sleep 0.3; echo started"
    );
    let (out, _) = sandboxed(dir.path(), &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started"),
        "{out:?}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "it ends as the program did: {out:?}"
    );
    for name in ["session", "daemon"] {
        let pid: u32 = std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !running(pid),
            "the {name} process outlived its run: {out:?}"
        );
    }
}

/// At its deadline a run ends, the program and whatever it left in other sessions, and the
/// run reads as killed (what the worker reports as a timeout).
#[test]
fn a_run_ends_at_its_deadline_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().display();
    let script = format!("setsid sleep 300 >/dev/null 2>&1 & echo $! > {w}/session; sleep 300");
    let started = std::time::Instant::now();
    let (out, _) = sandboxed_with(&["--deadline-ms", "500"], dir.path(), &script);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the run ended at its deadline"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("session"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!running(pid), "the session's process outlived the deadline");
}

/// The worker's sandbox as `gridwork worker` sets it up (this binary as the launcher, no
/// limits), and a task's environment.
fn worker_sandbox() -> (
    gridwork_worker::sandbox::Launcher,
    gridwork_worker::sandbox::TaskEnv,
) {
    let launcher = gridwork_worker::sandbox::Launcher {
        exe: BIN.into(),
        memory_mib: None,
        max_file_mib: None,
        gpu_devices: Vec::new(),
        hidden: Vec::new(),
        cgroups: gridwork_worker::cgroup::Cgroups::find("gridwork sandbox tests"),
    };
    let env = gridwork_worker::sandbox::TaskEnv {
        job: "job".into(),
        task: 0,
        items: (0, 1),
        segment: None,
        limits: Default::default(),
    };
    (launcher, env)
}

/// A job that asks for the network has it in the worker's sandbox (its worker declines such
/// jobs unless the provider allows them); one that does not ask has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_has_the_network_only_when_its_job_asks() {
    let (launcher, _) = worker_sandbox();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "echo GET > /dev/tcp/127.0.0.1/{port} && echo connected > $GRIDWORK_OUTPUTS/net.txt; true"
    );
    let mut ran = Vec::new();
    for network in [false, true] {
        let (dir, outcome) = supervised(
            &launcher,
            &bash(&script, network),
            std::time::Duration::from_secs(20),
        )
        .await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.ended, RunEnd::SUCCESS, "{outcome:?}");
        let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        let connected = dir.path().join("run/outputs/net.txt").exists();
        ran.push((
            network,
            connected,
            stderr.contains("gridwork sandbox: Landlock"),
        ));
    }
    let enforced = !ran[0].2;
    if enforced {
        assert!(!ran[0].1, "no network unless asked: {ran:?}");
    }
    assert!(ran[1].1, "the network when asked: {ran:?}");
}

/// The worker's view of a supervised run: a program that runs past its deadline is a timeout
/// (the supervisor ended it, and everything it started), one that exits is its exit code, one
/// a signal ended was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reads_a_supervised_run_as_a_timeout_or_its_exit_code() {
    let (launcher, _) = worker_sandbox();
    let program = |script: &str| bash(script, false);
    let seconds = std::time::Duration::from_secs;
    let started = std::time::Instant::now();
    let (dir, late) = supervised(
        &launcher,
        &program("setsid sleep 300 >/dev/null 2>&1 & echo $! > session; sleep 300"),
        std::time::Duration::from_millis(500),
    )
    .await;
    let late = late.unwrap();
    assert_eq!(late.ended, RunEnd::Timeout {}, "{late:?}");
    assert!(
        started.elapsed() < seconds(5),
        "ended by the supervisor, not the backstop"
    );
    let pid: u32 = std::fs::read_to_string(dir.path().join("run/session"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!running(pid), "the session's process outlived the deadline");
    let (_, exited) = supervised(&launcher, &program("exit 3"), seconds(30)).await;
    assert_eq!(exited.unwrap().ended, RunEnd::Exit { code: 3 });
    // A program that is not there exits 127, as a shell would say it, not 1 (which reads as
    // the program's own failure).
    let missing = gridwork_types::Program {
        command: "no-such-program-anywhere".into(),
        ..program("")
    };
    let (_, absent) = supervised(&launcher, &missing, seconds(30)).await;
    let absent = absent.unwrap();
    assert_eq!(absent.ended, RunEnd::Exit { code: 127 }, "{absent:?}");
    // Ended by a signal the supervisor itself ignores (Rust programs ignore SIGPIPE): still
    // read as killed, as without a supervisor, not as an exit code.
    let (_, piped) = supervised(&launcher, &program("kill -PIPE $$"), seconds(30)).await;
    let piped = piped.unwrap();
    assert_eq!(piped.ended, RunEnd::Signal { signal: 13 }, "{piped:?}");
    // A sandbox that cannot be set up (here a memory limit above the worker's own hard
    // limit) is the worker's failure: an error, not the program's exit code, which the
    // worker would commit to and be outvoted on.
    let wrapper_dir = tempfile::tempdir().unwrap();
    let Some(wrapper) = under_a_lower_hard_memory_limit(wrapper_dir.path()) else {
        return;
    };
    let broken = gridwork_worker::sandbox::Launcher {
        exe: wrapper,
        memory_mib: Some(8192),
        ..launcher.clone()
    };
    let ran = program("echo ran > $GRIDWORK_OUTPUTS/ran.txt");
    let (dir, failed) = supervised(&broken, &ran, seconds(30)).await;
    let failed = failed.unwrap_err();
    assert!(
        failed.to_string().contains("could not be set up"),
        "{failed}"
    );
    assert!(!dir.path().join("run/outputs/ran.txt").exists());
}

/// A process task is held to its job's memory and CPUs and to 4,096 processes, by a control
/// group it cannot leave; a run that goes past its memory ends as out of memory (what every
/// worker says of it, so its council agrees), the same program with no memory set runs to
/// its end, and the group is gone with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_held_to_its_jobs_memory_and_cpus_and_ends_out_of_memory_past_them() {
    use gridwork_worker::cgroup::RunLimits;
    let (launcher, env) = worker_sandbox();
    if let Err(why) = &launcher.cgroups {
        assert!(
            !runs_as_root(),
            "a root worker must make control groups here: {why}"
        );
        eprintln!("skipped: this test process may make no control group ({why})");
        return;
    }
    let held = gridwork_worker::sandbox::TaskEnv {
        limits: RunLimits {
            memory_mib: Some(64),
            cpus: Some(1),
        },
        ..env.clone()
    };
    // What the run's own group says, read from inside it (cgroup v1 or v2), and whether
    // the task can move itself out of it.
    let report = r#"
        cg() { sed -n "s/^[0-9]*:$1:\(.*\)/\1/p" /proc/self/cgroup; }
        if [ -n "$(cg memory)" ]; then
          g=/sys/fs/cgroup/memory$(cg memory)
          echo "memory $(cat $g/memory.limit_in_bytes)"
          c=$(cg cpu); [ -n "$c" ] || c=$(cg cpu,cpuacct)
          echo "cpu $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us)"
          echo "pids $(cat /sys/fs/cgroup/pids$(cg pids)/pids.max)"
        else
          g=/sys/fs/cgroup$(cg '')
          echo "memory $(cat $g/memory.max)"
          echo "cpu $(cut -d' ' -f1 $g/cpu.max)"
          echo "pids $(cat $g/pids.max)"
        fi
        echo "group $g"
        echo $$ > $g/../cgroup.procs 2>/dev/null && echo "left its group"
        true
    "#;
    let seconds = std::time::Duration::from_secs;
    let (dir, ran) = supervised_in(&launcher, &held, &bash(report, false), seconds(30)).await;
    assert_eq!(ran.unwrap().ended, RunEnd::SUCCESS);
    let said = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        said.contains(&format!("memory {}\n", 64u64 << 20)),
        "{said}"
    );
    assert!(
        said.contains("cpu 100000\n"),
        "one CPU's time a period: {said}"
    );
    assert!(said.contains("pids 4096\n"), "{said}");
    assert!(!said.contains("left its group"), "{said}");
    let group = said
        .lines()
        .find_map(|l| l.strip_prefix("group "))
        .expect("the group");
    assert!(
        !std::path::Path::new(group).exists(),
        "the run's group {group} outlived it"
    );
    // 200 MB held in one shell variable: past 64 MiB, killed by the kernel.
    let greedy = bash(
        "x=$(head -c 209715200 /dev/zero | tr '\\0' x); echo ${#x} > $GRIDWORK_OUTPUTS/n",
        false,
    );
    let (_, oom) = supervised_in(&launcher, &held, &greedy, seconds(60)).await;
    assert_eq!(oom.unwrap().ended, RunEnd::OutOfMemory {});
    let (dir, free) = supervised_in(&launcher, &env, &greedy, seconds(60)).await;
    assert_eq!(free.unwrap().ended, RunEnd::SUCCESS);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/outputs/n")).unwrap(),
        "209715200\n"
    );
}

/// What the sandbox's own processes hold is the worker's, not the run's: a run with GPUs (a
/// pid namespace, whose first process and the process that waits for it stay beside the
/// program) gets the memory a run without gets. A review found 11 MiB charged to the one and
/// 1.3 MiB to the other, so a program near its limit ended on GPU workers alone, splitting
/// its council; here a small program runs under 4 MiB either way (what the first process's
/// start of the program holds for a moment, a copy of its page tables, stays below 2 MiB).
#[test]
fn a_run_with_gpus_gets_the_same_memory_as_one_without() {
    let Ok(cgroups) = gridwork_worker::cgroup::Cgroups::find("gridwork sandbox tests") else {
        assert!(
            !runs_as_root(),
            "a root worker must make control groups here"
        );
        eprintln!("skipped: this test process may make no control group");
        return;
    };
    for gpu in [&[][..], &["--gpu-device", "/dev/zero"][..]] {
        let group = cgroups
            .create(gridwork_worker::cgroup::RunLimits {
                memory_mib: Some(4),
                cpus: None,
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let status = dir.path().join("status");
        let mut cmd = Command::new(BIN);
        cmd.arg("sandbox-exec").args(gpu);
        for d in group.dirs() {
            cmd.arg("--cgroup").arg(d);
        }
        let out = cmd
            .arg("--work")
            .arg(dir.path().join("run"))
            .arg("--status-file")
            .arg(&status)
            .args(["--", "sh", "-c", "echo small"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            std::fs::read_to_string(&status).unwrap(),
            "exit 0\n",
            "{gpu:?}: {stderr}"
        );
        assert_eq!(
            group.oom_kill(),
            gridwork_worker::cgroup::OomKill::None,
            "{gpu:?}: {stderr}"
        );
    }
}

/// Found by a clean clone's CI: a run with GPUs starts gridwork again as its pid namespace's
/// first process, and started it by the path it was run from, which the run's own `/tmp`
/// covers when the build lies beneath `/tmp` (and the work directory does not): "starting
/// init: No such file or directory". It is started by its open descriptor now.
#[test]
fn a_run_with_gpus_starts_when_its_own_mounts_cover_the_path_gridwork_ran_from() {
    let bin_dir = tempfile::tempdir_in("/tmp").unwrap();
    let bin = bin_dir.path().join("gridwork");
    std::fs::copy(BIN, &bin).unwrap();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = Command::new(&bin)
        .args(["sandbox-exec", "--gpu-device", "/dev/zero", "--work"])
        .arg(work.path())
        .args(["--", "sh", "-c", "echo started"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "started\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `bash -c script` program, with the network or without.
fn bash(script: &str, network: bool) -> gridwork_types::Program {
    gridwork_types::Program {
        command: "bash".into(),
        args: vec!["-c".into(), script.into()],
        outputs: Vec::new(),
        image: None,
        network,
        vendor_images: Vec::new(),
    }
}

/// Runs `program` as the worker does, through `launcher`'s supervised sandbox, in a fresh
/// work directory (returned, so the test can look in it), within `deadline`.
async fn supervised(
    launcher: &gridwork_worker::sandbox::Launcher,
    program: &gridwork_types::Program,
    deadline: std::time::Duration,
) -> (
    tempfile::TempDir,
    Result<gridwork_worker::sandbox::RunOutcome, gridwork_worker::sandbox::SandboxError>,
) {
    let (_, env) = worker_sandbox();
    supervised_in(launcher, &env, program, deadline).await
}

/// [`supervised`] with the task environment `env` (its limits, say).
async fn supervised_in(
    launcher: &gridwork_worker::sandbox::Launcher,
    env: &gridwork_worker::sandbox::TaskEnv,
    program: &gridwork_types::Program,
    deadline: std::time::Duration,
) -> (
    tempfile::TempDir,
    Result<gridwork_worker::sandbox::RunOutcome, gridwork_worker::sandbox::SandboxError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let outcome =
        gridwork_worker::sandbox::run(program, dir.path(), env, deadline, Some(launcher)).await;
    (dir, outcome)
}

/// A launcher (a script in `dir`) that starts `gridwork` under a hard address-space limit of
/// 4 GiB, so a run asking for 8 GiB cannot be confined: inside its user namespace not even
/// root may raise a hard limit. `None` where that is no failure (root on a host without user
/// namespaces may raise it).
fn under_a_lower_hard_memory_limit(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let namespaces = Command::new("unshare")
        .args(["--user", "--map-current-user", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let root = runs_as_root();
    if !namespaces && root {
        return None;
    }
    let script = dir.join("limited-gridwork");
    std::fs::write(
        &script,
        format!("#!/bin/bash\nulimit -v 4194304 && exec {BIN} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(script)
}

/// The sandbox's own failure reads as such: `sandbox-exec` exits 125 (not the program's
/// codes, nor 1), says why, and records `setup <why>` in its status file.
#[test]
fn a_sandbox_that_cannot_be_set_up_says_so_and_never_passes_for_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let Some(limited) = under_a_lower_hard_memory_limit(dir.path()) else {
        return;
    };
    let status = dir.path().join("status");
    let out = Command::new(limited)
        .args(["sandbox-exec", "--memory-mib", "8192", "--work"])
        .arg(dir.path())
        .arg("--status-file")
        .arg(&status)
        .args(["--", "bash", "-c", "echo ran"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not be set up"),
        "{out:?}"
    );
    let line = std::fs::read_to_string(&status).unwrap();
    assert!(line.starts_with("setup "), "{line}");
    assert!(line.contains("memory limit"), "{line}");
}

/// Found by an adversarial review: sockets covered one by one came back when their daemon
/// made them again (Docker restarting), and a socket made after the run started (a new
/// container's shim under `/run/containerd`) was never covered. `/run` is an empty, read-only
/// directory of the run's own: a socket the host makes there, before or while the run goes,
/// is out of its sight.
#[test]
fn a_socket_the_host_makes_under_run_while_a_task_runs_stays_out_of_its_reach() {
    let writable = std::fs::metadata("/run").is_ok_and(|m| !m.permissions().readonly())
        && std::fs::write(format!("/run/gridwork-probe-{}", std::process::id()), "").is_ok();
    let _ = std::fs::remove_file(format!("/run/gridwork-probe-{}", std::process::id()));
    if !writable {
        // Only root makes sockets under /run (CI and this machine are root).
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let early =
        std::path::PathBuf::from(format!("/run/gridwork-early-{}.sock", std::process::id()));
    let late = std::path::PathBuf::from(format!("/run/gridwork-late-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&early);
    let _ = std::fs::remove_file(&late);
    let listener = std::os::unix::net::UnixListener::bind(&early).unwrap();
    let script = format!(
        "sleep 1; [ -e {early} ] && echo early; [ -e {late} ] && echo late; \
         ls -A /run | wc -l | sed 's/^/entries /'; touch /run/planted 2>/dev/null && echo planted; echo done",
        early = early.display(),
        late = late.display()
    );
    let child = Command::new(BIN)
        .args(["sandbox-exec", "--work"])
        .arg(dir.path())
        .args(["--", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The daemon restarts: its socket made again; and a new one appears.
    drop(listener);
    std::fs::remove_file(&early).unwrap();
    let _again = std::os::unix::net::UnixListener::bind(&early).unwrap();
    let _new = std::os::unix::net::UnixListener::bind(&late).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&early);
    let _ = std::fs::remove_file(&late);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done"), "{out:?}");
    if String::from_utf8_lossy(&out.stderr).contains("no namespaces of its own") {
        return;
    }
    assert!(
        !stdout.contains("early") && !stdout.contains("late"),
        "{out:?}"
    );
    assert!(stdout.contains("entries 0"), "an empty /run: {out:?}");
    assert!(!stdout.contains("planted"), "a read-only /run: {out:?}");
}

/// Escape seen: a task sent UDP to the host's loopback (Landlock covers only TCP), and could
/// reach pathname sockets of other programs in the shared `/tmp` (an ssh-agent's, an X
/// server's) and under `/run` (Docker's, a database's). A run has a network namespace of its
/// own unless its job asks for the network, and its own `tmp/` at `/tmp` and `/var/tmp`, with
/// `TMPDIR` at `/tmp`; every socket under `/run` is `/dev/null` to it.
#[test]
fn a_task_sends_no_udp_and_reaches_no_socket_in_the_shared_tmp_or_run() {
    // Outside /tmp, as a worker's directory is (this repository may lie beneath /tmp): a run
    // whose work directory lies beneath /tmp keeps the host's (its sockets covered), lest its
    // own paths vanish. Beneath /var/tmp, which is then kept, and /tmp replaced.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let port = udp.local_addr().unwrap().port();
    let id = std::process::id();
    let agent = std::path::PathBuf::from(format!("/tmp/gridwork-test-agent-{id}.sock"));
    let _agent = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    // Under /run where this user may make one (root: CI and this machine).
    let database = std::path::PathBuf::from(format!("/run/gridwork-test-db-{id}.sock"));
    let _database = std::os::unix::net::UnixListener::bind(&database).ok();
    let script = format!(
        "echo datagram > /dev/udp/127.0.0.1/{port} && echo sent; \
         [ -S {agent} ] && echo agent; [ -S {database} ] && echo database; \
         echo mine > /tmp/scratch && echo tmp-ok; echo \"tmpdir $TMPDIR\"; echo done",
        agent = agent.display(),
        database = database.display(),
    );
    let host_allows = Command::new("unshare")
        .args(["--user", "--net", "--mount", "--map-current-user", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let (out, _) = sandboxed(dir.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done"), "{out:?}");
    let mut buf = [0u8; 64];
    let received = udp.recv(&mut buf).is_ok();
    if host_allows {
        assert!(
            !stdout.contains("sent") && !received,
            "UDP got out: {out:?}"
        );
        assert!(!stdout.contains("agent"), "{out:?}");
        assert!(!stdout.contains("database"), "{out:?}");
        assert!(
            stdout.contains("tmp-ok") && stdout.contains("tmpdir /tmp\n"),
            "{out:?}"
        );
        // Its /tmp is its own tmp/, in its work directory.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tmp/scratch")).unwrap(),
            "mine\n"
        );
    } else {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no namespaces of its own"),
            "{out:?}"
        );
    }
    // A job that asks for the network (on a provider that allows it) has UDP too.
    let (out, _) = sandboxed_with(&["--network"], dir.path(), &script);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("database"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent"),
        "{out:?}"
    );
    assert!(udp.recv(&mut buf).is_ok(), "{out:?}");
    let _ = std::fs::remove_file(&agent);
    let _ = std::fs::remove_file(&database);
}

/// What the worker keeps of a run (its logs, which it streams to the node; its result, which
/// it commits to) lies beside the run's directory, where the program may not write: it cannot
/// swap a log for a link to one of the worker's files (streamed to the requester) or a FIFO
/// (a read that never ends), nor plant a link the worker would write its result through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_reach_what_the_worker_keeps_of_its_run() {
    use gridwork_worker::sandbox::{run, Launcher, TaskEnv};
    let base = tempfile::tempdir().unwrap();
    let worker_home = base.path().join("worker");
    let work = worker_home.join("task");
    std::fs::create_dir_all(&work).unwrap();
    let key = worker_home.join("key");
    std::fs::write(&key, "the worker's key\n").unwrap();
    let launcher = Launcher {
        exe: BIN.into(),
        memory_mib: None,
        max_file_mib: None,
        gpu_devices: Vec::new(),
        hidden: vec![worker_home.clone()],
        cgroups: gridwork_worker::cgroup::Cgroups::find("gridwork sandbox tests"),
    };
    let env = TaskEnv {
        job: "job".into(),
        task: 0,
        items: (0, 1),
        segment: None,
        limits: Default::default(),
    };
    let script = format!(
        "echo printed; ln -sf {k} ../stdout.log; rm -f ../stderr.log; mkfifo ../stderr.log; \
         ln -s {k} ../result.json.tmp; echo '{{}}' > ../result.json; echo tried",
        k = key.display()
    );
    let program = gridwork_types::Program {
        command: "bash".into(),
        args: vec!["-c".into(), script],
        outputs: Vec::new(),
        image: None,
        network: false,
        vendor_images: Vec::new(),
    };
    let outcome = run(
        &program,
        &work,
        &env,
        std::time::Duration::from_secs(30),
        Some(&launcher),
    )
    .await
    .unwrap();
    assert_eq!(outcome.ended, RunEnd::SUCCESS, "{outcome:?}");
    for log in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(work.join(log)).unwrap();
        assert!(meta.is_file(), "{log} is still the worker's file");
    }
    let stdout = std::fs::read_to_string(work.join("stdout.log")).unwrap();
    assert_eq!(stdout, "printed\ntried\n");
    assert!(std::fs::symlink_metadata(work.join("result.json.tmp")).is_err());
    assert!(std::fs::symlink_metadata(work.join("result.json")).is_err());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "the worker's key\n");
}

/// A process tree that rebuilds itself (`scripts/chain.c`: a chain whose leaf forks again
/// whenever a member dies) outran a supervisor that killed a level at a time; the whole tree
/// is stopped first, then killed, and nothing of it outlives the deadline. (Built here with
/// the C compiler: a shell or Python chain forks too slowly to race the kills.)
#[test]
fn a_process_tree_that_rebuilds_itself_ends_with_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/scripts/chain.c");
    let chain = dir.path().join("chain");
    let built = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&chain)
        .arg(&source)
        .output()
        .expect("a C compiler (`cc`) builds the chain: install gcc");
    assert!(built.status.success(), "{built:?}");
    let members = dir.path().join("members");
    let script = format!(
        "{c} {m} >/dev/null 2>&1 & sleep 300",
        c = chain.display(),
        m = members.display()
    );
    let started = std::time::Instant::now();
    let (out, _) = sandboxed_with(&["--deadline-ms", "1500"], dir.path(), &script);
    let took = started.elapsed();
    let pids: Vec<u32> = std::fs::read_to_string(&members)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let left: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(pids.len() > 1, "the chain grew: {out:?}");
    assert!(
        left.is_empty(),
        "{} of {} members outlived the run",
        left.len(),
        pids.len()
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the run ended at its deadline: {took:?}"
    );
}

/// A run has a `/dev/shm` of its own: it sees nothing another run or the host put there, and
/// nothing it puts there outlives it. Docker's socket, where the host has one, is out of reach
/// (a container started through it is root on the host; Landlock does not cover connecting to
/// a socket by its path).
#[test]
fn a_run_has_its_own_shared_memory_and_no_docker_socket() {
    let dir = tempfile::tempdir().unwrap();
    let outside = format!("/dev/shm/gridwork-host-{}", std::process::id());
    std::fs::write(&outside, "the host's\n").unwrap();
    let inside = format!("/dev/shm/gridwork-task-{}", std::process::id());
    // A worker's own engine socket elsewhere (`--docker-socket`), which it hides.
    let engine_dir = tempfile::tempdir().unwrap();
    let engine_socket = engine_dir.path().join("engine.sock");
    let _engine = std::os::unix::net::UnixListener::bind(&engine_socket).unwrap();
    let script = format!(
        "cat {outside} && echo saw-host; echo task > {inside} && echo wrote; \
         [ -S /var/run/docker.sock ] && echo docker-socket; [ -S /run/docker.sock ] && echo docker-socket; \
         [ -S {engine} ] && echo engine-socket; \
         echo done",
        engine = engine_socket.display()
    );
    let hide = engine_socket.display().to_string();
    let (out, _) = sandboxed_with(&["--hide", &hide], dir.path(), &script);
    let _ = std::fs::remove_file(&outside);
    let leaked = std::path::Path::new(&inside).exists();
    let _ = std::fs::remove_file(&inside);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("wrote") && stdout.contains("done"),
        "{out:?}"
    );
    // Where the host forbids user namespaces (util-linux's `unshare` cannot make one either),
    // the run goes on with the shared mounts and says so; elsewhere it has its own.
    let host_allows = Command::new("unshare")
        .args(["--user", "--mount", "--map-current-user", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !host_allows {
        assert!(stderr.contains("no namespaces of its own"), "{out:?}");
        return;
    }
    assert!(!stderr.contains("no namespaces of its own"), "{out:?}");
    assert!(!stdout.contains("saw-host"), "{out:?}");
    assert!(!leaked, "the task's segment outlived its run");
    assert!(!stdout.contains("docker-socket"), "{out:?}");
    assert!(!stdout.contains("engine-socket"), "{out:?}");
}

/// A root worker's tasks run as `nobody`, who cannot search `/root` (0700) or a `mktemp -d`:
/// with its work directory beneath one, every task failed alike (its inputs and outputs out
/// of reach; settled and paid as the program's failure) and no service's server started. Such
/// a worker is refused at start, before any key is asked for, naming the directory and the
/// fix. (Not root, the test runs the worker as root in a user namespace of its own.)
#[test]
fn a_root_worker_whose_work_directory_nobody_can_reach_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let closed = home.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = runs_as_root();
    let mut cmd = if root {
        Command::new(BIN)
    } else {
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", BIN]);
        c
    };
    let out = cmd
        .args(["--key", "dev1", "worker", "--price", "0.01", "--work-dir"])
        .arg(closed.join("worker"))
        .env("GRIDWORK_HOME", home.path().join("gridwork"))
        .env("GRIDWORK_NODE", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("lies beneath {} (mode 700)", closed.display()))
            && stderr.contains("give --work-dir a directory beneath searchable ones"),
        "{out:?}"
    );
}

/// Every container runs as `nobody`, and only root can read back and remove what such a run
/// leaves: a docker worker of another user would never commit such a run and would fill its
/// disk. It is refused at start, before any key or passphrase is asked for, naming the fix.
#[test]
fn a_docker_worker_not_run_as_root_is_refused_at_start_naming_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = as_nobody_if_root(BIN)
        .args([
            "--key",
            "dev1",
            "worker",
            "--price",
            "0.01",
            "--executor",
            "docker",
        ])
        .env("GRIDWORK_HOME", home.path().join("gridwork"))
        .env("GRIDWORK_NODE", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--executor docker needs the worker to run as root")
            && stderr.contains("--executor process"),
        "{out:?}"
    );
}

/// Escape seen (noted in session 19): on a root worker (the container executor needs one) a
/// process task was root in a user namespace mapped to the host's root, so it passed the
/// permission checks of root-only files and sockets outside `/run` and `/tmp` (a database's
/// socket under `/var/lib`, a key readable by root alone). It now runs as `nobody`, its run
/// directory (inputs among it) handed to it first. Not root (a worker of its own user): the
/// task runs as that user, as before.
#[test]
fn a_root_workers_task_runs_as_nobody_and_cannot_open_roots_files_or_sockets() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let root = uid == 0;
    // Outside /tmp, /var/tmp and /run, which a task sees its own of.
    let base = std::path::Path::new("/var/lib");
    let dir = match tempfile::tempdir_in(base) {
        Ok(dir) => dir,
        Err(_) => tempfile::tempdir_in(std::env::var("HOME").unwrap()).unwrap(),
    };
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root's\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let socket = dir.path().join("db.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::create_dir_all(work.path().join("inputs")).unwrap();
    std::fs::write(work.path().join("inputs/data"), "input\n").unwrap();
    std::fs::set_permissions(
        work.path().join("inputs/data"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let script = format!(
        "id -u; cat {secret} 2>/dev/null && echo read-secret; \
         python3 -c 'import socket; print(\"connect\", socket.socket(socket.AF_UNIX).connect_ex(\"{socket}\"))'; \
         cat {work}/inputs/data; echo out > {work}/own && echo wrote; echo done",
        secret = secret.display(),
        socket = socket.display(),
        work = work.path().display(),
    );
    let (out, _) = sandboxed(work.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done"), "{out:?}");
    let expected = if root { 65534 } else { uid };
    assert!(stdout.starts_with(&format!("{expected}\n")), "{out:?}");
    // Its own inputs and run directory it reads and writes, whatever their modes.
    assert!(
        stdout.contains("input\n") && stdout.contains("wrote"),
        "{out:?}"
    );
    if root {
        assert!(!stdout.contains("read-secret"), "{out:?}");
        // EACCES: the socket is root's alone.
        assert!(stdout.contains("connect 13\n"), "{out:?}");
    }
}

/// What `gridwork sandbox-exec --check` finds, run through `wrap` (a command line before
/// gridwork's, empty for none).
fn sandbox_check(wrap: &[&str]) -> serde_json::Value {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut args: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    args.extend([BIN, "sandbox-exec", "--check", "--work"].map(String::from));
    args.push(work.path().display().to_string());
    let out = Command::new(&args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A pathname UNIX socket outside the run and outside the `/run`, `/tmp` and `/var/tmp` the
/// run's own mounts cover (a daemon's under `/var/lib`, say): where the kernel has Landlock's
/// ninth ABI (Linux 7.1) a task cannot connect to it; before, it can, as far as the socket's
/// mode lets its user, and the sandbox check says so (`unix_sockets: false`).
#[test]
fn a_task_connects_to_no_socket_outside_its_run_where_the_kernel_can_refuse_it() {
    // Where a daemon would keep one: not beneath /tmp, /run or /var/tmp, whose sockets the
    // run's own mounts cover whatever the kernel (a clean clone's build lies beneath /tmp).
    let covered = |p: &std::path::Path| {
        ["/tmp", "/run", "/var/tmp"]
            .iter()
            .any(|c| p.starts_with(c))
    };
    let base = match runs_as_root() {
        true => std::path::PathBuf::from("/var/lib"),
        false => std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    if covered(&base) {
        eprintln!("skipped: no directory outside /tmp, /run and /var/tmp to make a socket in");
        return;
    }
    let outside = tempfile::Builder::new()
        .prefix("gridwork-sock")
        .tempdir_in(&base)
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = outside.path().join("d.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('{}')\n    print('connected')\nexcept OSError as e:\n    print('refused', e)\n",
        socket.display()
    );
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--work"])
        .arg(work.path())
        .args(["--", "python3", "-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let confined = sandbox_check(&[])["unix_sockets"].as_bool().unwrap();
    match confined {
        true => assert!(said.starts_with("refused"), "{said} {out:?}"),
        false => {
            assert!(said.starts_with("connected"), "{said} {out:?}");
            eprintln!("this kernel has no Landlock ABI 9: the socket outside is reachable, as the check says");
        }
    }
}

/// A provider learns what its sandbox holds when its worker starts (`gridwork probe` shows
/// the same): here, namespaces of the task's own, and Landlock where the kernel has it.
#[test]
fn the_sandbox_check_finds_the_whole_sandbox_on_this_machine() {
    let check = sandbox_check(&[]);
    assert_eq!(check["identity"], serde_json::Value::Null, "{check}");
    assert_eq!(check["namespaces"], serde_json::Value::Null, "{check}");
    assert_eq!(check["landlock_error"], serde_json::Value::Null, "{check}");
    let out = Command::new(BIN).args(["probe"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    if check["landlock"] == "enforced" {
        assert!(
            shown.contains("full (Landlock, namespaces of its own"),
            "{shown}"
        );
        assert!(!shown.contains("weakness"), "{shown}");
    }
}

/// A host that forbids user namespaces (here: a user namespace whose own limit is 0, where
/// only root is mapped, as in a rootless container) weakens the sandbox without stopping any
/// program; before, a provider learned it only from each task's standard error, which goes
/// to the requester. Now the check finds both weaknesses and the probe names them with their
/// fixes.
#[test]
fn a_host_without_user_namespaces_is_a_weakness_the_provider_is_told_of_with_its_fix() {
    let wrap = [
        "unshare",
        "--map-root-user",
        "sh",
        "-c",
        "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
        "sh",
    ];
    let check = sandbox_check(&wrap);
    assert!(
        check["namespaces"]
            .as_str()
            .is_some_and(|w| w.contains("unshare")),
        "{check}"
    );
    // Root inside, with no `nobody` to become: every process task would fail to start.
    assert!(check["identity"].is_string(), "{check}");
    let mut probe = wrap.map(String::from).to_vec();
    probe.extend([BIN.to_string(), "probe".into()]);
    let out = Command::new(&probe[0]).args(&probe[1..]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("weaker than Gridwork's sandbox"), "{shown}");
    assert!(
        shown.contains("tasks share /dev/shm") && shown.contains("max_user_namespaces"),
        "{shown}"
    );
    assert!(shown.contains("fails to start"), "{shown}");
}

/// A root worker's process task runs as `nobody` with the groups of the GPU nodes it may
/// open. A worker names AMD's and Intel's render nodes by their directory (`/dev/dri`, which
/// is `root:root`), and each node has its own group (`root:render`, 0660): the groups are the
/// nodes', found beneath the directory, not the directory's. Here a directory stands for
/// `/dev/dri` with a render node of group 4242 (`/dev/null`'s numbers). Not root: the task
/// runs as the worker's user, whose groups are its own.
#[test]
fn a_root_workers_task_writes_render_nodes_through_their_group_when_given_their_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return;
    }
    let devices = tempfile::tempdir_in("/var/lib").unwrap();
    let dri = devices.path().join("dri");
    std::fs::create_dir_all(&dri).unwrap();
    let node = dri.join("renderD128");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::chown(&node, Some(0), Some(4242)).unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    // (`id -G` cannot show the group: the run's user namespace maps no gid but nobody's.)
    let script = format!("echo frame > {} && echo render-ok", node.display());
    let dri = dri.display().to_string();
    let (out, _) = sandboxed_with(&["--gpu-device", &dri], work.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "render-ok\n", "{out:?}");
}

/// Found by a review: a task that spreads its memory over many processes, each under the
/// per-process limit, made its worker the kernel's largest target when memory ran out, and a
/// worker ended that way misses its deadlines and is slashed. The task and all it starts are
/// now the first the kernel ends.
#[test]
fn a_task_and_its_children_are_the_first_the_kernel_ends_out_of_memory() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let (out, _) = sandboxed(
        work.path(),
        "cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n",
        "{out:?}"
    );
}

/// A service's server in the worker's sandbox: the example model (`examples/service/serve.py`)
/// answers HTTP on its socket, never on the network; two members' servers answer a prompt
/// with the same bytes; and when the worker stops it, everything it started ends, a process
/// in a session of its own included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_server_answers_on_its_socket_and_ends_with_everything_it_started() {
    use gridwork_worker::serve::{Bytes, Relayed, Server};
    use std::time::Duration;
    let (launcher, env) = worker_sandbox();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/service/serve.py");
    let program = gridwork_types::Program {
        command: "sh".into(),
        args: vec![
            "-c".into(),
            "setsid sleep 600 & echo $! > $GRIDWORK_OUTPUTS/pid; exec python3 inputs/serve.py"
                .into(),
        ],
        outputs: Vec::new(),
        image: None,
        network: false,
        vendor_images: Vec::new(),
    };
    let ask = Relayed {
        method: "POST".into(),
        path: "/v1/completions".into(),
        content_type: Some("application/json".into()),
        body: Bytes::from_static(br#"{"prompt": "a council of", "max_tokens": 48}"#),
    };
    let mut answers = Vec::new();
    let mut leftovers = Vec::new();
    for _member in 0..2 {
        let work = tempfile::tempdir_in("/var/tmp").unwrap();
        // As a worker makes its task directories (a root worker's task runs as nobody).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let inputs = work.path().join("run/inputs");
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::copy(&example, inputs.join("serve.py")).unwrap();
        let mut server = Server::start(&program, work.path(), &env, Some(&launcher)).unwrap();
        server.ready(Duration::from_secs(30)).await.unwrap();
        let answer = server.forward(&ask, Duration::from_secs(10)).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        let again = server.forward(&ask, Duration::from_secs(10)).await.unwrap();
        assert_eq!(again, answer, "one member answers one prompt alike");
        let missing = Relayed {
            path: "/nowhere".into(),
            ..ask.clone()
        };
        assert_eq!(
            server
                .forward(&missing, Duration::from_secs(10))
                .await
                .unwrap()
                .status,
            404
        );
        let pid: u32 = std::fs::read_to_string(work.path().join("run/outputs/pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(running(pid));
        server.stop().await;
        leftovers.push(pid);
        answers.push(answer);
    }
    assert_eq!(
        answers[0], answers[1],
        "two members answer one prompt with the same bytes"
    );
    let text: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap();
    assert_eq!(text["completion"].as_str().unwrap().chars().count(), 48);
    for pid in leftovers {
        assert!(!running(pid), "a process the server started outlived it");
    }
}

/// `program` as a user of its own, as a worker not run as root would be: as root, the test
/// runs it as nobody (util-linux's `setpriv`); otherwise as itself.
fn as_nobody_if_root(program: &str) -> Command {
    match runs_as_root() {
        true => {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            cmd
        }
        false => Command::new(program),
    }
}

/// Whether this test process runs as root (its effective uid, as `/proc` says).
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    })
}
