//! `gridwork bench executors`: what each executor adds to a task, measured on this machine.
//!
//! The same trivial program (`true`) run `runs` times through the process sandbox (the
//! supervisor, the mount namespace, Landlock, then `exec`) and through a container of the
//! given image (create, start, wait, remove, with the confinement a job gets), and the image
//! saved and loaded into the engine once, as a worker does before the first task of an image
//! it has not cached.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridwork_types::{Hash, Program};
use gridwork_worker::container::Containers;
use gridwork_worker::docker::Engine;
use gridwork_worker::sandbox::{self, Launcher, TaskEnv};
use serde_json::json;

use crate::output::{emit, rows};

/// Milliseconds: median and mean of `times`.
fn summary(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times.get(times.len() / 2).copied().map_or(0.0, ms);
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len().max(1) as f64;
    (median, mean)
}

pub(crate) fn bench_executors(
    json_out: bool,
    image: &str,
    runs: u32,
    dir: &Path,
    socket: &Path,
) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let rt = crate::commands::runtime()?;
    let engine = Engine::new(socket);
    let env = TaskEnv {
        job: "bench".into(),
        task: 0,
        items: (0, 1),
        segment: None,
        limits: Default::default(),
    };
    let program = Program {
        command: "true".into(),
        args: Vec::new(),
        outputs: Vec::new(),
        image: None,
        network: false,
        vendor_images: Vec::new(),
    };
    let launcher = Launcher {
        exe: std::env::current_exe()?,
        memory_mib: None,
        max_file_mib: None,
        gpu_devices: Vec::new(),
        hidden: Vec::new(),
        // As a worker makes them: each run in a control group of its own.
        cgroups: gridwork_worker::cgroup::Cgroups::find("gridwork bench executors"),
    };
    let deadline = Duration::from_secs(60);
    let mut process = Vec::new();
    for i in 0..runs {
        let work = dir.join(format!("process-{i}"));
        let started = Instant::now();
        let outcome = rt.block_on(sandbox::run(
            &program,
            &work,
            &env,
            deadline,
            Some(&launcher),
        ))?;
        process.push(started.elapsed());
        anyhow::ensure!(outcome.ended.is_success(), "`true` ended {}", outcome.ended);
    }

    // The image as a worker gets it: saved by id, loaded, tagged by a content id.
    let archive_dir = dir.join("image");
    std::fs::create_dir_all(&archive_dir)?;
    let archive = archive_dir.join("image.tar");
    let id = rt.block_on(engine.image_id(image))?;
    let bytes = rt.block_on(engine.save(&id, &archive))?;
    let cid = Hash::of(id.as_bytes());
    let containers = Containers::new(engine.clone(), "bench".into(), None, false);
    let started = Instant::now();
    let ready = rt.block_on(containers.load_image(&cid, &archive_dir))?;
    let load = started.elapsed();
    anyhow::ensure!(
        ready == gridwork_worker::container::Readiness::Ready,
        "the image cannot run: {ready:?}"
    );
    let mut container = Vec::new();
    for i in 0..runs {
        let work = dir.join(format!("container-{i}"));
        std::fs::create_dir_all(&work)?;
        let started = Instant::now();
        let outcome = rt.block_on(containers.run(
            &cid,
            &program,
            &gridwork_types::Requirements::default(),
            &work,
            &env,
            deadline,
        ))?;
        container.push(started.elapsed());
        anyhow::ensure!(outcome.ended.is_success(), "`true` ended {}", outcome.ended);
    }
    let (p50, pmean) = summary(&mut process);
    let (c50, cmean) = summary(&mut container);
    emit(
        json_out,
        &json!({
            "runs": runs,
            "process_ms": { "median": p50, "mean": pmean },
            "container_ms": { "median": c50, "mean": cmean },
            "image_bytes": bytes,
            "image_load_s": load.as_secs_f64(),
        }),
        || {
            rows(&[
                ("runs", runs.to_string()),
                (
                    "process",
                    format!("{p50:.1} ms median, {pmean:.1} ms mean per task (`true`)"),
                ),
                (
                    "container",
                    format!("{c50:.1} ms median, {cmean:.1} ms mean per task (`true`)"),
                ),
                (
                    "image",
                    format!(
                        "{bytes} bytes, loaded in {:.2} s (once per worker; a cached image starts at once)",
                        load.as_secs_f64()
                    ),
                ),
            ])
        },
    )
}
