//! SetPolicy: `mesh.v1.Policy` → [`mesh_routing::Policy`], and the router's verdict →
//! gRPC status.
//!
//! The conversion checks what only the wire form can get wrong (ids of 0, a rate limit without a
//! scope, a link override for another node's link) and names the field as the proto spells it
//! (`policy.link_costs[2].from_node`, `policy.domain_preferences[0].preferred_border_nodes[1]`).
//! Everything else — costs of 0, duplicates (preferred border nodes included), allowed and
//! denied at once, list limits, the version — is the router's [`Policy::validate`] and
//! [`mesh_routing::ValidPolicy::check_successor`], mapped by [`rejection`]. Domain preferences
//! (extra cost, preferred border nodes in their order, avoid-transit) are applied by the
//! routing core's inter-domain computation ([`mesh_routing::interdomain`]). The one rule it
//! cannot apply yet, per-client rate limits, is UNIMPLEMENTED, never silently dropped.

use mesh_proto::v1 as pb;
use mesh_routing::{
    Destination, DomainId, DomainPreference, LinkCost, NodeId, Policy, PolicyError, RateLimit,
};
use tonic::Status;

/// The router's policy for node `me`, from a SetPolicy request's policy.
pub fn from_proto(me: NodeId, p: &pb::Policy) -> Result<Policy, Status> {
    let mut out = Policy {
        version: p.version,
        ..Policy::default()
    };
    for (i, l) in p.link_costs.iter().enumerate() {
        if l.from_node != me.get() {
            return Err(Status::invalid_argument(format!(
                "policy.link_costs[{i}].from_node: {} is not this node ({me}); a node sets the costs of its own links only",
                l.from_node
            )));
        }
        let neighbor = node_id(l.to_node, || format!("policy.link_costs[{i}].to_node"))?;
        if neighbor == me {
            return Err(Status::invalid_argument(format!(
                "policy.link_costs[{i}].to_node: {me} is this node; a link joins two nodes"
            )));
        }
        out.link_costs.push(LinkCost {
            neighbor,
            cost: l.cost,
        });
    }
    for (i, d) in p.domain_preferences.iter().enumerate() {
        out.domain_preferences.push(DomainPreference {
            domain: DomainId(d.domain_id),
            extra_cost: d.extra_cost,
            preferred_border_nodes: node_ids(
                &d.preferred_border_nodes,
                &format!("policy.domain_preferences[{i}].preferred_border_nodes"),
            )?,
            avoid_transit: d.avoid_transit,
        });
    }
    if let Some(deny) = &p.deny {
        out.deny_nodes = node_ids(&deny.nodes, "policy.deny.nodes")?;
        out.deny_domains = deny.domains.iter().copied().map(DomainId).collect();
    }
    if let Some(allow) = &p.allow {
        out.allow_nodes = node_ids(&allow.nodes, "policy.allow.nodes")?;
        out.allow_domains = allow.domains.iter().copied().map(DomainId).collect();
    }
    for (i, r) in p.rate_limits.iter().enumerate() {
        let dst = match &r.scope {
            Some(pb::rate_limit::Scope::DstNode(n)) => {
                Destination::Node(node_id(*n, || format!("policy.rate_limits[{i}].dst_node"))?)
            }
            Some(pb::rate_limit::Scope::DstDomain(d)) => Destination::Domain(DomainId(*d)),
            Some(pb::rate_limit::Scope::Client(_)) => {
                return Err(Status::unimplemented(format!(
                    "policy.rate_limits[{i}].client: per-client limits are not supported by this node yet (limit by dst_node or dst_domain)"
                )));
            }
            None => {
                return Err(Status::invalid_argument(format!(
                    "policy.rate_limits[{i}]: no scope; set one of dst_node, dst_domain, client"
                )));
            }
        };
        if r.msgs_per_sec == 0 {
            return Err(Status::invalid_argument(format!(
                "policy.rate_limits[{i}].msgs_per_sec: 0; at least 1 (to block a destination, use deny)"
            )));
        }
        out.rate_limits.push(RateLimit {
            dst,
            msgs_per_s: r.msgs_per_sec,
            burst: if r.burst == 0 {
                r.msgs_per_sec
            } else {
                r.burst
            },
        });
    }
    Ok(out)
}

/// The status for a policy the router refused: FAILED_PRECONDITION for a version that does not
/// increase, INVALID_ARGUMENT (naming the field) for everything else.
#[must_use]
pub fn rejection(e: &PolicyError) -> Status {
    match e {
        PolicyError::StaleVersion { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

fn node_id(raw: u64, field: impl FnOnce() -> String) -> Result<NodeId, Status> {
    NodeId::new(raw).ok_or_else(|| {
        Status::invalid_argument(format!("{}: 0 is not a node id (ids are 1..)", field()))
    })
}

fn node_ids(raw: &[u64], field: &str) -> Result<Vec<NodeId>, Status> {
    raw.iter()
        .enumerate()
        .map(|(i, &n)| node_id(n, || format!("{field}[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn me() -> NodeId {
        NodeId::new(1).unwrap()
    }

    fn link(from: u64, to: u64, cost: u32) -> pb::LinkCostOverride {
        pb::LinkCostOverride {
            from_node: from,
            to_node: to,
            cost,
        }
    }

    #[test]
    fn a_full_policy_converts() {
        let p = pb::Policy {
            version: 3,
            link_costs: vec![link(1, 2, 7)],
            domain_preferences: vec![
                pb::DomainPreference {
                    domain_id: 4,
                    extra_cost: 10,
                    ..pb::DomainPreference::default()
                },
                pb::DomainPreference {
                    domain_id: 6,
                    preferred_border_nodes: vec![12, 11],
                    avoid_transit: true,
                    ..pb::DomainPreference::default()
                },
            ],
            deny: Some(pb::DestinationSet {
                nodes: vec![9],
                domains: vec![5],
            }),
            allow: None,
            rate_limits: vec![pb::RateLimit {
                scope: Some(pb::rate_limit::Scope::DstDomain(4)),
                msgs_per_sec: 100,
                burst: 0,
            }],
        };
        let r = from_proto(me(), &p).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.link_costs[0].cost, 7);
        assert_eq!(r.domain_preferences[0].extra_cost, 10);
        assert!(r.domain_preferences[0].preferred_border_nodes.is_empty());
        assert!(!r.domain_preferences[0].avoid_transit);
        let six = &r.domain_preferences[1];
        assert_eq!(six.domain, DomainId(6));
        assert_eq!(
            six.preferred_border_nodes,
            [NodeId::new(12).unwrap(), NodeId::new(11).unwrap()],
            "the order of preference is kept"
        );
        assert!(six.avoid_transit);
        assert_eq!(r.deny_nodes, [NodeId::new(9).unwrap()]);
        assert_eq!(r.deny_domains, [DomainId(5)]);
        assert_eq!(r.rate_limits[0].burst, 100, "burst 0 means msgs_per_sec");
        assert!(r.validate().is_ok());
    }

    #[test]
    fn wire_level_mistakes_name_their_field() {
        let bad = |p: pb::Policy| from_proto(me(), &p).unwrap_err();
        let e = bad(pb::Policy {
            link_costs: vec![link(2, 3, 1)],
            ..pb::Policy::default()
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().starts_with("policy.link_costs[0].from_node"),
            "{e}"
        );
        let e = bad(pb::Policy {
            rate_limits: vec![pb::RateLimit {
                msgs_per_sec: 1,
                ..pb::RateLimit::default()
            }],
            ..pb::Policy::default()
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("policy.rate_limits[0]"), "{e}");
        let e = bad(pb::Policy {
            deny: Some(pb::DestinationSet {
                nodes: vec![4, 0],
                domains: vec![],
            }),
            ..pb::Policy::default()
        });
        assert!(e.message().starts_with("policy.deny.nodes[1]"), "{e}");
        let e = bad(pb::Policy {
            domain_preferences: vec![
                pb::DomainPreference::default(),
                pb::DomainPreference {
                    domain_id: 3,
                    preferred_border_nodes: vec![7, 0],
                    ..pb::DomainPreference::default()
                },
            ],
            ..pb::Policy::default()
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("policy.domain_preferences[1].preferred_border_nodes[1]"),
            "{e}"
        );
        let e = bad(pb::Policy {
            rate_limits: vec![pb::RateLimit {
                scope: Some(pb::rate_limit::Scope::Client("*".into())),
                msgs_per_sec: 1,
                burst: 1,
            }],
            ..pb::Policy::default()
        });
        assert_eq!(e.code(), Code::Unimplemented);
    }

    #[test]
    fn router_verdicts_map_to_codes() {
        let zero = from_proto(
            me(),
            &pb::Policy {
                version: 1,
                link_costs: vec![link(1, 2, 0)],
                ..pb::Policy::default()
            },
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let s = rejection(&zero);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("link_costs"), "{s:?}");
        let twice = from_proto(
            me(),
            &pb::Policy {
                version: 1,
                domain_preferences: vec![pb::DomainPreference {
                    domain_id: 3,
                    preferred_border_nodes: vec![7, 8, 7],
                    ..pb::DomainPreference::default()
                }],
                ..pb::Policy::default()
            },
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let s = rejection(&twice);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message()
                .contains("domain_preferences.preferred_border_nodes")
                && s.message().contains("domain 3")
                && s.message().contains("key 7"),
            "{s:?}"
        );
        let stale = PolicyError::StaleVersion {
            current: 2,
            proposed: 1,
        };
        assert_eq!(rejection(&stale).code(), Code::FailedPrecondition);
    }
}
