//! The destination's duplicate filter: per source, a high-water mark plus a bitmap window of
//! the msg_ids just below it, with snapshots for DEDUP_CHECKPOINT records.
//!
//! # Window
//!
//! Sources are keyed by (src_node, msg_id partition): each core of a node allocates msg_ids in
//! its own partition ([`crate::msg_id`]), so each partition is its own monotonic stream. For a
//! source with high-water mark `hwm` (the largest msg_id seen), the window covers the
//! `window_len` ids `hwm - window_len + 1 ..= hwm`, one bit each, stored as a ring indexed by
//! `msg_id % window_len` (advancing the mark clears the bits that leave the window; nothing
//! shifts).
//!
//! [`DedupWindow::check_and_insert`] answers
//! - [`Verdict::New`]: above the mark, or in the window and not seen: deliver it (and it is now
//!   recorded);
//! - [`Verdict::Duplicate`]: in the window and seen;
//! - [`Verdict::TooOld`]: below the window. **Treated as a duplicate**: the destination cannot
//!   tell, and delivering twice would break exactly-once. The origin must not have more than
//!   `window_len` ids of one partition outstanding towards one destination; the window is
//!   sized for that (1024 by default, up to 65,536).
//!
//! # Bounds
//!
//! At most `sources_max` sources, all allocated at start-up (one slab of bitmaps). A new source
//! beyond that is refused with [`DedupError::SourcesFull`] rather than evicting one: an evicted
//! source's history is gone, and a retransmission from it would be delivered again. The
//! session refuses the message (the origin retries later) and an operator raises the limit.
//!
//! # Snapshot format (DEDUP_CHECKPOINT body, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `4D 44 44 50` ("MDDP") |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | window_len (multiple of 64) |
//! | 12 | 4 | source count n |
//! | 16 | n × (16 + window_len / 8) | sources, sorted by (src_node, partition): src_node u64, hwm u64, ring words u64 × window_len / 64 |
//!
//! The partition is the top byte of `hwm`. Recovery restores the last checkpoint, then replays
//! the INBOUND records after it through `check_and_insert`. A snapshot taken with another
//! window length is converted.

use std::collections::HashMap;

use crate::error::ConfigError;
use crate::msg_id::partition_of;
use crate::record::{read_u16, read_u32, read_u64, usize_from_u32};
use crate::seeded::SeededState;

/// Default window: 1024 msg_ids per source.
pub const WINDOW_LEN_DEFAULT: u32 = 1024;
/// Largest window accepted.
pub const WINDOW_LEN_MAX: u32 = 65_536;
/// Hard cap on `sources_max`.
pub const SOURCES_MAX: u32 = 1 << 20;
/// First bytes of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"MDDP";
/// Snapshot format version.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Length of the snapshot header.
pub const SNAPSHOT_HEADER_LEN: usize = 16;

/// Configuration of a [`DedupWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Most sources tracked, 1..=[`SOURCES_MAX`].
    pub sources_max: u32,
    /// Bits per source, a multiple of 64 in 64..=[`WINDOW_LEN_MAX`].
    pub window_len: u32,
    /// Seed of the source map (keys come from the network).
    pub hash_seed: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            sources_max: 4096,
            window_len: WINDOW_LEN_DEFAULT,
            hash_seed: 0,
        }
    }
}

impl DedupConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range(
            "dedup.sources_max",
            u64::from(self.sources_max),
            1,
            u64::from(SOURCES_MAX),
        )?;
        ConfigError::check_range(
            "dedup.window_len",
            u64::from(self.window_len),
            64,
            u64::from(WINDOW_LEN_MAX),
        )?;
        ConfigError::check_multiple("dedup.window_len", u64::from(self.window_len), 64)
    }

    fn words(&self) -> usize {
        usize_from_u32(self.window_len / 64)
    }
}

/// The answer of [`DedupWindow::check_and_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: deliver. It is recorded now.
    New,
    /// Seen before: do not deliver again (answer DELIVERED again).
    Duplicate,
    /// Below the window: treated as a duplicate.
    TooOld,
}

/// Why the dedup window refused an input or a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DedupError {
    /// A new source, and `sources_max` are tracked already.
    #[error("{limit} sources tracked already")]
    SourcesFull {
        /// `sources_max`.
        limit: u32,
    },
    /// The snapshot is shorter than its header.
    #[error("snapshot of {len} bytes, header needs {needed}")]
    SnapshotTooShort {
        /// Bytes given.
        len: usize,
        /// [`SNAPSHOT_HEADER_LEN`].
        needed: usize,
    },
    /// Not a snapshot.
    #[error("snapshot magic {found:02x?}")]
    SnapshotMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Another snapshot version.
    #[error("snapshot version {found}, this build reads {supported}")]
    SnapshotVersion {
        /// Stored version.
        found: u16,
        /// [`SNAPSHOT_VERSION`].
        supported: u16,
    },
    /// The stored window length is not a multiple of 64 in range.
    #[error("snapshot window_len {found} invalid (multiple of 64, at most {limit})")]
    SnapshotWindow {
        /// Stored window length.
        found: u32,
        /// [`WINDOW_LEN_MAX`].
        limit: u32,
    },
    /// More sources than this window tracks.
    #[error("snapshot holds {count} sources, limit {limit}")]
    SnapshotTooManySources {
        /// Stored count.
        count: u32,
        /// `sources_max`.
        limit: u32,
    },
    /// The length does not match the count.
    #[error("snapshot of {found} bytes, its header implies {expected}")]
    SnapshotLen {
        /// Length implied by the header.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// Sources out of order or repeated.
    #[error("snapshot source {index} is not after the previous one")]
    SnapshotUnsorted {
        /// Index of the source.
        index: u32,
    },
    /// A source whose high-water mark is not marked seen.
    #[error("snapshot source {index}: high-water mark bit not set")]
    SnapshotHwmNotSet {
        /// Index of the source.
        index: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SourceKey {
    node: u64,
    partition: u8,
}

/// The dedup state of one core: all sources, bounded, allocated at construction.
#[derive(Debug, Clone)]
pub struct DedupWindow {
    config: DedupConfig,
    index: HashMap<SourceKey, u32, SeededState>,
    /// Per slot: the source's node and high-water mark.
    nodes: Vec<u64>,
    hwms: Vec<u64>,
    /// `sources_max * window_len / 64` words; slot `s` owns `words * s ..`.
    bits: Vec<u64>,
}

impl DedupWindow {
    /// An empty window, with memory for `sources_max` sources.
    pub fn new(config: DedupConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let sources = usize_from_u32(config.sources_max);
        Ok(Self {
            config,
            index: HashMap::with_capacity_and_hasher(sources, SeededState::new(config.hash_seed)),
            nodes: Vec::with_capacity(sources),
            hwms: Vec::with_capacity(sources),
            bits: vec![0; sources * config.words()],
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.nodes.len()
    }

    /// The high-water mark of (`src_node`, `partition`), if tracked.
    pub fn high_water_mark(&self, src_node: u64, partition: u8) -> Option<u64> {
        let slot = self.index.get(&SourceKey {
            node: src_node,
            partition,
        })?;
        Some(self.hwms[usize_from_u32(*slot)])
    }

    fn ring(&mut self, slot: u32) -> &mut [u64] {
        let words = self.config.words();
        let start = usize_from_u32(slot) * words;
        &mut self.bits[start..start + words]
    }

    fn position(&self, msg_id: u64) -> (usize, u64) {
        let position = msg_id % u64::from(self.config.window_len);
        // position < window_len <= 65,536.
        let word = usize::try_from(position / 64).unwrap_or(0);
        (word, 1u64 << (position % 64))
    }

    /// What [`DedupWindow::check_and_insert`] would answer, without recording anything (for
    /// status queries). An unknown source answers `New`.
    pub fn check(&self, src_node: u64, msg_id: u64) -> Verdict {
        let key = SourceKey {
            node: src_node,
            partition: partition_of(msg_id),
        };
        let Some(&slot) = self.index.get(&key) else {
            return Verdict::New;
        };
        let hwm = self.hwms[usize_from_u32(slot)];
        if msg_id > hwm {
            return Verdict::New;
        }
        if hwm - msg_id >= u64::from(self.config.window_len) {
            return Verdict::TooOld;
        }
        let (word, mask) = self.position(msg_id);
        let start = usize_from_u32(slot) * self.config.words();
        if self.bits[start + word] & mask != 0 {
            Verdict::Duplicate
        } else {
            Verdict::New
        }
    }

    /// Whether `msg_id` from `src_node` was seen, and records it if not. Never panics.
    pub fn check_and_insert(&mut self, src_node: u64, msg_id: u64) -> Result<Verdict, DedupError> {
        let key = SourceKey {
            node: src_node,
            partition: partition_of(msg_id),
        };
        let window = u64::from(self.config.window_len);
        let (word, mask) = self.position(msg_id);
        let Some(&slot) = self.index.get(&key) else {
            let used = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
            if used >= self.config.sources_max {
                return Err(DedupError::SourcesFull {
                    limit: self.config.sources_max,
                });
            }
            self.index.insert(key, used);
            self.nodes.push(src_node);
            self.hwms.push(msg_id);
            let ring = self.ring(used);
            ring.fill(0);
            ring[word] |= mask;
            return Ok(Verdict::New);
        };
        let hwm = self.hwms[usize_from_u32(slot)];
        if msg_id > hwm {
            let advance = msg_id - hwm;
            let ring = self.ring(slot);
            clear_ring(ring, window, hwm.wrapping_add(1), advance.min(window));
            ring[word] |= mask;
            self.hwms[usize_from_u32(slot)] = msg_id;
            return Ok(Verdict::New);
        }
        if hwm - msg_id >= window {
            return Ok(Verdict::TooOld);
        }
        let ring = self.ring(slot);
        if ring[word] & mask != 0 {
            return Ok(Verdict::Duplicate);
        }
        ring[word] |= mask;
        Ok(Verdict::New)
    }

    /// Length of [`DedupWindow::encode_snapshot`]'s output.
    pub fn snapshot_len(&self) -> usize {
        SNAPSHOT_HEADER_LEN + self.nodes.len() * entry_len(self.config.words())
    }

    /// Writes a snapshot of every source into `out` (cleared first), in a canonical order: the
    /// same state always gives the same bytes.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.snapshot_len());
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.config.window_len.to_le_bytes());
        let count = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        let mut order: Vec<(SourceKey, u32)> =
            self.index.iter().map(|(key, slot)| (*key, *slot)).collect();
        order.sort_unstable();
        let words = self.config.words();
        for (key, slot) in order {
            let slot = usize_from_u32(slot);
            out.extend_from_slice(&key.node.to_le_bytes());
            out.extend_from_slice(&self.hwms[slot].to_le_bytes());
            for word in &self.bits[slot * words..(slot + 1) * words] {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// A window with this configuration holding the state of `snapshot`. Never panics; on
    /// error nothing is built.
    pub fn from_snapshot(config: DedupConfig, snapshot: &[u8]) -> Result<Self, crate::Error> {
        let mut window = Self::new(config)?;
        window.load(snapshot)?;
        Ok(window)
    }

    /// Replaces the state with that of `snapshot` (the DEDUP_CHECKPOINT being replayed). On
    /// error the state is unchanged.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), DedupError> {
        let mut fresh = Self {
            config: self.config,
            index: HashMap::with_capacity_and_hasher(
                self.index.capacity(),
                SeededState::new(self.config.hash_seed),
            ),
            nodes: Vec::with_capacity(self.nodes.capacity()),
            hwms: Vec::with_capacity(self.hwms.capacity()),
            bits: vec![0; self.bits.len()],
        };
        fresh.load(snapshot)?;
        *self = fresh;
        Ok(())
    }

    /// Loads a snapshot into an empty window.
    fn load(&mut self, snapshot: &[u8]) -> Result<(), DedupError> {
        let len = snapshot.len();
        if len < SNAPSHOT_HEADER_LEN {
            return Err(DedupError::SnapshotTooShort {
                len,
                needed: SNAPSHOT_HEADER_LEN,
            });
        }
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&snapshot[0..4]);
        if magic != SNAPSHOT_MAGIC {
            return Err(DedupError::SnapshotMagic { found: magic });
        }
        let version = read_u16(snapshot, 4);
        if version != SNAPSHOT_VERSION || read_u16(snapshot, 6) != 0 {
            return Err(DedupError::SnapshotVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let window_len = read_u32(snapshot, 8);
        if window_len == 0 || !window_len.is_multiple_of(64) || window_len > WINDOW_LEN_MAX {
            return Err(DedupError::SnapshotWindow {
                found: window_len,
                limit: WINDOW_LEN_MAX,
            });
        }
        let count = read_u32(snapshot, 12);
        if count > self.config.sources_max {
            return Err(DedupError::SnapshotTooManySources {
                count,
                limit: self.config.sources_max,
            });
        }
        let words = usize_from_u32(window_len / 64);
        let expected = SNAPSHOT_HEADER_LEN + usize_from_u32(count) * entry_len(words);
        if len != expected {
            return Err(DedupError::SnapshotLen {
                expected,
                found: len,
            });
        }
        let old_window = u64::from(window_len);
        let mut previous: Option<SourceKey> = None;
        for (index, entry) in snapshot[SNAPSHOT_HEADER_LEN..]
            .chunks_exact(entry_len(words))
            .enumerate()
        {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let node = read_u64(entry, 0);
            let hwm = read_u64(entry, 8);
            let key = SourceKey {
                node,
                partition: partition_of(hwm),
            };
            if previous.is_some_and(|previous| previous >= key) {
                return Err(DedupError::SnapshotUnsorted { index });
            }
            previous = Some(key);
            let ring: Vec<u64> = entry[16..]
                .chunks_exact(8)
                .map(|word| read_u64(word, 0))
                .collect();
            let bit = |msg_id: u64| {
                let position = msg_id % old_window;
                let word = usize::try_from(position / 64).unwrap_or(0);
                ring[word] & (1u64 << (position % 64)) != 0
            };
            if !bit(hwm) {
                return Err(DedupError::SnapshotHwmNotSet { index });
            }
            // Re-insert, mark first, so a snapshot of another window length converts.
            let window = u64::from(self.config.window_len);
            self.check_and_insert(node, hwm)?;
            for back in 1..old_window.min(window).min(hwm.saturating_add(1)) {
                let msg_id = hwm - back;
                if partition_of(msg_id) == key.partition && bit(msg_id) {
                    self.check_and_insert(node, msg_id)?;
                }
            }
        }
        Ok(())
    }
}

fn entry_len(words: usize) -> usize {
    16 + words * 8
}

/// Clears `count` (<= `window`) ring bits starting at the position of `from_id`.
fn clear_ring(ring: &mut [u64], window: u64, from_id: u64, count: u64) {
    let mut position = from_id % window;
    let mut left = count;
    while left > 0 {
        let bit = position % 64;
        let run = (64 - bit).min(left).min(window - position);
        let mask = if run == 64 {
            u64::MAX
        } else {
            ((1u64 << run) - 1) << bit
        };
        let word = usize::try_from(position / 64).unwrap_or(0);
        ring[word] &= !mask;
        position = (position + run) % window;
        left -= run;
    }
}

#[cfg(test)]
mod tests;
