//! Services (stream tasks): a long-running HTTP endpoint (a model server, say) served by a
//! council of subscribed providers, each request answered by the council under the service's
//! response method, every response paid by the requester at the member's own price.
//!
//! What is on the ledger: the [`ServiceSpec`] and its escrow, the subscriptions, the council,
//! what each member was paid, disputes and slashes. What is not: the requests and responses.
//! They pass through the requester's gateway, which acknowledges each response with a
//! [`StreamReceipt`] signed by the service's gateway key: cumulative (everything the member
//! is owed so far), so one receipt settles any number of responses and a member needs only
//! the latest. Each member signs every response it gives ([`StreamResponse`]), so when
//! members answer one request differently, their own signatures are the evidence that
//! settles it on the ledger.

use serde::{Deserialize, Serialize};

use crate::{
    codec_enum, codec_struct, Address, Amount, DataInput, Encode, Equivalence, Hash, KeyError,
    Keypair, Program, PublicKey, Requirements, Signature,
};

/// When the gateway answers a request (the whitepaper's response methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseMethod {
    /// The first member's response is the answer; the others' come later and check it.
    Optimistic {},
    /// The answer waits for `weight_bps / 10,000` of the council (at least one member) and is
    /// the most common of their responses; the rest check it later.
    Weighted {
        /// The share of the council to wait for, in basis points (1 to 10,000).
        weight_bps: u16,
    },
    /// The answer waits for every member, and only agreeing responses are an answer.
    Unanimous {},
}

codec_enum!(ResponseMethod, "response method" {
    0 => Optimistic {},
    1 => Weighted { weight_bps: u16 },
    2 => Unanimous {},
});

impl ResponseMethod {
    /// How many of a council of `council` the gateway waits for before it answers.
    pub fn quorum(&self, council: u8) -> u8 {
        match *self {
            ResponseMethod::Optimistic {} => 1.min(council),
            ResponseMethod::Weighted { weight_bps } => {
                let n = (u32::from(council) * u32::from(weight_bps)).div_ceil(10_000);
                (n as u8).clamp(1.min(council), council)
            }
            ResponseMethod::Unanimous {} => council,
        }
    }
}

/// What one response costs: a price for the response and one for each unit of it (a byte of
/// its body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamPrice {
    /// Per response.
    pub per_response: Amount,
    /// Per unit of the response (a byte of its body).
    pub per_unit: Amount,
}

codec_struct!(StreamPrice {
    per_response: Amount,
    per_unit: Amount
});

impl StreamPrice {
    /// What a response of `units` costs at this price, or `None` on overflow.
    pub fn of(&self, units: u64) -> Option<Amount> {
        self.per_unit
            .0
            .checked_mul(u128::from(units))?
            .checked_add(self.per_response.0)
            .map(Amount)
    }

    /// Neither part above `max`'s.
    pub fn within(&self, max: &StreamPrice) -> bool {
        self.per_response <= max.per_response && self.per_unit <= max.per_unit
    }
}

/// A service's prescription: what to serve, on what hardware, checked how, paid how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// M: the server to run. It listens for HTTP on `$GRIDWORK_PORT` on the worker's
    /// loopback; an image (`program.image`) brings its own environment.
    pub program: Program,
    /// D: inputs the server starts with (weights, initial prompts), as for a job.
    pub data: Vec<DataInput>,
    /// What a member's machine must offer.
    pub requirements: Requirements,
    /// I: how the gateway answers a request.
    pub method: ResponseMethod,
    /// c: the council that serves every request (odd, so a majority exists).
    pub council_size: u8,
    /// f: the most the requester pays a member for one response; each member asks its own
    /// price, within it.
    pub max_price: StreamPrice,
    /// e: when two responses to one request agree. Exact (the same body) for now: the
    /// ledger settles a dispute by comparing the hashes members signed.
    pub equivalence: Equivalence,
    /// The longest a response may take: this, plus `response_ms_per_kib` for each KiB of it
    /// (a response time proportional to its length). A member later than that is dropped.
    pub max_response_ms: u64,
    /// See `max_response_ms`.
    pub response_ms_per_kib: u64,
    /// H: the service ends once it has been down (too few members, or too little escrow)
    /// this long in one stretch after it first came up; 0: it never ends on its own.
    pub max_downtime_ms: u64,
    /// The most a member may be owed before it is paid (its risk between settlements): the
    /// service is up only while its escrow covers this for every seat.
    pub max_unsettled: Amount,
    /// The key the requester's gateway signs receipts with: the ledger pays what it signs.
    pub gateway: PublicKey,
}

codec_struct!(ServiceSpec {
    program: Program,
    data: Vec<DataInput>,
    requirements: Requirements,
    method: ResponseMethod,
    council_size: u8,
    max_price: StreamPrice,
    equivalence: Equivalence,
    max_response_ms: u64,
    response_ms_per_kib: u64,
    max_downtime_ms: u64,
    max_unsettled: Amount,
    gateway: PublicKey,
});

impl ServiceSpec {
    /// The escrow that keeps the service up: `max_unsettled` for every seat, and the market
    /// fee on it. `None` on overflow.
    pub fn reserve(&self, market_fee_bps: u32) -> Option<Amount> {
        let seats = self
            .max_unsettled
            .0
            .checked_mul(u128::from(self.council_size))?;
        let fee = seats.checked_mul(u128::from(market_fee_bps))? / 10_000;
        seats.checked_add(fee).map(Amount)
    }
}

/// The gateway's acknowledgement of everything one member served: cumulative, so the latest
/// receipt settles all before it, and the ledger pays only what it adds to what was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamReceipt {
    /// The service (its id: the hash of the transaction that created it).
    pub service: Hash,
    /// The member served.
    pub provider: Address,
    /// Responses it gave so far.
    pub responses: u64,
    /// Units (bytes of response bodies) so far.
    pub units: u64,
    /// What it is owed for them so far, at its price.
    pub owed: Amount,
}

codec_struct!(StreamReceipt {
    service: Hash,
    provider: Address,
    responses: u64,
    units: u64,
    owed: Amount
});

impl StreamReceipt {
    /// The bytes the gateway signs on chain `chain_id`.
    pub fn message(&self, chain_id: &str) -> Vec<u8> {
        let mut msg = b"gridwork/stream-receipt/v1".to_vec();
        chain_id.encode(&mut msg);
        self.encode(&mut msg);
        msg
    }

    /// Signed with the gateway's key.
    pub fn sign(self, chain_id: &str, gateway: &Keypair) -> SignedReceipt {
        let signature = gateway.sign(&self.message(chain_id));
        SignedReceipt {
            receipt: self,
            signature,
        }
    }
}

/// A [`StreamReceipt`] with the gateway's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: StreamReceipt,
    /// The gateway's signature over [`StreamReceipt::message`].
    pub signature: Signature,
}

codec_struct!(SignedReceipt {
    receipt: StreamReceipt,
    signature: Signature
});

impl SignedReceipt {
    /// Checks the signature is `gateway`'s, for `chain_id`.
    pub fn verify(&self, chain_id: &str, gateway: &PublicKey) -> Result<(), KeyError> {
        gateway.verify(&self.receipt.message(chain_id), &self.signature)
    }
}

/// What a member says it answered to one request: the request's hash (over what the gateway
/// sent it, with the gateway's unique request id) and the hash of its response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamResponse {
    /// The service.
    pub service: Hash,
    /// The request answered.
    pub request: Hash,
    /// BLAKE3 of the response body.
    pub response: Hash,
    /// Its units (bytes).
    pub units: u64,
}

codec_struct!(StreamResponse {
    service: Hash,
    request: Hash,
    response: Hash,
    units: u64
});

impl StreamResponse {
    /// The bytes a member signs on chain `chain_id`.
    pub fn message(&self, chain_id: &str) -> Vec<u8> {
        let mut msg = b"gridwork/stream-response/v1".to_vec();
        chain_id.encode(&mut msg);
        self.encode(&mut msg);
        msg
    }

    /// Signed with the member's key.
    pub fn sign(self, chain_id: &str, member: &Keypair) -> SignedResponse {
        let signature = member.sign(&self.message(chain_id));
        SignedResponse {
            provider: member.public(),
            response: self,
            signature,
        }
    }
}

/// A [`StreamResponse`] with its member's key and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedResponse {
    /// The member's public key (its address is the provider's).
    pub provider: PublicKey,
    /// What it answered.
    pub response: StreamResponse,
    /// Its signature over [`StreamResponse::message`].
    pub signature: Signature,
}

codec_struct!(SignedResponse {
    provider: PublicKey,
    response: StreamResponse,
    signature: Signature
});

impl SignedResponse {
    /// Checks the signature is the member's, for `chain_id`.
    pub fn verify(&self, chain_id: &str) -> Result<(), KeyError> {
        self.provider
            .verify(&self.response.message(chain_id), &self.signature)
    }
}

/// A member's judgement of the other answers to one request of a service whose equivalence
/// is not exact: which it finds equivalent to its own answer and which not. Signed, it is
/// evidence for `JudgeResponses`: a member whose answer more than half of the council's
/// seats judged not equivalent to theirs (judges that agree among themselves) is slashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamJudgement {
    /// The service.
    pub service: Hash,
    /// The request judged.
    pub request: Hash,
    /// The hash of the judge's own response to it (as its [`StreamResponse`] says).
    pub own: Hash,
    /// Response hashes it found equivalent to its own.
    pub agree: Vec<Hash>,
    /// Response hashes it found not equivalent to its own.
    pub differ: Vec<Hash>,
}

codec_struct!(StreamJudgement {
    service: Hash,
    request: Hash,
    own: Hash,
    agree: Vec<Hash>,
    differ: Vec<Hash>
});

/// The most response hashes one [`StreamJudgement`] names (`agree` and `differ` together),
/// and the most answers one [`JudgeTask`] carries.
pub const MAX_JUDGED: usize = 32;

impl StreamJudgement {
    /// The bytes a judge signs on chain `chain_id`.
    pub fn message(&self, chain_id: &str) -> Vec<u8> {
        let mut msg = b"gridwork/stream-judgement/v1".to_vec();
        chain_id.encode(&mut msg);
        self.encode(&mut msg);
        msg
    }

    /// Signed with the judge's key.
    pub fn sign(self, chain_id: &str, judge: &Keypair) -> SignedJudgement {
        let signature = judge.sign(&self.message(chain_id));
        SignedJudgement {
            judge: judge.public(),
            judgement: self,
            signature,
        }
    }
}

/// A [`StreamJudgement`] with its judge's key and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedJudgement {
    /// The judge's public key (its address is the member's).
    pub judge: PublicKey,
    /// What it judged.
    pub judgement: StreamJudgement,
    /// Its signature over [`StreamJudgement::message`].
    pub signature: Signature,
}

codec_struct!(SignedJudgement {
    judge: PublicKey,
    judgement: StreamJudgement,
    signature: Signature
});

impl SignedJudgement {
    /// Checks the signature is the judge's, for `chain_id`.
    pub fn verify(&self, chain_id: &str) -> Result<(), KeyError> {
        self.judge
            .verify(&self.judgement.message(chain_id), &self.signature)
    }
}

/// One member's answer to a request as a judge is shown it: what the server gave, and the
/// member's signature over it (the judge checks the body against it, so a gateway cannot
/// show it a body the member never gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The content type (empty for none).
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// The member's signed response over them.
    pub signed: SignedResponse,
}

codec_struct!(JudgedAnswer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    signed: SignedResponse
});

/// What a gateway asks a member to judge (`GET /m/<service>/next` with `gridwork-judge`):
/// the answers to one request of a service whose equivalence is not exact, the member's own
/// among them, when they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeTask {
    /// The request.
    pub request: Hash,
    /// Every answer the gateway took (at most [`MAX_JUDGED`]).
    pub answers: Vec<JudgedAnswer>,
}

codec_struct!(JudgeTask {
    request: Hash,
    answers: Vec<JudgedAnswer>
});

/// The hash that names one request of a service, as the gateway relays it and each member
/// signs it ([`StreamResponse::request`]): over the service, the gateway's sequence number
/// (unique per request), the method, the path and query, the content type and the body.
pub fn request_hash(
    service: &Hash,
    seq: u64,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork/stream-request/v1");
    h.update(service.as_bytes());
    h.update(&seq.to_le_bytes());
    for part in [method.as_bytes(), path.as_bytes(), content_type.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(body);
    Hash(*h.finalize().as_bytes())
}

/// The hash of a response, as members sign it ([`StreamResponse::response`]): over the HTTP
/// status and content type the server gave (what the user is shown with the body, so a
/// member cannot answer the right body as an error, or as another type, unaccountably) and
/// the body.
pub fn response_hash(status: u16, content_type: &str, body: &[u8]) -> Hash {
    let mut h = ResponseHasher::new(status, content_type);
    h.update(body);
    h.finish()
}

/// Whether an answer of `status` to a request of `method` may be streamed: one with no body
/// (an answer to HEAD; status 1xx, 204 or 304) reaches the user whole at its head, before any
/// byte could be signed, so it goes whole. Members and gateways decide alike by this.
pub fn may_stream(method: &str, status: u16) -> bool {
    !method.eq_ignore_ascii_case("HEAD") && !matches!(status, 100..=199 | 204 | 304)
}

/// [`response_hash`] of a body that arrives in pieces: the same hash once every piece is in.
#[derive(Debug, Clone)]
pub struct ResponseHasher {
    hasher: blake3::Hasher,
    units: u64,
}

impl ResponseHasher {
    /// The hash of a response of `status` and `content_type` (empty for none), its body to
    /// come.
    pub fn new(status: u16, content_type: &str) -> ResponseHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"gridwork/stream-response-body/v1");
        hasher.update(&status.to_le_bytes());
        hasher.update(&(content_type.len() as u64).to_le_bytes());
        hasher.update(content_type.as_bytes());
        ResponseHasher { hasher, units: 0 }
    }

    /// Takes the next piece of the body.
    pub fn update(&mut self, piece: &[u8]) {
        self.hasher.update(piece);
        self.units = self.units.saturating_add(piece.len() as u64);
    }

    /// The bytes taken so far: a response's units.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// The hash of the whole body.
    pub fn finish(&self) -> Hash {
        Hash(*self.hasher.finalize().as_bytes())
    }
}

/// A piece of a member's streamed response, as it goes to the gateway
/// (`POST /m/<service>/streams/<seq>`): the body is a sequence of frames, each one byte of
/// kind, four of length (big-endian), then that many bytes. Data frames carry the response's
/// body in order; the last frame, and only it, carries the member's [`SignedResponse`] over
/// the whole body, which binds every data frame before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    /// The next bytes of the body (`D`).
    Data(Vec<u8>),
    /// The end: the member's signed response (`E`, its encoding).
    End(Vec<u8>),
}

/// The most bytes one [`StreamFrame`] carries: a longer piece goes in several.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

impl StreamFrame {
    /// Appends the frame's encoding to `out` (a data frame of more than [`MAX_FRAME_BYTES`]
    /// goes as several).
    pub fn encode_to(kind: u8, bytes: &[u8], out: &mut Vec<u8>) {
        let mut pieces = bytes.chunks(MAX_FRAME_BYTES).peekable();
        if pieces.peek().is_none() {
            out.push(kind);
            out.extend_from_slice(&0u32.to_be_bytes());
            return;
        }
        for piece in pieces {
            out.push(kind);
            out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
            out.extend_from_slice(piece);
        }
    }

    /// The encoding of data frames carrying `bytes` (none for no bytes: an empty data frame
    /// is refused).
    pub fn data(bytes: &[u8]) -> Vec<u8> {
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(bytes.len() + 5);
        StreamFrame::encode_to(b'D', bytes, &mut out);
        out
    }

    /// The encoding of the end frame carrying `signed`.
    pub fn end(signed: &SignedResponse) -> Vec<u8> {
        let mut out = Vec::new();
        let bytes = signed.to_bytes();
        out.push(b'E');
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
        out
    }
}

/// Reads [`StreamFrame`]s from a body that arrives in pieces of any size, each byte once
/// (frames are read from an offset; what was read is let go once per piece pushed).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    at: usize,
}

/// A stream that is not a sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame of a kind that is neither `D` nor `E`.
    #[error("a frame of kind {0:#04x}: a stream's frames are `D` (data) or `E` (the end)")]
    Kind(u8),
    /// A frame longer than [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes: at most {MAX_FRAME_BYTES}")]
    TooLong(u32),
    /// A data frame of no bytes (it would cost the reader and carry nothing).
    #[error("an empty data frame: each carries at least a byte")]
    Empty,
}

impl FrameReader {
    /// Takes the next bytes of the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is in.
    pub fn next_frame(&mut self) -> Result<Option<StreamFrame>, FrameError> {
        let rest = &self.buf[self.at..];
        let Some(&kind) = rest.first() else {
            return Ok(None);
        };
        if kind != b'D' && kind != b'E' {
            return Err(FrameError::Kind(kind));
        }
        let Some(len) = rest.get(1..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len as usize > MAX_FRAME_BYTES {
            return Err(FrameError::TooLong(len));
        }
        if len == 0 && kind == b'D' {
            return Err(FrameError::Empty);
        }
        let end = 5 + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let bytes = rest[5..end].to_vec();
        self.at += end;
        Ok(Some(if kind == b'D' {
            StreamFrame::Data(bytes)
        } else {
            StreamFrame::End(bytes)
        }))
    }

    /// Whether bytes of an unfinished frame are held.
    pub fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// The most receipts one `SettleStream` carries.
pub const MAX_RECEIPTS_PER_TX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decode;

    #[test]
    fn quorums_follow_the_method() {
        assert_eq!(ResponseMethod::Optimistic {}.quorum(3), 1);
        assert_eq!(ResponseMethod::Unanimous {}.quorum(3), 3);
        let half = ResponseMethod::Weighted { weight_bps: 5_000 };
        assert_eq!(half.quorum(3), 2);
        assert_eq!(half.quorum(5), 3);
        assert_eq!(ResponseMethod::Weighted { weight_bps: 1 }.quorum(5), 1);
        assert_eq!(ResponseMethod::Weighted { weight_bps: 10_000 }.quorum(5), 5);
    }

    #[test]
    fn receipts_and_responses_are_bound_to_their_chain_and_signer() {
        let gateway = Keypair::from_seed([7; 32]);
        let receipt = StreamReceipt {
            service: Hash([1; 32]),
            provider: Address([2; 20]),
            responses: 3,
            units: 300,
            owed: Amount(42),
        }
        .sign("test", &gateway);
        let decoded = SignedReceipt::from_bytes(&receipt.to_bytes()).unwrap();
        assert_eq!(decoded, receipt);
        assert_eq!(decoded.verify("test", &gateway.public()), Ok(()));
        assert!(decoded.verify("other", &gateway.public()).is_err());
        let other = Keypair::from_seed([8; 32]);
        assert!(decoded.verify("test", &other.public()).is_err());
        let answer = StreamResponse {
            service: Hash([1; 32]),
            request: Hash([3; 32]),
            response: Hash([4; 32]),
            units: 12,
        }
        .sign("test", &other);
        assert_eq!(answer.verify("test"), Ok(()));
        let mut forged = answer.clone();
        forged.response.response = Hash([5; 32]);
        assert!(forged.verify("test").is_err());
    }

    /// Members and gateways agree on which answers may stream: none without a body.
    #[test]
    fn answers_without_a_body_are_never_streamed() {
        assert!(may_stream("GET", 200));
        assert!(may_stream("POST", 500));
        for (method, status) in [("HEAD", 200), ("head", 200), ("GET", 204), ("GET", 304)] {
            assert!(!may_stream(method, status), "{method} {status}");
        }
        assert!(!may_stream("GET", 101));
    }

    /// Frames read back whole however the body is cut on the way; a stream's hash taken in
    /// pieces is the hash of the whole.
    #[test]
    fn stream_frames_read_back_however_the_body_is_cut() {
        let body: Vec<u8> = (0..3 * MAX_FRAME_BYTES / 2).map(|i| i as u8).collect();
        let signed = StreamResponse {
            service: Hash([1; 32]),
            request: Hash([2; 32]),
            response: response_hash(200, "text/event-stream", &body),
            units: body.len() as u64,
        }
        .sign("test", &Keypair::from_seed([3; 32]));
        let mut wire = StreamFrame::data(b"");
        wire.extend(StreamFrame::data(&body));
        wire.extend(StreamFrame::end(&signed));
        for cut in [1, 7, 4096, wire.len()] {
            let mut reader = FrameReader::default();
            let mut hasher = ResponseHasher::new(200, "text/event-stream");
            let mut frames = 0;
            let mut end = None;
            for piece in wire.chunks(cut) {
                reader.push(piece);
                while let Some(frame) = reader.next_frame().unwrap() {
                    frames += 1;
                    match frame {
                        StreamFrame::Data(d) => hasher.update(&d),
                        StreamFrame::End(e) => end = Some(SignedResponse::from_bytes(&e).unwrap()),
                    }
                }
            }
            assert!(reader.is_empty());
            // No frame for no bytes, the body in two (longer than a frame), the end.
            assert_eq!(frames, 3);
            assert_eq!(
                hasher.finish(),
                response_hash(200, "text/event-stream", &body)
            );
            assert_ne!(
                hasher.finish(),
                response_hash(500, "text/event-stream", &body)
            );
            assert_ne!(hasher.finish(), response_hash(200, "text/html", &body));
            assert_eq!(hasher.units(), body.len() as u64);
            assert_eq!(end.as_ref(), Some(&signed));
        }
        let mut reader = FrameReader::default();
        reader.push(b"X\0\0\0\0");
        assert_eq!(reader.next_frame(), Err(FrameError::Kind(b'X')));
        let mut reader = FrameReader::default();
        reader.push(&[b'D', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(reader.next_frame(), Err(FrameError::TooLong(u32::MAX)));
        let mut reader = FrameReader::default();
        reader.push(&[b'D', 0, 0, 0, 0]);
        assert_eq!(reader.next_frame(), Err(FrameError::Empty));
    }
}
