//! Recovery: the scanner of one segment image, and the recovery of a whole log from the images
//! of all its segment files.
//!
//! # One segment
//!
//! [`SegmentScanner`] yields the valid data records of a segment in order, then ends with a
//! [`SegmentEnd`] or an error:
//!
//! - **clean end**: an END record, unwritten (zero) bytes, or fewer than a record header's bytes
//!   left, with no valid record of this segment further on;
//! - **torn tail**: a record that is incomplete or fails its CRC, with no valid record of this
//!   segment after it: a crash interrupted the last writes. Recovery truncates to its offset;
//! - **corruption** ([`RecoveryError::Corruption`]): a bad record followed by at least one valid
//!   record of this segment: bytes that were once valid have changed. It names the segment, the
//!   offset, what was found there and where the valid record after it lies. It is never
//!   silently truncated.
//!
//! A record whose CRC passes but whose contents are invalid, or whose seq is not the next one,
//! is always an error ([`RecoveryError::InvalidRecord`], [`RecoveryError::SequenceMismatch`]):
//! the checksum proves the writer wrote it, so no crash explains it.
//!
//! "Valid record further on" is searched at every 8-byte position after the bad one, for a
//! record that passes the CRC *under this segment's id* with a sequence number that could follow
//! (at least the expected one, at most one more per 24 bytes of distance). Stale records of an
//! older generation of a recycled file carry another segment id and older sequence numbers, so
//! they never count, and never come back. The search costs one pass over the rest of the
//! segment, with a CRC only where a plausible header sits.
//!
//! # Holes in unsynced data: [`TailPolicy`]
//!
//! The kernel writes dirty pages of a mapping back in any order, so a crash (power loss) during
//! or before a sync can leave a hole (a zero or stale page) *followed by* records written back
//! early. Those records were never reported durable. [`TailPolicy::Strict`], the default and the
//! rule of the spec, reports that as corruption all the same: the node stops and an operator
//! looks. [`TailPolicy::TruncateUnsynced`] uses the `sync_lag` each record carries: if no record
//! after the hole was written after a sync that covered the hole, nothing lost had been synced,
//! so the hole and everything after it are truncated, and *reported* ([`Truncation`]); if one
//! was, it is corruption as under `Strict`.
//!
//! # The whole log: [`recover`]
//!
//! 1. Every image's header is read: all-zero headers are free files; a header that does not
//!    decode, or names another log or another length, is an error.
//! 2. The live chain is walked from the newest segment (largest id) along `prev_segment_id`
//!    until a link is missing (recycled, since segments are recycled oldest first) or 0. Valid
//!    headers outside the chain are stale files to recycle.
//! 3. The chain is scanned oldest first. Each segment's first seq must be exactly the next seq
//!    after the previous segment: less is an overlap (error); more is a gap (records lost):
//!    an error under `Strict`, a truncation under `TruncateUnsynced` unless a later record
//!    proves the missing ones were synced.
//! 4. The result, [`Recovered`], says where to resume (segment, write offset, next seq, whether
//!    to roll first), which files are free, and which must be recycled before reuse.
//!    [`Recovered::replay`] then yields every live record in log order, for the state machines.

use crate::record::{
    BadRecord, Entry, HeaderError, InvalidRecord, RECORD_ALIGN, RECORD_HEADER_LEN, Record,
    RecordKind, RecordView, SEGMENT_HEADER_LEN, SegmentHeader, read_u16, read_u64, usize_from_u32,
};

/// Most segment images [`recover`] accepts.
pub const SEGMENTS_MAX: usize = 1 << 16;

/// After recovery, new segment ids start this far above the largest id found. A crash can
/// lose the header of a segment that was being activated while some of its records reached
/// the disk; skipping ids guarantees such records can never match a later segment's id (the
/// writer never has more than [`crate::commit::GROUPS_PENDING_MAX`] unsynced segments).
pub const SEGMENT_ID_RESTART_GAP: u64 = 1 << 20;

/// How recovery treats a bad record followed by valid ones. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TailPolicy {
    /// Any valid record after a bad one is corruption (the spec's rule). Default.
    #[default]
    Strict,
    /// Valid records after a bad one are truncated, and reported, when none of them proves the
    /// bad one was synced; otherwise it is corruption.
    TruncateUnsynced,
}

/// Where a record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    /// The segment.
    pub segment_id: u64,
    /// Offset of the record in the segment.
    pub offset: usize,
    /// The record's stored seq.
    pub seq: u64,
}

/// Why recovery refused the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// A bad record with a valid one after it.
    #[error(
        "corruption in segment {segment_id} at offset {offset} (expected seq {expected_seq}): {found}; valid record follows in segment {} at offset {} (seq {})",
        valid_after.segment_id, valid_after.offset, valid_after.seq
    )]
    Corruption {
        /// The segment.
        segment_id: u64,
        /// Offset of the bad record.
        offset: usize,
        /// The seq the record there should have carried.
        expected_seq: u64,
        /// What is there.
        found: BadRecord,
        /// A valid record after it (under `TruncateUnsynced`: one that proves the bad one was
        /// synced).
        valid_after: RecordLocation,
    },
    /// A record whose CRC passes but whose contents are invalid.
    #[error("invalid record in segment {segment_id} at offset {offset} (seq {seq}): {reason}")]
    InvalidRecord {
        /// The segment.
        segment_id: u64,
        /// Offset of the record.
        offset: usize,
        /// Its stored seq.
        seq: u64,
        /// What is wrong.
        reason: InvalidRecord,
    },
    /// A record whose CRC passes carries the wrong seq.
    #[error("segment {segment_id} offset {offset}: seq {found}, expected {expected}")]
    SequenceMismatch {
        /// The segment.
        segment_id: u64,
        /// Offset of the record.
        offset: usize,
        /// The seq that should follow.
        expected: u64,
        /// The stored seq.
        found: u64,
    },
    /// Records are missing between two segments of the chain.
    #[error(
        "segment {segment_id} ends at offset {end_offset} before seq {expected_seq}, but segment {next_segment_id} starts at seq {next_first_seq}"
    )]
    SequenceGap {
        /// The earlier segment.
        segment_id: u64,
        /// Where its valid contents end.
        end_offset: usize,
        /// The seq that should come next.
        expected_seq: u64,
        /// The next segment of the chain.
        next_segment_id: u64,
        /// Its first seq.
        next_first_seq: u64,
        /// Under `TruncateUnsynced`: the record proving the missing ones were synced.
        valid_after: Option<RecordLocation>,
    },
    /// Two segments of the chain claim the same seqs.
    #[error(
        "segment {next_segment_id} starts at seq {next_first_seq}, but segment {segment_id} already reaches seq {expected_seq}"
    )]
    SequenceOverlap {
        /// The earlier segment.
        segment_id: u64,
        /// The seq after its last record.
        expected_seq: u64,
        /// The next segment of the chain.
        next_segment_id: u64,
        /// Its first seq.
        next_first_seq: u64,
    },
    /// A non-zero segment header that does not decode.
    #[error("segment file {slot}: bad header: {reason}")]
    BadSegmentHeader {
        /// Index of the image in the input.
        slot: usize,
        /// Why it does not decode.
        reason: HeaderError,
    },
    /// The header's length is not the image's.
    #[error(
        "segment file {slot} (segment {segment_id}): header says {header_len} bytes, image has {image_len}"
    )]
    SegmentLenMismatch {
        /// Index of the image in the input.
        slot: usize,
        /// The segment id in the header.
        segment_id: u64,
        /// `segment_len` in the header.
        header_len: usize,
        /// Length of the image.
        image_len: usize,
    },
    /// The segment belongs to another core's log.
    #[error(
        "segment file {slot} (segment {segment_id}) belongs to log {found}, expected {expected}"
    )]
    LogIdMismatch {
        /// Index of the image in the input.
        slot: usize,
        /// The segment id in the header.
        segment_id: u64,
        /// The log being recovered.
        expected: u32,
        /// The log in the header.
        found: u32,
    },
    /// Two files carry the same segment id.
    #[error("segment id {segment_id} in both file {first_slot} and file {second_slot}")]
    DuplicateSegmentId {
        /// The id.
        segment_id: u64,
        /// One file.
        first_slot: usize,
        /// The other.
        second_slot: usize,
    },
    /// More images than [`SEGMENTS_MAX`].
    #[error("{count} segment files, at most {limit}")]
    TooManySegments {
        /// Images given.
        count: usize,
        /// [`SEGMENTS_MAX`].
        limit: usize,
    },
}

/// Why a segment's contents end cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanEnd {
    /// An END record.
    EndRecord,
    /// Unwritten (zero) bytes.
    Unwritten,
    /// Fewer than [`RECORD_HEADER_LEN`] bytes left.
    Full,
}

/// Valid records found after a tear and truncated with it ([`TailPolicy::TruncateUnsynced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// How many.
    pub records: u64,
    /// The first of them.
    pub first: RecordLocation,
}

/// How a segment's valid contents end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Nothing valid follows `offset`.
    Clean {
        /// Offset after the last valid record (of the END record, if `reason` is `EndRecord`).
        offset: usize,
        /// The seq of the next data record.
        next_seq: u64,
        /// Why it ends.
        reason: CleanEnd,
    },
    /// A bad record at `offset` and nothing valid after it (or, under
    /// [`TailPolicy::TruncateUnsynced`], only records that were never synced): truncate to
    /// `offset`.
    TornTail {
        /// Offset to truncate to.
        offset: usize,
        /// The seq of the next data record.
        next_seq: u64,
        /// What was found at `offset`.
        found: BadRecord,
        /// Unsynced valid records after the tear, truncated with it.
        discarded: Option<Discarded>,
    },
}

impl SegmentEnd {
    /// Offset where the segment's valid contents end.
    pub const fn offset(&self) -> usize {
        match self {
            SegmentEnd::Clean { offset, .. } | SegmentEnd::TornTail { offset, .. } => *offset,
        }
    }

    /// The seq of the next data record after the segment's valid contents.
    pub const fn next_seq(&self) -> u64 {
        match self {
            SegmentEnd::Clean { next_seq, .. } | SegmentEnd::TornTail { next_seq, .. } => *next_seq,
        }
    }
}

/// A record yielded by the scanner, with its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord<'a> {
    /// Offset of the record in the segment.
    pub offset: usize,
    /// The record.
    pub record: Record<'a>,
}

/// The record with the highest `synced_seq` seen by a scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedAt {
    /// The highest synced seq stated by a record.
    pub synced_seq: u64,
    /// That record.
    pub location: RecordLocation,
}

/// Valid records found by the search after a bad record.
#[derive(Debug, Clone, Copy, Default)]
struct After {
    count: u64,
    first: Option<RecordLocation>,
    best: Option<SyncedAt>,
}

/// Scans one segment image: an iterator over its valid data records, then
/// [`SegmentScanner::finish`] for how it ends. Never panics, whatever the bytes.
#[derive(Debug, Clone)]
pub struct SegmentScanner<'a> {
    image: &'a [u8],
    segment_id: u64,
    offset: usize,
    expected_seq: u64,
    policy: TailPolicy,
    records: u64,
    best_synced: Option<SyncedAt>,
    outcome: Option<Result<SegmentEnd, RecoveryError>>,
}

impl<'a> SegmentScanner<'a> {
    /// A scanner over a whole segment image, header first.
    pub fn new(image: &'a [u8], policy: TailPolicy) -> Result<Self, HeaderError> {
        let header = SegmentHeader::decode(image)?;
        Ok(Self::with_start(
            image,
            header.segment_id,
            header.first_seq,
            SEGMENT_HEADER_LEN,
            policy,
        ))
    }

    /// A scanner over the records of `image` from `start` (rounded up to [`RECORD_ALIGN`]),
    /// for a segment `segment_id` whose first record carries `first_seq`; the header is not
    /// read.
    pub fn with_start(
        image: &'a [u8],
        segment_id: u64,
        first_seq: u64,
        start: usize,
        policy: TailPolicy,
    ) -> Self {
        Self {
            image,
            segment_id,
            offset: start
                .checked_next_multiple_of(RECORD_ALIGN)
                .unwrap_or(usize::MAX),
            expected_seq: first_seq,
            policy,
            records: 0,
            best_synced: None,
            outcome: None,
        }
    }

    /// Offset of the next record to read.
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Valid records seen so far: those yielded and those found after a tear.
    pub const fn records_seen(&self) -> u64 {
        self.records
    }

    /// The record with the highest `synced_seq` seen so far (yielded or after a tear).
    pub const fn best_synced(&self) -> Option<SyncedAt> {
        self.best_synced
    }

    /// How the segment ends, once the iterator has returned `None`.
    pub const fn outcome(&self) -> Option<&Result<SegmentEnd, RecoveryError>> {
        self.outcome.as_ref()
    }

    /// Reads the remaining records and returns how the segment ends.
    pub fn finish(mut self) -> Result<SegmentEnd, RecoveryError> {
        loop {
            if let Some(outcome) = self.outcome {
                return outcome;
            }
            let _ = self.next();
        }
    }

    fn location(&self, offset: usize, seq: u64) -> RecordLocation {
        RecordLocation {
            segment_id: self.segment_id,
            offset,
            seq,
        }
    }

    fn note_synced(&mut self, synced_seq: Option<u64>, location: RecordLocation) {
        if let Some(synced_seq) = synced_seq
            && self
                .best_synced
                .is_none_or(|best| synced_seq > best.synced_seq)
        {
            self.best_synced = Some(SyncedAt {
                synced_seq,
                location,
            });
        }
    }

    /// A record at `offset` that passes the CRC under this segment's id with a seq in
    /// `seq_min..=seq_max`, cheapest checks first.
    fn candidate(&self, offset: usize, seq_min: u64, seq_max: u64) -> Option<RecordView<&'a [u8]>> {
        let rest = self.image.get(offset..)?;
        if rest.len() < RECORD_HEADER_LEN {
            return None;
        }
        let seq = read_u64(rest, 8);
        if seq < seq_min || seq > seq_max {
            return None;
        }
        if RecordKind::from_u8(rest[16]).is_none() || rest[17] != 0 || read_u16(rest, 18) != 0 {
            return None;
        }
        let view = RecordView::new_checked(rest).ok()?;
        view.check_crc(self.segment_id).ok()?;
        Some(view)
    }

    /// Searches every aligned offset after the bad record at `bad_offset` for valid records.
    fn search_after(&mut self, bad_offset: usize, expected_seq: u64) -> After {
        let mut after = After::default();
        let mut base = bad_offset;
        let mut base_seq = expected_seq;
        let mut at = bad_offset + RECORD_ALIGN;
        while at + RECORD_HEADER_LEN <= self.image.len() {
            // Each record takes at least RECORD_HEADER_LEN bytes, which bounds the seq a valid
            // record at this distance can carry.
            let distance = u64::try_from((at - base) / RECORD_HEADER_LEN).unwrap_or(u64::MAX);
            let seq_max = base_seq.saturating_add(distance);
            let Some(view) = self.candidate(at, base_seq, seq_max) else {
                at += RECORD_ALIGN;
                continue;
            };
            let seq = view.seq();
            let location = self.location(at, seq);
            after.count += 1;
            self.records += 1;
            after.first.get_or_insert(location);
            if let Some(synced_seq) = view.synced_seq()
                && after.best.is_none_or(|best| synced_seq > best.synced_seq)
            {
                after.best = Some(SyncedAt {
                    synced_seq,
                    location,
                });
            }
            self.note_synced(view.synced_seq(), location);
            if self.policy == TailPolicy::Strict {
                break;
            }
            let data = RecordKind::from_u8(view.kind_raw()).is_some_and(RecordKind::is_data);
            base_seq = if data { seq.saturating_add(1) } else { seq };
            base = at + view.record_len();
            at = base;
        }
        after
    }

    /// Ends the scan at a bad or unwritten record.
    fn end_at(&mut self, offset: usize, found: BadRecord) {
        let expected_seq = self.expected_seq;
        let after = self.search_after(offset, expected_seq);
        let corruption = |valid_after| RecoveryError::Corruption {
            segment_id: self.segment_id,
            offset,
            expected_seq,
            found,
            valid_after,
        };
        let outcome = match (after.first, self.policy) {
            (None, _) if found == BadRecord::Unwritten => Ok(SegmentEnd::Clean {
                offset,
                next_seq: expected_seq,
                reason: CleanEnd::Unwritten,
            }),
            (None, _) => Ok(SegmentEnd::TornTail {
                offset,
                next_seq: expected_seq,
                found,
                discarded: None,
            }),
            (Some(first), TailPolicy::Strict) => Err(corruption(first)),
            (Some(first), TailPolicy::TruncateUnsynced) => match after.best {
                Some(best) if best.synced_seq >= expected_seq => Err(corruption(best.location)),
                _ => Ok(SegmentEnd::TornTail {
                    offset,
                    next_seq: expected_seq,
                    found,
                    discarded: Some(Discarded {
                        records: after.count,
                        first,
                    }),
                }),
            },
        };
        self.outcome = Some(outcome);
    }
}

impl<'a> Iterator for SegmentScanner<'a> {
    type Item = ScannedRecord<'a>;

    fn next(&mut self) -> Option<ScannedRecord<'a>> {
        loop {
            if self.outcome.is_some() {
                return None;
            }
            let offset = self.offset;
            let Some(rest) = self
                .image
                .get(offset..)
                .filter(|rest| rest.len() >= RECORD_HEADER_LEN)
            else {
                self.outcome = Some(Ok(SegmentEnd::Clean {
                    offset,
                    next_seq: self.expected_seq,
                    reason: CleanEnd::Full,
                }));
                return None;
            };
            let view = match RecordView::new_checked(rest) {
                Ok(view) => view,
                Err(found) => {
                    self.end_at(offset, found);
                    return None;
                }
            };
            if let Err(found) = view.check_crc(self.segment_id) {
                self.end_at(offset, found);
                return None;
            }
            let entry = match view.entry() {
                Ok(entry) => entry,
                Err(reason) => {
                    self.outcome = Some(Err(RecoveryError::InvalidRecord {
                        segment_id: self.segment_id,
                        offset,
                        seq: view.seq(),
                        reason,
                    }));
                    return None;
                }
            };
            if entry.seq() != self.expected_seq {
                self.outcome = Some(Err(RecoveryError::SequenceMismatch {
                    segment_id: self.segment_id,
                    offset,
                    expected: self.expected_seq,
                    found: entry.seq(),
                }));
                return None;
            }
            let next_offset = offset + view.record_len();
            match entry {
                Entry::Data(record) => {
                    self.offset = next_offset;
                    self.expected_seq += 1;
                    self.records += 1;
                    self.note_synced(record.synced_seq, self.location(offset, record.seq));
                    return Some(ScannedRecord { offset, record });
                }
                Entry::Padding { .. } => self.offset = next_offset,
                Entry::End { .. } => {
                    self.outcome = Some(Ok(SegmentEnd::Clean {
                        offset,
                        next_seq: self.expected_seq,
                        reason: CleanEnd::EndRecord,
                    }));
                    return None;
                }
            }
        }
    }
}

/// Configuration of [`recover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryConfig {
    /// How to treat a bad record followed by valid ones.
    pub policy: TailPolicy,
    /// The log (core) being recovered; every segment header must name it.
    pub log_id: u32,
}

/// A segment of the live chain, as recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSegment {
    /// Index of its image in the input.
    pub slot: usize,
    /// Its id.
    pub segment_id: u64,
    /// Seq of its first record.
    pub first_seq: u64,
    /// How its valid contents end.
    pub end: SegmentEnd,
}

/// What the writer does before the next append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMode {
    /// Append at the write offset of the resume segment.
    Append,
    /// Write an END record at the write offset, then roll to a new segment: records that were
    /// truncated lie after the write offset, and must stay behind an END.
    SealAndRoll,
    /// The resume segment already ends (END record, or full): roll to a new segment.
    Roll,
}

/// Where the log continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Index of the segment's image in the input.
    pub slot: usize,
    /// The segment.
    pub segment_id: u64,
    /// Offset of the next record.
    pub write_offset: usize,
    /// What to do before appending.
    pub mode: ResumeMode,
}

/// Records cut off by recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The segment truncated.
    pub segment_id: u64,
    /// Offset it is truncated to.
    pub offset: usize,
    /// The seq of the next data record.
    pub next_seq: u64,
    /// What was at `offset` (`None` when records were missing between segments).
    pub found: Option<BadRecord>,
    /// Valid but unsynced records truncated ([`TailPolicy::TruncateUnsynced`]).
    pub discarded_records: u64,
    /// Later segments dropped as unsynced ([`TailPolicy::TruncateUnsynced`]).
    pub discarded_segments: usize,
}

/// The state to resume from after [`recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The live chain, oldest first. Empty for a new log.
    pub live: Vec<LiveSegment>,
    /// Where appends continue; `None` for a new log (the writer starts a first segment).
    pub resume: Option<Resume>,
    /// The seq of the next data record.
    pub next_seq: u64,
    /// The id to give the next segment created.
    pub next_segment_id: u64,
    /// Files holding no segment (all-zero header): free to use.
    pub free_slots: Vec<usize>,
    /// Files with a valid header outside the live chain (stale, or dropped): the shell zeroes
    /// their header and syncs that before reusing them.
    pub recycle_slots: Vec<usize>,
    /// Records cut off, if any (a torn tail, or unsynced records dropped).
    pub truncated: Option<Truncation>,
}

impl Recovered {
    /// Every live record in log order, with an event at the start of each segment. `images`
    /// must be the slice given to [`recover`].
    pub fn replay<'a, 'b>(&'b self, images: &'b [&'a [u8]]) -> Replay<'a, 'b> {
        Replay {
            live: &self.live,
            images,
            next_index: 0,
            current: None,
        }
    }

    /// The id of the newest live segment, if any.
    pub fn newest_segment_id(&self) -> Option<u64> {
        self.live.last().map(|segment| segment.segment_id)
    }
}

/// An event of [`Recovered::replay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEvent<'a> {
    /// The records that follow belong to this segment.
    Segment {
        /// The segment.
        segment_id: u64,
        /// Index of its image.
        slot: usize,
    },
    /// A live record.
    Record {
        /// Its segment.
        segment_id: u64,
        /// Its offset.
        offset: usize,
        /// The record.
        record: Record<'a>,
    },
}

/// Iterator returned by [`Recovered::replay`].
#[derive(Debug)]
pub struct Replay<'a, 'b> {
    live: &'b [LiveSegment],
    images: &'b [&'a [u8]],
    next_index: usize,
    current: Option<(SegmentScanner<'a>, usize)>,
}

impl<'a> Iterator for Replay<'a, '_> {
    type Item = ReplayEvent<'a>;

    fn next(&mut self) -> Option<ReplayEvent<'a>> {
        if let Some((scanner, data_end)) = &mut self.current {
            // Stop at the recovered end without asking the scanner for more: past it lies the
            // tear, whose search was done once already.
            if scanner.offset() < *data_end
                && let Some(scanned) = scanner.next()
            {
                return Some(ReplayEvent::Record {
                    segment_id: scanner.segment_id,
                    offset: scanned.offset,
                    record: scanned.record,
                });
            }
            self.current = None;
        }
        let segment = self.live.get(self.next_index)?;
        self.next_index += 1;
        let image = self.images.get(segment.slot)?;
        let scanner = SegmentScanner::new(image, TailPolicy::Strict).ok()?;
        self.current = Some((scanner, segment.end.offset()));
        Some(ReplayEvent::Segment {
            segment_id: segment.segment_id,
            slot: segment.slot,
        })
    }
}

/// Recovers the log from the images of all its segment files (one per preallocated file, in
/// any order; a file's index in `images` is its "slot"). Never panics, whatever the bytes.
pub fn recover(images: &[&[u8]], config: &RecoveryConfig) -> Result<Recovered, RecoveryError> {
    if images.len() > SEGMENTS_MAX {
        return Err(RecoveryError::TooManySegments {
            count: images.len(),
            limit: SEGMENTS_MAX,
        });
    }
    let mut free_slots = Vec::new();
    let mut recycle_slots = Vec::new();
    let mut headers: Vec<(usize, SegmentHeader)> = Vec::with_capacity(images.len());
    for (slot, image) in images.iter().enumerate() {
        if SegmentHeader::is_zeroed(image) {
            free_slots.push(slot);
            continue;
        }
        let header = SegmentHeader::decode(image)
            .map_err(|reason| RecoveryError::BadSegmentHeader { slot, reason })?;
        let header_len = usize_from_u32(header.segment_len);
        if header_len != image.len() {
            return Err(RecoveryError::SegmentLenMismatch {
                slot,
                segment_id: header.segment_id,
                header_len,
                image_len: image.len(),
            });
        }
        if header.log_id != config.log_id {
            return Err(RecoveryError::LogIdMismatch {
                slot,
                segment_id: header.segment_id,
                expected: config.log_id,
                found: header.log_id,
            });
        }
        headers.push((slot, header));
    }
    headers.sort_by_key(|(_, header)| header.segment_id);
    for pair in headers.windows(2) {
        if pair[0].1.segment_id == pair[1].1.segment_id {
            return Err(RecoveryError::DuplicateSegmentId {
                segment_id: pair[0].1.segment_id,
                first_slot: pair[0].0,
                second_slot: pair[1].0,
            });
        }
    }
    let max_id = headers.last().map_or(0, |(_, header)| header.segment_id);
    let next_segment_id = max_id.saturating_add(SEGMENT_ID_RESTART_GAP);
    let Some(newest) = headers.len().checked_sub(1) else {
        return Ok(Recovered {
            live: Vec::new(),
            resume: None,
            next_seq: 1,
            next_segment_id,
            free_slots,
            recycle_slots,
            truncated: None,
        });
    };

    // The chain, newest to oldest, along prev links; ids strictly decrease, so it ends.
    let mut chain = vec![newest];
    loop {
        let prev = headers[chain[chain.len() - 1]].1.prev_segment_id;
        if prev == 0 {
            break;
        }
        match headers.binary_search_by_key(&prev, |(_, header)| header.segment_id) {
            Ok(index) => chain.push(index),
            Err(_) => break,
        }
    }
    chain.reverse();
    let mut in_chain = vec![false; headers.len()];
    for &index in &chain {
        in_chain[index] = true;
    }
    for (index, (slot, _)) in headers.iter().enumerate() {
        if !in_chain[index] {
            recycle_slots.push(*slot);
        }
    }

    let mut live: Vec<LiveSegment> = Vec::with_capacity(chain.len());
    let mut cut = false;
    let mut discarded_segments = 0;
    for (position, &index) in chain.iter().enumerate() {
        let (slot, header) = headers[index];
        let image = images[slot];
        let end = SegmentScanner::with_start(
            image,
            header.segment_id,
            header.first_seq,
            SEGMENT_HEADER_LEN,
            config.policy,
        )
        .finish()?;
        live.push(LiveSegment {
            slot,
            segment_id: header.segment_id,
            first_seq: header.first_seq,
            end,
        });
        if matches!(
            end,
            SegmentEnd::TornTail {
                discarded: Some(_),
                ..
            }
        ) {
            cut = true;
        }
        let Some(&next_index) = chain.get(position + 1) else {
            break;
        };
        let next = headers[next_index].1;
        let expected_seq = end.next_seq();
        if next.first_seq == expected_seq {
            // Whatever lies after this segment's end was superseded by the next segment.
            cut = false;
            continue;
        }
        if next.first_seq < expected_seq {
            return Err(RecoveryError::SequenceOverlap {
                segment_id: header.segment_id,
                expected_seq,
                next_segment_id: next.segment_id,
                next_first_seq: next.first_seq,
            });
        }
        let gap = |valid_after| RecoveryError::SequenceGap {
            segment_id: header.segment_id,
            end_offset: end.offset(),
            expected_seq,
            next_segment_id: next.segment_id,
            next_first_seq: next.first_seq,
            valid_after,
        };
        if config.policy == TailPolicy::Strict {
            return Err(gap(None));
        }
        // TruncateUnsynced: the later segments are dropped unless one of their records proves
        // that a sync covered the missing seqs.
        for &later in &chain[position + 1..] {
            let (later_slot, later_header) = headers[later];
            let mut scanner = SegmentScanner::with_start(
                images[later_slot],
                later_header.segment_id,
                later_header.first_seq,
                SEGMENT_HEADER_LEN,
                TailPolicy::TruncateUnsynced,
            );
            while scanner.next().is_some() {}
            if let Some(best) = scanner.best_synced()
                && best.synced_seq >= expected_seq
            {
                return Err(gap(Some(best.location)));
            }
            recycle_slots.push(later_slot);
            discarded_segments += 1;
        }
        cut = true;
        break;
    }

    let last = live[live.len() - 1];
    let end = last.end;
    let mode = if cut {
        ResumeMode::SealAndRoll
    } else {
        match end {
            SegmentEnd::Clean {
                reason: CleanEnd::EndRecord | CleanEnd::Full,
                ..
            } => ResumeMode::Roll,
            _ => ResumeMode::Append,
        }
    };
    let truncated = match end {
        SegmentEnd::TornTail {
            offset,
            next_seq,
            found,
            discarded,
        } => Some(Truncation {
            segment_id: last.segment_id,
            offset,
            next_seq,
            found: Some(found),
            discarded_records: discarded.map_or(0, |discarded| discarded.records),
            discarded_segments,
        }),
        SegmentEnd::Clean {
            offset, next_seq, ..
        } if discarded_segments > 0 => Some(Truncation {
            segment_id: last.segment_id,
            offset,
            next_seq,
            found: None,
            discarded_records: 0,
            discarded_segments,
        }),
        SegmentEnd::Clean { .. } => None,
    };
    recycle_slots.sort_unstable();
    Ok(Recovered {
        resume: Some(Resume {
            slot: last.slot,
            segment_id: last.segment_id,
            write_offset: end.offset(),
            mode,
        }),
        next_seq: end.next_seq(),
        next_segment_id,
        live,
        free_slots,
        recycle_slots,
        truncated,
    })
}

/// Runs every parser of this module over arbitrary bytes: for fuzzers and property tests.
/// Returns the number of records read, so the work cannot be optimised away. Never panics.
pub fn fuzz_scan(data: &[u8]) -> u64 {
    let mut records = 0;
    for policy in [TailPolicy::Strict, TailPolicy::TruncateUnsynced] {
        // The bytes as a segment image, header and all.
        if let Ok(mut scanner) = SegmentScanner::new(data, policy) {
            while scanner.next().is_some() {}
            records += scanner.records_seen();
            let _ = scanner.finish();
        }
        // The bytes as records, the first 16 bytes choosing the segment id and first seq.
        if data.len() >= 16 {
            let segment_id = read_u64(data, 0);
            let first_seq = read_u64(data, 8);
            let mut scanner = SegmentScanner::with_start(data, segment_id, first_seq, 16, policy);
            while scanner.next().is_some() {}
            records += scanner.records_seen();
            let _ = scanner.finish();
        }
        // The bytes cut into several images of a log.
        let config = RecoveryConfig { policy, log_id: 0 };
        let images: Vec<&[u8]> = data.chunks(4096).collect();
        if let Ok(recovered) = recover(&images, &config) {
            records += u64::try_from(recovered.replay(&images).count()).unwrap_or(0);
        }
    }
    records
}

#[cfg(test)]
mod tests;
