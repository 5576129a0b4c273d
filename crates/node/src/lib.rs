//! The Gridwork node: mempool, block production, durable commit, HTTP API and event stream.
//!
//! [`Node`] assembles the services ([`Ledger`], [`DataService`], [`Keys`], [`TaskRecords`]);
//! [`api::router`] puts them on HTTP, building the API's views from their domain types
//! ([`api::views`]); [`serve`] runs both. See `docs/architecture.md` for the flows.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
mod clock;
mod config;
mod data;
mod error;
mod keys;
mod ledger;
mod logs;
mod mempool;
mod metrics;
mod node;
mod pinfile;
mod records;
mod serve;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, NodeConfig, DEFAULT_LISTEN};
pub use logs::LogError;
pub use mempool::{Mempool, MempoolError};

/// Default for [`NodeConfig::log_limit_bytes`]: 4 MiB per run and stream.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 4 << 20;

/// Default for [`NodeConfig::log_retention_secs`]: a week after a closed job's last log write.
pub const DEFAULT_LOG_RETENTION_SECS: u64 = 7 * 24 * 3600;
pub use data::{DataService, GcReport};
pub use error::{AdmitError, NodeError};
pub use keys::Keys;
pub use ledger::{
    AccountNow, BlockId, ChainFacts, Committed, JobRecord, Ledger, ProviderNow, Subscription,
    TxLookup, RECENT_EVENTS,
};
pub use node::{now_ms, read_genesis, run, GenesisSource, Node, DEV_UNBONDING_PERIOD_MS};
pub use records::TaskRecords;

pub use serve::{serve, serve_beside, serve_with, ServeLimits};
