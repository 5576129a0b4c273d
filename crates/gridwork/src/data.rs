//! The `data` commands.
//!
//! Local state lives under GRIDWORK_HOME: `chunks/` caches sealed chunks (what makes pushes
//! and pulls resume), `data/keys.json` remembers the data key of each pushed path, wrapped for
//! the pusher's own key, so pushing the same directory again reuses the key and moves only
//! changed chunks.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use gridwork_api::KeyGrant;
use gridwork_client::Client;
use gridwork_transfer::{
    unwrap_key, wrap_key, ChunkParams, ChunkStore, DataKey, EntryKind, WrappedKey,
};
use gridwork_types::{Hash, Keypair, PublicKey};
use serde_json::json;

use crate::cli::{Cli, DataCommand};
use crate::commands::{home, keystore, runtime, signing_key};
use crate::output::{emit, rows};

fn local_store(cli: &Cli) -> anyhow::Result<ChunkStore> {
    Ok(ChunkStore::open(home(cli)?.join("chunks"), None)?)
}

fn to_grant(w: WrappedKey) -> KeyGrant {
    KeyGrant {
        recipient: w.recipient,
        ephemeral: w.ephemeral,
        ciphertext: w.ciphertext,
    }
}

fn from_grant(g: &KeyGrant) -> WrappedKey {
    WrappedKey {
        recipient: g.recipient,
        ephemeral: g.ephemeral.clone(),
        ciphertext: g.ciphertext.clone(),
    }
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

/// The data key of tree `cid` granted to `me`.
async fn granted_key(client: &Client, cid: &Hash, me: &Keypair) -> anyhow::Result<DataKey> {
    let grants = client.key_grants(cid).await?;
    grants
        .iter()
        .filter(|g| g.recipient == me.address())
        .find_map(|g| unwrap_key(&from_grant(g), me))
        .ok_or_else(|| anyhow!("tree {cid} has no key for {}; ask its owner to run `gridwork data share {cid} <your public key>`", me.address()))
}

fn recipient_key(cli: &Cli, who: &str) -> anyhow::Result<PublicKey> {
    if let Ok(bytes) = hex::decode(who) {
        if let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return PublicKey::from_bytes(&arr)
                .map_err(|e| anyhow!("`{who}` is not a public key: {e}"));
        }
    }
    let info = keystore(cli)?.info(who).map_err(|_| {
        anyhow!("`{who}` is neither a public key in hex nor a keystore name (`gridwork keys show NAME` prints a key)")
    })?;
    let bytes: [u8; 32] = hex::decode(&info.public_key)?
        .try_into()
        .map_err(|_| anyhow!("bad key file for {who}"))?;
    Ok(PublicKey::from_bytes(&bytes)?)
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
                client
                    .add_key_grant(&report.cid, &to_grant(wrap_key(&key, &me.public())))
                    .await?;
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
                let key = granted_key(&client, &cid, &me).await?;
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
                let key = granted_key(&client, &cid, &me).await?;
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
            let to = recipient_key(cli, recipient)?;
            runtime()?.block_on(async {
                let key = granted_key(&client, &cid, &me).await?;
                client
                    .add_key_grant(&cid, &to_grant(wrap_key(&key, &to)))
                    .await?;
                anyhow::Ok(())
            })?;
            emit(
                cli.json,
                &json!({ "cid": cid, "recipient": to.address() }),
                || format!("{} can now decrypt {cid}", to.address()),
            )
        }
    }
}
