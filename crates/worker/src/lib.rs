//! The provider's side of Gridwork: the worker agent.
//!
//! [`probe`] finds what the machine offers and [`software`] the programs it offers tasks; [`PricingPolicy`] decides bids; [`sandbox`]
//! runs task programs confined; [`Worker`] ties them to the node; [`WorkerMetrics`] counts
//! its runs for `/metrics` ([`serve_metrics`]). See the module docs of `agent.rs` for the
//! lifecycle.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod agent;
pub mod cgroup;
mod confine;
pub mod container;
pub mod docker;
mod logs;
mod metrics;
mod policy;
mod probe;
pub mod sandbox;
pub mod score;
pub mod serve;
pub mod software;
pub mod supervise;

pub use agent::{Behavior, CacheLimit, P2pConfig, Worker, WorkerConfig, WorkerError};
pub use confine::{
    confine, confine_and_exec, gpu_devices, pid_init, readable_roots, unsearchable_for_tasks,
    ConfineError, Confinement, LandlockStatus, SandboxCheck, SERVICE_SOCKET,
};
pub use metrics::{serve_metrics, GpuSample, WorkerMetrics};
pub use policy::{Decision, PricingPolicy, DEFAULT_CACHED_DISCOUNT_PCT, DEFAULT_MAX_FEE};
pub use probe::{probe, probe_at, probe_report, ProbeReport};
