//! The worker's peer endpoint and where it pulls from: the node and the providers that
//! announced an endpoint.

use super::*;

impl Worker {
    /// Binds the peer endpoint (if configured) and announces it on the ledger when the
    /// provider record does not already say the same.
    pub(super) async fn start_peer(&self) -> Result<(), WorkerError> {
        let Some(p2p) = &self.cfg.p2p else {
            return Ok(());
        };
        let peer = self
            .peer
            .get_or_try_init(|| {
                Peer::bind(
                    transport_secret(&self.cfg.key),
                    p2p.listen,
                    Some(self.chunks.clone()),
                )
            })
            .await?;
        let announcement = peer.announcement(&p2p.announce);
        if announcement.addrs.is_empty() {
            tracing::warn!(listen = %p2p.listen, "listening for peers on an unspecified address with nothing to announce; pass the address other workers reach this one at");
            return Ok(());
        }
        let recorded = self.client.provider(&self.me).await?.and_then(|p| p.peer);
        if recorded.as_ref() != Some(&announcement) {
            let h = self
                .send(TxKind::AnnouncePeer {
                    peer: announcement.clone(),
                })
                .await?;
            self.client
                .wait_committed(&h, Duration::from_secs(60))
                .await?;
        }
        tracing::info!(endpoint = %announcement.endpoint, addrs = ?announcement.addrs, "serving chunks to peers");
        Ok(())
    }

    /// Peer-to-peer sources for a tree: the node's endpoint if it serves one, then each of
    /// the providers `holders` (not this worker) likely to hold it that serves peer to peer.
    pub(super) async fn peer_sources(&self, holders: &[Address]) -> Vec<PeerSource> {
        let Some(peer) = self.peer.get() else {
            return Vec::new();
        };
        // The node is a source in any case: a lookup that fails leaves only it.
        let announced = announced_peers(&self.client, holders, &[self.me])
            .await
            .unwrap_or_default();
        announced
            .labelled()
            .into_iter()
            .filter_map(|(label, addr)| peer.source(&addr, label))
            .collect()
    }

    /// Pulls tree `cid` from the node and from `holders` that serve peer to peer.
    pub(super) async fn pull(
        &self,
        cid: &Hash,
        key: &DataKey,
        holders: &[Address],
        dest: &std::path::Path,
    ) -> Result<(), WorkerError> {
        let peers = self.peer_sources(holders).await;
        let mut sources: Vec<&dyn ChunkSource> = vec![&self.client];
        sources.extend(peers.iter().map(|p| p as &dyn ChunkSource));
        let report = pull_tree_from(&sources, cid, key, &self.chunks, dest, &transfer()).await?;
        let from_peers: u64 = report
            .sources
            .iter()
            .filter(|s| s.source.starts_with("peer "))
            .map(|s| s.chunks)
            .sum();
        self.peer_chunks
            .fetch_add(from_peers, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%cid, ?report.sources, "pulled");
        let mut pulls = lock(&self.pulls);
        if pulls.len() == 64 {
            pulls.remove(0);
        }
        pulls.push((*cid, report.sources));
        Ok(())
    }
}
