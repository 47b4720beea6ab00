//! The route table a node forwards with: an immutable value, published to the data-plane cores.
//!
//! A [`RouteTable`] holds
//! - one **intra-domain** route per reachable node of the node's own domain (destination node →
//!   its equal-cost next hops and distance), and
//! - one **inter-domain** route per reachable other domain (destination domain → the next hops
//!   towards the nearest of that domain's best exit borders, with the domain-level cost and the
//!   distance to the exit) — never one route per node of another domain (SPEC §9);
//! - the member map (node id → domain) that resolves a Send without `dst_domain`;
//! - the policy in force (deny/allow filters, rate limits), shared by `Arc`.
//!
//! [`RouteTable::lookup`] is SPEC §3's forwarding rule: `dst_domain` equal to this node's domain
//! → by `dst_node` in the intra-domain routes; otherwise → by `dst_domain` in the inter-domain
//! routes. Among equal-cost next hops it picks by [`ecmp_hash`] of `(src_node, dst_node,
//! msg_id >> chunk_bits)`, so every chunk of one message takes the same path and keeps its
//! order. Lookups are binary searches over boxed slices: no allocation, no locks, no hashing of
//! keys. Next-hop sets are interned (destinations sharing a set share its storage), so a
//! 1,000-node domain plus 1,000 other domains take about 50 KiB.

use std::sync::Arc;

use crate::hash::mix64;
use crate::ids::{DomainId, NodeId};
use crate::members::DomainMap;
use crate::policy::{Destination, RateLimit, ValidPolicy};

/// The outcome of a successful lookup.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NextHop {
    /// The destination is this node: deliver locally.
    Local,
    /// Send to this neighbour.
    Forward(NodeId),
}

/// Why a destination cannot be forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route: the node (own domain) or the domain (other domains) is unknown or unreachable.
    #[error("no route to node {dst_node} in domain {dst_domain}")]
    NoRoute {
        /// Destination domain.
        dst_domain: DomainId,
        /// Destination node.
        dst_node: NodeId,
    },
    /// The policy in force denies the destination.
    #[error("policy denies node {dst_node} in domain {dst_domain}")]
    Denied {
        /// Destination domain.
        dst_domain: DomainId,
        /// Destination node.
        dst_node: NodeId,
    },
}

/// A route to one node of the own domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IntraRoute {
    /// The destination.
    pub node: NodeId,
    /// Shortest-path distance.
    pub cost: u64,
    set: u32,
}

/// A route to another domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InterRoute {
    /// The destination domain.
    pub domain: DomainId,
    /// Domain-level cost (inter-domain edge weights and preferences along the domain path).
    pub domain_cost: u64,
    /// Distance from this node to the exit border in use: the preferred one when the policy
    /// names one among the best exits, else the nearest best one.
    pub exit_cost: u64,
    set: u32,
}

/// The immutable route table of one node (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    node: NodeId,
    domain: DomainId,
    generation: u64,
    chunk_bits: u8,
    fingerprint: u64,
    hops: Box<[NodeId]>,
    sets: Box<[(u32, u32)]>,
    intra: Box<[IntraRoute]>,
    inter: Box<[InterRoute]>,
    members: DomainMap,
    policy: Arc<ValidPolicy>,
}

/// The ECMP flow hash of `(src_node, dst_node, flow)`: deterministic on every platform.
#[must_use]
pub fn ecmp_hash(src_node: u64, dst_node: u64, flow: u64) -> u64 {
    let h = mix64(src_node ^ 0x9e37_79b9_7f4a_7c15);
    let h = mix64(h ^ dst_node);
    mix64(h ^ flow)
}

/// Picks one of `hops` for a flow: `hops[ecmp_hash(..) * len >> 64]`.
///
/// # Panics
/// If `hops` is empty (a table never holds an empty next-hop set).
#[must_use]
pub fn select_hop(hops: &[NodeId], src_node: u64, dst_node: u64, flow: u64) -> NodeId {
    assert!(!hops.is_empty(), "next-hop sets are never empty");
    if hops.len() == 1 {
        return hops[0];
    }
    let h = ecmp_hash(src_node, dst_node, flow);
    let i = (u128::from(h) * hops.len() as u128) >> 64;
    hops[usize::try_from(i).expect("index below hops.len()")]
}

impl RouteTable {
    /// The node this table belongs to.
    #[must_use]
    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// The node's domain.
    #[must_use]
    pub const fn domain(&self) -> DomainId {
        self.domain
    }

    /// Increases with every table the router publishes.
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// A hash of the routing content (routes, members, policy version); equal tables have
    /// equal fingerprints whatever their generation.
    #[must_use]
    pub const fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Low bits of `msg_id` that number chunks (0: chunks share the message's id).
    #[must_use]
    pub const fn chunk_bits(&self) -> u8 {
        self.chunk_bits
    }

    /// The policy in force when the table was computed.
    #[must_use]
    pub fn policy(&self) -> &ValidPolicy {
        &self.policy
    }

    fn set(&self, set: u32) -> &[NodeId] {
        let (start, len) = self.sets[set as usize];
        &self.hops[start as usize..(start + len) as usize]
    }

    /// Routes to the nodes of the own domain, sorted by node.
    #[must_use]
    pub fn intra_routes(&self) -> &[IntraRoute] {
        &self.intra
    }

    /// Routes to other domains, sorted by domain.
    #[must_use]
    pub fn inter_routes(&self) -> &[InterRoute] {
        &self.inter
    }

    /// Next hops of an intra-domain route.
    #[must_use]
    pub fn intra_hops(&self, r: &IntraRoute) -> &[NodeId] {
        self.set(r.set)
    }

    /// Next hops of an inter-domain route.
    #[must_use]
    pub fn inter_hops(&self, r: &InterRoute) -> &[NodeId] {
        self.set(r.set)
    }

    /// The route to `node` of the own domain.
    #[must_use]
    pub fn intra_route(&self, node: NodeId) -> Option<&IntraRoute> {
        self.intra
            .binary_search_by_key(&node, |r| r.node)
            .ok()
            .map(|i| &self.intra[i])
    }

    /// The route to `domain`.
    #[must_use]
    pub fn inter_route(&self, domain: DomainId) -> Option<&InterRoute> {
        self.inter
            .binary_search_by_key(&domain, |r| r.domain)
            .ok()
            .map(|i| &self.inter[i])
    }

    /// The domain whose member set holds `node` (for a Send without `dst_domain`).
    #[must_use]
    pub fn domain_of(&self, node: NodeId) -> Option<DomainId> {
        self.members.domain_of(node)
    }

    /// The member map.
    #[must_use]
    pub const fn members(&self) -> &DomainMap {
        &self.members
    }

    /// Whether the policy permits the destination.
    #[must_use]
    pub fn permits(&self, dst_domain: DomainId, dst_node: NodeId) -> bool {
        self.policy.permits_domain(dst_domain)
            && (!self.policy.filters_nodes() || self.policy.permits_node(dst_node))
    }

    /// All equal-cost next hops for a destination, by SPEC §3's rule (see the module docs);
    /// `Ok(None)` when the destination is this node.
    pub fn next_hops(
        &self,
        dst_domain: DomainId,
        dst_node: NodeId,
    ) -> Result<Option<&[NodeId]>, RouteError> {
        if !self.permits(dst_domain, dst_node) {
            return Err(RouteError::Denied {
                dst_domain,
                dst_node,
            });
        }
        let no_route = RouteError::NoRoute {
            dst_domain,
            dst_node,
        };
        if dst_domain == self.domain {
            if dst_node == self.node {
                return Ok(None);
            }
            self.intra_route(dst_node)
                .map(|r| Some(self.set(r.set)))
                .ok_or(no_route)
        } else {
            self.inter_route(dst_domain)
                .map(|r| Some(self.set(r.set)))
                .ok_or(no_route)
        }
    }

    /// The forwarding decision for one frame: SPEC §3's rule and ECMP by
    /// `(src_node, dst_node, msg_id >> chunk_bits)`.
    pub fn lookup(
        &self,
        dst_domain: DomainId,
        dst_node: NodeId,
        src_node: NodeId,
        msg_id: u64,
    ) -> Result<NextHop, RouteError> {
        Ok(match self.next_hops(dst_domain, dst_node)? {
            None => NextHop::Local,
            Some(hops) => NextHop::Forward(select_hop(
                hops,
                src_node.get(),
                dst_node.get(),
                msg_id >> self.chunk_bits,
            )),
        })
    }

    /// The rate limit for a destination: the node's own if set, else its domain's.
    #[must_use]
    pub fn rate_limit(&self, dst_domain: DomainId, dst_node: NodeId) -> Option<RateLimit> {
        let limits = &self.policy.policy().rate_limits;
        let find = |d: Destination| {
            limits
                .binary_search_by_key(&d, |r| r.dst)
                .ok()
                .map(|i| limits[i])
        };
        find(Destination::Node(dst_node)).or_else(|| find(Destination::Domain(dst_domain)))
    }

    /// Heap bytes held by this table (the shared policy not counted).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.hops.len() * 8
            + self.sets.len() * 8
            + self.intra.len() * core::mem::size_of::<IntraRoute>()
            + self.inter.len() * core::mem::size_of::<InterRoute>()
            + self.members.heap_bytes()
    }
}

/// Assembles a [`RouteTable`]; next-hop sets are interned.
#[derive(Debug)]
pub(crate) struct TableBuilder {
    hops: Vec<NodeId>,
    sets: Vec<(u32, u32)>,
    index: std::collections::HashMap<Box<[u64]>, u32>,
    intra: Vec<IntraRoute>,
    inter: Vec<InterRoute>,
}

impl TableBuilder {
    pub(crate) fn new() -> TableBuilder {
        TableBuilder {
            hops: Vec::new(),
            sets: Vec::new(),
            index: std::collections::HashMap::new(),
            intra: Vec::new(),
            inter: Vec::new(),
        }
    }

    /// The set index of the first-hop bitset `bits` over `neighbors`.
    fn intern(&mut self, bits: &[u64], neighbors: &[NodeId]) -> u32 {
        if let Some(&i) = self.index.get(bits) {
            return i;
        }
        let start = u32::try_from(self.hops.len()).expect("bounded by destinations x neighbours");
        self.hops
            .extend(crate::spf::bits(bits).map(|b| neighbors[b]));
        let len = u32::try_from(self.hops.len()).expect("bounded") - start;
        assert!(len > 0, "a route needs at least one next hop");
        let i = u32::try_from(self.sets.len()).expect("bounded by destinations");
        self.sets.push((start, len));
        self.index.insert(bits.into(), i);
        i
    }

    /// Adds a route to `node`; calls must come in increasing node order.
    pub(crate) fn intra(&mut self, node: NodeId, cost: u64, bits: &[u64], neighbors: &[NodeId]) {
        debug_assert!(self.intra.last().is_none_or(|r| r.node < node));
        let set = self.intern(bits, neighbors);
        self.intra.push(IntraRoute { node, cost, set });
    }

    /// Adds a route to `domain`; calls must come in increasing domain order.
    pub(crate) fn inter(
        &mut self,
        domain: DomainId,
        domain_cost: u64,
        exit_cost: u64,
        bits: &[u64],
        neighbors: &[NodeId],
    ) {
        debug_assert!(self.inter.last().is_none_or(|r| r.domain < domain));
        let set = self.intern(bits, neighbors);
        self.inter.push(InterRoute {
            domain,
            domain_cost,
            exit_cost,
            set,
        });
    }

    pub(crate) fn build(
        self,
        node: NodeId,
        domain: DomainId,
        generation: u64,
        chunk_bits: u8,
        members: DomainMap,
        policy: Arc<ValidPolicy>,
    ) -> RouteTable {
        let mut t = RouteTable {
            node,
            domain,
            generation,
            chunk_bits,
            fingerprint: 0,
            hops: self.hops.into_boxed_slice(),
            sets: self.sets.into_boxed_slice(),
            intra: self.intra.into_boxed_slice(),
            inter: self.inter.into_boxed_slice(),
            members,
            policy,
        };
        t.fingerprint = fingerprint(&t);
        t
    }
}

fn fingerprint(t: &RouteTable) -> u64 {
    let mut h = mix64(t.policy.version() ^ u64::from(t.chunk_bits));
    let mut eat = |x: u64| h = mix64(h ^ x);
    for r in &t.intra {
        eat(r.node.get());
        eat(r.cost);
        for n in t.set(r.set) {
            eat(n.get());
        }
    }
    for r in &t.inter {
        eat(u64::from(r.domain.0));
        eat(r.domain_cost);
        eat(r.exit_cost);
        for n in t.set(r.set) {
            eat(n.get());
        }
    }
    for (r, d) in t.members.iter() {
        eat(r.first().get());
        eat(r.last().get());
        eat(u64::from(d.0));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsa::NodeRange;
    use crate::lsa::tests::n;
    use crate::members::DomainMapBuilder;
    use crate::policy::Policy;

    fn table(policy: ValidPolicy) -> RouteTable {
        let nbrs = [n(2), n(3), n(4)];
        let mut b = TableBuilder::new();
        b.intra(n(2), 1, &[0b001], &nbrs);
        b.intra(n(5), 2, &[0b011], &nbrs);
        b.intra(n(6), 2, &[0b011], &nbrs);
        b.inter(DomainId(7), 10, 3, &[0b110], &nbrs);
        let mut m = DomainMapBuilder::new();
        m.add(DomainId(1), &[NodeRange::new(n(1), n(6)).unwrap()]);
        m.add(DomainId(7), &[NodeRange::new(n(700), n(799)).unwrap()]);
        b.build(n(1), DomainId(1), 1, 0, m.build(), Arc::new(policy))
    }

    #[test]
    fn lookup_follows_spec_rule() {
        let t = table(ValidPolicy::default());
        assert_eq!(t.lookup(DomainId(1), n(1), n(9), 0), Ok(NextHop::Local));
        assert_eq!(
            t.lookup(DomainId(1), n(2), n(9), 0),
            Ok(NextHop::Forward(n(2)))
        );
        // Another domain: by domain, whatever the node.
        let hop = t.lookup(DomainId(7), n(712), n(9), 5).unwrap();
        assert!(matches!(hop, NextHop::Forward(h) if h == n(3) || h == n(4)));
        assert_eq!(
            t.lookup(DomainId(1), n(42), n(9), 0),
            Err(RouteError::NoRoute {
                dst_domain: DomainId(1),
                dst_node: n(42)
            })
        );
        assert!(matches!(
            t.lookup(DomainId(8), n(800), n(9), 0),
            Err(RouteError::NoRoute { .. })
        ));
        assert_eq!(t.domain_of(n(750)), Some(DomainId(7)));
        assert_eq!(t.domain_of(n(800)), None);
        // Sets are interned.
        assert_eq!(t.sets.len(), 3);
        assert_eq!(t.intra_hops(&t.intra_routes()[1]), &[n(2), n(3)]);
    }

    #[test]
    fn ecmp_keeps_a_message_on_one_path_and_spreads_flows() {
        let t = table(ValidPolicy::default());
        let pick = |src: u64, msg: u64| t.lookup(DomainId(1), n(5), n(src), msg).unwrap();
        // Same (src, dst, msg): same hop, always.
        for msg in 0..50 {
            assert_eq!(pick(9, msg), pick(9, msg));
        }
        // Different messages spread over both hops roughly evenly.
        let mut counts = [0usize; 2];
        for msg in 0..10_000 {
            match pick(9, msg) {
                NextHop::Forward(h) if h == n(2) => counts[0] += 1,
                NextHop::Forward(h) if h == n(3) => counts[1] += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            counts.iter().all(|c| (4_500..5_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn chunk_bits_group_chunks() {
        let nbrs: Vec<NodeId> = (2..10).map(n).collect();
        let mut b = TableBuilder::new();
        b.intra(n(20), 1, &[0xff], &nbrs);
        let t = b.build(
            n(1),
            DomainId(1),
            1,
            8,
            DomainMap::default(),
            Arc::new(ValidPolicy::default()),
        );
        for msg in [0u64, 0x100, 0x4200] {
            let first = t.lookup(DomainId(1), n(20), n(3), msg).unwrap();
            for chunk in 1..256 {
                assert_eq!(
                    t.lookup(DomainId(1), n(20), n(3), msg | chunk).unwrap(),
                    first
                );
            }
        }
    }

    #[test]
    fn policy_denies_and_rate_limits() {
        use crate::policy::RateLimit;
        let p = Policy {
            version: 2,
            deny_nodes: vec![n(5)],
            deny_domains: vec![DomainId(7)],
            rate_limits: vec![
                RateLimit {
                    dst: Destination::Domain(DomainId(1)),
                    msgs_per_s: 5,
                    burst: 5,
                },
                RateLimit {
                    dst: Destination::Node(n(6)),
                    msgs_per_s: 1,
                    burst: 1,
                },
            ],
            ..Policy::default()
        }
        .validate()
        .unwrap();
        let t = table(p);
        assert!(matches!(
            t.lookup(DomainId(1), n(5), n(9), 0),
            Err(RouteError::Denied { .. })
        ));
        assert!(matches!(
            t.lookup(DomainId(7), n(712), n(9), 0),
            Err(RouteError::Denied { .. })
        ));
        assert!(t.lookup(DomainId(1), n(6), n(9), 0).is_ok());
        assert_eq!(t.rate_limit(DomainId(1), n(6)).unwrap().msgs_per_s, 1);
        assert_eq!(t.rate_limit(DomainId(1), n(2)).unwrap().msgs_per_s, 5);
        assert_eq!(t.rate_limit(DomainId(3), n(300)), None);
    }

    #[test]
    fn fingerprint_ignores_generation_only() {
        let a = table(ValidPolicy::default());
        let mut b = a.clone();
        b.generation = 99;
        assert_eq!(a.fingerprint(), fingerprint(&b));
        let nbrs = [n(2)];
        let mut c = TableBuilder::new();
        c.intra(n(2), 2, &[1], &nbrs);
        let c = c.build(
            n(1),
            DomainId(1),
            1,
            0,
            DomainMap::default(),
            Arc::new(ValidPolicy::default()),
        );
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
