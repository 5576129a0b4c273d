//! `gridwork worker`, `gridwork probe` and `gridwork sandbox-exec`: a provider's side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use gridwork_types::OwnerApproval;
use gridwork_worker::sandbox::Launcher;
use gridwork_worker::{
    confine_and_exec, gpu_devices, probe_report, serve_metrics, Behavior, CacheLimit, Confinement,
    P2pConfig, PricingPolicy, Worker, WorkerConfig,
};
use serde_json::json;
use tokio::sync::watch;

use crate::cli::{Cli, ExecutorArg, SandboxArgs, WorkerArgs};
use crate::commands::{home, init_logging, parse_amount, runtime, shutdown_signal, signing_key};
use crate::output::{emit, rows};

/// On a root worker, whose tasks run as `nobody`: refuses a work directory beneath one
/// `nobody` cannot search (`/root` is 0700), where every task would fail alike, naming the
/// directory and the fix (`flag` sets the work directory).
pub(crate) fn check_tasks_reach(work_dir: &std::path::Path, flag: &str) -> anyhow::Result<()> {
    if !gridwork_worker::container::runs_as_root() {
        return Ok(());
    }
    if let Some((dir, mode)) = gridwork_worker::unsearchable_for_tasks(work_dir) {
        anyhow::bail!(
            "the work directory {} lies beneath {} (mode {mode:o}), which `nobody` cannot search: this worker runs as root, so its tasks run as nobody and could not reach their inputs and outputs; give {flag} a directory beneath searchable ones (e.g. /var/lib/gridwork/worker), or let others search {} (chmod o+x)",
            work_dir.display(),
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn worker(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<()> {
    init_logging();
    if args.executor == ExecutorArg::Docker {
        // Before anything is asked for or touched.
        gridwork_worker::container::check_worker_user().map_err(anyhow::Error::msg)?;
    }
    let name = cli.key.clone().unwrap_or_default();
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => home(cli)?.join("worker").join(name),
    };
    // Absolute: task programs start in their own directories, and `sandbox-exec` reads the
    // paths it is given from there.
    let work_dir = std::path::absolute(&work_dir)
        .with_context(|| format!("resolving the work directory {}", work_dir.display()))?;
    check_tasks_reach(&work_dir, "--work-dir")?;
    let key = signing_key(cli)?;
    let price = parse_amount(&args.price)?;
    let stake = parse_amount(&args.stake)?;
    let max_fee = parse_amount(&args.max_fee).context("--max-fee")?;
    let owner = args
        .owner_approval
        .as_deref()
        .map(OwnerApproval::from_hex)
        .transpose()
        .context("--owner-approval")?;
    let owner_address = owner.map(|o| o.owner_address());
    let gridwork_home = std::path::absolute(home(cli)?).context("resolving the worker's home")?;
    let user_home = match args.tasks_may_read_home {
        true => None,
        false => std::env::var_os("HOME").map(PathBuf::from),
    };
    let mut hidden = hidden_paths(&gridwork_home, &work_dir, user_home.as_deref());
    if args.executor == ExecutorArg::Docker {
        // The engine's socket is root on the host: process tasks must not reach it.
        hidden.push(args.docker_socket.clone());
    }
    let report = probe_report();
    tracing::info!(nvidia = %report.nvidia_source, "probed");
    let mut hardware = report.hardware;
    hardware.software = gridwork_worker::software::probe_software(&args.software);
    // The standard benchmark, once per machine (kept in the work directory) or on demand.
    let (score, measured) =
        gridwork_worker::score::cpu_score(&work_dir, hardware.cpu_cores, args.bench);
    hardware.cpu_score = score;
    tracing::info!(cpu_score = score, measured_now = measured, "CPU score");
    // Capabilities, not programs: only the flags that grant them list them.
    hardware.software.retain(|s| {
        s.name != gridwork_types::NETWORK_SOFTWARE && s.name != gridwork_types::CONTAINER_SOFTWARE
    });
    if args.allow_network {
        hardware.software.push(gridwork_types::Software {
            name: gridwork_types::NETWORK_SOFTWARE.into(),
            version: String::new(),
        });
    }
    let rt = runtime()?;
    let containers = match args.executor {
        ExecutorArg::Process => None,
        ExecutorArg::Docker => {
            let engine = gridwork_worker::docker::Engine::new(&args.docker_socket);
            let version = rt
                .block_on(engine.version())
                .context("--executor docker needs the Docker engine")?;
            let nvidia_runtime = rt.block_on(engine.has_nvidia_runtime())?;
            let nvidia_gpus = hardware
                .gpus
                .iter()
                .any(|g| g.vendor == gridwork_types::GpuVendor::Nvidia);
            if nvidia_gpus && !nvidia_runtime {
                tracing::warn!("this machine has NVIDIA GPUs but the Docker engine has no `nvidia` runtime: containers run without GPUs (install the NVIDIA container toolkit)");
            }
            hardware
                .software
                .retain(|s| s.name != gridwork_types::CONTAINER_SOFTWARE);
            hardware.software.push(gridwork_types::Software {
                name: gridwork_types::CONTAINER_SOFTWARE.into(),
                version,
            });
            Some(
                gridwork_worker::container::Containers::new(
                    engine,
                    key.address().to_string(),
                    args.max_memory_mib,
                    nvidia_gpus && nvidia_runtime,
                )
                .with_image_cache_bytes(args.image_cache_max_gib.saturating_mul(1 << 30))
                // AMD and Intel GPUs by their device nodes (NVIDIA's through the runtime).
                .with_devices(
                    gpu_devices(Path::new("/dev"))
                        .into_iter()
                        .filter(|d| d.file_name().is_some_and(|n| n == "kfd" || n == "dri"))
                        .collect(),
                ),
            )
        }
    };
    tracing::info!(
        software = %describe_software(&hardware.software),
        "programs offered to tasks"
    );
    let launcher = Launcher {
        exe: std::env::current_exe().context("locating the gridwork executable")?,
        memory_mib: args.max_memory_mib,
        max_file_mib: Some(args.max_file_mib),
        gpu_devices: gpu_devices(Path::new("/dev")),
        hidden,
        cgroups: gridwork_worker::cgroup::Cgroups::find(&work_dir.display().to_string()),
    };
    let hold_memory = launcher.cgroups.is_ok();
    let sandbox = check_sandbox(&launcher, &work_dir);
    let cfg = WorkerConfig {
        owner,
        key,
        work_dir,
        policy: PricingPolicy {
            price_per_task_second: price,
            capacity: args.capacity,
            max_fee,
            allow_network: args.allow_network,
            cached_discount_pct: args.cached_discount,
            hold_memory,
        },
        hardware: hardware.clone(),
        stake,
        poll: Duration::from_millis(args.poll_ms),
        heartbeat: Duration::from_secs(20),
        behavior: Behavior::Honest,
        launcher: Some(launcher),
        p2p: args.p2p_listen.map(|listen| P2pConfig {
            listen,
            announce: args.p2p_announce.clone(),
        }),
        cache: Some(CacheLimit {
            max_bytes: args.worker_cache_max_gib.saturating_mul(1 << 30),
            spare: Duration::from_secs(600),
        }),
        containers,
        serve_services: !args.no_services,
    };
    let worker = Worker::new(&cli.node, cfg)?;
    rt.block_on(worker.register_when_reachable())?;
    let gpus: Vec<String> = hardware
        .gpus
        .iter()
        .map(|g| format!("{} {} ({} MiB)", g.vendor, g.model, g.vram_mib))
        .collect();
    emit(
        cli.json,
        &json!({
            "provider": worker.address(),
            "owner": owner_address,
            "hardware": hardware,
            "sandbox": sandbox.as_ref().ok(),
        }),
        || {
            rows(&[
                ("provider", worker.address().to_string()),
                (
                    "owner",
                    owner_address.map_or("itself".into(), |o| o.to_string()),
                ),
                (
                    "gpus",
                    if gpus.is_empty() {
                        "none".into()
                    } else {
                        gpus.join(", ")
                    },
                ),
                (
                    "cpu",
                    format!(
                        "{} cores, {} MiB memory",
                        hardware.cpu_cores, hardware.memory_mib
                    ),
                ),
                ("price", format!("{} GRID per task-second", price.rounded())),
                (
                    "sandbox",
                    match &sandbox {
                        Ok(check) => check.summary(),
                        Err(e) => format!("self-check failed: {e}"),
                    },
                ),
                ("stop", "Ctrl-C finishes running tasks, then exits".into()),
            ])
        },
    )?;
    rt.block_on(async move {
        let (stop, rx) = watch::channel(false);
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?;
            tracing::info!(%addr, "serving metrics at /metrics");
            let mut stopped = rx.clone();
            tokio::spawn(serve_metrics(worker.metrics(), listener, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping: finishing running tasks");
            let _ = stop.send(true);
        });
        worker.serve(rx).await?;
        anyhow::Ok(())
    })
}

/// Runs the sandbox's self-check as tasks here will be confined, and warns the provider of
/// each way it is weaker than it should be (what it exposes, how to mend it).
fn check_sandbox(
    launcher: &Launcher,
    work_dir: &Path,
) -> Result<gridwork_worker::SandboxCheck, String> {
    match launcher.check(&work_dir.join("sandbox-check")) {
        Ok(check) => {
            let weaknesses = check.weaknesses();
            if weaknesses.is_empty() {
                tracing::info!(sandbox = %check.summary(), "process tasks are confined");
            }
            for weakness in &weaknesses {
                tracing::warn!("process sandbox weaker than it should be: {weakness}");
            }
            Ok(check)
        }
        Err(e) => {
            tracing::warn!("the sandbox's self-check failed, process tasks may not start: {e}");
            Err(e.to_string())
        }
    }
}

/// What tasks may not read: the worker's home (keys, chunk cache), its work directory (the
/// decrypted inputs of other tasks) and the home directory of the user running the worker
/// (SSH keys, cloud credentials, browser profiles), unless that is `None` (the provider let
/// tasks read it) or the root of the file system (a service user's). Task programs are found
/// on a fixed `PATH` outside any home, so hiding it costs them nothing.
fn hidden_paths(gridwork_home: &Path, work_dir: &Path, user_home: Option<&Path>) -> Vec<PathBuf> {
    let mut hidden = vec![gridwork_home.to_path_buf(), work_dir.to_path_buf()];
    if let Some(home) = user_home.filter(|h| h.is_absolute() && h.parent().is_some()) {
        if !hidden.iter().any(|h| h == home) {
            hidden.push(home.to_path_buf());
        }
    }
    hidden
}

/// `name version, ...` for people.
fn describe_software(software: &[gridwork_types::Software]) -> String {
    let named: Vec<String> = software
        .iter()
        .map(|s| match s.version.as_str() {
            "" => s.name.clone(),
            v => format!("{} {v}", s.name),
        })
        .collect();
    if named.is_empty() {
        "none".into()
    } else {
        named.join(", ")
    }
}

pub(crate) fn probe_command(cli: &Cli, args: &crate::cli::ProbeArgs) -> anyhow::Result<()> {
    let mut report = probe_report();
    report.hardware.software = gridwork_worker::software::probe_software(&[]);
    if args.bench {
        report.hardware.cpu_score =
            gridwork_worker::score::measure_cpu_score(gridwork_worker::score::BENCH_TIME);
    }
    // As a worker with its defaults would confine tasks here (GPU nodes, no home hidden).
    let launcher = Launcher {
        exe: std::env::current_exe().context("locating the gridwork executable")?,
        memory_mib: None,
        max_file_mib: None,
        gpu_devices: gpu_devices(Path::new("/dev")),
        hidden: Vec::new(),
        cgroups: gridwork_worker::cgroup::Cgroups::find("gridwork probe"),
    };
    let sandbox = launcher
        .check(&std::env::temp_dir().join(format!("gridwork-probe-{}", std::process::id())));
    let mut shown = serde_json::to_value(&report)?;
    shown["sandbox"] = match &sandbox {
        Ok(check) => serde_json::to_value(check)?,
        Err(e) => json!({ "error": e.to_string() }),
    };
    emit(cli.json, &shown, || {
        let mut lines: Vec<(&str, String)> = report
            .hardware
            .gpus
            .iter()
            .map(|g| {
                (
                    "gpu",
                    format!("{} {} ({} MiB)", g.vendor, g.model, g.vram_mib),
                )
            })
            .collect();
        if lines.is_empty() {
            lines.push(("gpu", "none".into()));
        }
        lines.push(("nvidia", report.nvidia_source.clone()));
        lines.push((
            "cpu",
            format!(
                "{} cores, {} MiB memory",
                report.hardware.cpu_cores, report.hardware.memory_mib
            ),
        ));
        lines.push(("software", describe_software(&report.hardware.software)));
        match &sandbox {
            Ok(check) => {
                lines.push(("sandbox", check.summary()));
                lines.extend(check.weaknesses().into_iter().map(|w| ("weakness", w)));
                lines.push((
                    "sockets",
                    match check.unix_sockets {
                        true => "tasks connect only to UNIX sockets beneath their run".into(),
                        false => "tasks reach the UNIX sockets their user may outside /run, /tmp and /var/tmp (Landlock ABI 9, Linux 7.1, confines them)".into(),
                    },
                ));
            }
            Err(e) => lines.push(("sandbox", format!("self-check failed: {e}"))),
        }
        if report.hardware.cpu_score > 0 {
            lines.push((
                "cpu score",
                format!(
                    "{} (millions of multiply-adds a second, every core)",
                    report.hardware.cpu_score
                ),
            ));
        }
        rows(&lines)
    })
}

/// The confinement `sandbox-exec` was asked for.
fn confinement(args: &SandboxArgs) -> Confinement {
    Confinement {
        work: args.work.clone(),
        memory_mib: args.memory_mib,
        max_file_mib: args.max_file_mib,
        cpu_seconds: None,
        gpu_devices: args.gpu_device.clone(),
        hidden: args.hide.clone(),
        network: args.network,
        serve: args.serve,
        cgroups: args.cgroup.clone(),
    }
}

/// Confines this process and becomes the task program; returns only on failure.
pub(crate) fn sandbox_exec(args: &SandboxArgs) -> anyhow::Result<()> {
    if args.check {
        if !args.command.is_empty() {
            bail!("sandbox-exec --check runs no program: drop the command after `--`");
        }
        let check = gridwork_worker::SandboxCheck::run(&confinement(args));
        println!("{}", serde_json::to_string(&check)?);
        return Ok(());
    }
    let Some((command, rest)) = args.command.split_first() else {
        bail!("sandbox-exec needs a program after `--`");
    };
    if !args.inner {
        // The supervisor: it starts this command again with `--inner` as its child, and ends
        // every process the run leaves behind (gridwork_worker::supervise).
        let mut inner = std::process::Command::new(
            std::env::current_exe().context("locating the gridwork executable")?,
        );
        inner
            .arg("sandbox-exec")
            .arg("--inner")
            .arg("--work")
            .arg(&args.work);
        if let Some(m) = args.memory_mib {
            inner.arg("--memory-mib").arg(m.to_string());
        }
        if let Some(m) = args.max_file_mib {
            inner.arg("--max-file-mib").arg(m.to_string());
        }
        for d in &args.gpu_device {
            inner.arg("--gpu-device").arg(d);
        }
        for h in &args.hide {
            inner.arg("--hide").arg(h);
        }
        for dir in &args.cgroup {
            inner.arg("--cgroup").arg(dir);
        }
        if args.network {
            inner.arg("--network");
        }
        if args.serve {
            inner.arg("--serve");
        }
        inner.arg("--").args(&args.command);
        let deadline = args.deadline_ms.map(Duration::from_millis);
        use gridwork_worker::supervise::{supervise, RunStatus};
        // A supervisor that cannot start is a setup failure like any other.
        let status = supervise(inner, deadline, args.stop_file.as_deref())
            .unwrap_or_else(|e| RunStatus::SetupFailed(e.to_string()));
        if let Some(path) = &args.status_file {
            std::fs::write(path, status.to_line() + "\n")
                .with_context(|| format!("writing --status-file {}", path.display()))?;
        }
        match status {
            RunStatus::Ended(exit) => gridwork_worker::supervise::exit_as(exit),
            RunStatus::SetupFailed(why) => {
                eprintln!("gridwork sandbox: the sandbox could not be set up, the program did not run: {why}");
                // Docker's code for "the engine failed", which a shell's 126 and 127 are not.
                std::process::exit(125);
            }
        }
    }
    // Before anything can fail: the supervisor's pipe, kept past the moment `exec` puts
    // `/dev/null` on standard input.
    let report = gridwork_worker::supervise::SetupReport::take();
    let c = confinement(args);
    let err = if args.pid_init {
        gridwork_worker::pid_init(&c, command, rest, &report)
    } else {
        // The first process of the run's pid namespace, where it has one: this command again,
        // saying how the program ended (or why it could not start) on the pipe `say`.
        let init = |exe: &Path, say: std::os::fd::OwnedFd| {
            let mut cmd = std::process::Command::new(exe);
            let mut given = std::env::args_os().skip(1);
            cmd.args(given.next())
                .arg("--pid-init")
                .args(given)
                .stdin(std::process::Stdio::from(say));
            cmd
        };
        confine_and_exec(&c, command, rest, &init, &report)
    };
    if let Some(code) = err.program_exit_code() {
        // The job's to fix, not a failure of the sandbox.
        eprintln!("gridwork sandbox: {err}");
        std::process::exit(code);
    }
    report.failed(&err.to_string());
    Err(err.into())
}

#[cfg(test)]
mod tests {
    use super::hidden_paths;
    use std::path::{Path, PathBuf};

    /// The user's home is hidden beside the worker's own directories, unless the provider
    /// lets tasks read it; a home at the root would hide everything and is left out.
    #[test]
    fn tasks_may_not_read_the_users_home_unless_the_provider_lets_them() {
        let gridwork = Path::new("/home/p/.gridwork");
        let work = Path::new("/home/p/.gridwork/worker/dev1");
        let home = Path::new("/home/p");
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            hidden_paths(gridwork, work, Some(home)),
            paths(&[
                "/home/p/.gridwork",
                "/home/p/.gridwork/worker/dev1",
                "/home/p"
            ])
        );
        assert_eq!(
            hidden_paths(gridwork, work, None),
            paths(&["/home/p/.gridwork", "/home/p/.gridwork/worker/dev1"])
        );
        assert_eq!(hidden_paths(gridwork, work, Some(Path::new("/"))).len(), 2);
        assert_eq!(
            hidden_paths(gridwork, work, Some(Path::new("relative"))).len(),
            2
        );
    }
}
