//! When blocks are cut and how they become final.
//!
//! [`Consensus`] is the boundary the node drives. [`Solo`] is the one-sequencer engine of a
//! single node: it proposes a block when transactions wait (or a ledger deadline is due) and
//! the block interval has passed (or a full block is ready), never a block with nothing to
//! do, and a proposed block is final at once.
//! A BFT engine for many validators will implement the same trait; it orders blocks and
//! leaves their meaning to the ledger.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

use gridwork_types::{Address, Header};

/// Why consensus did not finalize a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// This node may not propose at this height.
    #[error("{proposer} is not the proposer at height {height}")]
    NotProposer {
        /// The height.
        height: u64,
        /// Who tried.
        proposer: Address,
    },
}

/// The consensus engine a node runs.
pub trait Consensus: Send {
    /// Whether to propose a block now, with `pending` transactions waiting, `since_last_ms`
    /// since the last block, and `deadline_due` when a ledger deadline (an auction closing,
    /// a missed commitment) has passed and needs a block to take effect.
    fn should_propose(&self, pending: usize, since_last_ms: u64, deadline_due: bool) -> bool;

    /// The most transactions one block may carry.
    fn max_block_txs(&self) -> usize;

    /// The address this node proposes as.
    fn proposer(&self) -> Address;

    /// Finalizes a block this node built. Solo finalizes at once; a BFT engine after a quorum.
    fn finalize(&mut self, header: &Header) -> Result<(), ConsensusError>;
}

/// One sequencer: the default for a node on one machine.
#[derive(Debug, Clone)]
pub struct Solo {
    interval_ms: u64,
    max_block_txs: usize,
    proposer: Address,
}

impl Solo {
    /// A sequencer that cuts a block every `interval_ms` while transactions wait, or sooner
    /// when `max_block_txs` are ready.
    pub fn new(interval_ms: u64, max_block_txs: usize, proposer: Address) -> Self {
        Self {
            interval_ms,
            max_block_txs: max_block_txs.max(1),
            proposer,
        }
    }
}

impl Consensus for Solo {
    fn should_propose(&self, pending: usize, since_last_ms: u64, deadline_due: bool) -> bool {
        let ready = pending > 0 || deadline_due;
        ready && (since_last_ms >= self.interval_ms || pending >= self.max_block_txs)
    }

    fn max_block_txs(&self) -> usize {
        self.max_block_txs
    }

    fn proposer(&self) -> Address {
        self.proposer
    }

    fn finalize(&mut self, header: &Header) -> Result<(), ConsensusError> {
        if header.proposer != self.proposer {
            return Err(ConsensusError::NotProposer {
                height: header.height,
                proposer: header.proposer,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_never_proposes_an_empty_block() {
        let solo = Solo::new(200, 100, Address([1; 20]));
        assert!(!solo.should_propose(0, 10_000, false));
    }

    #[test]
    fn solo_proposes_for_a_due_deadline_without_transactions() {
        let solo = Solo::new(200, 100, Address([1; 20]));
        assert!(solo.should_propose(0, 200, true));
        assert!(!solo.should_propose(0, 100, true));
    }

    #[test]
    fn solo_waits_for_the_interval_unless_a_block_is_full() {
        let solo = Solo::new(200, 100, Address([1; 20]));
        assert!(!solo.should_propose(5, 199, false));
        assert!(solo.should_propose(5, 200, false));
        assert!(solo.should_propose(100, 0, false));
    }
}
