//! `mesh certs`: a mesh CA and, for each node, a certificate naming its node id and carrying
//! its ML-DSA-65 public key, the TLS key, and the ML-DSA private key (see `mesh-tls`).
//!
//! An existing `ca.pem` / `ca.key` in the output directory is reused, so new nodes can join an
//! existing mesh; existing files are never overwritten.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use mesh_tls::{GenerateOptions, NodeSpec, Validity, write_mesh_dir};

/// Flags of `mesh certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Output directory (created 0700 if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Node ids to issue certificates for, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// Host names or IP addresses to put in every node certificate (repeatable; informational:
    /// peers authenticate node ids).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Validity of the node certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
}

/// Writes the files and lists them.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    if args.days == 0 || args.days > 3650 {
        anyhow::bail!("--days {}: must be within 1..=3650", args.days);
    }
    let mut nodes = Vec::with_capacity(args.nodes.len());
    for &id in &args.nodes {
        let node_id = NonZeroU64::new(id).context("--nodes: node ids must be non-zero")?;
        let hosts = if args.hosts.is_empty() {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            args.hosts.clone()
        };
        nodes.push(NodeSpec { node_id, hosts });
    }
    let options = GenerateOptions {
        node_validity: Validity::starting_now(Duration::from_secs(args.days * 24 * 3600)),
        ..GenerateOptions::default()
    };
    let generated = write_mesh_dir(&args.out, &nodes, &options)
        .with_context(|| format!("writing certificates to {}", args.out.display()))?;
    if generated.ca_generated {
        println!("new mesh CA in {}", args.out.display());
    } else {
        println!("reused the mesh CA in {}", args.out.display());
    }
    for f in &generated.written {
        println!("  wrote {}", f.display());
    }
    Ok(())
}
