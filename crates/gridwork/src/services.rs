//! `gridwork service ...`: publish, fund, follow and close services (stream tasks), and, as
//! a provider, subscribe to serve them.

use anyhow::anyhow;
use gridwork_api::ServiceView;
use gridwork_client::{create_service, Client, CreatedService, KeyRegistry, ServiceFile};
use gridwork_types::{Hash, ResponseMethod, StreamPrice, TxKind};
use serde_json::json;

use crate::cli::{Cli, SendArgs, ServiceCommand, ServiceKeyCommand};
use crate::commands::{home, parse_amount, runtime, sign_and_send, signing_key, COMMIT_WAIT};
use crate::output::{emit, rows};

pub(crate) fn service(cli: &Cli, cmd: &ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Create {
            file,
            deposit,
            send,
        } => create(cli, file, deposit.as_deref(), send),
        ServiceCommand::Status { id } => {
            let view = fetch(cli, id)?;
            let seen = gateway_seen(&view);
            let mut doc = serde_json::to_value(&view)?;
            if let Some(doc) = doc.as_object_mut() {
                let (stats, error) = match &seen {
                    Some(Ok(stats)) => (serde_json::to_value(stats)?, serde_json::Value::Null),
                    Some(Err(why)) => (serde_json::Value::Null, json!(why)),
                    None => (serde_json::Value::Null, serde_json::Value::Null),
                };
                doc.insert("gateway_stats".into(), stats);
                doc.insert("gateway_error".into(), error);
            }
            emit(cli.json, &doc, || {
                let mut out = render(&view);
                out.push_str(&format!(
                    "\n\ngateway: {}",
                    gateway_line(&view, seen.as_ref())
                ));
                out
            })
        }
        ServiceCommand::List => {
            let client = Client::new(&cli.node);
            let ids = runtime()?.block_on(client.services())?;
            emit(cli.json, &json!({ "open": ids }), || {
                if ids.is_empty() {
                    "no services".into()
                } else {
                    ids.iter()
                        .map(Hash::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        ServiceCommand::Fund { id, amount, send } => {
            let service: Hash = id.parse()?;
            let amount = parse_amount(amount)?;
            let hash = send_one(cli, send, TxKind::FundService { service, amount })?;
            emit(cli.json, &json!({ "service": service, "tx": hash }), || {
                format!("added {amount} GRID to service {service} ({hash})")
            })
        }
        ServiceCommand::Close { id, send } => {
            let service: Hash = id.parse()?;
            let hash = send_one(cli, send, TxKind::CloseService { service })?;
            emit(cli.json, &json!({ "service": service, "tx": hash }), || {
                format!(
                    "closing service {service} ({hash}): its members stop now and settle their last receipts within {} h; then the rest of the escrow returns",
                    gridwork_protocol::SETTLE_WINDOW_MS / 3_600_000
                )
            })
        }
        ServiceCommand::Subscribe {
            id,
            per_response,
            per_byte,
            send,
        } => {
            let service: Hash = id.parse()?;
            let max = fetch(cli, id)?.spec.max_price;
            let price = StreamPrice {
                per_response: per_response
                    .as_deref()
                    .map(parse_amount)
                    .transpose()?
                    .unwrap_or(max.per_response),
                per_unit: per_byte
                    .as_deref()
                    .map(parse_amount)
                    .transpose()?
                    .unwrap_or(max.per_unit),
            };
            let hash = send_one(cli, send, TxKind::Subscribe { service, price })?;
            emit(
                cli.json,
                &json!({ "service": service, "tx": hash, "price": price }),
                || {
                    format!(
                        "subscribed to service {service} at {} GRID a response and {} GRID a byte ({hash}); seats are drawn from subscribers as they open",
                        price.per_response, price.per_unit
                    )
                },
            )
        }
        ServiceCommand::Gateway { id, listen, url } => gateway(cli, id, *listen, url.as_deref()),
        ServiceCommand::Key(ServiceKeyCommand::New { id }) => {
            let service: Hash = id.parse()?;
            let path = api_keys_path(cli, &service)?;
            let key = gridwork_gateway::ApiKeys::new_key(&path)?;
            emit(cli.json, &json!({ "service": service, "key": key }), || {
                format!(
                    "{key}\n(give it to a user of service {service}: `Authorization: Bearer {key}` at its gateway; shown once, only its hash is kept in {})",
                    path.display()
                )
            })
        }
        ServiceCommand::Unsubscribe { id, send } => {
            let service: Hash = id.parse()?;
            let hash = send_one(cli, send, TxKind::Unsubscribe { service })?;
            emit(cli.json, &json!({ "service": service, "tx": hash }), || {
                format!("unsubscribed from service {service} ({hash})")
            })
        }
    }
}

/// Where the gateway of `service` on this machine keeps its users' key hashes.
fn api_keys_path(cli: &Cli, service: &Hash) -> anyhow::Result<std::path::PathBuf> {
    Ok(keys_file(&home(cli)?.join("gateways"), service))
}

/// The file of a service's users' API keys beneath `dir` (`GRIDWORK_HOME/gateways`).
fn keys_file(dir: &std::path::Path, service: &Hash) -> std::path::PathBuf {
    dir.join(service.to_string()).join("api-keys")
}

/// How often a node that is a gateway looks for services of its key.
const GATEWAYS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `gridwork --key K node --gateway`: until `stop`, the gateway of every open service whose
/// gateway key is `key`, served in `gateways` (on the node's own listener, at `url`): each
/// added as it appears (said on the ledger to listen at `url`, its users' keys from
/// `keys_dir`, kept beside the ledger as `service gateway` keeps its one) and dropped once it
/// closes. The node's API is at `api`.
pub(crate) async fn host_gateways(
    api: String,
    url: String,
    key: gridwork_types::Keypair,
    gateways: std::sync::Arc<gridwork_gateway::Gateways>,
    keys_dir: std::path::PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    use std::sync::Arc;
    let client = Client::new(&api);
    // Every service's transactions go one at a time (one key, one nonce sequence).
    let gateway_key = gridwork_gateway::GatewayKey::new(client.clone(), key.clone());
    let mut kept: HashMap<Hash, tokio::sync::watch::Sender<bool>> = HashMap::new();
    // Services of other gateway keys (a service's key never changes): not read again.
    let mut foreign: std::collections::HashSet<Hash> = std::collections::HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let chain_id = loop {
        match client.chain().await {
            Ok(chain) => break chain.chain_id,
            Err(e) => tracing::debug!(error = %e, "the node's gateway waits for its API"),
        }
        tokio::select! {
            _ = tokio::time::sleep(GATEWAYS_EVERY) => {}
            _ = stop.changed() => return,
        }
    };
    loop {
        match client.services().await {
            Ok(open) => {
                let open: std::collections::HashSet<Hash> = open.into_iter().collect();
                for id in &open {
                    if kept.contains_key(id) || foreign.contains(id) {
                        continue;
                    }
                    // Its own services only: anyone may name any gateway key in a service, and
                    // a stranger's would have this node announce, dispute and drop with its
                    // key, paying the fees (found by a review).
                    let view = match client.service(id).await {
                        Ok(Some(view))
                            if view.spec.gateway == key.public()
                                && view.requester == key.address() =>
                        {
                            view
                        }
                        Ok(Some(_)) => {
                            foreign.insert(*id);
                            continue;
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::debug!(service = %id, error = %e, "cannot read a service");
                            continue;
                        }
                    };
                    let dispatcher = Arc::new(gridwork_gateway::Dispatcher::new(
                        *id,
                        view.spec.clone(),
                        &chain_id,
                        key.clone(),
                    ));
                    if view.gateway_url != url {
                        if let Err(e) =
                            gridwork_gateway::announce(&gateway_key, &dispatcher, &url).await
                        {
                            tracing::warn!(service = %id, error = %e, "cannot say where the gateway listens; trying again");
                            continue;
                        }
                    }
                    let _ = gridwork_gateway::refresh_council(&client, &dispatcher).await;
                    gateways.insert(
                        dispatcher.clone(),
                        Arc::new(gridwork_gateway::ApiKeys::open(&keys_file(&keys_dir, id))),
                    );
                    let (stop_one, stopping) = tokio::sync::watch::channel(false);
                    tasks.spawn(gridwork_gateway::keep(
                        gateway_key.clone(),
                        dispatcher,
                        stopping,
                    ));
                    kept.insert(*id, stop_one);
                    tracing::info!(service = %id, %url, "serving the service's gateway");
                }
                foreign.retain(|id| open.contains(id));
                // Closed (no longer open): no more requests for it.
                kept.retain(|id, stop_one| {
                    let open = open.contains(id);
                    if !open {
                        gateways.remove(id);
                        let _ = stop_one.send(true);
                    }
                    open
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the services"),
        }
        while tasks.try_join_next().is_some() {}
        let round = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(GATEWAYS_EVERY) => {}
            // A request for a service not served yet: look now (a round at most every
            // 200 ms, however many such requests strangers send).
            _ = gateways.asked() => {
                tokio::time::sleep_until(round + std::time::Duration::from_millis(200)).await
            }
            _ = stop.changed() => break,
        }
    }
    for stop_one in kept.values() {
        let _ = stop_one.send(true);
    }
    while tasks.join_next().await.is_some() {}
}

/// `gridwork service gateway`: serves the gateway until Ctrl-C.
fn gateway(
    cli: &Cli,
    id: &str,
    listen: std::net::SocketAddr,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let service: Hash = id.parse()?;
    let key = signing_key(cli)?;
    let view = fetch(cli, id)?;
    if view.spec.gateway != key.public() {
        anyhow::bail!(
            "--key {} is not the gateway key of service {service} (its spec names {}); run the gateway with that key",
            key.address(),
            view.spec.gateway.address()
        );
    }
    let keys_path = api_keys_path(cli, &service)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let client = Client::new(&cli.node);
        let chain = client.chain().await?;
        let dispatcher = std::sync::Arc::new(gridwork_gateway::Dispatcher::new(
            service,
            view.spec.clone(),
            &chain.chain_id,
            key.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow!("--listen {listen}: {e}"))?;
        let bound = listener.local_addr()?;
        let url = url.map_or_else(|| format!("http://{bound}"), str::to_string);
        let gateway_key = gridwork_gateway::GatewayKey::new(client.clone(), key.clone());
        if view.gateway_url != url {
            gridwork_gateway::announce(&gateway_key, &dispatcher, &url)
                .await
                .map_err(|e| anyhow!("saying where the gateway listens: {e}"))?;
        }
        if let Err(e) = gridwork_gateway::refresh_council(&client, &dispatcher).await {
            tracing::warn!(error = %e, "cannot read the council yet");
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(gridwork_gateway::keep(
            gateway_key,
            dispatcher.clone(),
            stopped.clone(),
        ));
        emit(
            cli.json,
            &json!({ "service": service, "listen": bound.to_string(), "url": url }),
            || {
                rows(&[
                    ("service", service.to_string()),
                    ("gateway", url.clone()),
                    (
                        "users",
                        format!("curl -H 'Authorization: Bearer <key>' {url}/s/{service}/<path> (keys: gridwork service key new {service})"),
                    ),
                    ("stop", "Ctrl-C".into()),
                ])
            },
        )?;
        let app = gridwork_gateway::router(
            dispatcher,
            std::sync::Arc::new(gridwork_gateway::ApiKeys::open(&keys_path)),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::commands::shutdown_signal())
            .await?;
        let _ = stop.send(true);
        let _ = keeper.await;
        anyhow::Ok(())
    })
}

/// Signs and sends one transaction as `--key`, waiting for its block unless told not to.
fn send_one(cli: &Cli, send: &SendArgs, kind: TxKind) -> anyhow::Result<Hash> {
    let key = signing_key(cli)?;
    let client = Client::new(&cli.node);
    let fee = parse_amount(&send.fee)?;
    let (hash, _) = runtime()?.block_on(sign_and_send(&client, &key, fee, kind, !send.no_wait))?;
    Ok(hash)
}

/// How the service's gateway answered its users (`GET /g/<service>/stats`), or why it could
/// not be asked; `None` when no gateway said where it listens.
fn gateway_seen(view: &ServiceView) -> Option<Result<gridwork_gateway::Stats, String>> {
    if view.gateway_url.is_empty() {
        return None;
    }
    let url = match stats_url(&view.gateway_url, &view.id) {
        Ok(url) => url,
        Err(why) => return Some(Err(why)),
    };
    let asked = async {
        // The URL is the requester's word: a redirect from it is not followed either.
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?
            .get(url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default().trim()
            ));
        }
        r.json::<gridwork_gateway::Stats>()
            .await
            .map_err(|e| e.to_string())
    };
    Some(match runtime() {
        Ok(rt) => rt.block_on(asked),
        Err(e) => Err(e.to_string()),
    })
}

/// Where a gateway announced at `gateway_url` says how it answered service `id`: its path
/// with `/g/<id>/stats` added. The URL is the requester's word on the ledger, so anything
/// that would send the request elsewhere than that path (a query, a fragment, credentials)
/// is refused rather than followed.
fn stats_url(gateway_url: &str, id: &Hash) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(gateway_url)
        .map_err(|e| format!("the announced URL `{gateway_url}` does not parse: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.cannot_be_a_base()
    {
        return Err(format!(
            "the announced URL `{gateway_url}` is not a plain http(s) address (no query, fragment or credentials); not asked"
        ));
    }
    url.path_segments_mut()
        .map_err(|()| format!("the announced URL `{gateway_url}` has no path to extend"))?
        .pop_if_empty()
        .extend(["g", &id.to_string(), "stats"]);
    Ok(url)
}

fn gateway_line(
    view: &ServiceView,
    seen: Option<&Result<gridwork_gateway::Stats, String>>,
) -> String {
    match seen {
        None => "none has said where it listens yet (`gridwork service gateway`)".into(),
        Some(Err(why)) => format!("{} does not answer: {why}", view.gateway_url),
        Some(Ok(s)) if s.window == 0 => format!(
            "{}: nothing answered yet ({} refused, {} timed out)",
            view.gateway_url, s.refused, s.timed_out
        ),
        Some(Ok(s)) => format!(
            "{}: latency p50 {:.1} ms, p99 {:.1} ms over the latest {} answers; {} answered ({} streamed), {} timed out, {} disagreed, {} refused",
            view.gateway_url,
            s.p50_ms,
            s.p99_ms,
            s.window,
            s.answered,
            s.streamed,
            s.timed_out,
            s.disagreed,
            s.refused
        ),
    }
}

fn fetch(cli: &Cli, id: &str) -> anyhow::Result<ServiceView> {
    let id: Hash = id
        .parse()
        .map_err(|e| anyhow!("`{id}` is not a service id: {e}"))?;
    runtime()?
        .block_on(Client::new(&cli.node).service(&id))?
        .ok_or_else(|| anyhow!("no service {id} on {}", cli.node))
}

fn create(
    cli: &Cli,
    file: &std::path::Path,
    deposit: Option<&str>,
    send: &SendArgs,
) -> anyhow::Result<()> {
    let key = signing_key(cli)?;
    let service = ServiceFile::read(file, key.public())?;
    let fee = parse_amount(&send.fee)?;
    let deposit = deposit.map(parse_amount).transpose()?;
    let client = Client::new(&cli.node).signed_by(key.clone());
    let registry = KeyRegistry::new(home(cli)?);
    let json = cli.json;
    let method = service.spec.method;
    let council = service.spec.council_size;
    let created = runtime()?.block_on(async {
        let c = create_service(&client, &key, service, deposit, fee, &registry, |path| {
            if !json {
                eprintln!("pushing {}", path.display());
            }
        })
        .await?;
        if !send.no_wait {
            client.wait_committed(&c.id, COMMIT_WAIT).await?;
        }
        anyhow::Ok(c)
    })?;
    for loss in &created.not_kept {
        eprintln!("warning: {loss}");
    }
    let CreatedService {
        id,
        deposit,
        reserve,
        state_fee,
        ..
    } = created;
    emit(
        cli.json,
        &json!({ "service": id, "deposit": deposit, "reserve": reserve, "state_fee": state_fee }),
        || {
            rows(&[
                ("service", id.to_string()),
                ("answers", method_line(&method, council)),
                (
                    "deposit",
                    format!("{deposit} GRID locked (it stays up while at least {reserve} GRID)"),
                ),
                (
                    "state fee",
                    format!("{state_fee} GRID paid to the rewards pool, not refunded"),
                ),
                (
                    "next",
                    format!(
                        "providers subscribe; `gridwork service status {id}` shows its council"
                    ),
                ),
            ])
        },
    )
}

/// How a council of `council` answers, for people.
fn method_line(method: &ResponseMethod, council: u8) -> String {
    match method {
        ResponseMethod::Optimistic {} => format!(
            "optimistic: the first of {council} members to respond answers; the others check it after"
        ),
        ResponseMethod::Weighted { .. } => format!(
            "weighted: the most common response of the first {} of {council} members; the rest check it after",
            method.quorum(council)
        ),
        ResponseMethod::Unanimous {} => {
            format!("unanimous: all {council} members, only when they agree")
        }
    }
}

/// The service's last finished status periods and the current one, oldest first:
/// `forming 1.2 s, up 300.0 s, down 4.1 s, up now`.
fn periods_line(v: &ServiceView) -> String {
    let mut parts: Vec<String> = v
        .periods
        .iter()
        .map(|p| {
            let secs = p.to_ms.saturating_sub(p.from_ms) as f64 / 1000.0;
            format!("{} {secs:.1} s", p.status.as_str())
        })
        .collect();
    parts.push(format!("{} now", v.status.as_str()));
    parts.join(", ")
}

fn render(v: &ServiceView) -> String {
    let s = &v.spec;
    let mut out = rows(&[
        ("service", v.id.to_string()),
        ("requester", v.requester.to_string()),
        (
            "status",
            format!("{} since block time {} ms", v.status.as_str(), v.since_ms),
        ),
        ("answers", method_line(&s.method, s.council_size)),
        (
            "price",
            format!(
                "at most {} GRID a response and {} GRID a byte, each member at its own",
                s.max_price.per_response, s.max_price.per_unit
            ),
        ),
        (
            "escrow",
            format!(
                "{} GRID (up while at least {} GRID); {} GRID paid to members",
                v.escrow, v.reserve, v.paid
            ),
        ),
        ("periods", periods_line(v)),
        (
            "downtime",
            match s.max_downtime_ms {
                0 => format!("{} s (it never ends on its own)", v.downtime_ms / 1000),
                h => format!(
                    "{} s (it ends after {} s down in one stretch)",
                    v.downtime_ms / 1000,
                    h / 1000
                ),
            },
        ),
        (
            "council",
            format!(
                "{} of {} seats{}",
                v.council.len(),
                s.council_size,
                if v.council.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        v.council
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        ),
        ("subscribers", v.subscribers.len().to_string()),
        ("disputes", v.disputes.to_string()),
    ]);
    if !v.members.is_empty() {
        out.push_str("\n\nmember                                          responses        bytes   paid (GRID)");
        for m in &v.members {
            out.push_str(&format!(
                "\n{:<46} {:>10} {:>12}   {}{}",
                m.provider.to_string(),
                m.responses,
                m.units,
                m.paid,
                if v.barred.contains(&m.provider) {
                    "  (slashed, barred)"
                } else if v.council.contains(&m.provider) {
                    ""
                } else {
                    "  (left)"
                }
            ));
        }
    }
    if v.closes_at_ms > 0 {
        out.push_str(&format!(
            "\n\nclosing: members settle until block time {} ms, then the rest of the escrow returns",
            v.closes_at_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stats_url;
    use gridwork_types::Hash;

    /// The gateway's URL is the requester's word: only its own path is asked, never a
    /// query or fragment it smuggles in (`http://127.0.0.1:2375/containers/json?` would have
    /// sent `service status` to a local daemon).
    #[test]
    fn the_stats_of_a_gateway_are_asked_at_its_own_path_only() {
        let id = Hash([7; 32]);
        assert_eq!(
            stats_url("http://10.0.0.1:8088", &id)
                .expect("a plain URL")
                .as_str(),
            format!("http://10.0.0.1:8088/g/{id}/stats")
        );
        assert_eq!(
            stats_url("https://gw.example/base/", &id)
                .expect("a plain URL with a path")
                .as_str(),
            format!("https://gw.example/base/g/{id}/stats")
        );
        for bad in [
            "http://127.0.0.1:2375/containers/json?",
            "http://127.0.0.1:2375/x#",
            "http://user:secret@gw.example/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(stats_url(bad, &id).is_err(), "{bad}");
        }
    }
}
