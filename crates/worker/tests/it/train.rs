//! The training template with a real Python and numpy (Debian's `python3-numpy`, which
//! `scripts/test-deps.sh` installs): the example's script trained in checkpointed segments on
//! one worker, two of its segments drawn after its checkpoints were bound and replayed by the
//! council from the executor's checkpoints. `SkippingTrainer` trains its first segment only
//! and binds the rest as if trained; it is caught. Fails, never skips, where numpy is missing.

use super::*;

use gridwork_types::{RunEnd, Segments, Software};

/// The example job (`examples/train/job.toml`) at `steps` steps, a checkpoint every `every`,
/// `replayed` segments replayed, within the test's deposit; its script pushed as an input.
async fn train_job(net: &Net, steps: u64, every: u64, replayed: u32) -> Prescription {
    let replacements = [
        ("steps = 400", format!("steps = {steps}")),
        (
            "checkpoint_every = 50",
            format!("checkpoint_every = {every}"),
        ),
        ("replayed = 2", format!("replayed = {replayed}")),
        ("task_deadline_s = 60", "task_deadline_s = 30".into()),
        ("max_price = \"0.1\"", "max_price = \"0.02\"".into()),
    ];
    example_job(net, "train", &replacements, "train.py").await
}

/// Python with numpy on the tasks' PATH, as a worker lists it.
fn python_with_numpy() -> Software {
    let ok = std::process::Command::new("python3")
        .env("PATH", gridwork_worker::software::TASK_PATH)
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with numpy (Debian's python3-numpy; scripts/test-deps.sh installs it)"
    );
    gridwork_worker::software::probe_software(&[])
        .into_iter()
        .find(|s| s.name == "python3")
        .expect("python3 on the tasks' PATH")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_run_is_checked_by_replays_of_drawn_segments_and_a_skipping_trainer_is_caught() {
    let net = Net::start().await;
    let python = python_with_numpy();
    // The skipping trainer asks the least, so it wins the first attempt.
    let mut workers = Vec::new();
    for (i, price, behavior) in [
        (1, GRID / 1000, Behavior::SkippingTrainer),
        (2, GRID / 100, Behavior::Honest),
        (3, GRID / 100 + 1, Behavior::Honest),
        (4, GRID / 100 + 2, Behavior::Honest),
    ] {
        let mut cfg = net.config(i, price, behavior, None);
        cfg.hardware.software.push(python.clone());
        workers.push(dev_keypair(i).address());
        net.spawn(Worker::new(&net.url, cfg).unwrap());
    }
    net.wait_providers(4).await;
    // 40 steps, 4 segments of 10, 2 replayed: any two drawn include a segment past the
    // first, which the skipping trainer never trained.
    let mut p = train_job(&net, 40, 10, 2).await;
    assert_eq!(
        p.segments,
        Some(Segments {
            count: 4,
            replayed: 2
        })
    );
    p.halting.first_bids = 4;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
    let skipper = workers[0];
    assert!(t.attempt >= 1 && t.executor != Some(skipper), "{view:#?}");
    let caught = net.client.provider(&skipper).await.unwrap().unwrap();
    assert!(caught.slashed.0 > 0 && caught.failed >= 1, "{caught:?}");
    // The accepted attempt: four checkpoints bound, two segments replayed, the result the
    // last checkpoint.
    assert_eq!(t.checkpoints.len(), 4);
    assert_eq!(t.replay.len(), 2);
    assert_eq!(t.result, t.checkpoints.last().copied());
    // The result is the trained model: its weights, and the loss of all 40 steps, lower at
    // the end than at the start.
    let (_dir, out) = result_tree(&net, t.result.as_ref().unwrap()).await;
    for w in ["w1.npy", "b1.npy", "w2.npy", "b2.npy"] {
        assert!(out.join(w).is_file(), "{w}");
    }
    let loss = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let losses: Vec<f64> = loss
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 40, "{loss}");
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean(&losses[30..]) < mean(&losses[..10]),
        "the model learned nothing: {loss}"
    );
}

/// The task deadline is each segment's: a run whose segments each take half of it settles,
/// though the whole run is twice as long as one deadline. A segment that runs past it times
/// out on the executor and again in the council's replay, which gets the same time for it:
/// the run is bound as failed at that segment, the replays end alike, and the task settles on
/// the timeout, nobody slashed. (Before, the executor's segments shared one deadline and a
/// replay had a whole one of its own: the first run timed out and the second was rejected,
/// honest executors slashed both times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_times_out_times_out_on_replay_too_and_nobody_is_slashed() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    // A segment may run 2 s of its 4 s deadline (the rest is kept to push and commit).
    let segmented = |slow: &str| {
        let program = format!(
            "n=0; if [ -n \"$GRIDWORK_CHECKPOINT\" ]; then n=$(cat $GRIDWORK_CHECKPOINT/n); fi; \
             if [ \"$GRIDWORK_SEGMENT\" = 2 ]; then {slow}; else sleep 1; fi; echo $((n + 1)) > $GRIDWORK_OUTPUTS/n"
        );
        let mut p = squares(1, 1, 4_000, &program);
        p.segments = Some(Segments {
            count: 4,
            replayed: 1,
        });
        p
    };
    let fits = net.submit(segmented("sleep 1")).await;
    let job = net.submit(segmented("sleep 60")).await;
    let view = net.wait_finished(&fits).await;
    let t = &view.tasks[0];
    assert_eq!(
        (t.phase, t.ended, t.attempt),
        (Phase::Settled, Some(RunEnd::SUCCESS), 0),
        "{view:#?}"
    );
    assert_eq!(t.checkpoints.len(), 4, "{view:#?}");
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.ended, Some(RunEnd::Timeout {}), "{view:#?}");
    assert_eq!(t.attempt, 0, "{view:#?}");
    assert!(t.run_failed, "{view:#?}");
    // Segments 0 to 2 ran; the timed-out one and one drawn before it were replayed.
    assert_eq!(t.checkpoints.len(), 3, "{view:#?}");
    assert_eq!(t.replay.len(), 2, "{view:#?}");
    assert_eq!(t.replay[1], 2, "{view:#?}");
    for i in 1..=2 {
        let p = net
            .client
            .provider(&dev_keypair(i).address())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.slashed.0, 0, "{p:?}");
    }
}
