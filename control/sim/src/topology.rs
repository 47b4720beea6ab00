//! The mesh to simulate, generated from a seed: domains of nodes, intra- and inter-domain links.
//!
//! - **Domains.** `D` domains with ids `1..=D`. Sizes average `N`; with a size spread `s` they
//!   come in pairs of `N + δ` and `N - δ` (`δ` uniform in `±s·N`), so the mesh holds exactly
//!   `D × N` nodes (one domain of size `N` when `D` is odd).
//! - **Node ids.** Node `k` (from 0) of domain `d` has id `d × 1,000,000 + k + 1`: a domain's
//!   ids are contiguous, so its member set compacts to one range, and the id reads as
//!   "domain, node" in decimal.
//! - **Inside a domain**: a ring (in id order) plus `chords_per_node × size` random chords, so
//!   the graph is connected and the average degree is `2 + 2 × chords_per_node` (6 by default).
//!   Costs uniform in [`INTRA_COST`], one-way latencies uniform in [`INTRA_LATENCY_US`].
//! - **Between domains**: each domain designates `borders_per_domain` nodes, evenly spread over
//!   its ids, as border candidates. A ring of domains (slot 0 of domain `i` to slot 1 of domain
//!   `i + 1`) keeps the domain graph connected — and gives every domain at least two distinct
//!   border nodes — plus `extra_inter_per_domain × D` links between random candidates of random
//!   domain pairs. Costs in [`INTER_COST`], latencies in [`INTER_LATENCY_US`].
//!
//! Each domain draws from its own random stream, so a domain can be regenerated alone and the
//! result does not depend on the order of generation.

use std::collections::{BTreeSet, VecDeque};

use mesh_routing::{DomainId, NodeId};

use crate::rng::Rng;

/// Cost range of intra-domain links.
pub const INTRA_COST: (u32, u32) = (1, 10);
/// Cost range of inter-domain links.
pub const INTER_COST: (u32, u32) = (10, 100);
/// One-way latency range of intra-domain links, in microseconds.
pub const INTRA_LATENCY_US: (u32, u32) = (1_000, 5_000);
/// One-way latency range of inter-domain links, in microseconds.
pub const INTER_LATENCY_US: (u32, u32) = (5_000, 50_000);
/// Largest domain (node ids leave room for 999,999 nodes per domain).
pub const MAX_DOMAIN_SIZE: u32 = 999_999;
/// Smallest domain (a ring needs three nodes).
pub const MIN_DOMAIN_SIZE: u32 = 3;

/// Random-stream labels (see [`Rng::new`]).
const LABEL_SIZES: u64 = 1;
const LABEL_INTER: u64 = 2;
const LABEL_DOMAIN: u64 = 1 << 32;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct TopologyConfig {
    /// Number of domains `D` (>= 1).
    pub domains: u32,
    /// Average nodes per domain `N`.
    pub nodes_per_domain: u32,
    /// Relative spread of domain sizes, `0.0 ..= 0.9` (0: every domain has `N` nodes).
    pub size_spread: f64,
    /// Random chords per node inside a domain (average degree `2 + 2 × this`).
    pub chords_per_node: f64,
    /// Border candidates per domain (>= 2).
    pub borders_per_domain: u32,
    /// Extra inter-domain links per domain, beyond the ring of domains.
    pub extra_inter_per_domain: f64,
}

impl TopologyConfig {
    /// Defaults for `domains × nodes_per_domain`: average degree 6, 4 border candidates per
    /// domain, one extra inter-domain link per domain, equal sizes.
    #[must_use]
    pub const fn new(domains: u32, nodes_per_domain: u32) -> TopologyConfig {
        TopologyConfig {
            domains,
            nodes_per_domain,
            size_spread: 0.0,
            chords_per_node: 2.0,
            borders_per_domain: 4,
            extra_inter_per_domain: 1.0,
        }
    }

    /// Checks the values against their bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.domains == 0 || self.domains > 1_000_000 {
            return Err(format!("domains = {} is outside 1..=1000000", self.domains));
        }
        if !(0.0..=0.9).contains(&self.size_spread) {
            return Err(format!(
                "size spread = {} is outside 0..=0.9",
                self.size_spread
            ));
        }
        let smallest = f64::from(self.nodes_per_domain) * (1.0 - self.size_spread);
        let largest = f64::from(self.nodes_per_domain) * (1.0 + self.size_spread);
        if smallest < f64::from(MIN_DOMAIN_SIZE) || largest > f64::from(MAX_DOMAIN_SIZE) {
            return Err(format!(
                "domain sizes {smallest:.0}..={largest:.0} leave {MIN_DOMAIN_SIZE}..={MAX_DOMAIN_SIZE}"
            ));
        }
        if !(0.0..=16.0).contains(&self.chords_per_node) {
            return Err(format!(
                "chords per node = {} is outside 0..=16",
                self.chords_per_node
            ));
        }
        if self.borders_per_domain < 2 || self.borders_per_domain > 64 {
            return Err(format!(
                "borders per domain = {} is outside 2..=64",
                self.borders_per_domain
            ));
        }
        if !(0.0..=16.0).contains(&self.extra_inter_per_domain) {
            return Err(format!(
                "extra inter-domain links per domain = {} is outside 0..=16",
                self.extra_inter_per_domain
            ));
        }
        Ok(())
    }
}

/// A link inside a domain, between local node indices `a < b`; symmetric cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntraLink {
    /// One end (local index).
    pub a: u32,
    /// The other end (local index), `> a`.
    pub b: u32,
    /// Cost, both directions.
    pub cost: u32,
    /// One-way latency, microseconds.
    pub latency_us: u32,
}

/// A node named by domain index (0-based; the domain id is index + 1) and local index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    /// Domain index.
    pub domain: u32,
    /// Index inside the domain.
    pub local: u32,
}

/// A link between border nodes of two different domains; symmetric cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterLink {
    /// One end.
    pub a: NodeRef,
    /// The other end (another domain).
    pub b: NodeRef,
    /// Cost, both directions.
    pub cost: u32,
    /// One-way latency, microseconds.
    pub latency_us: u32,
}

/// One domain's nodes and internal links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// Its id.
    pub id: DomainId,
    /// Number of nodes.
    pub size: u32,
    /// Internal links, sorted by `(a, b)`.
    pub links: Vec<IntraLink>,
    /// Border candidates (local indices); those with an inter-domain link are borders.
    pub border_slots: Vec<u32>,
}

/// Neighbours of one node inside its domain: `(local index, cost, latency_us)`.
pub type Adjacency = Vec<Vec<(u32, u32, u32)>>;

impl Domain {
    /// Per node, its intra-domain neighbours, sorted.
    #[must_use]
    pub fn adjacency(&self) -> Adjacency {
        let mut adj: Adjacency = vec![Vec::new(); self.size as usize];
        for l in &self.links {
            adj[l.a as usize].push((l.b, l.cost, l.latency_us));
            adj[l.b as usize].push((l.a, l.cost, l.latency_us));
        }
        for a in &mut adj {
            a.sort_unstable();
        }
        adj
    }
}

/// The generated mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// What it was generated from.
    pub config: TopologyConfig,
    /// The seed.
    pub seed: u64,
    /// Domains, by index (id = index + 1).
    pub domains: Vec<Domain>,
    /// Inter-domain links.
    pub inter: Vec<InterLink>,
    /// Per domain, indices into `inter` of the links with an end in it.
    pub inter_of: Vec<Vec<u32>>,
}

/// The id of node `local` of the domain at `domain` (index).
///
/// # Panics
/// Never: the id is at least 1,000,001.
#[must_use]
pub fn node_id(domain: u32, local: u32) -> NodeId {
    NodeId::new(u64::from(domain + 1) * 1_000_000 + u64::from(local) + 1).expect("non-zero")
}

/// The id of the domain at index `domain`.
#[must_use]
pub const fn domain_id(domain: u32) -> DomainId {
    DomainId(domain + 1)
}

/// `x` as a `u32` (sizes here are bounded far below).
pub(crate) fn u32_of(x: usize) -> u32 {
    u32::try_from(x).expect("sizes fit u32")
}

/// Rounds a non-negative float to the nearest count.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn count(x: f64) -> usize {
    x.max(0.0).round() as usize
}

impl Topology {
    /// Generates the mesh for `config` and `seed`.
    pub fn generate(config: &TopologyConfig, seed: u64) -> Result<Topology, String> {
        config.validate()?;
        let dn = config.domains;
        let sizes = domain_sizes(config, seed);
        let domains: Vec<Domain> = (0..dn)
            .map(|i| generate_domain(config, seed, i, sizes[i as usize]))
            .collect();

        let mut rng = Rng::new(seed, LABEL_INTER);
        let mut inter = Vec::new();
        let mut seen: BTreeSet<(NodeRef, NodeRef)> = BTreeSet::new();
        let mut add = |rng: &mut Rng, a: NodeRef, b: NodeRef| {
            let key = if a < b { (a, b) } else { (b, a) };
            if a.domain != b.domain && seen.insert(key) {
                inter.push(InterLink {
                    a,
                    b,
                    cost: rng.range_u32(INTER_COST.0, INTER_COST.1),
                    latency_us: rng.range_u32(INTER_LATENCY_US.0, INTER_LATENCY_US.1),
                });
            }
        };
        if dn >= 2 {
            for i in 0..dn {
                let j = (i + 1) % dn;
                let a = NodeRef {
                    domain: i,
                    local: domains[i as usize].border_slots[0],
                };
                let b = NodeRef {
                    domain: j,
                    local: domains[j as usize].border_slots[1],
                };
                add(&mut rng, a, b);
            }
            for _ in 0..count(f64::from(dn) * config.extra_inter_per_domain) {
                let x = u32_of(rng.index(dn as usize));
                let mut y = u32_of(rng.index(dn as usize - 1));
                if y >= x {
                    y += 1;
                }
                let pick = |rng: &mut Rng, dom: u32| {
                    let slots = &domains[dom as usize].border_slots;
                    NodeRef {
                        domain: dom,
                        local: slots[rng.index(slots.len())],
                    }
                };
                let (a, b) = (pick(&mut rng, x), pick(&mut rng, y));
                add(&mut rng, a, b);
            }
        }
        let mut inter_of = vec![Vec::new(); dn as usize];
        for (k, l) in inter.iter().enumerate() {
            inter_of[l.a.domain as usize].push(u32_of(k));
            inter_of[l.b.domain as usize].push(u32_of(k));
        }
        Ok(Topology {
            config: config.clone(),
            seed,
            domains,
            inter,
            inter_of,
        })
    }

    /// Total nodes.
    #[must_use]
    pub fn node_count(&self) -> u64 {
        self.domains.iter().map(|d| u64::from(d.size)).sum()
    }

    /// Total intra-domain links.
    #[must_use]
    pub fn intra_link_count(&self) -> u64 {
        self.domains.iter().map(|d| d.links.len() as u64).sum()
    }

    /// The border nodes of domain `d` (local indices with an inter-domain link), sorted.
    #[must_use]
    pub fn borders(&self, d: u32) -> Vec<u32> {
        let mut b: Vec<u32> = self.inter_of[d as usize]
            .iter()
            .map(|&k| {
                let l = &self.inter[k as usize];
                if l.a.domain == d {
                    l.a.local
                } else {
                    l.b.local
                }
            })
            .collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// The inter-domain links of node `local` of domain `d`: `(link index, the far end)`.
    pub fn inter_links_of(&self, d: u32, local: u32) -> impl Iterator<Item = (u32, NodeRef)> + '_ {
        self.inter_of[d as usize].iter().filter_map(move |&k| {
            let l = &self.inter[k as usize];
            if l.a == (NodeRef { domain: d, local }) {
                Some((k, l.b))
            } else if l.b == (NodeRef { domain: d, local }) {
                Some((k, l.a))
            } else {
                None
            }
        })
    }

    /// Longest shortest path (in inter-domain hops) of the domain graph without the links
    /// `skip` says to leave out; `None` when it is disconnected.
    ///
    /// # Panics
    /// Never: a mesh has at least one domain.
    #[must_use]
    pub fn domain_diameter(&self, skip: impl Fn(usize) -> bool) -> Option<u32> {
        let d = self.domains.len();
        let mut adj: Vec<Vec<u32>> = vec![Vec::new(); d];
        for (k, l) in self.inter.iter().enumerate() {
            if !skip(k) {
                adj[l.a.domain as usize].push(l.b.domain);
                adj[l.b.domain as usize].push(l.a.domain);
            }
        }
        let mut diameter = 0;
        for s in 0..d {
            let mut dist = vec![u32::MAX; d];
            dist[s] = 0;
            let mut q = VecDeque::from([s]);
            while let Some(x) = q.pop_front() {
                for &y in &adj[x] {
                    if dist[y as usize] == u32::MAX {
                        dist[y as usize] = dist[x] + 1;
                        q.push_back(y as usize);
                    }
                }
            }
            let far = *dist.iter().max().expect("at least one domain");
            if far == u32::MAX {
                return None;
            }
            diameter = diameter.max(far);
        }
        Some(diameter)
    }
}

/// Domain sizes: pairs `N + δ`, `N - δ`, summing to exactly `D × N`.
fn domain_sizes(config: &TopologyConfig, seed: u64) -> Vec<u32> {
    let n = config.nodes_per_domain;
    let mut rng = Rng::new(seed, LABEL_SIZES);
    let mut sizes = Vec::with_capacity(config.domains as usize);
    while sizes.len() + 2 <= config.domains as usize {
        let spread = f64::from(n) * config.size_spread * (2.0 * rng.unit() - 1.0);
        #[allow(clippy::cast_possible_truncation)]
        let delta = spread.round() as i64;
        let big = u32::try_from(i64::from(n) + delta).expect("validated sizes");
        let small = u32::try_from(i64::from(n) - delta).expect("validated sizes");
        sizes.push(big.clamp(MIN_DOMAIN_SIZE, MAX_DOMAIN_SIZE));
        sizes.push(small.clamp(MIN_DOMAIN_SIZE, MAX_DOMAIN_SIZE));
    }
    if sizes.len() < config.domains as usize {
        sizes.push(n);
    }
    // Shuffle so that neighbouring domains are not systematically big and small.
    for i in (1..sizes.len()).rev() {
        let j = rng.index(i + 1);
        sizes.swap(i, j);
    }
    sizes
}

fn generate_domain(config: &TopologyConfig, seed: u64, index: u32, size: u32) -> Domain {
    let mut rng = Rng::new(seed, LABEL_DOMAIN + u64::from(index));
    let n = size as usize;
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut links = Vec::new();
    let mut add = |rng: &mut Rng, adj: &mut Vec<Vec<u32>>, a: u32, b: u32| {
        let (a, b) = (a.min(b), a.max(b));
        if a == b || adj[a as usize].contains(&b) {
            return false;
        }
        adj[a as usize].push(b);
        adj[b as usize].push(a);
        links.push(IntraLink {
            a,
            b,
            cost: rng.range_u32(INTRA_COST.0, INTRA_COST.1),
            latency_us: rng.range_u32(INTRA_LATENCY_US.0, INTRA_LATENCY_US.1),
        });
        true
    };
    for k in 0..size {
        add(&mut rng, &mut adj, k, (k + 1) % size);
    }
    let chords = count(f64::from(size) * config.chords_per_node);
    let mut made = 0;
    let mut attempts = 0;
    while made < chords && attempts < 20 * chords {
        attempts += 1;
        let a = u32_of(rng.index(n));
        let b = u32_of(rng.index(n));
        if add(&mut rng, &mut adj, a, b) {
            made += 1;
        }
    }
    links.sort_unstable_by_key(|l| (l.a, l.b));
    let b = config.borders_per_domain.min(size);
    let border_slots = (0..b)
        .map(|k| u32_of(k as usize * n / b as usize))
        .collect();
    Domain {
        id: domain_id(index),
        size,
        links,
        border_slots,
    }
}

/// Whether the nodes of `adj` not excluded by `dead` stay connected over the links that
/// `link_ok(a, b)` keeps.
#[must_use]
pub fn connected(adj: &Adjacency, dead: Option<u32>, link_ok: impl Fn(u32, u32) -> bool) -> bool {
    let n = adj.len();
    let Some(start) = (0..u32_of(n)).find(|x| Some(*x) != dead) else {
        return true;
    };
    let mut seen = vec![false; n];
    seen[start as usize] = true;
    let mut stack = vec![start];
    let mut reached = 1;
    while let Some(x) = stack.pop() {
        for &(y, _, _) in &adj[x as usize] {
            if Some(y) != dead && !seen[y as usize] && link_ok(x, y) {
                seen[y as usize] = true;
                reached += 1;
                stack.push(y);
            }
        }
    }
    reached == n - usize::from(dead.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let mut c = TopologyConfig::new(7, 40);
        c.size_spread = 0.5;
        let t = Topology::generate(&c, 3).unwrap();
        assert_eq!(t, Topology::generate(&c, 3).unwrap());
        assert_ne!(t.domains, Topology::generate(&c, 4).unwrap().domains);
        assert_eq!(t.node_count(), 7 * 40);
        for (i, d) in t.domains.iter().enumerate() {
            let adj = d.adjacency();
            assert!(connected(&adj, None, |_, _| true));
            let degree = 2.0 * f64::from(u32_of(d.links.len())) / f64::from(d.size);
            assert!((4.0..=6.5).contains(&degree), "degree {degree}");
            assert!(t.borders(u32_of(i)).len() >= 2, "two distinct borders");
        }
        assert!(t.domain_diameter(|_| false).is_some());
        for l in &t.inter {
            assert_ne!(l.a.domain, l.b.domain);
        }
        assert_eq!(node_id(6, 0).get(), 7_000_001);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(TopologyConfig::new(0, 10).validate().is_err());
        assert!(TopologyConfig::new(1, 2).validate().is_err());
        let mut c = TopologyConfig::new(2, 10);
        c.size_spread = 0.95;
        assert!(c.validate().is_err());
    }
}
