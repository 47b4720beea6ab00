//! Routing policy (SPEC §4 SetPolicy): link costs, domain preferences, allow/deny of
//! destinations, rate limits.
//!
//! A [`Policy`] is plain data as it arrives from the control API; [`Policy::validate`] turns it
//! into a [`ValidPolicy`] (sorted, checked, the only form the router accepts) or a
//! [`PolicyError`] naming the bad field. A rejected policy changes nothing. Versions must
//! strictly increase (checked by the router against the one in force; the initial policy is the
//! empty one at version 0). A new policy takes effect at the next route computation.
//!
//! Semantics:
//! - **Link costs** override the cost of *this node's own* links to the neighbours named. They
//!   are advertised in its LSA, so every node's SPF sees the same costs — overriding someone
//!   else's link locally would make nodes disagree on paths and could loop traffic.
//! - **Domain preferences**, per named domain, all applied by [`crate::interdomain`]. Like
//!   BGP's local preference inside an AS, they must be the same on every node of a domain (the
//!   control plane pushes one policy to the whole domain): every node then picks the same
//!   exits, which is what keeps forwarding inside the domain loop-free.
//!   - `extra_cost` is added to routes whose next domain (the domain entered when leaving this
//!     one) is the one named; a larger value steers traffic away from it. The domain's borders
//!     advertise costs that include it.
//!   - `preferred_border_nodes` lists, most preferred first, the foreign border nodes (nodes of
//!     a neighbouring domain linked to this one, as GetTopology lists them under their domain)
//!     through which to leave towards the named domain. Among the exits of equal best cost
//!     the first one listed wins, and all of the route's traffic goes to it instead of being
//!     spread over the nearest exits; when none of the listed nodes is such an exit the route
//!     is chosen by cost alone. It never makes a route more expensive.
//!   - `avoid_transit` ranks every route that *transits* the named domain (enters it to reach
//!     a different domain) after every route that does not, whatever their costs; such a
//!     route is used only when nothing else reaches the destination. Routes to the named
//!     domain itself are unaffected.
//! - **Allow / deny**: a destination is permitted when it is not denied and, if the allow list
//!   of its kind is non-empty, it is listed. A node destination must pass both the node lists
//!   and the domain lists (for its domain). Denied destinations are removed from the route
//!   table (lookups answer [`crate::table::RouteError::Denied`]) and denied domains are not
//!   advertised to other domains by a border, so no transit traffic is attracted to a black hole.
//! - **Rate limits** (messages per second with a burst) per destination node or domain are
//!   carried into the route table for the data plane, which enforces them with a
//!   [`TokenBucket`] per destination; a node limit takes precedence over its domain's.

use std::time::Duration;

use crate::ids::{DomainId, NodeId};

/// Most entries in any one list of a policy.
pub const MAX_POLICY_ENTRIES: usize = 65_536;

/// A cost for one of this node's links.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LinkCost {
    /// The neighbour at the other end.
    pub neighbor: NodeId,
    /// The cost to advertise, `>= 1`.
    pub cost: u32,
}

/// Routing preferences for traffic towards, or through, one domain (see the module docs).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DomainPreference {
    /// The domain named.
    pub domain: DomainId,
    /// Added to the domain-level cost of routes entering `domain` next.
    pub extra_cost: u32,
    /// Foreign border nodes to leave through towards `domain`, most preferred first: among
    /// exits of equal best cost, the first listed one takes all the traffic. No duplicates;
    /// all lists of a policy together hold at most [`MAX_POLICY_ENTRIES`] nodes.
    pub preferred_border_nodes: Vec<NodeId>,
    /// Routes that enter `domain` to reach another domain are used only when no other route
    /// reaches that domain.
    pub avoid_transit: bool,
}

impl DomainPreference {
    /// A preference for `domain` that changes nothing (no extra cost, no preferred borders,
    /// transit allowed), to fill in.
    #[must_use]
    pub const fn new(domain: DomainId) -> DomainPreference {
        DomainPreference {
            domain,
            extra_cost: 0,
            preferred_border_nodes: Vec::new(),
            avoid_transit: false,
        }
    }
}

/// A destination named by a policy entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Destination {
    /// One node.
    Node(NodeId),
    /// Every node of one domain.
    Domain(DomainId),
}

/// A message rate limit for one destination.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RateLimit {
    /// What it applies to.
    pub dst: Destination,
    /// Sustained messages per second, `>= 1`.
    pub msgs_per_s: u32,
    /// Messages that may be sent at once after a quiet period, `>= 1`.
    pub burst: u32,
}

/// A routing policy as received (see the module docs for the meaning of each field).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Policy {
    /// Must be greater than the version in force.
    pub version: u64,
    /// Costs of this node's own links.
    pub link_costs: Vec<LinkCost>,
    /// Preferences per domain (extra costs, preferred exits, transit avoidance).
    pub domain_preferences: Vec<DomainPreference>,
    /// Node destinations removed from the tables.
    pub deny_nodes: Vec<NodeId>,
    /// Domain destinations removed from the tables.
    pub deny_domains: Vec<DomainId>,
    /// If non-empty, the only node destinations permitted.
    pub allow_nodes: Vec<NodeId>,
    /// If non-empty, the only domains whose nodes are permitted.
    pub allow_domains: Vec<DomainId>,
    /// Rate limits per destination.
    pub rate_limits: Vec<RateLimit>,
}

/// Why a policy was rejected; the field is named as in [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The version does not increase.
    #[error("policy version {proposed} is not newer than the version in force, {current}")]
    StaleVersion {
        /// Version in force.
        current: u64,
        /// Version offered.
        proposed: u64,
    },
    /// A list is too long.
    #[error("policy field {field} has {count} entries, over the limit of {limit}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// Entries found.
        count: usize,
    },
    /// A value that must be at least 1 is 0.
    #[error("policy field {field} has 0 for key {key}; the minimum is 1")]
    Zero {
        /// The field.
        field: &'static str,
        /// The entry's key (node or domain id).
        key: u64,
    },
    /// A key appears twice in one list.
    #[error("policy field {field} lists key {key} twice")]
    Duplicate {
        /// The field.
        field: &'static str,
        /// The repeated key.
        key: u64,
    },
    /// A key appears twice in a list of one domain preference.
    #[error("policy field {field} of the preference for domain {domain} lists key {key} twice")]
    DuplicateInPreference {
        /// The field.
        field: &'static str,
        /// The preference's domain.
        domain: u32,
        /// The repeated key.
        key: u64,
    },
    /// A destination is both allowed and denied.
    #[error("policy field {field} both allows and denies {key}")]
    AllowedAndDenied {
        /// The field pair.
        field: &'static str,
        /// The key.
        key: u64,
    },
}

const fn dst_key(d: Destination) -> u64 {
    match d {
        Destination::Node(n) => n.get(),
        Destination::Domain(d) => d.0 as u64,
    }
}

fn check_len(field: &'static str, count: usize) -> Result<(), PolicyError> {
    if count > MAX_POLICY_ENTRIES {
        return Err(PolicyError::TooMany {
            field,
            limit: MAX_POLICY_ENTRIES,
            count,
        });
    }
    Ok(())
}

/// Sorts `v` by `key` and fails on the first repeated key.
fn sort_unique<T, K: Ord + Copy>(
    field: &'static str,
    v: &mut [T],
    key: impl Fn(&T) -> K,
    raw: impl Fn(K) -> u64,
) -> Result<(), PolicyError> {
    check_len(field, v.len())?;
    v.sort_unstable_by_key(&key);
    if let Some([first, ..]) = v.windows(2).find(|w| key(&w[0]) == key(&w[1])) {
        return Err(PolicyError::Duplicate {
            field,
            key: raw(key(first)),
        });
    }
    Ok(())
}

/// Bounds the preferred border nodes of all preferences together and fails on a node listed
/// twice by one preference. The lists keep their order: it is the order of preference.
fn check_preferred_borders(prefs: &[DomainPreference]) -> Result<(), PolicyError> {
    const FIELD: &str = "domain_preferences.preferred_border_nodes";
    check_len(
        FIELD,
        prefs.iter().map(|p| p.preferred_border_nodes.len()).sum(),
    )?;
    let mut sorted: Vec<NodeId> = Vec::new();
    for p in prefs {
        sorted.clear();
        sorted.extend_from_slice(&p.preferred_border_nodes);
        sorted.sort_unstable();
        if let Some([first, ..]) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(PolicyError::DuplicateInPreference {
                field: FIELD,
                domain: p.domain.0,
                key: first.get(),
            });
        }
    }
    Ok(())
}

impl Policy {
    /// Checks and normalises the policy (lists sorted). The version is checked separately,
    /// against the one in force, by [`ValidPolicy::check_successor`].
    pub fn validate(mut self) -> Result<ValidPolicy, PolicyError> {
        let node = NodeId::get;
        let domain = |d: DomainId| u64::from(d.0);
        sort_unique("link_costs", &mut self.link_costs, |l| l.neighbor, node)?;
        if let Some(l) = self.link_costs.iter().find(|l| l.cost == 0) {
            return Err(PolicyError::Zero {
                field: "link_costs",
                key: l.neighbor.get(),
            });
        }
        sort_unique(
            "domain_preferences",
            &mut self.domain_preferences,
            |p| p.domain,
            domain,
        )?;
        check_preferred_borders(&self.domain_preferences)?;
        sort_unique("deny_nodes", &mut self.deny_nodes, |n| *n, node)?;
        sort_unique("deny_domains", &mut self.deny_domains, |d| *d, domain)?;
        sort_unique("allow_nodes", &mut self.allow_nodes, |n| *n, node)?;
        sort_unique("allow_domains", &mut self.allow_domains, |d| *d, domain)?;
        if let Some(n) = self
            .allow_nodes
            .iter()
            .find(|n| self.deny_nodes.binary_search(n).is_ok())
        {
            return Err(PolicyError::AllowedAndDenied {
                field: "allow_nodes/deny_nodes",
                key: n.get(),
            });
        }
        if let Some(d) = self
            .allow_domains
            .iter()
            .find(|d| self.deny_domains.binary_search(d).is_ok())
        {
            return Err(PolicyError::AllowedAndDenied {
                field: "allow_domains/deny_domains",
                key: u64::from(d.0),
            });
        }
        sort_unique("rate_limits", &mut self.rate_limits, |r| r.dst, dst_key)?;
        for r in &self.rate_limits {
            if r.msgs_per_s == 0 {
                return Err(PolicyError::Zero {
                    field: "rate_limits.msgs_per_s",
                    key: dst_key(r.dst),
                });
            }
            if r.burst == 0 {
                return Err(PolicyError::Zero {
                    field: "rate_limits.burst",
                    key: dst_key(r.dst),
                });
            }
        }
        Ok(ValidPolicy(self))
    }
}

/// A checked, normalised policy: the only form the router takes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ValidPolicy(Policy);

impl ValidPolicy {
    /// The policy as data (lists sorted).
    #[must_use]
    pub const fn policy(&self) -> &Policy {
        &self.0
    }

    /// Its version.
    #[must_use]
    pub const fn version(&self) -> u64 {
        self.0.version
    }

    /// Fails unless `next` may replace `self` (strictly greater version).
    pub fn check_successor(&self, next: &ValidPolicy) -> Result<(), PolicyError> {
        if next.version() <= self.version() {
            return Err(PolicyError::StaleVersion {
                current: self.version(),
                proposed: next.version(),
            });
        }
        Ok(())
    }

    /// The overridden cost of this node's link to `neighbor`, if any.
    #[must_use]
    pub fn link_cost(&self, neighbor: NodeId) -> Option<u32> {
        let v = &self.0.link_costs;
        v.binary_search_by_key(&neighbor, |l| l.neighbor)
            .ok()
            .map(|i| v[i].cost)
    }

    /// The preference for `domain`, if any.
    #[must_use]
    pub fn domain_preference(&self, domain: DomainId) -> Option<&DomainPreference> {
        let v = &self.0.domain_preferences;
        v.binary_search_by_key(&domain, |p| p.domain)
            .ok()
            .map(|i| &v[i])
    }

    /// The extra cost of routes entering `domain` next (0 when none is set).
    #[must_use]
    pub fn domain_extra_cost(&self, domain: DomainId) -> u32 {
        self.domain_preference(domain).map_or(0, |p| p.extra_cost)
    }

    /// The foreign border nodes to leave through towards `domain`, most preferred first
    /// (empty when none is set).
    #[must_use]
    pub fn preferred_border_nodes(&self, domain: DomainId) -> &[NodeId] {
        self.domain_preference(domain)
            .map_or(&[], |p| &p.preferred_border_nodes)
    }

    /// Whether routes transiting `domain` are to be used only when nothing else reaches.
    #[must_use]
    pub fn avoids_transit(&self, domain: DomainId) -> bool {
        self.domain_preference(domain)
            .is_some_and(|p| p.avoid_transit)
    }

    /// Whether any preference avoids transit (so domain paths need a look).
    #[must_use]
    pub fn avoids_any_transit(&self) -> bool {
        self.0.domain_preferences.iter().any(|p| p.avoid_transit)
    }

    /// Whether the node lists permit `node` (its domain is checked separately).
    #[must_use]
    pub fn permits_node(&self, node: NodeId) -> bool {
        let p = &self.0;
        p.deny_nodes.binary_search(&node).is_err()
            && (p.allow_nodes.is_empty() || p.allow_nodes.binary_search(&node).is_ok())
    }

    /// Whether the domain lists permit `domain`.
    #[must_use]
    pub fn permits_domain(&self, domain: DomainId) -> bool {
        let p = &self.0;
        p.deny_domains.binary_search(&domain).is_err()
            && (p.allow_domains.is_empty() || p.allow_domains.binary_search(&domain).is_ok())
    }

    /// Whether any node list is in force (so remote node destinations need a check).
    #[must_use]
    pub fn filters_nodes(&self) -> bool {
        !self.0.deny_nodes.is_empty() || !self.0.allow_nodes.is_empty()
    }
}

/// A token bucket enforcing one [`RateLimit`]: integer arithmetic in micro-tokens, time as an
/// input, so it is exact and deterministic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    msgs_per_s: u64,
    capacity_micro: u64,
    micro_tokens: u64,
    last: Duration,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket for `limit` at time `now`.
    #[must_use]
    pub fn new(limit: RateLimit, now: Duration) -> TokenBucket {
        let capacity_micro = u64::from(limit.burst.max(1)) * MICRO;
        TokenBucket {
            msgs_per_s: u64::from(limit.msgs_per_s.max(1)),
            capacity_micro,
            micro_tokens: capacity_micro,
            last: now,
        }
    }

    /// Takes one token if available at `now` (time going backwards counts as no time).
    pub fn try_take(&mut self, now: Duration) -> bool {
        let elapsed_us =
            u64::try_from(now.saturating_sub(self.last).as_micros()).unwrap_or(u64::MAX);
        if now > self.last {
            self.last = now;
        }
        // msgs_per_s tokens per second = msgs_per_s micro-tokens per microsecond.
        let refill = elapsed_us.saturating_mul(self.msgs_per_s);
        self.micro_tokens = self
            .micro_tokens
            .saturating_add(refill)
            .min(self.capacity_micro);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsa::tests::n;

    #[test]
    fn validation_names_the_bad_field() {
        let p = Policy {
            version: 1,
            link_costs: vec![LinkCost {
                neighbor: n(2),
                cost: 0,
            }],
            ..Policy::default()
        };
        assert_eq!(
            p.validate(),
            Err(PolicyError::Zero {
                field: "link_costs",
                key: 2
            })
        );
        let p = Policy {
            version: 1,
            deny_domains: vec![DomainId(4), DomainId(4)],
            ..Policy::default()
        };
        assert_eq!(
            p.validate(),
            Err(PolicyError::Duplicate {
                field: "deny_domains",
                key: 4
            })
        );
        let p = Policy {
            version: 1,
            deny_nodes: vec![n(3)],
            allow_nodes: vec![n(3)],
            ..Policy::default()
        };
        assert!(matches!(
            p.validate(),
            Err(PolicyError::AllowedAndDenied { key: 3, .. })
        ));
        let p = Policy {
            version: 1,
            rate_limits: vec![RateLimit {
                dst: Destination::Domain(DomainId(2)),
                msgs_per_s: 10,
                burst: 0,
            }],
            ..Policy::default()
        };
        assert_eq!(
            p.validate(),
            Err(PolicyError::Zero {
                field: "rate_limits.burst",
                key: 2
            })
        );
        let p = Policy {
            version: 1,
            deny_nodes: (1..=MAX_POLICY_ENTRIES as u64 + 1).map(n).collect(),
            ..Policy::default()
        };
        assert!(matches!(
            p.validate(),
            Err(PolicyError::TooMany {
                field: "deny_nodes",
                ..
            })
        ));
    }

    #[test]
    fn preferred_border_lists_are_bounded_and_unique() {
        let pref = |domain: u32, nodes: &[u64]| DomainPreference {
            preferred_border_nodes: nodes.iter().copied().map(n).collect(),
            ..DomainPreference::new(DomainId(domain))
        };
        let with = |prefs: Vec<DomainPreference>| Policy {
            version: 1,
            domain_preferences: prefs,
            ..Policy::default()
        };
        // The same node in two preferences is fine; twice in one is not.
        assert!(
            with(vec![pref(2, &[7, 8]), pref(3, &[8, 7])])
                .validate()
                .is_ok()
        );
        let e = with(vec![pref(2, &[7, 8]), pref(3, &[9, 4, 6, 4])])
            .validate()
            .unwrap_err();
        assert_eq!(
            e,
            PolicyError::DuplicateInPreference {
                field: "domain_preferences.preferred_border_nodes",
                domain: 3,
                key: 4
            }
        );
        assert!(
            e.to_string().contains("domain 3") && e.to_string().contains("key 4"),
            "{e}"
        );
        // The bound counts every preference's list.
        let half = MAX_POLICY_ENTRIES as u64 / 2;
        let nodes = |lo: u64, hi: u64| (lo..=hi).collect::<Vec<_>>();
        assert!(
            with(vec![pref(2, &nodes(1, half)), pref(3, &nodes(1, half))])
                .validate()
                .is_ok()
        );
        assert_eq!(
            with(vec![pref(2, &nodes(1, half)), pref(3, &nodes(1, half + 1))]).validate(),
            Err(PolicyError::TooMany {
                field: "domain_preferences.preferred_border_nodes",
                limit: MAX_POLICY_ENTRIES,
                count: MAX_POLICY_ENTRIES + 1
            })
        );
        // Two preferences for one domain are still a duplicate of the outer list.
        assert_eq!(
            with(vec![pref(2, &[]), pref(2, &[5])]).validate(),
            Err(PolicyError::Duplicate {
                field: "domain_preferences",
                key: 2
            })
        );
    }

    #[test]
    fn versions_must_increase() {
        let v0 = ValidPolicy::default();
        let v1 = Policy {
            version: 1,
            ..Policy::default()
        }
        .validate()
        .unwrap();
        assert!(v0.check_successor(&v1).is_ok());
        assert_eq!(
            v1.check_successor(&v1),
            Err(PolicyError::StaleVersion {
                current: 1,
                proposed: 1
            })
        );
    }

    #[test]
    fn lookups() {
        let p = Policy {
            version: 3,
            link_costs: vec![
                LinkCost {
                    neighbor: n(9),
                    cost: 7,
                },
                LinkCost {
                    neighbor: n(2),
                    cost: 4,
                },
            ],
            domain_preferences: vec![
                DomainPreference {
                    domain: DomainId(5),
                    extra_cost: 100,
                    preferred_border_nodes: vec![n(8), n(3)],
                    avoid_transit: false,
                },
                DomainPreference {
                    avoid_transit: true,
                    ..DomainPreference::new(DomainId(2))
                },
            ],
            deny_nodes: vec![n(13)],
            allow_domains: vec![DomainId(1), DomainId(5)],
            ..Policy::default()
        }
        .validate()
        .unwrap();
        assert_eq!(p.link_cost(n(2)), Some(4));
        assert_eq!(p.link_cost(n(3)), None);
        assert_eq!(p.domain_extra_cost(DomainId(5)), 100);
        assert_eq!(p.domain_extra_cost(DomainId(6)), 0);
        assert_eq!(
            p.preferred_border_nodes(DomainId(5)),
            [n(8), n(3)],
            "the order of preference is kept"
        );
        assert!(p.preferred_border_nodes(DomainId(2)).is_empty());
        assert!(p.avoids_transit(DomainId(2)));
        assert!(!p.avoids_transit(DomainId(5)) && !p.avoids_transit(DomainId(6)));
        assert!(p.avoids_any_transit());
        assert!(!ValidPolicy::default().avoids_any_transit());
        assert!(!p.permits_node(n(13)));
        assert!(p.permits_node(n(14)));
        assert!(p.permits_domain(DomainId(5)));
        assert!(!p.permits_domain(DomainId(6)));
        assert!(p.filters_nodes());
    }

    #[test]
    fn token_bucket_bursts_then_sustains_the_rate() {
        let limit = RateLimit {
            dst: Destination::Node(n(1)),
            msgs_per_s: 10,
            burst: 3,
        };
        let t0 = Duration::from_secs(100);
        let mut b = TokenBucket::new(limit, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Over one second, at most 10 more.
        let mut taken = 0;
        for ms in 101..=1100 {
            if b.try_take(t0 + Duration::from_millis(ms)) {
                taken += 1;
            }
        }
        assert_eq!(taken, 10);
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }
}
