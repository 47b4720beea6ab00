//! [`RedisConfig`]: where the server is, whose state, and the bounds of a
//! [`super::RedisStorage`].

use std::time::Duration;

use mesh_wal::dedup::DedupConfig;
use mesh_wal::msg_id::BLOCK_LEN_MAX;

use super::layout::{self, SEQ_LEN};
use crate::DurabilityMode;
use crate::error::StorageError;

/// Configuration of a [`super::RedisStorage`]: where the server is, whose state, and the bounds.
/// (`Debug` prints the URL without its password.)
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (SPEC §7, `--storage redis://...`).
    pub url: String,
    /// The node whose state this is (non-zero); a replacement node uses the same id.
    pub node_id: u64,
    /// The core: key space and msg_id partition.
    pub core: u8,
    /// Durability mode (see the module doc for what it means with Redis).
    pub mode: DurabilityMode,
    /// Most unsettled outbound + unacked inbound messages held.
    pub entries_max: usize,
    /// Longest frame accepted, in bytes.
    pub frame_len_max: usize,
    /// Most writes waiting for Redis's confirmation before appends get `Busy`.
    pub queue_writes_max: usize,
    /// Most frame bytes waiting for Redis's confirmation before appends get `Busy`; at least
    /// `frame_len_max + 8`.
    pub queue_bytes_max: usize,
    /// Most writes in one `MULTI` … `EXEC` transaction.
    pub pipeline_writes_max: usize,
    /// Most frame bytes in one transaction (a larger single write goes alone), so that one
    /// transaction neither stalls the server nor outlasts `io_timeout`.
    pub pipeline_bytes_max: usize,
    /// Ids per msg_id reservation (`INCRBY`), 1..=2^32.
    pub msg_id_block_len: u64,
    /// Dedup window bounds.
    pub dedup: DedupConfig,
    /// A dedup checkpoint is written once this many inbound keys were recorded since the last
    /// one (or more, when the snapshot is large: at least its length / 16).
    pub dedup_checkpoint_min: usize,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Read and write timeout of a request: a server that does not answer within it is treated
    /// as a lost connection.
    pub io_timeout: Duration,
    /// How long [`super::RedisStorage::open`] keeps trying to reach the server.
    pub open_timeout: Duration,
    /// First delay after a failure; it doubles with each failure in a row.
    pub backoff_min: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
    /// Seed of the backoff jitter.
    pub jitter_seed: u64,
}

impl RedisConfig {
    /// Defaults for `node_id`'s core `core` on the server at `url`: batch mode, 65,536 entries,
    /// frames up to 1 MiB, 16,384 writes / 64 MiB waiting at most, 512 writes per transaction,
    /// at most 4 MiB per transaction, blocks of 65,536 msg_ids, backoff 10 ms to 2 s, open
    /// timeout 30 s.
    pub fn new(url: impl Into<String>, node_id: u64, core: u8) -> Self {
        Self {
            url: url.into(),
            node_id,
            core,
            mode: DurabilityMode::default(),
            entries_max: 65_536,
            frame_len_max: 1 << 20,
            queue_writes_max: 16_384,
            queue_bytes_max: 64 << 20,
            pipeline_writes_max: 512,
            pipeline_bytes_max: 4 << 20,
            msg_id_block_len: mesh_wal::msg_id::BLOCK_LEN_DEFAULT,
            dedup: DedupConfig::default(),
            dedup_checkpoint_min: 1024,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
            jitter_seed: node_id.rotate_left(8) ^ u64::from(core),
        }
    }

    /// Checks that `url` is a Redis URL this backend can use (without connecting); the error
    /// names what is wrong and never shows a password.
    pub fn check_url(url: &str) -> Result<(), String> {
        ::redis::Client::open(url)
            .map(drop)
            .map_err(|error| format!("redis URL `{}`: {error}", redacted(url)))
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn with_mode(mut self, mode: DurabilityMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the bounds of the writes waiting for confirmation.
    #[must_use]
    pub fn with_queue_limits(mut self, writes_max: usize, bytes_max: usize) -> Self {
        self.queue_writes_max = writes_max;
        self.queue_bytes_max = bytes_max;
        self
    }

    /// Sets the backoff between attempts.
    #[must_use]
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Sets the ids per msg_id reservation.
    #[must_use]
    pub fn with_msg_id_block_len(mut self, block_len: u64) -> Self {
        self.msg_id_block_len = block_len;
        self
    }

    /// The prefix of every Redis key of `node_id`'s core `core`, e.g. `mesh:{42:0}:`.
    pub fn key_prefix(node_id: u64, core: u8) -> String {
        layout::prefix(node_id, core)
    }

    pub(super) fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| Err(StorageError::Config(what));
        if self.node_id == 0 {
            return bad("redis backend: node_id must be non-zero".to_owned());
        }
        for (name, value) in [
            ("entries_max", self.entries_max),
            ("frame_len_max", self.frame_len_max),
            ("queue_writes_max", self.queue_writes_max),
            ("pipeline_writes_max", self.pipeline_writes_max),
            ("pipeline_bytes_max", self.pipeline_bytes_max),
        ] {
            if value == 0 {
                return bad(format!("redis backend: {name} must be at least 1"));
            }
        }
        if self.queue_bytes_max < self.frame_len_max.saturating_add(SEQ_LEN) {
            return bad(format!(
                "redis backend: queue_bytes_max {} is below frame_len_max {} + {SEQ_LEN}",
                self.queue_bytes_max, self.frame_len_max
            ));
        }
        if !(1..=BLOCK_LEN_MAX).contains(&self.msg_id_block_len) {
            return bad(format!(
                "redis backend: msg_id_block_len {} outside 1..={BLOCK_LEN_MAX}",
                self.msg_id_block_len
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
            ("backoff_min", self.backoff_min),
        ] {
            if value.is_zero() {
                return bad(format!("redis backend: {name} must be above zero"));
            }
        }
        if self.backoff_max < self.backoff_min {
            return bad(format!(
                "redis backend: backoff_max {:?} is below backoff_min {:?}",
                self.backoff_max, self.backoff_min
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("node_id", &self.node_id)
            .field("core", &self.core)
            .field("mode", &self.mode)
            .field("entries_max", &self.entries_max)
            .field("frame_len_max", &self.frame_len_max)
            .field("queue_writes_max", &self.queue_writes_max)
            .field("queue_bytes_max", &self.queue_bytes_max)
            .field("pipeline_writes_max", &self.pipeline_writes_max)
            .field("pipeline_bytes_max", &self.pipeline_bytes_max)
            .field("msg_id_block_len", &self.msg_id_block_len)
            .field("dedup", &self.dedup)
            .field("dedup_checkpoint_min", &self.dedup_checkpoint_min)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("open_timeout", &self.open_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("jitter_seed", &self.jitter_seed)
            .finish()
    }
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(
            RedisConfig::new("redis://127.0.0.1:6379", 1, 0)
                .validate()
                .is_ok()
        );
        assert!(
            RedisConfig::new("redis://127.0.0.1:6379", 0, 0)
                .validate()
                .is_err()
        );
        let small = RedisConfig::new("redis://x", 1, 0).with_queue_limits(1, 100);
        assert!(small.validate().is_err(), "queue_bytes_max below one frame");
        let backwards = RedisConfig::new("redis://x", 1, 0)
            .with_backoff(Duration::from_secs(2), Duration::from_millis(1));
        assert!(backwards.validate().is_err());
        assert!(
            RedisConfig::new("redis://x", 1, 0)
                .with_msg_id_block_len(0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redacted("redis://:secret@host:6379/2"),
            "redis://***@host:6379/2"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        let config = RedisConfig::new("redis://user:hunter2@host:6379", 1, 0);
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(RedisConfig::key_prefix(42, 1), "mesh:{42:1}:");
    }
}
