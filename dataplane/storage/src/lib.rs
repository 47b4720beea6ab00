//! Storage shell of one data-plane core: the backend trait of SPEC §5 and its `memory`,
//! `file` and `redis` backends.
//!
//! The protocol logic of the write-ahead log (record format, recovery, group commit, segment
//! lifecycle, dedup window, msg_id reservations) lives in the sans-IO crate `mesh-wal`. This
//! crate gives it real files and a completion model an engine core can drive without blocking:
//!
//! | module | owns |
//! |---|---|
//! | [`Storage`] (here) | the one trait every backend implements |
//! | [`durable`] | tickets, the durable watermark, the [`WaitDurable`] / [`WaitProgress`] futures |
//! | [`error`] | [`StorageError`], the crate's error boundary |
//! | [`memory`] | [`MemoryStorage`]: same semantics, nothing survives the process |
//! | [`mod@file`] | [`FileStorage`]: preallocated, mapped segment files, fdatasync through io_uring |
//! | [`mod@redis`] | [`RedisStorage`]: the core's state in a Redis server, so a replacement node can take over |
//!
//! # Completion model
//!
//! Every mutating call is synchronous and cheap: it copies the record into the log (the
//! mapping, for `file`) and returns a [`Ticket`] (the record's sequence number). Durability is
//! reported separately: [`Storage::durable`] is the watermark (every ticket at or below it is
//! durable), [`Storage::wait_durable`] a future that resolves once a ticket is. The
//! `file` backend runs one driver task on the caller's glommio executor that issues the
//! `fdatasync`s the group-commit machine asks for, through io_uring; nothing blocks the thread.
//! The `redis` backend's driver task hands writes to a dedicated I/O thread that owns the
//! Redis connection, and advances the watermark only when Redis confirmed them.
//! See `README.md` for how an engine core drives it.
#![deny(unsafe_code)]

pub mod durable;
pub mod error;
pub mod file;
pub mod memory;
pub mod redis;

use std::fmt;
use std::str::FromStr;

pub use self::redis::{RedisConfig, RedisStats, RedisStorage};
pub use durable::{Ticket, WaitDurable, WaitProgress};
pub use error::{BusyReason, RedisRefusal, StorageError};
pub use file::{FileConfig, FileStorage, SyncHistogram};
pub use memory::MemoryStorage;
pub use mesh_wal::MsgKey;
pub use mesh_wal::recovery::TailPolicy;

/// When an append is reported durable (SPEC §5). Parsed from `always` | `batch` | `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityMode {
    /// Each append is synced before it is reported durable (syncs start at once; appends that
    /// arrive during a sync share the next one).
    Always,
    /// Appends are grouped by size and deadline, then synced (default).
    #[default]
    Batch,
    /// Appends are reported durable at once; nothing is synced. No promise across a crash.
    None,
}

impl DurabilityMode {
    /// The mode as the group-commit machine of `mesh-wal` knows it.
    pub const fn to_wal(self) -> mesh_wal::Durability {
        match self {
            Self::Always => mesh_wal::Durability::Always,
            Self::Batch => mesh_wal::Durability::Batch,
            Self::None => mesh_wal::Durability::None,
        }
    }

    /// The configuration spelling: `always`, `batch` or `none`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::None => "none",
        }
    }
}

impl fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durability mode that is not `always`, `batch` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durability mode `{0}` is not one of always, batch, none")]
pub struct ParseDurabilityError(pub String);

impl FromStr for DurabilityMode {
    type Err = ParseDurabilityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "none" => Ok(Self::None),
            other => Err(ParseDurabilityError(other.to_owned())),
        }
    }
}

/// A message read back at start-up: its identity and its frame bytes, exactly as appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Origin node and msg_id.
    pub key: MsgKey,
    /// The frame, as given to [`Storage::append_outbound`] / [`Storage::append_inbound`].
    pub frame: Vec<u8>,
}

/// What a backend found at start: the work the node still owes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredState {
    /// Outbound messages not yet settled, in append order: retransmit them.
    pub outbound: Vec<StoredMessage>,
    /// Inbound messages not yet acked, in append order: deliver them to subscribers again.
    pub inbound: Vec<StoredMessage>,
    /// Records cut off by recovery (a torn or unsynced tail), if any; logged at start already.
    pub truncated: Option<mesh_wal::recovery::Truncation>,
}

/// The answer of [`Storage::append_inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// First time this (src_node, msg_id) arrives: stored; send DELIVERED once the ticket is
    /// durable, and deliver it to subscribers.
    New(Ticket),
    /// Seen before (or below the dedup window): not stored again and not to be delivered
    /// again. Answer DELIVERED once the ticket is durable (it covers the earlier copy).
    Duplicate(Ticket),
}

impl Inbound {
    /// The ticket to wait for before DELIVERED is sent.
    pub const fn ticket(self) -> Ticket {
        match self {
            Self::New(ticket) | Self::Duplicate(ticket) => ticket,
        }
    }
}

/// The storage of one data-plane core (SPEC §5): one instance per core, used from that core's
/// thread only (it is `!Send`; cores share nothing).
///
/// Every method takes `&self` and never blocks or awaits: the state lives behind a `RefCell`
/// that no method holds across an `.await`, so all tasks of a core can share one
/// `Rc<dyn Storage>`. Appends return a [`Ticket`]; a ticket is *durable* once
/// [`Storage::durable`] reaches it, which [`Storage::wait_durable`] awaits. Tickets become
/// durable in order.
///
/// Errors: [`StorageError::Busy`] is routine back-pressure (nothing was written; retry after
/// the named ticket is durable or after [`Storage::wait_progress`]); [`StorageError::Fatal`]
/// means an fsync failed and the node must stop; anything else is a bug or a bad input.
pub trait Storage {
    /// The configured durability mode.
    fn mode(&self) -> DurabilityMode;

    /// Origin: persists an outbound message accepted from a local client. Answer PERSISTED
    /// once the ticket is durable; keep the message for retransmission until settled.
    fn append_outbound(&self, key: MsgKey, frame: &[u8]) -> Result<Ticket, StorageError>;

    /// Origin: DELIVERED was heard for `key`; after a restart it is no longer recovered once
    /// the ticket is durable. Settling an unknown key is a no-op record (duplicates happen).
    fn mark_settled(&self, key: MsgKey) -> Result<Ticket, StorageError>;

    /// Destination: deduplicates by (src_node, msg_id) and persists a new message. See
    /// [`Inbound`] for what to answer.
    fn append_inbound(&self, key: MsgKey, frame: &[u8]) -> Result<Inbound, StorageError>;

    /// Destination: the application acked `key`; it is no longer redelivered after a restart
    /// once the ticket is durable.
    fn mark_acked(&self, key: MsgKey) -> Result<Ticket, StorageError>;

    /// A msg_id for a new outbound message of this core; never handed out twice, across
    /// restarts (ids come from durably reserved blocks). `Busy { MsgIdsPending }` when the next
    /// block is not durable yet.
    fn allocate_msg_id(&self) -> Result<u64, StorageError>;

    /// The highest durable ticket: every ticket at or below it is durable.
    fn durable(&self) -> Ticket;

    /// Resolves once `ticket` is durable, or with [`StorageError::Fatal`] if the log failed.
    fn wait_durable(&self, ticket: Ticket) -> WaitDurable;

    /// Resolves at the next progress of the log (durability advanced, a segment recycled, or
    /// the log failed): the moment to retry after [`StorageError::Busy`].
    fn wait_progress(&self) -> WaitProgress;

    /// Whether the dedup state has seen (src_node, msg_id), without recording it.
    fn is_duplicate(&self, key: MsgKey) -> bool;

    /// What recovery found at start (unsettled outbound, unacked inbound). The first call
    /// returns it; later calls return an empty state.
    fn take_recovered(&self) -> RecoveredState;
}
