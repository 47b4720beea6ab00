//! The crate's error boundary: [`StorageError`], one enum for every backend.
//!
//! Three classes, which the engine treats differently: [`StorageError::Busy`] is routine
//! back-pressure (nothing was written); [`StorageError::Fatal`] stops the node (an fsync
//! failed: after a failed fsync the kernel may have dropped dirty pages, so it is never retried
//! and never ignored; for `redis`, the server refused a write for good); everything else is a
//! start-up failure or a bad input.

use std::io;
use std::path::PathBuf;

use crate::durable::Ticket;

/// Why an append was refused for now. Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// Every segment file is live: messages must settle (and their segments be recycled).
    LogFull,
    /// Too many groups wait for a sync (a roll now would exceed `groups_pending_max`).
    SyncsPending,
    /// Too many unsettled MESSAGE + INBOUND records (`entries_max`).
    TooManyUnsettled,
    /// The dedup window tracks `sources_max` sources already; this is a new one.
    TooManySources,
    /// No durable msg_id block is left; the next reservation is appended, not yet durable.
    MsgIdsPending,
    /// Too many writes wait for the backend's confirmation (the `redis` backend's
    /// `queue_writes_max` / `queue_bytes_max`, e.g. while the server is unreachable).
    WritesPending,
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Back-pressure: retry once `retry_after` is durable (when given) or after
    /// [`crate::Storage::wait_progress`].
    #[error("storage busy ({reason:?}); retry after ticket {retry_after:?}")]
    Busy {
        /// What is full.
        reason: BusyReason,
        /// A ticket whose durability may free room.
        retry_after: Option<Ticket>,
    },
    /// An fdatasync failed (or Redis refused a write for good): the log is stopped for good and
    /// the node must stop.
    #[error("WAL failed, the node must stop: {0}")]
    Fatal(#[from] FatalError),
    /// Recovery found a bad record followed by valid ones (or synced records missing): the
    /// log is corrupt. The node refuses to start; an operator must look.
    #[error("WAL corruption in {path:?} (segment {segment_id}, offset {offset}): {source}")]
    Corruption {
        /// The segment file.
        path: PathBuf,
        /// The segment id in its header.
        segment_id: u64,
        /// Offset of the bad record (or where the valid contents end) in that file.
        offset: usize,
        /// What recovery found, in full.
        source: mesh_wal::recovery::RecoveryError,
    },
    /// Any other refusal of the WAL core (recovery of an inconsistent log, configuration,
    /// a broken invariant).
    #[error("WAL in {dir:?}: {source}")]
    Wal {
        /// The WAL directory.
        dir: PathBuf,
        /// The core's error.
        source: mesh_wal::Error,
    },
    /// Not enough disk space to preallocate a segment file: the node refuses to start.
    #[error("cannot preallocate {len} bytes for {path:?}: {source}")]
    NoSpace {
        /// The segment file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The `fallocate` error.
        source: io::Error,
    },
    /// A file operation failed at start-up (open, map, list).
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The record is larger than the configured limit.
    #[error("frame of {len} bytes over the record limit {limit}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// `record_body_len_max`.
        limit: usize,
    },
    /// A bad configuration value.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The `redis` backend could not start: the server stayed unreachable for the whole
    /// `open_timeout`, refused to load this node's state, or holds state that does not decode.
    #[error("redis {op}: {detail}")]
    Redis {
        /// What was attempted (`connect`, `load`, `decode`, ...).
        op: &'static str,
        /// The server's address and answer, or what was wrong with the stored value.
        detail: String,
    },
}

/// The failure that stopped a log. `Copy`, so every waiter gets its own copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// The group-commit machine failed (an fdatasync failed) or refused an input.
    #[error(transparent)]
    Commit(#[from] mesh_wal::commit::CommitError),
    /// The sync of a recycled segment's zeroed header failed.
    #[error("fdatasync of recycled segment {segment_id} failed (errno {errno})")]
    RecycleSync {
        /// The segment being recycled.
        segment_id: u64,
        /// The OS error code.
        errno: i32,
    },
    /// A WAL state machine refused an input it must accept: a bug, stopped rather than
    /// continued with state that may not match the disk.
    #[error("WAL invariant broken: {0}")]
    Invariant(&'static str),
    /// The Redis server refused a write for good (an error reply that is not a connection
    /// problem and not transient): it will never be confirmed, so the log stops. The server's
    /// message is in the log.
    #[error("Redis refused a write: {0}")]
    Redis(RedisRefusal),
}

/// Why the Redis server refused a write of the `redis` backend for good (see
/// [`FatalError::Redis`]). `Copy`, like [`FatalError`]; the server's own words are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedisRefusal {
    /// `WRONGTYPE`: a key of this node and core holds another type (something else writes
    /// there).
    #[error("WRONGTYPE: a key of this node holds a value of another type")]
    WrongType,
    /// `NOPERM`, `NOAUTH`, `WRONGPASS` or a failed authentication: the ACL of the configured
    /// user does not allow the commands.
    #[error("permission denied (ACL or authentication)")]
    NoPermission,
    /// Any other error reply (`ERR ...`, `EXECABORT` for a reason that is not transient).
    #[error("error reply")]
    Rejected,
    /// A reply of a shape the backend never asks for (e.g. `INCRBY` not answering an integer
    /// in range).
    #[error("unexpected reply")]
    UnexpectedReply,
}

impl StorageError {
    /// Whether this is routine back-pressure.
    pub const fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether the log has failed and the node must stop.
    pub const fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }
}
