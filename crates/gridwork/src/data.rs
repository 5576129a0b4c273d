//! The `data` commands.
//!
//! Local state lives under GRIDWORK_HOME: `chunks/` caches sealed chunks (what makes pushes
//! and pulls resume); the data key of each pushed path is remembered by
//! [`gridwork_client::KeyRegistry`] (`data/keys.json`), so pushing the same directory again
//! reuses the key and moves only changed chunks.

use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use gridwork_client::{
    pull_tree_from, ChunkSource, Client, KeyRegistry, Progress, PullReport, TransferOptions,
};
use gridwork_p2p::{Peer, PeerSource};
use gridwork_transfer::{ChunkParams, ChunkStore, DataKey, EntryKind};
use gridwork_types::{Address, Hash, Keypair, PublicKey};
use serde_json::json;

use crate::cli::{Cli, DataCommand, ImageCommand};
use crate::commands::{home, keystore, runtime, signing_key};
use crate::output::{emit, rows};

pub(crate) fn local_store(cli: &Cli) -> anyhow::Result<ChunkStore> {
    Ok(ChunkStore::open(home(cli)?.join("chunks"), None)?)
}

/// A recipient named by address (its key from the ledger), public key hex, or keystore name.
async fn recipient_key(cli: &Cli, client: &Client, who: &str) -> anyhow::Result<PublicKey> {
    if let Ok(address) = who.parse::<Address>() {
        return client.account(&address).await?.public_key.ok_or_else(|| {
            anyhow!("{address} has not sent a transaction yet, so the ledger does not know its key; pass its public key (`gridwork keys show NAME` prints it)")
        });
    }
    if let Ok(key) = who.parse::<PublicKey>() {
        return Ok(key);
    }
    let info = keystore(cli)?.info(who).map_err(|_| {
        anyhow!("`{who}` is not an address, a public key in hex or a keystore name")
    })?;
    Ok(info.public_key.parse()?)
}

/// The most providers `--from-providers` asks at once.
const MAX_PROVIDER_PEERS: usize = 16;

/// Where a pull takes chunks besides the node: other nodes or peers over HTTP, and
/// providers' workers peer to peer at the endpoints they announced on the ledger.
pub(crate) struct PeerSources {
    http: Vec<Client>,
    endpoint: Option<Peer>,
    peers: Vec<PeerSource>,
}

impl PeerSources {
    /// `named`: `--peer` values, each a base URL (an HTTP peer) or a provider's address (its
    /// announced endpoint; an error if it announced none). `holders`: providers that may
    /// hold the tree (an executor, or every provider for `--from-providers`); those without
    /// an endpoint are left out.
    pub(crate) async fn resolve(
        client: &Client,
        named: &[String],
        holders: &[Address],
    ) -> anyhow::Result<PeerSources> {
        let mut http = Vec::new();
        let mut wanted: Vec<(Address, gridwork_types::PeerAddr)> = Vec::new();
        for value in named {
            if value.starts_with("http://") || value.starts_with("https://") {
                http.push(Client::new(value));
                continue;
            }
            let address: Address = value.parse().map_err(|_| {
                anyhow!(
                    "--peer {value}: not a URL (http://host:port) nor a provider address (gw1...)"
                )
            })?;
            let record = client
                .provider(&address)
                .await?
                .ok_or_else(|| anyhow!("--peer {address}: no such provider on the ledger"))?;
            let peer = record.peer.ok_or_else(|| {
                anyhow!("--peer {address}: the provider announced no peer address (its worker runs without --p2p-listen); name its node URL instead or leave it out")
            })?;
            wanted.push((address, peer));
        }
        let named: Vec<Address> = wanted.iter().map(|(a, _)| *a).collect();
        // The node's own endpoint first, then the peers named, then the holders (one
        // resolver with the worker's).
        let announced = gridwork_client::announced_peers(client, holders, &named).await?;
        let wanted: Vec<(String, gridwork_types::PeerAddr)> = gridwork_client::AnnouncedPeers {
            node: announced.node,
            holders: wanted.into_iter().chain(announced.holders).collect(),
        }
        .labelled();
        let mut sources = PeerSources {
            http,
            endpoint: None,
            peers: Vec::new(),
        };
        if wanted.is_empty() {
            return Ok(sources);
        }
        // A fresh transport key per pull: dialing needs one, and nothing should tie the
        // pull to the user's signing key.
        let secret = gridwork_p2p::transport_secret(&Keypair::generate());
        let any: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
        let endpoint = Peer::bind(secret, any, None).await?;
        for (label, peer) in wanted {
            match endpoint.source(&peer, label.clone()) {
                Some(source) => sources.peers.push(source),
                None => bail!("{label}: an unusable peer address was announced"),
            }
        }
        sources.endpoint = Some(endpoint);
        Ok(sources)
    }

    /// Every provider that announced a peer address, at most [`MAX_PROVIDER_PEERS`].
    pub(crate) async fn announced(client: &Client) -> anyhow::Result<Vec<Address>> {
        Ok(client
            .providers()
            .await?
            .into_iter()
            .filter(|p| p.peer.is_some())
            .map(|p| p.address)
            .take(MAX_PROVIDER_PEERS)
            .collect())
    }

    /// The node first, then the peers.
    fn with<'a>(&'a self, node: &'a Client) -> Vec<&'a dyn ChunkSource> {
        let mut all: Vec<&dyn ChunkSource> = vec![node];
        all.extend(self.http.iter().map(|c| c as &dyn ChunkSource));
        all.extend(self.peers.iter().map(|p| p as &dyn ChunkSource));
        all
    }

    /// Pulls tree `cid` into `out` from `node` and these peers, then closes the local
    /// endpoint.
    pub(crate) async fn pull(
        self,
        node: &Client,
        cid: &Hash,
        key: &DataKey,
        local: &ChunkStore,
        out: &std::path::Path,
        opts: &TransferOptions,
    ) -> anyhow::Result<PullReport> {
        let report = pull_tree_from(&self.with(node), cid, key, local, out, opts).await;
        if let Some(endpoint) = self.endpoint {
            endpoint.shutdown().await;
        }
        Ok(report?)
    }
}

/// Pulls tree `cid` with `me`'s grant into `out`, from the node and `holders` that serve
/// peer to peer.
pub(crate) async fn pull_granted(
    cli: &Cli,
    client: &Client,
    cid: &Hash,
    me: &Keypair,
    holders: &[Address],
    out: &std::path::Path,
) -> anyhow::Result<PullReport> {
    let key = client.granted_key(cid, me).await?;
    let local = local_store(cli)?;
    let report = PeerSources::resolve(client, &[], holders)
        .await?
        .pull(client, cid, &key, &local, out, &TransferOptions::default())
        .await?;
    trim_local(cli, &local)?;
    Ok(report)
}

/// Trims the local cache to `--cache-max-gib` after a pull that finished (a pull cut off
/// keeps its chunks, so running it again resumes): the chunks just pulled are the most
/// recently used, so they go last.
fn trim_local(cli: &Cli, local: &ChunkStore) -> anyhow::Result<()> {
    let max = cli.cache_max_gib.saturating_mul(1 << 30);
    let freed = local.trim(max, std::time::Duration::ZERO)?;
    if freed > 0 {
        tracing::info!(freed, used = local.used(), "trimmed the local chunk cache");
    }
    Ok(())
}

/// Where a pull into `out` records the tree it is writing, so an interrupted pull may
/// resume into the non-empty directory it left.
fn pull_marker(cli: &Cli, out: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let absolute =
        std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
    let name = Hash::of(absolute.display().to_string().as_bytes());
    Ok(home(cli)?.join("data/pulls").join(name.to_string()))
}

/// A one-line progress display on stderr (bytes, rate, time left) while a transfer runs;
/// shown only on a terminal and never with `--json`. Dropping it clears the line.
struct ProgressBar {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    fn show(json: bool, label: &'static str, progress: Progress) -> ProgressBar {
        use std::io::IsTerminal;
        if json || !std::io::stderr().is_terminal() {
            return ProgressBar {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(250))
            {
                eprint!(
                    "\r{}\x1b[K",
                    progress_line(label, &progress, started.elapsed().as_secs_f64())
                );
            }
            eprint!("\r\x1b[K");
        });
        ProgressBar {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `push  312.4 MiB / 1.0 GiB  [######----]  283 MB/s  ETA 2 s`
fn progress_line(label: &str, progress: &Progress, secs: f64) -> String {
    let (done, total) = (progress.done(), progress.total());
    let rate = done as f64 / secs.max(1e-3);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if total == 0 {
        return format!("{label}  {:.1} MiB  {:.0} MB/s", mib(done), rate / 1e6);
    }
    let filled = ((done.min(total) as f64 / total as f64) * 20.0) as usize;
    let eta = if rate > 0.0 {
        format!("{:.0} s", total.saturating_sub(done) as f64 / rate)
    } else {
        "-".into()
    };
    format!(
        "{label}  {:.1} / {:.1} MiB  [{}{}]  {:.0} MB/s  ETA {eta}",
        mib(done),
        mib(total),
        "#".repeat(filled),
        "-".repeat(20 - filled),
        rate / 1e6
    )
}

/// `gridwork image push`: the image saved from the engine into `HOME/images/<repository>/`
/// (one directory per repository, so a push of a new version reuses its data key and push
/// index: unchanged layers are not read again and their chunks do not move), then pushed.
pub(crate) fn image(cli: &Cli, cmd: &ImageCommand) -> anyhow::Result<()> {
    let ImageCommand::Push {
        name,
        streams,
        docker_socket,
    } = cmd;
    let me = signing_key(cli)?;
    let client = Client::new(&cli.node).signed_by(me.clone());
    // One directory per repository, whatever the tag: `my-env:1` and `my-env:2` share their
    // data key and push index, so the layers they share are neither read nor sent again.
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name.as_str(),
    };
    let slug: String = repository
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect();
    let dir = home(cli)?.join("images").join(slug);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let engine = gridwork_worker::docker::Engine::new(docker_socket);
    let started = Instant::now();
    let rt = runtime()?;
    let archive = dir.join("image.tar");
    // Saved by id, so the archive carries no tags (workers refuse tagged archives: loading
    // one would move those tags on their engines).
    let saved = rt
        .block_on(async {
            let id = engine.image_id(name).await?;
            engine.save(&id, &archive).await
        })
        .with_context(|| format!("saving image `{name}` from the Docker engine"))?;
    let (key, index) = KeyRegistry::new(home(cli)?).key_for(&dir, &me)?;
    let opts = TransferOptions {
        index: Some(index),
        ..TransferOptions::with_streams(*streams)
    };
    let bar = ProgressBar::show(cli.json, "push", opts.progress.clone());
    let report = rt.block_on(async {
        let report = client.push_tree(&dir, &key, &opts).await?;
        client.share_key(&report.cid, &key, &me.public()).await?;
        anyhow::Ok(report)
    });
    drop(bar);
    let report = report?;
    let secs = started.elapsed().as_secs_f64();
    let id = format!("img:{}", report.cid);
    emit(
        cli.json,
        &json!({ "image": id, "name": name, "bytes": saved, "sent_bytes": report.bytes_sent, "chunks": report.chunks, "seconds": secs }),
        || {
            rows(&[
                ("image", id.clone()),
                ("name", name.clone()),
                (
                    "archive",
                    format!(
                        "{saved} bytes, {} chunks, {} bytes sent (the rest the node had)",
                        report.chunks, report.bytes_sent
                    ),
                ),
                ("use", format!("[program] image = \"{id}\"")),
            ])
        },
    )
}

pub(crate) fn data(cli: &Cli, cmd: &DataCommand) -> anyhow::Result<()> {
    let client = Client::new(&cli.node);
    let params = ChunkParams::default();
    match cmd {
        DataCommand::Push { path, streams } => {
            let me = signing_key(cli)?;
            let client = client.signed_by(me.clone());
            let (key, index) = KeyRegistry::new(home(cli)?).key_for(path, &me)?;
            let opts = TransferOptions {
                index: Some(index),
                ..TransferOptions::with_streams(*streams)
            };
            let started = Instant::now();
            let bar = ProgressBar::show(cli.json, "push", opts.progress.clone());
            let report = runtime()?.block_on(async {
                let report = client.push_tree(path, &key, &opts).await?;
                client.share_key(&report.cid, &key, &me.public()).await?;
                anyhow::Ok(report)
            });
            drop(bar);
            let report = report?;
            for loss in &report.not_kept {
                eprintln!("warning: {loss}");
            }
            let secs = started.elapsed().as_secs_f64();
            emit(cli.json, &report, || {
                rows(&[
                    ("cid", report.cid.to_string()),
                    (
                        "tree",
                        format!(
                            "{} files ({} unchanged since the last push, not read again), {} bytes, {} chunks",
                            report.files, report.unchanged_files, report.bytes, report.chunks
                        ),
                    ),
                    (
                        "sent",
                        format!(
                            "{} chunks, {} bytes in {secs:.2} s ({:.0} MB/s of tree)",
                            report.chunks_sent,
                            report.bytes_sent,
                            report.bytes as f64 / 1e6 / secs.max(1e-9)
                        ),
                    ),
                    (
                        "kept",
                        format!(
                            "by the node for {:.1} days (push again to keep it longer){}",
                            report
                                .pinned_until_ms
                                .saturating_sub(gridwork_node::now_ms())
                                as f64
                                / 86_400_000.0,
                            report.pinned_from.map_or(String::new(), |base| format!(
                                "; pinned as the changes since {base}"
                            ))
                        ),
                    ),
                    (
                        "storage",
                        match report.account_quota_bytes {
                            Some(quota) => format!(
                                "your pinned trees use {} of {} bytes on this node",
                                report.account_pinned_bytes, quota
                            ),
                            None => format!(
                                "your pinned trees use {} bytes on this node (no quota)",
                                report.account_pinned_bytes
                            ),
                        },
                    ),
                ])
            })
        }
        DataCommand::Usage { address } => {
            let address: Address = match address {
                Some(a) => a
                    .parse()
                    .map_err(|e| anyhow!("{a} is not an address: {e}"))?,
                None => signing_key(cli)?.address(),
            };
            let usage = runtime()?.block_on(client.storage(&address))?;
            emit(cli.json, &usage, || {
                let quota = usage
                    .quota_bytes
                    .map_or("no quota".to_string(), |q| format!("quota {q} bytes"));
                format!(
                    "{address} on {}: {} bytes of pinned trees, {} bytes of uploads not yet pinned; {quota}; uploads need {} held (balance and stake)",
                    cli.node, usage.pinned_bytes, usage.pending_bytes, usage.min_funds
                )
            })
        }
        DataCommand::Gc => {
            let store = local_store(cli)?;
            let before = store.used();
            let freed = store.gc(&std::collections::HashSet::new())?;
            let report = json!({ "freed_bytes": freed, "held_bytes": before - freed });
            emit(cli.json, &report, || {
                format!(
                    "freed {freed} bytes of cached chunks under {}; the node keeps what you pushed",
                    home(cli)
                        .map(|h| h.join("chunks").display().to_string())
                        .unwrap_or_default()
                )
            })
        }
        DataCommand::Pull {
            cid,
            out,
            streams,
            peers,
            from_providers,
            keep_cache,
        } => {
            let cid: Hash = cid.parse()?;
            let me = signing_key(cli)?;
            let local = local_store(cli)?;
            let marker = pull_marker(cli, out)?;
            let resuming =
                std::fs::read_to_string(&marker).is_ok_and(|c| c.trim() == cid.to_string());
            if !resuming
                && out.exists()
                && std::fs::read_dir(out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            {
                bail!(
                    "{} is not empty; pull into a new or empty directory",
                    out.display()
                );
            }
            if let Some(dir) = marker.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&marker, cid.to_string())
                .with_context(|| format!("writing {}", marker.display()))?;
            // Files written are synced and listed in a journal beside the marker every GiB,
            // so a pull run again skips them, and the cache is trimmed behind it. Unless asked
            // to keep a cache, fetched chunks go to the files only (each byte written once): a
            // pull run again finds what a cut-off one finished in the files it had not
            // journaled.
            let journal = marker.with_extension("journal");
            let opts = TransferOptions {
                journal: Some(journal.clone()),
                resume_from_files: !keep_cache,
                cache_max_bytes: Some(cli.cache_max_gib.saturating_mul(1 << 30)),
                ..TransferOptions::with_streams(*streams)
            };
            let started = Instant::now();
            let bar = ProgressBar::show(cli.json, "pull", opts.progress.clone());
            let report = runtime()?.block_on(async {
                let key = client.granted_key(&cid, &me).await?;
                let holders = match from_providers {
                    true => PeerSources::announced(&client).await?,
                    false => Vec::new(),
                };
                PeerSources::resolve(&client, peers, &holders)
                    .await?
                    .pull(&client, &cid, &key, &local, out, &opts)
                    .await
            });
            drop(bar);
            let report = report?;
            let _ = std::fs::remove_file(&marker);
            let _ = std::fs::remove_file(&journal);
            trim_local(cli, &local)?;
            let secs = started.elapsed().as_secs_f64();
            emit(cli.json, &report, || {
                let mut lines = vec![format!(
                    "{} files, {} bytes into {} in {secs:.2} s ({} chunks, {} bytes fetched; {} bytes were in place)",
                    report.files,
                    report.bytes,
                    out.display(),
                    report.chunks_received,
                    report.bytes_received,
                    report.bytes_in_place
                )];
                if report.sources.len() > 1 {
                    for s in &report.sources {
                        lines.push(format!(
                            "  {}: {} chunks, {} bytes, {} rejected, {} failed",
                            s.source, s.chunks, s.bytes, s.rejected, s.failed
                        ));
                    }
                }
                lines.join("\n")
            })
        }
        DataCommand::Ls { cid } => {
            let cid: Hash = cid.parse()?;
            let me = signing_key(cli)?;
            let local = local_store(cli)?;
            let manifest = runtime()?.block_on(async {
                let key = client.granted_key(&cid, &me).await?;
                anyhow::Ok(client.tree_manifest(&cid, &key, params, &local).await?)
            })?;
            emit(
                cli.json,
                &json!({ "cid": cid, "entries": manifest.entries }),
                || {
                    manifest
                        .entries
                        .iter()
                        .map(|e| match e.kind {
                            EntryKind::Dir => format!("{:>12}  {:>6}  {}/", "-", "-", e.path),
                            EntryKind::Link => format!(
                                "{:>12}  {:>6}  {} -> {}",
                                "-",
                                "-",
                                e.path,
                                e.target.clone().unwrap_or_default()
                            ),
                            EntryKind::File => {
                                format!("{:>12}  {:>6}  {}", e.size, e.chunks.len(), e.path)
                            }
                            EntryKind::Fifo => format!("{:>12}  {:>6}  {}|", "-", "-", e.path),
                            EntryKind::HardLink => format!(
                                "{:>12}  {:>6}  {} => {}",
                                "-",
                                "-",
                                e.path,
                                e.target.clone().unwrap_or_default()
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )
        }
        DataCommand::Share { cid, recipient } => {
            let cid: Hash = cid.parse()?;
            let me = signing_key(cli)?;
            let client = client.signed_by(me.clone());
            let to = runtime()?.block_on(async {
                let to = recipient_key(cli, &client, recipient).await?;
                let key = client.granted_key(&cid, &me).await?;
                client.share_key(&cid, &key, &to).await?;
                anyhow::Ok(to)
            })?;
            emit(
                cli.json,
                &json!({ "cid": cid, "recipient": to.address() }),
                || format!("{} can now decrypt {cid}", to.address()),
            )
        }
    }
}
