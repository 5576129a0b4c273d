//! `gridwork bench data`: push and pull a generated mixed tree through a node on loopback,
//! beside `cp` and `rsync` of the same tree on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use gridwork_api::frames::Frame;
use gridwork_client::{pull_tree_from, ChunkSource, Client, SourceError, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_transfer::{ChunkStore, DataKey, VerifiedChunk};
use gridwork_types::Hash;
use serde_json::json;

use crate::output::{emit, rows};

/// Writes a mixed tree of about `mib` MiB: many small compressible files, medium and large
/// incompressible ones. Returns the file paths.
fn make_tree(root: &Path, mib: u64) -> anyhow::Result<Vec<PathBuf>> {
    let total = mib * 1024 * 1024;
    let mut written = 0u64;
    let mut files = Vec::new();
    let mut i = 0u64;
    while written < total {
        let (dir, size) = match i % 10 {
            0..=5 => ("text", 16 * 1024),
            6..=8 => ("media", 1024 * 1024),
            _ => ("weights", 8 * 1024 * 1024),
        };
        let size = size.min(total - written).max(1);
        let path = root.join(dir).join(format!("f{i:06}.bin"));
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        let mut data = vec![0u8; size as usize];
        if dir == "text" {
            let line = format!("sample {i} value {}\n", i * 31);
            for (k, b) in data.iter_mut().enumerate() {
                *b = line.as_bytes()[k % line.len()];
            }
        } else {
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut data);
        }
        std::fs::write(&path, &data)?;
        written += size;
        files.push(path);
        i += 1;
    }
    Ok(files)
}

fn timed(cmd: &mut Command) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// A figure of `rsync --stats` output: the number after `label`.
fn rsync_stat(stats: &str, label: &str) -> Option<u64> {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.replace(',', ""))
        .and_then(|v| v.parse().ok())
}

/// A TCP relay to the node that counts every byte through it, HTTP headers included: what a
/// push moves on the wire, as rsync's "Total bytes sent" counts its own.
struct Relay {
    url: String,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> anyhow::Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                let (a_read, a_write) = inbound.into_split();
                let (b_read, b_write) = outbound.into_split();
                tokio::spawn(Relay::pump(a_read, b_write, counted.clone()));
                tokio::spawn(Relay::pump(b_read, a_write, counted.clone()));
            }
        });
        Ok(Relay { url, bytes })
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A source whose connection is cut once it has delivered `left` bytes.
struct CutSource<'a> {
    inner: &'a Client,
    left: std::sync::atomic::AtomicI64,
    /// Bytes of the answers that got through.
    delivered: std::sync::atomic::AtomicU64,
}

impl<'a> CutSource<'a> {
    fn new(inner: &'a Client, bytes: u64) -> CutSource<'a> {
        CutSource {
            inner,
            left: std::sync::atomic::AtomicI64::new(bytes as i64),
            delivered: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl ChunkSource for CutSource<'_> {
    fn label(&self) -> String {
        format!("{} (cut)", self.inner.base_url())
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [Hash]) -> gridwork_client::Fetch<'a> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            if self.left.load(Ordering::SeqCst) <= 0 {
                return Err(SourceError::Unreachable("connection cut".into()));
            }
            let frames = self.inner.fetch_chunks(ids).await?;
            let bytes: usize = frames
                .iter()
                .map(|f| match f {
                    Frame::Chunk(b) => b.len(),
                    _ => 0,
                })
                .sum();
            // The answer that crosses the cut is lost with the connection, as are answers
            // to requests in flight, however many a fast link has open.
            if self.left.fetch_sub(bytes as i64, Ordering::SeqCst) <= bytes as i64 {
                return Err(SourceError::Unreachable("connection cut".into()));
            }
            self.delivered.fetch_add(bytes as u64, Ordering::SeqCst);
            Ok(frames)
        })
    }
}

/// The bytes in `store` once they stopped growing (checks of answers in flight at a cut
/// still land; waits at most 10 s).
async fn settled(store: &ChunkStore) -> u64 {
    let mut last = store.used();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = store.used();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Single-core BLAKE3 over one 256 MiB buffer, and the chunk check a pull runs (BLAKE3 of
/// each 1 MiB chunk against its id), in GB/s.
fn hashing_rates() -> (f64, f64) {
    let mut data = vec![0u8; 256 * 1024 * 1024];
    blake3::Hasher::new()
        .update(b"hashing bench")
        .finalize_xof()
        .fill(&mut data);
    let t = Instant::now();
    let whole = blake3::hash(&data);
    let one = data.len() as f64 / 1e9 / t.elapsed().as_secs_f64();
    let chunks: Vec<(Hash, Vec<u8>)> = data
        .chunks(1024 * 1024)
        .map(|c| (Hash::of(c), c.to_vec()))
        .collect();
    drop(data);
    let t = Instant::now();
    let mut checked = 0u64;
    for (id, bytes) in chunks {
        if let Ok(c) = VerifiedChunk::check(id, bytes.into()) {
            checked += c.bytes().len() as u64;
        }
    }
    let verify = checked as f64 / 1e9 / t.elapsed().as_secs_f64();
    std::hint::black_box(whole);
    (one, verify)
}

/// Resets this process's peak resident memory (Linux; elsewhere nothing happens).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time this process has used (user and system, all threads), in seconds (Linux; elsewhere
/// zero). The bench runs node and client in one process, so a phase's share is both sides'.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at the state, field 3;
            // utime and stime are fields 14 and 15, in ticks of 1/100 s.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
            Some((ticks(14)? + ticks(15)?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Writes dirty pages out before a timed phase, so no phase pays for an earlier one's
/// writeback (without it, rates on this machine swung by 3x with the order of phases).
fn settle() {
    let _ = Command::new("sync").status();
}

pub(crate) fn bench_data(json: bool, mib: u64, dir: &Path, streams: usize) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let src = dir.join("src");
    eprintln!("writing a {mib} MiB mixed tree");
    let files = make_tree(&src, mib)?;
    let bytes = mib * 1024 * 1024;
    let mb = bytes as f64 / 1e6;

    settle();
    let (cp_s, _) = timed(
        Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(dir.join("cp-copy")),
    )?;
    let rsync = Command::new("rsync").arg("--version").output().is_ok();
    let rsync_s = if rsync {
        settle();
        Some(
            timed(
                Command::new("rsync")
                    .arg("-a")
                    .arg(format!("{}/", src.display()))
                    .arg(dir.join("rsync-copy")),
            )?
            .0,
        )
    } else {
        None
    };

    let config = NodeConfig {
        data_dir: dir.join("node"),
        ..NodeConfig::default()
    };
    let node = Node::open(&config, GenesisSource::dev(2))?;
    let rt = crate::commands::runtime()?;
    let report = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let node_addr = listener.local_addr()?;
        let url = format!("http://{node_addr}");
        let server = tokio::spawn(gridwork_node::serve(
            node.clone(),
            listener,
            std::future::pending(),
        ));
        let client = Client::new(&url).signed_by(gridwork_protocol::dev_keypair(0));
        let key = DataKey::generate();
        // As `data push` runs: with an index of the files packed, so a re-push reads only
        // the files that changed.
        let opts = TransferOptions {
            index: Some(dir.join("push.index")),
            ..TransferOptions::with_streams(streams)
        };
        eprintln!("push");
        settle();
        reset_peak_memory();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let push = client.push_tree(&src, &key, &opts).await?;
        let push_s = t.elapsed().as_secs_f64();
        let push_cpu_s = cpu_seconds() - cpu;
        let push_peak_mib = gridwork_node::bench::peak_rss_mib();

        // As `data pull` runs: chunks written to their files only.
        eprintln!("pull");
        let pull_store = ChunkStore::open(dir.join("pull-cache"), None)?;
        let files_only = TransferOptions {
            resume_from_files: true,
            ..TransferOptions::with_streams(streams)
        };
        settle();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let pull = client
            .pull_tree(&push.cid, &key, &pull_store, &dir.join("pulled"), &files_only)
            .await?;
        let pull_s = t.elapsed().as_secs_f64();
        let pull_cpu_s = cpu_seconds() - cpu;
        // As a worker pulls: every chunk also kept in its cache, to serve peers.
        eprintln!("pull, keeping a cache");
        let cached_store = ChunkStore::open(dir.join("cached-pull-cache"), None)?;
        settle();
        let t = Instant::now();
        client
            .pull_tree(&push.cid, &key, &cached_store, &dir.join("cached-pull"), &opts)
            .await?;
        let cached_pull_s = t.elapsed().as_secs_f64();
        drop(cached_store);
        std::fs::remove_dir_all(dir.join("cached-pull-cache"))?;
        std::fs::remove_dir_all(dir.join("cached-pull"))?;

        // Change 1% of the files (a few bytes in the middle of each).
        let step = 100usize;
        let (mut changed_bytes, mut changed_file_bytes) = (0u64, 0u64);
        for path in files.iter().step_by(step) {
            let mut data = std::fs::read(path)?;
            let mid = data.len() / 2;
            for b in data.iter_mut().skip(mid).take(16) {
                *b ^= 0x5a;
            }
            changed_bytes += 16;
            changed_file_bytes += data.len() as u64;
            std::fs::write(path, &data)?;
        }
        eprintln!("re-push after changing 1% of the files");
        // Through a relay that counts the bytes both ways, as a fresh `data push` runs: a
        // new client that asks the node for its key first.
        let relay = Relay::start(node_addr).await?;
        let relayed = Client::new(&relay.url).signed_by(gridwork_protocol::dev_keypair(0));
        settle();
        let t = Instant::now();
        let repush = relayed.push_tree(&src, &key, &opts).await?;
        let repush_s = t.elapsed().as_secs_f64();
        let repush_wire_bytes = relay.bytes();
        settle();
        let rsync_repush = if rsync {
            let (rsync_s, out) = timed(
                Command::new("rsync")
                    .args(["-a", "--no-whole-file", "--stats"])
                    .arg(format!("{}/", src.display()))
                    .arg(dir.join("rsync-copy")),
            )?;
            let wire = rsync_stat(&out, "Total bytes sent: ")
                .zip(rsync_stat(&out, "Total bytes received: "))
                .map(|(a, b)| a + b);
            Some(((rsync_stat(&out, "Literal data: "), wire), rsync_s))
        } else {
            None
        };
        let (rsync_repush, rsync_repush_s) = rsync_repush.unzip();
        let (rsync_literal, rsync_wire) = rsync_repush.unzip();

        eprintln!("a pull cut at 50%, then resumed");
        let resume_store = ChunkStore::open(dir.join("resume-cache"), None)?;
        // Half the tree's stored bytes (the first pull fetched all of them).
        let cut = CutSource::new(&client, pull.bytes_received / 2);
        let first = pull_tree_from(
            &[&cut],
            &repush.cid,
            &key,
            &resume_store,
            &dir.join("resumed"),
            &opts,
        )
        .await;
        // Checks of answers already in flight at the cut finish on blocking threads and keep
        // their chunks; let them land before counting what the cut pull left.
        let before_cut = settled(&resume_store).await;
        anyhow::ensure!(first.is_err(), "the cut pull should have failed");
        let t = Instant::now();
        let resumed = client
            .pull_tree(
                &repush.cid,
                &key,
                &resume_store,
                &dir.join("resumed"),
                &opts,
            )
            .await?;
        let resume_s = t.elapsed().as_secs_f64();
        let sealed_total = resume_store.used();

        // As `data pull` runs: files synced and journaled every 64 MiB, no cache kept behind.
        eprintln!("a journaled pull with no cache kept, cut at 50%, then resumed");
        let journaled = TransferOptions {
            journal: Some(dir.join("journal")),
            resume_from_files: true,
            checkpoint_bytes: 64 << 20,
            cache_max_bytes: Some(0),
            ..TransferOptions::with_streams(streams)
        };
        let lean_store = ChunkStore::open(dir.join("lean-cache"), None)?;
        let cut = CutSource::new(&client, sealed_total / 2);
        let out = dir.join("journaled");
        let first = pull_tree_from(&[&cut], &repush.cid, &key, &lean_store, &out, &journaled).await;
        settled(&lean_store).await;
        anyhow::ensure!(first.is_err(), "the cut pull should have failed");
        let cut_received = cut.delivered.load(std::sync::atomic::Ordering::SeqCst);
        let lean_cache_at_cut = lean_store.used();
        let lean = client
            .pull_tree(&repush.cid, &key, &lean_store, &out, &journaled)
            .await?;
        let hashing = hashing_rates();
        server.abort();
        anyhow::Ok(json!({
            "tree_mib": mib,
            "files": files.len(),
            "cp_mb_s": mb / cp_s,
            "rsync_copy_mb_s": rsync_s.map(|s| mb / s),
            "push_mb_s": mb / push_s,
            "pull_mb_s": mb / pull_s,
            "pull_cached_mb_s": mb / cached_pull_s,
            "push_cpu_s_per_gb": push_cpu_s / (bytes as f64 / 1e9),
            "pull_cpu_s_per_gb": pull_cpu_s / (bytes as f64 / 1e9),
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "push_vs_cp": cp_s / push_s,
            "pull_vs_cp": cp_s / pull_s,
            "bytes_sent": push.bytes_sent,
            "bytes_received": pull.bytes_received,
            "changed_bytes": changed_bytes,
            "changed_files": files.len().div_ceil(step),
            "repush_bytes_sent": repush.bytes_sent,
            "repush_wire_bytes": repush_wire_bytes,
            "rsync_repush_literal_bytes": rsync_literal.flatten(),
            "rsync_repush_wire_bytes": rsync_wire.flatten(),
            "repush_s": repush_s,
            "repush_files_read": repush.files - repush.unchanged_files,
            "rsync_repush_s": rsync_repush_s,
            "push_peak_memory_mib": push_peak_mib,
            "changed_file_bytes": changed_file_bytes,
            "resume_bytes_received": resumed.bytes_received,
            "resume_expected_bytes": sealed_total.saturating_sub(before_cut),
            "resume_fetched_before_cut": before_cut,
            "resume_s": resume_s,
            "journal_cut_received_bytes": cut_received,
            "journal_cache_bytes_at_cut": lean_cache_at_cut,
            "journal_resume_bytes_received": lean.bytes_received,
            "journal_resume_bytes_in_place": lean.bytes_in_place,
            "journal_resume_extra_bytes": (cut_received + lean.bytes_received).saturating_sub(sealed_total),
            "blake3_one_buffer_gb_s": hashing.0,
            "chunk_verify_gb_s": hashing.1,
            "hashing_vs_blake3": hashing.1 / hashing.0,
            "streams": streams,
        }))
    })?;
    node.shutdown();
    emit(json, &report, || {
        let f = |k: &str| {
            report[k]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.0}"))
        };
        let n = |k: &str| {
            report[k]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string())
        };
        rows(&[
            ("tree", format!("{} MiB in {} files (text, media, weights)", mib, report["files"])),
            ("cp -r", format!("{} MB/s", f("cp_mb_s"))),
            ("rsync -a", format!("{} MB/s", f("rsync_copy_mb_s"))),
            ("push", format!("{} MB/s verified goodput ({:.2}x cp), {} bytes sent", f("push_mb_s"), report["push_vs_cp"].as_f64().unwrap_or(0.0), n("bytes_sent"))),
            ("pull", format!("{} MB/s verified goodput ({:.2}x cp), as `data pull`: chunks written to their files only", f("pull_mb_s"), report["pull_vs_cp"].as_f64().unwrap_or(0.0))),
            ("pull+cache", format!("{} MB/s, as a worker pulls: every chunk also kept in its cache", f("pull_cached_mb_s"))),
            ("re-push", format!("{} bytes of chunks sent after changing {} bytes in {} files of {} bytes ({:.2}x those files); rsync --no-whole-file: {} literal bytes", n("repush_bytes_sent"), n("changed_bytes"), n("changed_files"), n("changed_file_bytes"), report["repush_bytes_sent"].as_f64().unwrap_or(0.0) / report["changed_file_bytes"].as_f64().unwrap_or(1.0).max(1.0), n("rsync_repush_literal_bytes"))),
            ("re-push wire", format!("{} bytes both ways, every request and answer with its headers; rsync: {} bytes sent and received", n("repush_wire_bytes"), n("rsync_repush_wire_bytes"))),
            ("re-push time", format!("{:.2} s, {} of {} files read; rsync -a --no-whole-file: {} s", report["repush_s"].as_f64().unwrap_or(0.0), n("repush_files_read"), report["files"], report["rsync_repush_s"].as_f64().map_or("-".to_string(), |v| format!("{v:.2}")))),
            ("cpu", format!("push {:.2} and pull {:.2} CPU seconds per GB, node and client together, on {} cores; 1.2 GB/s would keep {:.1} and {:.1} cores busy", report["push_cpu_s_per_gb"].as_f64().unwrap_or(0.0), report["pull_cpu_s_per_gb"].as_f64().unwrap_or(0.0), report["cores"], 1.2 * report["push_cpu_s_per_gb"].as_f64().unwrap_or(0.0), 1.2 * report["pull_cpu_s_per_gb"].as_f64().unwrap_or(0.0))),
            ("push memory", format!("{} MiB at the peak (node, client and bench in one process)", f("push_peak_memory_mib"))),
            ("resume", format!("{} bytes fetched after a cut at 50% ({} fetched before the cut; the rest is {} bytes)", n("resume_bytes_received"), n("resume_fetched_before_cut"), n("resume_expected_bytes"))),
            ("journaled", format!("as `data pull`, cut at 50%, 64 MiB checkpoints: {} bytes fetched before the cut, {} cached at the cut, {} after ({} file bytes found in place); {} bytes fetched twice", n("journal_cut_received_bytes"), n("journal_cache_bytes_at_cut"), n("journal_resume_bytes_received"), n("journal_resume_bytes_in_place"), n("journal_resume_extra_bytes"))),
            ("hashing", format!("chunk verification {:.2} GB/s, {:.0}% of single-core BLAKE3 over one buffer ({:.2} GB/s)", report["chunk_verify_gb_s"].as_f64().unwrap_or(0.0), 100.0 * report["hashing_vs_blake3"].as_f64().unwrap_or(0.0), report["blake3_one_buffer_gb_s"].as_f64().unwrap_or(0.0))),
        ])
    })
}
