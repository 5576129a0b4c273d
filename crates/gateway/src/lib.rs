//! The gateway of a Gridwork service (a stream task): where a requester's users send their
//! requests, and where the service's council members fetch them and send their responses.
//!
//! [`Dispatcher`] is the core: every request goes to every member, the answer follows the
//! service's response method, every response is checked against its member's signature and
//! acknowledged with a cumulative receipt the ledger pays, and what the council did wrong is
//! gathered for the ledger (disputes, late members).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod dispatch;
mod http;
mod run;

pub use dispatch::{
    Answer, Council, Dispatcher, Evidence, PipeReader, Refusal, Relay, Reply, Stats, Streamed,
    Work, CONNECTED_WITHIN, MAX_CASES, MAX_CASE_BYTES, MAX_OPEN, MAX_STREAM_BYTES, STATS_WINDOW,
};
pub use http::{router, routes, ApiKeys, Gateways, MAX_REQUEST_BYTES, MAX_WAIT};
pub use run::{announce, keep, refresh_council, GatewayKey, COUNCIL_EVERY};
