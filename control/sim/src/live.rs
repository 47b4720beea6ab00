//! Live mode: every router of the mesh in one network at once.
//!
//! The most direct simulation — nothing is represented by anything else — and the reference
//! the hierarchical mode is checked against. Memory grows as `nodes × domain size` (every
//! node's LSDB index), so it is for meshes up to some hundred thousand nodes.

use std::time::Duration;

use mesh_routing::{NextHop, Router, SpfWorkspace};

use crate::engine::{Engine, Micros, Scope, Traffic};
use crate::figures::{
    DomainFigures, InterFailure, LinkFailure, NodeFailure, Phase, RunOutput, Walks,
};
use crate::rng::Rng;
use crate::scenario::{
    SETTLE_US, SPF_RETIME_EVERY, SimConfig, choose_inter_failure, choose_link_failure,
    choose_node_failure, expected_entries, node_sample, retime_compute, router_config,
};
use crate::topology::{Topology, u32_of};

const LABEL_WALKS: u64 = 6;
/// Packets walked after start-up and after the last failure.
const WALKS_PER_CHECK: u64 = 2000;

struct Live<'a> {
    cfg: &'a SimConfig,
    e: Engine,
    /// Endpoint index of every node, by domain and local index.
    idx: Vec<Vec<u32>>,
    /// Nodes alive per domain.
    alive: Vec<u32>,
    entries_wrong: Vec<u64>,
}

/// Counters at the start of a phase.
struct Snapshot {
    traffic: Vec<Traffic>,
    inter: Traffic,
    spf: Vec<u64>,
    originated: Vec<u64>,
    at: Micros,
}

impl Live<'_> {
    fn originated(&self, d: usize) -> u64 {
        self.idx[d]
            .iter()
            .filter_map(|&i| self.e.router(i))
            .map(|r| r.router.metrics().flood.lsas_originated)
            .sum()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            traffic: self.e.traffic.clone(),
            inter: self.e.inter,
            spf: self.e.spf_in.clone(),
            originated: (0..self.idx.len()).map(|d| self.originated(d)).collect(),
            at: self.e.now(),
        }
    }

    /// Domain `d`'s view of the phase that started at `s`.
    fn phase(&self, s: &Snapshot, d: usize) -> Phase {
        let mut foreign = self.e.inter.since(&s.inter);
        for (x, t) in self.e.traffic.iter().enumerate() {
            if x != d {
                foreign.add(&t.since(&s.traffic[x]));
            }
        }
        Phase {
            traffic: self.e.traffic[d].since(&s.traffic[d]),
            foreign,
            originated: self.originated(d).saturating_sub(s.originated[d]),
            converge_us: self.e.activity[d].saturating_sub(s.at),
            spf_runs: self.e.spf_in[d] - s.spf[d],
        }
    }

    /// Counts the routers of `d` whose table does not have one route per other node of the
    /// domain and per other domain.
    fn check_entries(&mut self, d: usize) {
        let want = expected_entries(self.alive[d], u32_of(self.idx.len()));
        let wrong = self.idx[d]
            .iter()
            .filter_map(|&i| self.e.router(i))
            .filter(|r| r.table.is_none_or(|t| t.entries() != want))
            .count();
        self.entries_wrong[d] += wrong as u64;
    }

    fn settle(&mut self) {
        self.e.advance_to(self.e.now() + SETTLE_US);
    }

    /// Walks packets between random live nodes through the route tables: the source resolves
    /// the destination's domain from its member map, every hop looks the frame up.
    fn walk(&self, label: u64) -> Walks {
        let mut rng = Rng::new(self.cfg.seed, LABEL_WALKS + (label << 8));
        let live: Vec<u32> = self
            .idx
            .iter()
            .flatten()
            .copied()
            .filter(|&i| self.e.router(i).is_some())
            .collect();
        let mut w = Walks::default();
        for _ in 0..WALKS_PER_CHECK {
            let (src, dst) = (live[rng.index(live.len())], live[rng.index(live.len())]);
            let msg_id = rng.next_u64();
            let (src_id, dst_id) = (self.e.id(src), self.e.id(dst));
            w.tried += 1;
            let table = |i: u32| {
                self.e
                    .router(i)
                    .and_then(|r| r.full_table.as_ref())
                    .expect("live mode with walks keeps tables")
            };
            let Some(dst_domain) = table(src).domain_of(dst_id) else {
                w.failed += 1;
                continue;
            };
            let mut cur = src;
            let arrived = loop {
                match table(cur).lookup(dst_domain, dst_id, src_id, msg_id) {
                    Ok(NextHop::Local) => break cur == dst,
                    Ok(NextHop::Forward(n)) => {
                        let Some(next) = self.e.index_of(n) else {
                            break false;
                        };
                        if !self.e.linked(cur, next) || self.e.router(next).is_none() {
                            break false;
                        }
                        cur = next;
                        w.hops += 1;
                    }
                    Err(_) => break false,
                }
                if w.hops > 64 * live.len() as u64 {
                    break false;
                }
            };
            w.failed += u64::from(!arrived);
        }
        w
    }
}

/// Runs the scenario with every router live.
///
/// # Panics
/// On a simulator bug (a router refusing its configuration or a link).
pub fn run(cfg: &SimConfig, topo: &Topology) -> RunOutput {
    let dn = topo.domains.len();
    let mut sim = Live {
        cfg,
        e: Engine::new(dn, cfg.throttle, cfg.walk_packets),
        idx: Vec::with_capacity(dn),
        alive: topo.domains.iter().map(|d| d.size).collect(),
        entries_wrong: vec![0; dn],
    };
    for (d, dom) in topo.domains.iter().enumerate() {
        let d32 = u32_of(d);
        let ids = (0..dom.size)
            .map(|local| {
                let r = Router::new(router_config(topo, cfg.seed, d32, local), Duration::ZERO)
                    .expect("valid router config");
                sim.e.add_router(r, d32)
            })
            .collect();
        sim.idx.push(ids);
    }

    // Boot: every domain's routers and intra-domain links.
    let snap = sim.snapshot();
    for (d, dom) in topo.domains.iter().enumerate() {
        for l in &dom.links {
            let (a, b) = (sim.idx[d][l.a as usize], sim.idx[d][l.b as usize]);
            sim.e
                .link_up(a, b, l.cost, l.latency_us, Scope::Domain(u32_of(d)));
        }
    }
    sim.e.run_until_quiet();
    let mut domains: Vec<DomainFigures> = (0..dn)
        .map(|d| {
            let dom = &topo.domains[d];
            DomainFigures {
                index: u32_of(d),
                size: dom.size,
                links: u32_of(dom.links.len()),
                borders: u32_of(topo.borders(u32_of(d)).len()),
                boot: Some(Phase {
                    foreign: Traffic::default(),
                    ..sim.phase(&snap, d)
                }),
                ..DomainFigures::default()
            }
        })
        .collect();
    if cfg.progress {
        eprintln!("[mesh-sim] live: {dn} domains booted");
    }

    // Join: every inter-domain link comes up at once.
    sim.settle();
    let snap = sim.snapshot();
    for l in &topo.inter {
        let a = sim.idx[l.a.domain as usize][l.a.local as usize];
        let b = sim.idx[l.b.domain as usize][l.b.local as usize];
        sim.e.link_up(a, b, l.cost, l.latency_us, Scope::Inter);
    }
    let last = sim.e.run_until_quiet();
    let join_converge_us = last.saturating_sub(snap.at);
    let join_inter = sim.e.inter.since(&snap.inter);
    for (d, f) in domains.iter_mut().enumerate() {
        let mut join = sim.phase(&snap, d);
        join.foreign = Traffic::default();
        f.join = Some(join);
        sim.check_entries(d);
    }
    let mut ws = SpfWorkspace::new();
    let nodes = sim
        .idx
        .iter()
        .flat_map(|v| v.iter().enumerate())
        .map(|(local, &i)| {
            let slot = sim.e.router(i).expect("all alive after start-up");
            let mut n = node_sample(slot);
            if u32_of(local).is_multiple_of(SPF_RETIME_EVERY) {
                n.spf_best_ns = retime_compute(&slot.router, &mut ws, 3);
            }
            n
        })
        .collect();
    let mut walks = cfg.walk_packets.then(|| sim.walk(0));
    if cfg.progress {
        eprintln!("[mesh-sim] live: mesh joined");
    }

    // One inter-domain link failure.
    let mut inter_failure = InterFailure::default();
    if let Some(k) = choose_inter_failure(topo, cfg.seed) {
        let l = topo.inter[k];
        sim.settle();
        let snap = sim.snapshot();
        let a = sim.idx[l.a.domain as usize][l.a.local as usize];
        let b = sim.idx[l.b.domain as usize][l.b.local as usize];
        sim.e.link_down(a, b);
        let last = sim.e.run_until_quiet();
        inter_failure.a = Some(sim.e.id(a));
        inter_failure.b = Some(sim.e.id(b));
        inter_failure.inter = sim.e.inter.since(&snap.inter);
        inter_failure.converge_us = last.saturating_sub(snap.at);
        for (d, f) in domains.iter_mut().enumerate() {
            let mut p = sim.phase(&snap, d);
            p.foreign = Traffic::default();
            inter_failure.intra.add(&p.traffic);
            inter_failure.originated += p.originated;
            inter_failure.domains_measured += 1;
            inter_failure.domains_reached += u32::from(p.traffic.messages > 0);
            f.inter_failure = Some(p);
        }
        for d in 0..dn {
            sim.check_entries(d);
        }
        if let Some(w) = walks.as_mut() {
            let after = sim.walk(1);
            w.tried += after.tried;
            w.failed += after.failed;
            w.hops += after.hops;
        }
    }

    // One intra-domain link failure per sampled domain, one after the other.
    let mut failed_links = vec![None; dn];
    for d in 0..dn {
        let d32 = u32_of(d);
        if !cfg.fails(d32) {
            continue;
        }
        let Some((a, b)) = choose_link_failure(topo, cfg.seed, d32) else {
            continue;
        };
        failed_links[d] = Some((a, b));
        sim.settle();
        let snap = sim.snapshot();
        let (ia, ib) = (sim.idx[d][a as usize], sim.idx[d][b as usize]);
        sim.e.link_down(ia, ib);
        sim.e.run_until_quiet();
        domains[d].link_failure = Some(LinkFailure {
            a: sim.e.id(ia),
            b: sim.e.id(ib),
            phase: sim.phase(&snap, d),
        });
        sim.check_entries(d);
    }

    // One node failure per sampled domain.
    for d in 0..dn {
        let d32 = u32_of(d);
        if !cfg.fails(d32) {
            continue;
        }
        let Some(v) = choose_node_failure(topo, cfg.seed, d32, failed_links[d]) else {
            continue;
        };
        sim.settle();
        let iv = sim.idx[d][v as usize];
        let degree = u32_of(sim.e.router(iv).expect("alive").router.neighbors().count());
        let mut snap = sim.snapshot();
        let own = sim
            .e
            .router(iv)
            .expect("alive")
            .router
            .metrics()
            .flood
            .lsas_originated;
        snap.originated[d] -= own;
        sim.e.kill(iv);
        sim.alive[d] -= 1;
        sim.e.run_until_quiet();
        domains[d].node_failure = Some(NodeFailure {
            node: sim.e.id(iv),
            degree,
            phase: sim.phase(&snap, d),
        });
        sim.check_entries(d);
    }

    for (d, f) in domains.iter_mut().enumerate() {
        f.entries_wrong = sim.entries_wrong[d];
    }
    let protocol_errors = sim.e.errors + sim.e.lsas_rejected() + sim.e.unacked() as u64;
    RunOutput {
        domains,
        nodes,
        join_inter,
        join_converge_us,
        inter_failure,
        skeleton: None,
        walks,
        sim_end_us: sim.e.now(),
        protocol_errors,
        spf_workspace_bytes: sim.e.spf_workspace_bytes() as u64,
    }
}
