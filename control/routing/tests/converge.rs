//! Deterministic multi-router simulation: ~20 `Router`s in 3 domains wired in memory.
//!
//! Messages are encoded to bytes and decoded again on delivery, delivered in an order shuffled
//! by a seeded generator, optionally with loss (then retransmission timers do the work). After
//! convergence every node's table is checked against an independent model:
//! - intra-domain routes: Floyd–Warshall over the domain's own links, every equal-cost first hop;
//! - inter-domain routes: one per other domain, domain-level cost = shortest path over the
//!   domain graph (edge weight: the entering border's smallest link cost into the domain), next
//!   hops towards the nearest best exits;
//! - every packet walk from every node to every node arrives, without loops, and intra-domain
//!   walks cost exactly the shortest distance.
//!
//! Then links fail (inside a domain and between domains), nodes restart and die, and the same
//! checks run again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mesh_routing::{
    DomainId, DomainPreference, LinkCost, NextHop, NodeId, Policy, RouteTable, Router, RouterConfig,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn cost(&mut self, lo: u32, hi: u32) -> u32 {
        lo + u32::try_from(self.next() % u64::from(hi - lo + 1)).unwrap()
    }
}

const INF: u64 = u64::MAX / 4;
const DOMAIN_SIZES: [usize; 3] = [7, 7, 6];

struct Net {
    ids: Vec<NodeId>,
    dom: Vec<DomainId>,
    routers: Vec<Option<Router>>,
    /// Directed link costs; a link is up in both directions or absent.
    links: BTreeMap<(usize, usize), u32>,
    tables: Vec<Option<RouteTable>>,
    now: Duration,
    rng: Rng,
    loss_per_mille: u64,
    delivered: u64,
}

fn t0() -> Duration {
    Duration::from_secs(1)
}

impl Net {
    fn build(seed: u64, loss_per_mille: u64) -> Net {
        let mut rng = Rng(seed);
        let mut ids = Vec::new();
        let mut dom = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (d, &size) in DOMAIN_SIZES.iter().enumerate() {
            let d32 = u32::try_from(d + 1).unwrap();
            let mut m = Vec::new();
            for k in 1..=size {
                m.push(ids.len());
                ids.push(NodeId::new(u64::from(d32) * 100 + k as u64).unwrap());
                dom.push(DomainId(d32));
            }
            members.push(m);
        }
        let mut links = BTreeMap::new();
        let mut add = |rng: &mut Rng, a: usize, b: usize, lo: u32, hi: u32| {
            if a == b || links.contains_key(&(a, b)) {
                return;
            }
            let c = rng.cost(lo, hi);
            // A quarter of the links have different costs in each direction.
            let back = if rng.below(4) == 0 {
                rng.cost(lo, hi)
            } else {
                c
            };
            links.insert((a, b), c);
            links.insert((b, a), back);
        };
        for m in &members {
            for i in 0..m.len() {
                add(&mut rng, m[i], m[(i + 1) % m.len()], 1, 3);
            }
            for _ in 0..2 {
                let (a, b) = (m[rng.below(m.len())], m[rng.below(m.len())]);
                add(&mut rng, a, b, 1, 3);
            }
        }
        // Domain graph: 1-2 twice, 2-3 twice, 1-3 once.
        for (x, y, count) in [(0, 1, 2), (1, 2, 2), (0, 2, 1)] {
            for _ in 0..count {
                let a = members[x][rng.below(members[x].len())];
                let b = members[y][rng.below(members[y].len())];
                add(&mut rng, a, b, 10, 20);
            }
        }
        let n = ids.len();
        let mut net = Net {
            routers: (0..n)
                .map(|i| {
                    let mut cfg = RouterConfig::new(ids[i], dom[i]);
                    cfg.seed = seed ^ ids[i].get();
                    Some(Router::new(cfg, t0()).unwrap())
                })
                .collect(),
            ids,
            dom,
            links,
            tables: vec![None; n],
            now: t0(),
            rng,
            loss_per_mille,
            delivered: 0,
        };
        let pairs: Vec<(usize, usize)> = net.links.keys().copied().collect();
        for (a, b) in pairs {
            net.up(a, b);
        }
        net
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids.iter().position(|x| *x == id).unwrap()
    }

    fn router(&mut self, i: usize) -> &mut Router {
        self.routers[i].as_mut().expect("router alive")
    }

    /// Tells `a` that its link to `b` is up (one direction of the session).
    fn up(&mut self, a: usize, b: usize) {
        let (id, d, c, now) = (self.ids[b], self.dom[b], self.links[&(a, b)], self.now);
        self.router(a).handle_neighbor_up(id, d, c, now).unwrap();
    }

    fn fail_link(&mut self, a: usize, b: usize) {
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        let now = self.now;
        let (ia, ib) = (self.ids[a], self.ids[b]);
        if let Some(r) = self.routers[a].as_mut() {
            r.handle_neighbor_down(ib, now).unwrap();
        }
        if let Some(r) = self.routers[b].as_mut() {
            r.handle_neighbor_down(ia, now).unwrap();
        }
    }

    /// Polls, shuffles, delivers (maybe dropping), advances time for retransmissions, until
    /// nothing is in flight and nothing is unacknowledged.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let mut inflight: Vec<(usize, usize, Vec<u8>)> = Vec::new();
            for i in 0..self.routers.len() {
                let now = self.now;
                let Some(r) = self.routers[i].as_mut() else {
                    continue;
                };
                if let Some(t) = r.poll_routes(now) {
                    self.tables[i] = Some(t);
                }
                while let Some(tx) = r.poll_transmit() {
                    inflight.push((i, 0, tx.msg.to_bytes().unwrap()));
                    let to = tx.to;
                    let last = inflight.len() - 1;
                    inflight[last].1 = self.ids.iter().position(|x| *x == to).unwrap();
                }
            }
            if inflight.is_empty() {
                let unacked = self
                    .routers
                    .iter()
                    .flatten()
                    .any(|r| r.flooder().has_unacked());
                if !unacked {
                    return;
                }
                let next = self
                    .routers
                    .iter()
                    .flatten()
                    .filter_map(Router::poll_timeout)
                    .min()
                    .unwrap();
                self.now = self.now.max(next);
                let now = self.now;
                for r in self.routers.iter_mut().flatten() {
                    if r.poll_timeout().is_some_and(|t| t <= now) {
                        r.handle_timeout(now);
                    }
                }
                continue;
            }
            for i in (1..inflight.len()).rev() {
                let j = self.rng.below(i + 1);
                inflight.swap(i, j);
            }
            for (from, to, bytes) in inflight {
                // Sessions that went down drop what was in flight.
                if !self.links.contains_key(&(from, to)) || self.routers[to].is_none() {
                    continue;
                }
                if self.rng.below(1000) < usize::try_from(self.loss_per_mille).unwrap() {
                    continue;
                }
                let (id, now) = (self.ids[from], self.now);
                self.router(to).handle_bytes(id, &bytes, now).unwrap();
                self.delivered += 1;
            }
        }
        panic!("no convergence");
    }

    /// Steps time through every timer up to `until`, delivering as it goes.
    fn advance_to(&mut self, until: Duration) {
        loop {
            self.run();
            let next = self
                .routers
                .iter()
                .flatten()
                .filter_map(Router::poll_timeout)
                .min()
                .unwrap();
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            for r in self.routers.iter_mut().flatten() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
            }
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.ids.len())
            .filter(|i| self.routers[*i].is_some())
            .collect()
    }

    fn cost(&self, a: usize, b: usize) -> Option<u32> {
        self.links.get(&(a, b)).copied()
    }

    /// Shortest distances inside domain `d`, over its own links only.
    fn intra_dist(&self, d: DomainId) -> Vec<Vec<u64>> {
        let n = self.ids.len();
        let mut dist = vec![vec![INF; n]; n];
        let inside: Vec<usize> = self
            .alive()
            .into_iter()
            .filter(|i| self.dom[*i] == d)
            .collect();
        for &i in &inside {
            dist[i][i] = 0;
            for &j in &inside {
                if let Some(c) = self.cost(i, j) {
                    dist[i][j] = u64::from(c);
                }
            }
        }
        for &k in &inside {
            for &i in &inside {
                for &j in &inside {
                    let via = dist[i][k] + dist[k][j];
                    if via < dist[i][j] {
                        dist[i][j] = via;
                    }
                }
            }
        }
        dist
    }

    /// Checks every alive node's table against the model.
    fn check(&self) {
        let alive = self.alive();
        let domains: BTreeSet<DomainId> = alive.iter().map(|i| self.dom[*i]).collect();
        let dists: BTreeMap<DomainId, Vec<Vec<u64>>> =
            domains.iter().map(|d| (*d, self.intra_dist(*d))).collect();
        // Leaves attached to each domain: (leaf, its weight into the domain).
        let mut leaves: BTreeMap<DomainId, Vec<(usize, u64)>> = BTreeMap::new();
        for &d in &domains {
            for &b in &alive {
                if self.dom[b] == d {
                    continue;
                }
                let w = alive
                    .iter()
                    .filter(|a| self.dom[**a] == d)
                    .filter_map(|a| self.cost(b, *a))
                    .min();
                if let Some(w) = w {
                    leaves.entry(d).or_default().push((b, u64::from(w)));
                }
            }
        }
        // Domain-level distances (Floyd–Warshall over the domain graph).
        let dl: Vec<DomainId> = domains.iter().copied().collect();
        let di = |d: DomainId| dl.iter().position(|x| *x == d).unwrap();
        let mut delta = vec![vec![INF; dl.len()]; dl.len()];
        for (i, row) in delta.iter_mut().enumerate() {
            row[i] = 0;
        }
        for (d, ls) in &leaves {
            for (b, w) in ls {
                let (x, y) = (di(*d), di(self.dom[*b]));
                delta[x][y] = delta[x][y].min(*w);
            }
        }
        for k in 0..dl.len() {
            for i in 0..dl.len() {
                for j in 0..dl.len() {
                    let via = delta[i][k] + delta[k][j];
                    if via < delta[i][j] {
                        delta[i][j] = via;
                    }
                }
            }
        }

        for &u in &alive {
            let t = self.tables[u]
                .as_ref()
                .expect("every router published a table");
            let a = self.dom[u];
            let da = &dists[&a];
            let inside: Vec<usize> = alive
                .iter()
                .copied()
                .filter(|i| self.dom[*i] == a)
                .collect();
            let hops_to = |target_dist: &dyn Fn(usize) -> u64, total: u64| -> BTreeSet<NodeId> {
                let mut hops = BTreeSet::new();
                for &w in &alive {
                    if let Some(c) = self.cost(u, w)
                        && u64::from(c) + target_dist(w) == total
                    {
                        hops.insert(self.ids[w]);
                    }
                }
                hops
            };
            // Intra-domain: every other node of the domain, shortest cost, every first hop.
            assert_eq!(
                t.intra_routes().len(),
                inside.len() - 1,
                "node {}",
                self.ids[u]
            );
            for &v in &inside {
                if v == u {
                    continue;
                }
                let r = t
                    .intra_route(self.ids[v])
                    .expect("route to every domain member");
                assert_eq!(r.cost, da[u][v], "cost {} -> {}", self.ids[u], self.ids[v]);
                let expected =
                    hops_to(&|w| if self.dom[w] == a { da[w][v] } else { INF }, da[u][v]);
                let got: BTreeSet<NodeId> = t.intra_hops(r).iter().copied().collect();
                assert_eq!(got, expected, "hops {} -> {}", self.ids[u], self.ids[v]);
            }
            // Inter-domain: one route per other domain.
            assert_eq!(
                t.inter_routes().len(),
                domains.len() - 1,
                "node {}",
                self.ids[u]
            );
            let no_leaves = Vec::new();
            let attached = leaves.get(&a).unwrap_or(&no_leaves);
            // Distance from x (in a, or a leaf's neighbour) to leaf b.
            let to_leaf = |x: usize, b: usize| -> u64 {
                if self.dom[x] != a {
                    return if x == b { 0 } else { INF };
                }
                inside
                    .iter()
                    .filter_map(|&m| self.cost(m, b).map(|c| da[x][m] + u64::from(c)))
                    .min()
                    .unwrap_or(INF)
            };
            for &d in &domains {
                if d == a {
                    continue;
                }
                let k = delta[di(a)][di(d)];
                let best: Vec<usize> = attached
                    .iter()
                    .filter(|(b, w)| w + delta[di(self.dom[*b])][di(d)] == k)
                    .map(|(b, _)| *b)
                    .collect();
                let exit = best.iter().map(|b| to_leaf(u, *b)).min().unwrap();
                let mut expected = BTreeSet::new();
                for &b in best.iter().filter(|b| to_leaf(u, **b) == exit) {
                    expected.extend(hops_to(&|w| to_leaf(w, b), exit));
                }
                let r = t.inter_route(d).expect("route to every other domain");
                assert_eq!(
                    (r.domain_cost, r.exit_cost),
                    (k, exit),
                    "{} -> domain {d:?}",
                    self.ids[u]
                );
                let got: BTreeSet<NodeId> = t.inter_hops(r).iter().copied().collect();
                assert_eq!(got, expected, "hops {} -> domain {d:?}", self.ids[u]);
            }
            // Every node of the mesh resolves to its domain.
            for &v in &alive {
                assert_eq!(t.domain_of(self.ids[v]), Some(self.dom[v]));
            }
        }
    }

    /// Walks a frame from every node to every node by the tables.
    fn walk_all(&mut self) {
        let alive = self.alive();
        for &s in &alive {
            for &d in &alive {
                self.walk(s, d);
            }
        }
    }

    /// Walks one frame from `s` to `d` by the tables: the nodes it visits, `s` and `d`
    /// included. Panics on a loop or a failed lookup; checks intra-domain walks are shortest.
    fn walk(&mut self, s: usize, d: usize) -> Vec<usize> {
        let alive = self.alive();
        let msg_id = self.rng.next();
        let (mut cur, mut cost) = (s, 0u64);
        let mut visited = vec![s];
        loop {
            let t = self.tables[cur].as_ref().unwrap();
            match t.lookup(self.dom[d], self.ids[d], self.ids[s], msg_id) {
                Ok(NextHop::Local) => {
                    assert_eq!(cur, d);
                    break;
                }
                Ok(NextHop::Forward(n)) => {
                    let next = self.index(n);
                    cost += u64::from(self.cost(cur, next).expect("next hop is adjacent"));
                    cur = next;
                    visited.push(cur);
                }
                Err(e) => panic!("{} -> {}: {e}", self.ids[s], self.ids[d]),
            }
            assert!(
                visited.len() <= alive.len() + 1,
                "loop from {} to {}",
                self.ids[s],
                self.ids[d]
            );
        }
        if self.dom[s] == self.dom[d] {
            assert_eq!(cost, self.intra_dist(self.dom[s])[s][d]);
        }
        visited
    }

    fn received(&self) -> Vec<u64> {
        self.routers
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| r.metrics().flood.lsas_received))
            .collect()
    }

    fn assert_nothing_rejected(&self) {
        for r in self.routers.iter().flatten() {
            assert_eq!(r.metrics().flood.lsas_rejected, 0, "node {}", r.node());
            assert_eq!(r.metrics().messages_rejected, 0, "node {}", r.node());
        }
    }

    /// Whether `members` (all alive) stay connected over the current links, restricted to
    /// links whose both ends satisfy `inside`.
    fn connected(&self, members: &[usize], inside: impl Fn(usize) -> bool) -> bool {
        let mut seen = BTreeSet::from([members[0]]);
        let mut stack = vec![members[0]];
        while let Some(x) = stack.pop() {
            for (&(a, b), _) in self.links.range((x, 0)..(x + 1, 0)) {
                debug_assert_eq!(a, x);
                if inside(b) && seen.insert(b) {
                    stack.push(b);
                }
            }
        }
        members.iter().all(|m| seen.contains(m))
    }

    /// A random link with `pick`, whose failure keeps every domain internally connected and
    /// the whole mesh connected.
    fn removable_link(&mut self, pick: impl Fn(&Net, usize, usize) -> bool) -> (usize, usize) {
        let candidates: Vec<(usize, usize)> = self
            .links
            .keys()
            .copied()
            .filter(|&(a, b)| a < b && pick(self, a, b))
            .collect();
        for _ in 0..100 {
            let (a, b) = candidates[self.rng.below(candidates.len())];
            let saved = (self.links[&(a, b)], self.links[&(b, a)]);
            self.links.remove(&(a, b));
            self.links.remove(&(b, a));
            let alive = self.alive();
            let ok = DOMAIN_SIZES.iter().enumerate().all(|(d, _)| {
                let d = DomainId(u32::try_from(d + 1).unwrap());
                let m: Vec<usize> = alive
                    .iter()
                    .copied()
                    .filter(|i| self.dom[*i] == d)
                    .collect();
                self.connected(&m, |x| self.dom[x] == d)
            }) && self.connected(&alive, |_| true);
            self.links.insert((a, b), saved.0);
            self.links.insert((b, a), saved.1);
            if ok {
                return (a, b);
            }
        }
        panic!("no removable link");
    }
}

fn scenario(seed: u64, loss_per_mille: u64) {
    let mut net = Net::build(seed, loss_per_mille);
    net.run();
    net.check();
    net.walk_all();

    // An intra-domain link fails: routes change inside that domain only, and — the domain
    // staying connected — no LSA reaches any other domain (SPEC §9).
    let (a, b) = net.removable_link(|n, a, b| n.dom[a] == n.dom[b]);
    let before = net.received();
    net.fail_link(a, b);
    net.run();
    net.check();
    net.walk_all();
    let after = net.received();
    for i in net.alive() {
        if net.dom[i] != net.dom[a] {
            assert_eq!(
                before[i], after[i],
                "node {} heard of a change elsewhere",
                net.ids[i]
            );
        }
    }

    // An inter-domain link fails: domain routes re-converge.
    let (a, b) = net.removable_link(|n, a, b| n.dom[a] != n.dom[b]);
    net.fail_link(a, b);
    net.run();
    net.check();
    net.walk_all();
    net.assert_nothing_rejected();
}

#[test]
fn converges_and_reconverges_lossless() {
    for seed in 1..=6 {
        scenario(seed, 0);
    }
}

#[test]
fn converges_and_reconverges_with_loss() {
    for seed in 11..=13 {
        scenario(seed, 150);
    }
}

/// Every domain prefers, towards each other domain, the foreign borders in its own seeded
/// order, and domains 1 and 3 avoid transit through domain 2 (though it is cheaper): every walk
/// still arrives without a loop, every table keeps one route per other domain, and traffic
/// between domains 1 and 3 stays off domain 2 while their direct link is up — and goes
/// through it once it is not.
#[test]
fn domain_preferences_steer_without_loops() {
    for seed in 41..=44 {
        let mut net = Net::build(seed, 0);
        net.run();
        let domains: Vec<DomainId> = (1..=3).map(DomainId).collect();
        for &home in &domains {
            let mut rng = Rng(seed ^ u64::from(home.0));
            let mut prefs = Vec::new();
            for &d in domains.iter().filter(|d| **d != home) {
                let mut borders: Vec<NodeId> = (0..net.ids.len())
                    .filter(|i| net.dom[*i] != home)
                    .map(|i| net.ids[i])
                    .collect();
                for i in (1..borders.len()).rev() {
                    borders.swap(i, rng.below(i + 1));
                }
                prefs.push(DomainPreference {
                    // Entering 1 or 3 directly costs more than going round through 2, so
                    // only avoid-transit keeps traffic between them off domain 2.
                    extra_cost: if home == DomainId(2) || d == DomainId(2) {
                        0
                    } else {
                        50
                    },
                    preferred_border_nodes: borders,
                    avoid_transit: d == DomainId(2),
                    domain: d,
                });
            }
            let policy = Policy {
                version: 1,
                domain_preferences: prefs,
                ..Policy::default()
            };
            for i in 0..net.ids.len() {
                if net.dom[i] == home {
                    net.router(i).handle_set_policy(policy.clone()).unwrap();
                }
            }
        }
        net.run();
        net.walk_all();
        for t in net.tables.iter().flatten() {
            assert_eq!(t.inter_routes().len(), 2);
        }
        let between_1_and_3 = |net: &Net| -> Vec<(usize, usize)> {
            let alive = net.alive();
            let mut pairs = Vec::new();
            for &s in &alive {
                for &d in &alive {
                    let (a, b) = (net.dom[s].0, net.dom[d].0);
                    if a != b && a != 2 && b != 2 {
                        pairs.push((s, d));
                    }
                }
            }
            pairs
        };
        for (s, d) in between_1_and_3(&net) {
            let path = net.walk(s, d);
            assert!(
                path.iter().all(|v| net.dom[*v] != DomainId(2)),
                "seed {seed}: {} -> {} transits domain 2",
                net.ids[s],
                net.ids[d]
            );
        }
        // The only 1–3 link fails: domain 2 is the only way, and it is used.
        let direct: Vec<(usize, usize)> = net
            .links
            .keys()
            .copied()
            .filter(|&(a, b)| a < b && net.dom[a] != DomainId(2) && net.dom[b] != DomainId(2))
            .filter(|&(a, b)| net.dom[a] != net.dom[b])
            .collect();
        assert!(!direct.is_empty(), "Net::build links domains 1 and 3");
        for (a, b) in direct {
            net.fail_link(a, b);
        }
        net.run();
        net.walk_all();
        for (s, d) in between_1_and_3(&net) {
            let path = net.walk(s, d);
            assert!(path.iter().any(|v| net.dom[*v] == DomainId(2)));
        }
        net.assert_nothing_rejected();
    }
}

#[test]
fn restarted_node_takes_over_its_old_lsa() {
    let mut net = Net::build(21, 0);
    net.run();
    let victim = 3;
    // Some history first: the victim re-originates a few times (policy cost changes), so the
    // network holds its instance with a number well past 1 and content that will differ.
    let first_neighbor = net.ids[net.links.keys().find(|(a, _)| *a == victim).unwrap().1];
    for version in 1..=4 {
        let policy = Policy {
            version,
            link_costs: vec![LinkCost {
                neighbor: first_neighbor,
                cost: 40 + u32::try_from(version).unwrap(),
            }],
            ..Policy::default()
        };
        net.router(victim).handle_set_policy(policy).unwrap();
        net.run();
    }
    let old_seq = net.routers[victim]
        .as_ref()
        .unwrap()
        .lsdb()
        .get(net.ids[victim])
        .unwrap()
        .seq();
    // Sessions drop, the node restarts from scratch (sequence 1) with the same links.
    let neighbors: Vec<usize> = net
        .links
        .keys()
        .filter(|(a, _)| *a == victim)
        .map(|(_, b)| *b)
        .collect();
    let now = net.now;
    for &nb in &neighbors {
        let id = net.ids[victim];
        net.router(nb).handle_neighbor_down(id, now).unwrap();
    }
    let cfg = RouterConfig::new(net.ids[victim], net.dom[victim]);
    net.routers[victim] = Some(Router::new(cfg, now).unwrap());
    net.tables[victim] = None;
    for &nb in &neighbors {
        net.up(victim, nb);
        net.up(nb, victim);
    }
    net.run();
    net.check();
    net.walk_all();
    let new_seq = net.routers[victim]
        .as_ref()
        .unwrap()
        .lsdb()
        .get(net.ids[victim])
        .unwrap()
        .seq();
    assert!(
        new_seq.is_newer_than(old_seq),
        "jumped past the old number: {old_seq:?} -> {new_seq:?}"
    );
    // Every node holds the restarted node's current instance, with its current (default) costs.
    let id = net.ids[victim];
    let cost = net.links[&(victim, net.index(first_neighbor))];
    for r in net.routers.iter().flatten() {
        if r.domain() == net.dom[victim] {
            let lsa = r.lsdb().get(id).unwrap();
            assert_eq!(lsa.seq(), new_seq);
            assert_eq!(lsa.link_to(first_neighbor).unwrap().cost, cost);
        }
    }
}

#[test]
fn dead_node_is_purged_after_max_age() {
    let mut net = Net::build(31, 0);
    net.run();
    // Pick a node whose death leaves its domain and the mesh connected.
    let victim = (0..net.ids.len())
        .find(|&v| {
            let rest: Vec<usize> = (0..net.ids.len()).filter(|i| *i != v).collect();
            let d = net.dom[v];
            let m: Vec<usize> = rest.iter().copied().filter(|i| net.dom[*i] == d).collect();
            net.connected(&rest, |x| x != v) && net.connected(&m, |x| x != v && net.dom[x] == d)
        })
        .unwrap();
    let neighbors: Vec<usize> = net
        .links
        .keys()
        .filter(|(a, _)| *a == victim)
        .map(|(_, b)| *b)
        .collect();
    for nb in neighbors {
        net.fail_link(victim, nb);
    }
    net.routers[victim] = None;
    net.run();
    net.check();
    net.walk_all();
    let dead = net.ids[victim];
    let holders = net
        .routers
        .iter()
        .flatten()
        .filter(|r| r.lsdb().get(dead).is_some())
        .count();
    assert!(holders > 0, "the dead node's LSA lingers until MaxAge");
    // An hour later (refreshes of everyone else happen meanwhile) it is gone everywhere.
    net.advance_to(net.now + Duration::from_secs(3700));
    net.run();
    for r in net.routers.iter().flatten() {
        assert!(
            r.lsdb().get(dead).is_none(),
            "{} still holds {dead}",
            r.node()
        );
    }
    net.check();
    net.walk_all();
    for i in net.alive() {
        let t = net.tables[i].as_ref().unwrap();
        assert_eq!(
            t.domain_of(dead),
            None,
            "member sets shrink after the purge"
        );
    }
    net.assert_nothing_rejected();
}
