//! The market in virtual time: scenarios with faults that replay exactly from their seed.

use gridwork_sim::{simulate, Outcome, SimConfig};

fn run(cfg: SimConfig) -> Outcome {
    match simulate(cfg) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{e}"),
    }
}

/// Everything at once: Byzantine workers, deaths, node restarts and delayed messages. The
/// same seed gives the same chain, block for block; another seed another chain.
#[test]
fn a_market_with_faults_replays_exactly_from_its_seed() {
    let cfg = SimConfig {
        seed: 7,
        workers: 16,
        liars: 2,
        lazy: 1,
        vanishing: 1,
        jobs: 3,
        tasks_per_job: 6,
        deaths: 2,
        restarts: 2,
        fault_window_ms: 15_000,
        ..SimConfig::default()
    };
    let first = run(cfg.clone());
    eprintln!("{first:?}");
    let again = run(cfg.clone());
    assert_eq!(first, again);
    assert_eq!((first.restarts, first.deaths), (2, 2));
    let other = run(SimConfig { seed: 8, ..cfg });
    assert_ne!(first.trace, other.trace);
}

/// Honest workers only, nothing goes wrong: every task settles at its first attempt and
/// nobody is slashed.
#[test]
fn an_honest_market_settles_every_task_and_slashes_nobody() {
    let o = run(SimConfig {
        seed: 3,
        ..SimConfig::default()
    });
    let tasks = u64::from(SimConfig::default().jobs * SimConfig::default().tasks_per_job);
    assert_eq!((o.settled, o.failed, o.reopened), (tasks, 0, 0), "{o:?}");
    assert_eq!(o.slashes, 0, "{o:?}");
    // Half the jobs are checkpointed: each of their tasks drew its replay once.
    assert_eq!(o.replays_drawn, tasks / 2, "{o:?}");
}

/// Liars, lazy council members and vanishing executors are slashed, their tasks reopen
/// and settle with honest runs; honest workers that stay alive are never slashed.
#[test]
fn byzantine_workers_are_slashed_and_every_task_still_settles() {
    let cfg = SimConfig {
        seed: 11,
        workers: 16,
        liars: 2,
        lazy: 2,
        vanishing: 2,
        jobs: 4,
        tasks_per_job: 8,
        council: 3,
        ..SimConfig::default()
    };
    let tasks = u64::from(cfg.jobs * cfg.tasks_per_job);
    let o = run(cfg);
    eprintln!("{o:?}");
    assert_eq!(o.settled + o.failed, tasks, "{o:?}");
    assert!(
        o.settled >= tasks - o.failed && o.failed <= tasks / 4,
        "{o:?}"
    );
    assert!(o.slashes_of_byzantine > 0, "{o:?}");
    assert_eq!(
        o.slashes, o.slashes_of_byzantine,
        "an honest worker was slashed: {o:?}"
    );
    assert!(o.reopened > 0, "{o:?}");
}

/// Workers die mid-run and the node restarts (its mempool lost, its state read back from
/// redb on disk) while messages are late: every job still finishes, and the chain the
/// restarted node goes on with is the one it had.
#[test]
fn dead_workers_and_node_restarts_still_let_every_job_finish() {
    let cfg = SimConfig {
        seed: 5,
        workers: 14,
        jobs: 3,
        tasks_per_job: 8,
        deaths: 5,
        restarts: 3,
        fault_window_ms: 15_000,
        max_delay_ms: 2_000,
        durable: true,
        ..SimConfig::default()
    };
    let tasks = u64::from(cfg.jobs * cfg.tasks_per_job);
    let o = run(cfg);
    eprintln!("{o:?}");
    assert_eq!((o.restarts, o.deaths), (3, 5));
    assert_eq!(o.settled + o.failed, tasks, "{o:?}");
    // Some of the dead held seats: they were slashed for their silence and their tasks
    // reopened, and the tasks settled with the living.
    assert!(o.slashes > 0 && o.reopened > 0, "{o:?}");
    assert_eq!(o.settled, tasks, "{o:?}");
}

/// A liar facing a council of one is not outvoted at once (one run against one): the council
/// grows, the new members' honest runs agree with the first member's (judged on the result,
/// not the id, which differs by round), and the liar is slashed.
#[test]
fn a_liar_facing_one_council_member_is_caught_once_the_council_grows() {
    let cfg = SimConfig {
        seed: 21,
        workers: 12,
        liars: 2,
        council: 1,
        jobs: 2,
        tasks_per_job: 12,
        ..SimConfig::default()
    };
    let tasks = u64::from(cfg.jobs * cfg.tasks_per_job);
    let o = run(cfg);
    assert_eq!(o.settled, tasks, "{o:?}");
    assert!(o.slashes_of_byzantine > 0, "{o:?}");
    assert_eq!(o.slashes, o.slashes_of_byzantine, "{o:?}");
}

/// A service beside the market, among liars and vanishing workers, with the node restarted
/// from redb on disk (a node that ever held a service once could not: its store skipped the
/// services when read back):
/// a lying member is disputed with every member's signed response and slashed, a silent one
/// dropped, the council re-formed from the subscribers; every receipt the gateway signed is
/// paid exactly once its members settle, and the same seed replays it block for block.
#[test]
fn a_service_beside_the_market_disputes_liars_drops_the_silent_and_pays_every_receipt() {
    let cfg = SimConfig {
        seed: 4,
        workers: 8,
        liars: 2,
        vanishing: 2,
        jobs: 2,
        tasks_per_job: 4,
        council: 1,
        restarts: 2,
        fault_window_ms: 20_000,
        durable: true,
        ..SimConfig::default()
    };
    let o = run(cfg.clone());
    eprintln!("{o:?}");
    assert!(o.service_disputes > 0, "{o:?}");
    assert!(o.service_councils > 2, "{o:?}");
    assert_eq!(
        o.slashes, o.slashes_of_byzantine,
        "an honest worker was slashed: {o:?}"
    );
    assert!(o.service_responses > 0, "{o:?}");
    assert_eq!(o.service_paid, o.service_owed, "{o:?}");
    // Closed, its settle window over: archived, read back from redb after a restart.
    assert!(o.service_closed, "{o:?}");
    assert_eq!(o.hot_services, 0, "{o:?}");
    assert_eq!(o, run(cfg));
}

/// The same under a tolerance: honest members' answers differ in their bytes, so their
/// council judges each liar's answer (`JudgeResponses`, every member's signed judgement) and
/// slashes it, never an honest member; the node restarted from redb on disk keeps it, every
/// receipt is paid, and the seed replays it block for block.
#[test]
fn a_tolerant_service_has_its_council_judge_liars_and_pays_every_receipt() {
    let cfg = SimConfig {
        seed: 6,
        workers: 8,
        liars: 2,
        vanishing: 2,
        jobs: 2,
        tasks_per_job: 4,
        council: 1,
        restarts: 2,
        fault_window_ms: 20_000,
        durable: true,
        tolerant_service: true,
        ..SimConfig::default()
    };
    let o = run(cfg.clone());
    eprintln!("{o:?}");
    assert!(o.service_disputes > 0, "{o:?}");
    assert_eq!(
        o.slashes, o.slashes_of_byzantine,
        "an honest worker was slashed: {o:?}"
    );
    assert!(o.service_responses > 0, "{o:?}");
    assert_eq!(o.service_paid, o.service_owed, "{o:?}");
    assert!(o.service_closed, "{o:?}");
    assert_eq!(o, run(cfg));
}
