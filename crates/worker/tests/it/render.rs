//! The render template with a real Blender (Debian's `blender`, which `scripts/test-deps.sh`
//! installs): the example job's scene, built by its script on every worker, rendered frame by
//! frame across three workers, each task checked by a council that compares the frames by
//! their pixels. `CheapRenderer` renders one sample per pixel where the job asks for sixteen
//! and is caught. Fails, never skips, where Blender is missing.

use super::*;

use gridwork_types::{Equivalence, RunEnd, Software};

/// The example job (`examples/render/job.toml`), made small for a test: `split` for its
/// frames (and tiles) at 96 x 54, `chunk` items a task, within the test's deposit. Its scene script pushed as an input; the prescription.
async fn render_job(net: &Net, split: &str, chunk: u64) -> Prescription {
    let replacements = [
        ("frames = [1, 48]", split.to_string()),
        ("resolution = [320, 180]", "resolution = [96, 54]".into()),
        ("chunk = 4", format!("chunk = {chunk}")),
        // Within the test's deposit.
        ("task_deadline_s = 600", "task_deadline_s = 120".into()),
        ("max_price = \"0.1\"", "max_price = \"0.02\"".into()),
    ];
    example_job(net, "render", &replacements, "make_scene.py").await
}

/// The version of Blender on the tasks' PATH, as a worker would list it.
fn blender() -> Software {
    let found = gridwork_worker::software::probe_software(&[]);
    found
        .into_iter()
        .find(|s| s.name == "blender")
        .expect("Blender on the tasks' PATH (Debian's blender; scripts/test-deps.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_splits_its_frames_across_workers_and_a_cheap_renderer_is_caught() {
    let net = Net::start().await;
    let blender = blender();
    // The cheap renderer asks the least, so it wins the first auctions.
    let mut workers = Vec::new();
    for (i, price, behavior) in [
        (1, GRID / 1000, Behavior::CheapRenderer),
        (2, GRID / 100, Behavior::Honest),
        (3, GRID / 100 + 1, Behavior::Honest),
        (4, GRID / 100 + 2, Behavior::Honest),
    ] {
        let mut cfg = net.config(i, price, behavior, None);
        cfg.hardware.software.push(blender.clone());
        workers.push(dev_keypair(i).address());
        net.spawn(Worker::new(&net.url, cfg).unwrap());
    }
    net.wait_providers(4).await;
    let mut p = render_job(&net, "frames = [1, 6]", 2).await;
    assert_eq!(
        p.equivalence,
        Equivalence::Image {
            min_psnr_mdb: 40_000,
            max_diff: 32
        }
    );
    // Every bid is in before an auction closes, so the cheapest wins the first attempt.
    p.halting.first_bids = 4;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let cheap = workers[0];
    for t in &view.tasks {
        assert_eq!(t.phase, Phase::Settled, "{view:#?}");
        assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
        assert_ne!(
            t.executor,
            Some(cheap),
            "task {}: the cheap render was accepted",
            t.index
        );
        // The task's frames, numbered from the first frame (1), and nothing else.
        let (_dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
        let mut frames: Vec<String> = std::fs::read_dir(out.join("frames"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        frames.sort();
        let first = 1 + 2 * t.index;
        assert_eq!(
            frames,
            [
                format!("frame_{first:05}.png"),
                format!("frame_{:05}.png", first + 1)
            ]
        );
    }
    // What `gridwork job results` puts together: the six frames in order, a contact sheet,
    // and a video (ffmpeg: scripts/test-deps.sh installs it).
    let pulled = net.dir.path().join("results");
    let mut dirs = Vec::new();
    let mut keep = Vec::new();
    for t in &view.tasks {
        let (dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
        dirs.push(out);
        keep.push(dir);
    }
    let put = gridwork_client::assemble_frames(&dirs, &pulled)
        .unwrap()
        .unwrap();
    assert_eq!(put.frames.len(), 6);
    assert!(put.frames[5].ends_with("frames/frame_00006.png"));
    assert!(
        put.contact_sheet.is_some() && put.skipped.is_empty(),
        "{put:?}"
    );
    assert!(put.video.is_ok(), "{:?}", put.video);
    let caught = net.client.provider(&cheap).await.unwrap().unwrap();
    assert!(caught.slashed.0 > 0 && caught.failed >= 1, "{caught:?}");

    // Frames 1 and 2 split into 3 x 2 tiles (one item a tile, a frame's six a task): merged
    // by `job results`, each is the frame rendered whole, within the frames' equivalence (a
    // render by border differs from the whole frame by a level or two here and there).
    let mut p = render_job(&net, "frames = [1, 2]\ntiles = [3, 2]", 6).await;
    assert_eq!(p.instructions.items, 12);
    p.halting.first_bids = 4;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let mut tile_dirs = Vec::new();
    for t in &view.tasks {
        assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
        let (dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
        tile_dirs.push(out);
        keep.push(dir);
    }
    let merged_dir = net.dir.path().join("merged");
    let merged = gridwork_client::assemble_frames(&tile_dirs, &merged_dir)
        .unwrap()
        .unwrap();
    assert_eq!(merged.frames.len(), 2, "{:?}", merged.skipped);
    for (whole, tiled) in put.frames.iter().zip(&merged.frames) {
        let (a, b) = (std::fs::read(whole).unwrap(), std::fs::read(tiled).unwrap());
        assert_eq!(
            gridwork_verify::image::png_difference(&a, &b, 40.0, 32),
            None,
            "{} against {}",
            whole.display(),
            tiled.display()
        );
    }
    net.stop.send(true).unwrap();
}
