//! The byte format of a WAL segment: the segment header, the records, their bodies, and the
//! encoder that copies a record into a mapped segment.
//!
//! All integers are little-endian (the WAL never leaves the machine; the wire format is
//! big-endian). `FORMAT.md` beside this crate repeats these tables.
//!
//! # Segment
//!
//! A segment is a preallocated file of `segment_len` bytes: a 64-byte header at offset 0, then
//! records from offset 64, each starting at a multiple of 8. Bytes after the last record are
//! zero (a fresh file) or stale records of an older generation of the file (a recycled one).
//!
//! ## Segment header (64 bytes)
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | magic | `4D 57 41 4C` ("MWAL") |
//! | 4 | 2 | format_version | 1 |
//! | 6 | 2 | header_len | 64 |
//! | 8 | 8 | segment_id | non-zero; strictly increasing over the life of the log, never reused |
//! | 16 | 8 | prev_segment_id | the segment that was active before this one; 0 for the first |
//! | 24 | 8 | first_seq | the sequence number the first record of this segment carries (>= 1) |
//! | 32 | 8 | reserved | zero |
//! | 40 | 8 | created_unix_us | creation time given by the shell (informational) |
//! | 48 | 4 | segment_len | length of the whole file in bytes, header included |
//! | 52 | 4 | log_id | which core's log this segment belongs to |
//! | 56 | 4 | reserved | zero |
//! | 60 | 4 | header_crc | CRC32C of bytes 0..60 |
//!
//! An all-zero header marks a file that holds no segment: never used, or recycled (the shell
//! zeroes the header of a recycled file, and syncs that, before reusing the file). The field
//! ranges are in [`header_field`].
//!
//! # Record (24-byte header + body, padded to a multiple of 8)
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | body_len | length of the body in bytes (<= [`RECORD_BODY_LEN_MAX`]) |
//! | 4 | 4 | crc | CRC32C of `segment_id` (8 bytes LE, not stored) ‖ bytes 0..4 ‖ bytes 8..24+body_len |
//! | 8 | 8 | seq | sequence number, >= 1, +1 per data record across the whole log of the core |
//! | 16 | 1 | kind | [`RecordKind`] |
//! | 17 | 1 | flags | zero in version 1 |
//! | 18 | 2 | reserved | zero |
//! | 20 | 4 | sync_lag | `seq - synced_seq` when written (0: no sync known); see [`Record::synced_seq`] |
//! | 24 | body_len | body | by kind, below |
//! | 24+body_len | 0..7 | padding | zero, to the next multiple of 8; not covered by the CRC |
//!
//! The CRC covers the segment id, so a stale record left in a recycled file (whose id has
//! changed) fails the check, and the sequence number, so a record cannot be replayed at another
//! position. `PADDING` and `END` records do not consume a sequence number: their `seq` is the
//! number the next data record will carry. A record whose 24 header bytes are all zero is
//! "unwritten" (seq 0 is never valid, so no valid record looks like that).
//!
//! ## Bodies
//!
//! | kind | value | body |
//! |---|---|---|
//! | MESSAGE | 1 | src_node u64, msg_id u64, then the frame (opaque here): an outbound message accepted from a local client |
//! | INBOUND | 2 | src_node u64, msg_id u64, then the frame: a message stored at its destination before DELIVERED is sent |
//! | DELIVERED | 3 | src_node u64, msg_id u64: the origin heard DELIVERED (settles a MESSAGE) |
//! | ACKED | 4 | src_node u64, msg_id u64: the destination application acked (settles an INBOUND) |
//! | DEDUP_CHECKPOINT | 5 | a [`crate::dedup`] snapshot |
//! | MSG_ID_RESERVATION | 6 | start u64, end u64 (exclusive): msg_ids reserved before use |
//! | PADDING | 254 | any bytes, skipped |
//! | END | 255 | empty: the segment holds nothing after this record |

use crate::msg_id::{MsgIdError, Reservation};

/// Records start at multiples of this many bytes, and every record length is rounded up to it.
pub const RECORD_ALIGN: usize = 8;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Hard cap on a record body: a 16 MiB frame (the wire's hard cap) plus room for our prefixes.
/// The encoder checks it before anything else; [`crate::writer`] applies a configured lower one.
pub const RECORD_BODY_LEN_MAX: usize = (16 << 20) + 4096;
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Smallest segment accepted.
pub const SEGMENT_LEN_MIN: usize = 4096;
/// Largest segment accepted (offsets fit in `u32`).
pub const SEGMENT_LEN_MAX: usize = 1 << 30;
/// Segment lengths are whole pages, so the shell can map them.
pub const SEGMENT_LEN_MULTIPLE: usize = 4096;
/// First four bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 4] = *b"MWAL";
/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the `(src_node, msg_id)` prefix of MESSAGE / INBOUND / DELIVERED / ACKED bodies.
pub const MSG_KEY_LEN: usize = 16;
/// Length of a MSG_ID_RESERVATION body.
pub const RESERVATION_LEN: usize = 16;

/// Byte ranges of the record header fields.
pub mod field {
    use core::ops::Range;
    /// `body_len`, u32.
    pub const BODY_LEN: Range<usize> = 0..4;
    /// `crc`, u32.
    pub const CRC: Range<usize> = 4..8;
    /// `seq`, u64.
    pub const SEQ: Range<usize> = 8..16;
    /// `kind`, u8.
    pub const KIND: usize = 16;
    /// `flags`, u8.
    pub const FLAGS: usize = 17;
    /// `reserved`, u16.
    pub const RESERVED: Range<usize> = 18..20;
    /// `sync_lag`, u32.
    pub const SYNC_LAG: Range<usize> = 20..24;
}

/// Byte ranges of the segment header fields.
pub mod header_field {
    use core::ops::Range;
    /// `magic`, 4 bytes.
    pub const MAGIC: Range<usize> = 0..4;
    /// `format_version`, u16.
    pub const VERSION: Range<usize> = 4..6;
    /// `header_len`, u16.
    pub const HEADER_LEN: Range<usize> = 6..8;
    /// `segment_id`, u64.
    pub const SEGMENT_ID: Range<usize> = 8..16;
    /// `prev_segment_id`, u64.
    pub const PREV_SEGMENT_ID: Range<usize> = 16..24;
    /// `first_seq`, u64.
    pub const FIRST_SEQ: Range<usize> = 24..32;
    /// reserved, 8 bytes, zero.
    pub const RESERVED_A: Range<usize> = 32..40;
    /// `created_unix_us`, u64.
    pub const CREATED_UNIX_US: Range<usize> = 40..48;
    /// `segment_len`, u32.
    pub const SEGMENT_LEN: Range<usize> = 48..52;
    /// `log_id`, u32.
    pub const LOG_ID: Range<usize> = 52..56;
    /// reserved, 4 bytes, zero.
    pub const RESERVED_B: Range<usize> = 56..60;
    /// `header_crc`, u32, over bytes 0..60.
    pub const CRC: Range<usize> = 60..64;
}

/// Length of a record with a body of `body_len` bytes, padding included (saturating: an
/// absurd `body_len` gives a length nothing can hold, never a panic).
pub const fn record_len(body_len: usize) -> usize {
    match RECORD_HEADER_LEN
        .saturating_add(body_len)
        .checked_next_multiple_of(RECORD_ALIGN)
    {
        Some(len) => len,
        None => usize::MAX,
    }
}

/// What a record is. The discriminant is the byte stored at offset 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// An outbound message accepted from a local client, to be delivered. Unsettled until a
    /// DELIVERED record names it.
    Message = 1,
    /// A message received at its destination, stored before DELIVERED is sent. Unsettled until
    /// an ACKED record names it.
    Inbound = 2,
    /// The origin heard DELIVERED for a message: the MESSAGE record can be released.
    Delivered = 3,
    /// The destination application acked a message: the INBOUND record can be released.
    Acked = 4,
    /// A snapshot of the dedup window.
    DedupCheckpoint = 5,
    /// A block of msg_ids reserved before any of them is handed out.
    MsgIdReservation = 6,
    /// Filler that readers skip; consumes no sequence number.
    Padding = 254,
    /// Marks the end of the segment's contents; consumes no sequence number.
    End = 255,
}

impl RecordKind {
    /// The kind stored as `raw`, if any.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => Self::Message,
            2 => Self::Inbound,
            3 => Self::Delivered,
            4 => Self::Acked,
            5 => Self::DedupCheckpoint,
            6 => Self::MsgIdReservation,
            254 => Self::Padding,
            255 => Self::End,
            _ => return None,
        })
    }

    /// The byte stored for this kind.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether this kind carries data and consumes a sequence number (everything but PADDING
    /// and END).
    pub const fn is_data(self) -> bool {
        !matches!(self, Self::Padding | Self::End)
    }
}

/// The identity of a message: its origin node and the msg_id the origin gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgKey {
    /// The node that accepted the message from a client.
    pub src_node: u64,
    /// Unique per `src_node`, never reused.
    pub msg_id: u64,
}

impl MsgKey {
    fn write(self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.src_node.to_le_bytes());
        out[8..16].copy_from_slice(&self.msg_id.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> Self {
        Self {
            src_node: read_u64(bytes, 0),
            msg_id: read_u64(bytes, 8),
        }
    }
}

/// The body of a data record, parsed: a value of this type always encodes to a valid body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// See [`RecordKind::Message`]. `frame` is the frame as it will go on the wire.
    Message {
        /// The message.
        key: MsgKey,
        /// The frame bytes, opaque to the WAL.
        frame: &'a [u8],
    },
    /// See [`RecordKind::Inbound`].
    Inbound {
        /// The message.
        key: MsgKey,
        /// The frame bytes, opaque to the WAL.
        frame: &'a [u8],
    },
    /// See [`RecordKind::Delivered`].
    Delivered {
        /// The MESSAGE this settles.
        key: MsgKey,
    },
    /// See [`RecordKind::Acked`].
    Acked {
        /// The INBOUND this settles.
        key: MsgKey,
    },
    /// See [`RecordKind::DedupCheckpoint`].
    DedupCheckpoint {
        /// A snapshot from [`crate::dedup::DedupWindow::encode_snapshot`].
        snapshot: &'a [u8],
    },
    /// See [`RecordKind::MsgIdReservation`].
    MsgIdReservation(Reservation),
}

impl<'a> Body<'a> {
    /// The kind stored for this body.
    pub const fn kind(&self) -> RecordKind {
        match self {
            Body::Message { .. } => RecordKind::Message,
            Body::Inbound { .. } => RecordKind::Inbound,
            Body::Delivered { .. } => RecordKind::Delivered,
            Body::Acked { .. } => RecordKind::Acked,
            Body::DedupCheckpoint { .. } => RecordKind::DedupCheckpoint,
            Body::MsgIdReservation(_) => RecordKind::MsgIdReservation,
        }
    }

    /// Encoded length of the body in bytes.
    pub const fn len(&self) -> usize {
        match self {
            Body::Message { frame, .. } | Body::Inbound { frame, .. } => MSG_KEY_LEN + frame.len(),
            Body::Delivered { .. } | Body::Acked { .. } => MSG_KEY_LEN,
            Body::DedupCheckpoint { snapshot } => snapshot.len(),
            Body::MsgIdReservation(_) => RESERVATION_LEN,
        }
    }

    /// Whether the encoded body is empty (only an empty dedup snapshot is).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the body into `out`, which is exactly [`Body::len`] bytes long. This is the one
    /// copy of a frame into the mapping.
    fn write(&self, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.len());
        match self {
            Body::Message { key, frame } | Body::Inbound { key, frame } => {
                key.write(&mut out[..MSG_KEY_LEN]);
                out[MSG_KEY_LEN..].copy_from_slice(frame);
            }
            Body::Delivered { key } | Body::Acked { key } => key.write(out),
            Body::DedupCheckpoint { snapshot } => out.copy_from_slice(snapshot),
            Body::MsgIdReservation(reservation) => {
                out[0..8].copy_from_slice(&reservation.start().to_le_bytes());
                out[8..16].copy_from_slice(&reservation.end().to_le_bytes());
            }
        }
    }

    /// Parses the body of a data record of `kind`.
    pub fn parse(kind: RecordKind, bytes: &'a [u8]) -> Result<Self, BodyError> {
        let len = bytes.len();
        let exact = |expected: usize| {
            if len == expected {
                Ok(())
            } else {
                Err(BodyError::LenMismatch {
                    kind,
                    expected,
                    len,
                })
            }
        };
        let at_least = |min: usize| {
            if len >= min {
                Ok(())
            } else {
                Err(BodyError::TooShort { kind, min, len })
            }
        };
        Ok(match kind {
            RecordKind::Message => {
                at_least(MSG_KEY_LEN)?;
                Body::Message {
                    key: MsgKey::read(bytes),
                    frame: &bytes[MSG_KEY_LEN..],
                }
            }
            RecordKind::Inbound => {
                at_least(MSG_KEY_LEN)?;
                Body::Inbound {
                    key: MsgKey::read(bytes),
                    frame: &bytes[MSG_KEY_LEN..],
                }
            }
            RecordKind::Delivered => {
                exact(MSG_KEY_LEN)?;
                Body::Delivered {
                    key: MsgKey::read(bytes),
                }
            }
            RecordKind::Acked => {
                exact(MSG_KEY_LEN)?;
                Body::Acked {
                    key: MsgKey::read(bytes),
                }
            }
            RecordKind::DedupCheckpoint => Body::DedupCheckpoint { snapshot: bytes },
            RecordKind::MsgIdReservation => {
                exact(RESERVATION_LEN)?;
                let reservation = Reservation::new(read_u64(bytes, 0), read_u64(bytes, 8))
                    .map_err(BodyError::Reservation)?;
                Body::MsgIdReservation(reservation)
            }
            RecordKind::Padding | RecordKind::End => return Err(BodyError::NotData { kind }),
        })
    }
}

/// A data record as read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Sequence number: +1 per data record across the log, never reused.
    pub seq: u64,
    /// The highest sequence number the writer knew to be synced when it wrote this record
    /// (`None`: no sync known). Recovery uses it to tell a hole left by a crash before a sync
    /// from corruption of synced data ([`crate::recovery::TailPolicy::TruncateUnsynced`]).
    pub synced_seq: Option<u64>,
    /// The parsed body.
    pub body: Body<'a>,
}

/// What a record position holds, once its checksum has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A data record.
    Data(Record<'a>),
    /// Filler; `next_seq` is the sequence number of the next data record.
    Padding {
        /// Sequence number of the next data record.
        next_seq: u64,
    },
    /// End of the segment's contents; `next_seq` is the sequence number of the next data record
    /// (in the next segment).
    End {
        /// Sequence number of the next data record.
        next_seq: u64,
    },
}

impl Entry<'_> {
    /// The sequence number stored in the record.
    pub const fn seq(&self) -> u64 {
        match self {
            Entry::Data(record) => record.seq,
            Entry::Padding { next_seq } | Entry::End { next_seq } => *next_seq,
        }
    }
}

/// Why a body is not valid for its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is shorter than the kind's fixed prefix.
    #[error("{kind:?} body is {len} bytes, needs at least {min}")]
    TooShort {
        /// The record kind.
        kind: RecordKind,
        /// Minimum body length for the kind.
        min: usize,
        /// Actual body length.
        len: usize,
    },
    /// The body of a fixed-size kind has the wrong length.
    #[error("{kind:?} body is {len} bytes, must be {expected}")]
    LenMismatch {
        /// The record kind.
        kind: RecordKind,
        /// Required body length.
        expected: usize,
        /// Actual body length.
        len: usize,
    },
    /// PADDING and END have no data body.
    #[error("{kind:?} is not a data record")]
    NotData {
        /// The record kind.
        kind: RecordKind,
    },
    /// A MSG_ID_RESERVATION names an invalid range.
    #[error("invalid msg_id reservation: {0}")]
    Reservation(MsgIdError),
}

/// What was found at a record position whose checksum does not pass: the bytes a crash can
/// leave behind (a torn tail) or corruption, depending on what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    /// The 24 header bytes are zero: nothing was written here.
    #[error("unwritten (zero) record header")]
    Unwritten,
    /// `body_len` is over the hard cap.
    #[error("body_len {body_len} over the limit {limit}")]
    BodyLenOverLimit {
        /// The stored length.
        body_len: usize,
        /// [`RECORD_BODY_LEN_MAX`].
        limit: usize,
    },
    /// The record would extend past the end of the segment.
    #[error("record of {record_len} bytes, only {available} left in the segment")]
    BeyondEnd {
        /// Record length implied by `body_len`, padding included.
        record_len: usize,
        /// Bytes from the record's offset to the end of the segment.
        available: usize,
    },
    /// The stored CRC does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the record and the segment id.
        computed: u32,
    },
}

/// A record whose checksum passes but whose contents are not valid. A crash cannot produce
/// this (the checksum proves the writer wrote it), so it is always reported, wherever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The kind byte names no [`RecordKind`].
    #[error("unknown kind {raw}")]
    UnknownKind {
        /// The stored byte.
        raw: u8,
    },
    /// Flags or reserved bytes are not zero (written by a newer format version?).
    #[error("flags {flags:#04x} / reserved {reserved:#06x} must be zero")]
    ReservedSet {
        /// The stored flags byte.
        flags: u8,
        /// The stored reserved u16.
        reserved: u16,
    },
    /// Sequence number 0 is never written.
    #[error("sequence number 0")]
    SeqZero,
    /// An END record with a body.
    #[error("END record with a {len}-byte body")]
    EndWithBody {
        /// The stored body length.
        len: usize,
    },
    /// The body does not parse for its kind.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Why a record could not be encoded. Nothing has been written when this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The body is over the limit; checked before anything else.
    #[error("record body of {len} bytes over the limit {limit}")]
    BodyTooLarge {
        /// Body length asked for.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Records start at multiples of [`RECORD_ALIGN`].
    #[error("offset {offset} is not a multiple of {align}")]
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// [`RECORD_ALIGN`].
        align: usize,
    },
    /// The record does not fit between `offset` and the end of the buffer: roll to the next
    /// segment.
    #[error("record of {needed} bytes does not fit at offset {offset}: {available} left")]
    DoesNotFit {
        /// The offset asked for.
        offset: usize,
        /// Record length, padding included.
        needed: usize,
        /// Bytes left from `offset` to the end of the buffer (0 if `offset` is past it).
        available: usize,
    },
    /// Sequence number 0 is reserved (an all-zero header means "unwritten").
    #[error("sequence number 0 is reserved")]
    SeqZero,
    /// Segment id 0 is reserved ("no segment").
    #[error("segment id 0 is reserved")]
    SegmentIdZero,
    /// A segment header that would not decode.
    #[error("invalid segment header: {0}")]
    Header(#[from] HeaderError),
}

/// Why a segment header does not decode (or would not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    #[error("segment of {len} bytes, header needs {needed}")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// [`SEGMENT_HEADER_LEN`].
        needed: usize,
    },
    /// Not a segment of this format.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Written by another format version.
    #[error("format version {found}, this build reads {supported}")]
    UnsupportedVersion {
        /// Stored version.
        found: u16,
        /// [`FORMAT_VERSION`].
        supported: u16,
    },
    /// The stored header length is not [`SEGMENT_HEADER_LEN`].
    #[error("header_len {found}, expected {expected}")]
    HeaderLenMismatch {
        /// Stored header length.
        found: u16,
        /// [`SEGMENT_HEADER_LEN`].
        expected: u16,
    },
    /// The header checksum does not match.
    #[error("header crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// Segment id 0 is reserved.
    #[error("segment id 0 is reserved")]
    SegmentIdZero,
    /// The previous segment must have a smaller id.
    #[error("prev_segment_id {prev} is not below segment_id {segment_id}")]
    PrevNotBelow {
        /// This segment's id.
        segment_id: u64,
        /// The stored previous id.
        prev: u64,
    },
    /// Sequence numbers start at 1.
    #[error("first_seq 0 is reserved")]
    FirstSeqZero,
    /// `segment_len` out of bounds or not a whole number of pages.
    #[error(
        "segment_len {len} must be in {SEGMENT_LEN_MIN}..={SEGMENT_LEN_MAX} and a multiple of {SEGMENT_LEN_MULTIPLE}"
    )]
    SegmentLen {
        /// The stored or requested length.
        len: usize,
    },
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    ReservedSet,
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// This segment's id: non-zero, larger than every id used before in this log.
    pub segment_id: u64,
    /// The segment that was active before this one (0 for the first segment of the log).
    pub prev_segment_id: u64,
    /// Sequence number of the first record of this segment.
    pub first_seq: u64,
    /// Creation time, microseconds since the Unix epoch, as the shell gave it.
    pub created_unix_us: u64,
    /// Length of the whole segment file in bytes.
    pub segment_len: u32,
    /// The log (core) this segment belongs to.
    pub log_id: u32,
}

impl SegmentHeader {
    /// Checks the fields a header must satisfy to decode.
    fn validate(&self) -> Result<(), HeaderError> {
        if self.segment_id == 0 {
            return Err(HeaderError::SegmentIdZero);
        }
        if self.prev_segment_id >= self.segment_id {
            return Err(HeaderError::PrevNotBelow {
                segment_id: self.segment_id,
                prev: self.prev_segment_id,
            });
        }
        if self.first_seq == 0 {
            return Err(HeaderError::FirstSeqZero);
        }
        let len = usize_from_u32(self.segment_len);
        if !(SEGMENT_LEN_MIN..=SEGMENT_LEN_MAX).contains(&len)
            || !len.is_multiple_of(SEGMENT_LEN_MULTIPLE)
        {
            return Err(HeaderError::SegmentLen { len });
        }
        Ok(())
    }

    /// Writes the header into the first [`SEGMENT_HEADER_LEN`] bytes of `segment`.
    pub fn encode(&self, segment: &mut [u8]) -> Result<(), EncodeError> {
        self.validate()?;
        let Some(out) = segment.get_mut(..SEGMENT_HEADER_LEN) else {
            return Err(HeaderError::TooShort {
                len: segment.len(),
                needed: SEGMENT_HEADER_LEN,
            }
            .into());
        };
        out.fill(0);
        out[header_field::MAGIC].copy_from_slice(&SEGMENT_MAGIC);
        out[header_field::VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[header_field::HEADER_LEN].copy_from_slice(&SEGMENT_HEADER_LEN_U16.to_le_bytes());
        out[header_field::SEGMENT_ID].copy_from_slice(&self.segment_id.to_le_bytes());
        out[header_field::PREV_SEGMENT_ID].copy_from_slice(&self.prev_segment_id.to_le_bytes());
        out[header_field::FIRST_SEQ].copy_from_slice(&self.first_seq.to_le_bytes());
        out[header_field::CREATED_UNIX_US].copy_from_slice(&self.created_unix_us.to_le_bytes());
        out[header_field::SEGMENT_LEN].copy_from_slice(&self.segment_len.to_le_bytes());
        out[header_field::LOG_ID].copy_from_slice(&self.log_id.to_le_bytes());
        let crc = crc32c::crc32c(&out[..header_field::CRC.start]);
        out[header_field::CRC].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Decodes and validates the header at the start of `segment`. Never panics.
    pub fn decode(segment: &[u8]) -> Result<Self, HeaderError> {
        let Some(raw) = segment.get(..SEGMENT_HEADER_LEN) else {
            return Err(HeaderError::TooShort {
                len: segment.len(),
                needed: SEGMENT_HEADER_LEN,
            });
        };
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&raw[header_field::MAGIC]);
        if magic != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let stored = read_u32(raw, header_field::CRC.start);
        let computed = crc32c::crc32c(&raw[..header_field::CRC.start]);
        if stored != computed {
            return Err(HeaderError::ChecksumMismatch { stored, computed });
        }
        let version = read_u16(raw, header_field::VERSION.start);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = read_u16(raw, header_field::HEADER_LEN.start);
        if header_len != SEGMENT_HEADER_LEN_U16 {
            return Err(HeaderError::HeaderLenMismatch {
                found: header_len,
                expected: SEGMENT_HEADER_LEN_U16,
            });
        }
        if raw[header_field::RESERVED_A].iter().any(|&b| b != 0)
            || raw[header_field::RESERVED_B].iter().any(|&b| b != 0)
        {
            return Err(HeaderError::ReservedSet);
        }
        let header = SegmentHeader {
            segment_id: read_u64(raw, header_field::SEGMENT_ID.start),
            prev_segment_id: read_u64(raw, header_field::PREV_SEGMENT_ID.start),
            first_seq: read_u64(raw, header_field::FIRST_SEQ.start),
            created_unix_us: read_u64(raw, header_field::CREATED_UNIX_US.start),
            segment_len: read_u32(raw, header_field::SEGMENT_LEN.start),
            log_id: read_u32(raw, header_field::LOG_ID.start),
        };
        header.validate()?;
        Ok(header)
    }

    /// Whether the first [`SEGMENT_HEADER_LEN`] bytes are all zero (a file holding no segment).
    pub fn is_zeroed(segment: &[u8]) -> bool {
        segment
            .get(..SEGMENT_HEADER_LEN)
            .is_some_and(|raw| raw.iter().all(|&b| b == 0))
    }
}

#[allow(clippy::cast_possible_truncation)] // 64 fits in u16.
const SEGMENT_HEADER_LEN_U16: u16 = SEGMENT_HEADER_LEN as u16;

/// A typed view of one record at the start of `buffer` (smoltcp style). Once
/// [`RecordView::new_checked`] succeeds, no accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RecordView<T> {
    /// Checks that `buffer` holds a whole header and the body its `body_len` announces
    /// (padding excluded). Does not check the CRC.
    pub fn new_checked(buffer: T) -> Result<Self, BadRecord> {
        let bytes = buffer.as_ref();
        let available = bytes.len();
        if available < RECORD_HEADER_LEN {
            return Err(if bytes.iter().all(|&b| b == 0) {
                BadRecord::Unwritten
            } else {
                BadRecord::BeyondEnd {
                    record_len: RECORD_HEADER_LEN,
                    available,
                }
            });
        }
        if bytes[..RECORD_HEADER_LEN].iter().all(|&b| b == 0) {
            return Err(BadRecord::Unwritten);
        }
        let body_len = usize_from_u32(read_u32(bytes, field::BODY_LEN.start));
        if body_len > RECORD_BODY_LEN_MAX {
            return Err(BadRecord::BodyLenOverLimit {
                body_len,
                limit: RECORD_BODY_LEN_MAX,
            });
        }
        let record_len = record_len(body_len);
        if record_len > available {
            return Err(BadRecord::BeyondEnd {
                record_len,
                available,
            });
        }
        Ok(Self { buffer })
    }

    /// Body length in bytes.
    pub fn body_len(&self) -> usize {
        usize_from_u32(read_u32(self.buffer.as_ref(), field::BODY_LEN.start))
    }

    /// Record length, padding included: the next record starts this many bytes further.
    pub fn record_len(&self) -> usize {
        record_len(self.body_len())
    }

    /// The stored CRC.
    pub fn stored_crc(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CRC.start)
    }

    /// The CRC the record should carry in segment `segment_id`.
    pub fn computed_crc(&self, segment_id: u64) -> u32 {
        let bytes = self.buffer.as_ref();
        let crc = crc32c::crc32c(&segment_id.to_le_bytes());
        let crc = crc32c::crc32c_append(crc, &bytes[field::BODY_LEN]);
        crc32c::crc32c_append(
            crc,
            &bytes[field::SEQ.start..RECORD_HEADER_LEN + self.body_len()],
        )
    }

    /// The stored sequence number.
    pub fn seq(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SEQ.start)
    }

    /// The stored kind byte.
    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// The stored flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The stored reserved u16.
    pub fn reserved(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::RESERVED.start)
    }

    /// The stored `sync_lag`.
    pub fn sync_lag(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SYNC_LAG.start)
    }

    /// The synced sequence number implied by `sync_lag` (`None` when unknown).
    pub fn synced_seq(&self) -> Option<u64> {
        let lag = self.sync_lag();
        if lag == 0 {
            None
        } else {
            self.seq().checked_sub(u64::from(lag))
        }
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[RECORD_HEADER_LEN..RECORD_HEADER_LEN + self.body_len()]
    }

    /// Checks the CRC against `segment_id`.
    pub fn check_crc(&self, segment_id: u64) -> Result<(), BadRecord> {
        let stored = self.stored_crc();
        let computed = self.computed_crc(segment_id);
        if stored == computed {
            Ok(())
        } else {
            Err(BadRecord::ChecksumMismatch { stored, computed })
        }
    }
}

impl<'a> RecordView<&'a [u8]> {
    /// The body bytes, borrowed from the underlying buffer rather than from the view.
    pub fn body_slice(&self) -> &'a [u8] {
        let buffer: &'a [u8] = self.buffer;
        &buffer[RECORD_HEADER_LEN..RECORD_HEADER_LEN + self.body_len()]
    }

    /// Interprets a record whose CRC has passed.
    pub fn entry(&self) -> Result<Entry<'a>, InvalidRecord> {
        let seq = self.seq();
        if seq == 0 {
            return Err(InvalidRecord::SeqZero);
        }
        let (flags, reserved) = (self.flags(), self.reserved());
        if flags != 0 || reserved != 0 {
            return Err(InvalidRecord::ReservedSet { flags, reserved });
        }
        let raw = self.kind_raw();
        let kind = RecordKind::from_u8(raw).ok_or(InvalidRecord::UnknownKind { raw })?;
        Ok(match kind {
            RecordKind::Padding => Entry::Padding { next_seq: seq },
            RecordKind::End => {
                let len = self.body_len();
                if len != 0 {
                    return Err(InvalidRecord::EndWithBody { len });
                }
                Entry::End { next_seq: seq }
            }
            _ => Entry::Data(Record {
                seq,
                synced_seq: self.synced_seq(),
                body: Body::parse(kind, self.body_slice())?,
            }),
        })
    }
}

/// Why [`decode_at`] could not return a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The offset is not a record boundary or lies outside the segment.
    #[error("offset {offset} is not a record position in a segment of {len} bytes")]
    BadOffset {
        /// The offset asked for.
        offset: usize,
        /// The segment length.
        len: usize,
    },
    /// Torn or corrupt bytes.
    #[error(transparent)]
    Bad(#[from] BadRecord),
    /// A checksummed record with invalid contents.
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
}

/// Decodes and checks the record at `offset` of a segment with id `segment_id`, returning it
/// and the offset of the next record. Used to read back a record the tracker points at (to
/// relocate it). Never panics.
pub fn decode_at(
    segment: &[u8],
    offset: usize,
    segment_id: u64,
) -> Result<(Entry<'_>, usize), DecodeError> {
    if !offset.is_multiple_of(RECORD_ALIGN) || offset < SEGMENT_HEADER_LEN || offset > segment.len()
    {
        return Err(DecodeError::BadOffset {
            offset,
            len: segment.len(),
        });
    }
    let view = RecordView::new_checked(&segment[offset..])?;
    view.check_crc(segment_id)?;
    let next = offset + view.record_len();
    let view = RecordView {
        buffer: &segment[offset..next],
    };
    Ok((view.entry()?, next))
}

/// `sync_lag` to store for a record `seq` written when `synced_seq` was the highest synced
/// sequence number (0 = unknown; also used when the distance does not fit).
fn sync_lag(seq: u64, synced_seq: u64) -> u32 {
    if synced_seq == 0 || synced_seq >= seq {
        return 0;
    }
    u32::try_from(seq - synced_seq).unwrap_or(0)
}

/// Checks limit, alignment and room, then returns the slice of `buf` the record will occupy.
fn reserve(
    buf: &mut [u8],
    offset: usize,
    body_len: usize,
    limit: usize,
) -> Result<&mut [u8], EncodeError> {
    if body_len > limit {
        return Err(EncodeError::BodyTooLarge {
            len: body_len,
            limit,
        });
    }
    if !offset.is_multiple_of(RECORD_ALIGN) {
        return Err(EncodeError::Misaligned {
            offset,
            align: RECORD_ALIGN,
        });
    }
    let needed = record_len(body_len);
    let available = buf.len().saturating_sub(offset);
    if needed > available {
        return Err(EncodeError::DoesNotFit {
            offset,
            needed,
            available,
        });
    }
    Ok(&mut buf[offset..offset + needed])
}

/// Writes the header fields and CRC of a record whose body is already in place.
fn seal(
    out: &mut [u8],
    segment_id: u64,
    seq: u64,
    synced_seq: u64,
    kind: RecordKind,
    body_len: usize,
) {
    let body_len_u32 = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[field::BODY_LEN].copy_from_slice(&body_len_u32.to_le_bytes());
    out[field::SEQ].copy_from_slice(&seq.to_le_bytes());
    out[field::KIND] = kind.as_u8();
    out[field::FLAGS] = 0;
    out[field::RESERVED].fill(0);
    out[field::SYNC_LAG].copy_from_slice(&sync_lag(seq, synced_seq).to_le_bytes());
    out[RECORD_HEADER_LEN + body_len..].fill(0);
    let view = RecordView { buffer: &*out };
    let crc = view.computed_crc(segment_id);
    out[field::CRC].copy_from_slice(&crc.to_le_bytes());
}

fn check_ids(segment_id: u64, seq: u64) -> Result<(), EncodeError> {
    if segment_id == 0 {
        return Err(EncodeError::SegmentIdZero);
    }
    if seq == 0 {
        return Err(EncodeError::SeqZero);
    }
    Ok(())
}

/// Encodes a data record into `buf` at `offset` and returns the offset of the next record.
///
/// `buf` is the whole segment mapping (offsets are segment offsets); `synced_seq` is the highest
/// sequence number the commit machine has seen synced (0 if none). The body limit
/// [`RECORD_BODY_LEN_MAX`] is checked before anything else; if the record does not fit,
/// [`EncodeError::DoesNotFit`] is returned, nothing is written, and the caller rolls to the next
/// segment. The body is copied once, straight into `buf`.
pub fn encode_record(
    buf: &mut [u8],
    offset: usize,
    segment_id: u64,
    seq: u64,
    synced_seq: u64,
    body: &Body<'_>,
) -> Result<usize, EncodeError> {
    encode_record_limited(
        buf,
        offset,
        segment_id,
        seq,
        synced_seq,
        body,
        RECORD_BODY_LEN_MAX,
    )
}

/// [`encode_record`] with a body limit lower than the hard cap.
pub(crate) fn encode_record_limited(
    buf: &mut [u8],
    offset: usize,
    segment_id: u64,
    seq: u64,
    synced_seq: u64,
    body: &Body<'_>,
    limit: usize,
) -> Result<usize, EncodeError> {
    let body_len = body.len();
    let limit = limit.min(RECORD_BODY_LEN_MAX);
    if body_len > limit {
        return Err(EncodeError::BodyTooLarge {
            len: body_len,
            limit,
        });
    }
    check_ids(segment_id, seq)?;
    let out = reserve(buf, offset, body_len, limit)?;
    let needed = out.len();
    body.write(&mut out[RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len]);
    seal(out, segment_id, seq, synced_seq, body.kind(), body_len);
    Ok(offset + needed)
}

/// Encodes an END record (no body) at `offset`; `next_seq` is the sequence number of the next
/// data record. Returns the offset after it.
pub fn encode_end(
    buf: &mut [u8],
    offset: usize,
    segment_id: u64,
    next_seq: u64,
    synced_seq: u64,
) -> Result<usize, EncodeError> {
    check_ids(segment_id, next_seq)?;
    let out = reserve(buf, offset, 0, RECORD_BODY_LEN_MAX)?;
    let needed = out.len();
    seal(out, segment_id, next_seq, synced_seq, RecordKind::End, 0);
    Ok(offset + needed)
}

/// Encodes a PADDING record of exactly `padded_len` bytes (a multiple of [`RECORD_ALIGN`], at
/// least [`RECORD_HEADER_LEN`]) at `offset`, e.g. to move the next record to a page boundary.
pub fn encode_padding(
    buf: &mut [u8],
    offset: usize,
    segment_id: u64,
    next_seq: u64,
    padded_len: usize,
) -> Result<usize, EncodeError> {
    let body_len = padded_len.saturating_sub(RECORD_HEADER_LEN);
    if body_len > RECORD_BODY_LEN_MAX {
        return Err(EncodeError::BodyTooLarge {
            len: body_len,
            limit: RECORD_BODY_LEN_MAX,
        });
    }
    if record_len(body_len) != padded_len {
        return Err(EncodeError::Misaligned {
            offset: padded_len,
            align: RECORD_ALIGN,
        });
    }
    check_ids(segment_id, next_seq)?;
    let out = reserve(buf, offset, body_len, RECORD_BODY_LEN_MAX)?;
    out[RECORD_HEADER_LEN..].fill(0);
    seal(out, segment_id, next_seq, 0, RecordKind::Padding, body_len);
    Ok(offset + padded_len)
}

pub(crate) fn usize_from_u32(value: u32) -> usize {
    // Lossless: this crate requires a target with at least 32-bit pointers.
    value as usize
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(raw)
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests;
