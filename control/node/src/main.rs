//! `mesh`: runs a mesh node, or helps operate one (`mesh certs`).
//!
//! ```text
//! mesh --node-id 1001 --listen 0.0.0.0:7001 --connect 10.0.0.2:7001
//! mesh --config node.toml
//! mesh certs --out certs --nodes 1,2,3 --host localhost
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_node::config::{LogFormat, NodeArgs, NodeConfig};

#[derive(Debug, Parser)]
#[command(
    name = "mesh",
    version,
    about = "mesh node: secure, high-performance mesh messaging"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML file with the same keys as the flags (kebab-case); flags win.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a mesh CA (or reuse the one in --out) and certificates plus ML-DSA-65 keys for nodes.
    Certs(mesh_node::certs::CertsArgs),
    /// Send a message through a local node (native client).
    Send(mesh_node::client_cmd::SendArgs),
    /// Print the messages addressed to a local node (native client).
    Subscribe(mesh_node::client_cmd::SubscribeArgs),
    /// Where messages a node originated are on their way (gRPC GetStatus).
    Status(mesh_node::grpc_cmd::StatusArgs),
    /// A node's view of the mesh: nodes, links, domains (gRPC GetTopology).
    Topology(mesh_node::grpc_cmd::TopologyArgs),
}

fn main() -> ExitCode {
    // The process-wide rustls provider (gRPC's TLS and its clients use it; mesh links build
    // their own, narrower one): aws-lc, X25519MLKEM768 first. Named explicitly because a build
    // where another crate also enables rustls's `ring` cannot pick one by itself.
    let _ = mesh_tls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Certs(args)) => {
            init_logging(LogFormat::Text);
            match mesh_node::certs::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(format_args!("mesh certs: {e:#}"));
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Send(args)) => report("send", mesh_node::client_cmd::send(&args)),
        Some(Command::Subscribe(args)) => {
            report("subscribe", mesh_node::client_cmd::subscribe(&args))
        }
        Some(Command::Status(args)) => report("status", mesh_node::grpc_cmd::status(&args)),
        Some(Command::Topology(args)) => report("topology", mesh_node::grpc_cmd::topology(&args)),
        None => {
            let args = match &cli.config {
                Some(path) => match NodeArgs::from_file(path) {
                    Ok(file) => cli.node.over(file),
                    Err(e) => {
                        say(format_args!("mesh: {e}"));
                        return ExitCode::from(2);
                    }
                },
                None => cli.node,
            };
            let cfg = match NodeConfig::resolve(args) {
                Ok(c) => c,
                Err(e) => {
                    say(format_args!("mesh: {e}"));
                    return ExitCode::from(2);
                }
            };
            init_logging(cfg.log_format);
            match mesh_node::node::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    say(format_args!("mesh: {e:#}"));
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Writes a line to stderr, ignoring a failure: `eprintln!` panics when stderr cannot be
/// written (a log file on a full disk), which turned a clean exit 1 into a silent exit 101.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn report(what: &str, r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format_args!("mesh {what}: {e:#}"));
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        // A log line that cannot be written is dropped: by default the subscriber reports it
        // with `eprintln!`, which panics when stderr itself is what fails (a full disk).
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
