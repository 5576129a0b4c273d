//! Shared by the tests: the binary, a dev node and a worker as child processes, the CLI run against
//! a node, and a store checked against a replay of its chain.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use gridwork_protocol::State;
use gridwork_storage::{RedbStore, Store};
use gridwork_types::Hash;
use serde_json::Value;

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_gridwork");

/// A `gridwork node --dev` child process.
pub(super) struct NodeProcess {
    pub(super) child: Child,
    pub(super) api: String,
}

impl NodeProcess {
    pub(super) fn start(home: &Path, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let listen = if extra.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        };
        let mut child = Command::new(BIN)
            .args(["node", "--dev"])
            .args(listen)
            .args(["--block-interval-ms", "20", "--json", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("GRIDWORK_HOME", home)
            .env("GRIDWORK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut doc = String::new();
        let info: Value = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "node exited before printing its address"
            );
            doc.push_str(&line);
            if let Ok(v) = serde_json::from_str(&doc) {
                break v;
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        NodeProcess {
            child,
            api: info["api"]
                .as_str()
                .unwrap_or_else(|| panic!("the node printed no address: {info}"))
                .to_string(),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct Cli {
    pub(super) home: PathBuf,
    pub(super) api: String,
}

impl Cli {
    pub(super) fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("GRIDWORK_HOME", &self.home)
            .env("GRIDWORK_NODE", &self.api)
            .env_remove("GRIDWORK_PASSPHRASE")
            .env_remove("GRIDWORK_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a command that must succeed and returns its JSON document.
    pub(super) fn json(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {stdout}"))
    }

    /// Runs a command that must fail and returns (JSON error code, message).
    pub(super) fn fails(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, env);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            doc["error"]["code"].as_str().unwrap().into(),
            doc["error"]["message"].as_str().unwrap().into(),
        )
    }
}

pub(super) fn units(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

/// The arguments of `gridwork --key dev1 data pull CID --out OUT EXTRA...`.
pub(super) fn pull<'a>(cid: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--key",
        "dev1",
        "data",
        "pull",
        cid,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// A `gridwork worker` child process, killed on drop.
pub(super) struct WorkerProcess(pub(super) Child);

impl WorkerProcess {
    /// A worker run by a user whose home (beside `cli.home`: `user-home`) holds an SSH key.
    pub(super) fn start(cli: &Cli, key: &str) -> WorkerProcess {
        let user_home = cli.home.with_file_name("user-home");
        std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
        std::fs::write(
            user_home.join(".ssh/id_ed25519"),
            "the provider's ssh key\n",
        )
        .unwrap();
        WorkerProcess(
            Command::new(BIN)
                .args([
                    "--key",
                    key,
                    "worker",
                    "--price",
                    "0.01",
                    "--poll-ms",
                    "100",
                ])
                .env("GRIDWORK_HOME", &cli.home)
                .env("HOME", &user_home)
                .env("GRIDWORK_NODE", &cli.api)
                .env("GRIDWORK_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now, so a restarted node keeps the address its workers know.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replays the stored chain from genesis and checks that the stored state is that replay.
pub(super) fn assert_store_equals_replay(data: &Path) -> State {
    let store = RedbStore::open(&data.join("chain.redb")).unwrap();
    let genesis = gridwork_node::read_genesis(&data.join("genesis.json")).unwrap();
    let (mut replay, block0) = State::genesis(&genesis).unwrap();
    assert_eq!(store.header(0).unwrap().unwrap(), block0.header);
    let head = store.head_height().unwrap().unwrap();
    for h in 1..=head {
        replay
            .apply_block(&store.block(h).unwrap().unwrap())
            .unwrap_or_else(|e| panic!("replaying block {h}: {e}"));
    }
    let stored = store.load_state().unwrap().unwrap();
    assert_eq!(replay.root(), stored.root());
    assert_eq!(replay.head_hash(), stored.head_hash());
    // The archive (finished jobs, outside the state root) is the replay's too.
    for (key, value) in replay.take_changes().entries {
        if key[0] == gridwork_protocol::PREFIX_ARCHIVE {
            let id = Hash(key[1..].try_into().unwrap());
            let replayed: gridwork_protocol::ArchivedJob =
                gridwork_types::Decode::from_bytes(&value.unwrap()).unwrap();
            assert_eq!(
                store.archived_job(&id).unwrap(),
                Some(replayed),
                "archived job {id}"
            );
        }
    }
    stored
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub(super) fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_http(url, method, path, headers, body).unwrap()
}

/// [`http`], or why the exchange failed (nothing listening, cut off, not HTTP).
pub(super) fn try_http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let bad = || std::io::Error::other(format!("not HTTP: {text}"));
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    // Chunked bodies (the gateway's) are read chunk by chunk.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n + 2 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}
