//! Segment lifecycle: which segments still hold records the node needs, which can be recycled,
//! and which records to move forward so that an old segment can be.
//!
//! # What keeps a segment alive
//!
//! - a MESSAGE whose DELIVERED record does not exist yet (the origin still retransmits it);
//! - an INBOUND whose ACKED record does not exist yet (the destination still delivers it);
//! - the latest MSG_ID_RESERVATION (recovery resumes msg_ids after it);
//! - the latest DEDUP_CHECKPOINT, and every INBOUND record not yet covered by a later
//!   checkpoint: the dedup window is rebuilt from the last checkpoint plus the INBOUND records
//!   after it, so a segment holding INBOUND records is recycled only once a checkpoint in a
//!   later segment covers them.
//!
//! A record for a key that is already tracked (a relocated copy) supersedes the older one.
//!
//! # Recycling, oldest first
//!
//! Only the oldest segment of the live chain is recycled, and only when nothing keeps it alive,
//! the records that released it are durable ([`SegmentTracker::handle_durable`]), and it is not
//! the active one. Recovery relies on that order: it walks the chain back from
//! the newest segment until a link is missing, so a missing link must mean "recycled, with
//! everything older". [`SegmentTracker::poll_recycle`] names the segment; the shell zeroes the
//! header of its file, syncs that, and calls [`SegmentTracker::handle_recycled`]; the file is
//! then free, and gets a new, larger segment id when the writer rolls into it, so any stale
//! record in it fails its CRC. One recycle is in flight at a time.
//!
//! # Relocation
//!
//! One message that is never settled would pin every segment after it. Once the live chain
//! holds `relocate_at_segments` segments, [`SegmentTracker::poll_relocate`] names each record
//! that keeps the oldest segment alive: the shell reads it back ([`crate::record::decode_at`])
//! and appends it again (or writes a fresh dedup checkpoint), which moves it to the active
//! segment and frees the old one.
//!
//! Everything is bounded: `segments_max` live segments, `entries_max` unsettled messages,
//! allocated when the tracker is built.

use std::collections::{HashMap, VecDeque};

use crate::error::ConfigError;
use crate::record::{Body, MsgKey};
use crate::recovery::SEGMENTS_MAX;
use crate::seeded::SeededState;

/// Hard cap on `entries_max`.
pub const ENTRIES_MAX: usize = 1 << 26;

/// Configuration of a [`SegmentTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Most live segments (the number of preallocated files), 2..=[`SEGMENTS_MAX`].
    pub segments_max: usize,
    /// Most unsettled MESSAGE + INBOUND records, 1..=[`ENTRIES_MAX`]; the map is allocated
    /// for this many at start.
    pub entries_max: usize,
    /// Relocation of the oldest segment's live records starts when the chain holds this many
    /// segments, 2..=`segments_max`.
    pub relocate_at_segments: usize,
    /// Seed of the hash map (keys come from the network).
    pub hash_seed: u64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            segments_max: 64,
            entries_max: 65_536,
            relocate_at_segments: 48,
            hash_seed: 0,
        }
    }
}

impl SegmentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let as_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        ConfigError::check_range(
            "segments.segments_max",
            as_u64(self.segments_max),
            2,
            as_u64(SEGMENTS_MAX),
        )?;
        ConfigError::check_range(
            "segments.entries_max",
            as_u64(self.entries_max),
            1,
            as_u64(ENTRIES_MAX),
        )?;
        ConfigError::check_range(
            "segments.relocate_at_segments",
            as_u64(self.relocate_at_segments),
            2,
            as_u64(self.segments_max),
        )
    }
}

/// Why the tracker refused an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The live chain is full: no free file to roll into until a segment is recycled.
    #[error("{limit} live segments already")]
    TooManySegments {
        /// `segments_max`.
        limit: usize,
    },
    /// Too many unsettled messages: refuse new ones until some settle.
    #[error("{limit} unsettled records already")]
    TooManyEntries {
        /// `entries_max`.
        limit: usize,
    },
    /// Segment ids must increase at each roll.
    #[error("segment {got} opened after segment {previous}")]
    SegmentIdNotIncreasing {
        /// The active segment.
        previous: u64,
        /// The id reported.
        got: u64,
    },
    /// Records are appended to the active segment only.
    #[error("record in segment {got}, but the active segment is {active:?}")]
    NotActive {
        /// The active segment, if any.
        active: Option<u64>,
        /// The segment reported.
        got: u64,
    },
    /// A recycle completion for a segment whose recycle is not in flight.
    #[error("segment {got} reported recycled, but the recycle in flight is {expected:?}")]
    UnexpectedRecycled {
        /// The recycle in flight, if any.
        expected: Option<u64>,
        /// The segment reported.
        got: u64,
    },
}

/// What the shell must append again to free the oldest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocate {
    /// Read the record at `offset` of `segment_id` and append it again, unchanged.
    CopyRecord {
        /// Its segment.
        segment_id: u64,
        /// Its offset.
        offset: usize,
    },
    /// Append a fresh DEDUP_CHECKPOINT (a copy of the old one would lose what came after it).
    WriteDedupCheckpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EntryKey {
    Outbound(MsgKey),
    Inbound(MsgKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    segment_id: u64,
    offset: usize,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pinned {
    Entry(EntryKey),
    Reservation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    id: u64,
    /// Records in this segment that keep it alive.
    live: u64,
    /// Holds INBOUND records (then it waits for a dedup checkpoint in a later segment).
    has_inbound: bool,
    /// The largest seq of a record in this segment or of a record that released something of
    /// it (a DELIVERED, an ACKED, a newer copy): the segment is recycled only once that record
    /// is durable, or a crash could bring back the old records without their release (and no
    /// sync of the segment is in flight when it is recycled).
    release_seq: u64,
}

/// Tracks the live segments of one log and the records that keep them alive.
#[derive(Debug, Clone)]
pub struct SegmentTracker {
    config: SegmentConfig,
    /// The live chain, oldest first; the last one is active.
    segments: VecDeque<Segment>,
    entries: HashMap<EntryKey, Location, SeededState>,
    reservation: Option<Location>,
    checkpoint: Option<Location>,
    recycle_in_flight: Option<u64>,
    /// The segment relocations were listed for, and what is left to emit.
    relocating: Option<u64>,
    relocations: VecDeque<(Pinned, Location)>,
    checkpoint_requested: bool,
    durable_seq: u64,
}

impl SegmentTracker {
    /// An empty tracker; allocates its maps for the configured bounds.
    pub fn new(config: SegmentConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            segments: VecDeque::with_capacity(config.segments_max),
            entries: HashMap::with_capacity_and_hasher(
                config.entries_max,
                SeededState::new(config.hash_seed),
            ),
            reservation: None,
            checkpoint: None,
            recycle_in_flight: None,
            relocating: None,
            relocations: VecDeque::new(),
            checkpoint_requested: false,
            durable_seq: 0,
        })
    }

    /// Live segments (the active one included, a recycle in flight excluded).
    pub fn live_segments(&self) -> usize {
        self.segments.len()
    }

    /// Unsettled MESSAGE + INBOUND records.
    pub fn unsettled(&self) -> usize {
        self.entries.len()
    }

    /// Whether one more unsettled record can be tracked (check before accepting a message).
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.config.entries_max
    }

    /// Whether a roll can open one more segment.
    pub fn can_open(&self) -> bool {
        self.segments.len() + usize::from(self.recycle_in_flight.is_some())
            < self.config.segments_max
    }

    /// The active segment.
    pub fn active(&self) -> Option<u64> {
        self.segments.back().map(|segment| segment.id)
    }

    /// The live records of `segment_id` (0 if it is not live).
    pub fn live_records(&self, segment_id: u64) -> u64 {
        self.segment(segment_id).map_or(0, |segment| segment.live)
    }

    fn segment(&self, segment_id: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|segment| segment.id == segment_id)
    }

    fn segment_mut(&mut self, segment_id: u64) -> Option<&mut Segment> {
        self.segments
            .iter_mut()
            .rev()
            .find(|segment| segment.id == segment_id)
    }

    /// A new active segment (a roll, or a live segment during recovery replay, oldest first).
    pub fn handle_segment_opened(&mut self, segment_id: u64) -> Result<(), SegmentError> {
        if let Some(previous) = self.active()
            && segment_id <= previous
        {
            return Err(SegmentError::SegmentIdNotIncreasing {
                previous,
                got: segment_id,
            });
        }
        if !self.can_open() {
            return Err(SegmentError::TooManySegments {
                limit: self.config.segments_max,
            });
        }
        self.segments.push_back(Segment {
            id: segment_id,
            live: 0,
            has_inbound: false,
            release_seq: 0,
        });
        Ok(())
    }

    /// Moves whatever was pinned at `old` (if anything) to `new`.
    fn repin(&mut self, old: Option<Location>, new: Location) {
        if let Some(old) = old
            && let Some(segment) = self.segment_mut(old.segment_id)
        {
            assert!(
                segment.live > 0,
                "a pinned record is counted in its segment"
            );
            segment.live -= 1;
            segment.release_seq = segment.release_seq.max(new.seq);
        }
        if let Some(segment) = self.segment_mut(new.segment_id) {
            segment.live += 1;
        }
    }

    /// Record `seq` was appended (or replayed) at `offset` of `segment_id`, the active segment.
    pub fn handle_record(
        &mut self,
        segment_id: u64,
        offset: usize,
        seq: u64,
        body: &Body<'_>,
    ) -> Result<(), SegmentError> {
        let active = self.active();
        if active != Some(segment_id) {
            return Err(SegmentError::NotActive {
                active,
                got: segment_id,
            });
        }
        let location = Location {
            segment_id,
            offset,
            seq,
        };
        if let Some(segment) = self.segment_mut(segment_id) {
            segment.release_seq = segment.release_seq.max(seq);
        }
        match *body {
            Body::Message { key, .. } => self.track(EntryKey::Outbound(key), location)?,
            Body::Inbound { key, .. } => {
                self.track(EntryKey::Inbound(key), location)?;
                if let Some(segment) = self.segment_mut(segment_id) {
                    segment.has_inbound = true;
                }
            }
            Body::Delivered { key } => self.settle(EntryKey::Outbound(key), seq),
            Body::Acked { key } => self.settle(EntryKey::Inbound(key), seq),
            Body::DedupCheckpoint { .. } => {
                self.repin(self.checkpoint, location);
                self.checkpoint = Some(location);
                self.checkpoint_requested = false;
            }
            Body::MsgIdReservation(_) => {
                self.repin(self.reservation, location);
                self.reservation = Some(location);
            }
        }
        Ok(())
    }

    fn track(&mut self, key: EntryKey, location: Location) -> Result<(), SegmentError> {
        let old = self.entries.get(&key).copied();
        if old.is_none() && !self.has_room() {
            return Err(SegmentError::TooManyEntries {
                limit: self.config.entries_max,
            });
        }
        self.entries.insert(key, location);
        self.repin(old, location);
        Ok(())
    }

    /// Every record up to `durable_seq` is durable (from the commit machine): releases they
    /// carry may now recycle segments.
    pub fn handle_durable(&mut self, durable_seq: u64) {
        self.durable_seq = self.durable_seq.max(durable_seq);
    }

    fn settle(&mut self, key: EntryKey, seq: u64) {
        // A settle for a key not tracked is normal: a duplicate DELIVERED / ACKED, or one whose
        // record lived in a segment recycled before a restart.
        if let Some(location) = self.entries.remove(&key)
            && let Some(segment) = self.segment_mut(location.segment_id)
        {
            assert!(
                segment.live > 0,
                "a tracked record is counted in its segment"
            );
            segment.live -= 1;
            segment.release_seq = segment.release_seq.max(seq);
        }
    }

    /// Whether the oldest segment could be recycled now.
    fn oldest_recyclable(&self) -> Option<Segment> {
        if self.segments.len() < 2 {
            return None;
        }
        let oldest = *self.segments.front()?;
        let durable = self.durable_seq;
        let covered = !oldest.has_inbound
            || self.checkpoint.is_some_and(|checkpoint| {
                checkpoint.segment_id > oldest.id && checkpoint.seq <= durable
            });
        (oldest.live == 0 && oldest.release_seq <= durable && covered).then_some(oldest)
    }

    /// The segment whose file the shell must recycle now (zero its header, sync, then
    /// [`SegmentTracker::handle_recycled`]), if any. Oldest first, one at a time.
    #[must_use]
    pub fn poll_recycle(&mut self) -> Option<u64> {
        if self.recycle_in_flight.is_some() {
            return None;
        }
        let oldest = self.oldest_recyclable()?;
        self.segments.pop_front();
        if self.relocating == Some(oldest.id) {
            self.relocating = None;
            self.relocations.clear();
        }
        self.recycle_in_flight = Some(oldest.id);
        Some(oldest.id)
    }

    /// The file of `segment_id` is recycled (header zeroed and synced): it is free.
    pub fn handle_recycled(&mut self, segment_id: u64) -> Result<(), SegmentError> {
        if self.recycle_in_flight != Some(segment_id) {
            return Err(SegmentError::UnexpectedRecycled {
                expected: self.recycle_in_flight,
                got: segment_id,
            });
        }
        self.recycle_in_flight = None;
        Ok(())
    }

    /// The next record the shell should append again to free the oldest segment, once the
    /// chain is long enough (see the module doc).
    #[must_use]
    pub fn poll_relocate(&mut self) -> Option<Relocate> {
        if self.relocating.is_none() {
            self.plan_relocation();
        }
        while let Some((pinned, location)) = self.relocations.pop_front() {
            let current = match pinned {
                Pinned::Entry(key) => self.entries.get(&key).copied(),
                Pinned::Reservation => self.reservation,
            };
            if current == Some(location) {
                return Some(Relocate::CopyRecord {
                    segment_id: location.segment_id,
                    offset: location.offset,
                });
            }
        }
        let relocating = self.relocating?;
        if !self.checkpoint_requested
            && self.segments.front().is_some_and(|oldest| {
                oldest.id == relocating
                    && (oldest.has_inbound
                        || self
                            .checkpoint
                            .is_some_and(|checkpoint| checkpoint.segment_id == relocating))
            })
            && self
                .checkpoint
                .is_none_or(|checkpoint| checkpoint.segment_id <= relocating)
        {
            self.checkpoint_requested = true;
            return Some(Relocate::WriteDedupCheckpoint);
        }
        None
    }

    /// Lists the records pinning the oldest segment, once per segment.
    fn plan_relocation(&mut self) {
        if self.segments.len() < self.config.relocate_at_segments {
            return;
        }
        let Some(oldest) = self.segments.front().copied() else {
            return;
        };
        if self.oldest_recyclable().is_some() {
            return;
        }
        let mut planned: Vec<(Pinned, Location)> = self
            .entries
            .iter()
            .filter(|(_, location)| location.segment_id == oldest.id)
            .map(|(key, location)| (Pinned::Entry(*key), *location))
            .collect();
        if let Some(location) = self.reservation
            && location.segment_id == oldest.id
        {
            planned.push((Pinned::Reservation, location));
        }
        planned.sort_unstable_by_key(|(_, location)| location.offset);
        self.relocations = planned.into();
        self.relocating = Some(oldest.id);
        self.checkpoint_requested = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg_id::{Reservation, partition_first};

    fn key(msg_id: u64) -> MsgKey {
        MsgKey {
            src_node: 9,
            msg_id,
        }
    }

    /// A tracker plus the seq counter of the log it follows.
    struct Log {
        tracker: SegmentTracker,
        seq: u64,
    }

    impl Log {
        fn new(segments_max: usize, relocate_at: usize) -> Self {
            let tracker = SegmentTracker::new(SegmentConfig {
                segments_max,
                entries_max: 8,
                relocate_at_segments: relocate_at,
                hash_seed: 42,
            })
            .unwrap();
            Self { tracker, seq: 0 }
        }

        fn open(&mut self, segment_id: u64) {
            self.tracker.handle_segment_opened(segment_id).unwrap();
        }

        fn try_append(
            &mut self,
            segment_id: u64,
            offset: usize,
            body: Body<'_>,
        ) -> Result<u64, SegmentError> {
            self.seq += 1;
            self.tracker
                .handle_record(segment_id, offset, self.seq, &body)
                .map(|()| self.seq)
        }

        /// Appends and makes everything durable.
        fn append(&mut self, segment_id: u64, offset: usize, body: Body<'_>) -> u64 {
            let seq = self.try_append(segment_id, offset, body).unwrap();
            self.tracker.handle_durable(seq);
            seq
        }
    }

    fn message(msg_id: u64) -> Body<'static> {
        Body::Message {
            key: key(msg_id),
            frame: b"m",
        }
    }

    fn inbound(msg_id: u64) -> Body<'static> {
        Body::Inbound {
            key: key(msg_id),
            frame: b"i",
        }
    }

    #[test]
    fn settled_segments_recycle_oldest_first() {
        let mut log = Log::new(8, 8);
        log.open(1);
        log.append(1, 64, message(1));
        log.open(2);
        log.append(2, 64, message(2));
        log.open(3);
        let t = &mut log.tracker;
        assert_eq!(
            t.poll_recycle(),
            None,
            "segment 1 holds an unsettled message"
        );
        log.append(3, 64, Body::Delivered { key: key(2) });
        assert_eq!(log.tracker.live_records(2), 0);
        assert_eq!(
            log.tracker.poll_recycle(),
            None,
            "segment 2 is settled but 1 is older"
        );
        log.append(3, 96, Body::Delivered { key: key(1) });
        log.append(3, 128, Body::Delivered { key: key(1) });
        let t = &mut log.tracker;
        assert_eq!(t.poll_recycle(), Some(1));
        assert_eq!(t.poll_recycle(), None, "one recycle in flight");
        assert_eq!(
            t.handle_recycled(2),
            Err(SegmentError::UnexpectedRecycled {
                expected: Some(1),
                got: 2
            })
        );
        t.handle_recycled(1).unwrap();
        assert_eq!(t.poll_recycle(), Some(2));
        t.handle_recycled(2).unwrap();
        assert_eq!(
            t.poll_recycle(),
            None,
            "the active segment is never recycled"
        );
        assert_eq!(t.live_segments(), 1);
    }

    #[test]
    fn recycling_waits_until_the_release_is_durable() {
        let mut log = Log::new(8, 8);
        log.open(1);
        log.append(1, 64, message(1));
        log.open(2);
        let delivered = log
            .try_append(2, 64, Body::Delivered { key: key(1) })
            .unwrap();
        assert_eq!(log.tracker.live_records(1), 0);
        assert_eq!(
            log.tracker.poll_recycle(),
            None,
            "a crash now would lose the DELIVERED and bring the MESSAGE back"
        );
        log.tracker.handle_durable(delivered - 1);
        assert_eq!(log.tracker.poll_recycle(), None);
        log.tracker.handle_durable(delivered);
        assert_eq!(log.tracker.poll_recycle(), Some(1));
    }

    #[test]
    fn inbound_needs_ack_and_a_later_durable_checkpoint() {
        let mut log = Log::new(8, 8);
        log.open(1);
        log.append(1, 64, inbound(5));
        log.append(1, 100, Body::Acked { key: key(5) });
        log.open(2);
        assert_eq!(
            log.tracker.poll_recycle(),
            None,
            "INBOUND not yet in a checkpoint"
        );
        let checkpoint = log
            .try_append(2, 64, Body::DedupCheckpoint { snapshot: b"" })
            .unwrap();
        assert_eq!(log.tracker.poll_recycle(), None, "checkpoint not durable");
        log.tracker.handle_durable(checkpoint);
        assert_eq!(log.tracker.poll_recycle(), Some(1));
        log.tracker.handle_recycled(1).unwrap();
    }

    #[test]
    fn latest_reservation_pins_its_segment() {
        let mut log = Log::new(8, 8);
        let r1 = Reservation::new(partition_first(0), 100).unwrap();
        let r2 = Reservation::new(100, 200).unwrap();
        log.open(1);
        log.append(1, 64, Body::MsgIdReservation(r1));
        log.open(2);
        assert_eq!(log.tracker.poll_recycle(), None);
        log.append(2, 64, Body::MsgIdReservation(r2));
        assert_eq!(log.tracker.poll_recycle(), Some(1));
    }

    #[test]
    fn relocation_frees_the_oldest_segment() {
        let mut log = Log::new(4, 3);
        let r = Reservation::new(partition_first(0), 100).unwrap();
        log.open(1);
        log.append(1, 64, message(1));
        log.append(1, 128, Body::MsgIdReservation(r));
        log.append(1, 160, inbound(2));
        log.append(1, 192, message(3));
        log.append(1, 256, Body::Delivered { key: key(3) });
        log.open(2);
        assert_eq!(
            log.tracker.poll_relocate(),
            None,
            "chain shorter than the threshold"
        );
        log.open(3);
        for offset in [64, 128, 160] {
            assert_eq!(
                log.tracker.poll_relocate(),
                Some(Relocate::CopyRecord {
                    segment_id: 1,
                    offset
                })
            );
        }
        assert_eq!(
            log.tracker.poll_relocate(),
            Some(Relocate::WriteDedupCheckpoint)
        );
        assert_eq!(log.tracker.poll_relocate(), None);
        // The shell appends the copies and a checkpoint to the active segment.
        log.append(3, 64, message(1));
        log.append(3, 128, Body::MsgIdReservation(r));
        log.append(3, 160, inbound(2));
        log.append(3, 200, Body::DedupCheckpoint { snapshot: b"" });
        assert_eq!(log.tracker.live_records(1), 0);
        assert_eq!(log.tracker.live_records(3), 4);
        assert_eq!(log.tracker.poll_recycle(), Some(1));
        log.tracker.handle_recycled(1).unwrap();
        assert_eq!(log.tracker.poll_recycle(), Some(2));
    }

    #[test]
    fn bounds_are_typed_errors() {
        let mut log = Log::new(2, 2);
        log.open(1);
        log.open(2);
        assert_eq!(
            log.tracker.handle_segment_opened(3),
            Err(SegmentError::TooManySegments { limit: 2 })
        );
        assert_eq!(
            log.tracker.handle_segment_opened(2),
            Err(SegmentError::SegmentIdNotIncreasing {
                previous: 2,
                got: 2
            })
        );
        assert_eq!(
            log.try_append(1, 64, Body::Acked { key: key(1) }),
            Err(SegmentError::NotActive {
                active: Some(2),
                got: 1
            })
        );
        for id in 0..8 {
            log.append(2, 64, message(id));
        }
        assert!(!log.tracker.has_room());
        assert_eq!(
            log.try_append(2, 64, message(99)),
            Err(SegmentError::TooManyEntries { limit: 8 })
        );
        // A copy of a tracked key needs no room.
        log.append(2, 64, message(3));
        assert_eq!(log.tracker.unsettled(), 8);
    }
}
