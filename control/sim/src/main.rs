//! `mesh-sim`: runs the control-plane simulation and prints, writes and plots its figures.
//!
//! ```text
//! mesh-sim --domains 1000 --nodes-per-domain 1000 --seed 1 --json out.json --plot out.svg
//! ```
//!
//! Exits with status 1 when a check fails, 2 on bad arguments or output errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use mesh_sim::engine::SpfThrottle;
use mesh_sim::topology::TopologyConfig;
use mesh_sim::{Mode, SimConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Live up to 20,000 nodes, hierarchical above.
    Auto,
    /// Every router live at once (memory grows as nodes x domain size).
    Live,
    /// Domain level first, then every domain in full, one at a time.
    Hierarchical,
}

/// Deterministic simulation of the mesh control plane (mesh-routing state machines, no
/// sockets): builds a mesh of domains, floods to convergence, fails links and nodes, and
/// reports table sizes, memory, route computation time and transmissions per change.
#[derive(Debug, Parser)]
#[command(name = "mesh-sim", version)]
struct Args {
    /// Number of domains.
    #[arg(long, default_value_t = 20)]
    domains: u32,
    /// Average nodes per domain.
    #[arg(long, default_value_t = 50)]
    nodes_per_domain: u32,
    /// Seed of every random choice: the same seed gives the same figures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Domain sizes vary by up to this fraction around the average (0..=0.9); the total stays
    /// domains x nodes-per-domain.
    #[arg(long, default_value_t = 0.0)]
    size_spread: f64,
    /// Random chords per node inside a domain (mean degree 2 + 2 x this).
    #[arg(long, default_value_t = 2.0)]
    chords_per_node: f64,
    /// Border candidates per domain.
    #[arg(long, default_value_t = 4)]
    borders_per_domain: u32,
    /// Inter-domain links per domain beyond the ring of domains.
    #[arg(long, default_value_t = 1.0)]
    extra_inter_links: f64,
    /// How to simulate.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Sampled domains (default: all): in the hierarchical mode each boots cold and replays
    /// the join and the inter-domain link failure; the others start warm.
    #[arg(long)]
    sample_domains: Option<u32>,
    /// Domains that lose a link and a node (default: all); sampled domains always do.
    #[arg(long)]
    failure_domains: Option<u32>,
    /// Worker threads for the domain runs (results do not depend on it).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// SPF throttle: delay after the first change, in milliseconds.
    #[arg(long, default_value_t = 50)]
    spf_initial_ms: u64,
    /// SPF throttle: first hold between computations (doubles while changes keep coming).
    #[arg(long, default_value_t = 200)]
    spf_hold_ms: u64,
    /// SPF throttle: largest hold.
    #[arg(long, default_value_t = 2000)]
    spf_max_ms: u64,
    /// Keep every route table and walk packets through them (live mode only).
    #[arg(long)]
    walk: bool,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write the printed summary here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut topology = TopologyConfig::new(a.domains, a.nodes_per_domain);
    topology.size_spread = a.size_spread;
    topology.chords_per_node = a.chords_per_node;
    topology.borders_per_domain = a.borders_per_domain;
    topology.extra_inter_per_domain = a.extra_inter_links;
    let nodes = u64::from(a.domains) * u64::from(a.nodes_per_domain);
    let mode = match a.mode {
        ModeArg::Live => Mode::Live,
        ModeArg::Auto if nodes <= 20_000 => Mode::Live,
        ModeArg::Hierarchical | ModeArg::Auto => Mode::Hierarchical,
    };
    let cfg = SimConfig {
        topology,
        seed: a.seed,
        mode,
        throttle: SpfThrottle {
            initial_us: a.spf_initial_ms * 1000,
            hold_us: a.spf_hold_ms * 1000,
            max_us: a.spf_max_ms * 1000,
        },
        sample_domains: a.sample_domains,
        failure_domains: a.failure_domains,
        threads: a.threads,
        walk_packets: a.walk && mode == Mode::Live,
        progress: !a.quiet,
    };
    let report = match mesh_sim::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let text = report.text();
    print!("{text}");
    if let Some(path) = &a.summary
        && let Err(e) = std::fs::write(path, &text)
    {
        eprintln!("mesh-sim: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Some(path) = &a.json
        && let Err(e) = std::fs::write(path, report.json().render())
    {
        eprintln!("mesh-sim: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Some(path) = &a.plot
        && let Err(e) = mesh_sim::plot::write_svg(&report, path)
    {
        eprintln!("mesh-sim: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("mesh-sim: a check failed");
        ExitCode::from(1)
    }
}
