//! Data keys: the grants of a tree, finding the one that opens it, sharing it with another key.

use gridwork_api::{KeyGrant, KeyGrants, KEY_PROOF_HEADER};
use gridwork_transfer::{proof_lock, unwrap_key, wrap_key, DataKey};
use gridwork_types::{Hash, Keypair, PublicKey};

use crate::client::{Client, ClientError};

use super::DataError;

impl Client {
    /// The key grants of a tree.
    pub async fn key_grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, ClientError> {
        let url = format!("{}/v1/trees/{cid}/keys", self.base_url());
        let grants: KeyGrants = self.send_json(self.http().get(&url), &url).await?;
        Ok(grants.keys)
    }

    /// The data key of tree `cid` granted to `me`. Every grant to `me` is tried; where the
    /// node shows the tree's pin lock, only a key that opens it is taken, so a wrong key some
    /// holder granted `me` (by mistake or to make `me` fail) is passed over.
    pub async fn granted_key(&self, cid: &Hash, me: &Keypair) -> Result<DataKey, DataError> {
        let grants = self.key_grants(cid).await?;
        let keys: Vec<DataKey> = grants
            .iter()
            .filter(|g| g.recipient == me.address())
            .filter_map(|g| unwrap_key(g, me))
            .collect();
        if keys.is_empty() {
            return Err(DataError::NoGrant {
                cid: *cid,
                address: me.address(),
            });
        }
        let lock = self.pin_view(cid).await?.and_then(|pin| pin.lock);
        let Some(lock) = lock else {
            // Nothing to check against (an expired pin, or one of the oldest format).
            return Ok(keys[0].clone());
        };
        let node = self.node_key().await?;
        keys.into_iter()
            .find(|key| proof_lock(&key.holder_proof(cid, &node)) == lock)
            .ok_or(DataError::WrongKeyGranted {
                cid: *cid,
                address: me.address(),
            })
    }

    /// Lets `recipient` decrypt tree `cid` (whose data key is `key`).
    pub async fn share_key(
        &self,
        cid: &Hash,
        key: &DataKey,
        recipient: &PublicKey,
    ) -> Result<(), ClientError> {
        self.add_key_grant(cid, key, &wrap_key(key, recipient))
            .await
    }

    /// The proof for this node that the client holds `key`, the data key of tree `cid`.
    pub(super) async fn holder_proof(
        &self,
        key: &DataKey,
        cid: &Hash,
    ) -> Result<Hash, ClientError> {
        Ok(key.holder_proof(cid, &self.node_key().await?))
    }

    /// Adds a key grant to tree `cid`, proving the sender holds its data key `key` (the node
    /// takes grants only from holders).
    pub async fn add_key_grant(
        &self,
        cid: &Hash,
        key: &DataKey,
        grant: &KeyGrant,
    ) -> Result<(), ClientError> {
        self.signed_write(|| self.add_key_grant_once(cid, key, grant))
            .await
    }

    async fn add_key_grant_once(
        &self,
        cid: &Hash,
        key: &DataKey,
        grant: &KeyGrant,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/trees/{cid}/keys");
        let url = format!("{}{path}", self.base_url());
        let body = serde_json::to_vec(grant).map_err(|e| ClientError::BadResponse {
            url: url.clone(),
            message: format!("cannot encode the grant: {e}"),
        })?;
        let digest = Hash::of(&body);
        let request = self
            .http()
            .post(&url)
            .header(
                KEY_PROOF_HEADER,
                self.holder_proof(key, cid).await?.to_string(),
            )
            .header("content-type", "application/json")
            .body(body);
        let request = self.sign(request, "POST", &path, &digest).await?;
        self.send_empty(request, &url).await
    }
}
