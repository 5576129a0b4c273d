//! Running a task's program in a container: the container executor (`gridwork worker
//! --executor docker`).
//!
//! A job that names an image (`program.image`: the content id of a `docker save` archive
//! pushed through the data plane, `gridwork image push`) brings its own environment. The
//! worker pulls the archive like any input (verified chunk by chunk against the content id,
//! so the image is exactly what the requester pushed), loads it into the engine once and tags
//! it `gridwork/image:<content id>`; later tasks of any job naming it start from the loaded
//! image. Each run is one container, confined by default:
//!
//! - no network (`NetworkMode: none`), unless the job asks for it and the provider allows it
//!   (the engine's default bridge);
//! - a read-only root file system; writable only `/gridwork/outputs` (the task's `outputs/`),
//!   `/gridwork` itself (the task's `run/`, its HOME and working directory, with `TMPDIR` at
//!   `/gridwork/tmp`) and a private `/tmp` (a tmpfs; the engine gives it the image's `/tmp`
//!   mode, 1777 in the usual images); the inputs mounted read-only at `/gridwork/inputs`;
//! - not root: `nobody` (65534), on every worker alike (see [`check_worker_user`]: the worker
//!   itself must be root to read back and remove what such a run leaves);
//! - every capability dropped, `no-new-privileges`, the engine's default seccomp profile, at
//!   most 4,096 processes, and the worker's memory limit when it has one;
//! - NVIDIA GPUs passed through (a device request) where the engine has the NVIDIA runtime
//!   and the worker has NVIDIA GPUs;
//! - labelled with the worker's address, job and task, removed after the run, and every
//!   container of this worker removed when it starts (what a crash left behind).
//!
//! The program is the container's entry point (`program.command`, with `program.args`), in
//! place of the image's; the image's `PATH` and other variables stay, and the `GRIDWORK_*`
//! variables say where inputs and outputs are. Its output is followed into the same
//! `stdout.log` and `stderr.log` the process executor writes, so logs stream to the node the
//! same way, and how it ended is the container's exit code (the kernel's OOM killer reads as
//! signal 9), or the deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gridwork_types::{Hash, Program, Requirements, RunEnd};
use serde_json::{json, Value};

use crate::docker::{Engine, EngineError};
use crate::sandbox::{layout, run_dir, RunOutcome, TaskEnv};

/// The most processes one container may have.
pub const PIDS_LIMIT: i64 = 4096;

/// The uid and gid every container runs as (`nobody`), on every worker alike, so `id -u`
/// and what a run may read do not differ between the executor's run and the council's (a
/// root worker's process tasks run as it too).
use crate::confine::NOBODY;

/// The largest image archive a worker loads, by default.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 32 << 30;

/// How much the loaded job images may take in the engine, by default, before the least
/// recently used go.
pub const DEFAULT_IMAGE_CACHE_BYTES: u64 = 50 << 30;

/// The label naming the worker a container belongs to.
pub const WORKER_LABEL: &str = "gridwork.worker";

/// The tag an image is loaded under: `gridwork/image:<content id>`.
pub fn image_tag(cid: &Hash) -> String {
    format!("gridwork/image:{cid}")
}

/// A service's server running in a container ([`Containers::serve`]): labelled with its
/// worker like any run, so one a killed worker left is removed when it starts again.
#[derive(Debug)]
pub struct ContainerServer {
    engine: Engine,
    /// Taken when stopped (dropped unstopped, the container is ended in the background).
    id: Option<String>,
    /// How the container ended, once it has.
    exited: tokio::sync::watch::Receiver<Option<String>>,
}

impl ContainerServer {
    /// How the server's container ended, if it has.
    pub fn exited(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Ends the server: its container killed and removed.
    pub async fn stop(mut self) {
        if let Some(id) = self.id.take() {
            end_container(&self.engine, &id).await;
        }
    }
}

impl Drop for ContainerServer {
    fn drop(&mut self) {
        if let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let engine = self.engine.clone();
            runtime.spawn(async move { end_container(&engine, &id).await });
        }
    }
}

async fn end_container(engine: &Engine, id: &str) {
    let _ = engine.kill(id).await;
    if let Err(e) = engine.remove(id).await {
        tracing::warn!(error = %e, container = %id, "removing a service's container failed");
    }
}

/// The container executor of one worker.
#[derive(Debug, Clone)]
pub struct Containers {
    engine: Engine,
    worker: String,
    memory_mib: Option<u64>,
    gpus: bool,
    max_image_bytes: u64,
    image_cache_bytes: u64,
    /// AMD and Intel GPU device nodes passed into every container (`/dev/kfd`,
    /// `/dev/dri/renderD*`).
    devices: Vec<PathBuf>,
    /// One image load at a time: two tasks of one image must not pull it over each other.
    loading: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// When each loaded image was last used, by tag: the least recently used go first when
    /// the images outgrow their limit.
    used: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
}

/// Whether an image is ready to run, or why the job's image cannot be (the same on every
/// worker: the run ends as [`RunEnd::NotStarted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Loaded and tagged.
    Ready,
    /// The job's image is unusable, and why.
    Unusable(String),
}

/// Whether this process runs as root (then its tasks run as `nobody`).
pub fn runs_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether this process may run containers: it must be root. Every container runs as
/// `nobody`, on every worker alike, so that `id -u`, and the owners a program writes into its
/// outputs (a tar of its frames, say), do not differ between the executor's run and the
/// council's. What `nobody` leaves in the task's directory (a directory of frames, a file
/// made unreadable) only root can read back and remove: a worker of another user would never
/// commit such a run, and would fill its disk with what it cannot remove. (A user in the
/// `docker` group can start a root container anyway: that group is root's equal.)
pub fn check_worker_user() -> Result<(), String> {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return Ok(());
    }
    Err(format!(
        "--executor docker needs the worker to run as root (it runs as uid {}): every container runs as nobody (65534) so that runs do not differ by who runs them, and only root can read back and remove what such a run leaves. Run the worker as root (the docker group is root's equal anyway), or use --executor process",
        uid.as_raw()
    ))
}

impl Containers {
    /// Containers on `engine` for the worker with address `worker`; `memory_mib` limits each
    /// one; `gpus`: pass NVIDIA GPUs through (the engine has the NVIDIA runtime and the worker
    /// NVIDIA GPUs).
    pub fn new(engine: Engine, worker: String, memory_mib: Option<u64>, gpus: bool) -> Containers {
        Containers {
            engine,
            worker,
            memory_mib,
            gpus,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            image_cache_bytes: DEFAULT_IMAGE_CACHE_BYTES,
            devices: Vec::new(),
            loading: Default::default(),
            used: Default::default(),
        }
    }

    /// Removes loaded job images (`gridwork/image:*`), least recently used first (those not
    /// used since this worker started before any, oldest first), until they take at most
    /// `max_bytes`; images a container still uses stay. The tags removed.
    pub async fn prune_images(&self, max_bytes: u64) -> Result<Vec<String>, EngineError> {
        let mut images = self.engine.images("gridwork/image").await?;
        let mut total: u64 = images.iter().map(|(_, size, _)| size).sum();
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let last_use = |tags: &[String]| tags.iter().filter_map(|t| used.get(t)).max().copied();
        images.sort_by_key(|a| (last_use(&a.0), a.2));
        let mut removed = Vec::new();
        for (tags, size, _) in images {
            if total <= max_bytes {
                break;
            }
            let mut gone = true;
            for tag in tags.iter().filter(|t| t.starts_with("gridwork/image:")) {
                gone &= self.engine.remove_image(tag).await?;
                if gone {
                    removed.push(tag.clone());
                }
            }
            if gone {
                total = total.saturating_sub(size);
            }
        }
        if let Ok(mut u) = self.used.lock() {
            u.retain(|tag, _| !removed.contains(tag));
        }
        Ok(removed)
    }

    fn touch(&self, cid: &Hash) {
        if let Ok(mut u) = self.used.lock() {
            u.insert(image_tag(cid), Instant::now());
        }
    }

    /// The largest image archive this worker loads (larger: [`Readiness::Unusable`]).
    pub fn with_max_image_bytes(mut self, max: u64) -> Containers {
        self.max_image_bytes = max;
        self
    }

    /// Passes these device nodes into every container (AMD's `/dev/kfd` and the render
    /// nodes under `/dev/dri`, Intel's render nodes), with the groups that own them, so the
    /// container's `nobody` may open them. A directory stands for the nodes in it.
    pub fn with_devices(mut self, devices: Vec<PathBuf>) -> Containers {
        let mut nodes = Vec::new();
        for d in devices {
            match std::fs::read_dir(&d) {
                Ok(entries) => nodes.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
                })),
                Err(_) => nodes.push(d),
            }
        }
        nodes.sort();
        self.devices = nodes;
        self
    }

    /// How much the loaded job images may take before the least recently used go.
    pub fn with_image_cache_bytes(mut self, max: u64) -> Containers {
        self.image_cache_bytes = max;
        self
    }

    /// Serializes image loads: hold the guard while pulling and loading one.
    pub async fn loading(&self) -> tokio::sync::OwnedMutexGuard<()> {
        std::sync::Arc::clone(&self.loading).lock_owned().await
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Removes every container of this worker (left by a crash or a kill); how many.
    pub async fn remove_leftovers(&self) -> Result<usize, EngineError> {
        let ids = self.engine.labelled(WORKER_LABEL, &self.worker).await?;
        for id in &ids {
            self.engine.remove(id).await?;
        }
        Ok(ids.len())
    }

    /// Whether image `cid` is loaded already (no pull needed).
    pub async fn has_image(&self, cid: &Hash) -> Result<bool, EngineError> {
        self.engine.has_image(&image_tag(cid)).await
    }

    /// Loads image `cid` from the archive pulled into `dir` (its one file), and tags it;
    /// an archive that is not one untagged image within the size limit, or that the engine
    /// refuses, is the job's fault ([`Readiness::Unusable`]).
    pub async fn load_image(&self, cid: &Hash, dir: &Path) -> Result<Readiness, EngineError> {
        let archive = match archive_in(dir) {
            Ok(archive) => archive,
            Err(e) => return Ok(Readiness::Unusable(e.to_string())),
        };
        if let Err(why) = crate::docker::check_archive(&archive, self.max_image_bytes) {
            return Ok(Readiness::Unusable(why));
        }
        let loaded = match self.engine.load(&archive).await {
            Ok(loaded) => loaded,
            Err(EngineError::Refused { message, .. }) => {
                return Ok(Readiness::Unusable(format!(
                    "the engine refused the image: {message}"
                )))
            }
            Err(e) => return Err(e),
        };
        let tag = image_tag(cid);
        let (repo, tag) = tag.split_once(':').unwrap_or((tag.as_str(), "latest"));
        self.engine.tag(&loaded, repo, tag).await?;
        self.touch(cid);
        let removed = self.prune_images(self.image_cache_bytes).await?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed the least recently used job images");
        }
        Ok(Readiness::Ready)
    }

    /// Runs `program` in a container of image `cid` over the task directory `work`, until
    /// it exits or `deadline` passes.
    /// The job's requirements set the container's limits: its memory is the job's
    /// `min_memory_mib` (else the worker's own limit) and its CPUs the job's `min_cpu_cores`,
    /// the same on every worker, so a run ended for its memory is ended everywhere alike.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        cid: &Hash,
        program: &Program,
        limits: &Requirements,
        work: &Path,
        env: &TaskEnv,
        deadline: Duration,
    ) -> Result<RunOutcome, EngineError> {
        let (spec, stdout, stderr) = self.prepare(cid, program, limits, work, env).await?;
        let not_started = |why: String| {
            tracing::warn!(image = %cid, "the job's container could not start: {why}");
            Ok(RunOutcome {
                ended: RunEnd::NotStarted {},
                seconds: 1,
            })
        };
        let id = match self.engine.create(&spec).await {
            Ok(id) => id,
            Err(EngineError::Refused { message, .. }) => return not_started(message),
            Err(e) => return Err(e),
        };
        let outcome = match self.engine.start(&id).await {
            Ok(()) => self.run_started(&id, &stdout, &stderr, deadline).await,
            Err(EngineError::Refused { message, .. }) => not_started(message),
            Err(e) => Err(e),
        };
        // A container that cannot be removed now is removed when the worker next starts;
        // the run's result stands.
        if let Err(e) = self.engine.remove(&id).await {
            tracing::warn!(error = %e, container = %id, "removing a finished container failed");
        }
        outcome
    }

    /// Starts `program` as a service's server in a container of image `cid` over `work` (its
    /// inputs in place), confined as a task's run, answering HTTP on the UNIX socket
    /// `$GRIDWORK_SOCKET` (`/gridwork/tmp/http.sock`: the run's `tmp/` on the host) and never
    /// on the network. Its output goes to the work directory's logs; it runs until
    /// [`ContainerServer::stop`].
    pub async fn serve(
        &self,
        cid: &Hash,
        program: &Program,
        limits: &Requirements,
        work: &Path,
        env: &TaskEnv,
    ) -> Result<ContainerServer, EngineError> {
        let (mut spec, stdout, stderr) = self.prepare(cid, program, limits, work, env).await?;
        if let Some(vars) = spec["Env"].as_array_mut() {
            vars.push(json!(format!(
                "GRIDWORK_SOCKET=/gridwork/tmp/{}",
                crate::confine::SERVICE_SOCKET
            )));
        }
        // A server has no network, whatever its program says (a worker serves no service
        // that asks for it): it answers on its socket only.
        spec["HostConfig"]["NetworkMode"] = json!("none");
        spec["NetworkDisabled"] = json!(true);
        let id = self.engine.create(&spec).await?;
        if let Err(e) = self.engine.start(&id).await {
            let _ = self.engine.remove(&id).await;
            return Err(e);
        }
        let (engine, cid_id) = (self.engine.clone(), id.clone());
        tokio::spawn(async move {
            let _ = engine.logs_to(&cid_id, &stdout, &stderr).await;
        });
        let (ended, exited) = tokio::sync::watch::channel(None);
        let (engine, waited) = (self.engine.clone(), id.clone());
        tokio::spawn(async move {
            let status = match engine.wait(&waited).await {
                Ok((code, oom)) => format!(
                    "exit status {code}{}",
                    if oom { " (out of memory)" } else { "" }
                ),
                Err(e) => e.to_string(),
            };
            let _ = ended.send(Some(status));
        });
        Ok(ContainerServer {
            engine: self.engine.clone(),
            id: Some(id),
            exited,
        })
    }

    /// A run's directories readied for `nobody`, its logs created, and the engine's create
    /// body: what a task's run and a service's server share.
    async fn prepare(
        &self,
        cid: &Hash,
        program: &Program,
        limits: &Requirements,
        work: &Path,
        env: &TaskEnv,
    ) -> Result<(Value, PathBuf, PathBuf), EngineError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| EngineError::Io {
                path: path.clone(),
                source,
            }
        };
        let (inputs, outputs) = layout(work);
        let run = run_dir(work);
        let tmp = run.join("tmp");
        for dir in [&inputs, &outputs, &tmp] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let (stdout, stderr) = (work.join("stdout.log"), work.join("stderr.log"));
        for log in [&stdout, &stderr] {
            std::fs::File::create(log).map_err(io(log))?;
        }
        // The container runs as nobody, which must be able to write where it may and read
        // its inputs: what it owns on a root worker, what anyone may write otherwise.
        let root = rustix::process::geteuid().is_root();
        for dir in [&run, &outputs, &tmp] {
            match root {
                true => chown(dir, NOBODY).map_err(io(dir))?,
                false => set_mode(dir, 0o777).map_err(io(dir))?,
            }
        }
        readable_by_all(&inputs).map_err(io(&inputs))?;
        self.touch(cid);
        let volumes = self.engine.image_volumes(&image_tag(cid)).await?;
        let spec = self.spec(cid, program, limits, env, &run, &inputs, &outputs, &volumes);
        Ok((spec, stdout, stderr))
    }

    async fn run_started(
        &self,
        id: &str,
        stdout: &Path,
        stderr: &Path,
        deadline: Duration,
    ) -> Result<RunOutcome, EngineError> {
        let started = Instant::now();
        let logs = {
            let (engine, id) = (self.engine.clone(), id.to_string());
            let (stdout, stderr) = (stdout.to_path_buf(), stderr.to_path_buf());
            tokio::spawn(async move { engine.logs_to(&id, &stdout, &stderr).await })
        };
        let ended = match tokio::time::timeout(deadline, self.engine.wait(id)).await {
            Ok(waited) => {
                let (code, oom) = waited?;
                // As a process run: failed after the kernel ended a process of it for going
                // past the job's memory, it ran out of memory.
                match (oom, u8::try_from(code)) {
                    (_, Ok(0)) => RunEnd::SUCCESS,
                    (true, _) => RunEnd::OutOfMemory {},
                    (false, Ok(code)) => RunEnd::Exit { code },
                    (false, Err(_)) => RunEnd::Signal { signal: 9 },
                }
            }
            Err(_) => {
                self.engine.kill(id).await?;
                let _ = self.engine.wait(id).await;
                RunEnd::Timeout {}
            }
        };
        // The log follow ends with the container; what it wrote is complete.
        match tokio::time::timeout(Duration::from_secs(10), logs).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "following a container's output failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("a container's output did not end with it"),
        }
        Ok(RunOutcome {
            ended,
            seconds: started.elapsed().as_secs().max(1),
        })
    }

    /// The engine's create body for one run.
    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        cid: &Hash,
        program: &Program,
        limits: &Requirements,
        env: &TaskEnv,
        run: &Path,
        inputs: &Path,
        outputs: &Path,
        volumes: &[String],
    ) -> Value {
        let mount = |source: &Path, target: &str, read_only: bool| {
            json!({
                "Type": "bind",
                "Source": source.display().to_string(),
                "Target": target,
                "ReadOnly": read_only,
            })
        };
        let mut host = json!({
            "Mounts": [
                mount(run, "/gridwork", false),
                mount(inputs, "/gridwork/inputs", true),
                mount(outputs, "/gridwork/outputs", false),
            ],
            "ReadonlyRootfs": true,
            "NetworkMode": if program.network { "bridge" } else { "none" },
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": PIDS_LIMIT,
            "Tmpfs": { "/tmp": "rw,nosuid,nodev,size=1073741824,mode=1777" },
            // The engine's copy of the output, beside the worker's own, bounded.
            "LogConfig": { "Type": "local", "Config": { "max-size": "10m", "max-file": "2" } },
        });
        // A volume the image declares would be an anonymous volume on the engine's disk,
        // writable past the read-only root and unbounded: a small tmpfs stands in for each.
        for path in volumes {
            // What the run's own mounts are: the engine skips a volume only where a mount is
            // exactly (a review found `/gridwork/cache` got an anonymous volume beneath the
            // run's bind mount, and `/gridwork-data` was once taken for one by its prefix).
            let covered = ["/gridwork", "/gridwork/inputs", "/gridwork/outputs"]
                .iter()
                .any(|m| Path::new(path.as_str()) == Path::new(m));
            if !covered {
                host["Tmpfs"][path] = json!("rw,nosuid,nodev,size=268435456,mode=1777");
            }
        }
        let memory_mib = match limits.min_memory_mib {
            0 => self.memory_mib,
            job => Some(job),
        };
        if let Some(mib) = memory_mib {
            // No swap beyond it: the limit is the limit on every worker.
            host["Memory"] = json!(mib.saturating_mul(1 << 20));
            host["MemorySwap"] = json!(mib.saturating_mul(1 << 20));
        }
        if limits.min_cpu_cores > 0 {
            host["NanoCpus"] = json!(u64::from(limits.min_cpu_cores).saturating_mul(1_000_000_000));
        }
        if !self.devices.is_empty() {
            use std::os::unix::fs::MetadataExt;
            let devices: Vec<Value> = self
                .devices
                .iter()
                .map(|d| {
                    json!({
                        "PathOnHost": d.display().to_string(),
                        "PathInContainer": d.display().to_string(),
                        "CgroupPermissions": "rwm",
                    })
                })
                .collect();
            let mut groups: Vec<String> = self
                .devices
                .iter()
                .filter_map(|d| std::fs::metadata(d).ok().map(|m| m.gid().to_string()))
                .collect();
            groups.sort();
            groups.dedup();
            host["Devices"] = json!(devices);
            host["GroupAdd"] = json!(groups);
        }
        if self.gpus {
            host["DeviceRequests"] = json!([{
                "Driver": "nvidia",
                "Count": -1,
                "Capabilities": [["gpu", "compute", "utility"]],
            }]);
        }
        let mut vars = vec![
            format!("GRIDWORK_JOB={}", env.job),
            format!("GRIDWORK_TASK={}", env.task),
            format!("GRIDWORK_ITEM_START={}", env.items.0),
            format!("GRIDWORK_ITEM_END={}", env.items.1),
            "GRIDWORK_INPUTS=/gridwork/inputs".into(),
            "GRIDWORK_OUTPUTS=/gridwork/outputs".into(),
            "HOME=/gridwork".into(),
            "TMPDIR=/gridwork/tmp".into(),
            "LANG=C.UTF-8".into(),
        ];
        vars.extend(
            env.segment_vars("/gridwork")
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        json!({
            "Image": image_tag(cid),
            "Entrypoint": [program.command],
            "Cmd": program.args,
            "Env": vars,
            "WorkingDir": "/gridwork",
            "User": format!("{NOBODY}:{NOBODY}"),
            "Hostname": "gridwork",
            "Labels": {
                WORKER_LABEL: self.worker,
                "gridwork.job": env.job,
                "gridwork.task": env.task.to_string(),
            },
            "NetworkDisabled": !program.network,
            "HostConfig": host,
        })
    }
}

/// The archive in an image's pulled directory: its one regular file.
fn archive_in(dir: &Path) -> std::io::Result<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(std::io::Error::other(format!(
            "an image is one `docker save` archive; this tree holds {} files (push images with `gridwork image push`)",
            files.len()
        ))),
    }
}

fn chown(path: &Path, id: u32) -> std::io::Result<()> {
    let id_u = rustix::process::Uid::from_raw(id);
    let id_g = rustix::process::Gid::from_raw(id);
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(id_u),
        Some(id_g),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes everything under `dir` readable by anyone (directories searchable too), links
/// untouched: the container's user reads the inputs the worker pulled.
fn readable_by_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(dir)?.permissions().mode();
    set_mode(dir, mode | 0o555)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            readable_by_all(&entry.path())?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            set_mode(&entry.path(), mode | 0o444)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(containers: &Containers) -> Value {
        spec_with(containers, false, &[])
    }

    fn spec_with(containers: &Containers, network: bool, volumes: &[String]) -> Value {
        let program = Program {
            command: "python3".into(),
            args: vec!["train.py".into()],
            outputs: Vec::new(),
            image: None,
            network,
            vendor_images: Vec::new(),
        };
        let env = TaskEnv {
            job: "ab".into(),
            task: 0,
            items: (0, 1),
            segment: None,
            limits: Default::default(),
        };
        let run = Path::new("/w/run");
        containers.spec(
            &Hash::ZERO,
            &program,
            &Requirements::default(),
            &env,
            run,
            &run.join("inputs"),
            &run.join("outputs"),
            volumes,
        )
    }

    /// A volume an image declares would be an anonymous volume on the engine's disk, writable
    /// past the read-only root and unbounded: each gets a small tmpfs, but for those the run's
    /// own mounts are exactly (`/gridwork`, its inputs and outputs; a review found
    /// `/gridwork-data` was taken for one of them by a prefix of its text, and another that
    /// `/gridwork/cache` got an unbounded volume). A job with the network gets the
    /// engine's bridge, one without none.
    #[test]
    fn image_volumes_get_a_bounded_tmpfs_and_the_network_only_when_asked() {
        let containers = Containers::new(Engine::new("/nonexistent.sock"), "w".into(), None, false);
        let volumes: Vec<String> = ["/data", "/gridwork-data", "/gridwork/cache", "/gridwork"]
            .map(String::from)
            .to_vec();
        let spec = spec_with(&containers, false, &volumes);
        let tmpfs = spec["HostConfig"]["Tmpfs"].as_object().unwrap();
        let mut paths: Vec<&str> = tmpfs.keys().map(String::as_str).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["/data", "/gridwork-data", "/gridwork/cache", "/tmp"]
        );
        assert_eq!(spec["NetworkDisabled"], true);
        let open = spec_with(&containers, true, &[]);
        assert_eq!(open["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(open["NetworkDisabled"], false);
    }

    /// NVIDIA GPUs reach a container through the engine's `nvidia` device driver (the NVIDIA
    /// container toolkit), asked for every GPU with the compute and utility capabilities
    /// (CUDA and NVML); a worker asks only where the engine has the runtime
    /// (`Engine::has_nvidia_runtime`), since an engine without it refuses the container.
    /// What the toolkit makes of it is checked on a GPU host (`scripts/device/gpu-check.sh`).
    #[test]
    fn a_gpu_worker_asks_the_engine_for_every_nvidia_gpu_and_a_cpu_worker_for_none() {
        let engine = || Engine::new("/nonexistent.sock");
        let gpu = spec_of(&Containers::new(engine(), "w".into(), None, true));
        assert_eq!(
            gpu["HostConfig"]["DeviceRequests"],
            json!([{
                "Driver": "nvidia",
                "Count": -1,
                "Capabilities": [["gpu", "compute", "utility"]],
            }])
        );
        let cpu = spec_of(&Containers::new(engine(), "w".into(), None, false));
        assert!(cpu["HostConfig"].get("DeviceRequests").is_none(), "{cpu}");
        assert!(cpu["HostConfig"].get("Devices").is_none(), "{cpu}");
        // Confined alike either way.
        for spec in [&gpu, &cpu] {
            assert_eq!(spec["User"], "65534:65534");
            assert_eq!(spec["HostConfig"]["ReadonlyRootfs"], true);
            assert_eq!(spec["HostConfig"]["NetworkMode"], "none");
            assert_eq!(spec["HostConfig"]["CapDrop"], json!(["ALL"]));
        }
    }
}
