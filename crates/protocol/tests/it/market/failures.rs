//! Failed runs and software: how a run ended is part of its result, a failure the council
//! reproduces is paid as work and says so, and only providers that offer a job's software
//! run or check it. Doubles: `ExitLiar` (an executor that reveals success for a run that
//! failed), `EndSwitcher` (a party that commits to one end and reveals another),
//! `SloppyJudges` (judges that name a party whose run ended differently), `CacheClaimer` (a
//! bidder that says it has the job's image loaded).

use gridwork_protocol::{Event, Phase, TxError};
use gridwork_types::{
    Amount, DataInput, Equivalence, Gpu, GpuVendor, Hardware, Hash, Keypair, Prescription, RunEnd,
    Software, TxKind, VendorImage, GRID,
};

use super::support::{deposit_for, gpu_box, prescription, provider, Market, PROVIDERS};

const FAILED: RunEnd = RunEnd::Exit { code: 1 };

/// The requester's program fails the same way on every machine (a missing file, a bad
/// argument). That is the program's failure, reproduced by the council: the task settles,
/// the executor and council are paid for the work (the documented rule), and the task, the
/// settlement event and the archive say how the runs ended, never a plain success.
#[test]
fn a_failure_the_council_reproduces_is_paid_as_work_and_reads_as_a_failure() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let council = m.win(job, 0, &executor);
    let out = Hash([3; 32]);
    m.commit_runs(
        job,
        0,
        &[
            (executor.clone(), out, FAILED),
            (council[0].clone(), out, FAILED),
        ],
    );
    m.reveal_run(job, 0, &executor, out, FAILED);
    let events = m.reveal_run(job, 0, &council[0], out, FAILED);
    let settled = events.iter().find_map(|e| match e {
        Event::TaskSettled { ended, paid, .. } => Some((*ended, *paid)),
        _ => None,
    });
    let (ended, paid) = settled.expect("the task settles");
    assert_eq!(ended, FAILED);
    assert!(paid.0 > 0, "the executor is paid for the work");
    let t = m.task(job, 0);
    assert_eq!(
        (t.phase, t.result, t.ended),
        (Phase::Settled, Some(out), Some(FAILED))
    );
    assert!(t.paid.0 > paid.0, "executor and council: {:?}", t.paid);
    assert!(!t.ended.unwrap().is_success());
}

/// `ExitLiar`: the executor's run failed, as the council's did, and their outputs are the
/// same bytes; the executor reveals "exit 0" to pass the failure off as a success. The end
/// is part of the vote: the council's three runs agree among themselves and not with the
/// executor's, so the executor is slashed and the task runs again.
#[test]
fn an_executor_that_passes_a_failure_off_as_success_is_outvoted_and_slashed() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let exit_liar = provider(1);
    let council = m.win(job, 0, &exit_liar);
    let out = Hash([4; 32]);
    let mut runs = vec![(exit_liar.clone(), out, RunEnd::SUCCESS)];
    runs.extend(council.iter().map(|k| (k.clone(), out, FAILED)));
    m.commit_runs(job, 0, &runs);
    let stake = m.stake(&exit_liar.address());
    m.reveal_run(job, 0, &exit_liar, out, RunEnd::SUCCESS);
    let mut events = Vec::new();
    for k in &council {
        events.extend(m.reveal_run(job, 0, k, out, FAILED));
    }
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Slashed { provider, .. } if *provider == exit_liar.address())
        ),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::TaskSettled { .. })));
    assert!(m.stake(&exit_liar.address()) < stake);
    let t = m.task(job, 0);
    assert_eq!(t.attempt, 1, "the task runs again: {}", t.note);
    assert_eq!(t.result, None);
}

/// `EndSwitcher`: a party commits to a failed run and, having seen the others' reveals,
/// reveals a success for the same output. The end is inside the commitment, so the reveal
/// does not open it.
#[test]
fn a_party_cannot_reveal_an_end_other_than_the_one_it_committed_to() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let end_switcher = provider(1);
    let council = m.win(job, 0, &end_switcher);
    let out = Hash([6; 32]);
    m.commit_runs(
        job,
        0,
        &[
            (end_switcher.clone(), out, FAILED),
            (council[0].clone(), out, FAILED),
        ],
    );
    let attempt = m.task(job, 0).attempt;
    let err = m.refused(
        &end_switcher,
        TxKind::Reveal {
            job,
            task: 0,
            attempt,
            output: out,
            salt: super::support::salt(&end_switcher),
            seconds: 10,
            ended: RunEnd::SUCCESS,
        },
    );
    assert_eq!(err, TxError::RevealMismatch);
    // The end it committed to opens the commitment.
    m.reveal_run(job, 0, &end_switcher, out, FAILED);
    m.reveal_run(job, 0, &council[0], out, FAILED);
    assert_eq!(m.task(job, 0).ended, Some(FAILED));
}

/// `SloppyJudges`: under a tolerance, every party names every other as equivalent, the
/// executor's run included, though it ended with "exit 0" and the three council runs with
/// "exit 2". The ledger does not count judgements across different ends: the council agrees
/// among itself against the executor.
#[test]
fn judges_cannot_make_runs_that_ended_differently_agree() {
    let mut m = Market::new();
    let p = prescription(
        1,
        3,
        Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 0,
        },
    );
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let council = m.win(job, 0, &executor);
    let crashed = RunEnd::Exit { code: 2 };
    let mut runs = vec![(executor.clone(), Hash([20; 32]), RunEnd::SUCCESS)];
    runs.extend(
        council
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), Hash([21 + i as u8; 32]), crashed)),
    );
    m.commit_runs(job, 0, &runs);
    for (k, out, ended) in &runs {
        m.reveal_run(job, 0, k, *out, *ended);
    }
    assert_eq!(m.task(job, 0).phase, Phase::Judging);
    let everyone: Vec<_> = runs.iter().map(|(k, _, _)| k.address()).collect();
    let stake = m.stake(&executor.address());
    let mut events = Vec::new();
    for (k, _, _) in &runs {
        let others: Vec<_> = everyone
            .iter()
            .copied()
            .filter(|a| *a != k.address())
            .collect();
        events.extend(m.judge(job, 0, k, &others));
    }
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Slashed { provider, .. } if *provider == executor.address())
        ),
        "{events:?}"
    );
    assert!(m.stake(&executor.address()) < stake);
    assert_eq!(m.task(job, 0).result, None);
}

fn with_software(software: &[(&str, &str)]) -> Hardware {
    Hardware {
        software: software
            .iter()
            .map(|(name, version)| Software {
                name: (*name).into(),
                version: (*version).into(),
            })
            .collect(),
        cpu_score: 0,
        ..gpu_box()
    }
}

/// Providers 1 to 3 have Blender 4.1, provider 4 has 3.6 and 5 and 6 none. A job requiring
/// `blender >= 4.0`: a bid from provider 4 is refused naming what it lacks, and every council
/// of ten tasks is drawn from the providers that have it, so no honest worker is slashed for
/// lacking the software nor paid for a run it could not do.
#[test]
fn only_providers_that_offer_the_required_software_run_or_check_a_job() {
    let mut m = Market::new();
    let registrations = (1..=PROVIDERS)
        .map(|i| {
            let hardware = match i {
                1..=3 => with_software(&[("blender", "4.1.0"), ("python3", "3.11.2")]),
                4 => with_software(&[("blender", "3.6.5")]),
                _ => gpu_box(),
            };
            m.tx(
                &provider(i),
                TxKind::RegisterProvider {
                    hardware,
                    owner: None,
                },
            )
        })
        .collect();
    m.block(registrations);
    let mut p = prescription(10, 1, Equivalence::ExactHash {});
    p.instructions.requirements.software = vec!["blender >= 4.0".into()];
    let job = m.submit(p.clone(), deposit_for(&p));
    let err = m.refused(
        &provider(4),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
            cached: false,
        },
    );
    assert_eq!(
        err,
        TxError::HardwareUnfit {
            reason: "needs blender >= 4.0; has blender 3.6.5".into()
        }
    );
    let fit: Vec<_> = (1..=3).map(|i| provider(i).address()).collect();
    for task in 0..10 {
        let council: Vec<Keypair> = m.win(job, task, &provider(1 + task % 3));
        assert_eq!(council.len(), 1);
        assert!(
            fit.contains(&council[0].address()),
            "task {task}: council {} lacks the software",
            council[0].address()
        );
    }
}

/// `CacheClaimer`: a provider says in its bid that it has the job's image loaded already
/// (so its run would start sooner), true or not: nobody can check. The claim is shown to the
/// requester and moves nothing: at equal prices the earlier bid still wins. A cached image is
/// cheaper only by the price its provider asks. Claiming a cached image for a job that names
/// none is refused by name.
#[test]
fn a_bid_that_says_its_image_is_cached_is_shown_and_moves_nothing_in_the_auction() {
    let mut m = Market::new();
    let registrations = (1..=PROVIDERS)
        .map(|i| {
            m.tx(
                &provider(i),
                TxKind::RegisterProvider {
                    hardware: with_software(&[("docker", "20.10")]),
                    owner: None,
                },
            )
        })
        .collect();
    m.block(registrations);
    let mut p = prescription(1, 1, Equivalence::ExactHash {});
    p.program.image = Some(p.data[0].cid);
    p.instructions.requirements.software = vec!["docker".into()];
    p.instructions.requirements.min_memory_mib = 1024;
    p.halting.first_bids = 2;
    let job = m.submit(p.clone(), deposit_for(&p));
    let price = Amount(GRID / 200);
    let honest = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price,
            cached: false,
        },
    );
    let cache_claimer = m.tx(
        &provider(2),
        TxKind::Bid {
            job,
            task: 0,
            price,
            cached: true,
        },
    );
    m.block(vec![honest, cache_claimer]);
    let t = m.task(job, 0);
    let claims: Vec<_> = t.bids.iter().map(|b| (b.provider, b.cached)).collect();
    assert_eq!(
        claims,
        [
            (provider(1).address(), false),
            (provider(2).address(), true)
        ]
    );
    assert_eq!(
        t.executor,
        Some(provider(1).address()),
        "the claim won nothing"
    );

    let plain = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(plain.clone(), deposit_for(&plain));
    let err = m.refused(
        &provider(3),
        TxKind::Bid {
            job,
            task: 0,
            price,
            cached: true,
        },
    );
    assert_eq!(err, TxError::CachedWithoutImage { job });
    assert!(err.to_string().contains("cached = false"), "{err}");
}

/// A docker worker's hardware with one GPU of `maker` (none for `None`).
fn docker_box(maker: Option<GpuVendor>) -> Hardware {
    Hardware {
        gpus: maker
            .map(|vendor| Gpu {
                vendor,
                model: "x".into(),
                vram_mib: 24_000,
            })
            .into_iter()
            .collect(),
        ..with_software(&[("docker", "20.10")])
    }
}

/// Registers every provider, provider `i` as a [`docker_box`] of `maker(i)`.
fn register_makers(m: &mut Market, maker: impl Fn(u32) -> Option<GpuVendor>) {
    let registrations = (1..=PROVIDERS)
        .map(|i| {
            m.tx(
                &provider(i),
                TxKind::RegisterProvider {
                    hardware: docker_box(maker(i)),
                    owner: None,
                },
            )
        })
        .collect();
    m.block(registrations);
}

/// An input standing for a container image: content id `[n; 32]`.
fn image(n: u8) -> DataInput {
    DataInput {
        cid: Hash([n; 32]),
        claim: Hash([n + 1; 32]),
        name: String::new(),
    }
}

/// `p` brought as two builds, NVIDIA's (image 20) and AMD's (image 30), and no common one,
/// for any GPU maker.
fn with_nvidia_and_amd_builds(p: &mut Prescription) {
    p.instructions.requirements.gpu_vendor = None;
    p.instructions.requirements.software = vec!["docker".into()];
    p.instructions.requirements.min_memory_mib = 1024;
    p.data.extend([image(20), image(30)]);
    p.program.vendor_images = vec![
        VendorImage {
            vendor: GpuVendor::Nvidia,
            image: Hash([20; 32]),
        },
        VendorImage {
            vendor: GpuVendor::Amd,
            image: Hash([30; 32]),
        },
    ];
}

/// A job brings an image per GPU maker (a CUDA build for NVIDIA, a ROCm build for AMD) and
/// none for others: providers 1 and 2 have NVIDIA GPUs, 3 and 4 AMD ones, 5 and 6 none. A
/// bid from a provider without either maker's GPU is refused naming the makers, and every
/// council of ten tasks is drawn from providers that run the executor's build: nobody is
/// drawn to check a run it has nothing to run for, and a requester whose builds differ
/// cannot make honest runs of two builds disagree. With a common image (`cpu`) beside them, anyone
/// may bid. At the door: two images for one maker, an image for a maker the job's GPUs are
/// not, and an image outside the inputs are refused naming `program.vendor_images`.
#[test]
fn a_job_with_an_image_per_gpu_maker_is_run_and_checked_only_where_one_of_them_fits() {
    let mut m = Market::new();
    register_makers(&mut m, |i| match i {
        1 | 2 => Some(GpuVendor::Nvidia),
        3 | 4 => Some(GpuVendor::Amd),
        _ => None,
    });
    let mut p = prescription(10, 1, Equivalence::ExactHash {});
    p.instructions.requirements.min_gpus = 0;
    with_nvidia_and_amd_builds(&mut p);
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = |price| TxKind::Bid {
        job,
        task: 0,
        price,
        cached: false,
    };
    let err = m.refused(&provider(5), bid(Amount(GRID / 200)));
    assert_eq!(
        err,
        TxError::HardwareUnfit {
            reason: "brings images for nvidia, amd GPUs only and none for others; has no such GPU"
                .into()
        }
    );
    // The council runs the executor's build: NVIDIA's beside 1 and 2, AMD's beside 3 and 4.
    let same_build = |i: u32| if i <= 2 { [1, 2] } else { [3, 4] };
    for task in 0..10 {
        let executor = 1 + task % 4;
        let council: Vec<Keypair> = m.win(job, task, &provider(executor));
        assert_eq!(council.len(), 1);
        let fit: Vec<_> = same_build(executor).map(|i| provider(i).address()).to_vec();
        assert!(
            fit.contains(&council[0].address()),
            "task {task}: council {} does not run the executor's build",
            council[0].address()
        );
    }

    // With a common image beside them, a provider without GPUs may bid too.
    let mut common = p.clone();
    common.data.push(image(40));
    common.program.image = Some(Hash([40; 32]));
    let job = m.submit(common.clone(), deposit_for(&common));
    let bid = m.tx(
        &provider(5),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
            cached: true,
        },
    );
    m.block(vec![bid]);
    assert_eq!(m.task(job, 0).bids.len(), 1);

    let refused =
        |m: &mut Market, p: &gridwork_types::Prescription| match m.refused_submission(p.clone()) {
            TxError::BadPrescription { field, problem } => (field, problem),
            other => panic!("{other:?}"),
        };
    let mut twice = p.clone();
    twice.program.vendor_images[1].vendor = GpuVendor::Nvidia;
    let (field, reason) = refused(&mut m, &twice);
    assert_eq!(field, "program.vendor_images");
    assert!(reason.contains("two images for nvidia"), "{reason}");
    let mut other_maker = p.clone();
    other_maker.instructions.requirements.gpu_vendor = Some(GpuVendor::Nvidia);
    let (field, reason) = refused(&mut m, &other_maker);
    assert_eq!(field, "program.vendor_images");
    assert!(reason.contains("no worker would run it"), "{reason}");
    let mut outside = p.clone();
    outside.data.pop();
    let (field, reason) = refused(&mut m, &outside);
    assert_eq!(field, "program.vendor_images");
    assert!(reason.contains("not among the inputs"), "{reason}");
}

/// `LoneBuilder`: provider 1 is the only one with an AMD GPU, so no council of the AMD build
/// can form beside it, and it bids below everyone on a job with NVIDIA and AMD builds. The
/// auction does not wait on it until the job gives up: the best bid beside which a council
/// can be drawn wins (provider 2's, NVIDIA). `BuildSwitcher`: provider 2, at work, registers
/// again as an AMD box (to sit beside a council of its choosing, or one that cannot form); its
/// GPUs stay as they were until its tasks end, and its council is of its own build.
#[test]
fn a_bid_no_council_can_form_around_does_not_hold_the_auction_and_gpus_stay_while_at_work() {
    let mut m = Market::new();
    register_makers(&mut m, |i| {
        Some(if i == 1 {
            GpuVendor::Amd
        } else {
            GpuVendor::Nvidia
        })
    });
    let mut p = prescription(1, 1, Equivalence::ExactHash {});
    p.halting.first_bids = 2;
    with_nvidia_and_amd_builds(&mut p);
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = |m: &mut Market, who: u32, price| {
        m.tx(
            &provider(who),
            TxKind::Bid {
                job,
                task: 0,
                price,
                cached: false,
            },
        )
    };
    let lone = bid(&mut m, 1, Amount(GRID / 1_000));
    let fair = bid(&mut m, 2, Amount(GRID / 200));
    m.block(vec![lone, fair]);
    let t = m.task(job, 0);
    assert_eq!(t.executor, Some(provider(2).address()), "{t:?}");

    let switch = m.tx(
        &provider(2),
        TxKind::RegisterProvider {
            hardware: docker_box(Some(GpuVendor::Amd)),
            owner: None,
        },
    );
    m.block(vec![switch]);
    let kept = m.state.provider(&provider(2).address()).unwrap();
    assert_eq!(kept.hardware.gpus[0].vendor, GpuVendor::Nvidia);
    let t = m.task(job, 0);
    assert_eq!(t.council.len(), 1, "{t:?}");
    let member = m.state.provider(&t.council[0]).unwrap();
    assert_eq!(member.hardware.gpus[0].vendor, GpuVendor::Nvidia);
}

/// What a provider lists and a job requires is checked at the door: a malformed software
/// name, a version past its size, an output outside the outputs directory and inputs that
/// would land on one path or outside `$GRIDWORK_INPUTS` are refused, naming the field and
/// the fix.
#[test]
fn malformed_software_lists_outputs_and_input_names_are_refused_with_the_field_named() {
    let mut m = Market::new();
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: with_software(&[("blender; rm -rf /", "4")]),
            owner: None,
        },
    );
    assert!(
        matches!(&err, TxError::BadHardware { problem } if problem.contains("names are letters")),
        "{err}"
    );
    let long = "9".repeat(200);
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: with_software(&[("blender", &long)]),
            owner: None,
        },
    );
    assert!(matches!(err, TxError::BadHardware { .. }), "{err}");
    for (software, outputs, field) in [
        (
            vec!["blender >= four"],
            vec![],
            "instructions.requirements.software",
        ),
        (vec![""], vec![], "instructions.requirements.software"),
        (vec![], vec!["/etc/passwd"], "program.outputs"),
        (vec![], vec!["frames/../../x"], "program.outputs"),
    ] {
        let mut p = prescription(1, 1, Equivalence::ExactHash {});
        p.instructions.requirements.software = software.iter().map(|s| s.to_string()).collect();
        p.program.outputs = outputs.iter().map(|s| s.to_string()).collect();
        let err = m.refused_submission(p);
        assert!(
            matches!(&err, TxError::BadPrescription { field: f, .. } if *f == field),
            "{software:?} {outputs:?}: {err}"
        );
    }
    // A job that asks for the network, or names an image, without requiring the capability
    // that only providers offering it list, would draw councils that cannot run it; an
    // image that is not among the inputs could not be decrypted by anyone.
    let mut network = prescription(1, 1, Equivalence::ExactHash {});
    network.program.network = true;
    let mut no_engine = prescription(1, 1, Equivalence::ExactHash {});
    no_engine.program.image = Some(no_engine.data[0].cid);
    let mut not_an_input = prescription(1, 1, Equivalence::ExactHash {});
    not_an_input.program.image = Some(Hash([42; 32]));
    not_an_input.instructions.requirements.software = vec!["docker".into()];
    // `RareToolGriefer`: a job that runs an installed program without naming it would draw
    // councils without it, whose runs fail (127) and outvote an honest executor that has it
    // (or are outvoted by it): the program a job runs must be among its requirements.
    let mut undeclared = prescription(1, 1, Equivalence::ExactHash {});
    undeclared.program.command = "blender".into();
    // By a path: the same name lies elsewhere on other hosts (`/usr/local/bin/python3`), or
    // out of some workers' reach (`/root/...`), and honest runs would end differently.
    let mut undeclared_path = prescription(1, 1, Equivalence::ExactHash {});
    undeclared_path.program.command = "/usr/bin/blender".into();
    undeclared_path.instructions.requirements.software = vec!["blender".into()];
    let mut climbing = prescription(1, 1, Equivalence::ExactHash {});
    climbing.program.command = "inputs/../../../usr/local/bin/rare".into();
    // A container's memory must be the job's, the same on every worker: a run near one
    // provider's own limit would end there and not elsewhere.
    let mut no_memory = prescription(1, 1, Equivalence::ExactHash {});
    no_memory.program.image = Some(no_memory.data[0].cid);
    no_memory.instructions.requirements.software = vec!["docker".into()];
    let mut not_a_name = prescription(1, 1, Equivalence::ExactHash {});
    not_a_name.program.command = "blender;rm".into();
    not_a_name.instructions.requirements.software = vec!["blender".into()];
    for (p, field) in [
        (network, "program.network"),
        (no_engine, "program.image"),
        (not_an_input, "program.image"),
        (undeclared, "program.command"),
        (undeclared_path, "program.command"),
        (climbing, "program.command"),
        (not_a_name, "program.command"),
        (no_memory, "instructions.requirements.min_memory_mib"),
    ] {
        let err = m.refused_submission(p);
        assert!(
            matches!(&err, TxError::BadPrescription { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
    // An image equivalence so loose that a council could not tell a forged frame from a
    // rendered one, or stricter than any two renders can meet, is refused by name.
    for psnr in [19_999, 150_001] {
        let mut p = prescription(1, 1, Equivalence::ExactHash {});
        p.equivalence = Equivalence::Image {
            min_psnr_mdb: psnr,
            max_diff: 8,
        };
        let err = m.refused_submission(p);
        assert!(
            matches!(
                &err,
                TxError::BadPrescription {
                    field: "equivalence.min_psnr_db",
                    ..
                }
            ),
            "{err}"
        );
    }
    // Named by its bare name, the program is taken; the job's own script (by its path among
    // its inputs) needs no provider's.
    for (command, software) in [
        ("blender", vec!["blender >= 4.0"]),
        ("inputs/run.sh", vec![]),
        ("inputs/tools/render.py", vec![]),
    ] {
        let mut p = prescription(1, 1, Equivalence::ExactHash {});
        p.program.command = command.into();
        p.instructions.requirements.software = software.into_iter().map(String::from).collect();
        let deposit = deposit_for(&p);
        m.submit(p, deposit);
    }
    // Inputs land under their names: two under one name, or a name that is a path, would
    // overwrite or escape; both are refused.
    for (first, second) in [("scene", "scene"), ("scene", "../etc"), ("a/b", "c")] {
        let mut p = prescription(1, 1, Equivalence::ExactHash {});
        p.data[0].name = first.into();
        let mut other = p.data[0].clone();
        other.cid = Hash([9; 32]);
        other.name = second.into();
        p.data.push(other);
        let err = m.refused_submission(p);
        assert!(
            matches!(
                &err,
                TxError::BadPrescription {
                    field: "data.inputs",
                    ..
                }
            ),
            "{first} {second}: {err}"
        );
    }
}
