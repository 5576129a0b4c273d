//! Failed runs as a requester sees them, and jobs a worker cannot run: a failing program
//! settles as a failure with its exit code and stderr; a run without its required outputs is
//! a failure; a worker without the program or the software declines, saying what it lacks,
//! and is never drawn to check such a job.

use super::*;

use gridwork_types::RunEnd;

/// The requester's program fails on every machine (its scene file is missing). The job
/// ends, and `job status` shows the task settled on a failed run: exit 3, paid as work, with
/// the program's complaint in the executor's stderr. Before, it read as a plain success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_program_settles_as_a_failure_with_its_exit_code_and_stderr() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let program = "echo 'cannot open scene.blend: no such file' >&2; exit 3";
    let job = net.submit(squares(1, 1, 30_000, program)).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.ended, Some(RunEnd::Exit { code: 3 }));
    assert!(t.paid.0 > 0, "a reproduced failure is paid as work");
    let providers = net.client.providers().await.unwrap();
    assert!(
        providers.iter().all(|p| p.slashed.0 == 0),
        "nobody is slashed for the program's failure: {providers:?}"
    );
    let stderr = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stderr, 0)
        .await
        .unwrap();
    assert_eq!(stderr.data, "cannot open scene.blend: no such file\n");
    net.stop.send(true).unwrap();
}

/// A job sent through the API with two unnamed inputs that both hold `same.txt` (a job file
/// refuses this at submission; the ledger cannot see inside the trees): the second would
/// replace the first's in `$GRIDWORK_INPUTS`. Nothing is replaced and the program is not run
/// on half its inputs: the run ends as "could not start", the same for executor and council,
/// and its stderr names the entry and the fix. Before, the entry was left out in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_land_on_one_another_end_the_run_as_not_started_saying_which() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let mut inputs = Vec::new();
    for text in ["from a\n", "from b\n"] {
        let dir = tempfile::tempdir_in(net.dir.path()).unwrap();
        std::fs::write(dir.path().join("same.txt"), text).unwrap();
        inputs.push(net.push_input(dir.path()).await);
    }
    let mut p = squares(
        1,
        1,
        30_000,
        "cat $GRIDWORK_INPUTS/same.txt > $GRIDWORK_OUTPUTS/out.txt",
    );
    p.data = inputs;
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let t = &view.tasks[0];
    assert_eq!(t.phase, Phase::Settled, "{view:#?}");
    assert_eq!(t.ended, Some(RunEnd::NotStarted {}), "{view:#?}");
    let stderr = net
        .client
        .task_log(&job, 0, None, None, LogStream::Stderr, 0)
        .await
        .unwrap();
    assert!(
        stderr.data.contains("`same.txt` of input") && stderr.data.contains("NAME=cid:<id>"),
        "{}",
        stderr.data
    );
    net.stop.send(true).unwrap();
}

/// Blender with its usual `//out/` path writes frames beside the scene, not under
/// `$GRIDWORK_OUTPUTS`; the job requires `frames/*.png`. The run exits 0 but is not a
/// success: it ends as "missing output", for the executor and council alike. A second task
/// leaves its frame where asked and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_its_required_outputs_is_a_failure_not_a_success() {
    let net = Net::start().await;
    for i in 1..=2 {
        net.spawn(net.worker(i, GRID / 100 + u128::from(i), Behavior::Honest));
    }
    net.wait_providers(2).await;
    let program = "mkdir -p out $GRIDWORK_OUTPUTS/frames; \
                   case $GRIDWORK_ITEM_START in \
                   0) echo frame > out/0001.png ;; \
                   1) echo frame > $GRIDWORK_OUTPUTS/frames/0002.png ;; \
                   esac";
    let mut p = squares(2, 1, 30_000, program);
    p.program.outputs = vec!["frames/*.png".into()];
    let job = net.submit(p).await;
    let view = net.wait_finished(&job).await;
    let ends: Vec<Option<RunEnd>> = view.tasks.iter().map(|t| t.ended).collect();
    assert_eq!(
        ends,
        vec![
            Some(RunEnd::MissingOutput { index: 0 }),
            Some(RunEnd::SUCCESS)
        ],
        "{view:#?}"
    );
    net.stop.send(true).unwrap();
}

/// A job whose program is not installed, and one that requires software by version: the
/// worker without them declines each, saying what it lacks, instead of running and failing.
/// With three workers of which two offer `sh`, a job requiring `sh` is run and checked by
/// those two only; the third is never drawn onto its council.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_without_the_program_or_software_decline_and_are_never_drawn_to_check() {
    let net = Net::start().await;
    for i in 1..=3 {
        let mut cfg = net.config(i, GRID / 100 + u128::from(i), Behavior::Honest, None);
        if i == 3 {
            cfg.hardware.software = Vec::new();
        }
        net.spawn(Worker::new(&net.url, cfg).unwrap());
    }
    net.wait_providers(3).await;

    let mut absent = squares(1, 0, 30_000, "");
    absent.program.command = "blender-not-installed-here".into();
    absent.instructions.requirements.software = vec!["blender-not-installed-here".into()];
    let mut versioned = squares(1, 0, 30_000, SQUARE);
    versioned.instructions.requirements.software = vec!["blender >= 4.0".into(), "sh".into()];
    for (p, reason) in [
        (
            absent,
            "software: the program `blender-not-installed-here` is not installed on this worker",
        ),
        (
            versioned,
            "requirements: needs blender >= 4.0; not installed",
        ),
    ] {
        let job = net.submit(p).await;
        let view = net
            .until_block("three declines", async || {
                let view = net.client.job(&job).await.unwrap().unwrap();
                (view.declines.len() == 3).then_some(view)
            })
            .await;
        for d in &view.declines {
            assert!(d.reason.starts_with(reason), "{}", d.reason);
        }
        assert_eq!(view.tasks[0].phase, Phase::Bidding);
    }

    let mut needs_sh = squares(4, 1, 30_000, SQUARE);
    needs_sh.instructions.requirements.software = vec!["sh".into()];
    let job = net.submit(needs_sh).await;
    let view = net.wait_finished(&job).await;
    let lacking = dev_keypair(3).address();
    for t in &view.tasks {
        assert_eq!(t.ended, Some(RunEnd::SUCCESS), "{view:#?}");
        assert_ne!(t.executor, Some(lacking));
        assert!(!t.council.contains(&lacking), "task {}", t.index);
    }
    assert!(view
        .declines
        .iter()
        .any(|d| d.provider == lacking && d.reason == "requirements: needs sh; not installed"));
    net.stop.send(true).unwrap();
}
