//! The `data` commands.
//!
//! Local state lives under GRIDWORK_HOME: `chunks/` caches sealed chunks (what makes pushes
//! and pulls resume), `data/keys.json` remembers the data key of each pushed path, wrapped for
//! the pusher's own key, so pushing the same directory again reuses the key and moves only
//! changed chunks.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use gridwork_client::Client;
use gridwork_transfer::{
    unwrap_key, wrap_key, ChunkParams, ChunkStore, DataKey, EntryKind, WrappedKey,
};
use gridwork_types::{Address, Hash, Keypair, PublicKey};
use serde_json::json;

use crate::cli::{Cli, DataCommand};
use crate::commands::{home, keystore, runtime, signing_key};
use crate::output::{emit, rows};

pub(crate) fn local_store(cli: &Cli) -> anyhow::Result<ChunkStore> {
    Ok(ChunkStore::open(home(cli)?.join("chunks"), None)?)
}

/// The data key for `path`: the one used before (unwrapped with `me`), or a new one.
fn data_key_for(
    cli: &Cli,
    path: &std::path::Path,
    me: &Keypair,
) -> anyhow::Result<(DataKey, bool)> {
    let file = home(cli)?.join("data/keys.json");
    let keys: BTreeMap<String, WrappedKey> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let canonical = path
        .canonicalize()
        .with_context(|| format!("{} does not exist", path.display()))?;
    let name = canonical.display().to_string();
    if let Some(k) = keys.get(&name).and_then(|w| unwrap_key(w, me)) {
        return Ok((k, false));
    }
    let key = DataKey::generate();
    let mut keys = keys;
    keys.insert(name, wrap_key(&key, &me.public()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&keys)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((key, true))
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

/// Pushes a job input (with the data key this path had before, if any) and lets the
/// requester and the node decrypt it; returns its content id.
pub(crate) async fn push_input(
    cli: &Cli,
    client: &Client,
    path: &std::path::Path,
    me: &Keypair,
    node_key: &PublicKey,
) -> anyhow::Result<Hash> {
    let (key, _) = data_key_for(cli, path, me)?;
    let local = local_store(cli)?;
    let report = client
        .push_tree(path, &key, ChunkParams::default(), &local, 8)
        .await
        .with_context(|| format!("pushing {}", path.display()))?;
    client.share_key(&report.cid, &key, &me.public()).await?;
    client.share_key(&report.cid, &key, node_key).await?;
    Ok(report.cid)
}

/// Lets the node decrypt an input pushed before (the requester must hold a grant).
pub(crate) async fn grant_input(
    client: &Client,
    cid: &Hash,
    me: &Keypair,
    node_key: &PublicKey,
) -> anyhow::Result<()> {
    let key = client.granted_key(cid, me).await?;
    client.share_key(cid, &key, node_key).await?;
    Ok(())
}

/// Pulls tree `cid` with `me`'s grant into `out`.
pub(crate) async fn pull_granted(
    cli: &Cli,
    client: &Client,
    cid: &Hash,
    me: &Keypair,
    out: &std::path::Path,
) -> anyhow::Result<gridwork_client::PullReport> {
    let key = client.granted_key(cid, me).await?;
    let local = local_store(cli)?;
    Ok(client
        .pull_tree(cid, &key, ChunkParams::default(), &local, 8, out)
        .await?)
}

pub(crate) fn data(cli: &Cli, cmd: &DataCommand) -> anyhow::Result<()> {
    let client = Client::new(&cli.node);
    let params = ChunkParams::default();
    match cmd {
        DataCommand::Push { path, streams } => {
            let me = signing_key(cli)?;
            let (key, _) = data_key_for(cli, path, &me)?;
            let local = local_store(cli)?;
            let started = Instant::now();
            let report = runtime()?.block_on(async {
                let report = client
                    .push_tree(path, &key, params, &local, *streams)
                    .await?;
                client.share_key(&report.cid, &key, &me.public()).await?;
                anyhow::Ok(report)
            })?;
            let secs = started.elapsed().as_secs_f64();
            emit(cli.json, &report, || {
                rows(&[
                    ("cid", report.cid.to_string()),
                    (
                        "tree",
                        format!(
                            "{} files, {} bytes, {} chunks",
                            report.files, report.bytes, report.chunks
                        ),
                    ),
                    (
                        "sent",
                        format!(
                            "{} chunks, {} bytes in {secs:.2} s",
                            report.chunks_sent, report.bytes_sent
                        ),
                    ),
                ])
            })
        }
        DataCommand::Pull { cid, out, streams } => {
            let cid: Hash = cid.parse()?;
            let me = signing_key(cli)?;
            let local = local_store(cli)?;
            if out.exists()
                && std::fs::read_dir(out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            {
                bail!(
                    "{} is not empty; pull into a new or empty directory",
                    out.display()
                );
            }
            let report = runtime()?.block_on(async {
                let key = client.granted_key(&cid, &me).await?;
                anyhow::Ok(
                    client
                        .pull_tree(&cid, &key, params, &local, *streams, out)
                        .await?,
                )
            })?;
            emit(cli.json, &report, || {
                format!(
                    "{} files into {} ({} chunks, {} bytes fetched)",
                    report.files,
                    out.display(),
                    report.chunks_received,
                    report.bytes_received
                )
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
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )
        }
        DataCommand::Share { cid, recipient } => {
            let cid: Hash = cid.parse()?;
            let me = signing_key(cli)?;
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
