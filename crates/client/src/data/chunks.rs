//! The node's chunk endpoints as the client calls them: which chunks it lacks, fetches and uploads
//! in the binary form.

use futures_util::stream;
use gridwork_api::frames::{read_answer, ChunkSource, Fetch, Frame, SourceError};
use gridwork_api::{ChunkIds, MissingChunks};
use gridwork_types::Hash;

use crate::client::{Client, ClientError};

impl ChunkSource for Client {
    fn label(&self) -> String {
        self.base_url().to_string()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [Hash]) -> Fetch<'a> {
        Box::pin(async move {
            self.get_chunks(ids).await.map_err(|e| match e {
                ClientError::Unreachable { message, .. } => SourceError::Unreachable(message),
                ClientError::Timeout { .. } => SourceError::Unreachable(e.to_string()),
                ClientError::Api { .. } => SourceError::Refused(e.to_string()),
                ClientError::BadResponse { message, .. } => SourceError::BadAnswer(message),
            })
        })
    }
}

impl Client {
    /// Posts `ids` to `url` in the binary form (32 bytes an id) and returns the answer;
    /// `None` when the node reads only JSON (an earlier version).
    async fn post_ids(
        &self,
        url: &str,
        ids: &[Hash],
        signed_as: Option<&str>,
    ) -> Result<Option<bytes::Bytes>, ClientError> {
        let body: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        let digest = Hash::of(&body);
        let mut request = self
            .http()
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(path) = signed_as {
            request = self.sign(request, "POST", path, &digest).await?;
        }
        match self.send_bytes(request, url).await {
            Err(e) if e.code() == Some("malformed_json") => Ok(None),
            other => other.map(Some),
        }
    }

    /// Which of `ids` the node lacks, asked in the binary form (32 bytes an id, a bit an
    /// answer: JSON with hex ids took 67 bytes each way).
    pub(super) async fn missing_chunks(&self, ids: Vec<Hash>) -> Result<Vec<Hash>, ClientError> {
        let url = format!("{}/v1/chunks/missing", self.base_url());
        let Some(bits) = self.post_ids(&url, &ids, None).await? else {
            let answer: MissingChunks = self
                .send_json(self.http().post(&url).json(&ChunkIds { ids }), &url)
                .await?;
            return Ok(answer.missing);
        };
        if bits.len() != ids.len().div_ceil(8) {
            return Err(ClientError::BadResponse {
                url,
                message: format!(
                    "{} bytes of answer for {} chunk ids (one bit each)",
                    bits.len(),
                    ids.len()
                ),
            });
        }
        Ok(ids
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
            .map(|(_, id)| id)
            .collect())
    }

    /// Several chunks in one request: one frame per id, in order. Signed when the client
    /// has a key (a node answers unsigned fetches only up to
    /// [`UNSIGNED_RESPONSE_BYTES`](gridwork_api::frames::UNSIGNED_RESPONSE_BYTES)), unsigned
    /// when that key holds nothing on the ledger.
    async fn get_chunks(&self, ids: &[Hash]) -> Result<Vec<Frame>, ClientError> {
        let url = format!("{}/v1/chunks/fetch", self.base_url());
        let signed = match self.has_signer() {
            true => match self
                .signed_write(|| self.post_ids(&url, ids, Some("/v1/chunks/fetch")))
                .await
            {
                Err(e) if e.code() == Some("unfunded_account") => None,
                other => Some(other?),
            },
            false => None,
        };
        let answer = match signed {
            Some(answer) => answer,
            None => self.post_ids(&url, ids, None).await?,
        };
        let body = match answer {
            Some(body) => body,
            None => {
                self.send_bytes(
                    self.http().post(&url).json(&ChunkIds { ids: ids.to_vec() }),
                    &url,
                )
                .await?
            }
        };
        read_answer(&body, ids, MAX_SEALED)
            .map_err(|message| ClientError::BadResponse { url, message })
    }

    /// Several chunks in one upload.
    pub(super) async fn put_chunks(
        &self,
        chunks: &[(Hash, bytes::Bytes)],
    ) -> Result<(), ClientError> {
        self.signed_write(|| self.put_chunks_once(chunks)).await
    }

    async fn put_chunks_once(&self, chunks: &[(Hash, bytes::Bytes)]) -> Result<(), ClientError> {
        let url = format!("{}/v1/chunks", self.base_url());
        // The body streams the sealed chunks as they are (a copy of each into one buffer was
        // 3% of a push's CPU).
        let pieces = gridwork_api::frames::upload_pieces(chunks);
        let length: usize = pieces.iter().map(|p| p.len()).sum();
        let body = reqwest::Body::wrap_stream(stream::iter(
            pieces.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let ids: Vec<u8> = chunks.iter().flat_map(|(id, _)| id.0).collect();
        let request = self
            .http()
            .post(&url)
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .body(body);
        let digest = Hash::of(&ids);
        let request = self.sign(request, "POST", "/v1/chunks", &digest).await?;
        self.send_empty(request, &url).await
    }
}

/// The largest sealed chunk a source may answer with (the node's upload limit).
const MAX_SEALED: usize = 8 * 1024 * 1024;
