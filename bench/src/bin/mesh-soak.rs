//! `mesh-soak`: a mesh pair at 80% of its measured maximum rate for a long time, each node's
//! RSS and open file descriptors sampled (issue 8). Prints start and end RSS and descriptors,
//! writes `bench/results/soak.json` and `soak.svg`, and exits non-zero when memory or
//! descriptors grew beyond the tolerance after the warm-up or a message was lost. See
//! `mesh_bench::soak`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mesh_bench::soak::{self, NodeSettings, SoakOptions, SoakProgress};

/// Soak a mesh pair at a fraction of its maximum rate; memory must stay flat.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The `mesh` binary (build it with `cargo build --release -p mesh-node --bin mesh`).
    #[arg(long)]
    mesh_bin: Option<PathBuf>,
    /// Seconds of the soak after the warm-up.
    #[arg(long, default_value_t = 600.0)]
    duration_secs: f64,
    /// Seconds of warm-up (default: a fifth of the duration, at most 60).
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Seconds the maximum rate is measured for.
    #[arg(long, default_value_t = 5.0)]
    probe_secs: f64,
    /// The soak's rate as a fraction of the maximum.
    #[arg(long, default_value_t = 0.8)]
    rate_fraction: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Seconds between samples of each node.
    #[arg(long, default_value_t = 2.0)]
    sample_secs: f64,
    /// `exactly-once` or `raw`.
    #[arg(long, default_value = "exactly-once")]
    delivery: String,
    /// `file` or `memory` (exactly-once only).
    #[arg(long, default_value = "file")]
    storage: String,
    /// `batch`, `always` or `none` (exactly-once only).
    #[arg(long, default_value = "batch")]
    durability: String,
    /// More flags for every node, as one string (`--node-args "--wal-segment-mib 32
    /// --wal-segments 8"`).
    #[arg(long = "node-args", allow_hyphen_values = true)]
    more_node_flags: Option<String>,
    /// Growth of anonymous memory (RssAnon) allowed after the warm-up, at least (MiB; 10% of
    /// the warm level if larger).
    #[arg(long, default_value_t = 16)]
    rss_tolerance_mib: u64,
    /// Where the JSON goes (the SVG beside it, as `soak.svg`).
    #[arg(long, default_value = "bench/results/soak.json")]
    json: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs_f64(args.duration_secs.max(1.0));
    let warmup = Duration::from_secs_f64(
        args.warmup_secs
            .unwrap_or_else(|| (args.duration_secs / 5.0).min(60.0))
            .max(0.0),
    );
    let opts = SoakOptions {
        mesh_bin: args
            .mesh_bin
            .unwrap_or_else(mesh_bench::procs::default_mesh_bin),
        nodes: NodeSettings {
            delivery: args.delivery,
            storage: args.storage,
            durability: args.durability,
            node_args: args
                .more_node_flags
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
        },
        payload_len: args.payload,
        probe: Duration::from_secs_f64(args.probe_secs.max(0.5)),
        rate_fraction: args.rate_fraction,
        duration,
        warmup,
        sample_every: Duration::from_secs_f64(args.sample_secs.max(0.1)),
        rss_tolerance_kib: args.rss_tolerance_mib << 10,
    };
    let bar = ProgressBar::new((warmup + duration).as_secs());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    let mut soaking = None;
    let report = soak::run(&opts, &mut |p| match p {
        SoakProgress::Phase(s) => bar.suspend(|| eprintln!("{s}")),
        SoakProgress::Sample(samples) => {
            let start = *soaking.get_or_insert_with(std::time::Instant::now);
            bar.set_position(start.elapsed().as_secs());
            let msg: Vec<String> = samples
                .iter()
                .map(|s| format!("node {}: {} MiB, {} fds", s.node, s.rss_kib >> 10, s.fds))
                .collect();
            bar.set_message(msg.join(" | "));
        }
    })?;
    bar.finish_and_clear();
    soak::write_json(&report, &args.json)?;
    let svg = args.json.with_file_name("soak.svg");
    soak::write_svg(&report, &svg)?;
    println!(
        "soak ({}, {}, {}): max {:.0} msgs/s, soaked at {} msgs/s of {} B for {:.0} s after {:.0} s warm-up ({:.0} s in all)",
        report.nodes_settings.delivery,
        report.nodes_settings.storage,
        report.nodes_settings.durability,
        report.max_msgs_per_s,
        report.rate_per_s,
        report.payload_len,
        report.duration_secs,
        report.warmup_secs,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "messages: {} sent, {} received, {} lost; latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; producer at most {} behind",
        report.sent,
        report.received,
        report.lost,
        report.latency.p50_us,
        report.latency.p99_us,
        report.latency.max_us,
        report.producer_behind_max
    );
    for n in &report.nodes {
        println!(
            "node {}: RSS start {} MiB, after warm-up {} MiB, end {} MiB (max {} MiB); anonymous after warm-up {} MiB, end {} MiB (tolerance +{} MiB); fds start {}, after warm-up {}, end {}",
            n.node,
            n.rss_start_kib >> 10,
            n.rss_warm_kib >> 10,
            n.rss_end_kib >> 10,
            n.rss_max_kib >> 10,
            n.anon_warm_kib >> 10,
            n.anon_end_kib >> 10,
            n.rss_tolerance_kib >> 10,
            n.fds_start,
            n.fds_warm,
            n.fds_end
        );
    }
    println!("wrote {} and {}", args.json.display(), svg.display());
    if !report.passed() {
        bail!("soak failed: {}", report.failures.join("; "));
    }
    Ok(())
}
