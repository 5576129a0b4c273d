//! Where a tree's chunks may be had peer to peer, as the ledger says: one resolver for the
//! CLI's pulls and the worker's.

use gridwork_types::{Address, PeerAddr};

use crate::{Client, ClientError};

/// The peer endpoints that may hold a tree.
#[derive(Debug, Clone, Default)]
pub struct AnnouncedPeers {
    /// The node's own (`gridwork node --p2p-listen`), if it serves one.
    pub node: Option<PeerAddr>,
    /// Providers' workers that announced one (`AnnouncePeer`).
    pub holders: Vec<(Address, PeerAddr)>,
}

impl AnnouncedPeers {
    /// The node's first, then the holders', each with a label for reports.
    pub fn labelled(self) -> Vec<(String, PeerAddr)> {
        self.node
            .map(|peer| ("node peer to peer".to_string(), peer))
            .into_iter()
            .chain(
                self.holders
                    .into_iter()
                    .map(|(who, peer)| (format!("peer {who}"), peer)),
            )
            .collect()
    }
}

/// The node's endpoint and those of `holders` (each once, none of `skip`: a worker leaves
/// itself out). A holder that announced nothing is left out; a lookup the node fails is an
/// error.
pub async fn announced_peers(
    client: &Client,
    holders: &[Address],
    skip: &[Address],
) -> Result<AnnouncedPeers, ClientError> {
    let node = client.chain().await?.node_peer;
    let mut seen: Vec<Address> = skip.to_vec();
    let mut found = Vec::new();
    for holder in holders {
        if seen.contains(holder) {
            continue;
        }
        seen.push(*holder);
        if let Some(peer) = client.provider(holder).await?.and_then(|p| p.peer) {
            found.push((*holder, peer));
        }
    }
    Ok(AnnouncedPeers {
        node,
        holders: found,
    })
}
