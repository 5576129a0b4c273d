//! Packing and unpacking trees: round trips, minimal re-pushes, keys, forgeries, bad paths,
//! full stores.

mod exact;
mod store;
mod support;
mod trees;

// `exact` reaches these as `super::...`.
use support::{put_tree_by_hand, P};
