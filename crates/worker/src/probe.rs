//! What this machine offers: CPU cores, memory and GPUs.
//!
//! NVIDIA GPUs come from NVML, the driver's own library, loaded at run time
//! (`libnvidia-ml.so.1`, through nvml-wrapper): names, memory, and every GPU even where the
//! driver creates no DRM card, as on most servers. Without NVML the worker asks `nvidia-smi`,
//! and without that it lists NVIDIA cards from sysfs with unknown memory. AMD and Intel GPUs
//! come from sysfs (`/sys/class/drm/card*/device/vendor`: AMD 0x1002, Intel 0x8086; AMD
//! memory from `mem_info_vram_total`). No GPU is a fine answer.

use std::path::Path;

use gridwork_types::{Gpu, GpuVendor, Hardware};
use serde::Serialize;

/// What a probe found, and where the NVIDIA answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// The hardware offered.
    pub hardware: Hardware,
    /// `nvml (driver VERSION)`, `nvidia-smi`, or why neither answered.
    pub nvidia_source: String,
}

/// Probes this machine.
pub fn probe() -> Hardware {
    probe_report().hardware
}

/// Probes this machine and says how NVIDIA GPUs were found.
pub fn probe_report() -> ProbeReport {
    let (nvidia, nvidia_source) = match nvml_gpus() {
        Ok((gpus, driver)) => (Some(gpus), format!("nvml (driver {driver})")),
        Err(nvml) => match nvidia_smi() {
            Some(gpus) => (Some(gpus), format!("nvidia-smi (NVML: {nvml})")),
            None => (None, format!("none (NVML: {nvml}; nvidia-smi did not run)")),
        },
    };
    ProbeReport {
        hardware: probe_at(Path::new("/"), nvidia),
        nvidia_source,
    }
}

/// Probes a machine whose `/proc` and `/sys` live under `root` (tests use a fake tree).
/// `nvidia`, when known (from NVML or `nvidia-smi`), replaces the NVIDIA cards of sysfs.
pub fn probe_at(root: &Path, nvidia: Option<Vec<Gpu>>) -> Hardware {
    let cpu_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mib = std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let mut gpus = nvidia.clone().unwrap_or_default();
    gpus.extend(
        sysfs_gpus(root)
            .into_iter()
            .filter(|g| g.vendor != GpuVendor::Nvidia || nvidia.is_none()),
    );
    Hardware {
        gpus,
        cpu_cores,
        memory_mib,
        software: Vec::new(),
        cpu_score: 0,
    }
}

/// NVIDIA GPUs and the driver version from NVML, or why NVML is not available.
fn nvml_gpus() -> Result<(Vec<Gpu>, String), String> {
    use nvml_wrapper::Nvml;
    let nvml = Nvml::init().map_err(|e| e.to_string())?;
    let driver = nvml
        .sys_driver_version()
        .unwrap_or_else(|_| "unknown".into());
    let count = nvml.device_count().map_err(|e| e.to_string())?;
    let mut gpus = Vec::new();
    for i in 0..count {
        let device = nvml.device_by_index(i).map_err(|e| e.to_string())?;
        let model = device.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let vram_mib = device.memory_info().map_or(0, |m| m.total / (1024 * 1024));
        gpus.push(Gpu {
            vendor: GpuVendor::Nvidia,
            model,
            vram_mib,
        });
    }
    Ok((gpus, driver))
}

fn sysfs_gpus(root: &Path) -> Vec<Gpu> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/drm")) else {
        return out;
    };
    let mut cards: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("card") && n[4..].chars().all(|c| c.is_ascii_digit())
            })
        })
        .collect();
    cards.sort();
    for card in cards {
        let dev = card.join("device");
        let read = |f: &str| {
            std::fs::read_to_string(dev.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let vendor = match read("vendor").as_str() {
            "0x10de" => GpuVendor::Nvidia,
            "0x1002" => GpuVendor::Amd,
            "0x8086" => GpuVendor::Intel,
            _ => continue,
        };
        let (model, vram_mib) = match vendor {
            GpuVendor::Nvidia => (format!("nvidia {}", read("device")), 0),
            _ => (
                format!("{vendor} {}", read("device")),
                read("mem_info_vram_total")
                    .parse::<u64>()
                    .map_or(0, |b| b / (1024 * 1024)),
            ),
        };
        out.push(Gpu {
            vendor,
            model,
            vram_mib,
        });
    }
    out
}

/// NVIDIA GPUs from `nvidia-smi`, if it runs.
fn nvidia_smi() -> Option<Vec<Gpu>> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, mem) = l.rsplit_once(',')?;
                Some(Gpu {
                    vendor: GpuVendor::Nvidia,
                    model: name.trim().to_string(),
                    vram_mib: mem.trim().parse().ok()?,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_gpus_from_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(
            r.join("proc/meminfo"),
            "MemTotal:       16384000 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        let amd = r.join("sys/class/drm/card0/device");
        std::fs::create_dir_all(&amd).unwrap();
        std::fs::write(amd.join("vendor"), "0x1002\n").unwrap();
        std::fs::write(amd.join("device"), "0x744c\n").unwrap();
        std::fs::write(
            amd.join("mem_info_vram_total"),
            format!("{}\n", 24u64 << 30),
        )
        .unwrap();
        let intel = r.join("sys/class/drm/card1/device");
        std::fs::create_dir_all(&intel).unwrap();
        std::fs::write(intel.join("vendor"), "0x8086\n").unwrap();
        std::fs::create_dir_all(r.join("sys/class/drm/card1-DP-1")).unwrap();
        let hw = probe_at(r, None);
        assert_eq!(hw.memory_mib, 16_000);
        assert_eq!(hw.gpus.len(), 2);
        assert_eq!(
            (hw.gpus[0].vendor, hw.gpus[0].vram_mib),
            (GpuVendor::Amd, 24_576)
        );
        assert_eq!(hw.gpus[1].vendor, GpuVendor::Intel);
    }

    #[test]
    fn nvml_answers_replace_nvidia_cards_of_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (card, vendor) in [("card0", "0x10de"), ("card1", "0x1002")] {
            let dev = r.join("sys/class/drm").join(card).join("device");
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("vendor"), vendor).unwrap();
        }
        // Without NVML the NVIDIA card is still offered, memory unknown.
        let hw = probe_at(r, None);
        assert_eq!(hw.gpus.len(), 2);
        assert_eq!(
            (hw.gpus[0].vendor, hw.gpus[0].vram_mib),
            (GpuVendor::Nvidia, 0)
        );
        // NVML knows two (a server's GPUs often have no DRM card): they replace sysfs's one.
        let h100 = Gpu {
            vendor: GpuVendor::Nvidia,
            model: "NVIDIA H100 80GB HBM3".into(),
            vram_mib: 81_559,
        };
        let hw = probe_at(r, Some(vec![h100.clone(), h100.clone()]));
        assert_eq!(hw.gpus.len(), 3);
        assert_eq!(hw.gpus[..2], [h100.clone(), h100]);
        assert_eq!(hw.gpus[2].vendor, GpuVendor::Amd);
    }

    #[test]
    fn the_nvidia_probe_says_where_its_answer_came_from() {
        // On a machine without the driver NVML fails cleanly and the reason is reported; on
        // one with it, the driver version is.
        let report = probe_report();
        assert!(
            report.nvidia_source.starts_with("nvml (driver ")
                || report.nvidia_source.contains("NVML: "),
            "{}",
            report.nvidia_source
        );
    }

    #[test]
    fn a_machine_without_gpus_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let hw = probe_at(root.path(), None);
        assert!(hw.gpus.is_empty());
        assert!(hw.cpu_cores >= 1);
    }
}
