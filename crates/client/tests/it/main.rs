//! The node's API, exercised through the client as users and workers exercise it.

mod api;
mod exact;
mod jobs;
mod ledger;
mod pull;
mod push;
mod support;

// `exact` reaches these as `super::...`.
use support::{CutSource, TestNode};
