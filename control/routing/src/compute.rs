//! Route computation: LSDB in, route table and border summaries out. A pure function.
//!
//! [`compute`] runs SPF from the node over its domain's LSDB, turns the result into the
//! intra-domain routes, runs the domain-level computation of [`crate::interdomain`] for the
//! inter-domain routes, builds the member map, applies the policy (denied destinations left
//! out), and — for a border node — builds the [`Summary`] it must advertise into each
//! neighbouring domain, trimmed to the LSA limits. The [`crate::router::Router`] calls it; the
//! benchmark and a simulator may call it directly.

use std::sync::Arc;

use crate::ids::{DomainId, NodeId};
use crate::interdomain::DomainRib;
use crate::lsa::{
    DomainMembers, DomainReach, MAX_LSA_LEN, MAX_RANGES_PER_LSA, MAX_REACH_PER_LSA, NodeRange,
    Summary,
};
use crate::lsdb::Lsdb;
use crate::members::{DomainMapBuilder, cap, compact};
use crate::policy::ValidPolicy;
use crate::spf::{SpfError, SpfWorkspace};
use crate::table::{RouteTable, TableBuilder};

/// Bytes of a summary LSA kept free for its links and fixed fields.
const SUMMARY_LINK_ROOM: usize = 16 * 1024;

/// What a route computation needs.
#[derive(Clone, Copy, Debug)]
pub struct ComputeInput<'a> {
    /// The node's LSDB (its own domain).
    pub lsdb: &'a Lsdb,
    /// The node (SPF root).
    pub node: NodeId,
    /// The policy in force.
    pub policy: &'a Arc<ValidPolicy>,
    /// Neighbouring domains this node borders: one summary is built for each.
    pub border_domains: &'a [DomainId],
    /// Low bits of `msg_id` numbering chunks (for the table's ECMP).
    pub chunk_bits: u8,
    /// Generation stamped on the table.
    pub generation: u64,
    /// Most ranges per domain member set in advertised summaries.
    pub summary_ranges_per_domain: usize,
}

/// What a route computation produced.
#[derive(Clone, Debug)]
pub struct Computed {
    /// The new route table.
    pub table: RouteTable,
    /// For each border domain of the input, the summary to originate into it.
    pub summaries: Vec<(DomainId, Summary)>,
    /// Reach entries left out of summaries to respect the LSA limits.
    pub reach_dropped: usize,
}

/// Computes routes and summaries (see the module docs).
pub fn compute(input: &ComputeInput<'_>, ws: &mut SpfWorkspace) -> Result<Computed, SpfError> {
    let lsdb = input.lsdb;
    let own_domain = lsdb.domain();
    let policy = input.policy;
    ws.run(lsdb, input.node)?;

    let mut table = TableBuilder::new();
    let own_permitted = policy.permits_domain(own_domain);
    let mut members: Vec<NodeId> = Vec::new();
    for slot in 0..lsdb.len() {
        let Some(lsa) = lsdb.live_at(slot) else {
            continue;
        };
        if lsa.is_summary() {
            continue;
        }
        let origin = lsa.origin();
        members.push(origin);
        if origin == input.node || !own_permitted || !policy.permits_node(origin) {
            continue;
        }
        if let Some(dist) = ws.distance(slot) {
            table.intra(origin, dist, ws.first_hop_bits(slot), ws.root_neighbors());
        }
    }

    let rib = DomainRib::compute(lsdb, ws, policy);
    let mut map = DomainMapBuilder::new();
    map.add(own_domain, &compact(&members, usize::MAX));
    for (i, r) in rib.routes().iter().enumerate() {
        if policy.permits_domain(r.domain) {
            table.inter(
                r.domain,
                r.cost,
                r.exit_cost,
                rib.hop_bits(i),
                ws.root_neighbors(),
            );
        }
        if let Some(ranges) = rib.members_of(r) {
            map.add(r.domain, ranges);
        }
    }

    let own_ranges = compact(&members, input.summary_ranges_per_domain);
    let mut summaries = Vec::with_capacity(input.border_domains.len());
    let mut reach_dropped = 0;
    for &x in input.border_domains {
        let (summary, dropped) = build_summary(input, &rib, x, &own_ranges);
        reach_dropped += dropped;
        summaries.push((x, summary));
    }

    let table = table.build(
        input.node,
        own_domain,
        input.generation,
        input.chunk_bits,
        map.build(),
        Arc::clone(policy),
    );
    Ok(Computed {
        table,
        summaries,
        reach_dropped,
    })
}

/// One reach entry a summary may carry, with the member ranges that go with it.
struct Candidate {
    reach: DomainReach,
    ranges: Vec<NodeRange>,
}

/// The summary a border advertises into `x`, trimmed (cheapest entries kept) to the limits.
fn build_summary(
    input: &ComputeInput<'_>,
    rib: &DomainRib<'_>,
    x: DomainId,
    own_ranges: &[NodeRange],
) -> (Summary, usize) {
    let own_domain = input.lsdb.domain();
    let mut candidates: Vec<Candidate> = Vec::new();
    for r in rib.routes() {
        if r.domain == x || !input.policy.permits_domain(r.domain) {
            continue;
        }
        let Ok(cost) = u32::try_from(r.cost) else {
            continue;
        };
        let Some(path) = rib.advert_path(r, x) else {
            continue;
        };
        let ranges = rib
            .members_of(r)
            .map(|m| cap(m.to_vec(), input.summary_ranges_per_domain))
            .unwrap_or_default();
        candidates.push(Candidate {
            reach: DomainReach {
                domain: r.domain,
                cost,
                path: path.into_boxed_slice(),
            },
            ranges,
        });
    }
    // Keep the cheapest entries within every limit; the rest are dropped (counted).
    let total = candidates.len();
    candidates.sort_by_key(|c| (c.reach.cost, c.reach.domain));
    let mut bytes = SUMMARY_LINK_ROOM + 6 + 16 * own_ranges.len();
    let mut ranges_total = own_ranges.len();
    let mut reach = Vec::new();
    let mut members = vec![
        DomainMembers::new(own_domain, own_ranges.to_vec()).expect("compacted ranges are valid"),
    ];
    for c in candidates {
        let entry_bytes = 9
            + 4 * c.reach.path.len()
            + if c.ranges.is_empty() {
                0
            } else {
                6 + 16 * c.ranges.len()
            };
        if reach.len() == MAX_REACH_PER_LSA
            || bytes + entry_bytes > MAX_LSA_LEN
            || ranges_total + c.ranges.len() > MAX_RANGES_PER_LSA
        {
            break;
        }
        bytes += entry_bytes;
        ranges_total += c.ranges.len();
        if !c.ranges.is_empty() {
            members.push(
                DomainMembers::new(c.reach.domain, c.ranges).expect("advertised ranges are valid"),
            );
        }
        reach.push(c.reach);
    }
    let kept = reach.len();
    let summary = Summary::new(own_domain, reach, members)
        .expect("summaries built from valid parts are valid");
    (summary, total - kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqNo;
    use crate::lsa::tests::n;
    use crate::lsa::{Link, Lsa, LsaInstance};
    use crate::policy::Policy;
    use core::time::Duration;

    const H: DomainId = DomainId(1);

    fn install(db: &mut Lsdb, lsa: Lsa) {
        if lsa.origin() == n(1) {
            db.install_own(lsa, Duration::ZERO).unwrap();
        } else {
            db.install(LsaInstance { age_s: 0, lsa }, Duration::ZERO)
                .unwrap();
        }
    }

    fn node(db: &mut Lsdb, id: u64, links: &[(u64, u32)]) {
        let links = links.iter().map(|(b, c)| Link::up(n(*b), *c)).collect();
        install(db, Lsa::new(n(id), H, SeqNo(1), links, None).unwrap());
    }

    /// A foreign border `id` of `home`, linked to `links`, reaching `reach` = (domain, cost, path).
    fn border(
        db: &mut Lsdb,
        id: u64,
        home: u32,
        links: &[(u64, u32)],
        reach: &[(u32, u32, &[u32])],
    ) {
        let links = links.iter().map(|(b, c)| Link::up(n(*b), *c)).collect();
        let reach = reach
            .iter()
            .map(|(d, c, p)| DomainReach {
                domain: DomainId(*d),
                cost: *c,
                path: p.iter().map(|x| DomainId(*x)).collect(),
            })
            .collect();
        let members = vec![
            DomainMembers::new(
                DomainId(home),
                vec![
                    NodeRange::new(n(u64::from(home) * 100), n(u64::from(home) * 100 + 99))
                        .unwrap(),
                ],
            )
            .unwrap(),
        ];
        let s = Summary::new(DomainId(home), reach, members).unwrap();
        install(db, Lsa::new(n(id), H, SeqNo(1), links, Some(s)).unwrap());
    }

    /// Domain H = {1, 2, 3} in a line 1 - 2 - 3; border 1 attaches to domain 5 via node 501;
    /// node 3 attaches to domain 6 via node 601. Domain 6 reaches domain 7; so does domain 5,
    /// more cheaply.
    fn sample() -> Lsdb {
        let mut db = Lsdb::new(H, n(1), 64);
        node(&mut db, 1, &[(2, 1), (501, 10)]);
        node(&mut db, 2, &[(1, 1), (3, 1)]);
        node(&mut db, 3, &[(2, 1), (601, 10)]);
        border(&mut db, 501, 5, &[(1, 10)], &[(7, 10, &[7]), (1, 99, &[1])]);
        border(&mut db, 601, 6, &[(3, 10)], &[(7, 30, &[7])]);
        db
    }

    fn run(db: &Lsdb, policy: ValidPolicy, borders: &[DomainId]) -> Computed {
        let policy = Arc::new(policy);
        let input = ComputeInput {
            lsdb: db,
            node: n(1),
            policy: &policy,
            border_domains: borders,
            chunk_bits: 0,
            generation: 1,
            summary_ranges_per_domain: 4,
        };
        compute(&input, &mut SpfWorkspace::new()).unwrap()
    }

    #[test]
    fn table_has_own_nodes_and_one_route_per_domain() {
        let db = sample();
        let c = run(&db, ValidPolicy::default(), &[]);
        let t = &c.table;
        let intra: Vec<_> = t
            .intra_routes()
            .iter()
            .map(|r| (r.node.get(), r.cost))
            .collect();
        assert_eq!(
            intra,
            vec![(2, 1), (3, 2)],
            "foreign borders are not intra routes"
        );
        let inter: Vec<_> = t
            .inter_routes()
            .iter()
            .map(|r| {
                (
                    r.domain.0,
                    r.domain_cost,
                    r.exit_cost,
                    t.inter_hops(r).to_vec(),
                )
            })
            .collect();
        assert_eq!(
            inter,
            vec![
                (5, 10, 10, vec![n(501)]),
                (6, 10, 12, vec![n(2)]),
                (7, 20, 10, vec![n(501)]),
            ],
            "the offer re-entering H (via 501 to domain 1) is ignored"
        );
        assert_eq!(t.domain_of(n(550)), Some(DomainId(5)));
        assert_eq!(t.domain_of(n(3)), Some(H));
    }

    #[test]
    fn preferences_and_denials_apply() {
        let db = sample();
        let p = Policy {
            version: 1,
            domain_preferences: vec![crate::policy::DomainPreference {
                extra_cost: 100,
                ..crate::policy::DomainPreference::new(DomainId(5))
            }],
            deny_domains: vec![DomainId(6)],
            deny_nodes: vec![n(3)],
            ..Policy::default()
        }
        .validate()
        .unwrap();
        let computed = run(&db, p, &[DomainId(5)]);
        let table = &computed.table;
        // Domain 7 is now cheaper through domain 6 (10 + 30) than domain 5 (110 + 10).
        let r7 = table.inter_route(DomainId(7)).unwrap();
        assert_eq!((r7.domain_cost, r7.exit_cost), (40, 12));
        assert!(
            table.inter_route(DomainId(6)).is_none(),
            "denied domain removed"
        );
        assert!(table.intra_route(n(3)).is_none(), "denied node removed");
        // The summary into 5: not 5 itself, not the denied 6; 7 via 6 (does not enter 5).
        let (into, summary) = &computed.summaries[0];
        assert_eq!(*into, DomainId(5));
        let reach: Vec<_> = summary
            .reach()
            .iter()
            .map(|e| (e.domain.0, e.cost, e.path.to_vec()))
            .collect();
        assert_eq!(reach, vec![(7, 40, vec![DomainId(6), DomainId(7)])]);
        assert_eq!(summary.home_domain(), H);
        assert!(summary.members_of(H).is_some());
    }

    #[test]
    fn summary_never_advertises_a_path_through_the_target() {
        let db = sample();
        let c = run(&db, ValidPolicy::default(), &[DomainId(5), DomainId(6)]);
        let into = |d: u32| {
            c.summaries
                .iter()
                .find(|s| s.0 == DomainId(d))
                .unwrap()
                .1
                .reach()
                .iter()
                .map(|e| e.domain.0)
                .collect::<Vec<_>>()
        };
        // Into 5: 6 (path [6]); 7's best path is via 5 → withdrawn from 5.
        assert_eq!(into(5), vec![6]);
        // Into 6: 5 and 7 (both via 5).
        assert_eq!(into(6), vec![5, 7]);
        assert_eq!(c.reach_dropped, 0);
    }

    #[test]
    fn equal_domain_cost_exits_share_traffic_by_distance() {
        // H = 1 - 2, 1 - 3 (costs 1); leaves 601 (domain 6) on 2 and 701 (domain 7) on 3,
        // both reaching domain 9 at the same domain-level cost.
        let build = |cost_to_3: u32| {
            let mut db = Lsdb::new(H, n(1), 64);
            node(&mut db, 1, &[(2, 1), (3, cost_to_3)]);
            node(&mut db, 2, &[(1, 1), (601, 5)]);
            node(&mut db, 3, &[(1, cost_to_3), (701, 5)]);
            border(&mut db, 601, 6, &[(2, 5)], &[(9, 20, &[9])]);
            border(&mut db, 701, 7, &[(3, 5)], &[(9, 20, &[8, 9])]);
            db
        };
        let db = build(1);
        let c = run(&db, ValidPolicy::default(), &[DomainId(5)]);
        let r = c.table.inter_route(DomainId(9)).unwrap();
        assert_eq!((r.domain_cost, r.exit_cost), (25, 6));
        assert_eq!(
            c.table.inter_hops(r),
            &[n(2), n(3)],
            "equal exits: ECMP over both"
        );
        // Advertised path: the shorter of the two best paths.
        let s = &c.summaries[0].1;
        assert_eq!(
            s.reach()
                .iter()
                .find(|e| e.domain == DomainId(9))
                .unwrap()
                .path
                .to_vec(),
            vec![DomainId(6), DomainId(9)]
        );

        let db = build(4);
        let c = run(&db, ValidPolicy::default(), &[]);
        let r = c.table.inter_route(DomainId(9)).unwrap();
        assert_eq!((r.domain_cost, r.exit_cost), (25, 6));
        assert_eq!(
            c.table.inter_hops(r),
            &[n(2)],
            "the nearer of two equal exits"
        );
    }
}
