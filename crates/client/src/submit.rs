//! Submitting a job file: its inputs pushed (or granted) so that only the node and then the
//! task's executor and council can read them, its cost checked, its deposit locked.

use std::path::Path;

use gridwork_protocol::{max_task_cost, validate_prescription, TxError};
use gridwork_types::{Amount, DataInput, Hash, Keypair, TxKind};

use crate::registry::{KeyRegistry, RegistryError};
use crate::{Client, ClientError, DataError, Input, JobFile, TransferOptions};

/// Why a job was not submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The node failed or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An input could not be pushed or its key found.
    #[error("input {input}: {source}")]
    Input {
        /// The input (a path or a content id).
        input: String,
        /// Why.
        source: DataError,
    },
    /// An input's data key could not be found or remembered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The job breaks the chain's rules.
    #[error("invalid job: {0}")]
    Invalid(#[from] TxError),
    /// The job's largest cost or state fee does not fit in an amount.
    #[error("the job's {what} overflows; {fix}")]
    Overflow {
        /// Which figure.
        what: &'static str,
        /// What to change.
        fix: &'static str,
    },
    /// The deposit does not cover every task at its largest cost.
    #[error(
        "deposit {deposit} GRID does not cover the job's maximum cost of {required} GRID ({tasks} tasks at up to {per_task} GRID each); raise the deposit or lower max_price"
    )]
    DepositTooLow {
        /// The deposit offered.
        deposit: Amount,
        /// What every task at its largest cost needs.
        required: Amount,
        /// Tasks.
        tasks: u64,
        /// The largest cost of one task.
        per_task: Amount,
    },
    /// The deposit does not cover a service's reserve.
    #[error(
        "deposit {deposit} GRID does not cover the service's reserve of {reserve} GRID (max_unsettled for every council seat, with the market fee); raise the deposit or lower max_unsettled"
    )]
    ServiceDepositTooLow {
        /// The deposit offered.
        deposit: Amount,
        /// The reserve.
        reserve: Amount,
    },
}

/// A job submitted.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The job id (its transaction's hash).
    pub id: Hash,
    /// Tasks.
    pub tasks: u64,
    /// The escrow locked.
    pub deposit: Amount,
    /// The most the job can cost.
    pub max_cost: Amount,
    /// Paid to the rewards pool for the state it adds, not refunded.
    pub state_fee: Amount,
    /// What the pushes of its inputs could not keep (special files, modes), one line each.
    pub not_kept: Vec<String>,
}

/// Submits `job` as `key`, paying `fee`: pushes each input given as a path (under the data
/// key `registry` remembers for it, so a second push moves only changes) or grants the node
/// an input given by content id (the requester must hold a grant), binds each input's key to
/// the job by its claim, checks the job against the chain's rules and locks `deposit` (by
/// default the job file's, else its largest cost). `pushing` is told each path as its push
/// starts.
pub async fn submit_job(
    client: &Client,
    key: &Keypair,
    mut job: JobFile,
    deposit: Option<Amount>,
    fee: Amount,
    registry: &KeyRegistry,
    pushing: impl Fn(&Path),
) -> Result<Submitted, SubmitError> {
    let chain = client.chain().await?;
    let (data, not_kept) =
        push_inputs(client, key, &job.inputs, registry, &chain.node_key, pushing).await?;
    job.prescription.data = data;
    validate_prescription(&job.prescription, &chain.params)?;
    let per_task =
        max_task_cost(&job.prescription, &chain.params).ok_or(SubmitError::Overflow {
            what: "maximum cost",
            fix: "lower max_price or the deadline",
        })?;
    let tasks = job.prescription.instructions.task_count();
    let required = Amount(per_task.0.saturating_mul(u128::from(tasks)));
    let deposit = deposit.or(job.deposit).unwrap_or(required);
    if deposit < required {
        return Err(SubmitError::DepositTooLow {
            deposit,
            required,
            tasks,
            per_task,
        });
    }
    let state_fee = chain
        .params
        .state_fee(&job.prescription)
        .ok_or(SubmitError::Overflow {
            what: "state fee",
            fix: "split it into smaller jobs",
        })?;
    let kind = TxKind::SubmitJob {
        prescription: job.prescription,
        deposit,
    };
    let id = client.sign_and_send(key, fee, kind).await?;
    Ok(Submitted {
        id,
        tasks,
        deposit,
        max_cost: required,
        state_fee,
        not_kept,
    })
}

/// Pushes each input given as a path (under the data key `registry` remembers for it) or
/// grants the node one given by content id (`key` must hold a grant), each bound to `key`'s
/// address by its claim: the inputs as the ledger names them, and what the pushes could not
/// keep. `pushing` is told each path as its push starts.
async fn push_inputs(
    client: &Client,
    key: &Keypair,
    inputs: &[crate::JobInput],
    registry: &KeyRegistry,
    node_key: &gridwork_types::PublicKey,
    pushing: impl Fn(&Path),
) -> Result<(Vec<DataInput>, Vec<String>), SubmitError> {
    let mut data = Vec::with_capacity(inputs.len());
    let mut not_kept = Vec::new();
    for input in inputs {
        let (cid, data_key) =
            match &input.source {
                Input::Cid(cid) => {
                    let data_key = client.granted_key(cid, key).await.map_err(|source| {
                        SubmitError::Input {
                            input: cid.to_string(),
                            source,
                        }
                    })?;
                    client.share_key(cid, &data_key, node_key).await?;
                    (*cid, data_key)
                }
                Input::Path(path) => {
                    pushing(path);
                    let pushed = push_input(client, registry, path, key, node_key).await?;
                    not_kept.extend(pushed.2);
                    (pushed.0, pushed.1)
                }
            };
        // The node hands the key to the executor and council only against this claim.
        let claim = data_key.input_claim(&cid, &key.address());
        data.push(DataInput {
            cid,
            claim,
            name: input.name.clone(),
        });
    }
    Ok((data, not_kept))
}

/// A service created.
#[derive(Debug, Clone)]
pub struct CreatedService {
    /// The service id (its transaction's hash).
    pub id: Hash,
    /// The escrow locked.
    pub deposit: Amount,
    /// The escrow that keeps it up (`max_unsettled` for every seat, with the market fee).
    pub reserve: Amount,
    /// Paid to the rewards pool for the state it adds, not refunded.
    pub state_fee: Amount,
    /// What the pushes of its inputs could not keep, one line each.
    pub not_kept: Vec<String>,
}

/// Creates the service of `file` as `key`, paying `fee`: pushes its inputs as
/// [`submit_job`] does (the node hands their keys to its council as seats are drawn), checks
/// it against the chain's rules and locks `deposit` (by default the file's, else its reserve).
pub async fn create_service(
    client: &Client,
    key: &Keypair,
    mut file: crate::ServiceFile,
    deposit: Option<Amount>,
    fee: Amount,
    registry: &KeyRegistry,
    pushing: impl Fn(&Path),
) -> Result<CreatedService, SubmitError> {
    let chain = client.chain().await?;
    let (data, not_kept) = push_inputs(
        client,
        key,
        &file.inputs,
        registry,
        &chain.node_key,
        pushing,
    )
    .await?;
    file.spec.data = data;
    gridwork_protocol::validate_service(&file.spec, &chain.params)?;
    let reserve = file
        .spec
        .reserve(chain.params.market_fee_bps)
        .ok_or(SubmitError::Overflow {
            what: "reserve",
            fix: "lower max_unsettled",
        })?;
    let deposit = deposit.or(file.deposit).unwrap_or(reserve);
    if deposit < reserve {
        return Err(SubmitError::ServiceDepositTooLow { deposit, reserve });
    }
    let state_fee = Amount(
        chain
            .params
            .state_fee_per_entry
            .0
            .saturating_mul(1 + file.spec.data.len() as u128),
    );
    let kind = TxKind::CreateService {
        spec: file.spec,
        deposit,
    };
    let id = client.sign_and_send(key, fee, kind).await?;
    Ok(CreatedService {
        id,
        deposit,
        reserve,
        state_fee,
        not_kept,
    })
}

/// Pushes a job input under the key `registry` remembers for its path and lets the
/// requester and the node decrypt it: its content id, key and what the push could not keep.
async fn push_input(
    client: &Client,
    registry: &KeyRegistry,
    path: &Path,
    me: &Keypair,
    node_key: &gridwork_types::PublicKey,
) -> Result<(Hash, gridwork_transfer::DataKey, Vec<String>), SubmitError> {
    let (key, index) = registry.key_for(path, me)?;
    let opts = TransferOptions {
        index: Some(index),
        ..TransferOptions::default()
    };
    let report = client
        .push_tree(path, &key, &opts)
        .await
        .map_err(|source| SubmitError::Input {
            input: path.display().to_string(),
            source,
        })?;
    client.share_key(&report.cid, &key, &me.public()).await?;
    client.share_key(&report.cid, &key, node_key).await?;
    let not_kept = report.not_kept.iter().map(ToString::to_string).collect();
    Ok((report.cid, key, not_kept))
}
