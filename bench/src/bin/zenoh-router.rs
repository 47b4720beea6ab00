//! `zenoh-router`: one Zenoh router for the bench's `zenoh` system (feature `zenoh`), a
//! stand-in for `zenohd` without its plugins, REST API or config files.
//!
//! It opens a zenoh session in router mode listening on one TCP endpoint, dials the routers it
//! is given, with multicast and gossip scouting off (so the topology is exactly the one the
//! harness builds), and runs until killed. Once it is connected to `--routers` other routers
//! it prints `ready <zid>` on stdout and, with `--ready-file`, creates that file: the harness
//! waits on the file.
//!
//! ```sh
//! zenoh-router --listen tcp/127.0.0.1:7447 --ready-file /tmp/a.ready --routers 1
//! zenoh-router --listen tcp/127.0.0.1:7448 --connect tcp/127.0.0.1:7447 --routers 1
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use zenoh::Wait;

/// One Zenoh router on TCP, no scouting, until killed.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Endpoint to listen on, e.g. `tcp/127.0.0.1:7447`.
    #[arg(long)]
    listen: String,
    /// Endpoints of routers to dial (repeatable); dialling retries until they answer.
    #[arg(long)]
    connect: Vec<String>,
    /// Be ready once connected to this many routers (either side having dialled).
    #[arg(long, default_value_t = 0)]
    routers: usize,
    /// Create this file once ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Give up if not ready within this many seconds.
    #[arg(long, default_value_t = 30)]
    ready_timeout_secs: u64,
}

/// The session's configuration: router mode on `listen`, dialling `connect`, no scouting;
/// everything else is zenoh's default (as `zenohd` would run it).
fn router_config(args: &Args) -> Result<zenoh::Config> {
    let json = serde_json::json!({
        "mode": "router",
        "listen": { "endpoints": [args.listen] },
        "connect": { "endpoints": args.connect },
        "scouting": {
            "multicast": { "enabled": false },
            "gossip": { "enabled": false },
        },
    });
    zenoh::Config::from_json5(&json.to_string())
        .map_err(anyhow::Error::from_boxed)
        .context("zenoh router configuration")
}

fn main() -> Result<()> {
    zenoh::init_log_from_env_or("error");
    let args = Args::parse();
    let session = zenoh::open(router_config(&args)?)
        .wait()
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("opening a zenoh router on {}", args.listen))?;
    let zid = session.zid();
    let t0 = Instant::now();
    let timeout = Duration::from_secs(args.ready_timeout_secs);
    while session.info().routers_zid().wait().count() < args.routers {
        if t0.elapsed() > timeout {
            bail!(
                "router {zid} on {}: not connected to {} routers within {timeout:?}",
                args.listen,
                args.routers
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ready {zid}");
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{zid}\n"))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    // The session's own runtime does all the work; this thread only keeps it open.
    loop {
        std::thread::park();
    }
}
