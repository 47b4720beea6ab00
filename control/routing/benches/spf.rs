//! SPF and full route computation on a 1,000-node random domain of average degree ~6.
//!
//! `cargo bench -p mesh-routing --bench spf`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_routing::{
    ComputeInput, DomainId, DomainMembers, DomainReach, Link, Lsa, LsaInstance, Lsdb, NodeId,
    NodeRange, SeqNo, SpfWorkspace, Summary, ValidPolicy, compute,
};

const NODES: usize = 1000;
const DOMAIN: DomainId = DomainId(1);

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn cost(&mut self, max: u32) -> u32 {
        1 + u32::try_from(self.next() % u64::from(max)).expect("below max")
    }
}

fn id(raw: usize) -> NodeId {
    NodeId::new(raw as u64).expect("non-zero")
}

/// A ring of `NODES` plus 2,000 random chords (average degree ~6), costs 1..=10, symmetric;
/// with `borders` foreign border LSAs each advertising `domains` other domains.
fn domain(seed: u64, borders: usize, domains: u32) -> Lsdb {
    let mut rng = SplitMix(seed);
    let mut adj: Vec<Vec<(usize, u32)>> = vec![Vec::new(); NODES + 1];
    let add = |adj: &mut Vec<Vec<(usize, u32)>>, a: usize, b: usize, c: u32| {
        if a != b && !adj[a].iter().any(|x| x.0 == b) {
            adj[a].push((b, c));
            adj[b].push((a, c));
        }
    };
    for i in 1..=NODES {
        let c = rng.cost(10);
        add(&mut adj, i, i % NODES + 1, c);
    }
    for _ in 0..2000 {
        let (a, b, c) = (1 + rng.below(NODES), 1 + rng.below(NODES), rng.cost(10));
        add(&mut adj, a, b, c);
    }
    // Foreign borders 100_001.. attach to random nodes.
    let mut border_links: Vec<(usize, usize)> = Vec::new();
    for b in 0..borders {
        let border = 100_001 + b;
        let at = 1 + rng.below(NODES);
        border_links.push((border, at));
        adj[at].push((border, 10));
    }
    let mut db = Lsdb::new(DOMAIN, id(1), 8192);
    for (i, links) in adj.iter().enumerate().skip(1) {
        let links = links.iter().map(|(b, c)| Link::up(id(*b), *c)).collect();
        let lsa = Lsa::new(id(i), DOMAIN, SeqNo(1), links, None).expect("valid");
        if i == 1 {
            db.install_own(lsa, Duration::ZERO).expect("room");
        } else {
            db.install(LsaInstance { age_s: 0, lsa }, Duration::ZERO)
                .expect("room");
        }
    }
    for (k, (border, at)) in (1000u32..).zip(border_links) {
        let home = DomainId(k);
        let reach = (2..domains + 2)
            .map(DomainId)
            .filter(|d| *d != home)
            .map(|d| DomainReach {
                domain: d,
                cost: 10 + rng.cost(50),
                path: vec![d].into(),
            })
            .collect();
        let members = (2..domains + 2)
            .map(|d| {
                let first = u64::from(d) * 1_000_000;
                let (first, last) = (NodeId::new(first), NodeId::new(first + 999));
                let range = NodeRange::new(first.expect("non-zero"), last.expect("non-zero"));
                DomainMembers::new(DomainId(d), vec![range.expect("ordered")]).expect("valid")
            })
            .collect();
        let s = Summary::new(home, reach, members).expect("valid");
        let lsa = Lsa::new(
            id(border),
            DOMAIN,
            SeqNo(1),
            vec![Link::up(id(at), 10)],
            Some(s),
        )
        .expect("valid");
        db.install(LsaInstance { age_s: 0, lsa }, Duration::ZERO)
            .expect("room");
    }
    db
}

fn bench(c: &mut Criterion) {
    let db = domain(7, 0, 0);
    let mut ws = SpfWorkspace::new();
    c.bench_function("spf_1000_nodes_deg6", |b| {
        b.iter(|| {
            ws.run(black_box(&db), id(1)).expect("root present");
            black_box(ws.distance(500))
        });
    });

    let policy = Arc::new(ValidPolicy::default());
    let input = ComputeInput {
        lsdb: &db,
        node: id(1),
        policy: &policy,
        border_domains: &[],
        chunk_bits: 0,
        generation: 1,
        summary_ranges_per_domain: 16,
    };
    c.bench_function("routes_1000_nodes_deg6", |b| {
        b.iter(|| black_box(compute(black_box(&input), &mut ws).expect("root present")));
    });

    // The same domain with 10 foreign borders each advertising 1,000 domains, and this node
    // a border itself (it builds one summary).
    let db = domain(7, 10, 1000);
    let input = ComputeInput {
        lsdb: &db,
        border_domains: &[DomainId(5000)],
        ..input
    };
    c.bench_function("routes_1000_nodes_deg6_1000_domains", |b| {
        b.iter(|| black_box(compute(black_box(&input), &mut ws).expect("root present")));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
