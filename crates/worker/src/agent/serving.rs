//! Serving services (stream tasks): a worker subscribes to the services it can run, and for
//! each whose council it sits on it keeps a member loop: the service's inputs pulled, its
//! server started in the sandbox (`crate::serve`), requests fetched from the service's gateway
//! (the URL the ledger holds), forwarded to the server, each response signed and sent back,
//! and the gateway's cumulative receipts settled on the ledger.
//!
//! A member's own rules, read as the gateway's enemy would use them:
//! - it signs a response only for the request it got: it recomputes the request's hash from
//!   what the gateway sent, so it never signs what it did not answer;
//! - it answers each request once, and a request it cannot answer (its server failed or was
//!   late) not at all (the gateway drops it; an answer made up could be slashed);
//! - it checks each receipt: signed by the service's gateway key, acknowledging every response
//!   it gave at its own price; a gateway that underpays loses the member (it unsubscribes);
//! - it serves on credit up to `max_unsettled` past what the ledger paid it: it settles at
//!   half of that, and waits for the settlement before serving more;
//! - for a service whose equivalence is not exact it judges the answers the gateway sends
//!   ([`judge_answers`]) only when its own signed answer is among them and every other's body
//!   checks out against its member's signature (a gateway cannot show it a body nobody
//!   gave), and each request once: it signs which it finds equivalent to its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridwork_api::ServiceView;
use gridwork_types::{
    request_hash, response_hash, Decode, Encode, Hash, JudgeTask, Keypair, ResponseHasher,
    SignedJudgement, SignedReceipt, StreamFrame, StreamJudgement, StreamResponse, TxKind,
    MAX_JUDGED,
};
use tokio::sync::watch;

use super::{lock, Worker, WorkerError};
use crate::serve::{Relayed, Served, Server, Streaming};

/// How often a worker looks at the services on the ledger.
pub(super) const SERVICES_EVERY: Duration = Duration::from_secs(1);
/// How long one fetch from the gateway waits for a request.
const FETCH_WAIT_MS: u64 = 5_000;
/// How long a worker waits before it asks again to subscribe to a service whose subscription
/// the node refused (its list full of more stake, too little stake of its own).
pub(super) const SUBSCRIBE_AGAIN_AFTER: Duration = Duration::from_secs(30);
/// How long a worker waits to ask to subscribe again after `refusals` refusals in a row: a
/// second, doubling, at most [`SUBSCRIBE_AGAIN_AFTER`].
fn subscribe_wait(refusals: u32) -> Duration {
    Duration::from_secs(1u64 << refusals.saturating_sub(1).min(16)).min(SUBSCRIBE_AGAIN_AFTER)
}

/// How long a server has to start listening.
const SERVER_START: Duration = Duration::from_secs(60);
/// How long a member waiting to be paid waits before it sends a receipt it sent already
/// again (one that adds to it goes at once).
const RESETTLE_AFTER: Duration = Duration::from_secs(5);
/// How often a member waiting to be paid reads what the ledger paid it.
const PAID_POLL: Duration = Duration::from_millis(200);
/// How many times a member tries a server that fails for its own reasons before it leaves.
const MAX_START_FAILURES: u32 = 3;

/// When a member sends its latest receipt to the ledger to be paid. While serving: once the
/// receipts since the last one it sent add half of `max_unsettled`, so each settlement covers
/// at least that much work however fast requests come (not once a response until the ledger's
/// pay is read again, a fee each). While waiting to be paid (`max_unsettled` reached, no
/// request fetched): a receipt that adds to the last one sent at once, the same one again only
/// after [`RESETTLE_AFTER`] (a settlement lost with a node that restarted). A member used to
/// wait the whole resend time here with a newer receipt in hand, and every user's request
/// with it: p99 5 s in the service demo, 2 requests a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settling {
    /// When the last settlement went.
    last: Option<Instant>,
    /// What the last settlement sent owed (what was paid, before any).
    sent_owed: u128,
}

impl Settling {
    fn new(paid: u128) -> Settling {
        Settling {
            last: None,
            sent_owed: paid,
        }
    }

    fn while_serving(&self, owed: u128, paid: u128, max_unsettled: u128) -> bool {
        owed.saturating_sub(paid.max(self.sent_owed)) >= max_unsettled / 2
    }

    fn while_waiting(&self, owed: u128, now: Instant) -> bool {
        owed > self.sent_owed
            || self
                .last
                .is_none_or(|at| now.saturating_duration_since(at) >= RESETTLE_AFTER)
    }

    fn sent(&mut self, owed: u128, at: Instant) {
        self.sent_owed = self.sent_owed.max(owed);
        self.last = Some(at);
    }
}

/// A member loop running, and how to stop it. Dropped without [`Membership::stop`] (the
/// worker itself ended), the loop is aborted and its server killed with it.
pub(super) struct Membership {
    stop: watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Membership {
    /// Tells the loop to stop (it settles what it was acknowledged and ends its server);
    /// its handle, to wait for it.
    fn stop(mut self) -> Option<tokio::task::JoinHandle<()>> {
        let _ = self.stop.send(true);
        self.handle.take()
    }

    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

impl Worker {
    /// Looks at the services on the ledger every [`SERVICES_EVERY`] until `shutdown`:
    /// subscribes where it can serve, starts a member loop where it sits, stops one where it
    /// no longer does.
    pub(super) async fn serve_services(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.services_pass().await {
                tracing::debug!(error = %e, "looking at services failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(SERVICES_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                let all: Vec<Membership> = lock(&self.members).drain().map(|(_, m)| m).collect();
                for m in all {
                    if let Some(h) = m.stop() {
                        let _ = h.await;
                    }
                }
                return;
            }
        }
    }

    async fn services_pass(self: &Arc<Self>) -> Result<(), WorkerError> {
        lock(&self.members).retain(|_, m| !m.is_finished());
        lock(&self.subscribe_refused).retain(|_, (_, at)| at.elapsed() < SUBSCRIBE_AGAIN_AFTER * 2);
        let mut seated = Vec::new();
        for id in self.client.services().await? {
            let Some(view) = self.client.service(&id).await? else {
                continue;
            };
            if view.council.contains(&self.me) && !view.status.is_ended() {
                seated.push(id);
                if !lock(&self.members).contains_key(&id) {
                    let (stop, rx) = watch::channel(false);
                    let me = Arc::clone(self);
                    let handle = tokio::spawn(async move {
                        if let Err(e) = me.member(id, rx).await {
                            tracing::warn!(service = %id, error = %e, "serving stopped");
                        }
                    });
                    tracing::info!(service = %id, "seated on a service's council: serving");
                    lock(&self.members).insert(
                        id,
                        Membership {
                            stop,
                            handle: Some(handle),
                        },
                    );
                }
                continue;
            }
            let refused_lately = lock(&self.subscribe_refused)
                .get(&id)
                .is_some_and(|(n, at)| at.elapsed() < subscribe_wait(*n));
            if self.may_serve(&view)
                && !refused_lately
                && view.subscribers.iter().all(|s| s.provider != self.me)
            {
                let price = view.spec.max_price;
                match self.send(TxKind::Subscribe { service: id, price }).await {
                    Ok(_) => {
                        lock(&self.subscribe_refused).remove(&id);
                        tracing::info!(service = %id, "subscribed to a service")
                    }
                    Err(e) => {
                        let mut refused = lock(&self.subscribe_refused);
                        let n = refused.get(&id).map_or(1, |(n, _)| n.saturating_add(1));
                        refused.insert(id, (n, Instant::now()));
                        tracing::info!(service = %id, error = %e, "cannot subscribe; asking again in {:?}", subscribe_wait(n))
                    }
                }
            }
        }
        let gone: Vec<Membership> = {
            let mut members = lock(&self.members);
            let ids: Vec<Hash> = members
                .keys()
                .copied()
                .filter(|id| !seated.contains(id))
                .collect();
            ids.into_iter()
                .filter_map(|id| members.remove(&id))
                .collect()
        };
        for m in gone {
            // It ends on its own, settling first.
            drop(m.stop());
        }
        Ok(())
    }

    /// Whether this worker offers to serve `view`: it serves services (`serve_services`), is
    /// not its requester, was not slashed on it, and meets its needs (no image or network yet).
    fn may_serve(&self, view: &ServiceView) -> bool {
        let spec = &view.spec;
        let needs = spec.requirements.software_needs();
        self.cfg.serve_services
            && view.requester != self.me
            && !view.status.is_ended()
            && !view.barred.contains(&self.me)
            && !lock(&self.given_up).contains(&view.id)
            // An image runs in a container (a worker with the container executor); a
            // service names one image at most (the ledger refuses builds per GPU maker).
            && (spec.program.image.is_none() || self.cfg.containers.is_some())
            && spec.program.vendor_images.is_empty()
            && !spec.program.network
            // A process server is held to the service's memory like a task's run.
            && (spec.program.brings_image()
                || spec.requirements.min_memory_mib == 0
                || self.cfg.policy.hold_memory)
            && spec.requirements.met_by(&needs, &self.cfg.hardware)
    }

    /// One service, served until `stop` (or the server fails, or the gateway underpays).
    async fn member(
        self: Arc<Self>,
        id: Hash,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let Some(view) = self.client.service(&id).await? else {
            return Ok(());
        };
        let dir = self.cfg.work_dir.join("services").join(id.to_string());
        let mut failed = 0;
        let mut server = loop {
            match self.start_server(&view, &dir).await {
                Ok(Ok(server)) => break server,
                // The program's own failure, the same on every member: after a few, leave
                // the service rather than try it forever.
                Ok(Err(why)) => {
                    failed += 1;
                    tracing::warn!(service = %id, tries = failed, "the service's server cannot start: {why}");
                    if failed >= MAX_START_FAILURES {
                        lock(&self.given_up).insert(id);
                        let _ = self.send(TxKind::Unsubscribe { service: id }).await;
                        return Ok(());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1 << failed)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
                // The node hands the inputs' keys over a block after the seat is drawn.
                Err(e) => {
                    tracing::debug!(service = %id, error = %e, "the server is not ready yet");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
        };
        let served = self.answer_requests(&view, &mut server, &mut stop).await;
        server.stop().await;
        // What it was acknowledged and not yet paid.
        let last = lock(&self.receipts).get(&id).cloned();
        if let Some(last) = last {
            self.settle(id, last).await;
        }
        served
    }

    /// A fresh directory for `view`'s server, its inputs pulled into place, the server
    /// started and listening: `Ok(Err(why))` when it cannot start for the service's own
    /// reasons (its inputs collide, its image cannot run, its program exits or never listens),
    /// an error when this worker or the node failed (tried again).
    async fn start_server(
        &self,
        view: &ServiceView,
        dir: &std::path::Path,
    ) -> Result<Result<Server, String>, WorkerError> {
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            super::execute::make_removable(dir);
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
        let (inputs, _) = crate::sandbox::layout(dir);
        std::fs::create_dir_all(&inputs).map_err(io)?;
        let staging = dir.join("staging");
        // The image is not an input of the run: it is loaded into the engine.
        let image = view.spec.program.image;
        let mut order: Vec<&gridwork_types::DataInput> = view
            .spec
            .data
            .iter()
            .filter(|d| Some(d.cid) != image)
            .collect();
        order.sort_by_key(|d| d.name.is_empty());
        for (n, input) in order.into_iter().enumerate() {
            let key = self.client.granted_key(&input.cid, &self.cfg.key).await?;
            let stage = staging.join(n.to_string());
            self.pull(&input.cid, &key, &view.council, &stage).await?;
            let collided = super::execute::place_input(&stage, &inputs, &input.name).map_err(io)?;
            if let Some(entry) = collided.first() {
                // As for a job: no server on part of its inputs, the same on every member.
                return Ok(Err(format!(
                    "the service's inputs land on one another in $GRIDWORK_INPUTS: `{entry}` of input {} would replace what an earlier input put there; its requester must give each input a name of its own",
                    input.cid
                )));
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        let env = crate::sandbox::TaskEnv {
            job: view.id.to_string(),
            task: 0,
            items: (0, 1),
            segment: None,
            limits: crate::cgroup::RunLimits::of(&view.spec.requirements),
        };
        let started = match (&image, &self.cfg.containers) {
            (Some(cid), Some(containers)) => {
                if let crate::container::Readiness::Unusable(why) =
                    self.ensure_image(view.id, cid, &view.council).await?
                {
                    return Ok(Err(format!("the service's image {cid} cannot run: {why}")));
                }
                Server::start_container(
                    containers,
                    cid,
                    &view.spec.program,
                    &view.spec.requirements,
                    dir,
                    &env,
                )
                .await
            }
            _ => Server::start(&view.spec.program, dir, &env, self.cfg.launcher.as_ref()),
        };
        let mut server = match started {
            Ok(server) => server,
            Err(e) => return Ok(Err(e.to_string())),
        };
        Ok(match server.ready(SERVER_START).await {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop().await;
                Err(e.to_string())
            }
        })
    }

    /// Fetches requests from the gateway and answers them until `stop`.
    async fn answer_requests(
        &self,
        first: &ServiceView,
        server: &mut Server,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let id = first.id;
        let spec = &first.spec;
        let http = gateway_client();
        let chain_id = self.client.chain().await?.chain_id;
        let my_price = first
            .subscribers
            .iter()
            .find(|s| s.provider == self.me)
            .map_or(spec.max_price, |s| s.price);
        let mut view = first.clone();
        let mut read_at = Instant::now();
        // What this member gave, as it counts it: what a receipt must acknowledge.
        let mut given: (u64, u64, u128) = {
            let last = lock(&self.receipts).get(&id).map(|r| r.receipt.clone());
            last.map_or((0, 0, 0), |r| (r.responses, r.units, r.owed.0))
        };
        // What the ledger paid this member, and the responses of the last receipt it took.
        let mine = |v: &ServiceView| {
            v.members
                .iter()
                .find(|m| m.provider == self.me)
                .map(|m| (m.paid.0, m.responses))
        };
        let (mut settled, mut recorded) = mine(&view).unwrap_or((0, 0));
        let within = Duration::from_millis(
            spec.max_response_ms
                .saturating_add(spec.response_ms_per_kib.saturating_mul(1024)),
        );
        let mut settling = Settling::new(settled);
        let mut judged: std::collections::VecDeque<Hash> = std::collections::VecDeque::new();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if read_at.elapsed() >= Duration::from_secs(2) {
                // A node that does not answer for a moment (a restart) does not end the
                // member: it goes on with what it last read.
                match self.client.service(&id).await {
                    Ok(Some(v)) => {
                        (settled, recorded) = mine(&v).unwrap_or((settled, recorded));
                        view = v;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(service = %id, error = %e, "cannot read the service")
                    }
                }
                read_at = Instant::now();
            }
            // On credit up to max_unsettled: past it, wait for the ledger to pay. A settlement
            // sent may be lost (a node that restarts forgets its mempool): while the ledger has
            // not paid, the latest receipt goes again now and then (the ledger pays only what a
            // receipt adds, so one paid already pays nothing twice). One the ledger took (its
            // responses recorded) but could pay only in part (the escrow short) is not sent
            // again: its fee would buy nothing until the requester funds the service.
            if given.2.saturating_sub(settled) >= spec.max_unsettled.0 {
                let latest = lock(&self.receipts).get(&id).cloned();
                if let Some(receipt) =
                    latest.filter(|r| r.receipt.owed.0 > settled && r.receipt.responses > recorded)
                {
                    let now = Instant::now();
                    if settling.while_waiting(receipt.receipt.owed.0, now) {
                        settling.sent(receipt.receipt.owed.0, now);
                        self.settle(id, receipt).await;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(PAID_POLL) => {}
                    _ = stop.changed() => {}
                }
                read_at = Instant::now() - Duration::from_secs(2);
                continue;
            }
            if view.gateway_url.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                read_at = Instant::now() - Duration::from_secs(2);
                continue;
            }
            let base = view.gateway_url.trim_end_matches('/').to_string();
            let path = format!("/m/{id}/next");
            let fetched = tokio::select! {
                f = self.gateway_get(&http, &base, &path, &spec.gateway, spec.council_size) => f,
                _ = stop.changed() => return Ok(()),
            };
            let relay = match fetched {
                Ok(Some(Fetched::Request(relay))) => relay,
                Ok(Some(Fetched::Judge(task))) => {
                    if judged.contains(&task.request) {
                        continue;
                    }
                    if judged.len() >= JUDGED_KEPT {
                        judged.pop_front();
                    }
                    judged.push_back(task.request);
                    // Comparing long answers takes time: not on the worker's async threads.
                    let judgement = {
                        let (e, chain, key) = (
                            spec.equivalence.clone(),
                            chain_id.clone(),
                            self.cfg.key.clone(),
                        );
                        tokio::task::spawn_blocking(move || {
                            judge_answers(&task, &e, id, &chain, &key)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                    };
                    match judgement {
                        Ok(signed) => {
                            let path = format!("/m/{id}/judgements");
                            if let Err(e) = self
                                .gateway_judgement(&http, &base, &path, &spec.gateway, &signed)
                                .await
                            {
                                tracing::warn!(service = %id, error = %e, "the gateway did not take the judgement");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(service = %id, error = %e, "answers to judge that do not check out; not judged")
                        }
                    }
                    continue;
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(service = %id, error = %e, "cannot fetch from the gateway");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (seq, claimed, request) = relay;
            let ct = request.content_type.clone().unwrap_or_default();
            let hash = request_hash(&id, seq, &request.method, &request.path, &ct, &request.body);
            if hash != claimed {
                tracing::warn!(service = %id, seq, "the gateway named another request than it sent; not answered");
                continue;
            }
            // Each request once, in order: a server whose answers differ run to run (a
            // model's floats) would otherwise sign two answers to a request sent again, and
            // two answers to one request are slashed.
            if let Err(last) = self.answered.claim(&id, seq) {
                tracing::warn!(service = %id, seq, last, "the gateway sent a request again, or one older than the last answered; not answered");
                continue;
            }
            let served = match server.send(&request, within).await {
                Ok(served) => served,
                // A server that ended answers nothing more: the member starts it again.
                Err(e @ crate::serve::ServeError::Exited { .. }) => {
                    return Err(WorkerError::Io {
                        path: format!("service {id}"),
                        source: std::io::Error::other(e.to_string()),
                    })
                }
                Err(e) => {
                    tracing::warn!(service = %id, seq, error = %e, "the server did not answer");
                    continue;
                }
            };
            let signing = Signing {
                chain_id: chain_id.clone(),
                key: self.cfg.key.clone(),
                service: id,
                request: hash,
                lie: self.cfg.behavior.lies_to_users(),
            };
            let sent = match served {
                Served::Stream(streaming) => {
                    let path = format!("/m/{id}/streams/{seq}");
                    self.gateway_stream(
                        &http,
                        &base,
                        &path,
                        &spec.gateway,
                        streaming,
                        signing,
                        within,
                    )
                    .await
                }
                Served::Whole(answer) => {
                    let path = format!("/m/{id}/responses/{seq}");
                    self.whole_response(&http, &base, &path, &spec.gateway, answer, signing)
                        .await
                }
            };
            let (receipt, units) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    tracing::warn!(service = %id, seq, error = %e, "the gateway did not take the response");
                    continue;
                }
            };
            given.0 += 1;
            given.1 = given.1.saturating_add(units);
            given.2 = given
                .2
                .saturating_add(my_price.of(units).map_or(u128::MAX, |a| a.0));
            let r = &receipt.receipt;
            if receipt.verify(&chain_id, &spec.gateway).is_err()
                || r.service != id
                || r.provider != self.me
                || r.responses < given.0
                || r.owed.0 < given.2
            {
                tracing::warn!(service = %id, "the gateway's receipt does not acknowledge what this member served; leaving the service");
                let _ = self.send(TxKind::Unsubscribe { service: id }).await;
                return Ok(());
            }
            lock(&self.receipts).insert(id, receipt.clone());
            if settling.while_serving(r.owed.0, settled, spec.max_unsettled.0) {
                settling.sent(r.owed.0, Instant::now());
                self.settle(id, receipt).await;
            }
        }
    }

    /// Signs `answer` (its end made up by a lying member) and sends it to the gateway whole:
    /// its receipt, and the units it gave.
    async fn whole_response(
        &self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        gateway: &gridwork_types::PublicKey,
        mut answer: crate::serve::Answer,
        signing: Signing,
    ) -> Result<(SignedReceipt, u64), String> {
        if signing.lie {
            let mut body = answer.body.to_vec();
            body.extend_from_slice(MADE_UP);
            answer.body = body.into();
        }
        let units = answer.body.len() as u64;
        let content_type = answer.content_type.as_deref().unwrap_or("");
        let signed = StreamResponse {
            service: signing.service,
            request: signing.request,
            response: response_hash(answer.status, content_type, &answer.body),
            units,
        }
        .sign(&signing.chain_id, &signing.key);
        let receipt = self
            .gateway_post(http, base, path, gateway, &answer, &signed.to_bytes())
            .await?;
        Ok((receipt, units))
    }

    /// Streams the server's answer to the gateway as it comes ([`StreamFrame`]s), signed
    /// whole at its end: the member's receipt, and the units it gave. A server that fails part
    /// way breaks the stream off (the gateway gives it up).
    #[allow(clippy::too_many_arguments)]
    async fn gateway_stream(
        &self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        gateway: &gridwork_types::PublicKey,
        streaming: Streaming,
        signing: Signing,
        within: Duration,
    ) -> Result<(SignedReceipt, u64), String> {
        let sig = self.gateway_signature(gateway, "POST", path, b"");
        let units = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let status = streaming.status;
        let content_type = streaming.content_type.clone();
        let counted = units.clone();
        let hasher = ResponseHasher::new(status, content_type.as_deref().unwrap_or(""));
        let frames =
            futures_util::stream::unfold(Some((streaming, hasher, signing)), move |state| {
                let counted = counted.clone();
                async move {
                    let (mut streaming, mut hasher, signing) = state?;
                    match streaming.piece().await {
                        Ok(Some(piece)) => {
                            hasher.update(&piece);
                            Some((
                                Ok(StreamFrame::data(&piece)),
                                Some((streaming, hasher, signing)),
                            ))
                        }
                        Ok(None) => {
                            let mut last = Vec::new();
                            if signing.lie {
                                hasher.update(MADE_UP);
                                last = StreamFrame::data(MADE_UP);
                            }
                            let signed = StreamResponse {
                                service: signing.service,
                                request: signing.request,
                                response: hasher.finish(),
                                units: hasher.units(),
                            }
                            .sign(&signing.chain_id, &signing.key);
                            counted.store(hasher.units(), std::sync::atomic::Ordering::SeqCst);
                            last.extend(StreamFrame::end(&signed));
                            Some((Ok(last), None))
                        }
                        Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                    }
                }
            });
        let request = http
            .post(format!("{base}{path}"))
            .header(gridwork_api::SIGNATURE_HEADER, sig)
            .header("gridwork-status", status.to_string())
            .timeout(within + Duration::from_secs(30))
            .body(reqwest::Body::wrap_stream(frames));
        let receipt = receipt_for(request, content_type.as_deref()).await?;
        Ok((receipt, units.load(std::sync::atomic::Ordering::SeqCst)))
    }

    /// Sends `receipt` to the ledger to be paid (see [`Settling`] for when).
    async fn settle(&self, id: Hash, receipt: SignedReceipt) {
        let owed = receipt.receipt.owed;
        match self
            .send(TxKind::SettleStream {
                receipts: vec![receipt],
            })
            .await
        {
            Ok(_) => tracing::debug!(service = %id, %owed, "settling"),
            Err(e) => tracing::warn!(service = %id, error = %e, "cannot settle"),
        }
    }

    /// `POST` a judgement to the gateway, signed.
    async fn gateway_judgement(
        &self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        gateway: &gridwork_types::PublicKey,
        judgement: &SignedJudgement,
    ) -> Result<(), String> {
        let body = judgement.to_bytes();
        let sig = self.gateway_signature(gateway, "POST", path, &body);
        let response = http
            .post(format!("{base}{path}"))
            .header(gridwork_api::SIGNATURE_HEADER, sig)
            .timeout(Duration::from_secs(30))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(format!("{status}: {}", text.trim()))
    }

    /// `GET` from the gateway, signed: the next request or answers to judge, or none within
    /// the wait.
    async fn gateway_get(
        &self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        gateway: &gridwork_types::PublicKey,
        council: u8,
    ) -> Result<Option<Fetched>, String> {
        // A judge task holds at most one answer a member, each at most a streamed answer's
        // largest size (16 MiB), and its framing.
        let most = u64::from(council) * (16 << 20) + (1 << 20);
        let url = format!("{base}{path}?wait_ms={FETCH_WAIT_MS}");
        let sig = self.gateway_signature(gateway, "GET", path, b"");
        let response = http
            .get(&url)
            .header(gridwork_api::SIGNATURE_HEADER, sig)
            .timeout(Duration::from_millis(FETCH_WAIT_MS + 10_000))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {}", text.trim()));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if header("gridwork-judge").is_some() {
            // A gateway's answers to judge are bounded: one a council seat, each at most a
            // streamed answer's size; more is refused unread.
            if response.content_length().is_some_and(|n| n > most) {
                return Err("answers to judge larger than any council gives; not read".into());
            }
            let mut response = response;
            let mut body = Vec::new();
            while let Some(piece) = response.chunk().await.map_err(|e| e.to_string())? {
                if body.len() as u64 + piece.len() as u64 > most {
                    return Err("answers to judge larger than any council gives; not read".into());
                }
                body.extend_from_slice(&piece);
            }
            let task = JudgeTask::from_bytes(&body)
                .map_err(|e| format!("answers to judge that are no JudgeTask: {e}"))?;
            return Ok(Some(Fetched::Judge(task)));
        }
        let seq = header("gridwork-seq")
            .and_then(|s| s.parse().ok())
            .ok_or("no gridwork-seq")?;
        let claimed: Hash = header("gridwork-request")
            .and_then(|s| s.parse().ok())
            .ok_or("no gridwork-request")?;
        let method = header("gridwork-method").ok_or("no gridwork-method")?;
        let path = header("gridwork-path").ok_or("no gridwork-path")?;
        let content_type = header("gridwork-content-type").filter(|c| !c.is_empty());
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok(Some(Fetched::Request((
            seq,
            claimed,
            Relayed {
                method,
                path,
                content_type,
                body,
            },
        ))))
    }

    /// `POST` a response to the gateway, signed: its receipt.
    async fn gateway_post(
        &self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        gateway: &gridwork_types::PublicKey,
        answer: &crate::serve::Answer,
        signed: &[u8],
    ) -> Result<SignedReceipt, String> {
        let sig = self.gateway_signature(gateway, "POST", path, &answer.body);
        let request = http
            .post(format!("{base}{path}"))
            .header(gridwork_api::SIGNATURE_HEADER, sig)
            .header("gridwork-status", answer.status.to_string())
            .header("gridwork-response", hex::encode(signed))
            .timeout(Duration::from_secs(30))
            .body(answer.body.clone());
        receipt_for(request, answer.content_type.as_deref()).await
    }

    fn gateway_signature(
        &self,
        gateway: &gridwork_types::PublicKey,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        gridwork_api::signature_header(&self.cfg.key, gateway, method, path, now, &Hash::of(body))
    }
}

/// The last request a member answered for each service (its sequence number), kept on disk
/// so a restart does not forget it: the member answers only requests after it. One for the
/// worker, so two loops of one service (an old one ending as a new one starts) share it and
/// the mark never goes down. Written before the answer is sent; a member that cannot write it
/// answers nothing.
pub(super) struct Answered {
    dir: std::path::PathBuf,
    marks: std::sync::Mutex<HashMap<Hash, Option<u64>>>,
}

impl Answered {
    pub(super) fn open(work_dir: &std::path::Path) -> Answered {
        Answered {
            dir: work_dir.join("answered"),
            marks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes request `seq` of `service` to answer, or the last answered if `seq` is not after
    /// it (or cannot be recorded).
    fn claim(&self, service: &Hash, seq: u64) -> Result<(), u64> {
        let path = self.dir.join(service.to_string());
        let mut marks = lock(&self.marks);
        let mark = marks.entry(*service).or_insert_with(|| {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        let last = mark.unwrap_or(0);
        if mark.is_some_and(|l| seq <= l) {
            return Err(last);
        }
        // A sequence number from a clock more than a day ahead is refused, not recorded: a
        // gateway cannot lock its members out of the service for good with one.
        let ahead = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_add(24 * 60 * 60 * 1000)
            .saturating_mul(1 << 20);
        if seq > ahead {
            return Err(last);
        }
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, seq.to_string())?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the request answered");
            return Err(last);
        }
        *mark = Some(seq);
        Ok(())
    }
}

/// What a member fetched from its gateway.
enum Fetched {
    /// A request: its sequence number, the hash the gateway names, and what it relays.
    Request((u64, Hash, Relayed)),
    /// Answers to judge.
    Judge(JudgeTask),
}

/// How many requests a member remembers judging: the gateway's asking again is ignored.
const JUDGED_KEPT: usize = 1024;

/// A member's judgement of the answers `task` shows it, under equivalence `e`: which it finds
/// equivalent to its own. Refused unless its own signed answer is among them and every answer
/// is a member's, signed on this chain, to that request of this service, over the body shown.
pub(crate) fn judge_answers(
    task: &JudgeTask,
    e: &gridwork_types::Equivalence,
    service: Hash,
    chain_id: &str,
    key: &Keypair,
) -> Result<SignedJudgement, String> {
    if task.answers.len() < 2 || task.answers.len() > MAX_JUDGED {
        return Err(format!(
            "{} answers: 2 to {MAX_JUDGED} are judged",
            task.answers.len()
        ));
    }
    for a in &task.answers {
        let r = &a.signed.response;
        if r.service != service
            || r.request != task.request
            || r.response != response_hash(a.status, &a.content_type, &a.body)
            || r.units != a.body.len() as u64
            || a.signed.verify(chain_id).is_err()
        {
            return Err(format!(
                "the answer of {} is not what it signed for this request",
                a.signed.provider.address()
            ));
        }
    }
    let own = task
        .answers
        .iter()
        .find(|a| a.signed.provider == key.public())
        .ok_or("this member's own answer is not among them")?;
    let mine = own.signed.response.response;
    let (mut agree, mut differ) = (Vec::new(), Vec::new());
    for a in &task.answers {
        let h = a.signed.response.response;
        if h == mine || agree.contains(&h) || differ.contains(&h) {
            continue;
        }
        if gridwork_verify::answers_equivalent(e, own.into(), a.into()).is_same() {
            agree.push(h);
        } else {
            differ.push(h);
        }
    }
    Ok(StreamJudgement {
        service,
        request: task.request,
        own: mine,
        agree,
        differ,
    }
    .sign(chain_id, key))
}

/// The HTTP client a member reaches its gateway with. The gateway is the requester's, which
/// also writes the program whose answers the member sends: a redirect it answered with would
/// have the member send the same request, signed and with the program's body, wherever it
/// names, a service on the member's own machine among them. Redirects are not followed.
pub(crate) fn gateway_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends a member's answer (of `content_type`) to the gateway: the receipt it answers with.
async fn receipt_for(
    mut request: reqwest::RequestBuilder,
    content_type: Option<&str>,
) -> Result<SignedReceipt, String> {
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", text.trim()));
    }
    let bytes = hex::decode(text.trim()).map_err(|e| e.to_string())?;
    SignedReceipt::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// What a lying member (a test's) adds to the end of each answer.
const MADE_UP: &[u8] = b" (made up)";

/// What a member signs a response with.
struct Signing {
    chain_id: String,
    key: Keypair,
    service: Hash,
    request: Hash,
    /// A lying member (a test's) makes up the end of what it streams.
    lie: bool,
}

/// The latest receipt of each service this worker served, by service.
pub(super) type Receipts = HashMap<Hash, SignedReceipt>;

#[cfg(test)]
mod tests {
    use super::{Settling, RESETTLE_AFTER};
    use std::time::{Duration, Instant};

    /// Serving on a credit of 100: a settlement once the unsent receipts add 50, never one a
    /// response while the ledger's pay is not read yet.
    /// `RedirectingGateway`: a requester's gateway answers a member's response with a
    /// redirect to a service on the member's own machine (here a listener standing in for a
    /// local daemon). The member's client does not follow it: the daemon hears nothing.
    #[tokio::test]
    async fn a_member_does_not_follow_its_gateways_redirects() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let daemon = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let daemon_url = format!("http://{}/containers/create", daemon.local_addr().unwrap());
        let heard = Arc::new(AtomicUsize::new(0));
        let counted = heard.clone();
        tokio::spawn(async move {
            while let Ok((_, _)) = daemon.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_url = format!("http://{}/m/x/responses/0", gateway.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/m/x/responses/0",
            axum::routing::post(move || {
                let to = daemon_url.clone();
                async move {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [(axum::http::header::LOCATION, to)],
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(gateway, app).await });
        let r = super::gateway_client()
            .post(&gateway_url)
            .body("{\"Image\": \"busybox\", \"HostConfig\": {\"Privileged\": true}}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(heard.load(Ordering::SeqCst), 0, "the redirect was followed");
    }

    /// A refused subscription is asked again after a second, then two, four, ... at most
    /// half a minute: a full list of more stake does not hear from it every second.
    #[test]
    fn a_refused_subscription_is_asked_again_less_and_less_often() {
        let waits: Vec<u64> = (1..=8)
            .map(|n| super::subscribe_wait(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            super::subscribe_wait(u32::MAX),
            super::SUBSCRIBE_AGAIN_AFTER
        );
    }

    #[test]
    fn a_member_settles_each_half_of_its_credit_once() {
        let mut s = Settling::new(0);
        let t = Instant::now();
        assert!(!s.while_serving(49, 0, 100));
        assert!(s.while_serving(50, 0, 100));
        s.sent(50, t);
        // Paid nothing yet as far as it knows: the next goes at 100, not at 51.
        assert!(!s.while_serving(51, 0, 100));
        assert!(!s.while_serving(99, 0, 100));
        assert!(s.while_serving(100, 0, 100));
        s.sent(100, t);
        // The ledger paid 100; the next half from there.
        assert!(!s.while_serving(149, 100, 100));
        assert!(s.while_serving(150, 100, 100));
    }

    /// Waiting to be paid: a newer receipt goes at once, the one sent already only after the
    /// resend time (it may have been lost with a node that restarted).
    #[test]
    fn a_member_waiting_to_be_paid_sends_a_newer_receipt_at_once_and_the_same_one_later() {
        let mut s = Settling::new(0);
        let t = Instant::now();
        assert!(s.while_waiting(100, t), "nothing sent yet");
        s.sent(100, t);
        assert!(!s.while_waiting(100, t + Duration::from_millis(200)));
        assert!(s.while_waiting(101, t + Duration::from_millis(200)));
        assert!(s.while_waiting(100, t + RESETTLE_AFTER));
    }

    /// An honest judge of answers under a tolerance: equivalent answers agree, one beyond
    /// it differs, each hash named once. `ForgingGateway`: a body its member never signed, or
    /// answers without the judge's own, are refused, never judged.
    #[test]
    fn a_member_judges_only_answers_that_check_out_with_its_own_among_them() {
        use gridwork_types::{
            response_hash, Equivalence, Hash, JudgeTask, JudgedAnswer, Keypair, StreamResponse,
        };
        let e = Equivalence::NumericTolerance {
            abs_ppb: 0,
            rel_ppb: 10_000,
        };
        let (service, request) = (Hash([1; 32]), Hash([2; 32]));
        let keys: Vec<Keypair> = (1..=4).map(|i| Keypair::from_seed([i; 32])).collect();
        let answer = |k: &Keypair, body: &str| {
            let body = body.as_bytes().to_vec();
            let signed = StreamResponse {
                service,
                request,
                response: response_hash(200, "application/json", &body),
                units: body.len() as u64,
            }
            .sign("test", k);
            JudgedAnswer {
                status: 200,
                content_type: "application/json".into(),
                body,
                signed,
            }
        };
        let answers = vec![
            answer(&keys[0], "[0.5]"),
            answer(&keys[1], "[0.5000001]"),
            answer(&keys[2], "[0.9]"),
            answer(&keys[3], "[0.9]"),
        ];
        let task = JudgeTask {
            request,
            answers: answers.clone(),
        };
        let signed = super::judge_answers(&task, &e, service, "test", &keys[0]).unwrap();
        assert!(signed.verify("test").is_ok());
        let j = &signed.judgement;
        assert_eq!(j.own, answers[0].signed.response.response);
        assert_eq!(j.agree, vec![answers[1].signed.response.response]);
        assert_eq!(j.differ, vec![answers[2].signed.response.response]);
        // The body shown is not the one its member signed.
        let mut forged = task.clone();
        forged.answers[2].body = b"[0.5]".to_vec();
        let e2 = super::judge_answers(&forged, &e, service, "test", &keys[0]).unwrap_err();
        assert!(e2.contains("not what it signed"), "{e2}");
        // Of another service, or another chain.
        assert!(super::judge_answers(&task, &e, Hash([9; 32]), "test", &keys[0]).is_err());
        assert!(super::judge_answers(&task, &e, service, "other", &keys[0]).is_err());
        // Without the judge's own answer.
        let stranger = Keypair::from_seed([77; 32]);
        let e3 = super::judge_answers(&task, &e, service, "test", &stranger).unwrap_err();
        assert!(e3.contains("own answer"), "{e3}");
    }

    /// `ResendingGateway`: a gateway that sends a request again (or an older one) would have
    /// a member whose server answers differently run to run (a model's floats) sign two
    /// answers to one request, which is slashed. A member answers each request once and in
    /// order, and remembers it across restarts.
    #[test]
    fn a_member_answers_each_request_once_and_in_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let service = gridwork_types::Hash([3; 32]);
        let answered = super::Answered::open(dir.path());
        assert_eq!(answered.claim(&service, 5), Ok(()));
        assert_eq!(
            answered.claim(&service, 5),
            Err(5),
            "the same request again"
        );
        assert_eq!(answered.claim(&service, 4), Err(5), "an older one");
        // A second loop of the service (one ending as another starts) shares the mark: it
        // never goes down.
        let beside = &answered;
        assert_eq!(beside.claim(&service, 7), Ok(()));
        assert_eq!(answered.claim(&service, 6), Err(7));
        // A sequence number from a clock far ahead is refused and not recorded.
        assert_eq!(answered.claim(&service, u64::MAX - 1), Err(7));
        assert_eq!(answered.claim(&service, 9), Ok(()));
        // Restarted: it still remembers.
        let again = super::Answered::open(dir.path());
        assert_eq!(again.claim(&service, 9), Err(9));
        assert_eq!(again.claim(&service, 10), Ok(()));
        // Another service is counted apart.
        assert_eq!(again.claim(&gridwork_types::Hash([4; 32]), 1), Ok(()));
    }
}
