//! Prometheus metrics of one worker: tasks running, runs finished and their seconds, and
//! what each NVIDIA GPU is doing, served at `/metrics` when `gridwork worker` is given
//! `--metrics-listen`.
//!
//! # Design decisions
//!
//! - GPU figures are read from NVML when scraped, not sampled in the background: a scrape
//!   asks the driver for a handful of numbers per GPU, and a worker nobody scrapes does no
//!   work for it. NVML is loaded at run time (`libnvidia-ml.so.1`) once, on the first scrape.
//!   Without NVML (no NVIDIA driver, no GPU) the GPU families are written with no samples and
//!   `gridwork_worker_nvml_available` is 0.
//! - The server is plain HTTP/1 with one route and no body to read; it is meant for a
//!   private or loopback address, like any exporter.
//! - Rendering takes the GPU samples as an argument ([`WorkerMetrics::render_with`]), so the
//!   text is tested without a GPU.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gridwork_api::exposition::{Exposition, Histogram, Kind};

/// How a run ended, as counted in `gridwork_worker_tasks_finished_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RunOutcome {
    /// The program exited 0.
    Success,
    /// The program exited with another code.
    Failure,
    /// The program ran past its limit and was stopped.
    Timeout,
    /// The program was ended by a signal.
    Killed,
    /// The worker could not run it or deliver its outputs (inputs, sandbox, upload).
    Error,
}

impl RunOutcome {
    fn label(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Failure => "failure",
            RunOutcome::Timeout => "timeout",
            RunOutcome::Killed => "killed",
            RunOutcome::Error => "error",
        }
    }
}

/// What one GPU is doing now.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// Its NVML index.
    pub index: u32,
    /// Its model name.
    pub model: String,
    /// Share of the last sample period a kernel ran, 0 to 1.
    pub utilization: f64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory in all, bytes.
    pub memory_total_bytes: u64,
}

/// Counts of one worker's runs.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    running: AtomicU64,
    /// By (role, outcome).
    finished: Mutex<BTreeMap<(&'static str, RunOutcome), u64>>,
    run_seconds: Mutex<Option<Histogram>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a run as running until dropped.
pub(crate) struct Running<'a>(&'a WorkerMetrics);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Relaxed);
    }
}

impl WorkerMetrics {
    /// A run starts; it counts as running until the guard is dropped.
    pub(crate) fn run_started(&self) -> Running<'_> {
        self.running.fetch_add(1, Relaxed);
        Running(self)
    }

    /// A task program ran for `took` (whatever came of it).
    pub(crate) fn program_ran(&self, took: Duration) {
        lock(&self.run_seconds)
            .get_or_insert_with(|| Histogram::new(Histogram::RUN_SECONDS))
            .observe(took.as_secs_f64());
    }

    /// A run ended, as executor or on the council, with `outcome`.
    pub(crate) fn run_finished(&self, as_executor: bool, outcome: RunOutcome) {
        let role = if as_executor { "executor" } else { "council" };
        *lock(&self.finished).entry((role, outcome)).or_insert(0) += 1;
    }

    /// The text exposition format, with the GPUs NVML reports now.
    pub fn render(&self) -> String {
        self.render_with(nvml_samples().as_deref())
    }

    /// The text exposition format with `gpus` (none: NVML is not available).
    pub fn render_with(&self, gpus: Option<&[GpuSample]>) -> String {
        use Kind::{Counter, Gauge};
        let mut e = Exposition::new();
        e.single(
            "gridwork_worker_tasks_running",
            Gauge,
            "Task programs running now (as executor or council member).",
            self.running.load(Relaxed),
        );
        let name = "gridwork_worker_tasks_finished_total";
        e.family(
            name,
            Counter,
            "Task runs ended since start, by role (executor, council) and outcome (success, failure, timeout, killed, error).",
        );
        for ((role, outcome), n) in lock(&self.finished).iter() {
            e.sample(name, &[("role", role), ("outcome", outcome.label())], *n);
        }
        let name = "gridwork_worker_task_run_seconds";
        e.family(
            name,
            Kind::Histogram,
            "Seconds task programs ran, from start to exit.",
        );
        let hist = lock(&self.run_seconds)
            .clone()
            .unwrap_or_else(|| Histogram::new(Histogram::RUN_SECONDS));
        e.histogram(name, &[], &hist);
        e.single(
            "gridwork_worker_nvml_available",
            Gauge,
            "1 when NVML answers (the GPU families have a sample per NVIDIA GPU), else 0.",
            u64::from(gpus.is_some()),
        );
        let gpus = gpus.unwrap_or_default();
        let indexes: Vec<String> = gpus.iter().map(|g| g.index.to_string()).collect();
        type Read = fn(&GpuSample) -> f64;
        let families: [(&str, &str, Read); 3] = [
            (
                "gridwork_worker_gpu_utilization_ratio",
                "Share of the last sample period a kernel ran on the GPU, 0 to 1 (NVML).",
                |g| g.utilization,
            ),
            (
                "gridwork_worker_gpu_memory_used_bytes",
                "GPU memory in use, bytes (NVML).",
                |g| g.memory_used_bytes as f64,
            ),
            (
                "gridwork_worker_gpu_memory_total_bytes",
                "GPU memory in all, bytes (NVML).",
                |g| g.memory_total_bytes as f64,
            ),
        ];
        for (name, help, value) in families {
            e.family(name, Gauge, help);
            for (g, index) in gpus.iter().zip(&indexes) {
                e.sample(name, &[("gpu", index), ("model", &g.model)], value(g));
            }
        }
        e.finish()
    }
}

/// What NVML reports of each NVIDIA GPU now, or `None` where NVML does not load.
fn nvml_samples() -> Option<Vec<GpuSample>> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    let nvml = NVML
        .get_or_init(|| match nvml_wrapper::Nvml::init() {
            Ok(nvml) => Some(nvml),
            Err(e) => {
                tracing::debug!(error = %e, "NVML unavailable; no GPU metrics");
                None
            }
        })
        .as_ref()?;
    let count = nvml.device_count().ok()?;
    let mut samples = Vec::new();
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let utilization = device
            .utilization_rates()
            .map_or(f64::NAN, |u| f64::from(u.gpu) / 100.0);
        let (used, total) = device.memory_info().map_or((0, 0), |m| (m.used, m.total));
        samples.push(GpuSample {
            index,
            model: device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
            utilization,
            memory_used_bytes: used,
            memory_total_bytes: total,
        });
    }
    Some(samples)
}

/// Serves `GET /metrics` of `metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    metrics: Arc<WorkerMetrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                // NVML calls block: off the async threads.
                let text = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        gridwork_api::exposition::CONTENT_TYPE,
                    )],
                    text,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_by_role_and_outcome_and_leave_running_when_done() {
        let m = WorkerMetrics::default();
        {
            let _run = m.run_started();
            assert!(m
                .render_with(None)
                .contains("gridwork_worker_tasks_running 1\n"));
            m.program_ran(Duration::from_secs(2));
            m.run_finished(true, RunOutcome::Success);
        }
        m.run_finished(false, RunOutcome::Error);
        let text = m.render_with(None);
        assert!(text.contains("gridwork_worker_tasks_running 0\n"), "{text}");
        assert!(
            text.contains(
                "gridwork_worker_tasks_finished_total{role=\"executor\",outcome=\"success\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gridwork_worker_tasks_finished_total{role=\"council\",outcome=\"error\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("gridwork_worker_task_run_seconds_bucket{le=\"5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("gridwork_worker_task_run_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn without_nvml_the_gpu_families_have_no_samples() {
        let text = WorkerMetrics::default().render_with(None);
        assert!(
            text.contains("gridwork_worker_nvml_available 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gridwork_worker_gpu_utilization_ratio gauge\n"),
            "{text}"
        );
        assert!(
            !text.contains("gridwork_worker_gpu_utilization_ratio{"),
            "{text}"
        );
    }

    #[test]
    fn a_scrape_says_whether_nvml_answered_and_lists_no_gpu_when_it_did_not() {
        let text = WorkerMetrics::default().render();
        if text.contains("gridwork_worker_nvml_available 0\n") {
            assert!(
                !text.contains("gridwork_worker_gpu_memory_total_bytes{"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("gridwork_worker_nvml_available 1\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn each_gpu_has_its_utilization_and_memory() {
        let gpus = [GpuSample {
            index: 0,
            model: "NVIDIA H100 80GB HBM3".into(),
            utilization: 0.5,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 80 << 30,
        }];
        let text = WorkerMetrics::default().render_with(Some(&gpus));
        assert!(
            text.contains("gridwork_worker_nvml_available 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "gridwork_worker_gpu_utilization_ratio{gpu=\"0\",model=\"NVIDIA H100 80GB HBM3\"} 0.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "gridwork_worker_gpu_memory_used_bytes{{gpu=\"0\",model=\"NVIDIA H100 80GB HBM3\"}} {}\n",
                1u64 << 30
            )),
            "{text}"
        );
    }
}
