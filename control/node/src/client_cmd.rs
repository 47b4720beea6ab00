//! `mesh send` and `mesh subscribe`: try the mesh from a shell, through the native client.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use mesh_client::{Client, ClientOptions};
use mesh_wire::{Flags, Metadata};

/// Flags of `mesh send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The local node to attach to.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: SocketAddr,
    /// Destination node id.
    #[arg(long)]
    pub dst: u64,
    /// Destination domain (0: let the node resolve it).
    #[arg(long, default_value_t = 0)]
    pub domain: u32,
    /// How many times to send the message (with `--count > 1`, each copy ends with its
    /// sequence number, so a subscriber can check order).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Correlation id to attach.
    #[arg(long)]
    pub corr_id: Option<u64>,
    /// The message (UTF-8 text).
    pub message: String,
}

/// Flags of `mesh subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// The local node to attach to.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: SocketAddr,
    /// Stop after this many messages (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long)]
    pub idle_secs: Option<u64>,
    /// Print only a summary line at the end instead of every message.
    #[arg(long)]
    pub quiet: bool,
}

/// Sends and reports.
pub fn send(args: &SendArgs) -> anyhow::Result<()> {
    let mut c = Client::connect(args.node, ClientOptions::default())
        .with_context(|| format!("attaching to the node at {}", args.node))?;
    let node = c.node().map_or(0, |n| n.node_id);
    let meta = Metadata {
        corr_id: args.corr_id,
        ..Metadata::default()
    };
    let t0 = Instant::now();
    for i in 0..args.count {
        let payload = if args.count > 1 {
            Bytes::from(format!("{} {i}", args.message))
        } else {
            Bytes::from(args.message.clone())
        };
        c.send_with(args.dst, args.domain, &meta, Flags::EMPTY, payload)?;
    }
    c.flush()?;
    // Wait (up to 10 s) until the node persisted them: a message it took is delivered even if
    // this process ends now. (A node in `raw` delivery sends no receipts.)
    let mut persisted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (persisted.len() as u64) < args.count && Instant::now() < deadline {
        for r in c.wait_receipts(Duration::from_millis(200))? {
            match r.status {
                mesh_client::status::PERSISTED => persisted.push(r.msg_id),
                mesh_client::status::FAILED | mesh_client::status::UNDELIVERABLE => {
                    anyhow::bail!(
                        "message {} refused by the node (status {})",
                        r.seq,
                        r.status
                    )
                }
                _ => {}
            }
        }
    }
    c.close()?;
    println!(
        "sent {} message(s) to node {} through node {node} in {:?}; {} persisted{}",
        args.count,
        args.dst,
        t0.elapsed(),
        persisted.len(),
        match persisted.as_slice() {
            [id] => format!(" as msg_id {id}"),
            _ => String::new(),
        }
    );
    Ok(())
}

/// Receives and prints.
pub fn subscribe(args: &SubscribeArgs) -> anyhow::Result<()> {
    let opts = ClientOptions {
        subscribe: true,
        ..ClientOptions::default()
    };
    let mut c = Client::connect(args.node, opts)
        .with_context(|| format!("attaching to the node at {}", args.node))?;
    let node = c.node().map_or(0, |n| n.node_id);
    eprintln!("subscribed to node {node}");
    let mut n = 0u64;
    let idle = args.idle_secs.map(Duration::from_secs);
    let stdout = std::io::stdout();
    let t0 = Instant::now();
    loop {
        if args.count.is_some_and(|c| n >= c) {
            break;
        }
        match c.recv(idle.or(Some(Duration::from_secs(3600))))? {
            Some(d) => {
                n += 1;
                if !args.quiet {
                    let mut out = stdout.lock();
                    writeln!(
                        out,
                        "from node {} msg {}{}: {}",
                        d.src_node,
                        d.msg_id,
                        d.corr_id.map(|c| format!(" corr {c}")).unwrap_or_default(),
                        String::from_utf8_lossy(&d.payload)
                    )?;
                }
            }
            None if idle.is_some() => break,
            None => {}
        }
    }
    println!("received {n} message(s) in {:?}", t0.elapsed());
    Ok(())
}
