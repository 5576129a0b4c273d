//! What this machine offers: CPU cores, memory and GPUs.
//!
//! GPUs are found through sysfs (`/sys/class/drm/card*/device/vendor`: NVIDIA 0x10de, AMD
//! 0x1002, Intel 0x8086). AMD memory comes from `mem_info_vram_total`; NVIDIA model and
//! memory from `nvidia-smi` when the driver's tool is installed. No GPU is a fine answer.

use std::path::Path;

use gridwork_types::{Gpu, GpuVendor, Hardware};

/// Probes this machine.
pub fn probe() -> Hardware {
    probe_at(Path::new("/"))
}

/// Probes a machine whose `/proc` and `/sys` live under `root` (tests use a fake tree).
pub fn probe_at(root: &Path) -> Hardware {
    let cpu_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mib = std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    Hardware {
        gpus: gpus(root),
        cpu_cores,
        memory_mib,
    }
}

fn gpus(root: &Path) -> Vec<Gpu> {
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
    let mut nvidia = nvidia_smi().into_iter();
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
            GpuVendor::Nvidia => nvidia
                .next()
                .unwrap_or_else(|| (format!("nvidia {}", read("device")), 0)),
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

/// `(name, memory MiB)` per NVIDIA GPU from `nvidia-smi`, if it runs.
fn nvidia_smi() -> Vec<(String, u64)> {
    let Ok(out) = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, mem) = l.rsplit_once(',')?;
            Some((name.trim().to_string(), mem.trim().parse().ok()?))
        })
        .collect()
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
        let hw = probe_at(r);
        assert_eq!(hw.memory_mib, 16_000);
        assert_eq!(hw.gpus.len(), 2);
        assert_eq!(
            (hw.gpus[0].vendor, hw.gpus[0].vram_mib),
            (GpuVendor::Amd, 24_576)
        );
        assert_eq!(hw.gpus[1].vendor, GpuVendor::Intel);
    }

    #[test]
    fn a_machine_without_gpus_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let hw = probe_at(root.path());
        assert!(hw.gpus.is_empty());
        assert!(hw.cpu_cores >= 1);
    }
}
