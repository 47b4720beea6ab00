//! `mesh status` and `mesh topology`: ask a node over its gRPC API (MeshData/GetStatus,
//! MeshControl/GetTopology) and print the answer for people.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_control_client::MeshControlClient;
use mesh_proto::v1::mesh_data_client::MeshDataClient;

/// Flags of `mesh status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The node's gRPC API.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// msg_ids of messages that node originated (as Send answered them).
    #[arg(required = true)]
    pub msg_ids: Vec<u64>,
}

/// Flags of `mesh topology`.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// The node's gRPC API.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// Only this domain (default: the node's own, with the other domains' summaries).
    #[arg(long)]
    pub domain: Option<u32>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

async fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("--grpc {url}: not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| {
            format!(
                "connecting to the node's gRPC API at {url} (is it started with --enable-grpc?)"
            )
        })
}

fn status_name(s: i32) -> String {
    pb::MessageStatus::try_from(s).map_or_else(
        |_| format!("status {s}"),
        |v| {
            v.as_str_name()
                .trim_start_matches("MESSAGE_STATUS_")
                .to_owned()
        },
    )
}

/// Prints where each message is on the status ladder.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let out = runtime()?.block_on(async {
        let mut c = MeshDataClient::new(channel(&args.grpc).await?);
        let r = c
            .get_status(pb::GetStatusRequest {
                msg_ids: args.msg_ids.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("GetStatus: {}", s.message()))?
            .into_inner();
        let mut out = String::new();
        for e in r.entries {
            if !e.found {
                let _ = writeln!(out, "{:>20}  not tracked by this node", e.msg_id);
                continue;
            }
            let _ = write!(out, "{:>20}  {}", e.msg_id, status_name(e.status));
            if !e.status_message.is_empty() {
                let _ = write!(out, " ({})", e.status_message);
            }
            if let Some(t) = e.updated_at {
                let _ = write!(
                    out,
                    "  since {}.{:03} (unix s)",
                    t.seconds,
                    t.nanos / 1_000_000
                );
            }
            out.push('\n');
        }
        anyhow::Ok(out)
    })?;
    print!("{out}");
    Ok(())
}

/// Prints the node's view of the mesh.
pub fn topology(args: &TopologyArgs) -> anyhow::Result<()> {
    let out = runtime()?.block_on(async {
        let mut c = MeshControlClient::new(channel(&args.grpc).await?);
        let t = c
            .get_topology(pb::GetTopologyRequest {
                domain_id: args.domain,
            })
            .await
            .map_err(|s| anyhow::anyhow!("GetTopology: {}", s.message()))?
            .into_inner();
        anyhow::Ok(render_topology(&t))
    })?;
    print!("{out}");
    Ok(())
}

fn render_topology(t: &pb::Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} in domain {}, topology epoch {}, policy version {}",
        t.node_id, t.domain_id, t.epoch, t.policy_version
    );
    let _ = writeln!(out, "nodes ({}):", t.nodes.len());
    for n in &t.nodes {
        let cost = n
            .cost
            .map_or_else(|| "unreachable".to_owned(), |c| format!("cost {c}"));
        let _ = writeln!(
            out,
            "  {:>6}  domain {}  {}  {}",
            n.node_id,
            n.domain_id,
            cost,
            n.addresses.join(", ")
        );
    }
    let _ = writeln!(out, "links ({}):", t.links.len());
    for l in &t.links {
        let _ = writeln!(
            out,
            "  {:>6} -> {:<6} cost {}",
            l.from_node, l.to_node, l.cost
        );
    }
    if !t.domains.is_empty() {
        let _ = writeln!(out, "domains ({}):", t.domains.len());
        for d in &t.domains {
            let borders: Vec<String> = d.border_nodes.iter().map(u64::to_string).collect();
            let cost = d
                .cost
                .map_or_else(|| "unreachable".to_owned(), |c| format!("cost {c}"));
            let _ = writeln!(
                out,
                "  {:>6}  {} members  borders [{}]  {}",
                d.domain_id,
                d.member_count,
                borders.join(", "),
                cost
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_print_without_their_prefix() {
        assert_eq!(status_name(4), "DELIVERED");
        assert_eq!(status_name(99), "status 99");
    }
}
