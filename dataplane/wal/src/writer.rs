//! The append position of one core's log: the active segment, the write offset, the next seq,
//! and rolling to a new segment.
//!
//! [`LogWriter::append`] encodes a record straight into the active segment's mapping (the one
//! copy of the body) and says where it went ([`Appended`], the input of
//! [`crate::commit::GroupCommit::handle_append`]). When the record does not fit, it returns
//! [`AppendError::NeedRoll`] and writes nothing; the shell takes a free file (see
//! [`crate::segments`]) and calls [`LogWriter::roll`], which seals the old segment with an END
//! record (when there is room) and writes the new segment's header, then appends again.
//!
//! Segment ids increase by one at each roll; after recovery they continue from
//! [`crate::recovery::Recovered::next_segment_id`], which skips ids a crash may have half used.

use crate::error::ConfigError;
use crate::record::{
    self, Body, EncodeError, RECORD_BODY_LEN_MAX, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
    SEGMENT_LEN_MAX, SEGMENT_LEN_MIN, SEGMENT_LEN_MULTIPLE, SegmentHeader, record_len,
};
use crate::recovery::{Recovered, ResumeMode};

/// Default segment length: 64 MiB.
pub const SEGMENT_LEN_DEFAULT: usize = 64 << 20;
/// Default limit on a record body: a 1 MiB frame (the wire's default) plus prefixes.
pub const RECORD_BODY_LEN_MAX_DEFAULT: usize = (1 << 20) + 4096;

/// Configuration of a [`LogWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Length of every segment file, header included.
    pub segment_len: usize,
    /// Largest record body accepted (at most [`RECORD_BODY_LEN_MAX`]; a record of this size
    /// plus an END record must fit in an empty segment).
    pub record_body_len_max: usize,
    /// The log (core) this writer appends to, stored in each segment header.
    pub log_id: u32,
}

impl WriterConfig {
    /// Default sizes for log `log_id`.
    pub const fn new(log_id: u32) -> Self {
        Self {
            segment_len: SEGMENT_LEN_DEFAULT,
            record_body_len_max: RECORD_BODY_LEN_MAX_DEFAULT,
            log_id,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let segment_len = to_u64(self.segment_len);
        ConfigError::check_range(
            "writer.segment_len",
            segment_len,
            to_u64(SEGMENT_LEN_MIN),
            to_u64(SEGMENT_LEN_MAX),
        )?;
        ConfigError::check_multiple(
            "writer.segment_len",
            segment_len,
            to_u64(SEGMENT_LEN_MULTIPLE),
        )?;
        // An empty segment holds the header, the largest record and an END record; `room` is a
        // multiple of RECORD_ALIGN, so a body of `room - RECORD_HEADER_LEN` bytes fills it exactly.
        let room = self.segment_len - SEGMENT_HEADER_LEN - RECORD_HEADER_LEN;
        let fits = (room - RECORD_HEADER_LEN).min(RECORD_BODY_LEN_MAX);
        ConfigError::check_range(
            "writer.record_body_len_max",
            to_u64(self.record_body_len_max),
            to_u64(record::MSG_KEY_LEN),
            to_u64(fits),
        )
    }
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Where an appended record went: the input of the commit machine and the segment tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// The segment it is in.
    pub segment_id: u64,
    /// Its offset in the segment.
    pub offset: usize,
    /// The offset after it (a sync up to here covers it).
    pub end_offset: usize,
}

/// The old segment's END record, written by a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The segment sealed.
    pub segment_id: u64,
    /// The offset after the END record (or the write offset, if no END fitted).
    pub end_offset: usize,
}

/// The result of a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolled {
    /// The previous active segment, now sealed (`None` for the first segment of a new log, or
    /// when recovery left the previous one already ended).
    pub sealed: Option<Sealed>,
    /// The new active segment.
    pub segment_id: u64,
}

/// Why an append or roll was refused. Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The record does not fit in the active segment, or there is none yet: roll, then append
    /// again. Routine.
    #[error(
        "segment {segment_id} cannot take a {needed}-byte record ({available} bytes left): roll"
    )]
    NeedRoll {
        /// The active segment (0 if none).
        segment_id: u64,
        /// Length of the record, padding included.
        needed: usize,
        /// Bytes left in the active segment.
        available: usize,
    },
    /// The body is over the configured limit.
    #[error("record body of {len} bytes over the limit {limit}")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// [`WriterConfig::record_body_len_max`].
        limit: usize,
    },
    /// The mapping handed in does not have the configured segment length.
    #[error("segment mapping of {found} bytes, configured segment_len is {expected}")]
    SegmentLenMismatch {
        /// [`WriterConfig::segment_len`].
        expected: usize,
        /// Length of the slice given.
        found: usize,
    },
    /// A roll needs the mapping of the active segment, to seal it.
    #[error("roll without the mapping of active segment {segment_id}")]
    ClosingMissing {
        /// The active segment.
        segment_id: u64,
    },
    /// The encoder refused (a bug in the caller's state: ids or offsets out of order).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    segment_id: u64,
    offset: usize,
    /// Ended already (END record written, or full per recovery): no END to write at roll.
    ended: bool,
    /// No append here any more; the next append asks for a roll.
    must_roll: bool,
}

/// The append position of one core's log.
#[derive(Debug, Clone)]
pub struct LogWriter {
    config: WriterConfig,
    active: Option<Active>,
    next_seq: u64,
    next_segment_id: u64,
}

impl LogWriter {
    /// A writer continuing the log [`crate::recovery::recover`] returned (for a new log, the
    /// recovery of its all-zero files).
    pub fn from_recovered(
        config: WriterConfig,
        recovered: &Recovered,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let active = recovered.resume.map(|resume| Active {
            segment_id: resume.segment_id,
            offset: resume.write_offset,
            ended: resume.mode == ResumeMode::Roll,
            must_roll: resume.mode != ResumeMode::Append,
        });
        Ok(Self {
            config,
            active,
            next_seq: recovered.next_seq,
            next_segment_id: recovered.next_segment_id,
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// The seq the next record gets.
    pub const fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The active segment, if any.
    pub fn active_segment_id(&self) -> Option<u64> {
        self.active.map(|active| active.segment_id)
    }

    /// The offset the next record goes to in the active segment.
    pub fn write_offset(&self) -> Option<usize> {
        self.active.map(|active| active.offset)
    }

    /// Encodes `body` into `segment` (the active segment's mapping) as the next record.
    /// `synced_seq` is [`crate::commit::GroupCommit::synced_seq`].
    pub fn append(
        &mut self,
        segment: &mut [u8],
        body: &Body<'_>,
        synced_seq: u64,
    ) -> Result<Appended, AppendError> {
        let limit = self.config.record_body_len_max;
        if body.len() > limit {
            return Err(AppendError::BodyTooLarge {
                len: body.len(),
                limit,
            });
        }
        let needed = record_len(body.len());
        let active = match self.active {
            Some(active) if !active.must_roll => active,
            other => {
                return Err(AppendError::NeedRoll {
                    segment_id: other.map_or(0, |active| active.segment_id),
                    needed,
                    available: 0,
                });
            }
        };
        self.check_len(segment)?;
        let result = record::encode_record_limited(
            segment,
            active.offset,
            active.segment_id,
            self.next_seq,
            synced_seq,
            body,
            limit,
        );
        let end_offset = match result {
            Ok(end_offset) => end_offset,
            Err(EncodeError::DoesNotFit {
                needed, available, ..
            }) => {
                return Err(AppendError::NeedRoll {
                    segment_id: active.segment_id,
                    needed,
                    available,
                });
            }
            Err(other) => return Err(other.into()),
        };
        let appended = Appended {
            seq: self.next_seq,
            segment_id: active.segment_id,
            offset: active.offset,
            end_offset,
        };
        self.next_seq += 1;
        self.active = Some(Active {
            offset: end_offset,
            ..active
        });
        Ok(appended)
    }

    /// Seals the active segment (END record in `closing`, its mapping, when there is room) and
    /// starts a new segment in `opening` (a free file's mapping: all-zero header), whose header
    /// this writes. `closing` may be `None` only when there is no active segment to seal.
    pub fn roll(
        &mut self,
        closing: Option<&mut [u8]>,
        opening: &mut [u8],
        created_unix_us: u64,
        synced_seq: u64,
    ) -> Result<Rolled, AppendError> {
        self.check_len(opening)?;
        let mut sealed = None;
        if let Some(active) = self.active
            && !active.ended
        {
            let Some(closing) = closing else {
                return Err(AppendError::ClosingMissing {
                    segment_id: active.segment_id,
                });
            };
            self.check_len(closing)?;
            let end_offset = match record::encode_end(
                closing,
                active.offset,
                active.segment_id,
                self.next_seq,
                synced_seq,
            ) {
                Ok(end_offset) => end_offset,
                // Fewer than a header's bytes left: the segment ends where it is full.
                Err(EncodeError::DoesNotFit { .. }) => active.offset,
                Err(other) => return Err(other.into()),
            };
            sealed = Some(Sealed {
                segment_id: active.segment_id,
                end_offset,
            });
        }
        let header = SegmentHeader {
            segment_id: self.next_segment_id,
            prev_segment_id: self.active.map_or(0, |active| active.segment_id),
            first_seq: self.next_seq,
            created_unix_us,
            segment_len: u32::try_from(self.config.segment_len).unwrap_or(u32::MAX),
            log_id: self.config.log_id,
        };
        header.encode(opening)?;
        self.active = Some(Active {
            segment_id: header.segment_id,
            offset: SEGMENT_HEADER_LEN,
            ended: false,
            must_roll: false,
        });
        self.next_segment_id += 1;
        Ok(Rolled {
            sealed,
            segment_id: header.segment_id,
        })
    }

    fn check_len(&self, segment: &[u8]) -> Result<(), AppendError> {
        if segment.len() == self.config.segment_len {
            Ok(())
        } else {
            Err(AppendError::SegmentLenMismatch {
                expected: self.config.segment_len,
                found: segment.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entry, MsgKey, decode_at};
    use crate::recovery::{RecoveryConfig, recover};

    const LEN: usize = 4096;

    fn config() -> WriterConfig {
        WriterConfig {
            segment_len: LEN,
            record_body_len_max: 1024,
            log_id: 1,
        }
    }

    fn fresh() -> LogWriter {
        let recovered = recover(&[], &RecoveryConfig::default()).unwrap();
        LogWriter::from_recovered(config(), &recovered).unwrap()
    }

    fn message(frame: &[u8]) -> Body<'_> {
        Body::Message {
            key: MsgKey {
                src_node: 1,
                msg_id: 1,
            },
            frame,
        }
    }

    #[test]
    fn append_roll_append() {
        let mut writer = fresh();
        let mut a = vec![0u8; LEN];
        let mut b = vec![0u8; LEN];
        let frame = [7u8; 1000];
        assert!(matches!(
            writer.append(&mut a, &message(&frame), 0),
            Err(AppendError::NeedRoll { segment_id: 0, .. })
        ));
        let rolled = writer.roll(None, &mut a, 5, 0).unwrap();
        assert_eq!(rolled.sealed, None);
        let first_id = rolled.segment_id;
        assert_eq!(SegmentHeader::decode(&a).unwrap().first_seq, 1);
        let mut appended = Vec::new();
        loop {
            match writer.append(&mut a, &message(&frame), 0) {
                Ok(at) => appended.push(at),
                Err(AppendError::NeedRoll {
                    segment_id,
                    needed,
                    available,
                }) => {
                    assert_eq!(segment_id, first_id);
                    assert!(needed > available);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(appended.len(), 3);
        assert_eq!(appended[2].seq, 3);
        let rolled = writer.roll(Some(&mut a), &mut b, 6, 0).unwrap();
        let sealed = rolled.sealed.unwrap();
        assert_eq!(sealed.segment_id, first_id);
        assert_eq!(
            decode_at(&a, appended[2].end_offset, first_id).unwrap().0,
            Entry::End { next_seq: 4 }
        );
        assert_eq!(rolled.segment_id, first_id + 1);
        let header = SegmentHeader::decode(&b).unwrap();
        assert_eq!((header.prev_segment_id, header.first_seq), (first_id, 4));
        let next = writer.append(&mut b, &message(&frame), 3).unwrap();
        assert_eq!(
            (next.seq, next.segment_id, next.offset),
            (4, first_id + 1, 64)
        );
    }

    #[test]
    fn refusals() {
        let mut writer = fresh();
        let mut a = vec![0u8; LEN];
        writer.roll(None, &mut a, 0, 0).unwrap();
        let big = vec![0u8; 2000];
        assert_eq!(
            writer.append(&mut a, &message(&big), 0),
            Err(AppendError::BodyTooLarge {
                len: 2016,
                limit: 1024
            })
        );
        let mut short = vec![0u8; 100];
        assert_eq!(
            writer.append(&mut short, &message(b"x"), 0),
            Err(AppendError::SegmentLenMismatch {
                expected: LEN,
                found: 100
            })
        );
        let mut b = vec![0u8; LEN];
        assert!(matches!(
            writer.roll(None, &mut b, 0, 0),
            Err(AppendError::ClosingMissing { .. })
        ));
    }

    #[test]
    fn resume_modes_after_recovery() {
        use crate::recovery::ResumeMode;
        let mut writer = fresh();
        let mut a = vec![0u8; LEN];
        let mut b = vec![0u8; LEN];
        writer.roll(None, &mut a, 0, 0).unwrap();
        let first = writer.append(&mut a, &message(b"x"), 0).unwrap();
        let recovered = recover(
            &[&a, &b],
            &RecoveryConfig {
                log_id: 1,
                ..RecoveryConfig::default()
            },
        )
        .unwrap();
        let resume = recovered.resume.unwrap();
        assert_eq!(resume.mode, ResumeMode::Append);
        assert_eq!(resume.write_offset, first.end_offset);
        let mut writer = LogWriter::from_recovered(config(), &recovered).unwrap();
        let next = writer.append(&mut a, &message(b"y"), 1).unwrap();
        assert_eq!((next.seq, next.offset), (2, first.end_offset));

        // SealAndRoll: the next append asks for a roll, which writes END at the resume offset.
        let mut sealed_resume = recovered.clone();
        if let Some(resume) = sealed_resume.resume.as_mut() {
            resume.mode = ResumeMode::SealAndRoll;
        }
        let mut writer = LogWriter::from_recovered(config(), &sealed_resume).unwrap();
        assert!(matches!(
            writer.append(&mut a, &message(b"y"), 1),
            Err(AppendError::NeedRoll { .. })
        ));
        let rolled = writer.roll(Some(&mut a), &mut b, 0, 1).unwrap();
        assert_eq!(rolled.sealed.unwrap().end_offset, first.end_offset + 24);
        assert_eq!(
            decode_at(&a, first.end_offset, resume.segment_id)
                .unwrap()
                .0,
            Entry::End { next_seq: 2 }
        );
        assert_eq!(
            rolled.segment_id, recovered.next_segment_id,
            "new ids skip what a crash may have half used"
        );

        // Roll: the segment already ended; no END is written, no closing mapping needed.
        let mut ended = recovered;
        if let Some(resume) = ended.resume.as_mut() {
            resume.mode = ResumeMode::Roll;
        }
        let mut writer = LogWriter::from_recovered(config(), &ended).unwrap();
        let mut c = vec![0u8; LEN];
        let rolled = writer.roll(None, &mut c, 0, 1).unwrap();
        assert_eq!(rolled.sealed, None);
        assert_eq!(
            SegmentHeader::decode(&c).unwrap().prev_segment_id,
            resume.segment_id
        );
    }

    #[test]
    fn config_limits() {
        let bad = WriterConfig {
            segment_len: LEN,
            record_body_len_max: LEN,
            log_id: 0,
        };
        let Err(ConfigError::OutOfRange { field, max, .. }) = bad.validate() else {
            panic!("accepted a body that cannot fit");
        };
        assert_eq!(field, "writer.record_body_len_max");
        assert_eq!(
            record_len(usize::try_from(max).unwrap()) + 64 + 24,
            LEN,
            "largest body that fits with an END record"
        );
        let bad = WriterConfig {
            segment_len: 5000,
            ..config()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::NotMultiple { .. })
        ));
    }
}
