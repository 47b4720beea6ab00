//! The soak run (issue 8): a mesh pair at 80% of its measured maximum rate for a long time,
//! each node's RSS and open file descriptors sampled every few seconds; memory must stay flat
//! after the warm-up and no message may be lost (`bench/results/soak.json`, `soak.svg`).
//!
//! The nodes run as users run them by default — exactly-once delivery over the file WAL at
//! `--durability batch` — or with other delivery, storage and durability settings. The maximum
//! is measured first with [`crate::run::throughput`]; the soak itself is
//! [`crate::run::latency`] at 80% of it (the open-loop [`crate::rate::Pacer`]), so the run
//! also yields the latency over its whole length.
//!
//! "Flat" is judged on anonymous memory (RssAnon: heap, queues, buffers), not on VmRSS, which
//! also counts the WAL's mapped segment files as they fill (bounded by the segment count, and
//! reported), and on medians, not single samples: the median of the last quarter of the
//! samples after the warm-up against that of the first quarter, within
//! [`SoakOptions::rss_tolerance_kib`] (or [`RSS_TOLERANCE_FRACTION`] of the warm level, the
//! larger); open descriptors within [`FDS_TOLERANCE`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::hist::LatencySummary;
use crate::hostile::{open_fds, rss_anon_kib, rss_kib};
use crate::payload::Clock;
use crate::procs::{MeshOptions, Shape};
use crate::run::{LatencySpec, ThroughputSpec, latency, throughput};
use crate::systems::{Consumer, MeshSystem, ProducerOpener, System, Via};

/// Growth of the median RSS allowed after the warm-up, as a fraction of the warm level.
pub const RSS_TOLERANCE_FRACTION: f64 = 0.10;
/// Growth of open file descriptors allowed after the warm-up.
pub const FDS_TOLERANCE: u64 = 8;

/// How the nodes keep and deliver messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// `exactly-once` (the default) or `raw`.
    pub delivery: String,
    /// `file` (the default) or `memory` (exactly-once only; raw always uses memory).
    pub storage: String,
    /// `batch` (the default), `always` or `none` (exactly-once only).
    pub durability: String,
    /// More flags for every node (`--wal-segment-mib 4 --wal-segments 8`: a small WAL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_args: Vec<String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            delivery: "exactly-once".into(),
            storage: "file".into(),
            durability: "batch".into(),
            node_args: Vec::new(),
        }
    }
}

impl NodeSettings {
    /// The cluster options that start nodes so.
    ///
    /// # Errors
    /// An unknown delivery or storage.
    pub fn mesh_options(&self) -> Result<MeshOptions> {
        let mut opts = self.own_options()?;
        opts.extra_args.extend(self.node_args.iter().cloned());
        Ok(opts)
    }

    fn own_options(&self) -> Result<MeshOptions> {
        match (self.delivery.as_str(), self.storage.as_str()) {
            ("raw", _) => Ok(MeshOptions::default()),
            ("exactly-once", "file") => Ok(MeshOptions {
                durability: Some(self.durability.clone()),
                ..MeshOptions::default()
            }),
            ("exactly-once", "memory") => Ok(MeshOptions {
                durability: Some(self.durability.clone()),
                extra_args: vec!["--storage".into(), "memory".into()],
                ..MeshOptions::default()
            }),
            (d, s) => Err(anyhow!(
                "delivery {d:?} with storage {s:?}: use exactly-once or raw, file or memory"
            )),
        }
    }
}

/// A soak run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `mesh` binary.
    pub mesh_bin: PathBuf,
    /// How the nodes run.
    pub nodes: NodeSettings,
    /// Bytes per message.
    pub payload_len: usize,
    /// How long the maximum rate is measured.
    pub probe: Duration,
    /// The soak's rate as a fraction of the measured maximum.
    pub rate_fraction: f64,
    /// How long the soak runs.
    pub duration: Duration,
    /// The first part of the run, not judged (buffers, pools and the WAL fill up).
    pub warmup: Duration,
    /// How often each node is sampled.
    pub sample_every: Duration,
    /// Growth of the median RSS allowed after the warm-up, at least (KiB).
    pub rss_tolerance_kib: u64,
}

/// One sample of one node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Node id.
    pub node: u64,
    /// VmRSS (KiB).
    pub rss_kib: u64,
    /// RssAnon (KiB): VmRSS without mapped files.
    #[serde(default)]
    pub rss_anon_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// One node's figures over the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSoak {
    /// Node id.
    pub node: u64,
    /// First sample (KiB).
    pub rss_start_kib: u64,
    /// Median of the first quarter of the samples after the warm-up (KiB).
    pub rss_warm_kib: u64,
    /// Median of the last quarter of the samples (KiB).
    pub rss_end_kib: u64,
    /// Last sample (KiB).
    pub rss_last_kib: u64,
    /// Highest sample (KiB).
    pub rss_max_kib: u64,
    /// RssAnon: median of the first quarter after the warm-up (KiB).
    pub anon_warm_kib: u64,
    /// RssAnon: median of the last quarter (KiB).
    pub anon_end_kib: u64,
    /// Open descriptors at the first sample.
    pub fds_start: u64,
    /// Open descriptors after the warm-up (median of the first quarter).
    pub fds_warm: u64,
    /// Open descriptors at the end (median of the last quarter).
    pub fds_end: u64,
    /// Growth of RssAnon allowed (KiB).
    pub rss_tolerance_kib: u64,
}

impl NodeSoak {
    /// Why this node fails the run, if it does.
    pub fn failure(&self) -> Option<String> {
        let grew = self.anon_end_kib.saturating_sub(self.anon_warm_kib);
        if grew > self.rss_tolerance_kib {
            return Some(format!(
                "node {}: anonymous memory grew {grew} KiB after the warm-up ({} -> {} KiB), the tolerance is {} KiB",
                self.node, self.anon_warm_kib, self.anon_end_kib, self.rss_tolerance_kib
            ));
        }
        if self.fds_end > self.fds_warm + FDS_TOLERANCE {
            return Some(format!(
                "node {}: open files went from {} to {} after the warm-up",
                self.node, self.fds_warm, self.fds_end
            ));
        }
        None
    }
}

/// What a soak run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// How the nodes ran.
    pub nodes_settings: NodeSettings,
    /// Bytes per message.
    pub payload_len: usize,
    /// Maximum measured first (msgs/s).
    pub max_msgs_per_s: f64,
    /// The soak's rate (msgs/s).
    pub rate_per_s: u64,
    /// Seconds of the soak (after the warm-up).
    pub duration_secs: f64,
    /// Seconds of warm-up.
    pub warmup_secs: f64,
    /// Messages sent after the warm-up.
    pub sent: u64,
    /// Of those, received.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Most messages the producer was ever behind its schedule.
    pub producer_behind_max: u64,
    /// Send-to-receive latency after the warm-up.
    pub latency: LatencySummary,
    /// Each node's figures.
    pub nodes: Vec<NodeSoak>,
    /// Every sample, in time order.
    pub samples: Vec<Sample>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl SoakReport {
    /// Whether memory and descriptors stayed flat and nothing was lost.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Summarises node `node`'s samples: warm level from the first quarter after `warmup_s`, end
/// level from the last quarter.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn summarise(node: u64, samples: &[Sample], warmup_s: f64, tolerance_kib: u64) -> NodeSoak {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.node == node).collect();
    let after: Vec<&Sample> = mine.iter().copied().filter(|s| s.t_s >= warmup_s).collect();
    let judged = if after.is_empty() { &mine } else { &after };
    let quarter = judged.len().div_ceil(4).max(1);
    let head = &judged[..quarter.min(judged.len())];
    let tail = &judged[judged.len().saturating_sub(quarter)..];
    let rss_warm = median(head.iter().map(|s| s.rss_kib).collect());
    let anon_warm = median(head.iter().map(|s| s.rss_anon_kib).collect());
    let tolerance = tolerance_kib.max((anon_warm as f64 * RSS_TOLERANCE_FRACTION) as u64);
    NodeSoak {
        node,
        rss_start_kib: mine.first().map_or(0, |s| s.rss_kib),
        rss_warm_kib: rss_warm,
        rss_end_kib: median(tail.iter().map(|s| s.rss_kib).collect()),
        rss_last_kib: mine.last().map_or(0, |s| s.rss_kib),
        rss_max_kib: mine.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        anon_warm_kib: anon_warm,
        anon_end_kib: median(tail.iter().map(|s| s.rss_anon_kib).collect()),
        fds_start: mine.first().map_or(0, |s| s.fds),
        fds_warm: median(head.iter().map(|s| s.fds).collect()),
        fds_end: median(tail.iter().map(|s| s.fds).collect()),
        rss_tolerance_kib: tolerance,
    }
}

/// The mesh pair with a consumer that acks every delivery, as an application must under
/// exactly-once delivery: the destination holds each message until it is acked (at most 64 Ki
/// per core), so a consumer that never acks stalls the flow once that many arrived.
pub struct Acking<'a> {
    /// The nodes, and the producer.
    pub inner: &'a mut MeshSystem,
}

impl System for Acking<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        let addr = *self.inner.cluster().listen.last().context("no nodes")?;
        let client = mesh_client::Client::connect(
            addr,
            mesh_client::ClientOptions {
                subscribe: true,
                ..mesh_client::ClientOptions::default()
            },
        )
        .context("mesh subscriber attaches")?;
        Ok(Box::new(AckingConsumer { client }))
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        self.inner.producer()
    }

    fn dropped(&self) -> Option<u64> {
        self.inner.dropped()
    }
}

struct AckingConsumer {
    client: mesh_client::Client,
}

impl Consumer for AckingConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut n = 0;
        let mut wait = Some(timeout);
        // The first waits up to `timeout`, then whatever that read brought in.
        while let Some(d) = self.client.recv(wait)? {
            self.client.ack(d.src_node, d.msg_id, true)?;
            on_msg(&d.payload);
            n += 1;
            wait = Some(Duration::ZERO);
        }
        if n > 0 {
            self.client.flush()?;
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.client.close()?)
    }
}

/// Starts a mesh pair, measures its maximum, soaks it at the chosen fraction while sampling;
/// `progress` hears about each phase and sees the samples (for a progress bar).
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn run(
    opts: &SoakOptions,
    progress: &mut (dyn FnMut(SoakProgress<'_>) + Send),
) -> Result<SoakReport> {
    let mesh_opts = opts.nodes.mesh_options()?;
    let mut sys = MeshSystem::start_with(&opts.mesh_bin, Shape::Pair, Via::Native, mesh_opts)
        .context("starting the mesh pair")?;
    let pids = sys.cluster().pids();
    let clock = Clock::new();
    progress(SoakProgress::Phase("measuring the maximum rate"));
    let mut sys = Acking { inner: &mut sys };
    let max = throughput(
        &mut sys,
        &ThroughputSpec {
            payload_len: opts.payload_len,
            duration: opts.probe,
            max_msgs: None,
            idle_timeout: Duration::from_secs(5),
        },
        1,
        clock,
    )?;
    let rate = ((max.msgs_per_s * opts.rate_fraction) as u64).max(1);
    progress(SoakProgress::Phase(&format!(
        "maximum {:.0} msgs/s; soaking at {rate} msgs/s ({:.0}%) for {:?}",
        max.msgs_per_s,
        opts.rate_fraction * 100.0,
        opts.warmup + opts.duration
    )));
    let spec = LatencySpec {
        payload_len: opts.payload_len,
        rate_per_s: rate,
        warmup: opts.warmup,
        duration: opts.duration,
        idle_timeout: Duration::from_secs(10),
    };
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (lat, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t_s = t0.elapsed().as_secs_f64();
                let now: Vec<Sample> = pids
                    .iter()
                    .zip(1u64..)
                    .map(|(p, node)| Sample {
                        t_s,
                        node,
                        rss_kib: rss_kib(*p),
                        rss_anon_kib: rss_anon_kib(*p),
                        fds: open_fds(*p),
                    })
                    .collect();
                progress(SoakProgress::Sample(&now));
                samples.extend(now);
                // Sleep in small steps so the end is not delayed by a whole interval.
                let next = t0.elapsed() + opts.sample_every;
                while t0.elapsed() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            samples
        });
        let lat = latency(&mut sys, &spec, 2, clock);
        stop.store(true, Ordering::Relaxed);
        (lat, sampler.join().unwrap_or_default())
    });
    let lat = lat?;
    let warmup_s = opts.warmup.as_secs_f64();
    let nodes: Vec<NodeSoak> = (1..=pids.len() as u64)
        .map(|n| summarise(n, &samples, warmup_s, opts.rss_tolerance_kib))
        .collect();
    let mut failures: Vec<String> = nodes.iter().filter_map(NodeSoak::failure).collect();
    if lat.lost > 0 && opts.nodes.delivery == "exactly-once" {
        failures.push(format!(
            "{} of {} messages lost with exactly-once delivery",
            lat.lost, lat.sent
        ));
    }
    if samples.is_empty() {
        failures.push("no samples taken".into());
    }
    Ok(SoakReport {
        nodes_settings: opts.nodes.clone(),
        payload_len: opts.payload_len,
        max_msgs_per_s: max.msgs_per_s,
        rate_per_s: rate,
        duration_secs: opts.duration.as_secs_f64(),
        warmup_secs: warmup_s,
        sent: lat.sent,
        received: lat.received,
        lost: lat.lost,
        producer_behind_max: lat.producer_behind_max,
        latency: lat.latency,
        nodes,
        samples,
        failures,
    })
}

/// What a soak run reports while it runs.
#[derive(Debug)]
pub enum SoakProgress<'a> {
    /// A phase starts.
    Phase(&'a str),
    /// One sample of every node.
    Sample(&'a [Sample]),
}

/// Writes `report` as pretty JSON to `path` (creating its directory).
pub fn write_json(report: &SoakReport, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

const NODE_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Writes `soak.svg`: RSS (MiB) and open descriptors of each node over time, the warm-up
/// shaded.
#[allow(clippy::cast_precision_loss)] // KiB and counts as f64 axis values
pub fn write_svg(report: &SoakReport, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let t_max = report.samples.iter().map(|s| s.t_s).fold(1.0f64, f64::max);
    let node_ids: Vec<u64> = report.nodes.iter().map(|n| n.node).collect();
    let rss_mib: fn(&Sample) -> f64 = |s| s.rss_anon_kib as f64 / 1024.0;
    let fds: fn(&Sample) -> f64 = |s| s.fds as f64;
    let panels = [
        (&left, "Anonymous memory (RssAnon)", "MiB", rss_mib),
        (&right, "Open file descriptors", "fds", fds),
    ];
    for (area, title, unit, value) in panels {
        let y_max = report.samples.iter().map(value).fold(1.0f64, f64::max) * 1.15;
        let mut ch = ChartBuilder::on(area)
            .caption(
                format!(
                    "{title}: {} msgs/s of {} B, {}",
                    report.rate_per_s, report.payload_len, report.nodes_settings.delivery
                ),
                ("sans-serif", 16),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(plot_err)?;
        ch.configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .draw()
            .map_err(plot_err)?;
        ch.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (report.warmup_secs.min(t_max), y_max)],
            RGBColor(235, 235, 235).filled(),
        )))
        .map_err(plot_err)?
        .label("warm-up")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 15, y + 5)],
                RGBColor(235, 235, 235).filled(),
            )
        });
        for (i, node) in node_ids.iter().enumerate() {
            let c = NODE_COLOURS[i % NODE_COLOURS.len()];
            ch.draw_series(LineSeries::new(
                report
                    .samples
                    .iter()
                    .filter(|s| s.node == *node)
                    .map(|s| (s.t_s, value(s))),
                c.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(format!("node {node}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
        }
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64]) -> Vec<Sample> {
        rss.iter()
            .zip(0u32..)
            .map(|(r, i)| Sample {
                t_s: f64::from(i),
                node: 1,
                rss_kib: *r + 1_000_000,
                rss_anon_kib: *r,
                fds: 20,
            })
            .collect()
    }

    #[test]
    fn flat_memory_passes_and_growth_fails() {
        // Warm-up (t < 2) climbs; then flat with a spike: passes.
        let flat = samples(&[
            10_000, 50_000, 80_000, 81_000, 200_000, 80_500, 81_000, 80_800,
        ]);
        let n = summarise(1, &flat, 2.0, 16 << 10);
        assert_eq!(n.rss_start_kib, 1_010_000);
        assert_eq!(n.rss_max_kib, 1_200_000);
        assert!(n.failure().is_none(), "{n:?}");
        // Steady growth after the warm-up: fails.
        let leak = samples(&[
            80_000, 80_000, 80_000, 100_000, 120_000, 140_000, 160_000, 180_000,
        ]);
        let n = summarise(1, &leak, 2.0, 16 << 10);
        assert!(
            n.failure().is_some_and(|f| f.contains("memory grew")),
            "{n:?}"
        );
    }

    #[test]
    fn settings_map_to_node_flags() {
        let d = NodeSettings::default().mesh_options().unwrap();
        assert_eq!(d.durability.as_deref(), Some("batch"));
        assert!(d.extra_args.is_empty());
        let m = NodeSettings {
            storage: "memory".into(),
            ..NodeSettings::default()
        };
        assert_eq!(
            m.mesh_options().unwrap().extra_args,
            ["--storage", "memory"]
        );
        let raw = NodeSettings {
            delivery: "raw".into(),
            ..NodeSettings::default()
        };
        assert_eq!(raw.mesh_options().unwrap().durability, None);
        let bad = NodeSettings {
            storage: "tape".into(),
            ..NodeSettings::default()
        };
        assert!(bad.mesh_options().is_err());
        let small = NodeSettings {
            storage: "memory".into(),
            node_args: vec!["--wal-segments".into(), "8".into()],
            ..NodeSettings::default()
        };
        assert_eq!(
            small.mesh_options().unwrap().extra_args,
            ["--storage", "memory", "--wal-segments", "8"]
        );
    }
}
