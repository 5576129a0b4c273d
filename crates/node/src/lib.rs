//! The Gridwork node: mempool, block production, durable commit, HTTP API and event stream.
//!
//! [`Node`] holds the ledger and serves it; [`api::router`] puts it on HTTP; [`serve`] runs
//! both. See `docs/architecture.md` for the flows.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
mod clock;
mod config;
mod logs;
mod mempool;
mod metrics;
mod node;
mod pinfile;
mod serve;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, NodeConfig, DEFAULT_LISTEN};
pub use logs::LogError;
pub use mempool::{Mempool, MempoolError};

/// Default for [`NodeConfig::log_limit_bytes`]: 4 MiB per run and stream.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 4 << 20;

/// Default for [`NodeConfig::log_retention_secs`]: a week after a closed job's last log write.
pub const DEFAULT_LOG_RETENTION_SECS: u64 = 7 * 24 * 3600;
pub use node::{
    now_ms, read_genesis, AdmitError, BlockId, GcReport, GenesisSource, Node, NodeError,
    Subscription, DEV_UNBONDING_PERIOD_MS, RECENT_EVENTS,
};

pub use serve::{serve, serve_with, ServeLimits};
