//! One link-state database: every LSA of one domain's flooding scope, as one node holds it.
//!
//! A node holds exactly one [`Lsdb`], for its own domain. It contains the node LSAs of the
//! domain's members and the summary LSAs that neighbouring domains' border nodes originate into
//! it (see [`crate::interdomain`]). Entries are kept sorted by origin in one vector: the index of
//! an entry is the dense slot number SPF works with, lookups are a binary search, and an entry
//! costs 24 bytes plus the (shared) LSA, which is what keeps a 1,000-node domain at ~24 KiB per
//! node.
//!
//! Rules (OSPF's, with the simplifications named):
//! - **Newer wins** ([`compare`]): a higher sequence number (RFC 1982, [`crate::ids`]); on equal
//!   (or undefined, 2^31 apart) numbers the larger checksum; on equal checksums a flush (MaxAge)
//!   beats a live copy. OSPF's "ages differ by more than MaxAgeDiff" rule is not used: ages are
//!   coarse here and the checksum already breaks ties deterministically.
//! - **Ageing**: each entry remembers its age when installed and the time; its age now is that
//!   plus the time since. A non-own entry reaching [`MAX_AGE_S`] is purged (its origin stopped
//!   refreshing: dead); every node ages independently, so no flush is flooded for it.
//! - **Flush**: an instance arriving at MaxAge withdraws the LSA. It is kept as a tombstone for
//!   [`FLUSH_HOLD_S`] so that an older copy still in flight is recognised as older, then removed.
//!   Tombstones are invisible to SPF.
//! - **Bounded**: at most `max_origins` entries; a new origin beyond that is refused with
//!   [`LsdbError::Full`].

use std::time::Duration;

use crate::ids::{DomainId, NodeId};
use crate::lsa::{Lsa, LsaHeader, LsaInstance, MAX_AGE_S};

/// Seconds a flushed LSA is kept as a tombstone before it is forgotten.
pub const FLUSH_HOLD_S: u16 = 60;

/// How a received instance compares with the one held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Freshness {
    /// The received instance is newer: install and flood it.
    Newer,
    /// Same instance: a duplicate (or an implied acknowledgement).
    Same,
    /// The received instance is older: answer with the held one.
    Older,
}

/// Compares instance `a` with instance `b` of the same LSA (same origin and scope).
#[must_use]
pub fn compare(a: &LsaHeader, b: &LsaHeader) -> Freshness {
    debug_assert!(a.origin == b.origin && a.domain == b.domain);
    if a.seq.is_newer_than(b.seq) {
        return Freshness::Newer;
    }
    if b.seq.is_newer_than(a.seq) {
        return Freshness::Older;
    }
    if a.checksum != b.checksum {
        return if a.checksum > b.checksum {
            Freshness::Newer
        } else {
            Freshness::Older
        };
    }
    match (a.is_max_age(), b.is_max_age()) {
        (true, false) => Freshness::Newer,
        (false, true) => Freshness::Older,
        _ => Freshness::Same,
    }
}

/// Errors from installing into an [`Lsdb`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsdbError {
    /// The database already holds `limit` origins.
    #[error("LSDB of domain {domain} is full: {limit} origins")]
    Full {
        /// The domain.
        domain: DomainId,
        /// Its origin limit.
        limit: usize,
    },
}

/// What an install changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Installed {
    /// Whether routing input changed (a new origin, different links or summary, or a flush);
    /// `false` for a refresh of the same content.
    pub content_changed: bool,
}

/// What ageing removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AgedOut {
    /// Live entries purged because they reached MaxAge (their origins are dead).
    pub purged: usize,
    /// Tombstones forgotten after their hold time.
    pub tombstones_dropped: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    origin: NodeId,
    lsa: Lsa,
    installed_at_s: u32,
    age_at_install_s: u16,
    flushed: bool,
}

impl Entry {
    fn age_s(&self, now_s: u32) -> u16 {
        let elapsed = now_s.saturating_sub(self.installed_at_s);
        let age = u32::from(self.age_at_install_s).saturating_add(elapsed);
        u16::try_from(age.min(u32::from(MAX_AGE_S))).unwrap_or(MAX_AGE_S)
    }

    fn expiry_s(&self) -> u32 {
        if self.flushed {
            self.installed_at_s.saturating_add(u32::from(FLUSH_HOLD_S))
        } else {
            let left = MAX_AGE_S.saturating_sub(self.age_at_install_s);
            self.installed_at_s.saturating_add(u32::from(left))
        }
    }
}

/// Whole seconds of `now`, saturated to `u32` (136 years).
pub(crate) fn secs(now: Duration) -> u32 {
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

/// The link-state database of one domain (see the module docs).
#[derive(Clone, Debug)]
pub struct Lsdb {
    domain: DomainId,
    own: NodeId,
    max_origins: usize,
    entries: Vec<Entry>,
    /// Earliest second at which some entry may expire; may be early, never late.
    next_expiry_s: Option<u32>,
}

impl Lsdb {
    /// An empty database of `domain`, held by node `own` (whose LSA never ages out here: it
    /// refreshes it), holding at most `max_origins` origins.
    ///
    /// # Panics
    /// If `max_origins` is zero (a configuration bug, checked by [`crate::router::RouterConfig`]).
    #[must_use]
    pub fn new(domain: DomainId, own: NodeId, max_origins: usize) -> Lsdb {
        assert!(max_origins > 0, "an LSDB must hold at least its own LSA");
        Lsdb {
            domain,
            own,
            max_origins,
            entries: Vec::new(),
            next_expiry_s: None,
        }
    }

    /// The domain (flooding scope) of this database.
    #[must_use]
    pub const fn domain(&self) -> DomainId {
        self.domain
    }

    /// Number of entries (slots), tombstones included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the database is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The origin limit.
    #[must_use]
    pub const fn max_origins(&self) -> usize {
        self.max_origins
    }

    /// The dense slot of `origin`'s entry (tombstones included). Slots are valid until the next
    /// install or ageing.
    #[must_use]
    pub fn slot_of(&self, origin: NodeId) -> Option<usize> {
        self.entries
            .binary_search_by_key(&origin, |e| e.origin)
            .ok()
    }

    /// The live LSA in `slot`, `None` for a tombstone or an out-of-range slot.
    #[must_use]
    pub fn live_at(&self, slot: usize) -> Option<&Lsa> {
        self.entries
            .get(slot)
            .and_then(|e| (!e.flushed).then_some(&e.lsa))
    }

    /// The live LSA of `origin`, if any.
    #[must_use]
    pub fn get(&self, origin: NodeId) -> Option<&Lsa> {
        self.slot_of(origin).and_then(|s| self.live_at(s))
    }

    /// The instance held for `origin` (tombstones included, at MaxAge) with its age at `now`.
    #[must_use]
    pub fn instance(&self, origin: NodeId, now: Duration) -> Option<LsaInstance> {
        let e = &self.entries[self.slot_of(origin)?];
        Some(LsaInstance {
            age_s: if e.flushed {
                MAX_AGE_S
            } else {
                e.age_s(secs(now))
            },
            lsa: e.lsa.clone(),
        })
    }

    /// The header of the instance held for `origin` at `now`.
    #[must_use]
    pub fn header(&self, origin: NodeId, now: Duration) -> Option<LsaHeader> {
        self.instance(origin, now).map(|i| i.header())
    }

    /// How `received` compares with the instance held; `None` when nothing is held.
    #[must_use]
    pub fn freshness(&self, received: &LsaInstance, now: Duration) -> Option<Freshness> {
        let held = self.header(received.lsa.origin(), now)?;
        Some(compare(&received.header(), &held))
    }

    /// Installs `inst`, which must belong to this domain and be newer than what is held
    /// (callers check with [`Lsdb::freshness`]). A MaxAge instance becomes a tombstone.
    ///
    /// # Panics
    /// If `inst` is for another domain or not newer than the held instance (caller bugs).
    pub fn install(&mut self, inst: LsaInstance, now: Duration) -> Result<Installed, LsdbError> {
        assert_eq!(
            inst.lsa.domain(),
            self.domain,
            "install into the wrong LSDB"
        );
        let now_s = secs(now);
        let flushed = inst.is_max_age();
        let origin = inst.lsa.origin();
        let entry = Entry {
            origin,
            installed_at_s: now_s,
            age_at_install_s: inst.age_s.min(MAX_AGE_S),
            flushed,
            lsa: inst.lsa,
        };
        let expiry = entry.expiry_s();
        let installed = match self.entries.binary_search_by_key(&origin, |e| e.origin) {
            Ok(i) => {
                let held = &self.entries[i];
                let held_header = held.lsa.header(if held.flushed {
                    MAX_AGE_S
                } else {
                    held.age_s(now_s)
                });
                assert_eq!(
                    compare(&entry.lsa.header(entry.age_at_install_s), &held_header),
                    Freshness::Newer,
                    "install of an instance that is not newer"
                );
                let content_changed =
                    flushed != held.flushed || (!flushed && !entry.lsa.same_content(&held.lsa));
                self.entries[i] = entry;
                Installed { content_changed }
            }
            Err(i) => {
                if self.entries.len() >= self.max_origins {
                    return Err(LsdbError::Full {
                        domain: self.domain,
                        limit: self.max_origins,
                    });
                }
                self.entries.insert(i, entry);
                Installed {
                    content_changed: !flushed,
                }
            }
        };
        self.next_expiry_s = Some(self.next_expiry_s.map_or(expiry, |e| e.min(expiry)));
        debug_assert!(self.entries.windows(2).all(|w| w[0].origin < w[1].origin));
        Ok(installed)
    }

    /// Installs the holder's own LSA (a fresh origination or a re-origination past a number
    /// learned from the network), replacing whatever is held without a freshness check: the
    /// origin is the authority on its own LSA.
    ///
    /// # Panics
    /// If `lsa` is not the holder's own or is for another domain (caller bugs).
    pub fn install_own(&mut self, lsa: Lsa, now: Duration) -> Result<Installed, LsdbError> {
        assert_eq!(lsa.origin(), self.own, "install_own of a foreign LSA");
        assert_eq!(lsa.domain(), self.domain, "install into the wrong LSDB");
        let entry = Entry {
            origin: self.own,
            lsa,
            installed_at_s: secs(now),
            age_at_install_s: 0,
            flushed: false,
        };
        match self.entries.binary_search_by_key(&self.own, |e| e.origin) {
            Ok(i) => {
                let content_changed =
                    self.entries[i].flushed || !entry.lsa.same_content(&self.entries[i].lsa);
                self.entries[i] = entry;
                Ok(Installed { content_changed })
            }
            Err(i) => {
                if self.entries.len() >= self.max_origins {
                    return Err(LsdbError::Full {
                        domain: self.domain,
                        limit: self.max_origins,
                    });
                }
                self.entries.insert(i, entry);
                Ok(Installed {
                    content_changed: true,
                })
            }
        }
    }

    /// Purges entries that reached MaxAge (except the holder's own) and tombstones past their
    /// hold time.
    pub fn age_out(&mut self, now: Duration) -> AgedOut {
        let now_s = secs(now);
        if self.next_expiry_s.is_none_or(|e| e > now_s) {
            return AgedOut::default();
        }
        let mut out = AgedOut::default();
        let own = self.own;
        self.entries.retain(|e| {
            let expired = e.origin != own && e.expiry_s() <= now_s;
            if expired {
                if e.flushed {
                    out.tombstones_dropped += 1;
                } else {
                    out.purged += 1;
                }
            }
            !expired
        });
        self.next_expiry_s = self
            .entries
            .iter()
            .filter(|e| e.origin != own)
            .map(Entry::expiry_s)
            .min();
        out
    }

    /// When [`Lsdb::age_out`] next has work, at the latest.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Duration> {
        self.next_expiry_s
            .map(|s| Duration::from_secs(u64::from(s)))
    }

    /// Headers of every entry (tombstones at MaxAge), sorted by origin: a database summary.
    #[must_use]
    pub fn headers(&self, now: Duration) -> Vec<LsaHeader> {
        let now_s = secs(now);
        self.entries
            .iter()
            .map(|e| {
                e.lsa
                    .header(if e.flushed { MAX_AGE_S } else { e.age_s(now_s) })
            })
            .collect()
    }

    /// Live LSAs in slot order.
    pub fn live(&self) -> impl Iterator<Item = &Lsa> {
        self.entries.iter().filter(|e| !e.flushed).map(|e| &e.lsa)
    }

    /// Origins of every entry in slot order, tombstones included.
    pub fn origins(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.entries.iter().map(|e| e.origin)
    }

    /// Heap bytes held by the database itself (the LSAs are shared and not counted).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqNo;
    use crate::lsa::Link;
    use crate::lsa::tests::n;

    fn lsa(origin: u64, seq: u32, cost: u32) -> Lsa {
        Lsa::new(
            n(origin),
            DomainId(1),
            SeqNo(seq),
            vec![Link::up(n(origin + 1), cost)],
            None,
        )
        .unwrap()
    }

    fn inst(origin: u64, seq: u32, cost: u32, age_s: u16) -> LsaInstance {
        LsaInstance {
            age_s,
            lsa: lsa(origin, seq, cost),
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn entry_is_small() {
        assert!(core::mem::size_of::<Entry>() <= 24);
    }

    #[test]
    fn newer_sequence_wins_with_wrap() {
        let mut db = Lsdb::new(DomainId(1), n(100), 8);
        db.install(inst(1, u32::MAX, 5, 0), T0).unwrap();
        let wrapped = inst(1, 0, 6, 0);
        assert_eq!(db.freshness(&wrapped, T0), Some(Freshness::Newer));
        assert_eq!(
            db.install(wrapped, T0).unwrap(),
            Installed {
                content_changed: true
            }
        );
        assert_eq!(db.get(n(1)).unwrap().seq(), SeqNo(0));
        assert_eq!(
            db.freshness(&inst(1, u32::MAX, 5, 0), T0),
            Some(Freshness::Older)
        );
        assert_eq!(db.freshness(&inst(1, 0, 6, 9), T0), Some(Freshness::Same));
        // A refresh with the same content is not a topology change.
        assert_eq!(
            db.install(inst(1, 1, 6, 0), T0).unwrap(),
            Installed {
                content_changed: false
            }
        );
    }

    #[test]
    fn equal_sequence_breaks_tie_on_checksum_then_flush() {
        let a = lsa(1, 7, 5);
        let b = lsa(1, 7, 6);
        let (hi, lo) = if a.checksum() > b.checksum() {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(compare(&hi.header(0), &lo.header(0)), Freshness::Newer);
        assert_eq!(compare(&lo.header(0), &hi.header(0)), Freshness::Older);
        assert_eq!(
            compare(&lo.header(MAX_AGE_S), &lo.header(3)),
            Freshness::Newer
        );
        assert_eq!(compare(&lo.header(3), &lo.header(900)), Freshness::Same);
    }

    #[test]
    #[should_panic(expected = "not newer")]
    fn installing_an_older_instance_is_a_bug() {
        let mut db = Lsdb::new(DomainId(1), n(100), 8);
        db.install(inst(1, 5, 1, 0), T0).unwrap();
        let _ = db.install(inst(1, 4, 1, 0), T0);
    }

    #[test]
    fn bounded_origins() {
        let mut db = Lsdb::new(DomainId(1), n(100), 2);
        db.install(inst(1, 1, 1, 0), T0).unwrap();
        db.install(inst(2, 1, 1, 0), T0).unwrap();
        assert_eq!(
            db.install(inst(3, 1, 1, 0), T0),
            Err(LsdbError::Full {
                domain: DomainId(1),
                limit: 2
            })
        );
        // Updating an existing origin still works when full.
        db.install(inst(2, 2, 1, 0), T0).unwrap();
        assert_eq!(db.len(), 2);
    }

    #[test]
    fn ageing_purges_dead_origins_but_not_own() {
        let mut db = Lsdb::new(DomainId(1), n(100), 8);
        db.install(inst(1, 1, 1, 100), T0).unwrap();
        db.install(inst(100, 1, 1, 0), T0).unwrap();
        db.install(inst(2, 1, 1, 0), Duration::from_secs(50))
            .unwrap();
        assert_eq!(db.next_expiry(), Some(Duration::from_secs(3500)));
        assert_eq!(
            db.instance(n(1), Duration::from_secs(10)).unwrap().age_s,
            110
        );
        assert_eq!(db.age_out(Duration::from_secs(3499)), AgedOut::default());
        let out = db.age_out(Duration::from_secs(3500));
        assert_eq!(out.purged, 1);
        assert!(db.get(n(1)).is_none());
        assert_eq!(db.next_expiry(), Some(Duration::from_secs(3650)));
        db.age_out(Duration::from_secs(10_000));
        assert_eq!(db.origins().collect::<Vec<_>>(), vec![n(100)]);
        assert_eq!(db.next_expiry(), None);
    }

    #[test]
    fn flush_leaves_a_tombstone_then_forgets() {
        let mut db = Lsdb::new(DomainId(1), n(100), 8);
        db.install(inst(1, 1, 1, 0), T0).unwrap();
        let flush = inst(1, 1, 1, MAX_AGE_S);
        assert_eq!(db.freshness(&flush, T0), Some(Freshness::Newer));
        assert_eq!(
            db.install(flush, T0).unwrap(),
            Installed {
                content_changed: true
            }
        );
        assert!(db.get(n(1)).is_none(), "tombstones are not live");
        assert_eq!(db.len(), 1);
        // The old live copy is now older than the tombstone.
        assert_eq!(db.freshness(&inst(1, 1, 1, 5), T0), Some(Freshness::Older));
        assert_eq!(db.headers(T0)[0].age_s, MAX_AGE_S);
        let out = db.age_out(Duration::from_secs(u64::from(FLUSH_HOLD_S)));
        assert_eq!(out.tombstones_dropped, 1);
        assert!(db.is_empty());
    }
}
