//! The result file: what ran, where, when, and every figure, as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::run::{LatencyResult, ThroughputResult};

/// The machine a run happened on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the run started (other work on the machine skews absolute figures).
    pub loadavg_at_start: String,
}

impl Machine {
    /// Reads what Linux says about this machine (empty strings where it says nothing).
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            loadavg_at_start: read("/proc/loadavg").trim().to_owned(),
        }
    }
}

/// How the run was configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `quick`, `default` or `full`.
    pub mode: String,
    /// Systems measured, in order.
    pub systems: Vec<String>,
    /// Payload sizes (bytes).
    pub payloads: Vec<usize>,
    /// Seconds of sending per throughput run.
    pub throughput_secs: f64,
    /// Seconds recorded per latency run (after the warm-up).
    pub latency_secs: f64,
    /// Rate asked of latency runs (lower for large payloads, see `latency_mb_per_s_max`).
    pub latency_rate_per_s: u64,
    /// Cap on the latency runs' payload bandwidth (MB/s).
    pub latency_mb_per_s_max: f64,
    /// The mesh binary.
    pub mesh_bin: String,
    /// `nats-server --version`, if NATS ran.
    pub nats_version: Option<String>,
}

/// Everything one `mesh-bench` invocation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// How.
    pub config: RunConfig,
    /// Throughput at saturation, per system and payload.
    pub throughput: Vec<ThroughputResult>,
    /// Latency at a fixed rate, per system and payload.
    pub latency: Vec<LatencyResult>,
    /// Messages the mesh runs lost (must be 0 in a clean run).
    pub mesh_lost: u64,
    /// Runs that failed, with why (their figures are missing above).
    #[serde(default)]
    pub errors: Vec<String>,
}

impl Results {
    /// Writes `results.json` into `dir` (made if missing); returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("results.json");
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Reads a file [`Results::write`] wrote.
    pub fn read(path: &Path) -> Result<Results> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hist::LatencySummary;

    pub(crate) fn sample() -> Results {
        Results {
            date: "2026-01-02T03:04:05Z".into(),
            machine: Machine {
                nproc: 2,
                cpu_model: "Test CPU".into(),
                kernel: "6.1".into(),
                loadavg_at_start: "1.00 1.00 1.00 2/100 42".into(),
            },
            config: RunConfig {
                mode: "quick".into(),
                systems: vec!["mesh-pair".into(), "nats".into(), "tcp".into()],
                payloads: vec![64, 4096],
                throughput_secs: 1.5,
                latency_secs: 2.0,
                latency_rate_per_s: 20_000,
                latency_mb_per_s_max: 200.0,
                mesh_bin: "target/release/mesh".into(),
                nats_version: Some("nats-server: v2.9.10".into()),
            },
            throughput: vec![ThroughputResult {
                system: "mesh-pair".into(),
                payload_len: 64,
                sent: 1000,
                received: 1000,
                lost: 0,
                reordered: 0,
                secs: 0.5,
                msgs_per_s: 2000.0,
                mb_per_s: 0.128,
            }],
            latency: vec![LatencyResult {
                system: "nats".into(),
                payload_len: 64,
                rate_per_s: 20_000,
                sent: 40_000,
                received: 39_990,
                lost: 10,
                reordered: 0,
                producer_behind_max: 3,
                latency: LatencySummary {
                    count: 39_990,
                    p50_us: 41.5,
                    p99_us: 120.25,
                    p999_us: 900.0,
                    max_us: 2_000.0,
                    mean_us: 50.0,
                },
                p99_us_per_second: vec![110.0, 130.5],
            }],
            mesh_lost: 0,
            errors: vec![],
        }
    }

    #[test]
    fn results_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample();
        let path = r.write(&dir.path().join("nested")).unwrap();
        assert!(path.ends_with("results.json"));
        assert_eq!(Results::read(&path).unwrap(), r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"cpu_model\": \"Test CPU\""), "{text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        std::fs::write(&path, "{\"date\": 1").unwrap();
        assert!(Results::read(&path).is_err());
        assert!(Results::read(&dir.path().join("absent.json")).is_err());
    }

    #[test]
    fn machine_and_date_look_right() {
        let m = Machine::detect();
        assert!(m.nproc >= 1);
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T');
    }
}
