//! The batch market through the ledger: honest work is paid, cheaters are caught.
//!
//! Byzantine actors are named test doubles: `lying_executor`, `dissenting_council_member`,
//! `copying_council_member`, `vanishing_executor`, and those of `failures.rs`.

mod attacks;
mod council;
mod deadlines;
mod failures;
mod judging;
mod payments;
mod providers;
mod random;
mod replay;
mod scores;
mod services;
mod services_judged;
mod support;
