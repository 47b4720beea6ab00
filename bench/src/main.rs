//! `mesh-bench`: mesh against a NATS cluster and plain TCP on loopback, throughput and latency.
//!
//! `mesh-bench --quick` (about two minutes) or `mesh-bench` / `mesh-bench --full`; see
//! bench/README.md. Needs a release `mesh` binary (`--mesh-bin`, default
//! `target/release/mesh`) and, for the NATS comparison, `nats-server` on PATH.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use mesh_bench::payload::Clock;
use mesh_bench::procs::find_nats_server;
use mesh_bench::report::{size_label, summary};
use mesh_bench::results::{Machine, Results, RunConfig, utc_now};
use mesh_bench::run::{LatencySpec, ThroughputSpec, latency, throughput};
use mesh_bench::systems::{
    AttachedSystem, MeshSystem, NatsSystem, System, TcpSystem, Via, parse_mesh,
};

/// Measures mesh end to end against a two-server NATS cluster and a loopback TCP stream.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Short run (about two minutes): 2 s throughput and 3 s latency per point.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Long run: 10 s per point, and 1 MiB payloads too.
    #[arg(long)]
    full: bool,
    /// The `mesh` binary (build it with `cargo build --release -p mesh-node --bin mesh`).
    #[arg(long)]
    mesh_bin: Option<PathBuf>,
    /// The `nats-server` binary (default: on PATH, else /usr/sbin/nats-server).
    #[arg(long)]
    nats_bin: Option<PathBuf>,
    /// Systems to measure, comma-separated: `mesh-<pair|line|ring>[+grpc][+none|+batch|+always][+tls]`
    /// (`+grpc`: through the gRPC API; a durability: exactly-once with the WAL, else forwarding
    /// only; `+tls`: TLS between the nodes), `nats`, `zenoh` (with the `zenoh` feature), `tcp`.
    /// Default: by mode (see bench/README.md).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Hops of the mesh-line shape (hops + 1 nodes).
    #[arg(long, default_value_t = 2)]
    hops: u32,
    /// Measure running nodes instead of starting them (system `mesh-attached`):
    /// `PRODUCER_ADDR,CONSUMER_ADDR,DST_NODE[,DST_DOMAIN]`, the client ports the producer and
    /// the consumer attach to and the consumer's node id (and domain, default 1). With
    /// `--attach-grpc` the addresses are gRPC ports.
    #[arg(long, value_delimiter = ',')]
    attach: Vec<String>,
    /// `--attach` addresses are gRPC ports: load through SendStream / Subscribe.
    #[arg(long, requires = "attach")]
    attach_grpc: bool,
    /// Nodes of the mesh-ring shape (two domains; the consumer's node is opposite the
    /// producer's).
    #[arg(long, default_value_t = 6)]
    ring_nodes: u32,
    /// More flags for every node the harness starts, space-separated (e.g.
    /// `--node-args "--wal-segment-mib 32 --wal-segments 8"`).
    #[arg(long = "node-args", allow_hyphen_values = true)]
    more_node_flags: Option<String>,
    /// The `zenoh-router` binary (default: beside mesh-bench, else target/release/).
    #[cfg(feature = "zenoh")]
    #[arg(long)]
    zenoh_router_bin: Option<PathBuf>,
    /// Payload sizes in bytes, comma-separated (default: 64,256,4096,65536; --full adds 1 MiB).
    #[arg(long, value_delimiter = ',')]
    payloads: Vec<usize>,
    /// Seconds of sending per throughput point (default by mode: 2 / 5 / 10).
    #[arg(long)]
    throughput_secs: Option<f64>,
    /// Seconds recorded per latency point (default by mode: 3 / 5 / 10).
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Messages per second of the latency runs.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Cap on the latency runs' payload bandwidth, MB/s (lowers the rate for large payloads).
    #[arg(long, default_value_t = 64.0)]
    latency_mb_per_s_max: f64,
    /// Where results.json and the SVGs go.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Latency rate for `len`-byte payloads: `rate`, lowered to keep under `mb_max` MB/s.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn latency_rate(rate: u64, mb_max: f64, len: usize) -> u64 {
    let cap = (mb_max * 1e6 / len as f64) as u64;
    rate.min(cap).max(100)
}

/// The `--attach` system: producer address, consumer address, destination node and domain.
fn attached(args: &Args) -> Result<AttachedSystem> {
    let [p, c, node, rest @ ..] = args.attach.as_slice() else {
        bail!("--attach PRODUCER_ADDR,CONSUMER_ADDR,DST_NODE[,DST_DOMAIN]");
    };
    let domain = match rest {
        [] => 1,
        [d] => d.parse().context("--attach: DST_DOMAIN")?,
        _ => bail!("--attach takes 3 or 4 values"),
    };
    let via = if args.attach_grpc {
        Via::Grpc
    } else {
        Via::Native
    };
    AttachedSystem::new(
        p.parse().context("--attach: PRODUCER_ADDR")?,
        c.parse().context("--attach: CONSUMER_ADDR")?,
        node.parse().context("--attach: DST_NODE")?,
        domain,
        via,
    )
}

fn start_system(name: &str, args: &Args, mesh_bin: &std::path::Path) -> Result<Box<dyn System>> {
    if name == "mesh-attached" {
        return Ok(Box::new(attached(args)?));
    }
    if name.starts_with("mesh-") {
        let (shape, via, mut opts) = parse_mesh(name, args.hops, args.ring_nodes)?;
        if let Some(more) = &args.more_node_flags {
            opts.extra_args
                .extend(more.split_whitespace().map(String::from));
        }
        return Ok(Box::new(MeshSystem::start_with(
            mesh_bin, shape, via, opts,
        )?));
    }
    Ok(match name {
        "nats" => {
            let bin = args.nats_bin.clone().or_else(find_nats_server).context(
                "nats-server not found (install it: scripts/setup.sh) or pass --nats-bin",
            )?;
            Box::new(NatsSystem::start(&bin)?)
        }
        "tcp" => Box::new(TcpSystem::start()?),
        #[cfg(feature = "zenoh")]
        "zenoh" => Box::new(mesh_bench::zenoh::ZenohSystem::start(
            &args
                .zenoh_router_bin
                .clone()
                .unwrap_or_else(default_zenoh_router_bin),
        )?),
        #[cfg(not(feature = "zenoh"))]
        "zenoh" => {
            bail!("zenoh: this mesh-bench was built without the `zenoh` feature (make bench-zenoh)")
        }
        other => bail!(
            "unknown system {other:?} (mesh-<pair|line|ring>[+grpc][+none|+batch|+always][+tls], nats, zenoh, tcp)"
        ),
    })
}

/// The systems a run measures unless `--systems` says: in `--quick`, mesh's forwarding path
/// through the native client and gRPC, a line, and the peers; otherwise also exactly-once at
/// durability `none` and `batch`, TLS, and the ring of two domains.
fn default_systems(quick: bool) -> Vec<String> {
    let mut s: Vec<&str> = vec!["mesh-pair", "mesh-grpc-pair", "mesh-line"];
    if !quick {
        s.extend([
            "mesh-pair+none",
            "mesh-pair+batch",
            "mesh-grpc-pair+batch",
            "mesh-pair+tls",
            "mesh-ring",
        ]);
    }
    s.push("nats");
    if cfg!(feature = "zenoh") {
        s.push("zenoh");
    }
    s.push("tcp");
    s.into_iter().map(String::from).collect()
}

#[cfg(feature = "zenoh")]
fn default_zenoh_router_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("zenoh-router")))
        .filter(|p| p.is_file())
        .unwrap_or_else(mesh_bench::zenoh::default_router_bin)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (mode, tput_secs, lat_secs) = if args.quick {
        ("quick", 2.0, 3.0)
    } else if args.full {
        ("full", 10.0, 10.0)
    } else {
        ("default", 5.0, 5.0)
    };
    let tput_secs = args.throughput_secs.unwrap_or(tput_secs);
    let lat_secs = args.latency_secs.unwrap_or(lat_secs);
    let payloads = if args.payloads.is_empty() {
        let mut p = vec![64, 256, 4 << 10, 64 << 10];
        if args.full {
            p.push(1 << 20);
        }
        p
    } else {
        args.payloads.clone()
    };
    let systems_wanted = if !args.attach.is_empty() && args.systems.is_empty() {
        vec!["mesh-attached".to_owned()]
    } else if args.systems.is_empty() {
        default_systems(args.quick)
    } else {
        args.systems.clone()
    };
    let mesh_bin = args
        .mesh_bin
        .clone()
        .unwrap_or_else(mesh_bench::procs::default_mesh_bin);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    let machine = Machine::detect();
    let date = utc_now();

    eprintln!("starting {} …", systems_wanted.join(", "));
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    let mut nats_version = None;
    for name in &systems_wanted {
        let sys =
            start_system(name, &args, &mesh_bin).with_context(|| format!("starting {name}"))?;
        if name == "nats" {
            nats_version = std::process::Command::new(
                args.nats_bin
                    .clone()
                    .or_else(find_nats_server)
                    .unwrap_or_default(),
            )
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        }
        systems.push(sys);
    }
    let names: Vec<String> = systems.iter().map(|s| s.name()).collect();

    let steps = (payloads.len() * systems.len() * 2) as u64;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let clock = Clock::new();
    let mut run_id = 0u32;
    let mut results = Results {
        date,
        machine,
        config: RunConfig {
            mode: mode.into(),
            systems: names,
            payloads: payloads.clone(),
            throughput_secs: tput_secs,
            latency_secs: lat_secs,
            latency_rate_per_s: args.rate,
            latency_mb_per_s_max: args.latency_mb_per_s_max,
            mesh_bin: mesh_bin.display().to_string(),
            nats_version,
        },
        throughput: Vec::new(),
        latency: Vec::new(),
        mesh_lost: 0,
        errors: Vec::new(),
    };
    // Payload by payload, every system in turn: a change in the machine's background load
    // hits the systems of one payload alike, which keeps the ratios honest.
    for &len in &payloads {
        for sys in &mut systems {
            run_id += 1;
            bar.set_message(format!("throughput {} {}", sys.name(), size_label(len)));
            let spec = ThroughputSpec {
                payload_len: len,
                duration: Duration::from_secs_f64(tput_secs),
                max_msgs: None,
                idle_timeout: Duration::from_secs(1),
            };
            match throughput(sys.as_mut(), &spec, run_id, clock) {
                Ok(r) => results.throughput.push(r),
                Err(e) => {
                    let msg = format!("throughput {} {}: {e:#}", sys.name(), size_label(len));
                    bar.println(&msg);
                    results.errors.push(msg);
                }
            }
            bar.inc(1);
        }
        for sys in &mut systems {
            run_id += 1;
            bar.set_message(format!("latency {} {}", sys.name(), size_label(len)));
            let spec = LatencySpec {
                payload_len: len,
                rate_per_s: latency_rate(args.rate, args.latency_mb_per_s_max, len),
                warmup: Duration::from_millis(300),
                duration: Duration::from_secs_f64(lat_secs),
                idle_timeout: Duration::from_secs(1),
            };
            match latency(sys.as_mut(), &spec, run_id, clock) {
                Ok(r) => results.latency.push(r),
                Err(e) => {
                    let msg = format!("latency {} {}: {e:#}", sys.name(), size_label(len));
                    bar.println(&msg);
                    results.errors.push(msg);
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    for sys in &systems {
        if let Some(d) = sys.dropped().filter(|d| *d > 0) {
            eprintln!(
                "{}: the nodes count {d} dropped messages (mesh_dropped_total)",
                sys.name()
            );
        }
    }
    drop(systems);

    results.mesh_lost = results
        .throughput
        .iter()
        .filter(|t| t.system.starts_with("mesh"))
        .map(|t| t.lost)
        .chain(
            results
                .latency
                .iter()
                .filter(|l| l.system.starts_with("mesh"))
                .map(|l| l.lost),
        )
        .sum();
    println!("{}", summary(&results));
    let json = results.write(&out)?;
    let svgs = mesh_bench::plot::write_svgs(&results, &out)?;
    println!("wrote {}", json.display());
    for s in svgs {
        println!("wrote {}", s.display());
    }
    if !results.errors.is_empty() {
        bail!("{} runs failed: {:?}", results.errors.len(), results.errors);
    }
    if results.mesh_lost > 0 {
        bail!("mesh lost {} messages in a clean run", results.mesh_lost);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_get_a_lower_latency_rate() {
        assert_eq!(latency_rate(20_000, 64.0, 64), 20_000);
        assert_eq!(latency_rate(20_000, 64.0, 4096), 15_625);
        assert_eq!(latency_rate(20_000, 64.0, 65_536), 976);
        assert_eq!(latency_rate(20_000, 64.0, 1 << 30), 100);
    }
}
