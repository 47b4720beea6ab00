//! Routes between domains: a path vector over the domain graph, carried in summary LSAs.
//!
//! # Model
//!
//! A node belongs to one domain. A **border** node has neighbours in other domains. For each
//! neighbouring domain X a border originates one **summary LSA into X** (flooded by X's nodes
//! inside X only): its links to X's nodes, its home domain, and for every other domain D it can
//! reach, the domain-level cost and the domain path (the domains entered after leaving home),
//! plus member ranges. In X's LSDB that LSA is a *leaf*: SPF reaches it, never transits it.
//!
//! Every node of domain H computes, from its LSDB alone, one route per other domain D:
//! - each reachable leaf L (a foreign border, home domain Z) offers D at domain-level cost
//!   `w(L) + pref(Z) + k(L, D)`, where `w(L)` is L's smallest advertised link cost into H (the
//!   weight of the domain edge), `pref(Z)` the policy's extra cost for entering Z, and
//!   `k(L, D)` is 0 for `D = Z`, else L's advertised cost; offers whose path would re-enter H
//!   are ignored (path-vector loop prevention);
//! - the route's cost `K(D)` is the smallest offer; its **best leaves** are those making it;
//! - its next hops are the equal-cost first hops towards the *nearest* best leaves.
//!
//! Two preferences of the policy refine this (see [`crate::policy`]):
//! - **avoid transit**: an offer's full domain path is `Z` followed by L's advertised path; it
//!   *transits* every domain on it but `D`. Offers are ranked by the number of
//!   transit-avoided domains they transit first and by cost second, so `K(D)` is the smallest
//!   cost among the offers transiting fewest of them — usually none; a transiting route wins
//!   only when nothing else reaches `D`. Offers for `D` itself never transit `D`.
//! - **preferred border nodes** for `D`: if one of the listed nodes is a best leaf, the first
//!   such is the route's only exit (its next hops are the first hops towards it, however near
//!   the other best leaves are). `K(D)` and the advertised path do not change: the exit is
//!   chosen among equal-cost ones, all of which this domain could use.
//!
//! A border of H advertises into X, for each D, the cost `K(D)` and the shortest (then
//! lexicographically smallest) best path that does not enter X; if every best path enters X
//! it advertises nothing for D into X (BGP's rule: only the path actually used is
//! advertised, the receiver's domain must not be on it).
//!
//! # Why these choices
//!
//! - **Domain-level costs** (inter-domain edge weights, not intra-domain distances) make
//!   summaries change only when the domain graph changes — an inter-domain link, a domain's
//!   reachability, a member set — never on a link change inside a domain (SPEC §9: flooding of
//!   a change stays in its domain). All nodes of H compute the same `K(D)` from the same LSDB.
//! - **Loop freedom.** Inside H, traffic goes to the nearest of a set of exits every node of H
//!   agrees on, so the distance to that set strictly decreases hop by hop. Across domains, with
//!   positive edge weights, the advertised `K` strictly decreases at every domain crossing (a
//!   domain forwards to Z only when `K(H) = w + K(Z)`, and Z's advertised `K` is the one it
//!   uses), so no domain is visited twice once the protocol has converged. A hybrid metric
//!   (intra distance + remote cost) would not have this property: two domains could each see
//!   the other as closer. Neither preference touches this: a domain still forwards only on
//!   an offer whose cost is the `K(D)` it advertises, and every node of the domain, sharing
//!   LSDB and policy, picks the same exits. Avoid-transit does rank routes by something
//!   other than cost, as BGP's local policies do, so domains whose policies conflict (each
//!   avoiding the next one's preferred path) could keep changing routes instead of settling;
//!   nothing here detects that.
//! - **Path vector** rather than plain distance vector: withdrawals cannot count to infinity
//!   around a cycle of domains.
//!
//! Domains must be internally connected (as OSPF areas must): a partitioned domain's halves
//! do not route to each other through other domains.

use crate::ids::{DomainId, NodeId};
use crate::lsa::{LinkState, MAX_DOMAIN_PATH_LEN, NodeRange, Summary};
use crate::lsdb::Lsdb;
use crate::policy::ValidPolicy;
use crate::spf::SpfWorkspace;

/// A reachable foreign border (summary LSA) of the node's LSDB.
#[derive(Debug)]
struct Leaf<'a> {
    slot: usize,
    origin: NodeId,
    home: DomainId,
    dist: u64,
    /// Edge weight plus preference of entering `home`.
    base: u64,
    summary: &'a Summary,
}

/// The route to one other domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DomainRoute {
    pub(crate) domain: DomainId,
    /// Domain-level cost `K(D)`.
    pub(crate) cost: u64,
    /// Distance to the exit in use: the preferred best leaf, else the nearest best leaf.
    pub(crate) exit_cost: u64,
    best_start: u32,
    best_len: u32,
}

/// Every domain route of one node, computed from its LSDB and SPF (see the module docs).
#[derive(Debug)]
pub(crate) struct DomainRib<'a> {
    leaves: Vec<Leaf<'a>>,
    routes: Vec<DomainRoute>,
    /// Leaf indices of each route's best leaves, sorted by origin.
    best: Vec<u32>,
    /// First-hop bitsets, `words` per route.
    bits: Vec<u64>,
    words: usize,
}

impl<'a> DomainRib<'a> {
    /// Computes the domain routes. `ws` must hold an SPF run over `lsdb` rooted at this node.
    pub(crate) fn compute(
        lsdb: &'a Lsdb,
        ws: &SpfWorkspace,
        policy: &ValidPolicy,
    ) -> DomainRib<'a> {
        let own = lsdb.domain();
        let mut leaves: Vec<Leaf<'a>> = Vec::new();
        for slot in 0..lsdb.len() {
            let Some(lsa) = lsdb.live_at(slot) else {
                continue;
            };
            let (Some(summary), Some(dist)) = (lsa.summary(), ws.distance(slot)) else {
                continue;
            };
            let Some(w) = lsa
                .links()
                .iter()
                .filter(|l| l.state == LinkState::Up)
                .map(|l| l.cost)
                .min()
            else {
                continue;
            };
            let home = summary.home_domain();
            debug_assert_ne!(home, own, "summary LSAs come from other domains");
            leaves.push(Leaf {
                slot,
                origin: lsa.origin(),
                home,
                dist,
                base: u64::from(w) + u64::from(policy.domain_extra_cost(home)),
                summary,
            });
        }
        let words = ws.hop_words();
        let mut rib = DomainRib {
            leaves,
            routes: Vec::new(),
            best: Vec::new(),
            bits: Vec::new(),
            words,
        };
        rib.merge(own, ws, policy);
        rib
    }

    /// Walks every leaf's offers in domain order (a k-way merge of the sorted reach lists plus
    /// each leaf's home) and keeps the best per domain.
    fn merge(&mut self, own: DomainId, ws: &SpfWorkspace, policy: &ValidPolicy) {
        let avoids_any = policy.avoids_any_transit();
        // Per leaf: whether its home offer is consumed, and the next reach index.
        let mut cursors: Vec<(bool, usize)> = vec![(false, 0); self.leaves.len()];
        let peek = |leaf: &Leaf<'_>, c: (bool, usize)| -> Option<DomainId> {
            let next = leaf.summary.reach().get(c.1).map(|e| e.domain);
            if !c.0 && next.is_none_or(|d| leaf.home < d) {
                Some(leaf.home)
            } else {
                next
            }
        };
        // (leaf index, transit-avoided domains transited, cost).
        let mut offers: Vec<(u32, u32, u64)> = Vec::new();
        while let Some(domain) = self
            .leaves
            .iter()
            .zip(&cursors)
            .filter_map(|(l, c)| peek(l, *c))
            .min()
        {
            offers.clear();
            for (i, leaf) in self.leaves.iter().enumerate() {
                let c = &mut cursors[i];
                if peek(leaf, *c) != Some(domain) {
                    continue;
                }
                let offer = if !c.0 && domain == leaf.home {
                    c.0 = true;
                    Some((0, &[][..]))
                } else {
                    let e = &leaf.summary.reach()[c.1];
                    c.1 += 1;
                    // Path-vector loop prevention: never through our own domain.
                    (!e.path.contains(&own)).then_some((u64::from(e.cost), &e.path[..]))
                };
                if let (Some((k, path)), true) = (offer, domain != own) {
                    let transits = if avoids_any {
                        avoided_transits(policy, leaf.home, path, domain)
                    } else {
                        0
                    };
                    offers.push((
                        u32::try_from(i).expect("leaves < max_origins"),
                        transits,
                        leaf.base + k,
                    ));
                }
            }
            let Some((transits, cost)) = offers.iter().map(|o| (o.1, o.2)).min() else {
                continue;
            };
            let best_start = u32::try_from(self.best.len()).expect("bounded");
            for &(i, t, c) in &offers {
                if (t, c) == (transits, cost) {
                    self.best.push(i);
                }
            }
            let best_len = u32::try_from(self.best.len()).expect("bounded") - best_start;
            let leaves = &self.leaves;
            let best = &mut self.best[best_start as usize..];
            best.sort_unstable_by_key(|&i| leaves[i as usize].origin);
            // The exit: the first preferred node that is a best leaf, else the nearest ones.
            let preferred = policy.preferred_border_nodes(domain).iter().find_map(|p| {
                best.binary_search_by_key(p, |&i| leaves[i as usize].origin)
                    .ok()
                    .map(|j| best[j])
            });
            let exit_cost = match preferred {
                Some(i) => leaves[i as usize].dist,
                None => best
                    .iter()
                    .map(|&i| leaves[i as usize].dist)
                    .min()
                    .expect("a route has a best leaf"),
            };
            let base = self.bits.len();
            self.bits.resize(base + self.words, 0);
            for &i in &self.best[best_start as usize..] {
                let leaf = &self.leaves[i as usize];
                let exit = preferred.map_or(leaf.dist == exit_cost, |p| p == i);
                if exit {
                    for (w, x) in ws.first_hop_bits(leaf.slot).iter().enumerate() {
                        self.bits[base + w] |= x;
                    }
                }
            }
            debug_assert!(
                self.bits[base..].iter().any(|w| *w != 0),
                "reachable exits have hops"
            );
            self.routes.push(DomainRoute {
                domain,
                cost,
                exit_cost,
                best_start,
                best_len,
            });
        }
    }

    /// Routes, sorted by domain.
    pub(crate) fn routes(&self) -> &[DomainRoute] {
        &self.routes
    }

    /// First-hop bitset of route `i`.
    pub(crate) fn hop_bits(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }

    fn best_leaves(&self, r: &DomainRoute) -> impl Iterator<Item = &Leaf<'a>> {
        self.best[r.best_start as usize..(r.best_start + r.best_len) as usize]
            .iter()
            .map(|&i| &self.leaves[i as usize])
    }

    /// Member ranges of the route's domain, from its best leaf with the smallest origin that
    /// carries them.
    pub(crate) fn members_of(&self, r: &DomainRoute) -> Option<&'a [NodeRange]> {
        self.best_leaves(r)
            .find_map(|l| l.summary.members_of(r.domain))
    }

    /// The path to advertise for route `r` into domain `avoid`: the shortest, then smallest,
    /// best path (domains after our home) that does not enter `avoid`.
    pub(crate) fn advert_path(&self, r: &DomainRoute, avoid: DomainId) -> Option<Vec<DomainId>> {
        let mut chosen: Option<Vec<DomainId>> = None;
        for leaf in self.best_leaves(r) {
            let tail: &[DomainId] = if r.domain == leaf.home {
                &[]
            } else {
                let reach = leaf.summary.reach();
                let Ok(j) = reach.binary_search_by_key(&r.domain, |e| e.domain) else {
                    continue;
                };
                &reach[j].path
            };
            if leaf.home == avoid || tail.contains(&avoid) || tail.len() >= MAX_DOMAIN_PATH_LEN {
                continue;
            }
            let better = match &chosen {
                None => true,
                Some(c) => (tail.len() + 1)
                    .cmp(&c.len())
                    .then_with(|| core::iter::once(&leaf.home).chain(tail).cmp(c.iter()))
                    .is_lt(),
            };
            if better {
                let mut p = Vec::with_capacity(tail.len() + 1);
                p.push(leaf.home);
                p.extend_from_slice(tail);
                chosen = Some(p);
            }
        }
        chosen
    }
}

/// How many transit-avoided domains the offer for `domain` through a leaf of `home`, with the
/// advertised `path` after `home`, transits: the domains on `home, path...` other than
/// `domain` (paths are simple, so that is every one but the last).
fn avoided_transits(
    policy: &ValidPolicy,
    home: DomainId,
    path: &[DomainId],
    domain: DomainId,
) -> u32 {
    let count = core::iter::once(&home)
        .chain(path)
        .filter(|&&d| d != domain && policy.avoids_transit(d))
        .count();
    u32::try_from(count).expect("paths are at most MAX_DOMAIN_PATH_LEN long")
}
