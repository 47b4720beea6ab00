//! sans-IO write-ahead log of one data-plane core: record format, recovery, group commit,
//! segment lifecycle, dedup window and msg_id allocation.
//!
//! This crate holds the protocol logic of the WAL and nothing else: no file or socket I/O, no
//! clock, no runtime, no randomness except seeds passed in. The glommio shell maps preallocated
//! segment files and hands this crate `&mut [u8]` / `&[u8]` views of them; it moves bytes and
//! issues `fdatasync` through io_uring when [`commit::GroupCommit`] says so. Everything a test
//! needs to simulate a crash at every byte offset is here, without a disk.
//!
//! | module | owns |
//! |---|---|
//! | [`record`] | the byte format of segments and records (also `FORMAT.md`), the encoder |
//! | [`writer`] | the append position of the log: next seq, active segment, rolling to a new segment |
//! | [`recovery`] | the scanner of one segment (clean end / torn tail / corruption), recovery of the whole log |
//! | [`commit`] | group commit: when to sync, when an append is durable, fatal sync failures |
//! | [`segments`] | which segments still hold unsettled records, which to recycle, what to relocate |
//! | [`dedup`] | per-source high-water mark + bitmap window, snapshots for `DEDUP_CHECKPOINT` |
//! | [`msg_id`] | msg_id blocks reserved through `MSG_ID_RESERVATION` records, never reused |
//! | [`mod@restore`] | one call that turns segment images into every state machine above, ready to run |
//!
//! # How the shell drives it (one core)
//!
//! ```text
//! start:   restore(images) -> writer, commit, segments, dedup, msg_ids (+ recovered: free files,
//!          files to recycle, resume point); fdatasync the live files; zero recycle_slots' headers
//! append:  writer.append(active_map, body, commit.synced_seq())
//!            Err(NeedRoll) -> check commit.can_roll() && segments.can_open(), take a free file,
//!                             writer.roll(old_map, new_map, now, synced) -> commit.handle_seal(..),
//!                             segments.handle_segment_opened(id); append again
//!            Ok(appended)  -> commit.handle_append(&appended, now);
//!                             segments.handle_record(segment_id, offset, seq, &body)
//! loop:    commit.poll_action()   -> Sync { sync_id, segment_id, up_to_offset } -> io_uring fdatasync
//!          completion             -> commit.handle_sync_done(sync_id, now)
//!                                  | commit.handle_sync_failed(sync_id, errno): fatal, stop the node
//!          commit.poll_durable()  -> answer PERSISTED up to seq; segments.handle_durable(seq);
//!                                    msg_ids.handle_durable(seq)
//!          commit.poll_timeout()  -> arm a timer, then commit.handle_timeout(now)
//!          segments.poll_recycle()  -> zero that file's header, fdatasync, segments.handle_recycled(id)
//!          segments.poll_relocate() -> re-append an old record (record::decode_at) or a fresh
//!                                      dedup checkpoint
//!          msg_ids.poll_reservation() -> append it, msg_ids.handle_reservation_appended(r, seq)
//! ```
#![forbid(unsafe_code)]

pub mod commit;
pub mod dedup;
pub mod error;
pub mod msg_id;
pub mod record;
pub mod recovery;
pub mod restore;
pub mod segments;
pub mod writer;

mod seeded;

pub use commit::{Action, Durability, GroupCommit, Instant};
pub use dedup::{DedupWindow, Verdict};
pub use error::{ConfigError, Error};
pub use msg_id::{MsgIdAllocator, Reservation};
pub use record::{Body, MsgKey, Record, RecordKind, SegmentHeader};
pub use recovery::{Recovered, SegmentEnd, SegmentScanner, TailPolicy, recover};
pub use restore::{Restored, restore};
pub use segments::SegmentTracker;
pub use writer::LogWriter;
