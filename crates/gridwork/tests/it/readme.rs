//! The README's commands, run as written against a dev node: an example that does not work
//! fails this test.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{NodeProcess, BIN};

/// The commands of the README's "pieces one by one" block: each line starting with
/// `gridwork`, comments cut, `;`-separated commands split.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    let start = readme
        .find("The pieces one by one:")
        .expect("the README shows the pieces one by one");
    let block = &readme[start..];
    let block = &block[block.find("```sh").expect("a sh block") + 5..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut commands = Vec::new();
    for line in block.lines() {
        let line = line.trim();
        if !line.starts_with("gridwork ") {
            continue;
        }
        let line = line.split("  #").next().unwrap_or(line).trim();
        for command in line.split(" ; ") {
            commands.push(command.trim().to_string());
        }
    }
    commands
}

/// Makes a small local Docker image named `name` (`docker import` of a one-file tree).
fn local_image(dir: &Path, name: &str) {
    let root = dir.join("image-root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "an environment\n").unwrap();
    let tar = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-cf", "-", "."])
        .output()
        .unwrap();
    let mut import = Command::new("docker")
        .args(["import", "-", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the docker command (and a running Docker engine)");
    std::io::Write::write_all(&mut import.stdin.take().unwrap(), &tar.stdout).unwrap();
    assert!(import.wait().unwrap().success(), "docker import {name}");
}

/// The first run of 64 hex digits in `text`.
fn hex64(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .map(str::to_string)
}

/// The first `grid1...` address in `text`.
fn address(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.starts_with("grid1") && w.len() > 30)
        .map(str::to_string)
}

/// Background processes (the workers), ended however the test ends: a failed assertion
/// must not leave workers retrying against a node that is gone.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Shell<'a> {
    dir: &'a Path,
    home: &'a Path,
    api: String,
}

impl Shell<'_> {
    fn command(&self, words: &[String]) -> Command {
        // Dev keys have the empty passphrase; alice's is given as the README says (or
        // GRIDWORK_PASSPHRASE).
        let key = words
            .iter()
            .position(|w| w == "--key")
            .and_then(|i| words.get(i + 1));
        let new_alice = words.windows(3).any(|w| w == ["keys", "new", "alice"]);
        let passphrase = if new_alice || key.is_some_and(|k| k == "alice") {
            "alice's passphrase"
        } else {
            ""
        };
        let mut cmd = Command::new(BIN);
        cmd.args(&words[1..])
            .current_dir(self.dir)
            .env("GRIDWORK_HOME", self.home)
            .env("GRIDWORK_NODE", &self.api)
            .env("GRIDWORK_LOG", "warn")
            .env("GRIDWORK_PASSPHRASE", passphrase)
            .env_remove("GRIDWORK_KEY")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, words: &[String]) -> Output {
        self.command(words).output().unwrap()
    }

    fn spawn(&self, words: &[String]) -> Child {
        self.command(words)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// Every command of the README's walk-through runs as written (placeholders filled with what
/// earlier commands printed) and succeeds: a node, keys, a transfer, stake, two workers and
/// an owner's approval, the example job from submission to its results and logs, and a
/// dataset pushed, shared, pulled and collected.
#[test]
fn the_readme_walk_through_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("docs")).unwrap();
    std::fs::create_dir_all(work.join("dataset/sub")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/job.example.toml"),
        work.join("docs/job.example.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(work.join("examples/service")).unwrap();
    for file in ["service.toml", "serve.py"] {
        std::fs::copy(
            format!(
                "{}/../../examples/service/{file}",
                env!("CARGO_MANIFEST_DIR")
            ),
            work.join("examples/service").join(file),
        )
        .unwrap();
    }
    std::fs::write(work.join("dataset/a.txt"), "the README's dataset").unwrap();
    std::fs::write(work.join("dataset/sub/b.bin"), vec![7u8; 100_000]).unwrap();

    let commands = readme_commands();
    assert!(commands.len() > 20, "{commands:?}");
    let mut node = None;
    let mut workers = Children(Vec::new());
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut ran = 0;
    for command in &commands {
        let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        if words.get(1).map(String::as_str) == Some("node") {
            // As written but on a free port, with quick blocks.
            assert_eq!(command, "gridwork node --dev");
            let started = NodeProcess::start(&home, &dir.path().join("data"), &[]);
            values.push(("api", started.api.clone()));
            node = Some(started);
            continue;
        }
        let api = node.as_ref().expect("the node starts first").api.clone();
        let shell = Shell {
            dir: &work,
            home: &home,
            api,
        };
        // Placeholders: what earlier commands printed.
        for word in &mut words {
            for (name, value) in &values {
                let placeholder = match *name {
                    "alice" => "grid1...alice's-address...",
                    "job" => "<JOB>",
                    "cid" => "<CID>",
                    "worker" => "<WORKER-ADDRESS>",
                    "service" => "<SERVICE>",
                    _ => continue,
                };
                if word == placeholder {
                    *word = value.clone();
                }
            }
        }
        assert!(
            !words
                .iter()
                .any(|w| w.starts_with('<') || w.contains("...")),
            "a placeholder the test cannot fill: {command}"
        );
        if words.iter().any(|w| w == "bench") {
            continue; // figures, not examples; `bench` commands have their own tests
        }
        if words.get(3).map(String::as_str) == Some("image") {
            // The image the example pushes, made here (no registry is reachable).
            local_image(&work, &words[words.len() - 1]);
        }
        if words.get(3).map(String::as_str) == Some("service")
            && words.get(4).map(String::as_str) == Some("gateway")
        {
            // It serves until stopped, as a worker does.
            workers.0.push(shell.spawn(&words));
            continue;
        }
        if words.iter().any(|w| w == "worker") {
            if words.iter().any(|w| w == "--p2p-announce") {
                // Its announce address (10.0.0.5) is another machine's.
                continue;
            }
            workers.0.push(shell.spawn(&words));
            if let Some(key) = words.get(2) {
                let who =
                    shell.run(&["gridwork".into(), "keys".into(), "show".into(), key.clone()]);
                if let Some(a) = address(&String::from_utf8_lossy(&who.stdout)) {
                    values.push(("worker", a));
                }
            }
            continue;
        }
        let started = Instant::now();
        let mut child = shell
            .command(&words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `job watch` waits for the job, `logs --follow` for the task's end: both end.
        let limit = Duration::from_secs(180);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "`{command}` did not finish in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "`{command}` failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
        match (
            words.get(1).map(String::as_str),
            words.get(2).map(String::as_str),
        ) {
            (Some("keys"), Some("new")) if words.get(3).map(String::as_str) == Some("alice") => {
                values.push((
                    "alice",
                    address(&stdout).expect("keys new prints the address"),
                ));
            }
            _ => {}
        }
        if words.get(3).map(String::as_str) == Some("service")
            && words.get(4).map(String::as_str) == Some("create")
        {
            values.push((
                "service",
                hex64(&stdout).expect("service create prints the service id"),
            ));
        }
        if words.iter().any(|w| w == "submit") {
            values.push(("job", hex64(&stdout).expect("job submit prints the job id")));
        }
        if words.iter().any(|w| w == "push") && words.iter().any(|w| w == "data") {
            values.push((
                "cid",
                hex64(&stdout).expect("data push prints the content id"),
            ));
        }
    }
    assert!(ran > 15, "only {ran} commands ran");
    assert!(work.join("results").is_dir(), "job results wrote ./results");
    assert_eq!(
        std::fs::read(work.join("copy/a.txt")).unwrap(),
        b"the README's dataset"
    );
    drop(workers);
}
