//! The forwarding path's view of routing: an immutable snapshot per core.
//!
//! The control plane computes route tables and publishes each new one to every core as an
//! `Arc<dyn RouteLookup>`; a core swaps its own reference in between frames, so the forwarding
//! path never takes a lock. The engine depends on this trait only, not on how routes are
//! computed (link-state in `mesh-routing`, or static routes from configuration before that).

use std::collections::HashMap;
use std::sync::Arc;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this peer.
    Forward(u64),
    /// Nowhere now: the destination is unknown or unreachable (NACK NO_ROUTE; the origin
    /// tries again later).
    NoRoute,
    /// The node's policy denies the destination (NACK DENIED_BY_POLICY; the message fails).
    Denied,
}

/// A rate limit of the node's policy on messages to a destination (SetPolicy `rate_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// What it applies to: `(false, node id)` or `(true, domain id)`; messages to every node of
    /// a limited domain share one budget.
    pub scope: (bool, u64),
    /// Sustained messages per second (at least 1).
    pub msgs_per_s: u32,
    /// Messages that may go at once after a quiet period (at least 1).
    pub burst: u32,
}

/// A route table the forwarding path can consult. Implementations are immutable values.
pub trait RouteLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The peer to send a frame to on its way to `(dst_domain, dst_node)`, choosing among
    /// equal-cost next hops by a hash of `(src_node, dst_node, msg_id)` so a message's chunks
    /// keep one path. `None`: no route.
    fn next_hop(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Option<u64>;

    /// [`RouteLookup::next_hop`] with the reason when there is none.
    fn route(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Route {
        self.next_hop(src_node, dst_domain, dst_node, msg_id)
            .map_or(Route::NoRoute, Route::Forward)
    }

    /// The rate limit on messages this node originates to `(dst_domain, dst_node)`, if its
    /// policy sets one (the node's own limit, else its domain's).
    fn rate_limit(&self, dst_domain: u32, dst_node: u64) -> Option<RateLimit> {
        let _ = (dst_domain, dst_node);
        None
    }

    /// Version of this snapshot (increases with every publication).
    fn epoch(&self) -> u64;
}

/// A shared route snapshot.
pub type RouteSnapshot = Arc<dyn RouteLookup>;

/// Routes given by configuration: directly connected peers plus explicit `dst → via` entries.
/// Used before the control plane has computed anything, and in tests.
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    by_node: HashMap<u64, Vec<u64>>,
    by_domain: HashMap<u32, Vec<u64>>,
    local_domain: u32,
    epoch: u64,
}

impl StaticRoutes {
    /// An empty table for a node in `local_domain`.
    pub fn new(local_domain: u32, epoch: u64) -> Self {
        Self {
            local_domain,
            epoch,
            ..Self::default()
        }
    }

    /// Adds `via` as a next hop toward node `dst`.
    #[must_use]
    pub fn with_node_route(mut self, dst: u64, via: u64) -> Self {
        let hops = self.by_node.entry(dst).or_default();
        if !hops.contains(&via) {
            hops.push(via);
            hops.sort_unstable();
        }
        self
    }

    /// Adds `via` as a next hop toward every node of domain `dst`.
    #[must_use]
    pub fn with_domain_route(mut self, dst: u32, via: u64) -> Self {
        let hops = self.by_domain.entry(dst).or_default();
        if !hops.contains(&via) {
            hops.push(via);
            hops.sort_unstable();
        }
        self
    }
}

/// ECMP choice: a fixed, seedless 64-bit mix of the flow key, so every node picks the same way
/// for the same message and chunks of one message stay together.
pub fn ecmp_pick(hops: &[u64], src_node: u64, dst_node: u64, msg_id: u64) -> Option<u64> {
    match hops.len() {
        0 => None,
        1 => Some(hops[0]),
        n => {
            let mut h = src_node ^ dst_node.rotate_left(21) ^ msg_id.rotate_left(42);
            // SplitMix64 finaliser.
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^= h >> 31;
            let idx = usize::try_from(h % n as u64).unwrap_or(0);
            Some(hops[idx])
        }
    }
}

impl RouteLookup for StaticRoutes {
    fn next_hop(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Option<u64> {
        if (dst_domain == self.local_domain || dst_domain == 0)
            && let Some(h) = self.by_node.get(&dst_node)
        {
            return ecmp_pick(h, src_node, dst_node, msg_id);
        }
        self.by_domain
            .get(&dst_domain)
            .and_then(|h| ecmp_pick(h, src_node, dst_node, msg_id))
            .or_else(|| {
                self.by_node
                    .get(&dst_node)
                    .and_then(|h| ecmp_pick(h, src_node, dst_node, msg_id))
            })
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_then_domain_lookup() {
        let r = StaticRoutes::new(1, 7)
            .with_node_route(3, 2)
            .with_domain_route(9, 5);
        assert_eq!(r.next_hop(1, 1, 3, 0), Some(2));
        assert_eq!(r.next_hop(1, 9, 900, 0), Some(5));
        assert_eq!(r.next_hop(1, 1, 4, 0), None);
        assert_eq!(r.epoch(), 7);
    }

    #[test]
    fn ecmp_is_deterministic_and_spreads() {
        let hops = [10, 20];
        let mut counts = [0u32; 2];
        for msg in 0..10_000u64 {
            let a = ecmp_pick(&hops, 1, 2, msg).unwrap();
            assert_eq!(Some(a), ecmp_pick(&hops, 1, 2, msg));
            counts[usize::from(a == 20)] += 1;
        }
        assert!(counts[0] > 4_000 && counts[1] > 4_000, "{counts:?}");
    }
}
