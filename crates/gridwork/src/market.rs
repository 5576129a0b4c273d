//! The `job` and `provider` commands.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use gridwork_api::{JobStatus, JobView, LogStream, TaskLog, TaskView};
use gridwork_client::{submit_job, Client, JobFile, KeyRegistry, Submitted};
use gridwork_types::{Address, Hash, OwnerApproval, TxKind};
use serde_json::json;

use crate::cli::{Cli, JobCommand, ProviderCommand, StreamArg};
use crate::commands::{home, parse_amount, runtime, sign_and_send, signing_key, COMMIT_WAIT};
use crate::output::{emit, rows};

pub(crate) fn job(cli: &Cli, cmd: &JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit {
            file,
            deposit,
            send,
        } => submit(cli, file, deposit.as_deref(), send),
        JobCommand::Status { id } => {
            let view = fetch_job(cli, id)?;
            let tails = failed_run_tails(cli, &view);
            let empty = empty_results(&view);
            emit(cli.json, &view, || {
                let mut text = render_job(&view);
                text.push_str(&render_failures(&view, &tails));
                if !empty.is_empty() {
                    let list: Vec<String> = empty.iter().map(u32::to_string).collect();
                    text.push_str(&format!(
                        "\n\n{} task(s) exited 0 but left no outputs (nothing in $GRIDWORK_OUTPUTS): {}; a job can require outputs with [program] outputs = [...]",
                        empty.len(),
                        list.join(", ")
                    ));
                }
                text
            })
        }
        JobCommand::Watch { id, timeout_s, out } => watch(cli, id, *timeout_s, out.as_deref()),
        JobCommand::Results { id, out } => results(cli, id, out),
        JobCommand::Logs {
            id,
            task,
            stream,
            provider,
            attempt,
            follow,
        } => {
            let which = LogArgs {
                stream: match stream {
                    StreamArg::Stdout => LogStream::Stdout,
                    StreamArg::Stderr => LogStream::Stderr,
                },
                provider: provider.as_deref().map(str::parse).transpose()?,
                attempt: *attempt,
            };
            if *follow {
                follow_log(cli, id, *task, &which)
            } else {
                logs(cli, id, *task, &which)
            }
        }
        JobCommand::Cancel { id, send } => {
            let job: Hash = id.parse()?;
            let key = signing_key(cli)?;
            let client = Client::new(&cli.node);
            let fee = parse_amount(&send.fee)?;
            let (hash, _) = runtime()?.block_on(sign_and_send(
                &client,
                &key,
                fee,
                TxKind::CancelJob { job },
                !send.no_wait,
            ))?;
            emit(cli.json, &json!({ "job": job, "tx": hash }), || {
                format!("cancelled job {job} ({hash})")
            })
        }
    }
}

fn submit(
    cli: &Cli,
    file: &std::path::Path,
    deposit: Option<&str>,
    send: &crate::cli::SendArgs,
) -> anyhow::Result<()> {
    let job = JobFile::read(file)?;
    let segments = job.prescription.segments;
    let key = signing_key(cli)?;
    let fee = parse_amount(&send.fee)?;
    let deposit = deposit.map(parse_amount).transpose()?;
    let client = Client::new(&cli.node).signed_by(key.clone());
    let registry = KeyRegistry::new(home(cli)?);
    let json = cli.json;
    let submitted = runtime()?.block_on(async {
        let s = submit_job(&client, &key, job, deposit, fee, &registry, |path| {
            if !json {
                eprintln!("pushing {}", path.display());
            }
        })
        .await?;
        if !send.no_wait {
            client.wait_committed(&s.id, COMMIT_WAIT).await?;
        }
        anyhow::Ok(s)
    })?;
    for loss in &submitted.not_kept {
        eprintln!("warning: {loss}");
    }
    let Submitted {
        id,
        tasks,
        deposit,
        max_cost: required,
        state_fee,
        ..
    } = submitted;
    let checked = segments.map(|s| {
        json!({
            "segments": s.count,
            "replayed": s.replayed,
            "catch_one_faked": s.catch_probability(1),
            "catch_tenth_faked": s.catch_probability(s.count.div_ceil(10)),
        })
    });
    emit(
        cli.json,
        &json!({ "job": id, "tasks": tasks, "deposit": deposit, "max_cost": required, "state_fee": state_fee, "checked": checked }),
        || {
            let mut out = vec![
                ("job", id.to_string()),
                ("tasks", tasks.to_string()),
                (
                    "deposit",
                    format!("{deposit} GRID locked (maximum cost {required} GRID)"),
                ),
                (
                    "state fee",
                    format!("{state_fee} GRID paid to the rewards pool, not refunded"),
                ),
            ];
            if let Some(s) = segments {
                out.push(("checked", segments_line(&s)));
            }
            out.push(("next", format!("gridwork job watch {id}")));
            rows(&out)
        },
    )
}

/// How a job in checkpointed segments is checked, and what that catches.
fn segments_line(s: &gridwork_types::Segments) -> String {
    let tenth = s.count.div_ceil(10);
    format!(
        "each council member replays {} of each task's {} segments, drawn after its checkpoints are bound ({:.0}% of a run); a trainer that faked 1 segment is caught with probability {:.0}% a task, {} segments ({}%) {:.0}%",
        s.replayed,
        s.count,
        100.0 * f64::from(s.replayed) / f64::from(s.count),
        100.0 * s.catch_probability(1),
        tenth,
        (100 * tenth).div_ceil(s.count),
        100.0 * s.catch_probability(tenth)
    )
}

fn fetch_job(cli: &Cli, id: &str) -> anyhow::Result<JobView> {
    JobPoller::new(cli, id)?.view()
}

/// Reads one job again and again over one client and runtime (`watch`, `logs --follow`).
struct JobPoller {
    client: Client,
    rt: tokio::runtime::Runtime,
    id: Hash,
}

impl JobPoller {
    fn new(cli: &Cli, id: &str) -> anyhow::Result<JobPoller> {
        Ok(JobPoller {
            client: Client::new(&cli.node),
            rt: runtime()?,
            id: id.parse()?,
        })
    }

    fn view(&self) -> anyhow::Result<JobView> {
        let id = self.id;
        self.rt.block_on(self.client.job(&id))?.ok_or_else(|| {
            anyhow!("job {id} is not known to the node (not submitted, or not yet in a block)")
        })
    }
}

fn short(a: &Address) -> String {
    let s = a.to_string();
    format!("{}…{}", &s[..9], &s[s.len() - 4..])
}

/// The settled tasks whose accepted outputs are empty: their result is the content id empty
/// outputs get for their attempt (in any of its rounds), which anyone can compute.
fn empty_results(v: &JobView) -> Vec<u32> {
    let Ok(empty) = gridwork_client::EmptyOutputs::new() else {
        return Vec::new();
    };
    v.tasks
        .iter()
        .filter(|t| t.ended.is_some_and(|e| e.is_success()))
        .filter(|t| {
            t.result.is_some_and(|result| {
                (0..=t.round).any(|round| {
                    empty
                        .cid(&v.id, t.index, t.attempt, round)
                        .is_ok_and(|cid| cid == result)
                })
            })
        })
        .map(|t| t.index)
        .collect()
}

/// The lines of stderr shown for a failed run in `job status`.
const TAIL_LINES: usize = 8;

/// The bytes of stderr read for them.
const TAIL_BYTES: u64 = 4096;

/// For each settled task whose runs failed, the end of its executor's stderr, or why it
/// could not be read. Logs are read signed, so only with a key (the requester's, or a
/// provider's of the task); `None` without one.
fn failed_run_tails(cli: &Cli, v: &JobView) -> Option<Vec<(u32, Result<String, String>)>> {
    let failed: Vec<u32> = v
        .tasks
        .iter()
        .filter(|t| t.ended.is_some_and(|e| !e.is_success()))
        .map(|t| t.index)
        .collect();
    if failed.is_empty() || cli.key.is_none() || cli.json {
        return None;
    }
    let key = signing_key(cli).ok()?;
    let client = Client::new(&cli.node).signed_by(key);
    let rt = runtime().ok()?;
    Some(
        failed
            .into_iter()
            .map(|task| {
                let tail = rt.block_on(stderr_tail(&client, &v.id, task));
                (task, tail.map_err(|e| e.to_string()))
            })
            .collect(),
    )
}

/// The last [`TAIL_LINES`] lines of the executor's stderr of `task`.
async fn stderr_tail(client: &Client, job: &Hash, task: u32) -> anyhow::Result<String> {
    let head = client
        .task_log(job, task, None, None, LogStream::Stderr, 0)
        .await?;
    let from = head.size.saturating_sub(TAIL_BYTES);
    let log = if from == 0 {
        head
    } else {
        client
            .task_log(
                job,
                task,
                Some(&head.provider),
                Some(head.attempt),
                LogStream::Stderr,
                from,
            )
            .await?
    };
    let lines: Vec<&str> = log.data.lines().collect();
    // The executor's log is its own word, and may hold terminal escapes: control characters
    // are shown escaped, never sent to the terminal.
    let tail: Vec<String> = lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|line| {
            line.chars()
                .flat_map(|c| match c.is_control() && c != '\t' {
                    true => c.escape_default().collect::<Vec<_>>(),
                    false => vec![c],
                })
                .collect()
        })
        .collect();
    Ok(tail.join("\n"))
}

/// The failed runs of a job: how each ended and the end of its stderr, and the rule that
/// paid for it.
fn render_failures(v: &JobView, tails: &Option<Vec<(u32, Result<String, String>)>>) -> String {
    let failed: Vec<&TaskView> = v
        .tasks
        .iter()
        .filter(|t| t.ended.is_some_and(|e| !e.is_success()))
        .collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n\n{} task(s) settled on a failed run: the program failed the same way for the executor and its council, so the failure is the program's and was paid as work",
        failed.len()
    );
    for t in failed {
        let ended = t.ended.map_or("-".to_string(), |e| e.to_string());
        let ended = match t.ended {
            Some(gridwork_types::RunEnd::MissingOutput { index }) => {
                let pattern = v
                    .prescription
                    .program
                    .outputs
                    .get(index as usize)
                    .map_or("?", String::as_str);
                format!("exit 0, but no output matches `{pattern}`")
            }
            _ => ended,
        };
        out.push_str(&format!("\n  task {}: {ended}", t.index));
        match tails
            .as_ref()
            .and_then(|all| all.iter().find(|(i, _)| *i == t.index))
        {
            Some((_, Ok(tail))) if tail.trim().is_empty() => {
                out.push_str("\n    (nothing on stderr)")
            }
            Some((_, Ok(tail))) => {
                out.push_str("\n    stderr, as the executor reported it:");
                for line in tail.lines() {
                    out.push_str(&format!("\n    | {line}"));
                }
            }
            Some((_, Err(e))) => out.push_str(&format!("\n    (stderr unreadable: {e})")),
            None => out.push_str(&format!(
                "\n    stderr: gridwork --key <requester> job logs {} --task {} --stream stderr",
                v.id, t.index
            )),
        }
    }
    out
}

/// A render's frames and which have settled (`1-48; settled 1-8, 13-16`), or `None` for a
/// job that is not a render.
fn frames_line(v: &JobView) -> Option<String> {
    let layout = gridwork_client::RenderLayout::of(&v.prescription.program)?;
    let all = layout.frames((0, v.prescription.instructions.items));
    let mut settled: Vec<(u64, u64)> = Vec::new();
    for t in v
        .tasks
        .iter()
        .filter(|t| t.phase == gridwork_api::Phase::Settled)
    {
        let (a, b) = layout.frames(t.items);
        match settled.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => settled.push((a, b)),
        }
    }
    let ranges: Vec<String> = settled
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    Some(format!(
        "{}-{}; settled {}",
        all.0,
        all.1,
        if ranges.is_empty() {
            "none yet".to_string()
        } else {
            ranges.join(", ")
        }
    ))
}

fn render_job(v: &JobView) -> String {
    let mut head = vec![
        ("job", v.id.to_string()),
        ("status", v.status.to_string()),
        ("requester", v.requester.to_string()),
        (
            "tasks",
            format!(
                "{} settled, {} failed or cancelled, of {}",
                v.settled,
                v.closed,
                v.tasks.len()
            ),
        ),
        (
            "cost so far",
            format!("{} GRID (escrow left {} GRID)", v.spent, v.escrow),
        ),
    ];
    let program = &v.prescription.program;
    if program.brings_image() {
        // The common image, then each GPU maker's.
        let mut images: Vec<String> = program.image.iter().map(|i| format!("img:{i}")).collect();
        images.extend(
            program
                .vendor_images
                .iter()
                .map(|i| format!("{}: img:{}", i.vendor, i.image)),
        );
        let image = images.join(", ");
        // Who says it has the image loaded already (its runs start sooner).
        let bids = v.tasks.iter().flat_map(|t| &t.bids);
        let bidders: std::collections::BTreeSet<_> = bids.clone().map(|b| b.provider).collect();
        let loaded: std::collections::BTreeSet<_> =
            bids.filter(|b| b.cached).map(|b| b.provider).collect();
        head.push((
            "image",
            format!(
                "{image} (loaded already by {} of {} bidders)",
                loaded.len(),
                bidders.len()
            ),
        ));
    }
    if let Some(frames) = frames_line(v) {
        head.push(("frames", frames));
    }
    if let Some(s) = &v.prescription.segments {
        head.push(("segments", segments_line(s)));
    }
    let mut out = rows(&head);
    out.push_str(
        "\n\n task  phase       try  bids  executor          price        council  ended     paid         note",
    );
    for t in &v.tasks {
        let ended = match t.ended {
            None => "-".to_string(),
            Some(gridwork_types::RunEnd::Exit { code }) => format!("exit {code}"),
            Some(gridwork_types::RunEnd::Signal { signal }) => format!("signal {signal}"),
            Some(gridwork_types::RunEnd::Timeout {}) => "timeout".into(),
            Some(gridwork_types::RunEnd::MissingOutput { .. }) => "no output".into(),
            Some(gridwork_types::RunEnd::NotStarted {}) => "no start".into(),
            Some(gridwork_types::RunEnd::OutOfMemory {}) => "no memory".into(),
        };
        let paid = if t.paid.0 == 0 {
            "-".to_string()
        } else {
            t.paid.rounded().to_string()
        };
        out.push_str(&format!(
            "\n {:>4}  {:<10}  {:>3}  {:>4}  {:<16}  {:<11}  {:>7}  {:<8}  {:<11}  {}",
            t.index,
            t.phase,
            t.attempt,
            t.bids.len(),
            t.executor.as_ref().map_or("-".into(), short),
            if t.price.0 == 0 {
                "-".to_string()
            } else {
                t.price.rounded().to_string()
            },
            t.council.len(),
            ended,
            paid,
            t.note
        ));
    }
    let bound: Vec<&TaskView> = v
        .tasks
        .iter()
        .filter(|t| !t.checkpoints.is_empty())
        .collect();
    if !bound.is_empty() {
        out.push_str("\n\ncheckpoints (this attempt):");
        for t in bound {
            let replay = match &t.replay[..] {
                [] => "segments to replay drawn at the next block".to_string(),
                drawn => format!(
                    "replaying segment{} {}",
                    if drawn.len() == 1 { "" } else { "s" },
                    drawn
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let failed = if t.run_failed {
                " (the run failed in its last)"
            } else {
                ""
            };
            out.push_str(&format!(
                "\n {:>4}  {} bound{failed}; {replay}",
                t.index,
                t.checkpoints.len()
            ));
        }
    }
    if !v.declines.is_empty() {
        out.push_str("\n\nwhy providers did not bid:");
        for d in &v.declines {
            out.push_str(&format!("\n  {}  {}", short(&d.provider), d.reason));
        }
    }
    out
}

fn watch(cli: &Cli, id: &str, timeout_s: u64, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    let poller = JobPoller::new(cli, id)?;
    let mut pulled = std::collections::BTreeSet::new();
    let puller = match out {
        Some(out) => Some((Client::new(&cli.node), signing_key(cli)?, out, runtime()?)),
        None => None,
    };
    loop {
        let view = poller.view()?;
        if let Some((client, me, out, rt)) = &puller {
            // Results as they settle; a render's frames put together again with each.
            let fresh: Vec<&TaskView> = view
                .tasks
                .iter()
                .filter(|t| t.result.is_some() && !pulled.contains(&t.index))
                .collect();
            for t in &fresh {
                let w = rt.block_on(pull_result(cli, client, me, t, out))?;
                if !cli.json {
                    println!("{}", describe_pulled(&w));
                }
                pulled.insert(t.index);
            }
            if !fresh.is_empty() {
                let frames = assemble(&view, out)?;
                if let (Some(f), false) = (&frames, cli.json) {
                    println!(
                        "{} frames, in order -> {}",
                        f.frames.len(),
                        out.join("frames").display()
                    );
                }
            }
        }
        let summary: Vec<String> = view
            .tasks
            .iter()
            .map(|t| format!("{}:{}", t.index, t.phase))
            .collect();
        let mut line = format!(
            "{} settled / {} tasks, cost {} GRID [{}]",
            view.settled,
            view.tasks.len(),
            view.spent,
            summary.join(" ")
        );
        if let Some(frames) = frames_line(&view) {
            // A render: which frames are in, as they settle.
            line.push_str(&format!(" frames {frames}"));
        }
        if line != last && !cli.json {
            println!("{line}");
            last = line;
        }
        if view.status != JobStatus::Open {
            return emit(cli.json, &view, || {
                format!("job {} {}", view.id, view.status)
            });
        }
        if started.elapsed() > Duration::from_secs(timeout_s) {
            bail!(
                "job {} still open after {timeout_s} s; `gridwork job status {}` says why",
                view.id,
                view.id
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

struct LogArgs {
    stream: LogStream,
    provider: Option<Address>,
    attempt: Option<u32>,
}

/// The whole log of one task run as the node holds it now.
async fn whole_log(
    client: &Client,
    job: &Hash,
    task: u32,
    which: &LogArgs,
) -> anyhow::Result<TaskLog> {
    let mut log = client
        .task_log(
            job,
            task,
            which.provider.as_ref(),
            which.attempt,
            which.stream,
            0,
        )
        .await?;
    while (log.offset + log.data.len() as u64) < log.size {
        let next = client
            .task_log(
                job,
                task,
                Some(&log.provider),
                Some(log.attempt),
                which.stream,
                log.offset + log.data.len() as u64,
            )
            .await?;
        if next.data.is_empty() {
            break;
        }
        log.data.push_str(&next.data);
        log.size = next.size;
    }
    Ok(log)
}

fn logs(cli: &Cli, id: &str, task: Option<u32>, which: &LogArgs) -> anyhow::Result<()> {
    let view = fetch_job(cli, id)?;
    // Logs are the requester's (and the task's providers'): reads are signed.
    let client = Client::new(&cli.node).signed_by(signing_key(cli)?);
    let tasks: Vec<&TaskView> = view
        .tasks
        .iter()
        .filter(|t| task.is_none_or(|n| n == t.index))
        .collect();
    if tasks.is_empty() {
        bail!("job {} has no task {}", view.id, task.unwrap_or(0));
    }
    let mut found = Vec::new();
    runtime()?.block_on(async {
        for t in &tasks {
            if which.provider.is_none() && t.executor.is_none() {
                continue;
            }
            found.push(whole_log(&client, &view.id, t.index, which).await?);
        }
        anyhow::Ok(())
    })?;
    emit(cli.json, &json!({ "logs": found }), || {
        if found.is_empty() {
            return "no task has an executor yet, so there are no logs".into();
        }
        found
            .iter()
            .map(|l| {
                let body = if l.data.is_empty() {
                    "(nothing printed yet)\n".to_string()
                } else {
                    l.data.clone()
                };
                format!(
                    "== task {} attempt {} {} {} ==\n{}",
                    l.task,
                    l.attempt,
                    l.provider,
                    l.stream.as_str(),
                    body
                )
            })
            .collect::<Vec<_>>()
            .join("")
            .trim_end()
            .to_string()
    })
}

fn follow_log(cli: &Cli, id: &str, task: Option<u32>, which: &LogArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut poller = JobPoller::new(cli, id)?;
    // Logs are the requester's (and the task's providers'): reads are signed.
    poller.client = poller.client.signed_by(signing_key(cli)?);
    let view = poller.view()?;
    let task = match (task, view.tasks.len()) {
        (Some(t), _) => t,
        (None, 1) => 0,
        (None, n) => bail!(
            "job {} has {n} tasks; name one with --task N to follow it",
            view.id
        ),
    };
    let mut at: Option<(Address, u32)> = None;
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let view = poller.view()?;
        let t = view
            .tasks
            .iter()
            .find(|t| t.index == task)
            .ok_or_else(|| anyhow!("job {} has no task {task}", view.id))?;
        let decided = t.phase.is_decided();
        let provider = which.provider.or(t.executor);
        let attempt = which.attempt.unwrap_or(t.attempt);
        let Some(provider) = provider else {
            if decided {
                bail!("task {task} ended ({}) without an executor", t.phase);
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        if at != Some((provider, attempt)) {
            at = Some((provider, attempt));
            offset = 0;
            if !cli.json {
                writeln!(
                    out,
                    "== task {task} attempt {attempt} {provider} {} ==",
                    which.stream.as_str()
                )?;
            }
        }
        let log = poller.rt.block_on(poller.client.task_log(
            &view.id,
            task,
            Some(&provider),
            Some(attempt),
            which.stream,
            offset,
        ))?;
        offset += log.data.len() as u64;
        if !log.data.is_empty() {
            if cli.json {
                writeln!(out, "{}", serde_json::to_string(&log)?)?;
            } else {
                write!(out, "{}", log.data)?;
            }
            out.flush()?;
        }
        if decided && log.data.is_empty() {
            if !cli.json {
                writeln!(out, "== task {task} {} ==", t.phase)?;
            }
            return Ok(());
        }
        if log.data.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Pulls the result of settled task `t` into `out/task-<index>` with the requester's key
/// `me`, and draws a training's loss curve beside it; what was written, as JSON.
async fn pull_result(
    cli: &Cli,
    client: &Client,
    me: &gridwork_types::Keypair,
    t: &TaskView,
    out: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let Some(cid) = t.result else {
        return Ok(serde_json::Value::Null);
    };
    let dir = out.join(format!("task-{}", t.index));
    // The executor kept its output and serves it peer to peer, if it announced an endpoint;
    // chunks come from it and the node at once.
    let holders: Vec<_> = t.executor.into_iter().collect();
    let report = crate::data::pull_granted(cli, client, &cid, me, &holders, &dir).await?;
    // A training's loss curve, drawn beside what was pulled.
    let curve = gridwork_client::read_loss(&dir.join("loss.csv"))
        .map(|points| {
            gridwork_client::plot_loss(&points, &out.join(format!("task-{}-loss.png", t.index)))
        })
        .transpose()?;
    Ok(
        json!({ "task": t.index, "output": cid, "dir": dir, "files": report.files, "loss_plot": curve }),
    )
}

/// One line for a pulled result.
fn describe_pulled(w: &serde_json::Value) -> String {
    let curve = w["loss_plot"]
        .as_str()
        .map_or(String::new(), |p| format!("; loss curve -> {p}"));
    format!(
        "task {} -> {} ({} files){curve}",
        w["task"],
        w["dir"].as_str().unwrap_or(""),
        w["files"]
    )
}

/// A render's frames from the results pulled into `out`, in order in one place, with a
/// contact sheet and a video (`None` for any other job).
fn assemble(
    view: &JobView,
    out: &std::path::Path,
) -> anyhow::Result<Option<gridwork_client::Assembled>> {
    let dirs: Vec<std::path::PathBuf> = view
        .tasks
        .iter()
        .filter(|t| t.result.is_some() && out.join(format!("task-{}", t.index)).is_dir())
        .map(|t| out.join(format!("task-{}", t.index)))
        .collect();
    Ok(gridwork_client::assemble_frames(&dirs, out)?)
}

fn results(cli: &Cli, id: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let view = fetch_job(cli, id)?;
    let client = Client::new(&cli.node);
    let me = signing_key(cli)?;
    let mut written = Vec::new();
    runtime()?.block_on(async {
        for t in view.tasks.iter().filter(|t| t.result.is_some()) {
            written.push(pull_result(cli, &client, &me, t, out).await?);
        }
        anyhow::Ok(())
    })?;
    let frames = assemble(&view, out)?;
    let frames_json = frames.as_ref().map(|f| {
        json!({
            "frames": f.frames.len(),
            "dir": out.join("frames"),
            "contact_sheet": f.contact_sheet,
            "video": f.video.as_ref().ok(),
            "no_video": f.video.as_ref().err(),
            "skipped": f.skipped,
        })
    });
    emit(
        cli.json,
        &json!({ "job": view.id, "results": written, "frames": frames_json }),
        || {
            if written.is_empty() {
                return format!("no task of job {} has settled yet", view.id);
            }
            let mut lines: Vec<String> = written.iter().map(describe_pulled).collect();
            if let Some(f) = &frames {
                lines.push(format!(
                    "{} frames, in order -> {}",
                    f.frames.len(),
                    out.join("frames").display()
                ));
                if let Some(sheet) = &f.contact_sheet {
                    lines.push(format!("contact sheet -> {}", sheet.display()));
                }
                match &f.video {
                    Ok(video) => lines.push(format!("video -> {}", video.display())),
                    Err(why) => lines.push(why.clone()),
                }
                lines.extend(f.skipped.iter().map(|s| format!("left out: {s}")));
            }
            lines.join("\n")
        },
    )
}

pub(crate) fn provider(cli: &Cli, cmd: &ProviderCommand) -> anyhow::Result<()> {
    let client = Client::new(&cli.node);
    match cmd {
        ProviderCommand::Show { address } => {
            let address: Address = address.parse()?;
            let p = runtime()?
                .block_on(client.provider(&address))?
                .ok_or_else(|| anyhow!("{address} is not a registered provider"))?;
            emit(cli.json, &p, || {
                let gpus: Vec<String> = p
                    .hardware
                    .gpus
                    .iter()
                    .map(|g| format!("{} {} ({} MiB)", g.vendor, g.model, g.vram_mib))
                    .collect();
                rows(&[
                    ("provider", p.address.to_string()),
                    ("status", p.status.to_string()),
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
                            "{} cores, {} MiB memory, score {}",
                            p.hardware.cpu_cores,
                            p.hardware.memory_mib,
                            match (p.hardware.cpu_score, p.score_lost) {
                                (_, true) =>
                                    "lost (its runs were far slower than it claimed)".to_string(),
                                (0, false) => "not measured".to_string(),
                                (s, false) => s.to_string(),
                            }
                        ),
                    ),
                    (
                        "owner",
                        if p.owner == p.address {
                            "itself".into()
                        } else {
                            p.owner.to_string()
                        },
                    ),
                    ("stake", format!("{} GRID", p.stake_locked)),
                    (
                        "peer",
                        p.peer
                            .as_ref()
                            .map_or("does not serve chunks".into(), |peer| {
                                format!("{} at {}", peer.endpoint, peer.addrs.join(", "))
                            }),
                    ),
                    (
                        "reputation",
                        format!(
                            "streak {}, {} validated, {} failed",
                            p.streak, p.validated, p.failed
                        ),
                    ),
                    ("earned", format!("{} GRID", p.earned)),
                    ("slashed", format!("{} GRID", p.slashed)),
                    ("active tasks", p.active.to_string()),
                ])
            })
        }
        ProviderCommand::List => {
            let list = runtime()?.block_on(client.providers())?;
            emit(cli.json, &json!({ "providers": list }), || {
                if list.is_empty() {
                    return "no providers registered; start one with `gridwork worker`".into();
                }
                list.iter()
                    .map(|p| {
                        format!(
                            "{}  {:<9}  streak {:>3}  earned {} GRID",
                            p.address, p.status, p.streak, p.earned
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ProviderCommand::Authorize { worker } => {
            let worker: Address = worker.parse()?;
            let key = signing_key(cli)?;
            let chain = runtime()?.block_on(client.chain())?;
            let approval = OwnerApproval::sign(&chain.chain_id, &key, &worker);
            let text = approval.to_hex();
            emit(
                cli.json,
                &json!({ "owner": key.address(), "worker": worker, "chain_id": chain.chain_id, "approval": text }),
                || {
                    format!(
                        "{} approves worker {worker} on chain {}\nstart the worker with:\n  gridwork --key <worker key> worker --owner-approval {text} --price <GRID>",
                        key.address(),
                        chain.chain_id
                    )
                },
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{frames_line, render_job};
    use gridwork_api::{BidView, JobStatus, JobView, Phase, TaskView};
    use gridwork_types::{Address, Amount, Hash, Prescription};

    /// A task of `items`, where `phase` stands, with `bids`.
    fn task(index: u32, phase: Phase, items: (u64, u64), bids: Vec<BidView>) -> TaskView {
        TaskView {
            index,
            phase,
            attempt: 0,
            items,
            bids,
            executor: None,
            price: Amount::ZERO,
            council: Vec::new(),
            committed: Vec::new(),
            revealed: Vec::new(),
            judged: Vec::new(),
            round: 0,
            deadline_ms: 0,
            result: None,
            ended: None,
            paid: Amount::ZERO,
            note: String::new(),
            checkpoints: Vec::new(),
            replay: Vec::new(),
            run_failed: false,
        }
    }

    /// An open job of `prescription` with `tasks`.
    fn job(prescription: Prescription, tasks: Vec<TaskView>) -> JobView {
        JobView {
            id: Hash([1; 32]),
            requester: Address([9; 20]),
            status: JobStatus::Open,
            prescription,
            escrow: Amount(10),
            spent: Amount::ZERO,
            max_task_cost: Amount(5),
            settled: tasks.iter().filter(|t| t.phase == Phase::Settled).count() as u32,
            closed: 0,
            tasks,
            declines: Vec::new(),
        }
    }

    /// `job status` of a job that runs in an image says how many of its bidders said they
    /// had the image loaded already, each bidder counted once.
    #[test]
    fn job_status_says_how_many_bidders_had_the_image_loaded() {
        let image = Hash([7; 32]);
        let text = format!(
            "[data]\ninputs = []\n[program]\ncommand = \"sh\"\nimage = \"img:{image}\"\n\
             [instructions]\nitems = 2\nchunk = 1\ntask_deadline_s = 60\ncouncil_size = 1\n\
             [instructions.requirements]\nsoftware = [\"docker\"]\n\
             [payment]\nkind = \"per_task_second\"\nmax_price = \"0.1\"\n\
             [equivalence]\nkind = \"exact_hash\"\n[halting]\nfirst_bids = 2\ndeadline_s = 5\n"
        );
        let file =
            gridwork_client::JobFile::parse(&text, "job.toml", std::path::Path::new(".")).unwrap();
        let bid = |n: u8, cached: bool| BidView {
            provider: Address([n; 20]),
            price: Amount(1),
            cached,
        };
        let mut view = job(
            file.prescription,
            vec![
                task(0, Phase::Bidding, (0, 1), vec![bid(1, true), bid(2, false)]),
                task(1, Phase::Bidding, (1, 2), vec![bid(1, true), bid(3, true)]),
            ],
        );
        let shown = render_job(&view);
        assert!(
            shown.contains(&format!("img:{image} (loaded already by 2 of 3 bidders)")),
            "{shown}"
        );
        assert!(!shown.contains("frames"), "not a render: {shown}");
        view.prescription.program.image = None;
        assert!(!render_job(&view).contains("loaded already"));
    }

    /// `job status` of a training says how it is checked and, per task, what its executor
    /// bound and which segments its council replays.
    #[test]
    fn job_status_of_a_training_says_what_is_replayed_and_what_it_catches() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train/job.toml");
        let file = gridwork_client::JobFile::read(&path).unwrap();
        let mut bound = task(0, Phase::Committing, (0, 1), vec![]);
        bound.checkpoints = vec![Hash([3; 32]); 8];
        bound.replay = vec![2, 6];
        let view = job(file.prescription, vec![bound]);
        let shown = render_job(&view);
        assert!(
            shown.contains("replays 2 of each task's 8 segments, drawn after its checkpoints are bound (25% of a run); a trainer that faked 1 segment is caught with probability 25% a task"),
            "{shown}"
        );
        assert!(
            shown.contains("0  8 bound; replaying segments 2, 6"),
            "{shown}"
        );
    }

    /// `job status` and `job watch` of a render say which frames have settled, in ranges.
    #[test]
    fn a_render_says_which_frames_have_settled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scene.py"), "").unwrap();
        let text = "[data]\ninputs = []\n[render]\nscene = \"./scene.py\"\nframes = [10, 21]\n\
                    [instructions]\nchunk = 2\ntask_deadline_s = 60\n\
                    [payment]\nkind = \"per_task_second\"\nmax_price = \"0.1\"\n\
                    [halting]\nfirst_bids = 1\ndeadline_s = 5\n";
        let file = gridwork_client::JobFile::parse(text, "job.toml", dir.path()).unwrap();
        let phases = [
            Phase::Settled,
            Phase::Settled,
            Phase::Bidding,
            Phase::Settled,
            Phase::Committing,
            Phase::Settled,
        ];
        let tasks = (0..6u32)
            .map(|i| {
                let at = u64::from(i) * 2;
                task(i, phases[i as usize], (at, at + 2), Vec::new())
            })
            .collect();
        let view = job(file.prescription, tasks);
        assert_eq!(
            frames_line(&view).unwrap(),
            "10-21; settled 10-13, 16-17, 20-21"
        );
    }
}
