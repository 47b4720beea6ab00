//! Domain member sets: compacting node ids to ranges, and resolving a node id to its domain.
//!
//! A domain's member set is advertised as sorted, disjoint node-id ranges. Ids allocated in a
//! block per domain (recommended) compact to one range. When a set needs more ranges than an
//! advertisement may carry, [`compact`] merges across the smallest gaps: the set then also
//! claims the ids in those gaps, an over-approximation that at worst sends a Send without
//! `dst_domain` for a non-existent node into the domain that claims it, where it is
//! undeliverable, exactly as without the approximation.
//!
//! [`DomainMap`] is the lookup structure a route table carries: sorted disjoint ranges with
//! their domain, binary-searched, allocation-free. When two domains claim the same id (a
//! misconfiguration, or an over-approximation meeting an exact set) the one added with the
//! higher priority wins: the node's own domain (exact, from its LSDB) first, then in the order
//! the builder was given; conflicts are counted.

use std::collections::BTreeMap;

use crate::ids::{DomainId, NodeId};
use crate::lsa::NodeRange;

/// Exact ranges of sorted, unique `ids`, then merged across the smallest gaps until at most
/// `max_ranges` remain (`max_ranges` of 0 is treated as 1).
#[must_use]
pub fn compact(ids: &[NodeId], max_ranges: usize) -> Vec<NodeRange> {
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sorted and unique");
    let mut ranges: Vec<NodeRange> = Vec::new();
    for &id in ids {
        match ranges.last_mut() {
            Some(r) if r.last().get().checked_add(1) == Some(id.get()) => {
                *r = NodeRange::span(r.first(), id);
            }
            _ => ranges.push(NodeRange::single(id)),
        }
    }
    cap(ranges, max_ranges)
}

/// Merges sorted disjoint `ranges` across their smallest gaps until at most `max_ranges`
/// remain (`max_ranges` of 0 is treated as 1).
#[must_use]
pub fn cap(ranges: Vec<NodeRange>, max_ranges: usize) -> Vec<NodeRange> {
    let max_ranges = max_ranges.max(1);
    if ranges.len() <= max_ranges {
        return ranges;
    }
    let merges = ranges.len() - max_ranges;
    // Gap i lies between ranges i and i+1.
    let mut gaps: Vec<(u64, usize)> = ranges
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].first().get() - w[0].last().get(), i))
        .collect();
    gaps.sort_unstable();
    let mut merge_after = vec![false; ranges.len()];
    for &(_, i) in &gaps[..merges] {
        merge_after[i] = true;
    }
    let mut out: Vec<NodeRange> = Vec::with_capacity(max_ranges);
    let mut start = ranges[0].first();
    for (i, r) in ranges.iter().enumerate() {
        if !merge_after[i] {
            out.push(NodeRange::span(start, r.last()));
            if let Some(next) = ranges.get(i + 1) {
                start = next.first();
            }
        }
    }
    debug_assert_eq!(out.len(), max_ranges);
    out
}

/// Node id → domain, over sorted disjoint ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainMap {
    ranges: Box<[(u64, u64, DomainId)]>,
    conflicts: usize,
}

impl DomainMap {
    /// The domain whose member set contains `node`.
    #[must_use]
    pub fn domain_of(&self, node: NodeId) -> Option<DomainId> {
        let id = node.get();
        let i = self.ranges.partition_point(|r| r.1 < id);
        self.ranges
            .get(i)
            .and_then(|&(first, _, d)| (first <= id).then_some(d))
    }

    /// Number of ranges.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Ranges added that overlapped a higher-priority claim (fully or partly dropped).
    #[must_use]
    pub const fn conflicts(&self) -> usize {
        self.conflicts
    }

    /// Ranges and their domains, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (NodeRange, DomainId)> + '_ {
        // Every stored id came from a `NodeRange`, so none is zero and nothing is skipped.
        self.ranges
            .iter()
            .filter_map(|&(a, b, d)| Some((NodeRange::new(NodeId::new(a)?, NodeId::new(b)?)?, d)))
    }

    /// Heap bytes held.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.ranges.len() * core::mem::size_of::<(u64, u64, DomainId)>()
    }
}

/// Builds a [`DomainMap`]; earlier additions win overlaps.
#[derive(Debug, Default)]
pub struct DomainMapBuilder {
    map: BTreeMap<u64, (u64, DomainId)>,
    conflicts: usize,
}

impl DomainMapBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> DomainMapBuilder {
        DomainMapBuilder::default()
    }

    /// Claims `ranges` for `domain`, except the ids an earlier call already claimed.
    pub fn add(&mut self, domain: DomainId, ranges: &[NodeRange]) {
        for r in ranges {
            if self.insert_uncovered(r.first().get(), r.last().get(), domain) {
                self.conflicts += 1;
            }
        }
    }

    /// Inserts the parts of `a..=b` not yet covered; returns whether anything was covered.
    fn insert_uncovered(&mut self, a: u64, b: u64, domain: DomainId) -> bool {
        let mut overlaps: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &(e, _))) = self.map.range(..a).next_back()
            && e >= a
        {
            overlaps.push((s, e));
        }
        overlaps.extend(self.map.range(a..=b).map(|(&s, &(e, _))| (s, e)));
        let conflict = !overlaps.is_empty();
        let mut cur = Some(a);
        for (s, e) in overlaps {
            let Some(c) = cur else { break };
            if s > c {
                self.map.insert(c, (s - 1, domain));
            }
            cur = if e >= b {
                None
            } else {
                e.checked_add(1).filter(|x| *x > c)
            };
            if e >= b {
                break;
            }
        }
        if let Some(c) = cur
            && c <= b
        {
            self.map.insert(c, (b, domain));
        }
        conflict
    }

    /// The finished map (adjacent ranges of one domain merged).
    #[must_use]
    pub fn build(self) -> DomainMap {
        let mut out: Vec<(u64, u64, DomainId)> = Vec::with_capacity(self.map.len());
        for (s, (e, d)) in self.map {
            match out.last_mut() {
                Some(last) if last.2 == d && last.1.checked_add(1) == Some(s) => last.1 = e,
                _ => out.push((s, e, d)),
            }
        }
        debug_assert!(out.windows(2).all(|w| w[0].1 < w[1].0));
        DomainMap {
            ranges: out.into_boxed_slice(),
            conflicts: self.conflicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsa::tests::n;
    use proptest::prelude::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|i| n(*i)).collect()
    }

    fn pairs(r: &[NodeRange]) -> Vec<(u64, u64)> {
        r.iter()
            .map(|r| (r.first().get(), r.last().get()))
            .collect()
    }

    #[test]
    fn compact_merges_runs_then_smallest_gaps() {
        let v = ids(&[1, 2, 3, 5, 6, 10, 30, 31]);
        assert_eq!(
            pairs(&compact(&v, 10)),
            vec![(1, 3), (5, 6), (10, 10), (30, 31)]
        );
        assert_eq!(pairs(&compact(&v, 3)), vec![(1, 6), (10, 10), (30, 31)]);
        assert_eq!(pairs(&compact(&v, 2)), vec![(1, 10), (30, 31)]);
        assert_eq!(pairs(&compact(&v, 0)), vec![(1, 31)]);
        assert!(compact(&[], 4).is_empty());
        assert_eq!(
            pairs(&compact(&ids(&[u64::MAX - 1, u64::MAX]), 4)),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn map_lookup_and_priority() {
        let mut b = DomainMapBuilder::new();
        b.add(DomainId(1), &compact(&ids(&[10, 11, 12]), 4));
        // Domain 2 over-claims 1..=20; only the parts outside 10..=12 are its.
        b.add(DomainId(2), &[NodeRange::new(n(1), n(20)).unwrap()]);
        b.add(DomainId(3), &[NodeRange::new(n(100), n(200)).unwrap()]);
        let m = b.build();
        assert_eq!(m.conflicts(), 1);
        assert_eq!(m.domain_of(n(11)), Some(DomainId(1)));
        assert_eq!(m.domain_of(n(9)), Some(DomainId(2)));
        assert_eq!(m.domain_of(n(13)), Some(DomainId(2)));
        assert_eq!(m.domain_of(n(21)), None);
        assert_eq!(m.domain_of(n(150)), Some(DomainId(3)));
        assert_eq!(m.domain_of(n(201)), None);
        assert_eq!(m.len(), 4);
    }

    proptest! {
        #[test]
        fn compact_covers_every_id(set in proptest::collection::btree_set(1u64..2000, 0..60), max in 1usize..10) {
            let v: Vec<NodeId> = set.iter().map(|i| n(*i)).collect();
            let r = compact(&v, max);
            prop_assert!(r.len() <= max);
            prop_assert!(r.windows(2).all(|w| w[0].last() < w[1].first()));
            for id in &v {
                prop_assert!(r.iter().any(|x| x.contains(*id)));
            }
            if set.len() <= max {
                // Exact when there is room: nothing outside the set is claimed.
                let covered: u64 = r.iter().map(|x| x.last().get() - x.first().get() + 1).sum();
                prop_assert_eq!(covered, set.len() as u64);
            }
        }

        #[test]
        fn map_matches_first_claim_model(
            claims in proptest::collection::vec((0u32..4, 1u64..300, 0u64..40), 0..12),
            probes in proptest::collection::vec(1u64..400, 1..40),
        ) {
            let mut b = DomainMapBuilder::new();
            let mut model: Vec<(u64, u64, DomainId)> = Vec::new();
            for (d, first, len) in claims {
                let r = NodeRange::new(n(first), n(first + len)).unwrap();
                b.add(DomainId(d), &[r]);
                model.push((first, first + len, DomainId(d)));
            }
            let m = b.build();
            for p in probes {
                let expected = model.iter().find(|(a, z, _)| *a <= p && p <= *z).map(|x| x.2);
                prop_assert_eq!(m.domain_of(n(p)), expected, "probe {}", p);
            }
        }
    }
}
