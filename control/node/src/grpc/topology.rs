//! GetTopology: the router's link-state database, last route table and this node's announced
//! state, as a `mesh.v1.Topology`.
//!
//! What a node can know (SPEC §2, §9): node-level detail (nodes, links) only for its own
//! domain, whose LSDB it holds; for every other domain the summary its border neighbours
//! advertise (their border nodes adjacent to this domain, member ranges) and the route cost.
//! Links are every directed link advertised in the LSDB, including those between this domain's
//! borders and the neighbouring domains' borders. Addresses, capabilities, load and draining are
//! known for this node only: LSAs do not carry them yet.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::v1 as pb;
use mesh_routing::lsa::LinkState as LsaLinkState;
use mesh_routing::members::compact;
use mesh_routing::{DomainId, Lsa, Lsdb, NodeId, NodeRange, RouteTable, Router};
use tonic::Status;

use crate::control::requests::AnnouncedState;

/// The topology as `router` sees it; `scope` `Some(d)` keeps domain `d` only (NOT_FOUND when
/// this node knows nothing of `d`).
pub fn build(
    router: &Router,
    table: Option<&RouteTable>,
    own: &AnnouncedState,
    epoch: u64,
    scope: Option<DomainId>,
) -> Result<pb::Topology, Status> {
    let me = router.node();
    let own_domain = router.domain();
    let lsdb = router.lsdb();
    let mut members: Vec<NodeId> = lsdb
        .live()
        .filter(|l| !l.is_summary())
        .map(Lsa::origin)
        .chain([me])
        .collect();
    members.sort_unstable();
    members.dedup();
    // Foreign borders adjacent to this domain, by their home domain.
    let mut foreign_borders: BTreeMap<DomainId, Vec<u64>> = BTreeMap::new();
    let mut known: BTreeSet<DomainId> = BTreeSet::new();
    for lsa in lsdb.live() {
        if let Some(s) = lsa.summary() {
            foreign_borders
                .entry(s.home_domain())
                .or_default()
                .push(lsa.origin().get());
            known.insert(s.home_domain());
            known.extend(s.reach().iter().map(|r| r.domain));
            known.extend(s.members().iter().map(mesh_routing::DomainMembers::domain));
        }
    }
    if let Some(t) = table {
        known.extend(t.inter_routes().iter().map(|r| r.domain));
        known.extend(t.members().iter().map(|(_, d)| d));
    }
    known.remove(&own_domain);
    if let Some(d) = scope
        && d != own_domain
        && !known.contains(&d)
    {
        return Err(Status::not_found(format!(
            "node {me} knows no domain {d} (its own is {own_domain})"
        )));
    }

    let mut topo = pb::Topology {
        node_id: me.get(),
        domain_id: own_domain.0,
        epoch,
        policy_version: router.policy().version(),
        ..pb::Topology::default()
    };
    if scope.is_none_or(|d| d == own_domain) {
        topo.nodes = members
            .iter()
            .map(|&n| node(n, own_domain, me, table, own))
            .collect();
        topo.links = links(router);
        let ranges = compact(&members, usize::MAX);
        let borders = members
            .iter()
            .filter(|&&n| {
                (n == me && router.is_border())
                    || lsdb.get(n).is_some_and(|l| {
                        l.links()
                            .iter()
                            .any(|k| members.binary_search(&k.neighbor).is_err())
                    })
            })
            .map(|n| n.get())
            .collect();
        topo.domains
            .push(domain(own_domain, borders, &ranges, Some(0)));
    }
    for d in known {
        if scope.is_some_and(|s| s != d) {
            continue;
        }
        let mut borders = foreign_borders.remove(&d).unwrap_or_default();
        borders.sort_unstable();
        let ranges = member_ranges(d, lsdb, table);
        let cost = table
            .and_then(|t| t.inter_route(d))
            .map(|r| r.exit_cost.saturating_add(r.domain_cost));
        topo.domains.push(domain(d, borders, &ranges, cost));
    }
    Ok(topo)
}

fn node(
    n: NodeId,
    domain: DomainId,
    me: NodeId,
    table: Option<&RouteTable>,
    own: &AnnouncedState,
) -> pb::TopologyNode {
    let mut out = pb::TopologyNode {
        node_id: n.get(),
        domain_id: domain.0,
        ..pb::TopologyNode::default()
    };
    if n == me {
        out.set_state(if own.draining {
            pb::NodeState::Draining
        } else {
            pb::NodeState::Up
        });
        out.cost = Some(0);
        out.addresses.clone_from(&own.addresses);
        out.capabilities.clone_from(&own.capabilities);
        out.load = own.load;
        return out;
    }
    match table.and_then(|t| t.intra_route(n).map(|r| (t, r))) {
        Some((t, r)) => {
            out.set_state(pb::NodeState::Up);
            out.cost = Some(r.cost);
            out.next_hops = t.intra_hops(r).iter().map(|h| h.get()).collect();
        }
        None => out.set_state(pb::NodeState::Unreachable),
    }
    out
}

/// Every directed link advertised in the LSDB. A link is UP when both ends advertise it up,
/// ONE_WAY when the other end does not advertise it (yet), DOWN when either end says down.
/// For this node's own links the advertised cost is the configured one, before the policy.
fn links(router: &Router) -> Vec<pb::TopologyLink> {
    let lsdb = router.lsdb();
    let me = router.node();
    let mut out = Vec::new();
    for lsa in lsdb.live() {
        let from = lsa.origin();
        for link in lsa.links() {
            let back = lsdb.get(link.neighbor).and_then(|l| l.link_to(from));
            let state = match (link.state, back.map(|b| b.state)) {
                (LsaLinkState::Up, Some(LsaLinkState::Up)) => pb::LinkState::Up,
                (LsaLinkState::Up, None) => pb::LinkState::OneWay,
                _ => pb::LinkState::Down,
            };
            let advertised_cost = if from == me {
                router
                    .neighbors()
                    .find(|(n, _, _)| *n == link.neighbor)
                    .map_or(link.cost, |(_, _, c)| c)
            } else {
                link.cost
            };
            out.push(pb::TopologyLink {
                from_node: from.get(),
                to_node: link.neighbor.get(),
                cost: link.cost,
                state: state.into(),
                advertised_cost,
            });
        }
    }
    out
}

/// Member ranges of another domain: from the route table's member map when there is one (it
/// merges every summary), otherwise from the first summary that carries them.
fn member_ranges(d: DomainId, lsdb: &Lsdb, table: Option<&RouteTable>) -> Vec<NodeRange> {
    let mut ranges: Vec<NodeRange> = match table {
        Some(t) => t
            .members()
            .iter()
            .filter(|(_, dom)| *dom == d)
            .map(|(r, _)| r)
            .collect(),
        None => lsdb
            .live()
            .find_map(|l| l.summary()?.members_of(d))
            .map(<[NodeRange]>::to_vec)
            .unwrap_or_default(),
    };
    ranges.sort_unstable_by_key(|r| r.first());
    ranges
}

fn domain(
    d: DomainId,
    border_nodes: Vec<u64>,
    ranges: &[NodeRange],
    cost: Option<u64>,
) -> pb::TopologyDomain {
    pb::TopologyDomain {
        domain_id: d.0,
        border_nodes,
        member_ranges: ranges
            .iter()
            .map(|r| pb::NodeRange {
                first: r.first().get(),
                last: r.last().get(),
            })
            .collect(),
        member_count: ranges
            .iter()
            .map(|r| (r.last().get() - r.first().get()).saturating_add(1))
            .fold(0, u64::saturating_add),
        cost,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_routing::RouterConfig;

    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).unwrap()
    }

    /// Two routers of domain 1, adjacent, exchanging until quiet.
    fn pair() -> (Router, Router, Option<RouteTable>) {
        let t0 = Duration::ZERO;
        let d = DomainId(1);
        let mut a = Router::new(RouterConfig::new(id(1), d), t0).unwrap();
        let mut b = Router::new(RouterConfig::new(id(2), d), t0).unwrap();
        a.handle_neighbor_up(id(2), d, 3, t0).unwrap();
        b.handle_neighbor_up(id(1), d, 3, t0).unwrap();
        let mut table = None;
        for _ in 0..20 {
            if let Some(t) = a.poll_routes(t0) {
                table = Some(t);
            }
            let _ = b.poll_routes(t0);
            let mut moved = false;
            while let Some(tx) = a.poll_transmit() {
                b.handle_bytes(id(1), &tx.msg.to_bytes().unwrap(), t0)
                    .unwrap();
                moved = true;
            }
            while let Some(tx) = b.poll_transmit() {
                a.handle_bytes(id(2), &tx.msg.to_bytes().unwrap(), t0)
                    .unwrap();
                moved = true;
            }
            if !moved {
                break;
            }
        }
        (a, b, table)
    }

    #[test]
    fn two_nodes_show_as_nodes_links_and_one_domain() {
        let (a, _b, table) = pair();
        let own = AnnouncedState {
            addresses: vec!["127.0.0.1:7001".into()],
            draining: true,
            ..AnnouncedState::default()
        };
        let t = build(&a, table.as_ref(), &own, 9, None).unwrap();
        assert_eq!((t.node_id, t.domain_id, t.epoch), (1, 1, 9));
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[0].state(), pb::NodeState::Draining);
        assert_eq!(t.nodes[0].addresses, ["127.0.0.1:7001"]);
        assert_eq!(t.nodes[1].state(), pb::NodeState::Up);
        assert_eq!(
            (t.nodes[1].cost, &t.nodes[1].next_hops[..]),
            (Some(3), &[2][..])
        );
        assert_eq!(t.links.len(), 2);
        assert!(
            t.links
                .iter()
                .all(|l| l.cost == 3 && l.state() == pb::LinkState::Up)
        );
        assert_eq!(t.domains.len(), 1);
        assert_eq!(t.domains[0].member_count, 2);
        assert_eq!(
            t.domains[0].member_ranges,
            [pb::NodeRange { first: 1, last: 2 }]
        );
        assert!(t.domains[0].border_nodes.is_empty());

        let scoped = build(&a, table.as_ref(), &own, 9, Some(DomainId(1))).unwrap();
        assert_eq!(scoped, t);
        let e = build(&a, table.as_ref(), &own, 9, Some(DomainId(7))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
}
