//! `mesh-chaos`: chaos runs of real `mesh` nodes in network namespaces (issue 8).
//!
//! ```text
//! mesh-chaos run --seed 7                         # every fault kind once (CI's run)
//! mesh-chaos run --seed 7 --duration-s 900 --rate 1000 --mesh-bin target/release/mesh
//! mesh-chaos proxy --listen 127.0.0.1:7101 --upstream 127.0.0.1:7001 --delay-ms 200
//! mesh-chaos clean                                # namespaces of runs that were SIGKILLed
//! ```
//!
//! Needs root (namespaces, veth, nftables). Exit status: 0 when the checker passed, 1 when it
//! found a lost or duplicated message or the run failed, 130 when interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_chaos::node::NodeSettings;
use mesh_chaos::proxy::DelayProxy;
use mesh_chaos::run::{self, RunConfig};
use mesh_chaos::schedule::{PlanShape, Timing};

#[derive(Debug, Parser)]
#[command(
    name = "mesh-chaos",
    version,
    about = "chaos runs of real mesh nodes in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the nodes, inject a seeded schedule of faults under traffic, check exactly-once.
    Run(RunArgs),
    /// A TCP relay adding a fixed delay to each direction (the slow-peer fault, standalone).
    Proxy {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Address to relay to.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// One-way delay in milliseconds.
        #[arg(long, default_value_t = 200)]
        delay_ms: u64,
    },
    /// Remove the namespaces (and kill the processes in them) of runs whose process is gone.
    Clean,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Seed of the fault schedule (random when absent; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes (5 or more), split in two domains.
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Fill this many seconds with random faults (a long run); without it every fault kind
    /// runs once (CI's reduced run).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Messages per second from the producer.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// The `mesh` binary (default: `mesh` next to this program).
    #[arg(long)]
    mesh_bin: Option<PathBuf>,
    /// `MESH_LOG` of the nodes.
    #[arg(long, default_value = "warn")]
    node_log: String,
    /// The nodes' keepalive interval (a peer is dead after three silent intervals).
    #[arg(long, default_value_t = 300)]
    keepalive_ms: u64,
    /// Seconds to wait, after the producer stops, for every persisted message.
    #[arg(long, default_value_t = 120)]
    drain_s: u64,
    /// Keep logs and data even when the run passes.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_command(&args),
        Command::Proxy {
            listen,
            upstream,
            delay_ms,
        } => match DelayProxy::start(listen, upstream) {
            Ok(proxy) => {
                proxy.set_delay(Duration::from_millis(delay_ms));
                println!(
                    "relaying {} -> {upstream} with {delay_ms} ms each way",
                    proxy.local_addr()
                );
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                eprintln!("mesh-chaos proxy: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Clean => {
            let removed = mesh_chaos::netns::clean_stale();
            println!(
                "removed {} namespaces: {}",
                removed.len(),
                removed.join(", ")
            );
            ExitCode::SUCCESS
        }
    }
}

fn run_command(args: &RunArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)] // any 64 bits will do
        let seed = (nanos as u64) ^ u64::from(std::process::id());
        seed % 1_000_000
    });
    let mesh_bin = args.mesh_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("mesh")))
            .unwrap_or_else(|| PathBuf::from("mesh"))
    });
    if !mesh_bin.exists() {
        eprintln!(
            "mesh-chaos: no mesh binary at {} (cargo build -p mesh-node --bin mesh, or --mesh-bin)",
            mesh_bin.display()
        );
        return ExitCode::FAILURE;
    }
    let (shape, timing) = match args.duration_s {
        Some(s) => (PlanShape::Fill(Duration::from_secs(s)), Timing::LONG),
        None => (PlanShape::EveryKindOnce, Timing::REDUCED),
    };
    let mut reproduce = format!(
        "mesh-chaos run --seed {seed} --nodes {} --rate {} --mesh-bin {}",
        args.nodes,
        args.rate,
        mesh_bin.display()
    );
    if let Some(s) = args.duration_s {
        reproduce = format!("{reproduce} --duration-s {s}");
    }
    let cfg = RunConfig {
        seed,
        nodes: args.nodes,
        shape,
        timing,
        rate: args.rate,
        node: NodeSettings {
            mesh_bin,
            keepalive_ms: args.keepalive_ms,
            log_filter: args.node_log.clone(),
        },
        drain_deadline: Duration::from_secs(args.drain_s),
        keep: args.keep,
        reproduce,
    };
    if let Err(e) = run::install_signal_handlers() {
        eprintln!("mesh-chaos: {e:#}");
        return ExitCode::FAILURE;
    }
    match run::run(&cfg) {
        Ok(o) if o.verdict.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mesh-chaos: {e:#}");
            if e.to_string().starts_with("interrupted") {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
