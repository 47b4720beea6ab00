//! Start-up in one call: recover the log from its segment images and rebuild every state
//! machine of this crate from the live records, so the shell only maps files and calls
//! [`restore`].
//!
//! Replay, in log order:
//! - each live segment is opened in the [`SegmentTracker`], each record fed to it (so it knows
//!   what is unsettled where);
//! - DEDUP_CHECKPOINT replaces the [`DedupWindow`]'s state, INBOUND is re-inserted into it
//!   (the window ends as it was before the crash: last checkpoint + the INBOUND records after);
//! - the largest MSG_ID_RESERVATION end is where the [`MsgIdAllocator`] resumes;
//! - the [`GroupCommit`] starts with everything recovered durable, and the [`LogWriter`] at the
//!   resume point.
//!
//! Before appending, the shell must: `fdatasync` every live segment file (after a process
//! crash, recovered records may still sit only in the page cache), and recycle
//! [`Recovered::recycle_slots`] (zero the header, sync). The MESSAGE and INBOUND records still
//! unsettled are the ones to retransmit and to deliver: the shell reads them with
//! [`Recovered::replay`] too.

use crate::Error;
use crate::commit::{CommitConfig, GroupCommit};
use crate::dedup::{DedupConfig, DedupWindow};
use crate::msg_id::{MsgIdAllocator, MsgIdConfig};
use crate::record::Body;
use crate::recovery::{Recovered, RecoveryConfig, ReplayEvent, TailPolicy, recover};
use crate::segments::{SegmentConfig, SegmentTracker};
use crate::writer::{LogWriter, WriterConfig};

/// Configuration of every part of one core's WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// How recovery treats a bad record followed by valid ones.
    pub policy: TailPolicy,
    /// Segment and record sizes, and the log id.
    pub writer: WriterConfig,
    /// Durability mode and group limits.
    pub commit: CommitConfig,
    /// Segment lifecycle bounds.
    pub segments: SegmentConfig,
    /// Dedup window bounds.
    pub dedup: DedupConfig,
    /// msg_id partition and block size.
    pub msg_id: MsgIdConfig,
}

impl WalConfig {
    /// Defaults for the log of core `core` (its log id and msg_id partition).
    pub fn new(core: u8) -> Self {
        Self {
            policy: TailPolicy::default(),
            writer: WriterConfig::new(u32::from(core)),
            commit: CommitConfig::default(),
            segments: SegmentConfig::default(),
            dedup: DedupConfig::default(),
            msg_id: MsgIdConfig::new(core),
        }
    }
}

/// Every state machine of one core's WAL, ready to run.
#[derive(Debug)]
pub struct Restored {
    /// What recovery found: resume point, free and stale files, truncation.
    pub recovered: Recovered,
    /// The append position.
    pub writer: LogWriter,
    /// Group commit.
    pub commit: GroupCommit,
    /// Segment lifecycle.
    pub segments: SegmentTracker,
    /// Dedup window.
    pub dedup: DedupWindow,
    /// msg_id allocation.
    pub msg_ids: MsgIdAllocator,
}

/// Recovers the log from `images` (every segment file of the core, in any order) and rebuilds
/// every state machine from it.
pub fn restore(images: &[&[u8]], config: &WalConfig) -> Result<Restored, Error> {
    let recovery = RecoveryConfig {
        policy: config.policy,
        log_id: config.writer.log_id,
    };
    let recovered = recover(images, &recovery)?;
    let mut segments = SegmentTracker::new(config.segments)?;
    let mut dedup = DedupWindow::new(config.dedup)?;
    let mut last_reserved_end: Option<u64> = None;
    for event in recovered.replay(images) {
        match event {
            ReplayEvent::Segment { segment_id, .. } => {
                segments.handle_segment_opened(segment_id)?;
            }
            ReplayEvent::Record {
                segment_id,
                offset,
                record,
            } => {
                segments.handle_record(segment_id, offset, record.seq, &record.body)?;
                match record.body {
                    Body::DedupCheckpoint { snapshot } => dedup.restore(snapshot)?,
                    Body::Inbound { key, .. } => {
                        dedup.check_and_insert(key.src_node, key.msg_id)?;
                    }
                    Body::MsgIdReservation(reservation) => {
                        last_reserved_end = last_reserved_end.max(Some(reservation.end()));
                    }
                    Body::Message { .. } | Body::Delivered { .. } | Body::Acked { .. } => {}
                }
            }
        }
    }
    // Everything recovered is durable (once the shell has synced the live files).
    segments.handle_durable(recovered.next_seq - 1);
    let msg_ids = MsgIdAllocator::recover(config.msg_id, last_reserved_end)?;
    let commit = GroupCommit::new(config.commit, recovered.next_seq)?;
    let writer = LogWriter::from_recovered(config.writer, &recovered)?;
    Ok(Restored {
        recovered,
        writer,
        commit,
        segments,
        dedup,
        msg_ids,
    })
}
