//! The forwarding path's view of routing: an immutable snapshot per core.
//!
//! The control plane computes route tables and publishes each new one to every core as an
//! `Arc<dyn RouteLookup>`; a core swaps its own reference in between frames, so the forwarding
//! path never takes a lock. The engine depends on this trait only, not on how routes are
//! computed (link-state in `mesh-routing`, or static routes from configuration before that).

use std::collections::HashMap;
use std::sync::Arc;

/// A route table the forwarding path can consult. Implementations are immutable values.
pub trait RouteLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The peer to send a frame to on its way to `(dst_domain, dst_node)`, choosing among
    /// equal-cost next hops by a hash of `(src_node, dst_node, msg_id)` so a message's chunks
    /// keep one path. `None`: no route.
    fn next_hop(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Option<u64>;

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
