//! What a transaction does to its sender: the fee, the nonce and the transfer, whatever the market
//! makes of it.

use gridwork_types::{Address, Amount, Transaction, TxKind};

use crate::account::{Account, Unbonding};
use crate::error::TxError;
use crate::genesis::Params;
use crate::receipt::Event;

/// What a transaction does beyond the sender's own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Balance to add to another account (a transfer's recipient).
    pub to: Option<(Address, Amount)>,
    /// Fee for the rewards pool.
    pub fee: Amount,
    /// What happened to the sender's account (market transactions report theirs when
    /// they run against the whole state).
    pub event: Option<Event>,
}

/// Applies the sender's side of `tx` to `account` (nonce, fee, debit, vault), as of block time
/// `now_ms`. On error `account` is unchanged. The mempool uses this to check a transaction
/// against the sender's committed account plus its pending transactions.
pub fn apply_to_sender(
    account: &mut Account,
    tx: &Transaction,
    params: &Params,
    now_ms: u64,
) -> Result<Credit, TxError> {
    let sender = tx.sender();
    if tx.nonce < account.nonce {
        return Err(TxError::NonceReplayed {
            sender,
            expected: account.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > account.nonce {
        return Err(TxError::NonceFuture {
            sender,
            expected: account.nonce,
            got: tx.nonce,
        });
    }
    if tx.fee < params.min_fee {
        return Err(TxError::FeeTooLow {
            min: params.min_fee,
            got: tx.fee,
        });
    }
    let spendable = account.spendable(now_ms);
    let debit = |amount: Amount| -> Result<Amount, TxError> {
        let needed = amount.checked_add(tx.fee).ok_or(TxError::Overflow)?;
        if needed > spendable {
            return Err(TxError::InsufficientBalance {
                sender,
                needed,
                spendable,
            });
        }
        Ok(needed)
    };
    let mut next = account.clone();
    let mut state_fee = Amount::ZERO;
    let (to, event) = match &tx.kind {
        TxKind::Transfer { to, amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            next.balance = Amount(next.balance.0 - debit(*amount)?.0);
            (
                Some((*to, *amount)),
                Some(Event::Transfer {
                    from: sender,
                    to: *to,
                    amount: *amount,
                }),
            )
        }
        TxKind::StakeLock { amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            next.balance = Amount(next.balance.0 - debit(*amount)?.0);
            next.stake_locked = next
                .stake_locked
                .checked_add(*amount)
                .ok_or(TxError::Overflow)?;
            (
                None,
                Some(Event::StakeLocked {
                    account: sender,
                    amount: *amount,
                }),
            )
        }
        TxKind::StakeUnbond { amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            if *amount > next.stake_locked {
                return Err(TxError::UnbondExceedsLocked {
                    requested: *amount,
                    locked: next.stake_locked,
                });
            }
            if next.unbonding.len() >= params.max_unbondings as usize {
                return Err(TxError::TooManyUnbondings {
                    max: params.max_unbondings,
                });
            }
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            next.stake_locked = Amount(next.stake_locked.0 - amount.0);
            let matures_at_ms = now_ms.saturating_add(params.unbonding_period_ms);
            next.unbonding.push(Unbonding {
                amount: *amount,
                matures_at_ms,
            });
            (
                None,
                Some(Event::StakeUnbonding {
                    account: sender,
                    amount: *amount,
                    matures_at_ms,
                }),
            )
        }
        TxKind::StakeWithdraw => {
            let (matured, waiting): (Vec<Unbonding>, Vec<Unbonding>) = next
                .unbonding
                .iter()
                .cloned()
                .partition(|u| u.matures_at_ms <= now_ms);
            if matured.is_empty() {
                return Err(TxError::NothingToWithdraw {
                    now_ms,
                    next_maturity_ms: waiting.iter().map(|u| u.matures_at_ms).min(),
                });
            }
            let amount = Amount(matured.iter().map(|u| u.amount.0).sum());
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            next.balance = next.balance.checked_add(amount).ok_or(TxError::Overflow)?;
            next.unbonding = waiting;
            (
                None,
                Some(Event::StakeWithdrawn {
                    account: sender,
                    amount,
                }),
            )
        }
        TxKind::SubmitJob {
            deposit,
            prescription,
        } => {
            // The state fee (for every task and input the job adds to the ledger) goes to the
            // rewards pool with the fee; the deposit goes to escrow.
            state_fee = params.state_fee(prescription).ok_or(TxError::Overflow)?;
            let total = deposit.checked_add(state_fee).ok_or(TxError::Overflow)?;
            next.balance = Amount(next.balance.0 - debit(total)?.0);
            (None, None)
        }
        TxKind::CreateService { deposit, spec } => {
            // One state entry for the service and one for each input, like a job's.
            state_fee = params
                .state_fee_per_entry
                .0
                .checked_mul(1 + spec.data.len() as u128)
                .map(Amount)
                .ok_or(TxError::Overflow)?;
            let total = deposit.checked_add(state_fee).ok_or(TxError::Overflow)?;
            next.balance = Amount(next.balance.0 - debit(total)?.0);
            (None, None)
        }
        TxKind::FundService { amount, .. } => {
            next.balance = Amount(next.balance.0 - debit(*amount)?.0);
            (None, None)
        }
        TxKind::Subscribe { .. } => {
            // The subscription (and the pay record of a member) is state it adds.
            state_fee = params.state_fee_per_entry;
            next.balance = Amount(next.balance.0 - debit(state_fee)?.0);
            (None, None)
        }
        TxKind::CloseService { .. }
        | TxKind::Unsubscribe { .. }
        | TxKind::DropMember { .. }
        | TxKind::SettleStream { .. }
        | TxKind::DisputeResponses { .. }
        | TxKind::JudgeResponses { .. }
        | TxKind::AnnounceGateway { .. }
        | TxKind::RegisterProvider { .. }
        | TxKind::AnnouncePeer { .. }
        | TxKind::Heartbeat
        | TxKind::CancelJob { .. }
        | TxKind::Bid { .. }
        | TxKind::Commit { .. }
        | TxKind::Reveal { .. }
        | TxKind::Judge { .. }
        | TxKind::Checkpoints { .. } => {
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            (None, None)
        }
    };
    next.nonce += 1;
    if next.public_key.is_none() {
        next.public_key = Some(tx.from);
    }
    *account = next;
    Ok(Credit {
        to,
        fee: Amount(tx.fee.0 + state_fee.0),
        event,
    })
}
