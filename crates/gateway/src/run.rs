//! The gateway beside the ledger: it keeps its council as the ledger holds it, says where it
//! listens (`AnnounceGateway`), closes requests whose time ran out, drops members that let it
//! run out (`DropMember`) and sends the evidence of answers that differ (`DisputeResponses`).

use std::sync::Arc;
use std::time::Duration;

use gridwork_api::ServiceStatus;
use gridwork_client::Client;
use gridwork_types::{Amount, Keypair, TxKind};
use tokio::sync::watch;

use crate::dispatch::{Council, Dispatcher};

/// How often the gateway reads its council from the ledger.
pub const COUNCIL_EVERY: Duration = Duration::from_millis(500);

/// Reads the service from the node and gives the dispatcher its council. An error when the
/// node cannot be reached or the service is gone.
pub async fn refresh_council(client: &Client, d: &Dispatcher) -> Result<(), String> {
    let view = client
        .service(&d.service())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("service {} is not on the ledger", d.service()))?;
    let members = view
        .council
        .iter()
        .filter_map(|a| {
            view.subscribers
                .iter()
                .find(|s| s.provider == *a)
                .map(|s| (*a, s.price))
        })
        .collect();
    let up = match view.status {
        ServiceStatus::Up => Ok(()),
        ServiceStatus::Forming => Err(format!(
            "it is forming: {} of {} council seats taken",
            view.council.len(),
            view.spec.council_size
        )),
        ServiceStatus::Down if view.escrow < view.reserve => Err(format!(
            "escrow low ({} GRID, below {} GRID); the requester must fund it",
            view.escrow, view.reserve
        )),
        ServiceStatus::Down => Err(format!(
            "its council has {} of {} members",
            view.council.len(),
            view.spec.council_size
        )),
        ServiceStatus::Closing | ServiceStatus::Closed => Err("it is closed".into()),
    };
    d.set_council(Council { members, up });
    Ok(())
}

/// The gateway key and the node it sends its transactions to, one at a time: the gateways of
/// several services may share a key (a node's, `gridwork node --gateway`), and two sent at
/// once would take the same nonce, the second refused (a review found a dispute lost so).
pub struct GatewayKey {
    client: Client,
    key: Keypair,
    sending: tokio::sync::Mutex<()>,
}

impl GatewayKey {
    /// `key`, sending through `client`.
    pub fn new(client: Client, key: Keypair) -> Arc<GatewayKey> {
        Arc::new(GatewayKey {
            client,
            key,
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// The node's client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Signs and sends `kind`, after any other of this key's transactions being sent.
    pub async fn send(
        &self,
        kind: TxKind,
    ) -> Result<gridwork_types::Hash, gridwork_client::ClientError> {
        let _turn = self.sending.lock().await;
        self.client
            .sign_and_send(&self.key, Amount::ZERO, kind)
            .await
    }
}

/// Says on the ledger that the gateway listens at `url` (signed by the gateway key).
pub async fn announce(key: &GatewayKey, d: &Dispatcher, url: &str) -> Result<(), String> {
    let hash = key
        .send(TxKind::AnnounceGateway {
            service: d.service(),
            url: url.to_string(),
        })
        .await
        .map_err(|e| e.to_string())?;
    key.client
        .wait_committed(&hash, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Until `stop`: the council from the ledger, requests swept, late members dropped, evidence
/// disputed (evidence whose dispute could not be sent goes again). Failures are logged and
/// tried again.
pub async fn keep(key: Arc<GatewayKey>, d: Arc<Dispatcher>, mut stop: watch::Receiver<bool>) {
    let client = key.client.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_council = tokio::time::Instant::now() - COUNCIL_EVERY;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
        }
        d.sweep();
        if last_council.elapsed() >= COUNCIL_EVERY {
            last_council = tokio::time::Instant::now();
            if let Err(e) = refresh_council(&client, &d).await {
                tracing::warn!(error = %e, "cannot read the service's council");
            }
        }
        for member in d.take_late() {
            let kind = TxKind::DropMember {
                service: d.service(),
                member,
            };
            match key.send(kind).await {
                Ok(_) => tracing::info!(%member, "dropped a member that did not answer in time"),
                Err(e) => tracing::warn!(%member, error = %e, "cannot drop a late member"),
            }
        }
        for evidence in d.take_evidence() {
            let kind = evidence.clone().into_tx(d.service());
            match key.send(kind).await {
                Ok(hash) => tracing::info!(%hash, "sent the evidence of responses that differ"),
                // The ledger's refusal (a dispute decided already) is final; the node's
                // moment (unreachable, its mempool full, a nonce being sent) is not.
                Err(e)
                    if matches!(
                        &e,
                        gridwork_client::ClientError::Api {
                            status: 400 | 422,
                            ..
                        }
                    ) =>
                {
                    tracing::warn!(error = %e, "the ledger refused a dispute")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send a dispute now; it goes again");
                    d.return_evidence(evidence);
                }
            }
        }
    }
}
