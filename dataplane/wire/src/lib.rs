//! The mesh wire format (SPEC §3), as a sans-IO library.
//!
//! Every frame is a fixed 48-byte [`Header`] followed by `meta_len` bytes of CBOR
//! [`Metadata`] and the payload. This crate owns:
//!
//! - [`header`]: the header as a `zerocopy` type, read and written in place;
//! - [`kind`]: frame kinds and flags, closed sets where unknown values are errors;
//! - [`frame`]: a checked [`Frame`] view over any buffer, and the [`Envelope`] of its fields;
//! - [`decoder`]: the streaming [`Decoder`] that turns bytes arriving in any split into frames
//!   without copying payloads, checking every length before making room for it;
//! - [`pool`]: where the decoder's read buffers come from: the heap, or a core's bounded
//!   [`BufPool`] that recycles them once every frame split off them is gone;
//! - [`encode`]: [`encode_frame`] producing header, metadata and payload as slices for one
//!   vectored write;
//! - [`chunk`] and [`reassembly`]: splitting large messages and putting them back together
//!   under memory bounds;
//! - [`meta`]: the CBOR metadata map with its size bounds;
//! - [`codes`]: CLOSE and NACK reason codes; [`error`]: the typed errors.
//!
//! No I/O, no runtime, no clocks (time is an argument), no `unsafe`. The data plane drives it.
//! The byte-level contract is in `docs/wire.md`.

#![forbid(unsafe_code)]

pub mod chunk;
pub mod codes;
pub mod decoder;
pub mod encode;
pub mod error;
pub mod frame;
pub mod header;
pub mod kind;
pub mod limits;
pub mod meta;
pub mod pool;
pub mod reassembly;

pub use chunk::{ChunkMessageError, Chunks, MAX_CHUNKS, chunk_message};
pub use codes::{CloseReason, NackReason};
pub use decoder::Decoder;
pub use encode::{OutFrame, encode_frame, encode_frame_with_meta};
pub use error::{ChunkError, DecodeError, EncodeError, LimitsError, MetaError};
pub use frame::{Envelope, Frame};
pub use header::{DEFAULT_TTL, HEADER_LEN, Header, MAGIC, VERSION};
pub use kind::{Flags, FrameKind};
pub use limits::{DEFAULT_MAX_FRAME_LEN, Limits, MAX_FRAME_LEN_HARD_CAP};
pub use meta::{IDEMPOTENCY_KEY_MAX, MetaLimits, Metadata};
pub use pool::{BufPool, BufPoolConfig, BufPoolStats, BufferSource, HeapBuffers, PoolHandle};
pub use reassembly::{ChunkOutcome, Message, Reassembler, ReassemblyLimits};
