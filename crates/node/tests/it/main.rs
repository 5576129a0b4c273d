//! The node's services through their public surface, and its API under hostile clients
//! (`edges`).

mod data;
mod edges;
mod ledger;

use gridwork_consensus::Solo;
use gridwork_node::{AdmitError, GenesisSource, Node, NodeConfig, NodeError};
use gridwork_protocol::{dev_keypair, Genesis, Params};
use gridwork_storage::{FailingStore, RedbStore, StorageError, Store};
use gridwork_types::{Address, Amount, SignedTx, Transaction, TxKind};

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.join("data"),
        ..NodeConfig::default()
    }
}

fn transfer(chain: &str, from: u32, nonce: u64, grid: u64) -> SignedTx {
    let key = dev_keypair(from);
    Transaction {
        from: key.public(),
        nonce,
        fee: Amount::ZERO,
        kind: TxKind::Transfer {
            to: Address([9; 20]),
            amount: Amount::grid(grid),
        },
    }
    .sign(chain, &key)
}
