//! Shortest paths from one node over one domain's LSDB, keeping every equal-cost first hop.
//!
//! Dijkstra with a binary heap over the LSDB's dense slots. A link `u → v` is used only when
//! both ends advertise it `Up` (OSPF's two-way check), with `u`'s advertised cost. Summary
//! LSAs (foreign border nodes) are *leaves*: reachable, never transited, so a route inside the
//! domain never leaves it. Costs are `>= 1`, so every node on a shortest path to `v` is settled
//! before `v`, and the set of first hops of `v` is complete when `v` is popped: it is the union
//! of the first-hop sets of all its equal-cost predecessors.
//!
//! First-hop sets are bitsets over the root's usable neighbours (one `u64` per node when the
//! root has at most 64 neighbours, which is the usual case). The [`SpfWorkspace`] keeps its
//! vectors between runs: a run allocates nothing once the workspace has grown to the domain's
//! size, and the hot loop does no hashing (slot lookups are binary searches in the sorted LSDB).

use core::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ids::NodeId;
use crate::lsa::LinkState;
use crate::lsdb::Lsdb;

/// Errors of an SPF run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpfError {
    /// The root has no live LSA in the database.
    #[error("SPF root {root} has no LSA in the database")]
    RootMissing {
        /// The root.
        root: NodeId,
    },
}

/// Reusable SPF state and, after [`SpfWorkspace::run`], its results (by LSDB slot).
#[derive(Clone, Debug, Default)]
pub struct SpfWorkspace {
    dist: Vec<u64>,
    hops: Vec<u64>,
    words: usize,
    done: Vec<bool>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    root_neighbors: Vec<NodeId>,
    root_slot: usize,
}

const UNREACHED: u64 = u64::MAX;

impl SpfWorkspace {
    /// An empty workspace; it grows to the largest domain it runs on.
    #[must_use]
    pub fn new() -> SpfWorkspace {
        SpfWorkspace::default()
    }

    /// Computes shortest paths from `root` over `lsdb`. Results stay valid until the next run
    /// (and only for this `lsdb` state: slots are the LSDB's).
    ///
    /// # Panics
    /// Only on a broken invariant (a queued slot without a live LSA, more slots than `u32`).
    pub fn run(&mut self, lsdb: &Lsdb, root: NodeId) -> Result<(), SpfError> {
        let n = lsdb.len();
        let missing = SpfError::RootMissing { root };
        let root_slot = lsdb.slot_of(root).ok_or(missing.clone())?;
        let root_lsa = lsdb.live_at(root_slot).ok_or(missing)?;

        // The root's usable neighbours define the first-hop index space.
        self.root_neighbors.clear();
        for l in root_lsa.links() {
            if l.state == LinkState::Up && Self::two_way(lsdb, root, l.neighbor).is_some() {
                self.root_neighbors.push(l.neighbor);
            }
        }
        let words = self.root_neighbors.len().div_ceil(64).max(1);
        self.words = words;
        self.root_slot = root_slot;
        self.dist.clear();
        self.dist.resize(n, UNREACHED);
        self.hops.clear();
        self.hops.resize(n * words, 0);
        self.done.clear();
        self.done.resize(n, false);
        self.heap.clear();

        self.dist[root_slot] = 0;
        self.heap.push(Reverse((0, slot_u32(root_slot))));
        let mut root_index = 0usize;
        while let Some(Reverse((d, u))) = self.heap.pop() {
            let u = u as usize;
            if self.done[u] {
                continue;
            }
            debug_assert_eq!(d, self.dist[u]);
            self.done[u] = true;
            let lsa = lsdb.live_at(u).expect("only live slots are queued");
            if u != root_slot && lsa.is_summary() {
                continue; // a leaf: foreign border, never transited
            }
            let from = lsa.origin();
            for l in lsa.links() {
                if l.state != LinkState::Up {
                    continue;
                }
                let Some(v) = Self::two_way(lsdb, from, l.neighbor) else {
                    continue;
                };
                let root_bit = (u == root_slot).then(|| {
                    debug_assert_eq!(self.root_neighbors[root_index], l.neighbor);
                    root_index += 1;
                    root_index - 1
                });
                let nd = d + u64::from(l.cost);
                let replace = nd < self.dist[v];
                if (!replace && nd != self.dist[v]) || self.done[v] {
                    // Worse, or already settled (cost >= 1 means a settled node was reached
                    // more cheaply, so this cannot be an equal-cost offer).
                    debug_assert!(!self.done[v] || nd > self.dist[v]);
                    continue;
                }
                let base = v * words;
                if let Some(i) = root_bit {
                    if replace {
                        self.hops[base..base + words].fill(0);
                    }
                    self.hops[base + i / 64] |= 1u64 << (i % 64);
                } else {
                    for w in 0..words {
                        let x = self.hops[u * words + w];
                        let slot = &mut self.hops[base + w];
                        *slot = if replace { x } else { *slot | x };
                    }
                }
                if replace {
                    self.dist[v] = nd;
                    self.heap.push(Reverse((nd, slot_u32(v))));
                }
            }
            debug_assert!(u != root_slot || root_index == self.root_neighbors.len());
        }
        Ok(())
    }

    /// The slot of `neighbor` if `from → neighbor` passes the two-way check.
    fn two_way(lsdb: &Lsdb, from: NodeId, neighbor: NodeId) -> Option<usize> {
        let v = lsdb.slot_of(neighbor)?;
        let back = lsdb.live_at(v)?.link_to(from)?;
        (back.state == LinkState::Up).then_some(v)
    }

    /// Number of slots of the last run.
    #[must_use]
    pub fn len(&self) -> usize {
        self.dist.len()
    }

    /// Whether the last run had no slots.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dist.is_empty()
    }

    /// The root's slot in the last run.
    #[must_use]
    pub const fn root_slot(&self) -> usize {
        self.root_slot
    }

    /// Shortest distance from the root to `slot`, `None` when unreachable.
    #[must_use]
    pub fn distance(&self, slot: usize) -> Option<u64> {
        self.dist.get(slot).copied().filter(|d| *d != UNREACHED)
    }

    /// The root's usable neighbours: bit `i` of a first-hop set means `root_neighbors()[i]`.
    #[must_use]
    pub fn root_neighbors(&self) -> &[NodeId] {
        &self.root_neighbors
    }

    /// Words per first-hop bitset.
    #[must_use]
    pub const fn hop_words(&self) -> usize {
        self.words
    }

    /// The first-hop bitset of `slot` (empty for the root and unreachable slots).
    #[must_use]
    pub fn first_hop_bits(&self, slot: usize) -> &[u64] {
        &self.hops[slot * self.words..(slot + 1) * self.words]
    }

    /// Every equal-cost first hop towards `slot`, in the root's link order.
    pub fn first_hops(&self, slot: usize) -> impl Iterator<Item = NodeId> + '_ {
        bits(self.first_hop_bits(slot)).map(|i| self.root_neighbors[i])
    }

    /// Heap bytes held by the workspace.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.dist.capacity() * 8
            + self.hops.capacity() * 8
            + self.done.capacity()
            + self.heap.capacity() * 16
            + self.root_neighbors.capacity() * 8
    }
}

/// Indices of the set bits of a bitset, ascending.
pub(crate) fn bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(w, &word)| {
        let mut x = word;
        core::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let b = x.trailing_zeros() as usize;
            x &= x - 1;
            Some(w * 64 + b)
        })
    })
}

fn slot_u32(slot: usize) -> u32 {
    u32::try_from(slot).expect("LSDB slots are bounded by max_origins")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DomainId, SeqNo};
    use crate::lsa::tests::n;
    use crate::lsa::{DomainMembers, Link, Lsa, LsaInstance, NodeRange, Summary};
    use core::time::Duration;
    use proptest::prelude::*;

    const D: DomainId = DomainId(1);

    /// A directed link list: (from, to, cost, up).
    type Edges = Vec<(u64, u64, u32, bool)>;

    fn build(nodes: u64, edges: &Edges, leaves: &[u64]) -> Lsdb {
        let mut db = Lsdb::new(D, n(1), 256);
        for u in 1..=nodes {
            let mut links: Vec<Link> = Vec::new();
            for &(a, b, c, up) in edges {
                if a == u && !links.iter().any(|l| l.neighbor == n(b)) {
                    links.push(Link {
                        neighbor: n(b),
                        cost: c,
                        state: if up { LinkState::Up } else { LinkState::Down },
                    });
                }
            }
            let summary = leaves.contains(&u).then(|| {
                Summary::new(
                    DomainId(9),
                    vec![],
                    vec![DomainMembers::new(DomainId(9), vec![NodeRange::single(n(u))]).unwrap()],
                )
                .unwrap()
            });
            let lsa = Lsa::new(n(u), D, SeqNo(1), links, summary).unwrap();
            if u == 1 {
                db.install_own(lsa, Duration::ZERO).unwrap();
            } else {
                db.install(LsaInstance { age_s: 0, lsa }, Duration::ZERO)
                    .unwrap();
            }
        }
        db
    }

    fn hops_of(ws: &SpfWorkspace, db: &Lsdb, node: u64) -> Vec<u64> {
        let mut v: Vec<u64> = ws
            .first_hops(db.slot_of(n(node)).unwrap())
            .map(NodeId::get)
            .collect();
        v.sort_unstable();
        v
    }

    fn sym(a: u64, b: u64, c: u32) -> [(u64, u64, u32, bool); 2] {
        [(a, b, c, true), (b, a, c, true)]
    }

    #[test]
    fn diamond_has_two_equal_cost_first_hops() {
        // 1 - 2 - 4 and 1 - 3 - 4, equal costs; 5 hangs off 4.
        let edges: Edges = [
            sym(1, 2, 1),
            sym(1, 3, 1),
            sym(2, 4, 1),
            sym(3, 4, 1),
            sym(4, 5, 2),
        ]
        .concat();
        let db = build(5, &edges, &[]);
        let mut ws = SpfWorkspace::new();
        ws.run(&db, n(1)).unwrap();
        assert_eq!(ws.distance(db.slot_of(n(4)).unwrap()), Some(2));
        assert_eq!(ws.distance(db.slot_of(n(5)).unwrap()), Some(4));
        assert_eq!(hops_of(&ws, &db, 4), vec![2, 3]);
        assert_eq!(hops_of(&ws, &db, 5), vec![2, 3]);
        assert_eq!(hops_of(&ws, &db, 2), vec![2]);
        assert!(hops_of(&ws, &db, 1).is_empty());
    }

    #[test]
    fn one_way_and_down_links_are_not_used() {
        let mut edges: Edges = sym(1, 2, 1).to_vec();
        edges.push((2, 3, 1, true)); // 3 does not list 2
        edges.extend([(1, 4, 1, true), (4, 1, 1, false)]); // 4 lists the link down
        let db = build(4, &edges, &[]);
        let mut ws = SpfWorkspace::new();
        ws.run(&db, n(1)).unwrap();
        assert_eq!(ws.distance(db.slot_of(n(3)).unwrap()), None);
        assert_eq!(ws.distance(db.slot_of(n(4)).unwrap()), None);
        assert_eq!(ws.root_neighbors(), &[n(2)]);
    }

    #[test]
    fn leaves_are_reached_but_not_transited() {
        // 1 - 2 (leaf) - 3 cheap, 1 - 3 expensive: 3 must be reached directly.
        let edges: Edges = [sym(1, 2, 1), sym(2, 3, 1), sym(1, 3, 10)].concat();
        let db = build(3, &edges, &[2]);
        let mut ws = SpfWorkspace::new();
        ws.run(&db, n(1)).unwrap();
        assert_eq!(ws.distance(db.slot_of(n(2)).unwrap()), Some(1));
        assert_eq!(ws.distance(db.slot_of(n(3)).unwrap()), Some(10));
        assert_eq!(hops_of(&ws, &db, 3), vec![3]);
    }

    #[test]
    fn missing_root_is_an_error() {
        let db = Lsdb::new(D, n(1), 4);
        assert_eq!(
            SpfWorkspace::new().run(&db, n(1)),
            Err(SpfError::RootMissing { root: n(1) })
        );
    }

    #[test]
    fn more_than_64_first_hops() {
        // A star of 100 spokes all reaching a hub at equal cost.
        let mut edges: Edges = Vec::new();
        for s in 2..=101 {
            edges.extend(sym(1, s, 1));
            edges.extend(sym(s, 102, 1));
        }
        let db = build(102, &edges, &[]);
        let mut ws = SpfWorkspace::new();
        ws.run(&db, n(1)).unwrap();
        assert_eq!(ws.hop_words(), 2);
        assert_eq!(hops_of(&ws, &db, 102), (2..=101).collect::<Vec<_>>());
    }

    fn ix(x: u64) -> usize {
        usize::try_from(x).unwrap()
    }

    /// Floyd–Warshall over the usable directed edges, and the first-hop sets it implies.
    fn model(nodes: u64, edges: &Edges, leaves: &[u64]) -> (Vec<Option<u64>>, Vec<Vec<u64>>) {
        let k = ix(nodes);
        let mut cost = vec![vec![None::<u32>; k + 1]; k + 1];
        let lists = |a: u64, b: u64| edges.iter().find(|e| e.0 == a && e.1 == b).copied();
        for a in 1..=nodes {
            for b in 1..=nodes {
                if a == b || (a != 1 && leaves.contains(&a)) {
                    continue;
                }
                if let (Some(f), Some(r)) = (lists(a, b), lists(b, a))
                    && f.3
                    && r.3
                {
                    cost[ix(a)][ix(b)] = Some(f.2);
                }
            }
        }
        let inf = u64::MAX / 4;
        let mut d = vec![vec![inf; k + 1]; k + 1];
        for i in 1..=k {
            d[i][i] = 0;
            for j in 1..=k {
                if let Some(c) = cost[i][j] {
                    d[i][j] = d[i][j].min(u64::from(c));
                }
            }
        }
        for m in 1..=k {
            for i in 1..=k {
                for j in 1..=k {
                    let via = d[i][m] + d[m][j];
                    if via < d[i][j] {
                        d[i][j] = via;
                    }
                }
            }
        }
        let dist: Vec<Option<u64>> = (0..=k)
            .map(|t| (t >= 1 && d[1][t] < inf).then_some(d[1][t]))
            .collect();
        let hops = (0..=k)
            .map(|t| {
                if t <= 1 || d[1][t] >= inf {
                    return vec![];
                }
                (2..=k)
                    .filter(|&v| cost[1][v].is_some_and(|c| u64::from(c) + d[v][t] == d[1][t]))
                    .map(|v| v as u64)
                    .collect()
            })
            .collect();
        (dist, hops)
    }

    fn arb_graph() -> impl Strategy<Value = (u64, Edges, Vec<u64>)> {
        (2u64..=12).prop_flat_map(|nodes| {
            let edge = (
                1..=nodes,
                1..=nodes,
                1u32..=4,
                proptest::bool::weighted(0.9),
            );
            (
                Just(nodes),
                proptest::collection::vec(edge, 0..40),
                proptest::collection::vec(any::<bool>(), 0..=2),
                proptest::collection::vec(2..=nodes, 0..3),
            )
                .prop_map(|(nodes, raw, sym_flags, leaves)| {
                    let mut edges: Edges = Vec::new();
                    for (i, (a, b, c, up)) in raw.into_iter().enumerate() {
                        if a == b || edges.iter().any(|e| e.0 == a && e.1 == b) {
                            continue;
                        }
                        edges.push((a, b, c, up));
                        // Mostly symmetric graphs, sometimes asymmetric costs or one-way links.
                        let symmetric = sym_flags.get(i % 3).copied().unwrap_or(true);
                        if symmetric && !edges.iter().any(|e| e.0 == b && e.1 == a) {
                            edges.push((b, a, c, up));
                        }
                    }
                    (nodes, edges, leaves)
                })
        })
    }

    proptest! {
        #[test]
        fn spf_matches_floyd_warshall((nodes, edges, leaves) in arb_graph()) {
            let db = build(nodes, &edges, &leaves);
            let mut ws = SpfWorkspace::new();
            ws.run(&db, n(1)).unwrap();
            let (dist, hops) = model(nodes, &edges, &leaves);
            for t in 1..=nodes {
                let slot = db.slot_of(n(t)).unwrap();
                prop_assert_eq!(ws.distance(slot), dist[ix(t)], "distance to {}", t);
                prop_assert_eq!(hops_of(&ws, &db, t), hops[ix(t)].clone(), "first hops to {}", t);
            }
        }
    }
}
