//! Running a task: its inputs pulled, its program run in the sandbox, its outputs pushed,
//! sealed for the parties and its result saved for the commitment.

use super::*;
use gridwork_types::output_matches;

/// What a container run keeps back from its time for its end (kill, wait, the last of its
/// output, removal) on top of the margin every run keeps for its push and commit.
const CONTAINER_TEARDOWN: Duration = Duration::from_secs(3);

/// How long a run may take: the task's deadline, or what is left of the chain's commit
/// deadline once the council is drawn (members start after the executor), less a margin to
/// push the outputs and commit. A program that never ends is cut off in time and its
/// "timeout" result committed, so no honest party misses the deadline because of it.
pub(super) fn run_limit(task_deadline_ms: u64, chain_deadline_ms: u64) -> Duration {
    let left = chain_deadline_ms.saturating_sub(now_ms());
    let limit = if left > 1_000 {
        task_deadline_ms.min(left)
    } else {
        task_deadline_ms
    };
    let margin = (limit / 10).max(2_000);
    Duration::from_millis(limit.saturating_sub(margin).max(500))
}

/// The convergent key of a run's outputs: over job, task, attempt, round and the outputs'
/// plaintext digest (see [`Worker::push_output`]).
pub(super) fn output_key(
    view: &JobView,
    r: TaskRef,
    round: u8,
    outputs: &std::path::Path,
) -> Result<DataKey, WorkerError> {
    let digest = tree_digest(outputs)?;
    Ok(gridwork_client::output_key(
        &view.id, r.1, r.2, round, &digest,
    ))
}

/// Makes sure a finished run's outputs are a directory of its own: a program may have
/// replaced it with a link to somewhere of the worker's user (its keys, say), which the worker
/// would then publish as the result. Anything but a real directory is removed and the run's
/// outputs are empty.
fn own_outputs(outputs: &std::path::Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(outputs) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            tracing::warn!(path = %outputs.display(), "the program replaced its outputs directory; its outputs are empty");
            std::fs::remove_file(outputs)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir(outputs)
}

/// Moves a pulled input from its staging directory `stage` into `inputs`: as
/// `inputs/<name>` when named, else entry by entry into `inputs` itself. Nothing is replaced
/// (`RENAME_NOREPLACE`) and no link is followed (a rename never follows its last component,
/// and `inputs` is the worker's own directory): an entry whose name is taken stays behind,
/// and is returned, the same on every worker, so the runs still agree.
pub(super) fn place_input(
    stage: &std::path::Path,
    inputs: &std::path::Path,
    name: &str,
) -> std::io::Result<Vec<String>> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let no_replace = |from: &std::path::Path, to: &std::path::Path| match renameat_with(
        CWD,
        from,
        CWD,
        to,
        RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)),
    };
    let mut skipped = Vec::new();
    if !name.is_empty() {
        // The ledger checked the name is one plain path part.
        if !no_replace(stage, &inputs.join(name))? {
            skipped.push(name.to_string());
        }
        return Ok(skipped);
    }
    let mut entries: Vec<_> = std::fs::read_dir(stage)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if !no_replace(&entry.path(), &inputs.join(entry.file_name()))? {
            skipped.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(skipped)
}

/// Readies a finished run's outputs for publishing: every directory readable and
/// searchable by the worker again (a program may leave `chmod 000` ones, which would stop the
/// push and with it the worker's commit), and every link removed unless it points down into
/// the outputs: relative, with no `..` part (so no chain of links can climb out either, which
/// a check of each link alone would miss). A link to `/home/...`, `../x` or `.` goes; the
/// result cannot carry it and a judge would follow it.
#[derive(Debug, Default)]
struct TidyOutputs {
    /// The links removed, `path -> target`.
    dropped: Vec<String>,
    /// The regular files, as `/`-separated paths relative to the outputs (what required
    /// outputs are matched against).
    files: Vec<String>,
}

fn tidy_outputs(outputs: &std::path::Path) -> std::io::Result<TidyOutputs> {
    let mut tidy = TidyOutputs::default();
    tidy_beneath(outputs, "", &mut tidy)?;
    Ok(tidy)
}

fn tidy_beneath(
    outputs: &std::path::Path,
    prefix: &str,
    tidy: &mut TidyOutputs,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if prefix.is_empty() {
        let mode = std::fs::symlink_metadata(outputs)?.permissions().mode();
        if mode & 0o700 != 0o700 {
            std::fs::set_permissions(outputs, std::fs::Permissions::from_mode(mode | 0o700))?;
        }
    }
    for entry in std::fs::read_dir(outputs)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // The run has ended (every process of it), so nothing changes under the walk.
            let mode = entry.metadata()?.permissions().mode();
            if mode & 0o700 != 0o700 {
                std::fs::set_permissions(
                    entry.path(),
                    std::fs::Permissions::from_mode(mode | 0o700),
                )?;
            }
            tidy_beneath(&entry.path(), &rel, tidy)?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            if mode & 0o400 == 0 {
                std::fs::set_permissions(
                    entry.path(),
                    std::fs::Permissions::from_mode(mode | 0o400),
                )?;
            }
            tidy.files.push(rel);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            if !target.to_str().is_some_and(points_down) {
                std::fs::remove_file(entry.path())?;
                tidy.dropped.push(format!("{rel} -> {}", target.display()));
            }
        }
    }
    Ok(())
}

/// Gives the worker back every directory under `dir` (a program may leave `chmod 000`
/// ones), so the tree can be removed. Best effort: what stays in the way, the removal reports.
pub(super) fn make_removable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    // A link (a program may leave one where a directory was) is removed as a link; nothing
    // of where it points is touched.
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|k| k.is_dir()) {
                make_removable(&entry.path());
            }
        }
    }
}

/// Whether a link target points down from the link's directory: relative, no `..` part,
/// naming something other than that directory itself.
pub(super) fn points_down(target: &str) -> bool {
    !target.starts_with('/')
        && target.split('/').all(|part| part != "..")
        && target
            .split('/')
            .any(|part| !part.is_empty() && part != ".")
}

/// How a finished run ended, its required outputs checked: a program that exits 0 without
/// leaving one of `required` (paths or `*` patterns) among its `files` (regular files, paths
/// relative to the outputs, as [`tidy_outputs`] lists them; a link is not an output the
/// requester gets back as a file) ends as [`RunEnd::MissingOutput`] naming the first
/// missing; any other end stands as it is.
fn check_outputs(ended: RunEnd, required: &[String], files: &[String]) -> RunEnd {
    if !ended.is_success() {
        return ended;
    }
    match required
        .iter()
        .position(|pattern| !files.iter().any(|path| output_matches(pattern, path)))
    {
        Some(index) => RunEnd::MissingOutput {
            index: index as u32,
        },
        None => ended,
    }
}

/// What the steps of a run share: where it runs, who holds its inputs, its image, and its
/// deadline.
pub(super) struct Prepared {
    pub(super) dir: std::path::PathBuf,
    image: Option<Hash>,
    /// Why the job's program cannot start here, the same on every worker (its image cannot
    /// run, its inputs land on one another): the run ends as not started, saying why on its
    /// stderr.
    unusable: Option<String>,
    /// How long each program may run (a container keeps back its teardown).
    pub(super) deadline: Duration,
}

/// What one run of the program left, its outputs readied.
pub(super) struct Ran {
    pub(super) ended: RunEnd,
    pub(super) seconds: u64,
}

/// How the metrics count a run that ended as `ended`.
pub(super) fn outcome_of(ended: RunEnd) -> RunOutcome {
    match ended {
        RunEnd::Exit { code: 0 } => RunOutcome::Success,
        RunEnd::Exit { .. }
        | RunEnd::MissingOutput { .. }
        | RunEnd::NotStarted {}
        | RunEnd::OutOfMemory {} => RunOutcome::Failure,
        RunEnd::Timeout {} => RunOutcome::Timeout,
        RunEnd::Signal { .. } => RunOutcome::Killed,
    }
}

impl Worker {
    /// Fetches the inputs, runs the program, uploads the outputs, records the result; says
    /// how the program ended.
    pub(super) async fn execute(
        &self,
        view: &JobView,
        r: TaskRef,
        items: (u64, u64),
        round: u8,
        limit: Duration,
        as_executor: bool,
    ) -> Result<RunOutcome, WorkerError> {
        let prepared = self.prepare(view, r, limit).await?;
        let env = TaskEnv {
            job: view.id.to_string(),
            task: r.1,
            items,
            segment: None,
            limits: crate::cgroup::RunLimits::of(&view.prescription.instructions.requirements),
        };
        let ran = self
            .run_program(view, r, &prepared, &env, prepared.deadline, as_executor)
            .await?;
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let outputs = sandbox::layout(dir).1;
        if as_executor && self.cfg.behavior.lies() {
            std::fs::write(outputs.join("forged_result"), "made up\n").map_err(io)?;
        }
        let output = self.push_output(view, r, round, &outputs).await?;
        self.save_result(r, &RunResult::new(output, ran.seconds, ran.ended, round))?;
        tracing::info!(job = %view.id, task = r.1, ended = %ran.ended, seconds = ran.seconds, "task ran");
        Ok(outcome_of(ran.ended))
    }

    /// A fresh work directory for the run of `r`, its inputs pulled into place and its
    /// image (if any) loaded.
    pub(super) async fn prepare(
        &self,
        view: &JobView,
        r: TaskRef,
        limit: Duration,
    ) -> Result<Prepared, WorkerError> {
        let dir = self.task_dir(r);
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            // A run cut off by a restart starts again from nothing (whatever modes its
            // program left on the directories).
            make_removable(&dir);
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        let (inputs, _) = sandbox::layout(&dir);
        std::fs::create_dir_all(&inputs).map_err(io)?;
        // Whoever else works on this job has fetched the same inputs.
        let holders: Vec<Address> = view
            .tasks
            .iter()
            .flat_map(|t| t.executor.into_iter().chain(t.council.iter().copied()))
            .collect();
        // The image this worker runs: the one for its GPUs' maker, or the common one, by the
        // hardware the ledger holds for it (what it was drawn by: its GPUs do not change on
        // the ledger while it has tasks, even if this machine's did since). None of the job's
        // images is an input of the run, and others' images are not fetched.
        let program = &view.prescription.program;
        let hardware = if program.vendor_images.is_empty() {
            self.cfg.hardware.clone()
        } else {
            match self.client.provider(&self.me).await? {
                Some(p) => p.hardware,
                None => self.cfg.hardware.clone(),
            }
        };
        let image = program
            .image_for(&hardware, &view.prescription.instructions.requirements)
            .map_err(|why| WorkerError::NoImage { job: view.id, why })?;
        let images: Vec<Hash> = program.images().collect();
        // Each input is pulled into a fresh directory of its own, then moved into place
        // without replacing anything: named inputs first, each as $GRIDWORK_INPUTS/<name>,
        // then the unnamed ones' entries into $GRIDWORK_INPUTS itself. No pull writes into a
        // directory another input made, so a link one input carries cannot redirect another
        // (see `place_input`). The image is not an input of the run.
        let mut order: Vec<&gridwork_types::DataInput> = view
            .prescription
            .data
            .iter()
            .filter(|d| !images.contains(&d.cid))
            .collect();
        order.sort_by_key(|d| d.name.is_empty());
        let staging = dir.join("staging");
        let mut collided = Vec::new();
        for (n, input) in order.into_iter().enumerate() {
            // The node wraps the input keys for the executor and council when the auction
            // closes; until then this fails and the next pass tries again.
            let key = self.client.granted_key(&input.cid, &self.cfg.key).await?;
            let stage = staging.join(n.to_string());
            self.pull(&input.cid, &key, &holders, &stage).await?;
            for skipped in place_input(&stage, &inputs, &input.name).map_err(io)? {
                collided.push(format!("`{skipped}` of input {}", input.cid));
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        let mut unusable = (!collided.is_empty()).then(|| {
            format!(
                "the job's inputs land on one another in $GRIDWORK_INPUTS: {} would replace what an earlier input put there; give each input a name of its own (NAME=cid:<id>, or a directory) so each lands apart",
                collided.join(", ")
            )
        });
        if let (None, Some(cid)) = (&unusable, &image) {
            if let crate::container::Readiness::Unusable(why) =
                self.ensure_image(view.id, cid, &holders).await?
            {
                unusable = Some(format!("the job's image {cid} cannot run: {why}"));
            }
        }
        // A container's end takes longer than a process's (kill, wait, the log follow,
        // removal), and the push and commit must still make the chain's deadline.
        let deadline = match image {
            Some(_) => limit
                .saturating_sub(CONTAINER_TEARDOWN)
                .max(Duration::from_millis(500)),
            None => limit,
        };
        Ok(Prepared {
            dir,
            image,
            unusable,
            deadline,
        })
    }

    /// Runs the job's program once in the prepared directory, its log streamed, until it
    /// exits or `deadline` passes; then readies its outputs (its own directory, links that
    /// leave it dropped, the required outputs checked).
    pub(super) async fn run_program(
        &self,
        view: &JobView,
        r: TaskRef,
        prepared: &Prepared,
        env: &TaskEnv,
        deadline: Duration,
        as_executor: bool,
    ) -> Result<Ran, WorkerError> {
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let outputs = sandbox::layout(dir).1;
        if let Some(why) = &prepared.unusable {
            // Said where the requester reads a run's errors (`job status`, `job logs`).
            std::fs::write(
                dir.join("stderr.log"),
                format!("gridwork: the program could not start: {why}\n"),
            )
            .map_err(io)?;
        }
        let (run_done, done) = watch::channel(false);
        let streaming = tokio::spawn(crate::logs::stream(
            self.client.clone(),
            self.cfg.key.clone(),
            dir.clone(),
            r,
            done,
        ));
        let mut program = view.prescription.program.clone();
        if as_executor && self.cfg.behavior.renders_cheaply() {
            // One sample per pixel: a fraction of the work the job pays for.
            for arg in &mut program.args {
                if let Some(at) = arg.find("s.cycles.samples = ") {
                    let end = arg[at..].find('\n').map_or(arg.len(), |n| at + n);
                    arg.replace_range(at..end, "s.cycles.samples = 1");
                }
            }
        }
        let started = Instant::now();
        let outcome = match (&prepared.image, &self.cfg.containers) {
            // The job's own image or inputs cannot run: the same on every worker, a result.
            _ if prepared.unusable.is_some() => Ok(sandbox::RunOutcome {
                ended: RunEnd::NotStarted {},
                seconds: 1,
            }),
            (Some(cid), Some(containers)) => containers
                .run(
                    cid,
                    &view.prescription.program,
                    &view.prescription.instructions.requirements,
                    dir,
                    env,
                    deadline,
                )
                .await
                .map_err(|e| e.to_string()),
            (Some(_), None) => Err("this worker runs no containers".to_string()),
            (None, _) => sandbox::run(&program, dir, env, deadline, self.cfg.launcher.as_ref())
                .await
                .map_err(|e| e.to_string()),
        };
        self.metrics.program_ran(started.elapsed());
        let _ = run_done.send(true);
        let _ = streaming.await;
        let outcome = outcome.map_err(|e| WorkerError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        // How the run ended is part of the result (revealed with the output and bound into
        // the commitment), so a program that fails the same way everywhere is a valid (if
        // useless) result that says so, rather than a timeout.
        own_outputs(&outputs).map_err(io)?;
        let tidy = tidy_outputs(&outputs).map_err(io)?;
        for link in &tidy.dropped {
            tracing::warn!(job = %view.id, task = r.1, "an output link does not point down into the outputs; dropped from the result: {link}");
        }
        let ended = check_outputs(
            outcome.ended,
            &view.prescription.program.outputs,
            &tidy.files,
        );
        Ok(Ran {
            ended,
            seconds: outcome.seconds,
        })
    }

    /// Makes image `cid` ready in the engine: loaded already (a later task of any job that
    /// names it), or pulled through the data plane (verified against its content id chunk
    /// by chunk, from the node and the task's other workers), checked, loaded and tagged.
    /// Either way only once the node granted this worker the image's key for this job or
    /// service (`owner`, named in the logs), which it does only when the requester proved it
    /// holds that key: naming another requester's image gets nothing of it, loaded here or
    /// not.
    pub(super) async fn ensure_image(
        &self,
        owner: Hash,
        cid: &Hash,
        holders: &[Address],
    ) -> Result<crate::container::Readiness, WorkerError> {
        use crate::container::Readiness;
        let engine_error = |e: crate::docker::EngineError| WorkerError::Io {
            path: format!("image {cid}"),
            source: std::io::Error::other(e.to_string()),
        };
        let Some(containers) = &self.cfg.containers else {
            return Err(engine_error(crate::docker::EngineError::Http {
                what: "a container run".into(),
                message: "this worker runs no containers".into(),
            }));
        };
        let key = self.client.granted_key(cid, &self.cfg.key).await?;
        let _loading = containers.loading().await;
        if containers.has_image(cid).await.map_err(engine_error)? {
            return Ok(Readiness::Ready);
        }
        let dir = self.cfg.work_dir.join("images").join(cid.to_string());
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        let started = Instant::now();
        self.pull(cid, &key, holders, &dir).await?;
        let ready = containers
            .load_image(cid, &dir)
            .await
            .map_err(engine_error)?;
        // The engine keeps the image; the archive is in the chunk cache if it is wanted again.
        std::fs::remove_dir_all(&dir).map_err(io)?;
        match &ready {
            Readiness::Ready => {
                tracing::info!(of = %owner, image = %cid, seconds = started.elapsed().as_secs_f64(), "image loaded")
            }
            Readiness::Unusable(why) => {
                tracing::warn!(of = %owner, image = %cid, "the job's image cannot run: {why}")
            }
        }
        Ok(ready)
    }

    /// Pushes a run's outputs and lets the requester and the other members of the task
    /// decrypt them. The key is convergent ([`DataKey::convergent`] over job, task, attempt
    /// and the outputs' plaintext digest), so runs of one attempt that agree produce the same
    /// content id, which is what the ledger compares under the exact-hash equivalence. The
    /// attempt and round are in the key so a new attempt's (or an enlarged council's) runs
    /// produce a new id: an id revealed earlier is worth nothing to a copier (the ledger
    /// refuses it again).
    pub(super) async fn push_output(
        &self,
        view: &JobView,
        r: TaskRef,
        round: u8,
        outputs: &std::path::Path,
    ) -> Result<Hash, WorkerError> {
        let key = output_key(view, r, round, outputs)?;
        let cid = self.push_sealed(r, outputs, &key).await?;
        let mut recipients = vec![view.requester];
        if let Some(t) = view.tasks.iter().find(|t| t.index == r.1) {
            recipients.extend(t.executor);
            recipients.extend(t.council.iter().copied());
        }
        self.share_output(&cid, &key, &recipients).await?;
        Ok(cid)
    }

    /// Pushes the tree at `path` sealed under `key`, shared with nobody yet.
    pub(super) async fn push_sealed(
        &self,
        r: TaskRef,
        path: &std::path::Path,
        key: &DataKey,
    ) -> Result<Hash, WorkerError> {
        let opts = TransferOptions {
            // Kept in the chunk store, which is what this worker serves to peers.
            keep: self.peer.get().map(|_| self.chunks.clone()),
            ..transfer()
        };
        let report = self.client.push_tree(path, key, &opts).await?;
        // Setuid bits, device nodes, sockets: a pull of the outputs will not give them back
        // as the program left them. The provider's log says so (the tree is still the result).
        for what in &report.not_kept {
            tracing::warn!(job = %r.0, task = r.1, "an output will not come back as written: {what}");
        }
        Ok(report.cid)
    }

    /// Lets `recipients` (but this worker) decrypt output tree `cid`.
    pub(super) async fn share_output(
        &self,
        cid: &Hash,
        key: &DataKey,
        recipients: &[Address],
    ) -> Result<(), WorkerError> {
        for who in recipients {
            if *who == self.me {
                continue;
            }
            match self.client.account(who).await?.public_key {
                Some(pk) => self.client.share_key(cid, key, &pk).await?,
                None => {
                    tracing::warn!(%who, "no public key on the ledger; cannot share the output with it")
                }
            }
        }
        Ok(())
    }

    pub(super) fn save_result(&self, r: TaskRef, result: &RunResult) -> Result<(), WorkerError> {
        let dir = self.task_dir(r);
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join("result.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(result).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, dir.join("result.json")).map_err(io)
    }

    /// `LazyCouncilMember`: a result for a run that never happened.
    pub(super) fn make_up_result(&self, r: TaskRef, round: u8) -> Result<(), WorkerError> {
        let mut made_up = [0u8; 32];
        OsRng.fill_bytes(&mut made_up);
        self.save_result(r, &RunResult::new(Hash(made_up), 1, RunEnd::SUCCESS, round))
    }
}
