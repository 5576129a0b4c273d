//! What each command does: gather inputs, call the libraries, print.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use gridwork_client::{Client, Keystore};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::dev_keypair;
use gridwork_types::{Address, Amount, Hash, Keypair, TxKind};
use serde_json::json;

use crate::cli::{
    BlockCommand, Cli, Command, KeysCommand, NodeArgs, SendArgs, StakeCommand, TxCommand,
};
use crate::output::{emit, rows};

/// How long a command waits for its transaction's block.
pub(crate) const COMMIT_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn home(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(home) = &cli.home {
        return Ok(home.clone());
    }
    let user = std::env::var_os("HOME").ok_or_else(|| anyhow!("set GRIDWORK_HOME or HOME"))?;
    Ok(PathBuf::from(user).join(".gridwork"))
}

pub(crate) fn keystore(cli: &Cli) -> anyhow::Result<Keystore> {
    Ok(Keystore::new(home(cli)?.join("keys")))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The passphrase from GRIDWORK_PASSPHRASE or the terminal.
fn passphrase(prompt: &str, confirm: bool) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("GRIDWORK_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("a passphrase is needed and there is no terminal to ask on; set GRIDWORK_PASSPHRASE");
    }
    let first = rpassword::prompt_password(prompt)?;
    if confirm && rpassword::prompt_password("Repeat the passphrase: ")? != first {
        bail!("the passphrases do not match");
    }
    Ok(first)
}

fn key_name(cli: &Cli) -> anyhow::Result<String> {
    cli.key.clone().ok_or_else(|| {
        anyhow!(
            "this command signs: pass --key NAME or set GRIDWORK_KEY (see `gridwork keys list`)"
        )
    })
}

pub(crate) fn signing_key(cli: &Cli) -> anyhow::Result<Keypair> {
    let name = key_name(cli)?;
    let store = keystore(cli)?;
    let info = store.info(&name)?;
    let pass = if info.dev {
        String::new()
    } else {
        passphrase(&format!("Passphrase for `{name}`: "), false)?
    };
    Ok(store.unlock(&name, &pass)?)
}

pub(crate) fn parse_amount(s: &str) -> anyhow::Result<Amount> {
    Ok(Amount::parse_grid(s)?)
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Keys(cmd) => keys(&cli, cmd),
        Command::Node(args) => node(&cli, args),
        Command::Balance { address } => balance(&cli, address.as_deref()),
        Command::Transfer { to, amount, send } => {
            let to: Address = to.parse()?;
            let kind = TxKind::Transfer {
                to,
                amount: parse_amount(amount)?,
            };
            send_tx(&cli, kind, send)
        }
        Command::Stake(cmd) => match cmd {
            StakeCommand::Lock { amount, send } => send_tx(
                &cli,
                TxKind::StakeLock {
                    amount: parse_amount(amount)?,
                },
                send,
            ),
            StakeCommand::Unbond { amount, send } => send_tx(
                &cli,
                TxKind::StakeUnbond {
                    amount: parse_amount(amount)?,
                },
                send,
            ),
            StakeCommand::Withdraw { send } => send_tx(&cli, TxKind::StakeWithdraw, send),
        },
        Command::Tx(TxCommand::Show { hash }) => tx_show(&cli, hash),
        Command::Block(BlockCommand::Show { id }) => block_show(&cli, id),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => crate::bench::bench(&cli, cmd),
        Command::Job(cmd) => crate::market::job(&cli, cmd),
        Command::Provider(cmd) => crate::market::provider(&cli, cmd),
        Command::Service(cmd) => crate::services::service(&cli, cmd),
        Command::Worker(args) => crate::worker::worker(&cli, args),
        Command::Probe(args) => crate::worker::probe_command(&cli, args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => match &args.what {
            Some(crate::cli::DemoWhat::Service { requests, liar }) => {
                crate::demo_service::demo_service(&cli, args, *requests, *liar)
            }
            None => crate::demo::demo(&cli, args),
        },
        Command::SandboxExec(args) => crate::worker::sandbox_exec(args),
        Command::Data(cmd) => crate::data::data(&cli, cmd),
        Command::Image(cmd) => crate::data::image(&cli, cmd),
    }
}

fn keys(cli: &Cli, cmd: &KeysCommand) -> anyhow::Result<()> {
    let store = keystore(cli)?;
    match cmd {
        KeysCommand::New {
            name,
            insecure_no_passphrase,
        } => {
            if store.contains(name) {
                bail!("a key named `{name}` already exists; choose another name");
            }
            let info = if *insecure_no_passphrase {
                store.insert_unprotected(name, &Keypair::generate())?
            } else {
                let pass = passphrase(&format!("New passphrase for `{name}`: "), true)?;
                store.insert(name, &Keypair::generate(), &pass, false)?
            };
            emit(cli.json, &info, || {
                format!("created key `{}`\naddress  {}", info.name, info.address)
            })
        }
        KeysCommand::List => {
            let keys = store.list()?;
            emit(cli.json, &json!({ "keys": keys }), || {
                if keys.is_empty() {
                    return format!(
                        "no keys in {}; create one with `gridwork keys new NAME`",
                        store.dir().display()
                    );
                }
                keys.iter()
                    .map(|k| {
                        format!(
                            "{:<12} {}{}",
                            k.name,
                            k.address,
                            if k.dev { "  (dev)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeysCommand::Show { name } => {
            let info = store.info(name)?;
            emit(cli.json, &info, || {
                rows(&[
                    ("name", info.name.clone()),
                    ("address", info.address.to_string()),
                    ("public key", info.public_key.clone()),
                ])
            })
        }
    }
}

fn node(cli: &Cli, args: &NodeArgs) -> anyhow::Result<()> {
    init_logging();
    let mut config = NodeConfig::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    if config.data_dir == NodeConfig::default().data_dir {
        config.data_dir = home(cli)?.join("node");
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.parse().map_err(|_| {
            anyhow!("--listen {listen} is not an address; use the form 127.0.0.1:7650")
        })?;
    }
    if let Some(ms) = args.block_interval_ms {
        config.block_interval_ms = ms;
    }
    if let Some(g) = &args.genesis {
        config.genesis = Some(g.clone());
    }
    if args.p2p_listen.is_some() {
        config.p2p_listen = args.p2p_listen;
    }
    if !args.p2p_announce.is_empty() {
        config.p2p_announce = args.p2p_announce.clone();
    }
    let source = match (&config.genesis, args.dev) {
        (_, true) => GenesisSource::Dev {
            accounts: args.dev_accounts,
            unbonding_period_ms: args.dev_unbonding_period_ms,
        },
        (Some(file), false) => GenesisSource::File(file.clone()),
        (None, false) => GenesisSource::Stored,
    };
    let node = Node::open(&config, source)?;

    let mut dev_accounts = Vec::new();
    if args.dev {
        let store = keystore(cli)?;
        for i in 0..args.dev_accounts {
            let key = dev_keypair(i);
            let name = format!("dev{i}");
            if !store.contains(&name) {
                store.insert(&name, &key, "", true)?;
            } else if store.info(&name)?.address != key.address() {
                tracing::warn!(%name, "keystore already has a different key with this name; not replacing it");
                continue;
            }
            let account = gridwork_node::api::views::account(
                key.address(),
                &node.ledger().account(&key.address()),
            );
            dev_accounts.push(json!({
                "name": name,
                "address": key.address(),
                "balance": account.balance,
                "spendable": account.spendable,
                "vesting": account.vesting_locked,
            }));
        }
    }

    // After the dev accounts: `--key dev0` may name one of them.
    let gateway_key = match args.gateway {
        true => Some(signing_key(cli).context("--gateway serves the services of --key")?),
        false => None,
    };
    let gateway_keys_dir = home(cli)?.join("gateways");
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (in use? pick another with --listen)",
                    config.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let peer = match config.p2p_listen {
            Some(listen) => {
                let secret = node
                    .keys()
                    .derive_secret(gridwork_p2p::TRANSPORT_KEY_CONTEXT);
                let peer = gridwork_p2p::Peer::bind(secret, listen, node.data().chunks())
                    .await
                    .context("--p2p-listen")?;
                node.set_peer(Some(peer.announcement(&config.p2p_announce)));
                Some(peer)
            }
            None => None,
        };
        let info = gridwork_node::api::views::chain(&node)?;
        let doc = json!({
            "api": format!("http://{addr}"),
            "peer": info.node_peer,
            "chain_id": info.chain_id,
            "height": info.height,
            "data_dir": config.data_dir,
            "dev_accounts": dev_accounts,
        });
        emit(cli.json, &doc, || {
            let mut text = format!(
                "Gridwork node: chain {} at height {}\nAPI       http://{addr}\ndata dir  {}",
                info.chain_id,
                info.height,
                config.data_dir.display()
            );
            if let Some(p) = &info.node_peer {
                text.push_str(&format!(
                    "\npeer      {} at {}",
                    p.endpoint,
                    p.addrs.join(", ")
                ));
            }
            if !dev_accounts.is_empty() {
                text.push_str("\ndev accounts (keys in the keystore, no passphrase):");
                for a in &dev_accounts {
                    let amount = |field: &str| -> Amount {
                        serde_json::from_value(a[field].clone()).unwrap_or_default()
                    };
                    // A vesting account holds GRID it cannot spend or stake yet (it cannot run
                    // a worker until enough vests); say so rather than list it as funded.
                    let vesting = amount("vesting");
                    let note = if vesting > Amount::ZERO {
                        format!(
                            "  (vesting: {} GRID locked, {} GRID spendable now)",
                            vesting,
                            amount("spendable")
                        )
                    } else {
                        String::new()
                    };
                    text.push_str(&format!(
                        "\n  {:<6} {}  {} GRID{note}",
                        a["name"].as_str().unwrap_or(""),
                        a["address"].as_str().unwrap_or(""),
                        amount("balance")
                    ));
                }
            }
            text
        })?;
        let (stop_gateways, gateways_stopping) = tokio::sync::watch::channel(false);
        let (beside, hosting) = match gateway_key {
            Some(key) => {
                let gateways = std::sync::Arc::new(gridwork_gateway::Gateways::default());
                let url = match &args.gateway_url {
                    Some(url) => url.clone(),
                    None if addr.ip().is_unspecified() => bail!(
                        "--gateway: the API listens on every address ({addr}), so say which one users and members reach it at with --gateway-url http://HOST:{}",
                        addr.port()
                    ),
                    None => format!("http://{addr}"),
                };
                let printable = url.chars().all(|c| c.is_ascii_graphic());
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || !printable
                    || url.len() > gridwork_protocol::MAX_GATEWAY_URL
                {
                    bail!(
                        "--gateway-url {url}: give an http(s):// URL of at most {} printable bytes, such as http://203.0.113.7:7650",
                        gridwork_protocol::MAX_GATEWAY_URL
                    );
                }
                let host = crate::services::host_gateways(
                    format!("http://{addr}"),
                    url,
                    key,
                    gateways.clone(),
                    gateway_keys_dir,
                    gateways_stopping,
                );
                (gridwork_gateway::routes(gateways), Some(tokio::spawn(host)))
            }
            None => (axum::Router::new(), None),
        };
        let served = gridwork_node::run(
            node,
            listener,
            config.serve_limits(),
            beside,
            shutdown_signal(),
        )
        .await;
        let _ = stop_gateways.send(true);
        if let Some(hosting) = hosting {
            let _ = hosting.await;
        }
        if let Some(peer) = peer {
            peer.shutdown().await;
        }
        anyhow::Ok(served?)
    })
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub(crate) fn init_logging() {
    let level = std::env::var("GRIDWORK_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

fn balance(cli: &Cli, address: Option<&str>) -> anyhow::Result<()> {
    let address: Address = match address {
        Some(a) => a.parse()?,
        None => keystore(cli)?.info(&key_name(cli)?)?.address,
    };
    let view = runtime()?.block_on(Client::new(&cli.node).account(&address))?;
    emit(cli.json, &view, || {
        let mut r = vec![
            ("address", view.address.to_string()),
            ("balance", format!("{} GRID", view.balance)),
            ("spendable", format!("{} GRID", view.spendable)),
            ("stake", format!("{} GRID", view.stake_locked)),
            ("unbonding", format!("{} GRID", view.unbonding_total)),
            ("escrow", format!("{} GRID", view.escrow)),
            ("nonce", view.nonce.to_string()),
        ];
        if view.vesting.is_some() {
            r.push((
                "vesting",
                format!("{} GRID still locked", view.vesting_locked),
            ));
        }
        let mut text = rows(&r);
        for u in &view.unbonding {
            text.push_str(&format!(
                "\n  unbonding {} GRID, withdrawable from {} (block time)",
                u.amount,
                crate::output::utc(u.matures_at_ms)
            ));
        }
        text
    })
}

fn send_tx(cli: &Cli, kind: TxKind, send: &SendArgs) -> anyhow::Result<()> {
    let key = signing_key(cli)?;
    let fee = parse_amount(&send.fee)?;
    let client = Client::new(&cli.node);
    runtime()?.block_on(async {
        let (hash, status) = sign_and_send(&client, &key, fee, kind, !send.no_wait).await?;
        match status {
            None => emit(
                cli.json,
                &json!({ "hash": hash, "status": "pending" }),
                || format!("submitted {hash}"),
            ),
            Some(status) => {
                let height = status.receipt.as_ref().map_or(0, |r| r.height);
                emit(cli.json, &status, || {
                    format!("committed {hash} in block {height}")
                })
            }
        }
    })
}

/// Signs `kind` with the account's next nonce, submits it, and waits for its block if asked.
pub(crate) async fn sign_and_send(
    client: &Client,
    key: &Keypair,
    fee: Amount,
    kind: TxKind,
    wait: bool,
) -> anyhow::Result<(Hash, Option<gridwork_api::TxStatus>)> {
    let hash = client.sign_and_send(key, fee, kind).await?;
    if !wait {
        return Ok((hash, None));
    }
    Ok((hash, Some(client.wait_committed(&hash, COMMIT_WAIT).await?)))
}

fn tx_show(cli: &Cli, hash: &str) -> anyhow::Result<()> {
    let hash: Hash = hash.parse()?;
    let status = runtime()?
        .block_on(Client::new(&cli.node).tx(&hash))?
        .ok_or_else(|| {
            anyhow!("transaction {hash} is not known to the node (not pending, not committed)")
        })?;
    emit(cli.json, &status, || {
        let mut r = vec![
            ("hash", status.hash.to_string()),
            ("status", status.status.as_str().into()),
            ("from", status.tx.from.to_string()),
            ("nonce", status.tx.nonce.to_string()),
            ("fee", format!("{} GRID", status.tx.fee)),
            (
                "kind",
                serde_json::to_string(&status.tx.kind).unwrap_or_default(),
            ),
        ];
        if let Some(rc) = &status.receipt {
            r.push(("block", format!("{} (index {})", rc.height, rc.index)));
            r.push((
                "events",
                serde_json::to_string(&rc.events).unwrap_or_default(),
            ));
        }
        rows(&r)
    })
}

fn block_show(cli: &Cli, id: &str) -> anyhow::Result<()> {
    let block = runtime()?
        .block_on(Client::new(&cli.node).block(id))?
        .ok_or_else(|| anyhow!("block {id} does not exist yet"))?;
    emit(cli.json, &block, || {
        let mut text = rows(&[
            ("height", block.height.to_string()),
            ("hash", block.hash.to_string()),
            ("parent", block.parent.to_string()),
            ("time", crate::output::utc(block.timestamp_ms)),
            ("transactions", block.tx_count.to_string()),
            ("state root", block.state_root.to_string()),
        ]);
        for h in block.txs.iter().flatten() {
            text.push_str(&format!("\n  {h}"));
        }
        text
    })
}
