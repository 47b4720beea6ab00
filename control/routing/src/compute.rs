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
    use std::collections::{BTreeMap, BTreeSet};

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
        assert_eq!(
            inter(&c),
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

    fn pref(domain: u32, borders: &[u64], avoid_transit: bool) -> crate::policy::DomainPreference {
        crate::policy::DomainPreference {
            preferred_border_nodes: borders.iter().copied().map(n).collect(),
            avoid_transit,
            ..crate::policy::DomainPreference::new(DomainId(domain))
        }
    }

    fn with_prefs(prefs: Vec<crate::policy::DomainPreference>) -> ValidPolicy {
        Policy {
            version: 1,
            domain_preferences: prefs,
            ..Policy::default()
        }
        .validate()
        .unwrap()
    }

    /// Every inter-domain route as (domain, domain cost, exit cost, next hops).
    fn inter(c: &Computed) -> Vec<(u32, u64, u64, Vec<NodeId>)> {
        let t = &c.table;
        t.inter_routes()
            .iter()
            .map(|r| {
                (
                    r.domain.0,
                    r.domain_cost,
                    r.exit_cost,
                    t.inter_hops(r).to_vec(),
                )
            })
            .collect()
    }

    fn domains(c: &Computed) -> Vec<u32> {
        c.table.inter_routes().iter().map(|r| r.domain.0).collect()
    }

    /// H = 1 - 2 (cost 1), 1 - 3 (`cost_to_3`). Domain 6's borders 601 (on 2) and 602 (on 3)
    /// both reach domain 9 at the same domain-level cost; 701 (domain 7, on 2) reaches it more
    /// dearly; 603 (domain 6) reaches it as cheaply but hangs off node 4, which H cannot reach.
    /// Without `link_3_602`, node 3 does not advertise its link to 602 (down: unreachable).
    fn two_equal_exits(cost_to_3: u32, link_3_602: bool) -> Lsdb {
        let mut db = Lsdb::new(H, n(1), 64);
        node(&mut db, 1, &[(2, 1), (3, cost_to_3)]);
        node(&mut db, 2, &[(1, 1), (601, 5), (701, 5)]);
        if link_3_602 {
            node(&mut db, 3, &[(1, cost_to_3), (602, 5)]);
        } else {
            node(&mut db, 3, &[(1, cost_to_3)]);
        }
        node(&mut db, 4, &[(603, 5)]);
        border(&mut db, 601, 6, &[(2, 5)], &[(9, 20, &[9])]);
        border(&mut db, 602, 6, &[(3, 5)], &[(9, 20, &[9])]);
        border(&mut db, 603, 6, &[(4, 5)], &[(9, 20, &[9])]);
        border(&mut db, 701, 7, &[(2, 5)], &[(9, 40, &[9])]);
        db
    }

    #[test]
    fn preferred_border_takes_every_flow_among_equal_exits() {
        let db = two_equal_exits(1, true);
        let plain = run(&db, ValidPolicy::default(), &[DomainId(5)]);
        assert_eq!(
            inter(&plain),
            vec![
                (6, 5, 6, vec![n(2), n(3)]),
                (7, 5, 6, vec![n(2)]),
                (9, 25, 6, vec![n(2), n(3)]),
            ]
        );
        // 603 is unreachable and 701 not an equal-cost exit: the first usable one is 602, the
        // second of the two equal exits by id; ECMP collapses onto it.
        let p = with_prefs(vec![pref(9, &[603, 701, 602, 601], false)]);
        let c = run(&db, p, &[DomainId(5)]);
        assert_eq!(
            inter(&c),
            vec![
                (6, 5, 6, vec![n(2), n(3)]),
                (7, 5, 6, vec![n(2)]),
                (9, 25, 6, vec![n(3)]),
            ],
            "only the route to domain 9 changes, and only its hops"
        );
        assert_eq!(
            c.summaries, plain.summaries,
            "the cost and path advertised do not change"
        );

        // The preferred exit wins even when another equal exit is nearer.
        let db = two_equal_exits(4, true);
        let plain = run(&db, ValidPolicy::default(), &[]);
        let r9 = |c: &Computed| inter(c).into_iter().find(|r| r.0 == 9).unwrap();
        assert_eq!(r9(&plain), (9, 25, 6, vec![n(2)]));
        let c = run(&db, with_prefs(vec![pref(9, &[602], false)]), &[]);
        assert_eq!(r9(&c), (9, 25, 9, vec![n(3)]));
        assert_eq!(domains(&c), domains(&plain));
        // A preference for the nearer exit first keeps it.
        let c = run(&db, with_prefs(vec![pref(9, &[601, 602], false)]), &[]);
        assert_eq!(r9(&c), (9, 25, 6, vec![n(2)]));
    }

    #[test]
    fn unusable_preferred_borders_fall_back_to_cost() {
        let db = two_equal_exits(1, true);
        let plain = run(&db, ValidPolicy::default(), &[DomainId(5)]);
        // Unreachable (603), not an equal-cost exit (701), unknown (888), in the wrong
        // domain's preference (602 for domain 7): routes are chosen by cost alone.
        let p = with_prefs(vec![
            pref(7, &[602], false),
            pref(9, &[603, 701, 888], false),
        ]);
        let c = run(&db, p, &[DomainId(5)]);
        assert_eq!(inter(&c), inter(&plain));
        assert_eq!(c.summaries, plain.summaries);
        // The preferred border's route goes down: back to ECMP over what is left.
        let db = two_equal_exits(1, false);
        let c = run(&db, with_prefs(vec![pref(9, &[602], false)]), &[]);
        let r9 = c.table.inter_route(DomainId(9)).unwrap();
        assert_eq!((r9.domain_cost, r9.exit_cost), (25, 6));
        assert_eq!(c.table.inter_hops(r9), &[n(2)]);
    }

    #[test]
    fn avoided_transit_domain_is_a_last_resort() {
        // sample(): domain 7 is cheapest through domain 5 (20 via 501), else through 6 (40).
        let db = sample();
        let plain = run(&db, ValidPolicy::default(), &[DomainId(5)]);
        assert_eq!(
            inter(&plain),
            vec![
                (5, 10, 10, vec![n(501)]),
                (6, 10, 12, vec![n(2)]),
                (7, 20, 10, vec![n(501)]),
            ]
        );
        let avoid5 = || with_prefs(vec![pref(5, &[], true)]);
        let c = run(&db, avoid5(), &[DomainId(5)]);
        assert_eq!(
            inter(&c),
            vec![
                (5, 10, 10, vec![n(501)]),
                (6, 10, 12, vec![n(2)]),
                (7, 40, 12, vec![n(2)]),
            ],
            "7 avoids 5 at a higher cost; 5 itself is reached as before"
        );
        // Into 5 the border now advertises 7 (the path no longer enters 5).
        let reach: Vec<_> = c.summaries[0]
            .1
            .reach()
            .iter()
            .map(|e| (e.domain.0, e.cost, e.path.to_vec()))
            .collect();
        assert_eq!(
            reach,
            vec![
                (6, 10, vec![DomainId(6)]),
                (7, 40, vec![DomainId(6), DomainId(7)])
            ]
        );

        // The only way to 7 transits 5: it is used.
        let mut only = Lsdb::new(H, n(1), 64);
        node(&mut only, 1, &[(2, 1), (501, 10)]);
        node(&mut only, 2, &[(1, 1), (3, 1)]);
        node(&mut only, 3, &[(2, 1), (601, 10)]);
        border(&mut only, 501, 5, &[(1, 10)], &[(7, 10, &[7])]);
        border(&mut only, 601, 6, &[(3, 10)], &[]);
        let c = run(&only, avoid5(), &[]);
        assert_eq!(
            inter(&c),
            vec![
                (5, 10, 10, vec![n(501)]),
                (6, 10, 12, vec![n(2)]),
                (7, 20, 10, vec![n(501)]),
            ]
        );

        // Every way transits 5 (6's path to 7 does further on): the cheapest is used.
        let mut all = Lsdb::new(H, n(1), 64);
        node(&mut all, 1, &[(2, 1), (501, 10)]);
        node(&mut all, 2, &[(1, 1), (3, 1)]);
        node(&mut all, 3, &[(2, 1), (601, 10)]);
        border(&mut all, 501, 5, &[(1, 10)], &[(7, 10, &[7])]);
        border(
            &mut all,
            601,
            6,
            &[(3, 10)],
            &[(5, 1, &[5]), (7, 2, &[5, 7])],
        );
        let c = run(&all, avoid5(), &[]);
        let r7 = c.table.inter_route(DomainId(7)).unwrap();
        assert_eq!((r7.domain_cost, r7.exit_cost), (12, 12));
        assert_eq!(c.table.inter_hops(r7), &[n(2)]);
        // Avoiding 5 and 6: 601's path transits both, 501's only 5; fewer wins over cheaper.
        let c = run(
            &all,
            with_prefs(vec![pref(5, &[], true), pref(6, &[], true)]),
            &[],
        );
        let r7 = c.table.inter_route(DomainId(7)).unwrap();
        assert_eq!((r7.domain_cost, r7.exit_cost), (20, 10));
        assert_eq!(c.table.inter_hops(r7), &[n(501)]);
        assert_eq!(domains(&c), vec![5, 6, 7], "one route per other domain");
    }

    #[test]
    fn preferences_combine() {
        // Three equal exits to 9: 601, 602 (domain 6) and 701 (domain 7, transiting it).
        let mut db = Lsdb::new(H, n(1), 64);
        node(&mut db, 1, &[(2, 1), (3, 1)]);
        node(&mut db, 2, &[(1, 1), (601, 5), (701, 5)]);
        node(&mut db, 3, &[(1, 1), (602, 5)]);
        border(&mut db, 601, 6, &[(2, 5)], &[(9, 20, &[9])]);
        border(&mut db, 602, 6, &[(3, 5)], &[(9, 20, &[9])]);
        border(&mut db, 701, 7, &[(2, 5)], &[(9, 20, &[9])]);
        let r9 = |p: ValidPolicy| {
            let c = run(&db, p, &[]);
            assert_eq!(domains(&c), vec![6, 7, 9]);
            inter(&c).into_iter().find(|r| r.0 == 9).unwrap()
        };
        assert_eq!(r9(ValidPolicy::default()), (9, 25, 6, vec![n(2), n(3)]));
        assert_eq!(
            r9(with_prefs(vec![pref(9, &[701, 602], false)])),
            (9, 25, 6, vec![n(2)]),
            "701 is an equal exit and listed first"
        );
        // Avoiding 7 as transit drops 701 from the best exits; the next preference holds.
        assert_eq!(
            r9(with_prefs(vec![
                pref(7, &[], true),
                pref(9, &[701, 602], false)
            ])),
            (9, 25, 6, vec![n(3)])
        );
    }

    /// A random domain H = nodes `1..=k` and its foreign borders, for the model below.
    #[derive(Debug)]
    struct RandomDomain {
        k: u64,
        /// Links inside H, both ways: (a, b, cost).
        links: Vec<(u64, u64, u32)>,
        /// Foreign borders: (home domain, links to H nodes, reach (domain, cost, path)).
        leaves: Vec<LeafSpec>,
        /// Preferences: (domain, extra cost, preferred leaf indices (5: an unknown id), avoid).
        prefs: Vec<(u32, u32, Vec<usize>, bool)>,
    }

    type LeafSpec = (u32, Vec<(u64, u32)>, Vec<(u32, u32, Vec<u32>)>);

    const LEAF_BASE: u64 = 1000;

    fn arb_domain() -> impl proptest::strategy::Strategy<Value = RandomDomain> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        let leaf = (
            2u32..=5,
            vec((1u64..=5, 1u32..=3), 1..=2),
            vec((1u32..=6, 1u32..=4, vec(1u32..=6, 0..=2)), 0..=4),
        );
        (
            2u64..=5,
            vec((1u64..=5, 1u64..=5, 1u32..=3), 0..=8),
            vec(leaf, 1..=5),
            vec(
                (1u32..=6, 0u32..=2, vec(0usize..=5, 0..=3), any::<bool>()),
                0..=4,
            ),
        )
            .prop_map(|(k, links, leaves, prefs)| RandomDomain {
                k,
                links: links
                    .into_iter()
                    .map(|(a, b, c)| ((a - 1) % k + 1, (b - 1) % k + 1, c))
                    .filter(|(a, b, _)| a != b)
                    .collect(),
                leaves: leaves
                    .into_iter()
                    .map(|(home, at, reach)| {
                        let at = at.into_iter().map(|(h, c)| ((h - 1) % k + 1, c)).collect();
                        (home, at, reach)
                    })
                    .collect(),
                prefs,
            })
    }

    impl RandomDomain {
        /// Directed costs: H's links, then leaf links (each once: the first spec wins).
        fn costs(&self) -> BTreeMap<(u64, u64), u32> {
            let mut c = BTreeMap::new();
            for &(a, b, cost) in &self.links {
                c.entry((a.min(b), a.max(b))).or_insert(cost);
            }
            for (j, (_, at, _)) in self.leaves.iter().enumerate() {
                for &(h, cost) in at {
                    c.entry((h, LEAF_BASE + j as u64)).or_insert(cost);
                }
            }
            c.into_iter()
                .flat_map(|((a, b), cost)| [((a, b), cost), ((b, a), cost)])
                .collect()
        }

        /// Reach entries as a summary may hold them: valid paths, one per domain.
        fn reach(&self, j: usize) -> Vec<(u32, u32, Vec<u32>)> {
            let (home, _, reach) = &self.leaves[j];
            let mut out: BTreeMap<u32, (u32, Vec<u32>)> = BTreeMap::new();
            for (d, cost, mid) in reach {
                if d == home {
                    continue;
                }
                let mut path: Vec<u32> = Vec::new();
                for m in mid {
                    if m != home && m != d && !path.contains(m) {
                        path.push(*m);
                    }
                }
                path.push(*d);
                out.entry(*d).or_insert((*cost, path));
            }
            out.into_iter().map(|(d, (c, p))| (d, c, p)).collect()
        }

        fn lsdb(&self) -> Lsdb {
            let costs = self.costs();
            let links_of = |x: u64| -> Vec<(u64, u32)> {
                costs
                    .iter()
                    .filter(|((a, _), _)| *a == x)
                    .map(|((_, b), c)| (*b, *c))
                    .collect()
            };
            let mut db = Lsdb::new(H, n(1), 64);
            for x in 1..=self.k {
                node(&mut db, x, &links_of(x));
            }
            for (j, (home, _, _)) in self.leaves.iter().enumerate() {
                let id = LEAF_BASE + j as u64;
                let reach = self.reach(j);
                let reach: Vec<(u32, u32, &[u32])> =
                    reach.iter().map(|(d, c, p)| (*d, *c, &p[..])).collect();
                border(&mut db, id, *home, &links_of(id), &reach);
            }
            db
        }

        fn policy(&self) -> ValidPolicy {
            let mut seen = BTreeSet::new();
            let mut prefs = Vec::new();
            for (d, extra, borders, avoid) in &self.prefs {
                if !seen.insert(*d) {
                    continue;
                }
                let mut nodes: Vec<NodeId> = Vec::new();
                for &b in borders {
                    let id = n(if b == 5 { 4242 } else { LEAF_BASE + b as u64 });
                    if !nodes.contains(&id) {
                        nodes.push(id);
                    }
                }
                prefs.push(crate::policy::DomainPreference {
                    domain: DomainId(*d),
                    extra_cost: *extra,
                    preferred_border_nodes: nodes,
                    avoid_transit: *avoid,
                });
            }
            with_prefs(prefs)
        }

        /// The expected routes, by brute force: Floyd–Warshall inside H, every offer listed.
        fn model(&self) -> Vec<(u32, u64, u64, BTreeSet<NodeId>)> {
            const INF: u64 = u64::MAX / 4;
            let costs = self.costs();
            let k = usize::try_from(self.k).unwrap();
            let mut d = vec![vec![INF; k + 1]; k + 1];
            for (x, row) in d.iter_mut().enumerate() {
                row[x] = 0;
            }
            for (&(a, b), &c) in &costs {
                if a < LEAF_BASE && b < LEAF_BASE {
                    let (a, b) = (usize::try_from(a).unwrap(), usize::try_from(b).unwrap());
                    d[a][b] = d[a][b].min(u64::from(c));
                }
            }
            for m in 1..=k {
                for a in 1..=k {
                    for b in 1..=k {
                        d[a][b] = d[a][b].min(d[a][m] + d[m][b]);
                    }
                }
            }
            // Distance from x (an H node or a leaf) to leaf `leaf`, never through a leaf.
            let to_leaf = |x: u64, leaf: u64| -> u64 {
                if x >= LEAF_BASE {
                    return if x == leaf { 0 } else { INF };
                }
                (1..=self.k)
                    .filter_map(|h| {
                        costs.get(&(h, leaf)).map(|c| {
                            d[usize::try_from(x).unwrap()][usize::try_from(h).unwrap()]
                                + u64::from(*c)
                        })
                    })
                    .min()
                    .unwrap_or(INF)
            };
            let first_hops = |leaf: u64| -> BTreeSet<NodeId> {
                let total = to_leaf(1, leaf);
                costs
                    .iter()
                    .filter(|((a, b), c)| *a == 1 && u64::from(**c) + to_leaf(*b, leaf) == total)
                    .map(|((_, b), _)| n(*b))
                    .collect()
            };
            let policy = self.policy();
            let mut out = Vec::new();
            for dst in 2..=6u32 {
                // (transit-avoided domains transited, cost, leaf id)
                let mut offers: Vec<(usize, u64, u64)> = Vec::new();
                for (j, (home, _, _)) in self.leaves.iter().enumerate() {
                    let id = LEAF_BASE + j as u64;
                    if to_leaf(1, id) >= INF {
                        continue;
                    }
                    let w = costs
                        .iter()
                        .filter(|((a, _), _)| *a == id)
                        .map(|(_, c)| u64::from(*c))
                        .min()
                        .unwrap();
                    let base = w + u64::from(policy.domain_extra_cost(DomainId(*home)));
                    let offer = if *home == dst {
                        Some((Vec::new(), 0))
                    } else {
                        self.reach(j)
                            .into_iter()
                            .find(|(rd, _, p)| *rd == dst && !p.contains(&1))
                            .map(|(_, c, p)| (p, u64::from(c)))
                    };
                    if let Some((path, cost)) = offer {
                        let full = core::iter::once(*home).chain(path);
                        let transits = full
                            .filter(|x| *x != dst && policy.avoids_transit(DomainId(*x)))
                            .count();
                        offers.push((transits, base + cost, id));
                    }
                }
                let Some(&(t, cost, _)) = offers.iter().min() else {
                    continue;
                };
                let best: Vec<u64> = offers
                    .iter()
                    .filter(|o| (o.0, o.1) == (t, cost))
                    .map(|o| o.2)
                    .collect();
                let preferred = policy
                    .preferred_border_nodes(DomainId(dst))
                    .iter()
                    .find(|p| best.contains(&p.get()));
                let near = best.iter().map(|b| to_leaf(1, *b)).min().unwrap();
                let exits: Vec<u64> = if let Some(p) = preferred {
                    vec![p.get()]
                } else {
                    best.into_iter()
                        .filter(|b| to_leaf(1, *b) == near)
                        .collect()
                };
                let exit_cost = to_leaf(1, exits[0]);
                let hops = exits.iter().flat_map(|e| first_hops(*e)).collect();
                out.push((dst, cost, exit_cost, hops));
            }
            out
        }
    }

    proptest::proptest! {
        /// The table's domain routes equal a brute-force model's, preferences included: one
        /// route per reachable domain, its cost, the exit used and every next hop.
        #[test]
        fn domain_routes_match_a_brute_force_model(dom in arb_domain()) {
            let c = run(&dom.lsdb(), dom.policy(), &[]);
            let got: Vec<(u32, u64, u64, BTreeSet<NodeId>)> = inter(&c)
                .into_iter()
                .map(|(d, k, e, h)| (d, k, e, h.into_iter().collect()))
                .collect();
            proptest::prop_assert_eq!(got, dom.model());
            // Preferences never change which domains have a route.
            let plain = run(&dom.lsdb(), ValidPolicy::default(), &[]);
            proptest::prop_assert_eq!(domains(&c), domains(&plain));
        }
    }
}
