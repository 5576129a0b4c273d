//! The task sandbox: what a task program may not write or read, GPUs, and a missing program.

use std::process::Command;

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

#[test]
fn sandbox_exec_of_a_missing_program_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sandbox-exec", "--work"])
        .arg(dir.path())
        .args(["--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot execute `/no/such/program`"));
}
