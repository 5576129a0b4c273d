//! The Gridwork ledger as a pure, deterministic state machine.
//!
//! [`State::apply_block`] takes a header and its transactions and either applies all of them
//! or none. It reads no clock, no randomness, no environment and does no I/O: time is the
//! header's timestamp. The same genesis and the same blocks give the same state root on every
//! machine, which is what lets one sequencer today and a BFT validator set tomorrow run it.
//!
//! # Invariants
//!
//! - Conservation: the total supply fixed at genesis equals the sum over accounts of balance,
//!   locked stake and unbonding stake, plus the node-rewards pool ([`State::check_conservation`]).
//! - An account's balance never drops below its still-vesting amount: only the spendable part
//!   ([`Account::spendable`]) can be transferred, locked or paid as fees.
//! - Nonces: a transaction applies only with exactly the sender's next nonce.
//!
//! # Modules kept open for the market
//!
//! Jobs, tasks, bids, councils and services will be new [`gridwork_types::TxKind`]s, new
//! state maps next to the accounts (each with its own part of the state root) and new
//! [`Event`]s; the block-level transitions (auction deadlines, rewards) hook into
//! [`State::apply_block`] before the transactions run.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod account;
mod error;
mod genesis;
mod hashed_map;
mod market;
mod receipt;
mod state;

pub use account::{Account, Unbonding, Vesting};
pub use error::{BlockError, GenesisError, TxError};
pub use genesis::{
    dev_keypair, Allocation, Genesis, Params, VestingSchedule, EMISSION_PERIOD_120_MONTHS_MS,
};
pub use market::{
    largest_council, max_task_cost, validate_prescription, ArchivedJob, BidRecord, CommitRecord,
    Failures, Job, JudgeRecord, Phase, PoolStatus, Provider, Reason, RevealRecord, Task, TaskKey,
    TaskNote, Undecided, SCORE_CHECK_MIN_S, SCORE_SLACK, SCORE_STRIKES,
};
pub use market::{
    validate_service, MemberPay, Service, ServiceStatus, StatusPeriod, Subscription,
    LEAVER_DISPUTE_MS, MAX_GATEWAY_URL, MAX_MEMBERS_EVER, MAX_PERIODS, MAX_SUBSCRIBERS,
    SETTLE_WINDOW_MS,
};
pub use receipt::{Event, Receipt};
pub use state::{
    apply_to_sender, service_archive_key, BlockOutcome, BuiltBlock, Credit, State, StateChanges,
    PREFIX_ARCHIVE, SERVICE_ARCHIVE_TAG,
};
