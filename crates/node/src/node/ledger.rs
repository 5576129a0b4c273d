//! Admission, block production and the ledger's views: transactions, blocks, accounts,
//! jobs and providers.

use super::*;

impl Node {
    /// Decodes and admits one transaction from its canonical bytes.
    pub fn submit_bytes(&self, bytes: &[u8]) -> Result<Hash, AdmitError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(AdmitError::TooLarge {
                size: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        let tx = SignedTx::from_bytes(bytes)?;
        self.submit(vec![tx])
            .pop()
            .unwrap_or(Err(AdmitError::Malformed("empty".into())))
    }

    /// Admits transactions: signatures checked in one batch without the lock, then nonce,
    /// fee and balance checked against the projected state. One result per transaction.
    pub fn submit(&self, txs: Vec<SignedTx>) -> Vec<Result<Hash, AdmitError>> {
        let chain_id = self.chain_id();
        let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.tx.signing_message(chain_id)).collect();
        let items: Vec<_> = txs
            .iter()
            .zip(&messages)
            .map(|(t, m)| (t.tx.from, m.as_slice(), t.signature))
            .collect();
        let sigs = verify_batch(&items);
        // Jobs' input claims are checked against the keys on disk, outside the lock too.
        // Only for signed jobs of valid shape: a stranger's unsigned or oversized job costs
        // no key unwrapping.
        let max_inputs = self.lock().state.params().max_inputs_per_job as usize;
        let inputs: Vec<Result<(), AdmitError>> = txs
            .iter()
            .zip(&sigs)
            .map(|(t, sig)| match &t.tx.kind {
                TxKind::SubmitJob { prescription, .. }
                    if sig.is_ok() && prescription.data.len() <= max_inputs =>
                {
                    self.check_inputs(&prescription.data, &t.tx.sender())
                }
                _ => Ok(()),
            })
            .collect();
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let now = self.now_ms();
        let mut inner = self.lock();
        let results: Vec<_> = txs
            .into_iter()
            .zip(sigs)
            .zip(inputs)
            .zip(hashes)
            .map(|(((tx, sig), inputs), hash)| {
                if let Some(reason) = &inner.halted {
                    return Err(AdmitError::Halted {
                        reason: reason.clone(),
                    });
                }
                if let Err(source) = sig {
                    return Err(TxError::BadSignature {
                        sender: tx.tx.sender(),
                        source,
                    }
                    .into());
                }
                inputs?;
                let Inner { state, mempool, .. } = &mut *inner;
                mempool.admit(state, tx, hash, now)?;
                Ok(hash)
            })
            .collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        self.shared
            .metrics
            .admitted(admitted as u64, (results.len() - admitted) as u64);
        self.shared.metrics.set_mempool(inner.mempool.len());
        results
    }

    /// Produces one block now if consensus says so (`force` skips the interval, not the
    /// no-empty-blocks rule). Returns the committed block, or `None` if there was nothing to
    /// do. On a failed commit the node halts and returns the error.
    pub fn produce_block(&self, force: bool) -> Result<Option<Arc<BlockEvent>>, NodeError> {
        // One producer at a time: blocks are committed in height order.
        let _producing = self
            .shared
            .producing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let built = {
            let mut inner = self.lock();
            if let Some(reason) = &inner.halted {
                return Err(NodeError::Halted {
                    reason: reason.clone(),
                });
            }
            let pending = inner.mempool.len();
            let since = self
                .shared
                .clock
                .monotonic_ms()
                .saturating_sub(inner.last_block_at);
            let now = self.now_ms().max(inner.state.head().timestamp_ms);
            // With transactions waiting a block comes anyway; only an idle node looks for
            // due deadlines (a scan of the open tasks).
            let deadline_due =
                pending == 0 && inner.state.next_deadline().is_some_and(|d| d <= now);
            let propose = if force {
                pending > 0 || deadline_due
            } else {
                inner.consensus.should_propose(pending, since, deadline_due)
            };
            if !propose {
                return Ok(None);
            }
            let Inner {
                state,
                mempool,
                consensus,
                ..
            } = &mut *inner;
            let candidates = mempool.take(consensus.max_block_txs());
            let built = state.build_block(now, consensus.proposer(), candidates);
            let changes = state.take_changes();
            if let Err(e) = consensus.finalize(&built.block.header) {
                return Err(self.halt(&mut inner, e.to_string()));
            }
            if !built.rejected.is_empty() || !built.failed.is_empty() {
                // The projections of these senders assumed what the block did not do: a
                // refused transaction's nonce is free again; a market refusal spent only its
                // fee (today its kinds change nothing else, so this is insurance).
                let senders: std::collections::BTreeSet<_> = built
                    .rejected
                    .iter()
                    .map(|(tx, _)| tx.tx.sender())
                    .chain(
                        built
                            .failed
                            .iter()
                            .map(|(i, _)| built.block.txs[*i as usize].tx.sender()),
                    )
                    .collect();
                let dropped = mempool.revalidate(state, now, senders);
                if !built.rejected.is_empty() {
                    tracing::warn!(
                        rejected = built.rejected.len(),
                        dropped,
                        "block refused admitted transactions"
                    );
                }
            }
            inner.last_block_at = self.shared.clock.monotonic_ms();
            let block = Arc::new(built.block);
            let hashes = built.receipts.iter().map(|r| r.tx_hash).collect();
            inner.in_flight = Some((block.clone(), hashes));
            inner.archiving = changes
                .entries
                .iter()
                .filter(|(k, _)| k.first() == Some(&gridwork_protocol::PREFIX_ARCHIVE))
                .filter_map(|(k, v)| {
                    let id = Hash(k.get(1..33)?.try_into().ok()?);
                    let job = gridwork_types::Decode::from_bytes(v.as_ref()?).ok()?;
                    Some((id, job))
                })
                .collect();
            (block, built.receipts, built.events, changes)
        };
        // The durable commit runs without the node lock, so admission goes on meanwhile.
        let (block, receipts, events, changes) = built;
        if let Err(e) = self
            .shared
            .store
            .commit(&block, &receipts, &events, &changes)
        {
            return Err(self.halt(&mut self.lock(), e.to_string()));
        }
        let mempool_len = {
            let mut inner = self.lock();
            inner.in_flight = None;
            inner.archiving.clear();
            inner.mempool.len()
        };
        let header = &block.header;
        let hashes = receipts.iter().map(|r| r.tx_hash).collect();
        let event = Arc::new(BlockEvent {
            block: BlockView::new(header, Some(hashes)),
            events,
            receipts,
        });
        let metrics = &self.shared.metrics;
        metrics.block_committed(header.height, u64::from(header.tx_count), started.elapsed());
        metrics.block_events(
            event
                .events
                .iter()
                .chain(event.receipts.iter().flat_map(|r| &r.events)),
        );
        metrics.set_mempool(mempool_len);
        {
            let mut recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No subscribers is fine.
        let _ = self.shared.events.send(event.clone());
        Ok(Some(event))
    }

    /// Stops the node from accepting or producing anything more.
    pub(super) fn halt(&self, inner: &mut Inner, reason: String) -> NodeError {
        tracing::error!(%reason, "block commit failed; node halted");
        inner.halted = Some(reason.clone());
        NodeError::Halted { reason }
    }

    /// Starts the block producer on its own thread, and beside it the hand-off of input keys
    /// ([`Node::spawn_key_handoff`]). It stops when [`Node::shutdown`] is called or the node
    /// halts.
    pub fn spawn_producer(&self) -> JoinHandle<()> {
        self.spawn_key_handoff();
        let node = self.clone();
        std::thread::Builder::new()
            .name("gridwork-producer".into())
            .spawn(move || {
                while !node.shared.stop.load(Ordering::Relaxed) {
                    match node.produce_block(false) {
                        Ok(Some(_)) => {}
                        Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                        Err(_) => break,
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the block producer thread: {e}"))
    }

    /// An account as the ledger holds it now, with the nonce to sign the next transaction
    /// with. While a block's commit is in flight (milliseconds) this already includes it;
    /// transaction and block queries show only durable blocks.
    pub fn account(&self, address: &Address) -> AccountView {
        let inner = self.lock();
        let account = inner.state.account(address);
        let next = inner.mempool.next_nonce(&inner.state, address);
        let now = self.now_ms().max(inner.state.head().timestamp_ms);
        AccountView::new(*address, &account, now, next)
    }

    /// A transaction: committed (with receipt) or pending.
    pub fn tx(&self, hash: &Hash) -> Result<Option<TxStatus>, NodeError> {
        if let Some(record) = self.shared.store.tx(hash)? {
            return Ok(Some(TxStatus {
                hash: *hash,
                status: committed_state(&record.receipt),
                tx: TxView::from(&record.tx),
                receipt: Some(record.receipt),
            }));
        }
        let inner = self.lock();
        let in_flight = inner.in_flight.as_ref().and_then(|(block, hashes)| {
            hashes.iter().position(|h| h == hash).map(|i| &block.txs[i])
        });
        if let Some(tx) = inner.mempool.get(hash).or(in_flight) {
            return Ok(Some(TxStatus {
                hash: *hash,
                status: TxState::Pending,
                tx: TxView::from(tx),
                receipt: None,
            }));
        }
        drop(inner);
        // It may have left the mempool for a block whose commit just finished.
        Ok(self.shared.store.tx(hash)?.map(|record| TxStatus {
            hash: *hash,
            status: committed_state(&record.receipt),
            tx: TxView::from(&record.tx),
            receipt: Some(record.receipt),
        }))
    }

    /// A durable block with its transaction hashes.
    pub fn block(&self, id: BlockId) -> Result<Option<BlockView>, NodeError> {
        match self.block_header(id)? {
            Some((height, header)) => self.block_at(height, &header).map(Some),
            None => Ok(None),
        }
    }

    /// A durable block's height and header, without its transactions.
    pub fn block_header(&self, id: BlockId) -> Result<Option<(u64, Header)>, NodeError> {
        let store = &self.shared.store;
        let height = match id {
            BlockId::Latest => Some(self.durable_head()?),
            BlockId::Height(h) => Some(h),
            BlockId::Hash(hash) => store.height_of(&hash)?,
        };
        let Some(height) = height else {
            return Ok(None);
        };
        Ok(store.header(height)?.map(|header| (height, header)))
    }

    /// The block at `height` (whose header is `header`) with its transactions' hashes.
    pub fn block_at(&self, height: u64, header: &Header) -> Result<BlockView, NodeError> {
        let txs = self.shared.store.block_tx_hashes(height)?;
        Ok(BlockView::new(header, txs))
    }

    /// Up to `limit` durable blocks, newest first, below `before` (exclusive) if given.
    pub fn blocks(&self, limit: usize, before: Option<u64>) -> Result<Vec<BlockView>, NodeError> {
        let head = self.durable_head()?;
        let mut out = Vec::new();
        if before == Some(0) {
            return Ok(out);
        }
        let top = before.map_or(head, |b| (b - 1).min(head));
        for height in (0..=top).rev().take(limit) {
            if let Some(header) = self.shared.store.header(height)? {
                out.push(BlockView::new(&header, None));
            }
        }
        Ok(out)
    }

    /// A job with its tasks and the decline reasons workers reported: from the hot state
    /// while it is open, from the archive once it finished (read from disk by id).
    pub fn job(&self, id: &Hash) -> Option<JobView> {
        let (job, tasks) = {
            let inner = self.lock();
            let archiving = inner.archiving.iter().find(|(a, _)| a == id);
            match (inner.state.job(id), archiving) {
                (Some(job), _) => (
                    job.clone(),
                    inner.state.tasks_of(id).map(|(_, t)| t.clone()).collect(),
                ),
                (None, Some((_, archived))) => (archived.job.clone(), archived.tasks.clone()),
                (None, None) => {
                    drop(inner);
                    match self.shared.store.archived_job(id) {
                        Ok(Some(archived)) => (archived.job, archived.tasks),
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::error!(error = %e, job = %id, "cannot read an archived job");
                            return None;
                        }
                    }
                }
            }
        };
        let tasks: Vec<gridwork_protocol::Task> = tasks;
        let instructions = &job.prescription.instructions;
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(index, t)| TaskView {
                index: index as u32,
                phase: t.phase,
                attempt: t.attempt,
                items: instructions.task_items(index as u32),
                bids: t.bids.iter().map(|b| (b.provider, b.price)).collect(),
                executor: t.executor,
                price: t.price,
                council: t.council.clone(),
                committed: t.commits.iter().map(|c| c.provider).collect(),
                revealed: t.reveals.iter().map(|r| (r.provider, r.output)).collect(),
                judged: t
                    .judgements
                    .iter()
                    .filter(|j| j.round == t.round)
                    .map(|j| j.provider)
                    .collect(),
                round: t.round,
                result: t.result,
                deadline_ms: t.deadline_ms,
                note: t.note.to_string(),
            })
            .collect();
        let status = if job.cancelled {
            JobStatus::Cancelled
        } else if job.finished {
            JobStatus::Finished
        } else {
            JobStatus::Open
        };
        let declines = self
            .shared
            .declines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default();
        Some(JobView {
            id: *id,
            requester: job.requester,
            status,
            prescription: job.prescription.clone(),
            escrow: job.escrow,
            spent: job.spent,
            max_task_cost: job.max_task_cost,
            settled: job.settled,
            closed: job.closed,
            tasks,
            declines,
        })
    }

    /// How many jobs and tasks the hot state holds (what memory follows): open work, and
    /// jobs that finished in the last block until its end.
    pub fn hot_jobs_and_tasks(&self) -> (usize, usize) {
        let inner = self.lock();
        let jobs: Vec<Hash> = inner.state.jobs().map(|(id, _)| *id).collect();
        let tasks = jobs.iter().map(|id| inner.state.tasks_of(id).count()).sum();
        (jobs.len(), tasks)
    }

    /// Ids of jobs neither finished nor cancelled (what workers scan for work).
    pub fn open_jobs(&self) -> Vec<Hash> {
        self.open_jobs_page(None, usize::MAX).0
    }

    /// Up to `limit` open jobs after `after`, in id order, and where the next page starts.
    pub fn open_jobs_page(&self, after: Option<Hash>, limit: usize) -> (Vec<Hash>, Option<Hash>) {
        let inner = self.lock();
        let ids = inner
            .state
            .jobs()
            .filter(|(id, j)| !j.finished && !j.cancelled && after.is_none_or(|a| **id > a))
            .map(|(id, _)| *id);
        page(ids, limit)
    }

    /// A provider's record with its pool status and stake.
    pub fn provider(&self, address: &Address) -> Option<ProviderView> {
        let inner = self.lock();
        Self::provider_view(&inner.state, address, self.now_ms())
    }

    /// Every provider.
    pub fn providers(&self) -> Vec<ProviderView> {
        self.providers_page(None, usize::MAX).0
    }

    /// Up to `limit` providers after `after`, in address order, and where the next page
    /// starts.
    pub fn providers_page(
        &self,
        after: Option<Address>,
        limit: usize,
    ) -> (Vec<ProviderView>, Option<Address>) {
        let inner = self.lock();
        let addresses = inner
            .state
            .providers()
            .map(|(a, _)| *a)
            .filter(|a| after.is_none_or(|after| *a > after));
        let (addresses, next) = page(addresses, limit);
        let views = addresses
            .iter()
            .filter_map(|a| Self::provider_view(&inner.state, a, self.now_ms()))
            .collect();
        (views, next)
    }

    pub(super) fn provider_view(
        state: &State,
        address: &Address,
        now: u64,
    ) -> Option<ProviderView> {
        let p = state.provider(address)?;
        let now = now.max(state.head().timestamp_ms);
        let status = p.status(now, state.params().heartbeat_timeout_ms);
        Some(ProviderView {
            address: *address,
            owner: p.owner,
            status,
            hardware: p.hardware.clone(),
            stake_locked: state.account(address).stake_locked,
            streak: p.streak,
            validated: p.validated,
            failed: p.failed,
            earned: p.earned,
            slashed: p.slashed,
            active: p.active,
            last_heartbeat_ms: p.last_heartbeat_ms,
            peer: p.peer.clone(),
        })
    }
}
