//! Errors of the wire layer. Every failure to decode bytes from a peer is a variant here, and
//! every variant maps to the [`CloseReason`] the session sends before it drops the connection
//! (as rustls maps its errors to TLS alerts).

use crate::codes::CloseReason;

/// Why bytes from a peer are not a valid frame. Returned by the decoder and by
/// [`crate::Header::validate`]; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame does not start with "MS".
    #[error("bad magic {found:02x?}, expected \"MS\" (4d 53)")]
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// The peer speaks a wire version this build does not.
    #[error("unsupported wire version {found}, this node speaks {supported}")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Version this node speaks.
        supported: u8,
    },
    /// The kind byte names no frame kind of this version.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// Kind byte found.
        found: u8,
    },
    /// Flag bits this version does not define are set.
    #[error("unknown flag bits {unknown:#06x} in flags {bits:#06x}")]
    UnknownFlags {
        /// All flag bits.
        bits: u16,
        /// The undefined ones.
        unknown: u16,
    },
    /// The announced body exceeds the negotiated maximum frame length.
    #[error("body of {body_len} bytes exceeds the limit of {max_body_len}")]
    BodyTooLong {
        /// Announced body length.
        body_len: u32,
        /// Largest body allowed.
        max_body_len: u32,
    },
    /// `meta_len` is larger than the whole body.
    #[error("meta_len {meta_len} is larger than body_len {body_len}")]
    MetaLongerThanBody {
        /// Announced metadata length.
        meta_len: u16,
        /// Announced body length.
        body_len: u32,
    },
    /// `meta_len` exceeds the metadata limit.
    #[error("meta_len {meta_len} exceeds the limit of {max_meta_len}")]
    MetaTooLong {
        /// Announced metadata length.
        meta_len: u16,
        /// Largest metadata allowed.
        max_meta_len: u32,
    },
    /// `HAS_META` is set without metadata, or metadata is present without `HAS_META`.
    #[error("HAS_META flag is {has_meta_flag} but meta_len is {meta_len}")]
    MetaFlagMismatch {
        /// Whether the flag is set.
        has_meta_flag: bool,
        /// Announced metadata length.
        meta_len: u16,
    },
    /// `LAST_CHUNK` without `CHUNK`.
    #[error("LAST_CHUNK set without CHUNK")]
    LastChunkWithoutChunk,
    /// A non-zero `chunk_index` on a frame that is not a chunk.
    #[error("chunk_index {chunk_index} on a frame without the CHUNK flag")]
    ChunkIndexWithoutChunk {
        /// The index found.
        chunk_index: u16,
    },
    /// Fewer bytes than a header, or than the header announces (one-shot parsing only; the
    /// streaming decoder waits for more bytes instead).
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Bytes follow the frame where exactly one frame was expected (one-shot parsing only).
    #[error("{count} bytes after the frame")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The CBOR metadata does not decode.
    #[error("bad metadata: {0}")]
    Meta(#[from] MetaError),
}

impl DecodeError {
    /// The reason code a session sends in its CLOSE when it drops a peer for this error.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            DecodeError::BadMagic { .. } => CloseReason::BadMagic,
            DecodeError::UnsupportedVersion { .. } => CloseReason::UnsupportedVersion,
            DecodeError::UnknownKind { .. } | DecodeError::UnknownFlags { .. } => {
                CloseReason::UnknownKindOrFlags
            }
            DecodeError::BodyTooLong { .. } | DecodeError::MetaTooLong { .. } => {
                CloseReason::FrameTooLarge
            }
            DecodeError::MetaLongerThanBody { .. }
            | DecodeError::MetaFlagMismatch { .. }
            | DecodeError::LastChunkWithoutChunk
            | DecodeError::ChunkIndexWithoutChunk { .. }
            | DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. } => CloseReason::MalformedFrame,
            DecodeError::Meta(_) => CloseReason::BadMetadata,
        }
    }

    /// A short, stable label for metrics (`mesh_frames_rejected_total{reason=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecodeError::BadMagic { .. } => "bad_magic",
            DecodeError::UnsupportedVersion { .. } => "bad_version",
            DecodeError::UnknownKind { .. } => "unknown_kind",
            DecodeError::UnknownFlags { .. } => "unknown_flags",
            DecodeError::BodyTooLong { .. } => "body_too_long",
            DecodeError::MetaLongerThanBody { .. } => "meta_longer_than_body",
            DecodeError::MetaTooLong { .. } => "meta_too_long",
            DecodeError::MetaFlagMismatch { .. } => "meta_flag_mismatch",
            DecodeError::LastChunkWithoutChunk => "last_chunk_without_chunk",
            DecodeError::ChunkIndexWithoutChunk { .. } => "chunk_index_without_chunk",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::Meta(_) => "bad_metadata",
        }
    }
}

/// Why CBOR metadata is refused. Limits are checked before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The metadata is not well-formed CBOR of the expected shape.
    #[error("malformed CBOR at byte {position}: {what}")]
    Malformed {
        /// Byte offset in the metadata where decoding failed.
        position: usize,
        /// What was expected there.
        what: &'static str,
    },
    /// Encoded metadata is longer than allowed.
    #[error("metadata of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Encoded length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// More headers than allowed.
    #[error("{count} headers exceed the limit of {max}")]
    TooManyHeaders {
        /// Count announced.
        count: u64,
        /// Limit.
        max: usize,
    },
    /// More extension entries than allowed.
    #[error("{count} extensions exceed the limit of {max}")]
    TooManyExtensions {
        /// Count announced.
        count: u64,
        /// Limit.
        max: usize,
    },
    /// A string or byte field is longer than allowed.
    #[error("field {field} of {len} bytes exceeds the limit of {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// A key below 256 that this version does not define (keys of 256 and above are
    /// extensions and are kept opaque).
    #[error("unknown reserved metadata key {key}")]
    UnknownKey {
        /// The key.
        key: u64,
    },
    /// The same key appears twice.
    #[error("duplicate metadata key {key}")]
    DuplicateKey {
        /// The key.
        key: u64,
    },
    /// Indefinite-length items are not accepted (their size is not known before allocating).
    #[error("indefinite-length CBOR item at byte {position}")]
    IndefiniteLength {
        /// Byte offset.
        position: usize,
    },
    /// Bytes remain after the metadata map.
    #[error("{count} trailing bytes after the metadata map")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Why a message cannot be split into chunks or put back together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The message needs more chunks than a `u16` chunk index can number.
    #[error("message of {len} bytes needs {chunks} chunks, more than the {max} allowed")]
    TooManyChunks {
        /// Message length.
        len: usize,
        /// Chunks it would need.
        chunks: usize,
        /// Most chunks allowed.
        max: usize,
    },
    /// A chunk's index is beyond the last chunk already announced for its message.
    #[error("chunk {index} of message {msg_id} from {src_node} is beyond its last chunk {last}")]
    IndexBeyondLast {
        /// Source node.
        src_node: u64,
        /// Message id.
        msg_id: u64,
        /// Offending index.
        index: u16,
        /// Last index announced.
        last: u16,
    },
    /// Two chunks of one message claim different last indices.
    #[error("message {msg_id} from {src_node} announced last chunk {first} and then {second}")]
    ConflictingLast {
        /// Source node.
        src_node: u64,
        /// Message id.
        msg_id: u64,
        /// First announced last index.
        first: u16,
        /// Conflicting one.
        second: u16,
    },
    /// Holding this chunk would take the source over its reassembly budget.
    #[error(
        "source {src_node} would hold {would_hold} bytes in reassembly, over its limit of {limit}"
    )]
    SourceOverBudget {
        /// Source node.
        src_node: u64,
        /// Bytes the source would hold.
        would_hold: usize,
        /// Per-source limit.
        limit: usize,
    },
    /// Holding this chunk would take all sources together over the node's reassembly budget.
    #[error("reassembly would hold {would_hold} bytes, over the node's limit of {limit}")]
    TotalOverBudget {
        /// Bytes all sources would hold.
        would_hold: usize,
        /// Node-wide limit.
        limit: usize,
    },
    /// The source already has as many incomplete messages as it may.
    #[error("source {src_node} already has {count} incomplete messages, the limit")]
    TooManyPending {
        /// Source node.
        src_node: u64,
        /// Its incomplete messages.
        count: usize,
    },
    /// The reassembled message would exceed the maximum message size.
    #[error("message {msg_id} from {src_node} would exceed {max} bytes")]
    MessageTooLarge {
        /// Source node.
        src_node: u64,
        /// Message id.
        msg_id: u64,
        /// Maximum message size.
        max: usize,
    },
    /// The frame given to the reassembler is not a chunk.
    #[error("frame is not a chunk")]
    NotAChunk,
}

/// Why a [`crate::Limits`] value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `max_frame_len` is outside `[min, max]`.
    #[error("max_frame_len {value} is outside [{min}, {max}]")]
    FrameLenOutOfRange {
        /// Value given.
        value: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed (the hard cap).
        max: u32,
    },
    /// `max_meta_len` does not fit in a frame of `max_frame_len`, or exceeds what `meta_len`
    /// can express.
    #[error("max_meta_len {value} is larger than {max}")]
    MetaLenTooLarge {
        /// Value given.
        value: u32,
        /// Largest allowed.
        max: u32,
    },
}

/// Why a frame cannot be built. The encoder checks its output with the same validation the
/// decoder applies, so mesh never sends a frame it would itself refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Header + metadata + payload exceed the frame limit: chunk the message instead.
    #[error("frame of {frame_len} bytes exceeds the limit of {max_frame_len}; chunk it")]
    FrameTooLarge {
        /// Length the frame would have.
        frame_len: usize,
        /// Limit.
        max_frame_len: u32,
    },
    /// The metadata could not be encoded within its limits.
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    /// The envelope's fields are inconsistent (e.g. `LAST_CHUNK` without `CHUNK`).
    #[error("inconsistent envelope: {0}")]
    Invalid(#[from] DecodeError),
}
