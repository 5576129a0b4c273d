//! Behaviour of the ledger through its public surface: genesis, blocks, transactions.

mod market;

use gridwork_protocol::{dev_keypair, BlockError, Genesis, Params, State, TxError};
use gridwork_types::{Address, Amount, Block, Keypair, SignedTx, Transaction, TxKind, GRID};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;
const CHAIN: &str = "test-chain";

fn params() -> Params {
    Params {
        unbonding_period_ms: 1_000,
        min_fee: Amount::ZERO,
        max_unbondings: 4,
        ..Params::default()
    }
}

fn genesis(accounts: u32) -> Genesis {
    Genesis::dev(CHAIN, T0, accounts, params())
}

fn tx(key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
    Transaction {
        from: key.public(),
        nonce,
        fee: Amount(0),
        kind,
    }
    .sign(CHAIN, key)
}

fn transfer(key: &Keypair, nonce: u64, to: Address, grid: u64) -> SignedTx {
    tx(
        key,
        nonce,
        TxKind::Transfer {
            to,
            amount: Amount::grid(grid),
        },
    )
}

/// Builds one block of `txs` at `t`, asserting that none was rejected.
fn block(state: &mut State, t: u64, txs: Vec<SignedTx>) -> Block {
    let built = state.build_block(t, Address([0; 20]), txs);
    assert!(built.rejected.is_empty(), "rejected: {:?}", built.rejected);
    built.block
}

/// The error a single transaction gets in a block.
fn rejection(state: &mut State, t: u64, signed: SignedTx) -> TxError {
    let mut built = state.build_block(t, Address([0; 20]), vec![signed]);
    assert_eq!(built.rejected.len(), 1);
    built.rejected.remove(0).1
}

#[test]
fn transfer_moves_balance_and_conserves_supply() {
    let (mut state, _) = State::genesis(&genesis(3)).unwrap();
    let (a, b) = (dev_keypair(0), dev_keypair(1));
    let before = state.account(&b.address()).balance;
    block(&mut state, T0 + 1, vec![transfer(&a, 0, b.address(), 12)]);
    assert_eq!(state.account(&b.address()).balance.0, before.0 + 12 * GRID);
    assert_eq!(state.account(&a.address()).nonce, 1);
    assert_eq!(state.check_conservation(), Ok(()));
}

#[test]
fn rejects_replayed_nonce() {
    let (mut state, _) = State::genesis(&genesis(2)).unwrap();
    let a = dev_keypair(0);
    let t = transfer(&a, 0, dev_keypair(1).address(), 1);
    block(&mut state, T0 + 1, vec![t.clone()]);
    assert!(matches!(
        rejection(&mut state, T0 + 2, t),
        TxError::NonceReplayed {
            expected: 1,
            got: 0,
            ..
        }
    ));
}

#[test]
fn rejects_future_nonce() {
    let (mut state, _) = State::genesis(&genesis(2)).unwrap();
    let t = transfer(&dev_keypair(0), 5, dev_keypair(1).address(), 1);
    assert!(matches!(
        rejection(&mut state, T0 + 1, t),
        TxError::NonceFuture {
            expected: 0,
            got: 5,
            ..
        }
    ));
}

#[test]
fn rejects_transfer_beyond_spendable_balance() {
    let (mut state, _) = State::genesis(&genesis(3)).unwrap();
    let poor = Keypair::from_seed([42; 32]);
    block(
        &mut state,
        T0 + 1,
        vec![transfer(&dev_keypair(0), 0, poor.address(), 2)],
    );
    let err = rejection(
        &mut state,
        T0 + 2,
        transfer(&poor, 0, dev_keypair(1).address(), 3),
    );
    assert!(matches!(err, TxError::InsufficientBalance { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("needs 3 GRID but can spend 2 GRID"),
        "{err}"
    );
}

#[test]
fn vesting_tokens_are_not_spendable_before_the_cliff() {
    let (mut state, _) = State::genesis(&genesis(3)).unwrap();
    // The last dev account vests with a one-minute cliff and ten-minute end.
    let vested = dev_keypair(2);
    let err = rejection(
        &mut state,
        T0 + 1,
        transfer(&vested, 0, dev_keypair(0).address(), 1),
    );
    assert!(matches!(err, TxError::InsufficientBalance { .. }));
    block(
        &mut state,
        T0 + 600_000,
        vec![transfer(&vested, 0, dev_keypair(0).address(), 1_000_000)],
    );
    assert_eq!(state.account(&vested.address()).balance, Amount::ZERO);
}

#[test]
fn vault_lock_unbond_withdraw_respects_the_unbonding_period() {
    let (mut state, _) = State::genesis(&genesis(2)).unwrap();
    let a = dev_keypair(0);
    block(
        &mut state,
        T0 + 10,
        vec![tx(
            &a,
            0,
            TxKind::StakeLock {
                amount: Amount::grid(5),
            },
        )],
    );
    assert_eq!(state.account(&a.address()).stake_locked, Amount::grid(5));

    let err = rejection(
        &mut state,
        T0 + 11,
        tx(
            &a,
            1,
            TxKind::StakeUnbond {
                amount: Amount::grid(6),
            },
        ),
    );
    assert!(matches!(err, TxError::UnbondExceedsLocked { .. }), "{err}");

    block(
        &mut state,
        T0 + 20,
        vec![tx(
            &a,
            1,
            TxKind::StakeUnbond {
                amount: Amount::grid(2),
            },
        )],
    );
    let acct = state.account(&a.address());
    assert_eq!(
        (acct.stake_locked, acct.unbonding_total()),
        (Amount::grid(3), Amount::grid(2))
    );

    let err = rejection(&mut state, T0 + 500, tx(&a, 2, TxKind::StakeWithdraw));
    assert_eq!(
        err,
        TxError::NothingToWithdraw {
            now_ms: T0 + 500,
            next_maturity_ms: Some(T0 + 1_020)
        }
    );

    let balance = state.account(&a.address()).balance;
    block(
        &mut state,
        T0 + 1_020,
        vec![tx(&a, 2, TxKind::StakeWithdraw)],
    );
    let acct = state.account(&a.address());
    assert_eq!(acct.balance.0, balance.0 + 2 * GRID);
    assert!(acct.unbonding.is_empty());
    assert_eq!(state.check_conservation(), Ok(()));
}

#[test]
fn fees_go_to_the_rewards_pool() {
    let mut g = genesis(2);
    g.params.min_fee = Amount(10);
    let (mut state, _) = State::genesis(&g).unwrap();
    let a = dev_keypair(0);
    let cheap = Transaction {
        from: a.public(),
        nonce: 0,
        fee: Amount(9),
        kind: TxKind::StakeWithdraw,
    };
    assert!(matches!(
        rejection(&mut state, T0 + 1, cheap.sign(CHAIN, &a)),
        TxError::FeeTooLow { .. }
    ));
    let pool = state.rewards_pool();
    let t = Transaction {
        from: a.public(),
        nonce: 0,
        fee: Amount(10),
        kind: TxKind::Transfer {
            to: dev_keypair(1).address(),
            amount: Amount(1),
        },
    };
    block(&mut state, T0 + 1, vec![t.sign(CHAIN, &a)]);
    assert_eq!(state.rewards_pool().0, pool.0 + 10);
    assert_eq!(state.check_conservation(), Ok(()));
}

#[test]
fn replaying_blocks_on_a_fresh_state_gives_the_same_roots() {
    let (mut producer, genesis_block) = State::genesis(&genesis(4)).unwrap();
    let keys: Vec<Keypair> = (0..4).map(dev_keypair).collect();
    let mut blocks = Vec::new();
    for round in 0..5u64 {
        let txs = (0..3)
            .map(|i| transfer(&keys[i], round, keys[(i + 1) % 4].address(), 1 + round))
            .collect();
        blocks.push(block(&mut producer, T0 + 100 * (round + 1), txs));
    }
    for _ in 0..2 {
        let (mut replica, replica_genesis) = State::genesis(&genesis(4)).unwrap();
        assert_eq!(replica_genesis, genesis_block);
        for b in &blocks {
            replica.apply_block(b).unwrap();
            assert_eq!(replica.root(), b.header.state_root);
        }
        assert_eq!(replica.head_hash(), producer.head_hash());
        assert_eq!(replica.root(), producer.root());
    }
}

#[test]
fn refused_block_leaves_state_untouched() {
    let (mut producer, _) = State::genesis(&genesis(3)).unwrap();
    let (a, b) = (dev_keypair(0), dev_keypair(1));
    let good = block(
        &mut producer,
        T0 + 1,
        vec![
            transfer(&a, 0, b.address(), 1),
            transfer(&b, 0, a.address(), 1),
        ],
    );

    let (mut replica, _) = State::genesis(&genesis(3)).unwrap();
    let root = replica.root();

    let mut forged = good.clone();
    forged.txs[1].signature = a.sign(b"not this");
    let hashes: Vec<_> = forged.txs.iter().map(SignedTx::hash).collect();
    forged.header.tx_root = gridwork_types::tx_root(&hashes);
    assert!(matches!(
        replica.apply_block(&forged),
        Err(BlockError::InvalidTx {
            index: 1,
            error: TxError::BadSignature { .. }
        })
    ));

    let mut wrong_root = good.clone();
    wrong_root.header.state_root = gridwork_types::Hash([1; 32]);
    assert!(matches!(
        replica.apply_block(&wrong_root),
        Err(BlockError::StateRootMismatch { .. })
    ));
    assert_eq!(replica.root(), root);
    assert_eq!(replica.account(&a.address()).nonce, 0);

    let mut wrong_txs = good.clone();
    wrong_txs.txs.pop();
    assert_eq!(
        replica.apply_block(&wrong_txs),
        Err(BlockError::TxRootMismatch)
    );

    replica.apply_block(&good).unwrap();
    assert_eq!(replica.root(), producer.root());
    assert!(matches!(
        replica.apply_block(&good),
        Err(BlockError::WrongHeight { .. })
    ));
}

#[test]
fn rejects_block_whose_time_goes_backwards() {
    let (mut producer, _) = State::genesis(&genesis(2)).unwrap();
    let mut b = block(&mut producer, T0 + 5, vec![]);
    b.header.timestamp_ms = T0 - 1;
    let (mut replica, _) = State::genesis(&genesis(2)).unwrap();
    assert!(matches!(
        replica.apply_block(&b),
        Err(BlockError::TimeWentBackwards { .. })
    ));
}

#[test]
fn genesis_must_sum_to_supply() {
    let mut g = genesis(2);
    g.total_supply = Amount(g.total_supply.0 - 1);
    assert!(State::genesis(&g).is_err());
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u128,
    },
    Lock {
        who: usize,
        amount: u128,
    },
    Unbond {
        who: usize,
        amount: u128,
    },
    Withdraw {
        who: usize,
    },
    Replay,
}

fn op() -> impl Strategy<Value = Op> {
    let amount = prop_oneof![0u128..10, 0u128..3 * GRID, 0u128..2_000_000 * GRID];
    prop_oneof![
        (0usize..5, 0usize..6, amount.clone()).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (0usize..5, amount.clone()).prop_map(|(who, amount)| Op::Lock { who, amount }),
        (0usize..5, amount).prop_map(|(who, amount)| Op::Unbond { who, amount }),
        (0usize..5).prop_map(|who| Op::Withdraw { who }),
        Just(Op::Replay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Supply is conserved, no balance goes below what still vests, replays never apply, and a
    /// replica applying the same blocks reaches the same root.
    #[test]
    fn random_workloads_conserve_supply_and_replay_deterministically(
        blocks in prop::collection::vec((prop::collection::vec(op(), 0..8), 0u64..400_000), 1..12)
    ) {
        let g = genesis(4);
        let (mut state, _) = State::genesis(&g).unwrap();
        let (mut replica, _) = State::genesis(&g).unwrap();
        let mut keys: Vec<Keypair> = (0..4).map(dev_keypair).collect();
        keys.push(Keypair::from_seed([77; 32]));
        let outsider = Keypair::from_seed([78; 32]).address();
        let mut nonces = [0u64; 5];
        let mut last_applied: Option<SignedTx> = None;
        let mut t = T0;
        for (ops, dt) in blocks {
            t += dt;
            let mut txs = Vec::new();
            for op in ops {
                let (who, kind) = match op {
                    Op::Transfer { from, to, amount } => {
                        let to = keys.get(to).map_or(outsider, Keypair::address);
                        (from, TxKind::Transfer { to, amount: Amount(amount) })
                    }
                    Op::Lock { who, amount } => (who, TxKind::StakeLock { amount: Amount(amount) }),
                    Op::Unbond { who, amount } => (who, TxKind::StakeUnbond { amount: Amount(amount) }),
                    Op::Withdraw { who } => (who, TxKind::StakeWithdraw),
                    Op::Replay => {
                        if let Some(old) = &last_applied { txs.push(old.clone()); }
                        continue;
                    }
                };
                txs.push(tx(&keys[who], nonces[who], kind));
            }
            let built = state.build_block(t, Address([0; 20]), txs);
            for signed in &built.block.txs {
                let who = keys.iter().position(|k| k.public() == signed.tx.from).unwrap();
                prop_assert_eq!(signed.tx.nonce, nonces[who]);
                nonces[who] += 1;
            }
            for (signed, err) in &built.rejected {
                if Some(signed) == last_applied.as_ref() {
                    let is_replay = matches!(err, TxError::NonceReplayed { .. });
                    prop_assert!(is_replay, "replay got {}", err);
                }
            }
            if let Some(last) = built.block.txs.last() { last_applied = Some(last.clone()); }
            prop_assert_eq!(state.check_conservation(), Ok(()));
            for (_, account) in state.accounts() {
                let locked = account.vesting.as_ref().map_or(Amount::ZERO, |v| v.locked(t));
                prop_assert!(account.balance >= locked, "balance below vesting lock");
            }
            replica.apply_block(&built.block).unwrap();
            prop_assert_eq!(replica.root(), state.root());
        }
    }
}
