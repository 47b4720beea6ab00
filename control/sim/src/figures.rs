//! What a run measures: per-phase transmissions, per-domain figures, per-node distributions.

use mesh_routing::NodeId;

use crate::engine::{Micros, Traffic};

/// Transmissions and timing of one phase (a topology change and the re-convergence after it),
/// as seen from one domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phase {
    /// Transmissions on the domain's own links.
    pub traffic: Traffic,
    /// Transmissions anywhere else — other domains' links and inter-domain links — while the
    /// change re-converged (intra-domain link and node failures; zero elsewhere, where other
    /// domains are busy with the same phase).
    pub foreign: Traffic,
    /// Own LSAs (node and summary) originated by the domain's routers.
    pub originated: u64,
    /// Simulated time from the change to the domain's last delivery or route computation.
    pub converge_us: Micros,
    /// Route computations in the domain.
    pub spf_runs: u64,
}

/// One intra-domain link failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFailure {
    /// One end.
    pub a: NodeId,
    /// The other end.
    pub b: NodeId,
    /// What it cost.
    pub phase: Phase,
}

/// One node failure (a node that is not a border).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node.
    pub node: NodeId,
    /// Its neighbours (each re-originates its LSA).
    pub degree: u32,
    /// What it cost.
    pub phase: Phase,
}

/// Everything measured about one domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainFigures {
    /// Domain index (id − 1).
    pub index: u32,
    /// Nodes.
    pub size: u32,
    /// Intra-domain links.
    pub links: u32,
    /// Border nodes.
    pub borders: u32,
    /// Cold boot: every router of the domain starts at time 0 with an empty database and its
    /// intra-domain links up (sampled domains).
    pub boot: Option<Phase>,
    /// Join: the mesh's inter-domain links come up, summaries flow, domain routes form
    /// (sampled domains).
    pub join: Option<Phase>,
    /// Warm start (hierarchical mode, domains not sampled): every router is handed the
    /// converged database, its links come up and it computes its routes.
    pub warm: Option<Phase>,
    /// One intra-domain link failure, if the domain was sampled.
    pub link_failure: Option<LinkFailure>,
    /// One node failure, if the domain was sampled.
    pub node_failure: Option<NodeFailure>,
    /// The mesh's inter-domain link failure, as this domain saw it (live mode: every domain;
    /// hierarchical mode: sampled domains).
    pub inter_failure: Option<Phase>,
    /// Checks of node tables that found the wrong number of entries (0 expected).
    pub entries_wrong: u64,
    /// Border summaries that differ from the domain-level run's (hierarchical mode; 0
    /// expected).
    pub summary_mismatches: u64,
    /// Node LSAs that differ from those the domain-level run was given (hierarchical mode; 0
    /// expected).
    pub lsa_mismatches: u64,
    /// Router inputs refused, LSAs rejected, LSAs left unacknowledged (0 expected).
    pub protocol_errors: u64,
}

/// Per-node measurements once the mesh has converged after start-up (boot and join).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Route-table entries (node routes + domain routes).
    pub entries: u32,
    /// [`mesh_routing::Router::heap_bytes`].
    pub router_heap: u32,
    /// [`mesh_routing::RouteTable::heap_bytes`] of its table.
    pub table_heap: u32,
    /// Encoded bytes of the LSAs it holds (its LSDB and own summaries); shared in the
    /// simulator, a copy each on a real node.
    pub lsa_bytes: u32,
    /// Wall-clock nanoseconds of the route computation that produced its converged table.
    pub spf_ns: u64,
    /// The same computation re-timed outside the run, best of three (every 100th node; 0 when
    /// not measured).
    pub spf_best_ns: u64,
}

/// Mean, median, 99th percentile and maximum of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dist {
    /// Sample size.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Dist {
    /// The distribution of `values` (sorted in place).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn of(values: &mut [u64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_unstable();
        let n = values.len();
        let at = |q: f64| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let k = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            values[k]
        };
        Dist {
            n: n as u64,
            mean: values.iter().map(|v| *v as f64).sum::<f64>() / n as f64,
            min: values[0],
            p50: at(0.5),
            p99: at(0.99),
            max: values[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let d = Dist::of(&mut v);
        assert_eq!((d.min, d.p50, d.p99, d.max, d.n), (1, 50, 99, 100, 100));
        assert!((d.mean - 50.5).abs() < 1e-9);
        assert_eq!(Dist::of(&mut []), Dist::default());
    }
}

/// The inter-domain link failure, mesh-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterFailure {
    /// One end.
    pub a: Option<NodeId>,
    /// The other end.
    pub b: Option<NodeId>,
    /// Transmissions on inter-domain links.
    pub inter: Traffic,
    /// Transmissions on intra-domain links, all domains.
    pub intra: Traffic,
    /// Domains simulated in full through it (their intra-domain transmissions are `intra`).
    pub domains_measured: u32,
    /// Of those, domains with at least one transmission on their own links.
    pub domains_reached: u32,
    /// Own LSAs originated, all domains.
    pub originated: u64,
    /// Simulated time from the failure to the last delivery or computation anywhere.
    pub converge_us: Micros,
}

/// Packets walked hop by hop through the route tables (live mode, small meshes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walks {
    /// Walks tried.
    pub tried: u64,
    /// Walks that did not arrive (no route, a loop, or a hop over a link that is down).
    pub failed: u64,
    /// Hops of all walks.
    pub hops: u64,
}

/// The domain-level run of the hierarchical mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkeletonFigures {
    /// Border routers live.
    pub routers: u32,
    /// Node LSAs of domain interiors given to the borders.
    pub interior_lsas: u64,
    /// Virtual links standing for domain interiors (between the borders of a domain).
    pub virtual_links: u32,
    /// Join: transmissions on inter-domain links.
    pub join_inter: Traffic,
    /// Join: time to converge.
    pub join_converge_us: Micros,
    /// Inter-domain link failure: transmissions on inter-domain links.
    pub failure_inter: Traffic,
    /// Inter-domain link failure: time to converge.
    pub failure_converge_us: Micros,
    /// Inter-domain link failure: domains whose borders originated a new summary.
    pub failure_domains_changed: u32,
    /// Inter-domain link failure: domains that received a new summary or lost the link.
    pub failure_domains_reached: u32,
    /// Border routers whose domain routes were not one per other domain (0 expected).
    pub routes_wrong: u64,
    /// Items of recorded updates that were not the sender's own summary (left out of replays;
    /// 0 expected).
    pub script_items_dropped: u64,
    /// Router inputs refused, LSAs rejected, LSAs left unacknowledged (0 expected).
    pub protocol_errors: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOutput {
    /// Per domain, by index.
    pub domains: Vec<DomainFigures>,
    /// Per node, by domain then node.
    pub nodes: Vec<NodeSample>,
    /// Join: transmissions on inter-domain links.
    pub join_inter: Traffic,
    /// Join: time to converge, mesh-wide.
    pub join_converge_us: Micros,
    /// The inter-domain link failure.
    pub inter_failure: InterFailure,
    /// The domain-level run (hierarchical mode).
    pub skeleton: Option<SkeletonFigures>,
    /// Packet walks (live mode with tables kept).
    pub walks: Option<Walks>,
    /// Latest simulated time any run reached.
    pub sim_end_us: Micros,
    /// Router inputs refused, LSAs rejected, LSAs left unacknowledged, mesh-wide (0 expected).
    pub protocol_errors: u64,
    /// Heap bytes of the SPF workspace shared by a run's routers, at its largest.
    pub spf_workspace_bytes: u64,
}
