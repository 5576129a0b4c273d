//! The `gridwork` binary, driven as a user drives it.

mod data;
mod jobs;
mod node;
mod readme;
mod sandbox;
mod support;

// `readme` reaches these as `super::...`.
use support::{NodeProcess, BIN};
