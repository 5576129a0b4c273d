//! Transactions: what an account asks the ledger to do, signed by its key.
//!
//! The signed message is `"gridwork/tx/v1" || chain_id || canonical(Transaction)`, so a
//! transaction signed for one chain is worthless on another. The transaction hash is BLAKE3
//! of the canonical encoding of the [`SignedTx`].

use crate::address::Address;
use crate::amount::Amount;
use crate::codec_enum;
use crate::encoding::{Decode, DecodeError, Encode, Reader};
use crate::hash::Hash;
use crate::keys::{KeyError, Keypair, PublicKey, Signature};
use crate::market::{Hardware, Prescription, RunEnd};
use crate::service::{ServiceSpec, SignedJudgement, SignedReceipt, SignedResponse, StreamPrice};

/// The largest encoded signed transaction a node accepts.
pub const MAX_TX_BYTES: usize = 16 * 1024;

const SIGNING_DOMAIN: &[u8] = b"gridwork/tx/v1";

/// What a transaction does. New kinds append tags; existing tags never change meaning.
/// Deliberately exhaustive: the ledger must handle every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxKind {
    /// Moves spendable balance to another account.
    Transfer {
        /// The recipient.
        to: Address,
        /// How much.
        amount: Amount,
    },
    /// Moves spendable balance into the sender's vault stake.
    StakeLock {
        /// How much.
        amount: Amount,
    },
    /// Starts unbonding part of the locked stake; it becomes withdrawable after the
    /// unbonding period.
    StakeUnbond {
        /// How much.
        amount: Amount,
    },
    /// Moves every matured unbonding entry back to the spendable balance.
    StakeWithdraw,
    /// Registers (or updates) the sender as a provider with this hardware. Needs the
    /// minimum provider stake locked.
    RegisterProvider {
        /// What the provider's machine offers.
        hardware: Hardware,
        /// The owner this worker acts for, with the owner's consent (none: the worker is its
        /// own owner). Councils never hold two workers of one owner.
        owner: Option<OwnerApproval>,
    },
    /// Tells the network the sender's worker is alive.
    Heartbeat,
    /// Publishes a job: the deposit moves from the balance into the job's escrow and every
    /// task opens for bids. The job id is this transaction's hash.
    SubmitJob {
        /// What to run.
        prescription: Prescription,
        /// Escrow; must cover the job's maximum cost.
        deposit: Amount,
    },
    /// Cancels a job: open tasks close, unspent escrow returns to the requester.
    CancelJob {
        /// The job id.
        job: Hash,
    },
    /// Offers to run a task at a price.
    Bid {
        /// The job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Price (per task-second or per task, as the payment function says).
        price: Amount,
        /// The bidder says it has the job's image loaded already, so its run starts sooner
        /// (only for a job that names an image). A claim shown to the requester; nothing in
        /// the auction depends on it, so it gains a liar nothing.
        cached: bool,
    },
    /// Commits to a result without showing it: BLAKE3(output || run end || salt || sender
    /// address), see [`commitment`].
    Commit {
        /// The job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The attempt the commitment is for.
        attempt: u32,
        /// The commitment.
        commitment: Hash,
    },
    /// Opens a commitment. Under exact-hash equivalence the revealed output ids are the
    /// votes; otherwise the assigned parties judge each other's outputs next ([`TxKind::Judge`]).
    Reveal {
        /// The job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The attempt.
        attempt: u32,
        /// Content id of the output tree.
        output: Hash,
        /// The salt of the commitment.
        salt: Hash,
        /// Run time in seconds (the executor's claim; council members report theirs).
        seconds: u64,
        /// How the run ended (bound into the commitment with the output).
        ended: RunEnd,
    },
    /// After the reveals: which of the other revealed outputs of this attempt are equivalent
    /// to the sender's own (under the job's equivalence function, compared on the plaintext).
    /// Two outputs count as equivalent only when both parties name each other, so a vote is
    /// bound to the output the sender committed before anyone revealed.
    Judge {
        /// The job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The attempt.
        attempt: u32,
        /// The round of the attempt (0, or how many times its council was enlarged).
        round: u8,
        /// The parties whose outputs the sender found equivalent to its own.
        equivalent: Vec<Address>,
    },
    /// The executor of a task in checkpointed segments binds itself to the checkpoint each
    /// segment of its run ended with (the content id of each checkpoint's tree, in order;
    /// the last is its output). The ledger draws the segments its council replays at the
    /// next block, from that block's parent hash, so nobody knows them before the
    /// checkpoints are bound.
    Checkpoints {
        /// The job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The attempt.
        attempt: u32,
        /// One content id per segment that ran, in order: every segment's, or with `failed`
        /// those up to the one that failed (what it left).
        checkpoints: Vec<Hash>,
        /// The run stopped at its last named segment, which failed: the council replays that
        /// segment, to see it fail the same way.
        failed: bool,
    },
    /// Publishes (or, with no addresses, withdraws) where the sender's worker serves chunks
    /// peer to peer. Only providers.
    AnnouncePeer {
        /// The worker's peer endpoint and socket addresses.
        peer: PeerAddr,
    },
    /// Publishes a service (a stream task): the deposit moves into its escrow, and providers
    /// may subscribe. The service id is this transaction's hash.
    CreateService {
        /// What to serve, checked and paid how.
        spec: ServiceSpec,
        /// Escrow; must cover the service's reserve ([`ServiceSpec::reserve`]).
        deposit: Amount,
    },
    /// Adds to a service's escrow (its requester only).
    FundService {
        /// The service id.
        service: Hash,
        /// How much.
        amount: Amount,
    },
    /// Ends a service (its requester only): no member serves it from now on, members settle
    /// their last receipts within the settle window, then the rest of the escrow returns.
    CloseService {
        /// The service id.
        service: Hash,
    },
    /// Offers to serve a service at a price per response (a provider). Subscribers are drawn
    /// into its council as seats open.
    Subscribe {
        /// The service id.
        service: Hash,
        /// The sender's price, within the service's `max_price`.
        price: StreamPrice,
    },
    /// Stops serving a service: the sender leaves its council (its seat is drawn again) and
    /// its subscribers. What it is owed it may still settle.
    Unsubscribe {
        /// The service id.
        service: Hash,
    },
    /// The requester (or its gateway's key) drops a council member that answered late, not at
    /// all, or not to its liking: no slash, the seat is drawn again from the subscribers.
    DropMember {
        /// The service id.
        service: Hash,
        /// The member.
        member: Address,
    },
    /// Pays members what the gateway's receipts say they are owed beyond what they were paid
    /// (anyone may send it; the receipts carry the gateway's signatures).
    SettleStream {
        /// At most [`MAX_RECEIPTS_PER_TX`](crate::MAX_RECEIPTS_PER_TX), one per member.
        receipts: Vec<SignedReceipt>,
    },
    /// Members answered one request differently: their signed responses. A response signed by
    /// more than half the council outvotes the others, whose signers are slashed and leave the
    /// service (anyone may send it: the signatures are the evidence).
    DisputeResponses {
        /// The service id.
        service: Hash,
        /// Responses to one request, one per member (two from one member that differ prove
        /// it lied to one side).
        responses: Vec<SignedResponse>,
    },
    /// Members of a service whose equivalence is not exact answered one request in ways
    /// their council judged not equivalent: their signed responses and the judgements they
    /// signed. A member whose answer more than half of the council's seats judged not
    /// equivalent to theirs, judges agreeing among themselves, is slashed and leaves the
    /// service (anyone may send it: the signatures are the evidence).
    JudgeResponses {
        /// The service id.
        service: Hash,
        /// Responses to one request, one per member.
        responses: Vec<SignedResponse>,
        /// Judgements of them, one per judging member.
        judgements: Vec<SignedJudgement>,
    },
    /// The requester (or its gateway key) says where the service's gateway listens: members
    /// fetch requests there and send their responses.
    AnnounceGateway {
        /// The service id.
        service: Hash,
        /// The gateway's base URL (`http://host:port`), at most 256 bytes.
        url: String,
    },
}

codec_enum!(TxKind, "transaction kind" {
    0 => Transfer { to: Address, amount: Amount },
    1 => StakeLock { amount: Amount },
    2 => StakeUnbond { amount: Amount },
    3 => StakeWithdraw {},
    4 => RegisterProvider { hardware: Hardware, owner: Option<OwnerApproval> },
    5 => Heartbeat {},
    6 => SubmitJob { prescription: Prescription, deposit: Amount },
    7 => CancelJob { job: Hash },
    8 => Bid { job: Hash, task: u32, price: Amount, cached: bool },
    9 => Commit { job: Hash, task: u32, attempt: u32, commitment: Hash },
    10 => Reveal { job: Hash, task: u32, attempt: u32, output: Hash, salt: Hash, seconds: u64, ended: RunEnd },
    11 => AnnouncePeer { peer: PeerAddr },
    12 => Judge { job: Hash, task: u32, attempt: u32, round: u8, equivalent: Vec<Address> },
    13 => Checkpoints { job: Hash, task: u32, attempt: u32, checkpoints: Vec<Hash>, failed: bool },
    14 => CreateService { spec: ServiceSpec, deposit: Amount },
    15 => FundService { service: Hash, amount: Amount },
    16 => CloseService { service: Hash },
    17 => Subscribe { service: Hash, price: StreamPrice },
    18 => Unsubscribe { service: Hash },
    19 => DropMember { service: Hash, member: Address },
    20 => SettleStream { receipts: Vec<SignedReceipt> },
    21 => DisputeResponses { service: Hash, responses: Vec<SignedResponse> },
    22 => AnnounceGateway { service: Hash, url: String },
    23 => JudgeResponses { service: Hash, responses: Vec<SignedResponse>, judgements: Vec<SignedJudgement> },
});

/// Where a worker serves chunks peer to peer: its endpoint key (a transport key of its own,
/// not its signing key) and the socket addresses it listens on, as `ip:port` text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerAddr {
    /// The endpoint's public key (peers authenticate the connection with it).
    pub endpoint: PublicKey,
    /// `ip:port` addresses, at most [`PeerAddr::MAX_ADDRS`].
    pub addrs: Vec<String>,
}

crate::codec_struct!(PeerAddr {
    endpoint: PublicKey,
    addrs: Vec<String>
});

impl PeerAddr {
    /// The most addresses one peer may list.
    pub const MAX_ADDRS: usize = 4;

    /// The addresses as sockets, or the first that is not a usable `ip:port` (unspecified
    /// addresses and port 0 are not).
    pub fn sockets(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        if self.addrs.len() > PeerAddr::MAX_ADDRS {
            return Err(format!(
                "{} addresses; at most {}",
                self.addrs.len(),
                PeerAddr::MAX_ADDRS
            ));
        }
        self.addrs
            .iter()
            .map(|a| match a.parse::<std::net::SocketAddr>() {
                Ok(s) if !s.ip().is_unspecified() && s.port() != 0 => Ok(s),
                _ => Err(a.clone()),
            })
            .collect()
    }
}

/// An owner's consent that a worker key acts for it: the owner's signature over the worker's
/// address on one chain. An operator with many machines signs one approval per worker key, so
/// the ledger knows they are one party (a council never holds two of them), and nobody can
/// claim another's workers without that owner's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerApproval {
    /// The owner's public key.
    pub owner: PublicKey,
    /// The owner's signature over [`OwnerApproval::message`].
    pub signature: Signature,
}

crate::codec_struct!(OwnerApproval {
    owner: PublicKey,
    signature: Signature
});

impl OwnerApproval {
    /// The bytes the owner signs to approve `worker` on chain `chain_id`.
    pub fn message(chain_id: &str, worker: &Address) -> Vec<u8> {
        let mut msg = Vec::with_capacity(96);
        msg.extend_from_slice(b"gridwork/owner-approval/v1");
        chain_id.encode(&mut msg);
        worker.encode(&mut msg);
        msg
    }

    /// `owner` approves `worker` on chain `chain_id`.
    pub fn sign(chain_id: &str, owner: &Keypair, worker: &Address) -> OwnerApproval {
        OwnerApproval {
            owner: owner.public(),
            signature: owner.sign(&OwnerApproval::message(chain_id, worker)),
        }
    }

    /// Checks the approval is the owner's, for `worker` on `chain_id`.
    pub fn verify(&self, chain_id: &str, worker: &Address) -> Result<(), KeyError> {
        self.owner
            .verify(&OwnerApproval::message(chain_id, worker), &self.signature)
    }

    /// The owner's address.
    pub fn owner_address(&self) -> Address {
        self.owner.address()
    }

    /// The approval as hex of its canonical encoding (what `provider authorize` prints).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// An approval from [`OwnerApproval::to_hex`]'s text.
    pub fn from_hex(text: &str) -> Result<OwnerApproval, DecodeError> {
        let bytes = hex::decode(text.trim()).map_err(|_| DecodeError::Invalid {
            what: "owner approval (expected the hex printed by `gridwork provider authorize`)",
        })?;
        OwnerApproval::from_bytes(&bytes)
    }
}

/// The commitment to `output`, and to how the run that made it `ended`, with `salt` by
/// `committer`.
pub fn commitment(output: &Hash, ended: &RunEnd, salt: &Hash, committer: &Address) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork/commit/v2");
    h.update(output.as_bytes());
    h.update(&crate::Encode::to_bytes(ended));
    h.update(salt.as_bytes());
    h.update(&committer.0);
    Hash(*h.finalize().as_bytes())
}

/// An unsigned transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The sender's public key; the sender's account is its address.
    pub from: PublicKey,
    /// Must equal the sender's account nonce; each applied transaction increments it.
    pub nonce: u64,
    /// Paid by the sender to the node-rewards pool.
    pub fee: Amount,
    /// What to do.
    pub kind: TxKind,
}

impl Transaction {
    /// The sender's address.
    pub fn sender(&self) -> Address {
        self.from.address()
    }

    /// The bytes a signature covers on chain `chain_id`.
    pub fn signing_message(&self, chain_id: &str) -> Vec<u8> {
        let mut msg = Vec::with_capacity(128);
        msg.extend_from_slice(SIGNING_DOMAIN);
        chain_id.encode(&mut msg);
        self.encode(&mut msg);
        msg
    }

    /// Signs for `chain_id` with `key`, which must be the key of `from`.
    pub fn sign(self, chain_id: &str, key: &Keypair) -> SignedTx {
        let signature = key.sign(&self.signing_message(chain_id));
        SignedTx {
            tx: self,
            signature,
        }
    }
}

impl Encode for Transaction {
    fn encode(&self, out: &mut Vec<u8>) {
        self.from.encode(out);
        self.nonce.encode(out);
        self.fee.encode(out);
        self.kind.encode(out);
    }
}

impl Decode for Transaction {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Transaction {
            from: PublicKey::decode(r)?,
            nonce: u64::decode(r)?,
            fee: Amount::decode(r)?,
            kind: TxKind::decode(r)?,
        })
    }
}

/// A transaction with its sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Transaction,
    /// The sender's signature over [`Transaction::signing_message`].
    pub signature: Signature,
}

impl SignedTx {
    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }

    /// Checks the signature for `chain_id`.
    pub fn verify(&self, chain_id: &str) -> Result<(), KeyError> {
        self.tx
            .from
            .verify(&self.tx.signing_message(chain_id), &self.signature)
    }
}

impl Encode for SignedTx {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tx.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for SignedTx {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedTx {
            tx: Transaction::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Transaction {
        Transaction {
            from: key.public(),
            nonce: 3,
            fee: Amount(1),
            kind: TxKind::Transfer {
                to: Address([5; 20]),
                amount: Amount::grid(2),
            },
        }
    }

    #[test]
    fn signed_tx_round_trips_and_verifies() {
        let key = Keypair::from_seed([1; 32]);
        let signed = sample(&key).sign("test", &key);
        let decoded = SignedTx::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.verify("test"), Ok(()));
    }

    #[test]
    fn rejects_signature_from_another_chain() {
        let key = Keypair::from_seed([1; 32]);
        let signed = sample(&key).sign("other-chain", &key);
        assert_eq!(signed.verify("test"), Err(KeyError::BadSignature));
    }

    #[test]
    fn rejects_unknown_kind_tag() {
        let key = Keypair::from_seed([1; 32]);
        let mut bytes = sample(&key).to_bytes();
        bytes[32 + 8 + 16] = 99;
        assert!(matches!(
            Transaction::from_bytes(&bytes),
            Err(DecodeError::UnknownTag {
                what: "transaction kind",
                tag: 99
            })
        ));
    }
}

#[cfg(test)]
mod decode_fuzz {
    use super::*;
    use crate::block::Block;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes from the network never panic the decoder.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = SignedTx::from_bytes(&bytes);
            let _ = Block::from_bytes(&bytes);
        }

        /// A valid transaction with any one byte changed either fails to decode, fails to
        /// verify, or is the same transaction.
        #[test]
        fn a_flipped_byte_never_yields_a_different_valid_transaction(pos in 0usize..200, bit in 0u8..8) {
            let key = Keypair::from_seed([2; 32]);
            let tx = Transaction {
                from: key.public(),
                nonce: 9,
                fee: Amount(3),
                kind: TxKind::Transfer { to: Address([4; 20]), amount: Amount(77) },
            }
            .sign("fuzz", &key);
            let mut bytes = tx.to_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(decoded) = SignedTx::from_bytes(&bytes) {
                prop_assert!(decoded.verify("fuzz").is_err());
            }
        }
    }
}
