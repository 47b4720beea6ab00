//! Hierarchical mode: a million nodes, one domain at a time, every figure from real routers.
//!
//! A live mesh of 1,000 × 1,000 routers does not fit in memory: each node's LSDB index alone is
//! 24 bytes per origin of its domain, ~24 GB for the mesh. But node-level flooding never leaves
//! a domain (that locality is what SPEC §9 claims), and a domain meets the rest of the mesh only
//! through the summary LSAs its border routers exchange. So the run has two stages.
//!
//! **Stage A, domain level** ([`Skeleton`]). Every border router of the mesh is a live
//! [`Router`], with its real inter-domain links. Each domain's interior is represented by
//! - its node LSAs — built exactly as the interior routers originate them, checked in stage B —
//!   delivered to each of its borders as one update, and
//! - virtual links between its borders (a clique), whose latency is the domain's flooding delay
//!   between them (the least-latency path: flooding's first copy travels exactly that path,
//!   processing taking no simulated time) and whose cost is their shortest-path distance.
//!
//! What a border puts in its summaries depends only on its domain's member set and the foreign
//! summaries that reach it, so stage A computes the domain-level protocol exactly: the join of
//! the mesh (every inter-domain link comes up at once, domains' interiors already converged)
//! and the inter-domain link failure. Every update sent over an inter-domain link is recorded
//! with its time.
//!
//! **Stage B, every domain in full** ([`run_domain`]), one at a time on worker threads. All the
//! domain's routers are live; the far end of each of its inter-domain links is a *stub* that
//! replays, at the recorded times, the updates that border router sent in stage A, and
//! acknowledges what it receives. A sampled domain boots cold, replays the join and the
//! inter-domain link failure; any other starts *warm* (each router is handed the converged
//! database, then computes once). Failure domains then lose a link and a node. Checked: every
//! node LSA equals what stage A was given, every border's summaries equal stage A's (after the
//! join and after the failure), every table has one route per node of the domain and per other
//! domain.
//!
//! At reduced sizes this reproduces the live mode ([`crate::live`]) figure for figure (see
//! `tests/reduced.rs`).
//!
//! **Not simulated**: transient states of one domain as seen by another. Stage A's borders know
//! their interior from the start, so the summaries a domain's borders send while it is still
//! booting are acknowledged by the stubs but reach no other domain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mesh_routing::{DomainId, Link, Lsa, Message, NodeId, Router, SeqNo, SpfWorkspace};

use crate::engine::{Engine, Micros, Scope, Traffic};
use crate::figures::{
    DomainFigures, InterFailure, LinkFailure, NodeFailure, NodeSample, Phase, RunOutput,
    SkeletonFigures,
};
use crate::scenario::{
    SETTLE_US, SPF_RETIME_EVERY, SimConfig, choose_inter_failure, choose_link_failure,
    choose_node_failure, expected_entries, instances, node_sample, retime_compute, router_config,
    same_instance,
};
use crate::topology::{Adjacency, NodeRef, Topology, domain_id, node_id, u32_of};

/// Updates one stub sends, by time from the start of the phase.
type Script = Vec<(Micros, Message)>;

/// What stage A hands to stage B.
#[derive(Debug, Default)]
pub struct Skeleton {
    /// Per inter-domain link direction `(from, to)`: what `from` sent during the join.
    join_scripts: HashMap<(NodeId, NodeId), Script>,
    /// The same during the inter-domain link failure (times from the failure).
    failure_scripts: HashMap<(NodeId, NodeId), Script>,
    /// `(border, into domain)` → its summary once the join converged.
    join_summaries: HashMap<(NodeId, DomainId), Lsa>,
    /// The same once the failure converged.
    failure_summaries: HashMap<(NodeId, DomainId), Lsa>,
    /// Per domain, the node LSAs of its non-border nodes, by local index.
    interior: Vec<Vec<(u32, Lsa)>>,
    /// The inter-domain link that fails.
    failed_link: Option<usize>,
    /// Stage A's figures.
    pub figures: SkeletonFigures,
    /// Heap bytes of stage A's shared SPF workspace.
    pub spf_workspace_bytes: u64,
    /// Simulated time stage A ended at.
    pub end_us: Micros,
    /// The run's seed.
    seed: u64,
}

/// Shortest distances from `src` over `adj`, with `weight(cost, latency_us)` per link.
fn dijkstra(adj: &Adjacency, src: u32, weight: impl Fn(u32, u32) -> u64) -> Vec<u64> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut dist = vec![u64::MAX; adj.len()];
    dist[src as usize] = 0;
    let mut heap = BinaryHeap::from([Reverse((0u64, src))]);
    while let Some(Reverse((du, u))) = heap.pop() {
        if du > dist[u as usize] {
            continue;
        }
        for &(v, cost, lat) in &adj[u as usize] {
            let dv = du + weight(cost, lat);
            if dv < dist[v as usize] {
                dist[v as usize] = dv;
                heap.push(Reverse((dv, v)));
            }
        }
    }
    dist
}

/// The node LSA node `local` of domain `d` originates once all its links (intra- and
/// inter-domain) are up: what the router's first origination produces (sequence number 2: 1 is
/// the empty LSA it starts with). Stage B checks every router it is used for against it.
fn node_lsa(topo: &Topology, d: u32, local: u32, adj: &Adjacency) -> Lsa {
    let mut links: Vec<Link> = adj[local as usize]
        .iter()
        .map(|&(n, cost, _)| Link::up(node_id(d, n), cost))
        .collect();
    for (k, far) in topo.inter_links_of(d, local) {
        links.push(Link::up(
            node_id(far.domain, far.local),
            topo.inter[k as usize].cost,
        ));
    }
    links.sort_unstable_by_key(|l| l.neighbor);
    Lsa::new(
        node_id(d, local),
        domain_id(d),
        SeqNo::INITIAL.next(),
        links,
        None,
    )
    .expect("a valid node LSA")
}

/// Every `(summary, into domain)` the skeleton's border routers originate.
fn summaries(e: &Engine) -> HashMap<(NodeId, DomainId), Lsa> {
    let mut out = HashMap::new();
    for (_, slot) in e.routers() {
        let r = &slot.router;
        for (_, z, _) in r.neighbors() {
            if z != r.domain()
                && let Some(s) = r.flooder().own_summary(z)
            {
                out.insert((r.node(), z), s.clone());
            }
        }
    }
    out
}

/// Turns recorded inter-domain updates into per-direction scripts, times relative to `start`,
/// keeping only the sender's own summaries (what a stub may send); returns the items left out.
fn scripts(
    recorded: Vec<crate::engine::Recorded>,
    start: Micros,
    keep: impl Fn(NodeId) -> bool,
    out: &mut HashMap<(NodeId, NodeId), Script>,
) -> u64 {
    let mut dropped = 0;
    for r in recorded {
        let Message::Update(items) = r.msg else {
            continue;
        };
        if !keep(r.to) {
            continue;
        }
        let total = items.len();
        let own: Vec<_> = items
            .into_iter()
            .filter(|i| i.lsa.origin() == r.from && i.lsa.is_summary())
            .collect();
        dropped += (total - own.len()) as u64;
        if !own.is_empty() {
            out.entry((r.from, r.to))
                .or_default()
                .push((r.at - start, Message::Update(own)));
        }
    }
    dropped
}

impl Skeleton {
    /// Runs stage A: the join of the mesh and the inter-domain link failure at domain level.
    ///
    /// # Panics
    /// On a simulator bug (a router refusing its configuration or a link).
    #[must_use]
    pub fn run(cfg: &SimConfig, topo: &Topology) -> Skeleton {
        let dn = topo.domains.len();
        let want_inter = u32_of(dn) - 1;
        let mut e = Engine::new(dn, cfg.throttle, false);
        e.recorded = Some(Vec::new());
        let mut sk = Skeleton {
            seed: cfg.seed,
            ..Skeleton::default()
        };
        let mut idx: HashMap<NodeRef, u32> = HashMap::new();
        let borders: Vec<Vec<u32>> = (0..u32_of(dn)).map(|d| topo.borders(d)).collect();
        for (d, bs) in borders.iter().enumerate() {
            let d32 = u32_of(d);
            for &b in bs {
                let r = Router::new(router_config(topo, cfg.seed, d32, b), Duration::ZERO)
                    .expect("valid router config");
                idx.insert(
                    NodeRef {
                        domain: d32,
                        local: b,
                    },
                    e.add_router(r, d32),
                );
            }
        }
        sk.figures.routers = u32_of(e.len());

        // Each domain's interior: virtual links between its borders, its node LSAs.
        for (d, bs) in borders.iter().enumerate() {
            let d32 = u32_of(d);
            let dom = &topo.domains[d];
            let adj = dom.adjacency();
            let at = |b: u32| {
                idx[&NodeRef {
                    domain: d32,
                    local: b,
                }]
            };
            for (i, &bi) in bs.iter().enumerate() {
                let cost = dijkstra(&adj, bi, |c, _| u64::from(c));
                let lat = dijkstra(&adj, bi, |_, l| u64::from(l));
                for &bj in &bs[i + 1..] {
                    let c = u32::try_from(cost[bj as usize]).unwrap_or(u32::MAX).max(1);
                    let l = u32::try_from(lat[bj as usize]).unwrap_or(u32::MAX);
                    e.link_up(at(bi), at(bj), c, l, Scope::Domain(d32));
                    sk.figures.virtual_links += 1;
                }
            }
            let interior: Vec<(u32, Lsa)> = (0..dom.size)
                .filter(|l| bs.binary_search(l).is_err())
                .map(|l| (l, node_lsa(topo, d32, l, &adj)))
                .collect();
            let lsas: Vec<Lsa> = interior.iter().map(|(_, l)| l.clone()).collect();
            sk.figures.interior_lsas += lsas.len() as u64;
            for (i, &b) in bs.iter().enumerate() {
                // Delivered as from another border of the domain (any neighbour in it would do).
                let from = node_id(d32, bs[(i + 1) % bs.len()]);
                for chunk in lsas.chunks(mesh_routing::message::MAX_LSAS_PER_UPDATE) {
                    e.inject(from, at(b), Message::Update(instances(chunk)));
                }
            }
            sk.interior.push(interior);
        }

        // Join: every inter-domain link comes up at once.
        for l in &topo.inter {
            let (a, b) = (idx[&l.a], idx[&l.b]);
            e.link_up(a, b, l.cost, l.latency_us, Scope::Inter);
        }
        let last = e.run_until_quiet();
        sk.figures.join_converge_us = last;
        sk.figures.join_inter = e.inter;
        let recorded = e.recorded.replace(Vec::new()).unwrap_or_default();
        // Only sampled domains replay the join (the others start warm): keep what they need.
        let sampled = |to: NodeId| cfg.samples(key_domain(to).0 - 1);
        sk.figures.script_items_dropped += scripts(recorded, 0, sampled, &mut sk.join_scripts);
        sk.join_summaries = summaries(&e);
        let wrong = |e: &Engine| {
            e.routers()
                .filter(|(_, r)| r.table.is_none_or(|t| t.inter != want_inter))
                .count() as u64
        };
        sk.figures.routes_wrong += wrong(&e);
        if cfg.progress {
            eprintln!(
                "[mesh-sim] domain level: {} border routers joined in {:.0} ms simulated",
                e.len(),
                ms(last)
            );
        }

        // The inter-domain link failure.
        sk.failed_link = choose_inter_failure(topo, cfg.seed);
        if let Some(k) = sk.failed_link {
            let l = topo.inter[k];
            e.advance_to(e.now() + SETTLE_US);
            let start = e.now();
            let before_inter = e.inter;
            e.link_down(idx[&l.a], idx[&l.b]);
            let last = e.run_until_quiet();
            sk.figures.failure_converge_us = last.saturating_sub(start);
            sk.figures.failure_inter = e.inter.since(&before_inter);
            let recorded = e.recorded.take().unwrap_or_default();
            let mut reached: Vec<DomainId> = recorded.iter().map(|r| key_domain(r.to)).collect();
            reached.push(domain_id(l.a.domain));
            reached.push(domain_id(l.b.domain));
            reached.sort_unstable();
            reached.dedup();
            sk.figures.failure_domains_reached = u32_of(reached.len());
            let sampled = |to: NodeId| cfg.samples(key_domain(to).0 - 1);
            sk.figures.script_items_dropped +=
                scripts(recorded, start, sampled, &mut sk.failure_scripts);
            sk.failure_summaries = summaries(&e);
            let mut changed: Vec<DomainId> = Vec::new();
            for (key, lsa) in &sk.join_summaries {
                if sk
                    .failure_summaries
                    .get(key)
                    .is_none_or(|x| x.seq() != lsa.seq())
                {
                    changed.push(key_domain(key.0));
                }
            }
            for key in sk.failure_summaries.keys() {
                if !sk.join_summaries.contains_key(key) {
                    changed.push(key_domain(key.0));
                }
            }
            changed.sort_unstable();
            changed.dedup();
            sk.figures.failure_domains_changed = u32_of(changed.len());
            sk.figures.routes_wrong += wrong(&e);
        }
        sk.figures.protocol_errors = e.errors + e.lsas_rejected() + e.unacked() as u64;
        sk.spf_workspace_bytes = e.spf_workspace_bytes() as u64;
        sk.end_us = e.now();
        sk
    }
}

/// The home domain of node `id` (ids encode it).
fn key_domain(id: NodeId) -> DomainId {
    DomainId(u32::try_from(id.get() / 1_000_000).expect("domain ids fit u32"))
}

fn ms(us: Micros) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let x = us as f64 / 1000.0;
    x
}

/// One inter-domain link of the domain being run: its near end and the stub at the far end.
struct StubLink {
    link: usize,
    near: u32,
    far_id: NodeId,
    far_domain: DomainId,
    stub: u32,
}

/// What one domain's full run returns.
#[derive(Debug)]
pub struct DomainRun {
    /// Its figures.
    pub figures: DomainFigures,
    /// Its nodes, by local index.
    pub nodes: Vec<NodeSample>,
    /// Simulated time it ended at.
    pub end_us: Micros,
    /// Heap bytes of its shared SPF workspace.
    pub spf_workspace_bytes: u64,
}

struct DomainSim<'a> {
    topo: &'a Topology,
    e: Engine,
    idx: Vec<u32>,
    alive: u32,
    entries_wrong: u64,
}

struct Snap {
    traffic: Traffic,
    inter: Traffic,
    spf: u64,
    originated: u64,
    at: Micros,
}

impl DomainSim<'_> {
    fn originated(&self) -> u64 {
        self.idx
            .iter()
            .filter_map(|&i| self.e.router(i))
            .map(|r| r.router.metrics().flood.lsas_originated)
            .sum()
    }

    fn snap(&self) -> Snap {
        Snap {
            traffic: self.e.traffic[0],
            inter: self.e.inter,
            spf: self.e.spf_in[0],
            originated: self.originated(),
            at: self.e.now(),
        }
    }

    fn phase(&self, s: &Snap) -> Phase {
        Phase {
            traffic: self.e.traffic[0].since(&s.traffic),
            foreign: self.e.inter.since(&s.inter),
            originated: self.originated().saturating_sub(s.originated),
            converge_us: self.e.activity[0].saturating_sub(s.at),
            spf_runs: self.e.spf_in[0] - s.spf,
        }
    }

    fn check_entries(&mut self) {
        let want = expected_entries(self.alive, u32_of(self.topo.domains.len()));
        self.entries_wrong += self
            .idx
            .iter()
            .filter_map(|&i| self.e.router(i))
            .filter(|r| r.table.is_none_or(|t| t.entries() != want))
            .count() as u64;
    }

    /// Border summaries that differ from stage A's `expected`.
    fn summary_mismatches(
        &self,
        stubs: &[StubLink],
        expected: &HashMap<(NodeId, DomainId), Lsa>,
    ) -> u64 {
        let mut pairs: Vec<(u32, DomainId)> =
            stubs.iter().map(|s| (s.near, s.far_domain)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut wrong = 0;
        for (near, z) in pairs {
            let Some(r) = self.e.router(self.idx[near as usize]) else {
                continue;
            };
            let ours = r.router.flooder().own_summary(z);
            let theirs = expected.get(&(r.router.node(), z));
            let same = match (ours, theirs) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_content(b),
                _ => false,
            };
            wrong += u64::from(!same);
        }
        wrong
    }
}

/// Stage B for domain `d`: a cold boot and every experiment when the domain is sampled, a
/// warm start otherwise; then the inter-domain link failure as stage A saw it from here.
///
/// # Panics
/// On a simulator bug (a router refusing its configuration or a link).
#[must_use]
pub fn run_domain(cfg: &SimConfig, topo: &Topology, sk: &Skeleton, d: u32) -> DomainRun {
    let dom = &topo.domains[d as usize];
    let cold = cfg.samples(d);
    let mut sim = DomainSim {
        topo,
        e: Engine::new(1, cfg.throttle, false),
        idx: Vec::with_capacity(dom.size as usize),
        alive: dom.size,
        entries_wrong: 0,
    };
    let mut f = DomainFigures {
        index: d,
        size: dom.size,
        links: u32_of(dom.links.len()),
        borders: u32_of(topo.borders(d).len()),
        ..DomainFigures::default()
    };
    let stubs = if cold {
        start_cold(&mut sim, &mut f, sk, d)
    } else {
        start_warm(&mut sim, &mut f, sk, d)
    };
    sim.check_entries();
    f.summary_mismatches += sim.summary_mismatches(&stubs, &sk.join_summaries);
    let mut ws = SpfWorkspace::new();
    let nodes: Vec<NodeSample> = sim
        .idx
        .iter()
        .enumerate()
        .map(|(local, &i)| {
            let slot = sim.e.router(i).expect("all alive after start-up");
            let mut n = node_sample(slot);
            if u32_of(local).is_multiple_of(SPF_RETIME_EVERY) {
                n.spf_best_ns = retime_compute(&slot.router, &mut ws, 3);
            }
            n
        })
        .collect();

    // The inter-domain link failure, as stage A saw it from here (sampled domains: its cost
    // is several route computations per node wherever it reaches, most of the mesh).
    if let Some(k) = sk.failed_link.filter(|_| cold) {
        sim.e.advance_to(sim.e.now() + SETTLE_US);
        let s = sim.snap();
        for st in &stubs {
            if st.link == k {
                sim.e.link_down(sim.idx[st.near as usize], st.stub);
            }
        }
        for st in stubs.iter().filter(|st| st.link != k) {
            let near_id = node_id(d, st.near);
            if let Some(script) = sk.failure_scripts.get(&(st.far_id, near_id)) {
                for (at, msg) in script {
                    let to = sim.idx[st.near as usize];
                    sim.e
                        .schedule_stub_send(st.stub, to, s.at + at, msg.clone());
                }
            }
        }
        sim.e.run_until_quiet();
        f.inter_failure = Some(Phase {
            foreign: Traffic::default(),
            ..sim.phase(&s)
        });
        sim.check_entries();
        f.summary_mismatches += sim.summary_mismatches(&stubs, &sk.failure_summaries);
    }

    // One intra-domain link failure, one node failure.
    let fails = cfg.fails(d);
    let link = if fails {
        choose_link_failure(topo, cfg.seed, d)
    } else {
        None
    };
    if let Some((a, b)) = link {
        sim.e.advance_to(sim.e.now() + SETTLE_US);
        let s = sim.snap();
        let (ia, ib) = (sim.idx[a as usize], sim.idx[b as usize]);
        sim.e.link_down(ia, ib);
        sim.e.run_until_quiet();
        f.link_failure = Some(LinkFailure {
            a: sim.e.id(ia),
            b: sim.e.id(ib),
            phase: sim.phase(&s),
        });
        sim.check_entries();
    }
    let victim = if fails {
        choose_node_failure(topo, cfg.seed, d, link)
    } else {
        None
    };
    if let Some(v) = victim {
        sim.e.advance_to(sim.e.now() + SETTLE_US);
        let iv = sim.idx[v as usize];
        let r = &sim.e.router(iv).expect("alive").router;
        let degree = u32_of(r.neighbors().count());
        let own = r.metrics().flood.lsas_originated;
        let mut s = sim.snap();
        s.originated -= own;
        sim.e.kill(iv);
        sim.alive -= 1;
        sim.e.run_until_quiet();
        f.node_failure = Some(NodeFailure {
            node: sim.e.id(iv),
            degree,
            phase: sim.phase(&s),
        });
        sim.check_entries();
    }

    f.entries_wrong = sim.entries_wrong;
    f.protocol_errors = sim.e.errors + sim.e.lsas_rejected() + sim.e.unacked() as u64;
    DomainRun {
        figures: f,
        nodes,
        end_us: sim.e.now(),
        spf_workspace_bytes: sim.e.spf_workspace_bytes() as u64,
    }
}

/// Adds a stub for the far end of each inter-domain link of domain `d` (one per far node) and
/// brings the links up.
fn add_stubs(sim: &mut DomainSim<'_>, d: u32) -> Vec<StubLink> {
    let topo = sim.topo;
    let mut stubs = Vec::new();
    for &k in &topo.inter_of[d as usize] {
        let l = topo.inter[k as usize];
        let (near, far) = if l.a.domain == d {
            (l.a, l.b)
        } else {
            (l.b, l.a)
        };
        let far_id = node_id(far.domain, far.local);
        let far_domain = domain_id(far.domain);
        let peer = sim.idx[near.local as usize];
        let stub = match sim.e.index_of(far_id) {
            Some(i) => i,
            None => sim.e.add_stub(far_id, far_domain),
        };
        sim.e
            .link_up(peer, stub, l.cost, l.latency_us, Scope::Inter);
        stubs.push(StubLink {
            link: k as usize,
            near: near.local,
            far_id,
            far_domain,
            stub,
        });
    }
    stubs
}

/// Cold boot, then the join with the stubs replaying stage A's join.
fn start_cold(
    sim: &mut DomainSim<'_>,
    figs: &mut DomainFigures,
    sk: &Skeleton,
    d: u32,
) -> Vec<StubLink> {
    let (topo, cfg_seed) = (sim.topo, sk.seed);
    let dom = &topo.domains[d as usize];
    for local in 0..dom.size {
        let r = Router::new(router_config(topo, cfg_seed, d, local), Duration::ZERO)
            .expect("valid router config");
        sim.idx.push(sim.e.add_router(r, 0));
    }
    let s = sim.snap();
    for l in &dom.links {
        let (a, b) = (sim.idx[l.a as usize], sim.idx[l.b as usize]);
        sim.e.link_up(a, b, l.cost, l.latency_us, Scope::Domain(0));
    }
    sim.e.run_until_quiet();
    figs.boot = Some(sim.phase(&s));
    for (local, lsa) in &sk.interior[d as usize] {
        let r = &sim
            .e
            .router(sim.idx[*local as usize])
            .expect("alive")
            .router;
        let same = r
            .lsdb()
            .get(r.node())
            .is_some_and(|own| same_instance(own, lsa));
        figs.lsa_mismatches += u64::from(!same);
    }

    sim.e.advance_to(sim.e.now() + SETTLE_US);
    let s = sim.snap();
    let stubs = add_stubs(sim, d);
    for st in &stubs {
        let near_id = node_id(d, st.near);
        if let Some(script) = sk.join_scripts.get(&(st.far_id, near_id)) {
            for (at, msg) in script {
                let to = sim.idx[st.near as usize];
                sim.e
                    .schedule_stub_send(st.stub, to, s.at + at, msg.clone());
            }
        }
    }
    sim.e.run_until_quiet();
    figs.join = Some(Phase {
        foreign: Traffic::default(),
        ..sim.phase(&s)
    });
    stubs
}

/// Warm start: each router is handed the converged database of its domain (every node LSA but
/// its own, and the foreign borders' summaries) in an update from a loader neighbour that then
/// goes away; then all links come up, each router originates its own LSA and computes its
/// routes at once, and the stubs send their summaries.
fn start_warm(
    sim: &mut DomainSim<'_>,
    figs: &mut DomainFigures,
    sk: &Skeleton,
    d: u32,
) -> Vec<StubLink> {
    let topo = sim.topo;
    let dom = &topo.domains[d as usize];
    let adj = dom.adjacency();
    let domain = domain_id(d);
    let own: Vec<Lsa> = (0..dom.size).map(|l| node_lsa(topo, d, l, &adj)).collect();
    let mut foreign: Vec<(NodeId, Lsa)> = Vec::new();
    for &k in &topo.inter_of[d as usize] {
        let l = topo.inter[k as usize];
        let far = if l.a.domain == d { l.b } else { l.a };
        let far_id = node_id(far.domain, far.local);
        if let Some(s) = sk.join_summaries.get(&(far_id, domain)) {
            foreign.push((far_id, s.clone()));
        }
    }
    foreign.sort_unstable_by_key(|x| x.0);
    foreign.dedup_by_key(|x| x.0);
    let loader = NodeId::new(u64::from(domain.0) * 1_000_000).expect("non-zero");
    let s = sim.snap();
    for local in 0..dom.size {
        let mut r = Router::new(router_config(topo, sk.seed, d, local), Duration::ZERO)
            .expect("valid router config");
        let mut db: Vec<Lsa> = Vec::with_capacity(own.len() + foreign.len());
        db.extend(
            own.iter()
                .enumerate()
                .filter(|(i, _)| *i != local as usize)
                .map(|(_, l)| l.clone()),
        );
        db.extend(foreign.iter().map(|x| x.1.clone()));
        preload(&mut r, loader, &db);
        sim.idx.push(sim.e.add_router(r, 0));
    }
    for l in &dom.links {
        let (a, b) = (sim.idx[l.a as usize], sim.idx[l.b as usize]);
        sim.e.link_up(a, b, l.cost, l.latency_us, Scope::Domain(0));
    }
    let stubs = add_stubs(sim, d);
    for &i in &sim.idx {
        sim.e.poll_now(i);
    }
    let now = sim.e.now();
    for st in &stubs {
        if let Some(s) = sk.join_summaries.get(&(st.far_id, domain)) {
            let to = sim.idx[st.near as usize];
            let msg = Message::Update(instances(std::slice::from_ref(s)));
            sim.e.schedule_stub_send(st.stub, to, now, msg);
        }
    }
    sim.e.run_until_quiet();
    figs.warm = Some(Phase {
        foreign: Traffic::default(),
        ..sim.phase(&s)
    });
    for (local, lsa) in own.iter().enumerate() {
        let r = &sim.e.router(sim.idx[local]).expect("alive").router;
        let same = r
            .lsdb()
            .get(r.node())
            .is_some_and(|o| same_instance(o, lsa));
        figs.lsa_mismatches += u64::from(!same);
    }
    stubs
}

/// Hands `r` the LSAs `db` from a loader neighbour that comes up for the purpose and goes away;
/// what the router answers the loader is discarded.
fn preload(r: &mut Router, loader: NodeId, db: &[Lsa]) {
    let domain = r.domain();
    r.handle_neighbor_up(loader, domain, 1, Duration::ZERO)
        .expect("a valid loader neighbour");
    for chunk in db.chunks(mesh_routing::message::MAX_LSAS_PER_UPDATE) {
        r.handle_message(loader, Message::Update(instances(chunk)), Duration::ZERO)
            .expect("the loader is a neighbour");
    }
    r.handle_neighbor_down(loader, Duration::ZERO)
        .expect("the loader was up");
    while r.poll_transmit().is_some() {}
    while r.poll_event().is_some() {}
}

/// Runs both stages; stage B on `cfg.threads` threads (results do not depend on them).
///
/// # Panics
/// On a simulator bug, or if a worker thread panicked.
#[must_use]
pub fn run(cfg: &SimConfig, topo: &Topology) -> RunOutput {
    let started = Instant::now();
    let sk = Skeleton::run(cfg, topo);
    let dn = topo.domains.len();
    let next = AtomicUsize::new(0);
    let mut runs: Vec<Option<DomainRun>> = (0..dn).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..cfg.threads.min(dn.max(1)) {
            let tx = tx.clone();
            let (next, sk) = (&next, &sk);
            scope.spawn(move || {
                loop {
                    let d = next.fetch_add(1, Ordering::Relaxed);
                    if d >= dn {
                        break;
                    }
                    let run = run_domain(cfg, topo, sk, u32_of(d));
                    if tx.send((d, run)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0usize;
        let mut last_report = Instant::now();
        for (d, run) in rx {
            runs[d] = Some(run);
            done += 1;
            if cfg.progress && (last_report.elapsed().as_secs() >= 10 || done == dn) {
                last_report = Instant::now();
                let spent = started.elapsed().as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                let eta = spent / done as f64 * (dn - done) as f64;
                eprintln!(
                    "[mesh-sim] domains in full: {done}/{dn}, {spent:.0} s elapsed, ~{eta:.0} s to go"
                );
            }
        }
    });
    let runs: Vec<DomainRun> = runs
        .into_iter()
        .map(|r| r.expect("every domain ran"))
        .collect();

    let mut out = RunOutput {
        join_inter: sk.figures.join_inter,
        join_converge_us: sk.figures.join_converge_us,
        sim_end_us: sk.end_us,
        protocol_errors: sk.figures.protocol_errors,
        spf_workspace_bytes: sk.spf_workspace_bytes,
        ..RunOutput::default()
    };
    let mut inter = InterFailure {
        inter: sk.figures.failure_inter,
        converge_us: sk.figures.failure_converge_us,
        ..InterFailure::default()
    };
    if let Some(k) = sk.failed_link {
        let l = topo.inter[k];
        inter.a = Some(node_id(l.a.domain, l.a.local));
        inter.b = Some(node_id(l.b.domain, l.b.local));
    }
    for run in runs {
        let f = run.figures;
        if let Some(j) = f.join {
            out.join_converge_us = out.join_converge_us.max(j.converge_us);
        }
        if let Some(p) = f.inter_failure {
            inter.intra.add(&p.traffic);
            inter.originated += p.originated;
            inter.domains_measured += 1;
            inter.domains_reached += u32::from(p.traffic.messages > 0);
            inter.converge_us = inter.converge_us.max(p.converge_us);
        }
        out.sim_end_us = out.sim_end_us.max(run.end_us);
        out.spf_workspace_bytes = out.spf_workspace_bytes.max(run.spf_workspace_bytes);
        out.nodes.extend(run.nodes);
        out.domains.push(f);
    }
    out.inter_failure = inter;
    out.skeleton = Some(sk.figures);
    out
}
