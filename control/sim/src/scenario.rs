//! The experiment: settings, router configuration, and the seeded choice of what fails.
//!
//! Both modes ([`crate::live`], [`crate::hier`]) run the same scenario on the same topology:
//!
//! 1. **boot**: in every domain, every router starts at time 0 with an empty database and its
//!    intra-domain links up; run to quiet;
//! 2. **join**: [`SETTLE_US`] later every inter-domain link comes up at once; run to quiet. The
//!    per-node figures (table entries, memory, route computation time) are taken here;
//! 3. **one inter-domain link fails** (a random one whose loss keeps the domain graph
//!    connected); run to quiet;
//! 4. in each sampled domain, **one intra-domain link fails** (a random link whose loss keeps
//!    the domain connected); run to quiet;
//! 5. in each sampled domain, **one node fails** (a random non-border node whose loss keeps the
//!    domain connected); run to quiet.
//!
//! In the hierarchical mode a domain that is not sampled starts *warm* instead of 1–2 (its
//! routers are handed the converged database, then compute once) and skips 3–5; the domain
//! level of 2 and 3 is still simulated for the whole mesh (see [`crate::hier`]).
//!
//! Phases are [`SETTLE_US`] apart so that every timer of the previous one has fired. Choices
//! draw from streams of the seed that do not depend on the mode or on the order of domains.

use std::sync::Arc;
use std::time::Instant;

use mesh_routing::{
    ComputeInput, LsaInstance, NodeId, Router, RouterConfig, SpfWorkspace, compute,
};

use crate::engine::{Micros, RouterSlot, SpfThrottle};
use crate::figures::NodeSample;
use crate::rng::{Rng, mix64};
use crate::topology::{Topology, TopologyConfig, connected, domain_id, node_id, u32_of};

/// Simulated time between phases (longer than the 5 s retransmission interval).
pub const SETTLE_US: Micros = 10_000_000;
/// Simulated time a run must stay under, so that no periodic refresh (every 27 to 30 minutes)
/// is counted as the cost of a change.
pub const MAX_SIM_US: Micros = 25 * 60 * 1_000_000;
/// Largest domain the routers' limits allow (database summaries carry every header in one
/// message).
pub const MAX_SIM_DOMAIN: u32 = 30_000;

const LABEL_LINK_FAIL: u64 = 3 << 32;
const LABEL_NODE_FAIL: u64 = 4 << 32;
const LABEL_INTER_FAIL: u64 = 5;

/// How the mesh is simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every router of the mesh live at once, in one network.
    Live,
    /// Domain level first (every border router live, each domain's interior represented by its
    /// node LSAs), then every domain in full, one at a time, its foreign neighbours replaying
    /// what they sent in the domain-level run.
    Hierarchical,
}

impl Mode {
    /// The name used on the command line and in the output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Hierarchical => "hierarchical",
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The mesh.
    pub topology: TopologyConfig,
    /// Seed of everything random.
    pub seed: u64,
    /// How to simulate.
    pub mode: Mode,
    /// SPF throttle of every router.
    pub throttle: SpfThrottle,
    /// How many domains are *sampled* (`None`: all), spread evenly over the mesh. In the
    /// hierarchical mode a sampled domain boots cold and replays the join and the inter-domain
    /// link failure; the others start warm. (The live mode boots every domain cold.)
    pub sample_domains: Option<u32>,
    /// How many domains, spread evenly, lose a link and a node (`None`: all); sampled domains
    /// always do.
    pub failure_domains: Option<u32>,
    /// Worker threads for the per-domain runs of the hierarchical mode (results do not depend
    /// on it).
    pub threads: usize,
    /// Keep every route table and walk packets through them (live mode; small meshes).
    pub walk_packets: bool,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl SimConfig {
    /// Defaults for `domains × nodes_per_domain`, seed `seed`.
    #[must_use]
    pub fn new(domains: u32, nodes_per_domain: u32, seed: u64) -> SimConfig {
        SimConfig {
            topology: TopologyConfig::new(domains, nodes_per_domain),
            seed,
            mode: Mode::Hierarchical,
            throttle: SpfThrottle::default(),
            sample_domains: None,
            failure_domains: None,
            threads: 1,
            walk_packets: false,
            progress: false,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        self.topology.validate()?;
        let largest = f64::from(self.topology.nodes_per_domain) * (1.0 + self.topology.size_spread);
        if largest > f64::from(MAX_SIM_DOMAIN) {
            return Err(format!(
                "domains of up to {largest:.0} nodes exceed the simulated limit of {MAX_SIM_DOMAIN}"
            ));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("threads = {} is outside 1..=256", self.threads));
        }
        if self.throttle.initial_us == 0
            || self.throttle.hold_us == 0
            || self.throttle.max_us < self.throttle.hold_us
        {
            return Err(format!("bad SPF throttle {:?}", self.throttle));
        }
        Ok(())
    }

    /// Whether domain `d` is sampled (see [`SimConfig::sample_domains`]).
    #[must_use]
    pub fn samples(&self, d: u32) -> bool {
        spread(self.sample_domains, d, self.topology.domains)
    }

    /// Whether domain `d` loses a link and a node (see [`SimConfig::failure_domains`]).
    #[must_use]
    pub fn fails(&self, d: u32) -> bool {
        spread(self.failure_domains, d, self.topology.domains)
            || (self.mode == Mode::Hierarchical && self.samples(d))
    }
}

/// Whether `d` is one of `k` (`None`: all) domains spread evenly over `total`: the ones where
/// a k-quantile boundary falls.
fn spread(k: Option<u32>, d: u32, total: u32) -> bool {
    match k {
        None => true,
        Some(0) => false,
        Some(k) if k >= total => true,
        Some(k) => {
            let (d, k, t) = (u64::from(d), u64::from(k), u64::from(total));
            (d * k) / t != ((d + 1) * k) / t
        }
    }
}

/// The router configuration of node `local` of domain `d`: the crate's defaults, a seed of its
/// own, and room in the LSDB for the domain plus its foreign borders.
#[must_use]
pub fn router_config(topo: &Topology, seed: u64, d: u32, local: u32) -> RouterConfig {
    let id = node_id(d, local);
    let mut c = RouterConfig::new(id, domain_id(d));
    c.seed = mix64(seed ^ id.get());
    let needed = topo.domains[d as usize].size as usize + topo.inter_of[d as usize].len() + 64;
    c.max_origins = c.max_origins.max(needed);
    c
}

/// A random intra-domain link of domain `d` whose failure keeps it connected.
#[must_use]
pub fn choose_link_failure(topo: &Topology, seed: u64, d: u32) -> Option<(u32, u32)> {
    let dom = &topo.domains[d as usize];
    let adj = dom.adjacency();
    let mut rng = Rng::new(seed, LABEL_LINK_FAIL + u64::from(d));
    for _ in 0..200 {
        let l = dom.links[rng.index(dom.links.len())];
        let (a, b) = (l.a, l.b);
        let gone = |x: u32, y: u32| (x, y) == (a, b) || (x, y) == (b, a);
        if connected(&adj, None, |x, y| !gone(x, y)) {
            return Some((a, b));
        }
    }
    None
}

/// A random node of domain `d` that is not a border, whose failure keeps the domain connected
/// once `link` has failed too.
#[must_use]
pub fn choose_node_failure(
    topo: &Topology,
    seed: u64,
    d: u32,
    link: Option<(u32, u32)>,
) -> Option<u32> {
    let dom = &topo.domains[d as usize];
    let adj = dom.adjacency();
    let borders = topo.borders(d);
    let mut rng = Rng::new(seed, LABEL_NODE_FAIL + u64::from(d));
    for _ in 0..200 {
        let v = u32_of(rng.index(dom.size as usize));
        if borders.binary_search(&v).is_ok() {
            continue;
        }
        let link_ok =
            |x: u32, y: u32| link.is_none_or(|(a, b)| (x, y) != (a, b) && (x, y) != (b, a));
        if connected(&adj, Some(v), link_ok) {
            return Some(v);
        }
    }
    None
}

/// A random inter-domain link whose failure keeps the domain graph connected (and its domain
/// paths within the 32 domains a summary can carry).
#[must_use]
pub fn choose_inter_failure(topo: &Topology, seed: u64) -> Option<usize> {
    if topo.inter.is_empty() {
        return None;
    }
    let mut rng = Rng::new(seed, LABEL_INTER_FAIL);
    for _ in 0..200 {
        let k = rng.index(topo.inter.len());
        if topo.domain_diameter(|x| x == k).is_some_and(|dia| dia < 32) {
            return Some(k);
        }
    }
    None
}

/// Expected route-table entries of a node of a domain with `alive` reachable nodes in a mesh of
/// `domains` domains: every other node of its domain plus one route per other domain.
#[must_use]
pub const fn expected_entries(alive: u32, domains: u32) -> u32 {
    (alive - 1) + (domains - 1)
}

/// The per-node sample of a router at the end of start-up.
#[must_use]
pub fn node_sample(slot: &RouterSlot) -> NodeSample {
    let r = &slot.router;
    let mut lsa_bytes: usize = r.lsdb().live().map(mesh_routing::Lsa::encoded_len).sum();
    let mut foreign: Vec<_> = r
        .neighbors()
        .map(|n| n.1)
        .filter(|x| *x != r.domain())
        .collect();
    foreign.sort_unstable();
    foreign.dedup();
    for x in foreign {
        if let Some(s) = r.flooder().own_summary(x) {
            lsa_bytes += s.encoded_len();
        }
    }
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    let table = slot.table.unwrap_or_default();
    NodeSample {
        entries: table.entries(),
        router_heap: n(r.heap_bytes()),
        table_heap: table.heap_bytes,
        lsa_bytes: n(lsa_bytes),
        spf_ns: slot.last_spf_ns,
        spf_best_ns: 0,
    }
}

/// Nodes whose route computation is re-timed: every `SPF_RETIME_EVERY`-th of a domain.
pub const SPF_RETIME_EVERY: u32 = 100;

/// Times the route computation `r` runs in [`Router::poll_routes_with`] — the same pure
/// function on the same inputs — `reps` times, and returns the fastest, in nanoseconds (the
/// minimum filters out preemption by other processes).
///
/// # Panics
/// Only on a broken invariant of the router (its own LSA missing from its database).
#[must_use]
pub fn retime_compute(r: &Router, ws: &mut SpfWorkspace, reps: u32) -> u64 {
    let policy = Arc::new(r.policy().clone());
    let mut borders: Vec<_> = r
        .neighbors()
        .map(|n| n.1)
        .filter(|x| *x != r.domain())
        .collect();
    borders.sort_unstable();
    borders.dedup();
    let input = ComputeInput {
        lsdb: r.lsdb(),
        node: r.node(),
        policy: &policy,
        border_domains: &borders,
        chunk_bits: r.config().ecmp_chunk_bits,
        generation: 1,
        summary_ranges_per_domain: r.config().summary_ranges_per_domain,
    };
    (0..reps)
        .map(|_| {
            let started = Instant::now();
            let out = compute(&input, ws);
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            std::hint::black_box(out).expect("the own LSA is always held");
            ns
        })
        .min()
        .unwrap_or(0)
}

/// Whether a received node LSA equals what the domain-level run assumed for `id`.
#[must_use]
pub fn same_instance(a: &mesh_routing::Lsa, b: &mesh_routing::Lsa) -> bool {
    a.origin() == b.origin() && a.seq() == b.seq() && a.same_content(b)
}

/// Wraps LSAs as fresh instances (age 0), as an update carries them.
#[must_use]
pub fn instances(lsas: &[mesh_routing::Lsa]) -> Vec<LsaInstance> {
    lsas.iter()
        .map(|l| LsaInstance {
            age_s: 0,
            lsa: l.clone(),
        })
        .collect()
}

/// The id of node `local` of domain `d` (re-exported for the modes).
#[must_use]
pub fn id(d: u32, local: u32) -> NodeId {
    node_id(d, local)
}
