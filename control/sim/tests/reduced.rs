//! The simulator at reduced size, with assertions on every target of the million-node claim
//! (SPEC §9). Sizes are kept small enough for a debug build to finish in seconds.
//!
//! - route-table entries per node = (own domain size − 1) + (domains − 1), at every node;
//! - an intra-domain link failure costs transmissions bounded by its domain's size (each of the
//!   two re-originated LSAs crosses each of the domain's links at most once each way) and none
//!   at all outside the domain; the same for a node failure;
//! - the hierarchical mode (how the million runs) reproduces the live mode figure for figure;
//! - the same seed gives the same figures; wall-clock timings are measured, never asserted.

use mesh_sim::figures::RunOutput;
use mesh_sim::report::Report;
use mesh_sim::topology::Topology;
use mesh_sim::{Mode, SimConfig};

fn config(domains: u32, nodes: u32, seed: u64, mode: Mode) -> SimConfig {
    let mut c = SimConfig::new(domains, nodes, seed);
    c.mode = mode;
    c
}

fn run(c: &SimConfig) -> Report {
    let r = mesh_sim::run(c).expect("valid settings");
    for check in &r.checks {
        assert!(check.ok, "{}: {}", check.name, check.detail);
    }
    r
}

/// The wall-clock measurements of a run, cleared (they are the only non-deterministic part).
fn without_wall_clock(mut out: RunOutput) -> RunOutput {
    for n in &mut out.nodes {
        n.spf_ns = 0;
        n.spf_best_ns = 0;
    }
    out
}

/// Asserts what every sampled domain must show, against the topology the run used.
fn assert_targets(r: &Report, topo: &Topology) {
    let dn = u32::try_from(topo.domains.len()).unwrap();
    // Entries: every node, its own domain's size.
    let mut k = 0;
    for d in &topo.domains {
        for _ in 0..d.size {
            assert_eq!(r.out.nodes[k].entries, (d.size - 1) + (dn - 1), "node {k}");
            k += 1;
        }
    }
    assert_eq!(k, r.out.nodes.len());
    assert_eq!(r.figures.entries_unexpected, 0);

    let mut link_failures = 0;
    let mut node_failures = 0;
    for f in &r.out.domains {
        let size = u64::from(f.size);
        let links = u64::from(f.links);
        assert_eq!(f.entries_wrong, 0, "domain {}", f.index);
        assert_eq!(f.protocol_errors, 0, "domain {}", f.index);
        if let Some(x) = f.link_failure {
            link_failures += 1;
            let p = x.phase;
            // Exactly the two ends re-originate; nothing leaves the domain.
            assert_eq!(p.originated, 2, "domain {}", f.index);
            assert_eq!(p.foreign.messages, 0, "domain {}: {:?}", f.index, p.foreign);
            assert_eq!(p.traffic.summary_lsas, 0);
            // Proportional to the domain: at most 2 LSAs x 2 directions x its links.
            assert!(
                p.traffic.lsas() <= 2 * 2 * links,
                "domain {}: {p:?}",
                f.index
            );
            assert!(p.traffic.lsas() >= size - 2, "every other node hears of it");
            assert!(p.converge_us > 0 && p.spf_runs >= size - 1);
        }
        if let Some(x) = f.node_failure {
            node_failures += 1;
            let p = x.phase;
            assert_eq!(
                p.originated,
                u64::from(x.degree),
                "each neighbour re-originates"
            );
            assert_eq!(p.foreign.messages, 0, "domain {}: {:?}", f.index, p.foreign);
            assert!(p.traffic.lsas() <= p.originated * 2 * links);
        }
        if let Some(b) = f.boot {
            assert_eq!(b.foreign.messages, 0);
            // Every node's LSA reached every other node.
            assert!(b.traffic.node_lsas >= size * (size - 1));
        }
    }
    assert!(link_failures > 0 && node_failures > 0);
    assert!(r.figures.spf_ns.n > 0 && r.figures.spf_ns.max > 0, "timed");
}

#[test]
fn twenty_domains_of_fifty_meet_every_target() {
    let mut c = config(20, 50, 1, Mode::Live);
    c.walk_packets = true;
    let r = run(&c);
    let topo = Topology::generate(&c.topology, c.seed).unwrap();
    assert_targets(&r, &topo);
    let w = r.out.walks.unwrap();
    assert!(w.tried >= 4000 && w.failed == 0);
    // The inter-domain link failure changes summaries, which do travel between domains.
    let i = r.out.inter_failure;
    assert!(i.a.is_some() && i.inter.summary_lsas > 0 && i.domains_reached > 0);
    assert_eq!(i.domains_measured, 20);
    // The join formed the domain routes through summaries on the inter-domain links.
    assert!(r.out.join_inter.summary_lsas >= topo.inter.len() as u64 * 2);
}

#[test]
fn three_domains_of_two_hundred_meet_every_target() {
    // The hierarchical mode as the million runs it: domain level, then each domain in full
    // from a warm start (a cold boot of 200 nodes is too slow for a debug build).
    let mut c = config(3, 200, 7, Mode::Hierarchical);
    c.sample_domains = Some(0);
    let r = run(&c);
    let topo = Topology::generate(&c.topology, c.seed).unwrap();
    assert_targets(&r, &topo);
    let sk = r.out.skeleton.unwrap();
    assert_eq!(
        sk.routes_wrong + sk.script_items_dropped + sk.protocol_errors,
        0
    );
    assert!(sk.routers >= 6, "two borders or more per domain");
    for f in &r.out.domains {
        assert!(f.warm.is_some() && f.boot.is_none());
        assert_eq!(f.summary_mismatches + f.lsa_mismatches, 0);
        // A link failure in a 200-node domain: every other node hears of it, and each of the
        // two LSAs crosses each link at most once each way.
        let lsas = f.link_failure.unwrap().phase.traffic.lsas();
        assert!((198..=2 * 2 * u64::from(f.links)).contains(&lsas), "{lsas}");
    }
}

#[test]
fn hierarchical_equals_live() {
    let live = run(&config(4, 40, 7, Mode::Live));
    let hier = run(&config(4, 40, 7, Mode::Hierarchical));
    let topo = Topology::generate(&config(4, 40, 7, Mode::Live).topology, 7).unwrap();
    assert_targets(&hier, &topo);
    // Domain by domain, phase by phase, the same transmissions, originations, computations and
    // convergence times: the domain-level run plus one domain at a time is the live mesh.
    for (a, b) in live.out.domains.iter().zip(&hier.out.domains) {
        assert_eq!(a, b, "domain {}", a.index);
    }
    assert_eq!(live.out.join_inter, hier.out.join_inter);
    assert_eq!(live.out.join_converge_us, hier.out.join_converge_us);
    assert_eq!(live.out.inter_failure, hier.out.inter_failure);
    let entries = |r: &Report| r.out.nodes.iter().map(|n| n.entries).collect::<Vec<_>>();
    assert_eq!(entries(&live), entries(&hier));
}

#[test]
fn warm_domains_agree_and_sampled_domains_equal_live() {
    let mut c = config(12, 30, 3, Mode::Hierarchical);
    c.sample_domains = Some(4);
    c.topology.size_spread = 0.5;
    let hier = run(&c);
    let topo = Topology::generate(&c.topology, c.seed).unwrap();
    assert_targets(&hier, &topo);
    c.mode = Mode::Live;
    let live = run(&c);
    let mut warm = 0;
    // The failures' figures but bytes: the live mode replays the inter-domain link failure
    // everywhere first, which shortens one border's LSA by a link; warm domains skip it.
    let failures = |f: &mesh_sim::figures::DomainFigures| {
        let strip = |mut p: mesh_sim::figures::Phase| {
            p.traffic.bytes = 0;
            p
        };
        (
            f.link_failure.map(|x| (x.a, x.b, strip(x.phase))),
            f.node_failure.map(|x| (x.node, x.degree, strip(x.phase))),
        )
    };
    for (a, b) in live.out.domains.iter().zip(&hier.out.domains) {
        // Link and node failures cost the same after a warm start as after a cold one.
        assert_eq!(failures(a), failures(b), "domain {}", a.index);
        if b.warm.is_some() {
            warm += 1;
            assert!(b.boot.is_none() && b.join.is_none() && b.inter_failure.is_none());
            assert_eq!(b.summary_mismatches + b.lsa_mismatches, 0);
        } else {
            assert_eq!(
                (a.boot, a.join, a.inter_failure),
                (b.boot, b.join, b.inter_failure),
                "domain {}",
                a.index
            );
        }
    }
    assert_eq!(warm, 8);
    let entries = |r: &Report| r.out.nodes.iter().map(|n| n.entries).collect::<Vec<_>>();
    assert_eq!(entries(&live), entries(&hier));
}

#[test]
fn same_seed_same_figures() {
    let mut c = config(8, 25, 11, Mode::Hierarchical);
    c.sample_domains = Some(3);
    c.threads = 2;
    let a = run(&c);
    c.threads = 1;
    let b = run(&c);
    assert_eq!(without_wall_clock(a.out.clone()), without_wall_clock(b.out));
    assert!(a.json().render().len() > 1000);
    c.seed = 12;
    let other = run(&c);
    assert_ne!(
        without_wall_clock(a.out).domains,
        without_wall_clock(other.out).domains
    );
}

#[test]
fn bad_settings_are_refused() {
    let mut c = config(2, 10, 1, Mode::Live);
    c.threads = 0;
    assert!(mesh_sim::run(&c).is_err());
    let c = config(0, 10, 1, Mode::Live);
    assert!(mesh_sim::run(&c).is_err());
}
