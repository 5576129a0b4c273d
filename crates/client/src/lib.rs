//! The client side of Gridwork: a typed client of the node API, and the encrypted keystore.
//!
//! The CLI, the worker agent and tests all reach a node through [`Client`], so the API is
//! exercised the way users exercise it.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod client;
mod curve;
mod data;
mod frames;
mod jobfile;
mod journal;
mod keystore;
mod peers;
mod registry;
mod render;
mod servicefile;
mod submit;
mod train;

pub use client::{Client, ClientError, EventStream, LogPosition};
pub use curve::{plot_loss, read_loss};
pub use data::{
    output_key, pull_tree_from, DataError, EmptyOutputs, Pinned, Progress, PullReport, PushReport,
    SourceReport, TransferOptions,
};
pub use frames::{assemble_frames, Assembled, FramesError};
/// Sources of chunks live beside the frames they answer with; re-exported for pulls.
pub use gridwork_api::frames::{ChunkSource, Fetch, SourceError};
pub use jobfile::{Input, JobFile, JobFileError, JobInput};
pub use keystore::{KeyInfo, Keystore, KeystoreError};
pub use peers::{announced_peers, AnnouncedPeers};
pub use registry::{KeyRegistry, RegistryError};
pub use render::RenderLayout;
pub use servicefile::ServiceFile;
pub use submit::{create_service, submit_job, CreatedService, SubmitError, Submitted};
