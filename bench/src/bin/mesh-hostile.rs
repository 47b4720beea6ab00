//! `mesh-hostile`: legitimate throughput of a mesh pair with and without hostile peers
//! attacking both nodes (issue 8), side by side in one run. Prints the ratio and the nodes'
//! memory, writes `bench/results/hostile.json`, and exits non-zero when the throughput under
//! attack is not above 80% of the baseline. See `mesh_bench::hostile`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use mesh_bench::hostile::{self, AttackConfig, HostileOptions};

/// Throughput of legitimate traffic while hostile peers attack the nodes it crosses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The `mesh` binary (build it with `cargo build --release -p mesh-node --bin mesh`).
    #[arg(long)]
    mesh_bin: Option<PathBuf>,
    /// Baseline / attack round pairs (alternated to even out noise).
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Seconds of sending per round.
    #[arg(long, default_value_t = 5.0)]
    round_secs: f64,
    /// Half-open connections held against each node.
    #[arg(long, default_value_t = 1_000)]
    half_open: usize,
    /// Milliseconds between two operations of each other attack thread.
    #[arg(long, default_value_t = 2)]
    pace_ms: u64,
    /// Exactly-once delivery with the WAL at this durability (`none`, `batch`, `always`);
    /// default: forwarding only (raw delivery, memory storage).
    #[arg(long)]
    durability: Option<String>,
    /// Where the JSON goes.
    #[arg(long, default_value = "bench/results/hostile.json")]
    json: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let opts = HostileOptions {
        mesh_bin: args
            .mesh_bin
            .unwrap_or_else(mesh_bench::procs::default_mesh_bin),
        rounds: args.rounds.max(1),
        round: Duration::from_secs_f64(args.round_secs.max(0.5)),
        attack: AttackConfig {
            half_open: args.half_open,
            pace: Duration::from_millis(args.pace_ms),
        },
        durability: args.durability,
    };
    let report = hostile::run(&opts, &mut |line| eprintln!("{line}"))?;
    hostile::write_json(&report, &args.json)?;
    println!(
        "legitimate throughput ({} B, {}): {:.0} msgs/s under attack vs {:.0} baseline: ratio {:.3} (must be > {})",
        report.payload_len,
        report.delivery,
        report.attacked.iter().map(|r| r.msgs_per_s).sum::<f64>() / f64::from(opts.rounds),
        report.baseline.iter().map(|r| r.msgs_per_s).sum::<f64>() / f64::from(opts.rounds),
        report.ratio,
        report.ratio_min
    );
    let c = &report.attack_counts;
    println!(
        "attacks: {} half-open connections ({} closed by the node), {} oversize frames, {} forged HELLOs, {} replayed frames, {} flooded HELLOs",
        c.half_open_opened,
        c.half_open_closed,
        c.oversize_sent,
        c.forged_sent,
        c.replays_sent,
        c.hellos_sent
    );
    for m in &report.memory {
        println!(
            "node {}: RSS {} MiB before, {} MiB at most during attacks, {} MiB after; {} open fds after",
            m.node,
            m.rss_before_kib / 1024,
            m.rss_during_max_kib / 1024,
            m.rss_after_kib / 1024,
            m.fds_after
        );
    }
    println!("wrote {}", args.json.display());
    if !report.passed() {
        bail!(
            "throughput under attack is {:.1}% of the baseline, the bound is {:.0}%",
            report.ratio * 100.0,
            report.ratio_min * 100.0
        );
    }
    Ok(())
}
