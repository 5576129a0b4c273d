//! The container executor against the real Docker engine: a job brings its own environment
//! as an image pushed through the data plane, runs confined in a container on two workers,
//! and is checked like any other. The image is built here (`docker import` of a busybox root
//! file system from Debian's `busybox-static`, which `scripts/test-deps.sh` installs): no
//! registry is reachable. Fails, never skips, where the engine or busybox is missing.

use super::*;

use gridwork_types::{RunEnd, Software, CONTAINER_SOFTWARE};
use gridwork_worker::container::{Containers, WORKER_LABEL};
use gridwork_worker::docker::{Engine, DEFAULT_SOCKET};

/// Held by each test here for its whole run: their workers share addresses (`dev1`, `dev2`),
/// and a worker removes every container labelled with its address when it starts, and the
/// pruning test removes job images no container uses.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test image's name in the engine.
const TEST_IMAGE: &str = "gridwork-test/busybox:1";

/// Builds [`TEST_IMAGE`] (once per engine): a root file system of `/bin/busybox` and its
/// applets, imported with `docker import`.
fn test_image(dir: &std::path::Path) {
    build_image(dir, TEST_IMAGE, None);
}

/// Builds the busybox image as `tag`, with `/etc/build` saying `build` where one is given
/// (one build of a program per GPU maker).
fn build_image(dir: &std::path::Path, tag: &str, build: Option<&str>) {
    let root = dir.join(format!("rootfs-{}", tag.replace(['/', ':'], "-")));
    for sub in ["bin", "tmp", "etc", "gridwork"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static; scripts/test-deps.sh installs it)");
    for applet in [
        "sh", "cat", "echo", "id", "ls", "touch", "tr", "mkdir", "grep", "cut",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    if let Some(build) = build {
        std::fs::write(root.join("etc/build"), format!("{build}\n")).unwrap();
    }
    // As in the usual images: anyone may write /tmp.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut import = std::process::Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin", "-", tag])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the docker command (and a running Docker engine)");
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait().unwrap().success(), "docker import failed");
}

/// The engine held for this test alone ([`ENGINE`]), a fresh network, and the engine's
/// client; fails where no engine runs.
async fn engine_and_net() -> (tokio::sync::MutexGuard<'static, ()>, Net, Engine) {
    let held = ENGINE.lock().await;
    let net = Net::start().await;
    let engine = Engine::new(DEFAULT_SOCKET);
    engine
        .version()
        .await
        .expect("a running Docker engine at /var/run/docker.sock");
    (held, net, engine)
}

/// `gridwork image push`: the image `name` saved from the engine by id (no tags), pushed as a
/// tree; its engine id and the input naming it.
async fn push_image(net: &Net, engine: &Engine, name: &str) -> (String, gridwork_types::DataInput) {
    let saved = net.dir.path().join(name.replace(['/', ':'], "-"));
    std::fs::create_dir_all(&saved).unwrap();
    let id = engine.image_id(name).await.unwrap();
    engine.save(&id, &saved.join("image.tar")).await.unwrap();
    (id, net.push_input(&saved).await)
}

/// Two workers with the container executor (prices 0.01 GRID and a little more); their
/// addresses.
async fn docker_workers(net: &Net) -> Vec<String> {
    docker_workers_with_devices(net, Vec::new()).await
}

/// [`docker_workers`] that pass these GPU device nodes (or directories of render nodes) into
/// every container, as a worker does with AMD's and Intel's.
async fn docker_workers_with_devices(net: &Net, devices: Vec<std::path::PathBuf>) -> Vec<String> {
    docker_workers_with(net, 2, devices, |_| Vec::new()).await
}

/// `count` workers like [`docker_workers_with_devices`]', worker `i` declaring the GPUs
/// `gpus(i)` gives.
async fn docker_workers_with(
    net: &Net,
    count: u32,
    devices: Vec<std::path::PathBuf>,
    gpus: impl Fn(u32) -> Vec<gridwork_types::Gpu>,
) -> Vec<String> {
    let mut workers = Vec::new();
    for i in 1..=count {
        let mut cfg = net.config(i, GRID / 100 + u128::from(i), Behavior::Honest, None);
        let address = dev_keypair(i).address().to_string();
        cfg.hardware.gpus = gpus(i);
        cfg.hardware.software = vec![Software {
            name: CONTAINER_SOFTWARE.into(),
            version: "20.10".into(),
        }];
        cfg.containers = Some(
            Containers::new(
                Engine::new(DEFAULT_SOCKET),
                address.clone(),
                Some(512),
                false,
            )
            .with_devices(devices.clone()),
        );
        workers.push(address);
        net.spawn(Worker::new(&net.url, cfg).unwrap());
    }
    net.wait_providers(count as usize).await;
    workers
}

/// A job whose program runs in a busybox image (no busybox on the tasks' `PATH` is needed:
/// the image brings it) on two workers with the container executor. The run reads its named
/// input, and reports what its confinement is: not root, no network interface but loopback,
/// a read-only root file system, a writable `/tmp`. Both runs agree, the task settles on
/// exit 0, and no container of either worker is left behind. Then: a tagged archive
/// (`TagMover`) is refused before the engine sees it, a program that never ends times out,
/// and the containers a killed worker left are removed when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_its_own_image_confined_and_checked_by_a_council() {
    let (_engine, net, engine) = engine_and_net().await;
    test_image(net.dir.path());

    let (id, image) = push_image(&net, &engine, TEST_IMAGE).await;
    let workers = docker_workers(&net).await;

    let scene = net.dir.path().join("scene");
    std::fs::create_dir_all(&scene).unwrap();
    std::fs::write(scene.join("frame.txt"), "frame 7\n").unwrap();
    let mut input = net.push_input(&scene).await;
    input.name = "scene".into();

    let program = "cat $GRIDWORK_INPUTS/scene/frame.txt > $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"uid $(id -u)\" >> $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"net $(ls /sys/class/net | tr '\\n' ' ')\" >> $GRIDWORK_OUTPUTS/result.txt; \
                   touch /etc/planted 2>/dev/null && echo 'root writable' >> $GRIDWORK_OUTPUTS/result.txt; \
                   touch /tmp/scratch && echo 'tmp writable' >> $GRIDWORK_OUTPUTS/result.txt; \
                   touch $TMPDIR/scratch && echo 'TMPDIR writable' >> $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"mem $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\" >> $GRIDWORK_OUTPUTS/result.txt; \
                   touch $GRIDWORK_INPUTS/scene/planted 2>/dev/null && echo 'inputs writable' >> $GRIDWORK_OUTPUTS/result.txt; \
                   grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' >> $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"pids $(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)\" >> $GRIDWORK_OUTPUTS/result.txt; \
                   echo \"cpu $(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)\" >> $GRIDWORK_OUTPUTS/result.txt; \
                   echo 'to stderr' >&2";
    let mut p = squares(1, 1, 60_000, program);
    let (image_cid, image_input) = (image.cid, image.clone());
    p.program.image = Some(image.cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    // The job's requirements are its container's limits, the same on every worker.
    p.instructions.requirements.min_memory_mib = 256;
    p.instructions.requirements.min_cpu_cores = 1;
    p.data = vec![image, input];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.ended, Some(RunEnd::SUCCESS));
    assert!(
        t.bids.iter().all(|b| !b.cached),
        "nobody had the image yet: {:?}",
        t.bids
    );
    let text = result_text(&net, t.result.as_ref().unwrap()).await;
    assert_eq!(
        text,
        format!(
            "frame 7\nuid 65534\nnet lo \ntmp writable\nTMPDIR writable\nmem 268435456\n\
             CapEff:0000000000000000\nNoNewPrivs:1\nSeccomp:2\npids {}\ncpu 100000\n",
            gridwork_worker::container::PIDS_LIMIT
        ),
        "the run's view of its confinement: no capabilities, no new privileges, the engine's \
         seccomp filter, inputs read-only, pids, memory and CPU limited"
    );
    let stderr = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stderr, 0)
        .await
        .unwrap();
    assert_eq!(stderr.data, "to stderr\n");
    for worker in &workers {
        let left = engine.labelled(WORKER_LABEL, worker).await.unwrap();
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }

    // `TagMover`: an archive saved by name carries its tags, here `gridwork-test/busybox:1`
    // and the tag a worker gives another job's image. Loaded, it would move them to itself,
    // and later jobs naming that image would run this one. Workers refuse it before the
    // engine sees it: the run ends as "could not start", the same for executor and council,
    // and no tag moves.
    let tagged = net.dir.path().join("tagged");
    std::fs::create_dir_all(&tagged).unwrap();
    let victim_tag = gridwork_worker::container::image_tag(&t.result.unwrap());
    std::process::Command::new("docker")
        .args(["tag", TEST_IMAGE, &victim_tag])
        .status()
        .unwrap();
    engine
        .save(&victim_tag, &tagged.join("image.tar"))
        .await
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rmi", &victim_tag])
        .status();
    let tag_mover = net.push_input(&tagged).await;
    let mut p = squares(1, 1, 60_000, "echo ran > $GRIDWORK_OUTPUTS/result.txt");
    p.program.image = Some(tag_mover.cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![tag_mover];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(
        view.tasks[0].ended,
        Some(RunEnd::NotStarted {}),
        "{view:#?}"
    );
    assert!(
        !engine.has_image(&victim_tag).await.unwrap(),
        "the tag moved"
    );
    assert_eq!(engine.image_id(TEST_IMAGE).await.unwrap(), id);

    // `ManifestSwapper` (found by a review): an untagged `manifest.json` first and a tagged
    // one appended at the end. The engine unpacks both and loads the last, moving the tag;
    // a check that read the first alone let it through. Refused the same way.
    let unpacked = net.dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untagged = net.dir.path().join("untagged.tar");
    engine.save(&id, &untagged).await.unwrap();
    let tar = |args: &[&str]| {
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&unpacked)
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "tar {args:?}");
    };
    tar(&["-xf", untagged.to_str().unwrap()]);
    let swapped = net.dir.path().join("swapped");
    std::fs::create_dir_all(&swapped).unwrap();
    let archive = swapped.join("image.tar");
    tar(&["-cf", archive.to_str().unwrap(), "."]);
    let manifest = unpacked.join("manifest.json");
    let mut tagged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    tagged[0]["RepoTags"] = serde_json::json!([victim_tag]);
    std::fs::write(&manifest, tagged.to_string()).unwrap();
    tar(&["-rf", archive.to_str().unwrap(), "manifest.json"]);
    let swapper = net.push_input(&swapped).await;
    let mut p = squares(1, 1, 60_000, "echo ran > $GRIDWORK_OUTPUTS/result.txt");
    p.program.image = Some(swapper.cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![swapper];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(
        view.tasks[0].ended,
        Some(RunEnd::NotStarted {}),
        "{view:#?}"
    );
    assert!(
        !engine.has_image(&victim_tag).await.unwrap(),
        "the appended manifest moved the tag"
    );

    // A program that never ends is ended at the deadline, in every run: a timeout.
    let mut p = squares(1, 1, 15_000, "sleep 600");
    p.program.image = Some(image_cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![image_input.clone()];
    // Both bids are in before the auction closes.
    p.halting.first_bids = 2;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(view.tasks[0].ended, Some(RunEnd::Timeout {}), "{view:#?}");
    // Both workers loaded the image for the first job: their bids on this one say so, and
    // ask the default 10% less.
    let bids = &view.tasks[0].bids;
    assert_eq!(bids.len(), 2, "{bids:?}");
    for b in bids {
        let i = workers
            .iter()
            .position(|w| *w == b.provider.to_string())
            .unwrap() as u128
            + 1;
        assert!(b.cached, "{b:?}");
        assert_eq!(b.price, Amount((GRID / 100 + i) * 90 / 100), "{b:?}");
    }

    // A program that holds more than the job's memory is ended by the kernel in every run,
    // which says so (not "signal 9", which reads as a crash), and its council agrees.
    let mut p = squares(
        1,
        1,
        60_000,
        "x=$(head -c 400000000 /dev/zero | tr '\\0' x); echo ${#x} > $GRIDWORK_OUTPUTS/result.txt",
    );
    p.program.image = Some(image_cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 64;
    p.data = vec![image_input.clone()];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    assert_eq!(view.tasks[0].phase, Phase::Settled, "{view:#?}");
    assert_eq!(
        view.tasks[0].ended,
        Some(RunEnd::OutOfMemory {}),
        "{view:#?}"
    );

    // What a killed worker leaves is removed when it starts again.
    let owner = format!("grid1leftover{}", std::process::id());
    let leftover = engine
        .create(&serde_json::json!({
            "Image": TEST_IMAGE,
            "Cmd": ["sh", "-c", "sleep 600"],
            "Labels": { WORKER_LABEL: owner },
        }))
        .await
        .unwrap();
    engine.start(&leftover).await.unwrap();
    let containers = Containers::new(Engine::new(DEFAULT_SOCKET), owner.clone(), None, false);
    assert_eq!(containers.remove_leftovers().await.unwrap(), 1);
    assert!(engine
        .labelled(WORKER_LABEL, &owner)
        .await
        .unwrap()
        .is_empty());
    // Loaded job images outgrowing their limit go, least recently used first; with no room
    // at all, every one no container uses.
    let removed = containers.prune_images(0).await.unwrap();
    let tag = gridwork_worker::container::image_tag(&image_cid);
    assert!(removed.contains(&tag), "{removed:?}");
    assert!(!engine.has_image(&tag).await.unwrap());
    net.stop.send(true).unwrap();
}

/// AMD and Intel GPUs reach a container through their device nodes, which a worker finds
/// under `/dev` (`kfd`, and the render nodes in `dri/`) and passes in with the groups that own
/// them: a render node is `root:render`, mode 0660, and the task runs as `nobody`. Here a
/// directory stands for `/dev/dri`: a render node (the numbers of `/dev/null`, so writing it
/// is harmless) of a group of its own, and a display node (`card0`) that a compute task does
/// not get. The task, as `nobody`, writes the render node through its group; the display
/// node is not in its container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_task_opens_the_render_nodes_it_is_given_through_their_group() {
    use std::os::unix::fs::PermissionsExt;
    let (_engine, net, engine) = engine_and_net().await;
    test_image(net.dir.path());
    let (_, image) = push_image(&net, &engine, TEST_IMAGE).await;
    let devices = tempfile::tempdir_in("/var/tmp").unwrap();
    let dri = devices.path().join("dri");
    std::fs::create_dir_all(&dri).unwrap();
    for (node, group) in [("renderD128", 4242), ("card0", 4243)] {
        let path = dri.join(node);
        let made = std::process::Command::new("mknod")
            .arg(&path)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(made.success(), "mknod (the container tests run as root)");
        std::os::unix::fs::chown(&path, Some(0), Some(group)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    }
    docker_workers_with_devices(&net, vec![dri.clone()]).await;
    let program = format!(
        "out=$GRIDWORK_OUTPUTS/result.txt; \
         echo frame > {dri}/renderD128 && echo render-ok >> $out; \
         ls {dri} >> $out; id -G >> $out",
        dri = dri.display()
    );
    let mut p = squares(1, 1, 60_000, &program);
    p.program.image = Some(image.cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![image];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
    let text = result_text(&net, t.result.as_ref().unwrap()).await;
    assert_eq!(text, "render-ok\nrenderD128\n65534 4242\n");
    net.stop.send(true).unwrap();
}

/// A job brings two builds of its program: one for AMD GPUs (`amd`) and a common one (`cpu`)
/// for the rest. Workers 1 and 2 declare an AMD GPU, 3 and 4 none. Each run says on its
/// stderr (kept per provider) which build ran: every worker ran the build for its hardware,
/// and each task's council ran the same build as its executor (the ledger draws it so). A
/// job that needs a GPU runs on the AMD workers alone, in the AMD build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_runs_the_build_of_the_program_for_its_gpus() {
    let (_engine, net, engine) = engine_and_net().await;
    let (cpu_tag, amd_tag) = ("gridwork-test/busybox:cpu", "gridwork-test/busybox:amd");
    build_image(net.dir.path(), cpu_tag, Some("cpu"));
    build_image(net.dir.path(), amd_tag, Some("amd"));
    let (_, cpu) = push_image(&net, &engine, cpu_tag).await;
    let (_, amd) = push_image(&net, &engine, amd_tag).await;
    let workers = docker_workers_with(&net, 4, Vec::new(), |i| {
        if i <= 2 {
            vec![gridwork_types::Gpu {
                vendor: gridwork_types::GpuVendor::Amd,
                model: "MI300X".into(),
                vram_mib: 192 * 1024,
            }]
        } else {
            Vec::new()
        }
    })
    .await;
    let mut p = squares(
        2,
        1,
        60_000,
        "echo done > $GRIDWORK_OUTPUTS/result.txt; cat /etc/build >&2",
    );
    p.program.image = Some(cpu.cid);
    p.program.vendor_images = vec![gridwork_types::VendorImage {
        vendor: gridwork_types::GpuVendor::Amd,
        image: amd.cid,
    }];
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![cpu, amd];
    let build_of = |a: &gridwork_types::Address| {
        let i = workers.iter().position(|w| *w == a.to_string()).unwrap();
        if i < 2 {
            "amd\n"
        } else {
            "cpu\n"
        }
    };
    let mut gpu_job = p.clone();
    gpu_job.instructions.requirements.min_gpus = 1;
    for (p, only_amd) in [(p, false), (gpu_job, true)] {
        let job = net.submit(p).await;
        let view = net.wait_finished(&job).await;
        for t in &view.tasks {
            assert_eq!(t.phase, Phase::Settled, "{view:#?}");
            assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
            assert_eq!(t.council.len(), 1, "{view:#?}");
            let executor = t.executor.unwrap();
            assert_eq!(build_of(&t.council[0]), build_of(&executor), "{view:#?}");
            if only_amd {
                assert_eq!(build_of(&executor), "amd\n");
            }
            // Each run's log, the executor's and the council member's.
            for worker in [executor, t.council[0]] {
                let stderr = net
                    .client
                    .task_log(&job, t.index, Some(&worker), None, LogStream::Stderr, 0)
                    .await
                    .unwrap();
                assert_eq!(stderr.data, build_of(&worker), "{worker} ran its build");
            }
        }
    }
    net.stop.send(true).unwrap();
}

/// [`PYTHON_IMAGE`], built (`scripts/python-image.sh`) and pushed: the input naming it.
async fn python_image(net: &Net, engine: &Engine) -> gridwork_types::DataInput {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/python-image.sh");
    let built = std::process::Command::new("bash")
        .args([script, PYTHON_IMAGE])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    push_image(net, engine, PYTHON_IMAGE).await.1
}

/// A service that brings its image: the example model served from the Python image by three
/// workers with the container executor, each member's server a confined container with no
/// network answering on its socket in the run's `tmp/`. A user's request through the gateway
/// gets the council's answer; while it serves each worker has its container, and once the
/// workers stop none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_brings_its_image_is_served_from_containers() {
    let (_engine, net, engine) = engine_and_net().await;
    let image = python_image(&net, &engine).await;
    let workers = docker_workers_with(&net, 3, Vec::new(), |_| Vec::new()).await;
    let mut spec = super::services::example_spec(&net, 10_000).await;
    spec.program = Program {
        command: "python3".into(),
        args: vec!["inputs/model/serve.py".into()],
        outputs: vec![],
        image: Some(image.cid),
        network: false,
        vendor_images: Vec::new(),
    };
    spec.data.push(image);
    spec.requirements = Requirements {
        software: vec![CONTAINER_SOFTWARE.into()],
        min_memory_mib: 256,
        ..Requirements::default()
    };
    let id = super::services::create_service(&net, spec.clone()).await;
    let ask = super::services::gateway(&net, id, spec).await;
    let answer = super::services::served(&ask, "a container").await;
    assert!(answer.contains("\"completion\""), "{answer}");
    for worker in &workers {
        let running = engine.labelled(WORKER_LABEL, worker).await.unwrap();
        assert_eq!(running.len(), 1, "{worker}: {running:?}");
    }
    net.stop.send(true).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    for worker in &workers {
        loop {
            let left = engine.labelled(WORKER_LABEL, worker).await.unwrap();
            if left.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "containers left behind: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The image [`a_numpy_job_runs_in_a_python_image_built_from_debian_packages`] runs in.
const PYTHON_IMAGE: &str = "gridwork-test/python-numpy:1";

/// What a requester of AI work brings: a Python image with numpy (Debian's python3 and
/// python3-numpy, its root file system assembled from the host's packages by
/// `scripts/python-image.sh`, about 90 MB), pushed through the data plane, and a numpy job in
/// it on two workers. Each task solves a linear system seeded by its items and writes the
/// result; executor and council agree byte for byte, and every task settles on exit 0. Then
/// the training example in the same image, in checkpointed segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numpy_job_runs_in_a_python_image_built_from_debian_packages() {
    let (_engine, net, engine) = engine_and_net().await;
    let image = python_image(&net, &engine).await;
    let workers = docker_workers(&net).await;

    let program = [
        "import os, numpy as np",
        "start, end = int(os.environ['GRIDWORK_ITEM_START']), int(os.environ['GRIDWORK_ITEM_END'])",
        "out = os.environ['GRIDWORK_OUTPUTS']",
        "for i in range(start, end):",
        "    rng = np.random.default_rng(i)",
        "    a = rng.standard_normal((64, 64)) + 64 * np.eye(64)",
        "    b = rng.standard_normal(64)",
        "    x = np.linalg.solve(a, b)",
        "    np.savetxt(os.path.join(out, f'x{i}.txt'), x, fmt='%.12e')",
        "    print(i, float(np.abs(a @ x - b).max()) < 1e-9, np.__version__)",
    ]
    .join("\n");
    let mut p = squares(2, 1, 60_000, "");
    p.program.command = "python3".into();
    p.program.args = vec!["-c".into(), program];
    p.program.outputs = vec!["x*.txt".into()];
    p.program.image = Some(image.cid);
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.data = vec![image];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    for t in &view.tasks {
        assert_eq!(t.phase, Phase::Settled, "{view:#?}");
        assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
        let (_dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
        let x = std::fs::read_to_string(out.join(format!("x{}.txt", t.index))).unwrap();
        assert_eq!(x.lines().count(), 64, "{x}");
        let stdout = net
            .client
            .task_log(&job, t.index, None, None, LogStream::Stdout, 0)
            .await
            .unwrap();
        assert_eq!(
            stdout.data,
            format!("{} True 1.24.2\n", t.index),
            "{stdout:?}"
        );
    }

    // The training example in the same image: checkpointed segments run in containers, the
    // checkpoint each starts from at /gridwork/checkpoint, and the council's replays of two
    // drawn segments agreeing with the executor's checkpoints.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train/train.py");
    let dir = net.dir.path().join("train");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(script, dir.join("train.py")).unwrap();
    let mut p = squares(1, 1, 30_000, "");
    p.program.command = "python3".into();
    p.program.args = vec!["inputs/train.py".into(), "--steps".into(), "10".into()];
    p.program.image = view.prescription.program.image;
    p.instructions.requirements.software = vec![CONTAINER_SOFTWARE.into()];
    p.instructions.requirements.min_memory_mib = 256;
    p.equivalence = gridwork_types::Equivalence::NumericTolerance {
        abs_ppb: 1_000,
        rel_ppb: 10_000,
    };
    p.segments = Some(gridwork_types::Segments {
        count: 4,
        replayed: 2,
    });
    p.data = vec![
        view.prescription.data[0].clone(),
        net.push_input(&dir).await,
    ];
    let job = net.submit(p).await;
    let trained = net.wait_finished(&job).await;
    let t = &trained.tasks[0];
    assert_eq!(
        (t.phase, t.ended),
        (Phase::Settled, Some(RunEnd::SUCCESS)),
        "{trained:#?}"
    );
    assert_eq!(
        (t.checkpoints.len(), t.replay.len()),
        (4, 2),
        "{trained:#?}"
    );
    let (_dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
    let loss = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    assert_eq!(loss.lines().count(), 41, "{loss}");
    assert!(out.join("w1.npy").is_file());

    for worker in &workers {
        let left = engine.labelled(WORKER_LABEL, worker).await.unwrap();
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }
    net.stop.send(true).unwrap();
}
