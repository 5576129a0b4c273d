//! The JSON documents of the node's REST API (`/v1/...`), shared by the node that serves them
//! and the client that reads them.
//!
//! Amounts are strings of base units; hashes are lowercase hex; addresses are bech32.
//! Transactions travel as hex of their canonical encoding ([`SubmitTx`]) so that what a
//! client signed is exactly what the node verifies.
#![deny(missing_docs, unreachable_pub)]

pub mod exposition;
pub mod frames;
#[cfg(feature = "openapi")]
mod openapi;

mod data;
mod ledger;
mod market;
mod signing;
mod status;

pub use data::{ChunkIds, ChunksStored, KeyGrants, MissingChunks, PinAnswer, PinView, StorageView};
pub use gridwork_protocol::{Phase, PoolStatus, ServiceStatus};
/// A data key wrapped for one recipient (see docs/data-plane.md): the wire form is the data
/// plane's own.
pub use gridwork_transfer::WrappedKey as KeyGrant;
pub use ledger::{
    AccountView, BlockEvent, BlockList, BlockView, SubmitTx, Submitted, TxKindView, TxState,
    TxStatus, TxView,
};
pub use market::{
    decline_message, log_message, BidView, Decline, JobList, JobStatus, JobView, LogAppended,
    LogStream, MemberView, PeriodView, PostDecline, PostLog, ProviderList, ProviderView,
    ServiceList, ServiceView, SubscriberView, TaskLog, TaskView, MAX_PAGE,
};
pub use signing::{
    signature_header, signed_request_message, verify_signature_header, SignatureProblem,
    DIGEST_HEADER, KEY_PROOF_HEADER, SIGNATURE_HEADER, SIGNATURE_WINDOW_MS,
};
pub use status::{ChainInfo, ErrorBody, ErrorDetail, Health, HealthStatus};
