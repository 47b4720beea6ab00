//! The `file` backend (the default): one log per core in preallocated, mapped segment files,
//! driven through the `mesh-wal` state machines, with `fdatasync` issued through io_uring.
//!
//! # Files
//!
//! `dir/wal-c{core:03}-{slot:05}.seg`, `segments.segments_max` of them (more if an earlier run
//! made more), each `writer.segment_len` bytes, created and `fallocate`d at start-up (start-up
//! fails with [`StorageError::NoSpace`] rather than running on sparse files), zero-filled one
//! page at a time where new (see `segment.rs` for why), and mapped with memmap2 for the life
//! of the log.
//!
//! # Start-up ([`FileStorage::open`])
//!
//! 1. open / create / preallocate / map every file, sync the directory;
//! 2. [`mesh_wal::restore()`] over the mappings (policy [`TailPolicy::TruncateUnsynced`] by
//!    default, see `docs/decisions.md`): a torn or never-synced tail is truncated and logged,
//!    corruption of synced data is [`StorageError::Corruption`] naming file, segment and offset,
//!    and the node does not start;
//! 3. the unsettled MESSAGE and unacked INBOUND records are copied out for
//!    [`Storage::take_recovered`];
//! 4. every live file is `fdatasync`ed (after a process crash, recovered records may sit only
//!    in the page cache), and every file of `recycle_slots` has its header zeroed and synced;
//! 5. the driver task is spawned on the current glommio executor, and a first msg_id block is
//!    reserved (and awaited durable).
//!
//! # Running
//!
//! Appends run on the caller's task: the record is copied into the mapping by
//! [`mesh_wal::LogWriter`], fed to [`mesh_wal::GroupCommit`] and [`mesh_wal::SegmentTracker`],
//! and the call returns its ticket. Rolling to a new segment checks `commit.can_roll()` and
//! `segments.can_open()` first ([`StorageError::Busy`] otherwise); after a roll, a dedup
//! checkpoint is written first in the new segment so that segments holding INBOUND records can
//! be recycled.
//!
//! The driver task (one per log, on the same executor) loops: it takes the group-commit
//! machine's [`mesh_wal::Action::Sync`], awaits glommio's `BufferedFile::fdatasync` (an
//! `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC` on the segment's descriptor, which writes
//! back the pages dirtied through the mapping), reports the completion, publishes the new
//! durable seq, re-appends what the segment tracker asks to relocate, recycles segments (zero
//! the header in the mapping, `fdatasync`), and otherwise sleeps until an append wakes it or
//! the batch deadline passes. A failed `fdatasync` is fatal: the commit machine is dead, every
//! waiter gets [`StorageError::Fatal`], every later call too; nothing is retried.

mod histogram;
mod segment;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::task::JoinHandle;
use mesh_wal::msg_id::{MsgIdError, partition_of};
use mesh_wal::record::{Entry, SEGMENT_HEADER_LEN, SegmentHeader, decode_at};
use mesh_wal::recovery::{RecoveryError, ReplayEvent, TailPolicy};
use mesh_wal::restore::WalConfig;
use mesh_wal::segments::Relocate;
use mesh_wal::writer::{AppendError, Appended};
use mesh_wal::{
    Action, Body, DedupWindow, GroupCommit, LogWriter, MsgIdAllocator, MsgKey, SegmentTracker,
    Verdict,
};

pub use self::histogram::SyncHistogram;
use self::segment::SegmentFile;
use crate::durable::{Ticket, WaitDurable, WaitProgress, Watermark};
use crate::error::{BusyReason, FatalError, StorageError};
use crate::{DurabilityMode, Inbound, RecoveredState, Storage, StoredMessage};

/// Configuration of a [`FileStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The WAL directory of the node (created if missing; its parent must exist).
    pub dir: PathBuf,
    /// The core: log id and msg_id partition.
    pub core: u8,
    /// Durability mode (overrides `wal.commit.durability`).
    pub mode: DurabilityMode,
    /// Every knob of the WAL core. `wal.segments.segments_max` is the number of files.
    pub wal: WalConfig,
}

impl FileConfig {
    /// Defaults for core `core` in `dir`: 16 files of 64 MiB (1 GiB per core), batch mode,
    /// recovery policy [`TailPolicy::TruncateUnsynced`].
    pub fn new(dir: impl Into<PathBuf>, core: u8) -> Self {
        let mut wal = WalConfig::new(core);
        wal.policy = TailPolicy::TruncateUnsynced;
        wal.segments.segments_max = 16;
        wal.segments.relocate_at_segments = 12;
        Self {
            dir: dir.into(),
            core,
            mode: DurabilityMode::Batch,
            wal,
        }
    }

    /// Sets the segment file length (a multiple of 4096).
    #[must_use]
    pub fn with_segment_len(mut self, segment_len: usize) -> Self {
        self.wal.writer.segment_len = segment_len;
        self.wal.writer.record_body_len_max = self
            .wal
            .writer
            .record_body_len_max
            .min(segment_len.saturating_sub(256));
        self
    }

    /// Sets the number of segment files (and the relocation threshold at three quarters).
    #[must_use]
    pub fn with_segments(mut self, segments_max: usize) -> Self {
        self.wal.segments.segments_max = segments_max;
        self.wal.segments.relocate_at_segments = (segments_max * 3 / 4).max(2);
        self
    }

    /// Sets the largest record body (a message's frames), at most
    /// [`mesh_wal::record::RECORD_BODY_LEN_MAX`] and what an empty segment holds (checked at
    /// open). Call after [`FileConfig::with_segment_len`], which lowers it to fit.
    #[must_use]
    pub fn with_record_len_max(mut self, len: usize) -> Self {
        self.wal.writer.record_body_len_max = len;
        self
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn with_mode(mut self, mode: DurabilityMode) -> Self {
        self.mode = mode;
        self
    }

    fn file_path(&self, slot: usize) -> PathBuf {
        self.dir
            .join(format!("wal-c{:03}-{slot:05}.seg", self.core))
    }
}

/// A one-shot wake-up of the driver task: set by appends, consumed by the driver.
#[derive(Debug, Default)]
struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        if !self.set.replace(true)
            && let Some(waker) = self.waker.borrow_mut().take()
        {
            waker.wake();
        }
    }

    fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.set.replace(false) {
            return Poll::Ready(());
        }
        *self.notify.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Everything of one log, behind the `RefCell` of [`Shared`]; never borrowed across `.await`.
struct State {
    dir: PathBuf,
    mode: DurabilityMode,
    files: Vec<SegmentFile>,
    writer: LogWriter,
    commit: GroupCommit,
    segments: SegmentTracker,
    dedup: DedupWindow,
    msg_ids: MsgIdAllocator,
    /// Slot (file index) of each live segment.
    slot_of: HashMap<u64, usize>,
    active_slot: Option<usize>,
    /// Files holding no segment.
    free: Vec<usize>,
    /// A dedup checkpoint is to be written first in the new segment.
    checkpoint_due: bool,
    /// A relocation that met back-pressure, retried first.
    pending_relocation: Option<Relocate>,
    recovered: Option<RecoveredState>,
    watermark: Rc<Watermark>,
    notify: Rc<Notify>,
    origin: std::time::Instant,
    scratch: Vec<u8>,
}

struct Shared {
    state: RefCell<State>,
    watermark: Rc<Watermark>,
    notify: Rc<Notify>,
    closing: Cell<bool>,
    /// Group-commit syncs completed (for tests and metrics).
    syncs_done: Cell<u64>,
    /// Their durations, from issue to the completion seen by the driver.
    sync_latency: RefCell<SyncHistogram>,
}

/// The `file` backend of one core. Create it with [`FileStorage::open`] on the core's glommio
/// executor; it spawns its driver task there. Dropping it cancels the driver (what was not
/// synced yet may be lost, as in a crash); [`FileStorage::close`] syncs everything first.
pub struct FileStorage {
    shared: Rc<Shared>,
    driver: RefCell<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.borrow();
        f.debug_struct("FileStorage")
            .field("dir", &state.dir)
            .field("mode", &state.mode)
            .field("next_seq", &state.writer.next_seq())
            .field("durable", &self.shared.watermark.durable())
            .finish_non_exhaustive()
    }
}

fn io_error(op: &'static str, path: &Path, error: glommio::GlommioError<()>) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        source: error.into(),
    }
}

fn errno_of(error: &glommio::GlommioError<()>) -> i32 {
    const EIO: i32 = 5;
    match error {
        glommio::GlommioError::IoError(source)
        | glommio::GlommioError::EnhancedIoError { source, .. } => {
            source.raw_os_error().unwrap_or(EIO)
        }
        _ => EIO,
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Both elements `a != b` of `items`, mutably.
fn two_mut<T>(items: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "two distinct slots");
    if a < b {
        let (left, right) = items.split_at_mut(b);
        (&mut left[a], &mut right[0])
    } else {
        let (left, right) = items.split_at_mut(a);
        (&mut right[0], &mut left[b])
    }
}

impl FileStorage {
    /// Opens (or creates) the log of `config.core` in `config.dir`, recovers it, and starts
    /// its driver task on the current glommio executor. Must be called from inside a glommio
    /// executor. See the module doc for the steps.
    pub async fn open(config: FileConfig) -> Result<Self, StorageError> {
        let mut wal = config.wal;
        wal.commit.durability = config.mode.to_wal();
        wal.writer.log_id = u32::from(config.core);
        wal.msg_id.partition = config.core;
        let segment_len = wal.writer.segment_len;
        let dir = config.dir.clone();
        let directory = glommio::io::Directory::create(&dir)
            .await
            .map_err(|error| io_error("create directory", &dir, error))?;

        // Every file of this core: the configured count, plus any an earlier run made beyond.
        let mut files = Vec::with_capacity(wal.segments.segments_max);
        for slot in 0..wal.segments.segments_max {
            files.push(SegmentFile::open(&config.file_path(slot), segment_len).await?);
        }
        loop {
            let path = config.file_path(files.len());
            match glommio::io::BufferedFile::open(&path).await {
                Ok(file) => {
                    file.close()
                        .await
                        .map_err(|error| io_error("close", &path, error))?;
                    files.push(SegmentFile::open(&path, segment_len).await?);
                }
                Err(_) => break,
            }
        }
        directory
            .sync()
            .await
            .map_err(|error| io_error("fdatasync directory", &dir, error))?;

        let images: Vec<&[u8]> = files.iter().map(|file| &file.map[..]).collect();
        let restored = match mesh_wal::restore(&images, &wal) {
            Ok(restored) => restored,
            Err(error) => return Err(recovery_error(&dir, &files, &images, error)),
        };
        let recovered = collect_unsettled(&restored.recovered, &images);
        drop(images);
        if let Some(truncated) = restored.recovered.truncated {
            tracing::warn!(
                dir = %dir.display(),
                segment_id = truncated.segment_id,
                offset = truncated.offset,
                next_seq = truncated.next_seq,
                discarded_records = truncated.discarded_records,
                discarded_segments = truncated.discarded_segments,
                "WAL recovery truncated a torn or unsynced tail"
            );
        }

        // Recovered records may sit only in the page cache (after a process crash): sync them
        // before anything is built on them.
        for live in &restored.recovered.live {
            let file = &files[live.slot];
            file.file
                .fdatasync()
                .await
                .map_err(|error| io_error("fdatasync", &file.path, error))?;
        }
        let mut free = restored.recovered.free_slots.clone();
        for &slot in &restored.recovered.recycle_slots {
            let file = &mut files[slot];
            file.map[..SEGMENT_HEADER_LEN].fill(0);
            file.file
                .fdatasync()
                .await
                .map_err(|error| io_error("fdatasync", &file.path, error))?;
            free.push(slot);
        }
        // Take free files lowest slot first.
        free.sort_unstable_by(|a, b| b.cmp(a));

        let slot_of = restored
            .recovered
            .live
            .iter()
            .map(|live| (live.segment_id, live.slot))
            .collect();
        let active_slot = restored.recovered.resume.map(|resume| resume.slot);
        let next_seq = restored.recovered.next_seq;
        let watermark = Watermark::new(next_seq - 1);
        let notify = Rc::new(Notify::default());
        let state = State {
            dir,
            mode: config.mode,
            files,
            writer: restored.writer,
            commit: restored.commit,
            segments: restored.segments,
            dedup: restored.dedup,
            msg_ids: restored.msg_ids,
            slot_of,
            active_slot,
            free,
            checkpoint_due: false,
            pending_relocation: None,
            recovered: Some(recovered),
            watermark: watermark.clone(),
            notify: notify.clone(),
            origin: std::time::Instant::now(),
            scratch: Vec::new(),
        };
        let shared = Rc::new(Shared {
            state: RefCell::new(state),
            watermark,
            notify,
            closing: Cell::new(false),
            syncs_done: Cell::new(0),
            sync_latency: RefCell::new(SyncHistogram::default()),
        });
        let driver = glommio::spawn_local(drive(shared.clone())).detach();
        let storage = Self {
            shared,
            driver: RefCell::new(Some(driver)),
        };
        // A first durable msg_id block, so that allocate_msg_id works at once (the driver may
        // have appended it already): wait until everything appended so far is durable.
        let last = {
            let mut state = storage.shared.state.borrow_mut();
            state.top_up_reservation()?;
            state.last_ticket()
        };
        storage.wait_durable(last).await?;
        Ok(storage)
    }

    /// Syncs everything appended, stops the driver task and releases the files. Returns the
    /// fatal error if the log had failed.
    pub async fn close(self) -> Result<(), StorageError> {
        self.shared.closing.set(true);
        self.shared.notify.notify();
        let driver = self.driver.borrow_mut().take();
        if let Some(driver) = driver {
            driver.await;
        }
        match self.shared.watermark.failed() {
            Some(failed) => Err(failed.into()),
            None => Ok(()),
        }
    }

    /// Group-commit `fdatasync`s completed since open (start-up syncs not counted).
    pub fn syncs_completed(&self) -> u64 {
        self.shared.syncs_done.get()
    }

    /// Durations of the group-commit `fdatasync`s since open, from issue to the completion
    /// seen by the driver task (so it includes how late the executor polled the ring).
    pub fn sync_latency(&self) -> SyncHistogram {
        self.shared.sync_latency.borrow().clone()
    }

    /// Segment files currently holding no segment (free for a roll).
    pub fn free_segments(&self) -> usize {
        self.shared.state.borrow().free.len()
    }

    /// Live segments (the active one included).
    pub fn live_segments(&self) -> usize {
        self.shared.state.borrow().segments.live_segments()
    }

    /// The path of every segment file, by slot.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let state = self.shared.state.borrow();
        state.files.iter().map(|file| file.path.clone()).collect()
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.get_mut().take() {
            driver.cancel();
        }
    }
}

/// Maps a recovery failure to a typed error naming the file, segment and offset.
fn recovery_error(
    dir: &Path,
    files: &[SegmentFile],
    images: &[&[u8]],
    error: mesh_wal::Error,
) -> StorageError {
    let mesh_wal::Error::Recovery(recovery) = error else {
        return StorageError::Wal {
            dir: dir.to_path_buf(),
            source: error,
        };
    };
    let located = match recovery {
        RecoveryError::Corruption {
            segment_id, offset, ..
        }
        | RecoveryError::InvalidRecord {
            segment_id, offset, ..
        }
        | RecoveryError::SequenceMismatch {
            segment_id, offset, ..
        } => Some((segment_id, offset)),
        RecoveryError::SequenceGap {
            segment_id,
            end_offset,
            ..
        } => Some((segment_id, end_offset)),
        _ => None,
    };
    let path = located.and_then(|(segment_id, _)| {
        images.iter().position(|image| {
            SegmentHeader::decode(image).is_ok_and(|header| header.segment_id == segment_id)
        })
    });
    match (located, path) {
        (Some((segment_id, offset)), Some(slot)) => {
            let error = StorageError::Corruption {
                path: files[slot].path.clone(),
                segment_id,
                offset,
                source: recovery,
            };
            tracing::error!(%error, "WAL recovery refused the log; the node does not start");
            error
        }
        _ => StorageError::Wal {
            dir: dir.to_path_buf(),
            source: recovery.into(),
        },
    }
}

/// The MESSAGE records not settled and the INBOUND records not acked, in log order.
fn collect_unsettled(recovered: &mesh_wal::Recovered, images: &[&[u8]]) -> RecoveredState {
    let mut outbound: HashMap<MsgKey, (u64, Vec<u8>)> = HashMap::new();
    let mut inbound: HashMap<MsgKey, (u64, Vec<u8>)> = HashMap::new();
    for event in recovered.replay(images) {
        let ReplayEvent::Record { record, .. } = event else {
            continue;
        };
        match record.body {
            Body::Message { key, frame } => {
                outbound
                    .entry(key)
                    .or_insert_with(|| (record.seq, frame.to_vec()));
            }
            Body::Inbound { key, frame } => {
                inbound
                    .entry(key)
                    .or_insert_with(|| (record.seq, frame.to_vec()));
            }
            Body::Delivered { key } => {
                outbound.remove(&key);
            }
            Body::Acked { key } => {
                inbound.remove(&key);
            }
            Body::DedupCheckpoint { .. } | Body::MsgIdReservation(_) => {}
        }
    }
    let ordered = |map: HashMap<MsgKey, (u64, Vec<u8>)>| {
        let mut list: Vec<(u64, StoredMessage)> = map
            .into_iter()
            .map(|(key, (seq, frame))| (seq, StoredMessage { key, frame }))
            .collect();
        list.sort_unstable_by_key(|(seq, _)| *seq);
        list.into_iter().map(|(_, message)| message).collect()
    };
    RecoveredState {
        outbound: ordered(outbound),
        inbound: ordered(inbound),
        truncated: recovered.truncated,
    }
}

impl State {
    fn now(&self) -> mesh_wal::Instant {
        mesh_wal::Instant::from_micros(
            u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX),
        )
    }

    fn last_ticket(&self) -> Ticket {
        Ticket(self.writer.next_seq() - 1)
    }

    fn check_alive(&self) -> Result<(), StorageError> {
        match self.watermark.failed() {
            Some(failed) => Err(failed.into()),
            None => Ok(()),
        }
    }

    /// Stops the log for good.
    fn fail(&self, error: FatalError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %error, "WAL failed; the node must stop");
        self.watermark.fail(error);
        StorageError::Fatal(error)
    }

    fn busy(reason: BusyReason, retry_after: Option<Ticket>) -> StorageError {
        StorageError::Busy {
            reason,
            retry_after,
        }
    }

    /// Reports what the commit machine says is durable to everyone who waits for it.
    fn publish(&mut self) {
        if let Some(seq) = self.commit.poll_durable() {
            self.segments.handle_durable(seq);
            self.msg_ids.handle_durable(seq);
            self.watermark.advance(seq);
        }
    }

    /// Appends `body` to the active segment if it fits there (`None` if a roll is needed).
    fn try_append_here(&mut self, body: &Body<'_>) -> Result<Option<Appended>, StorageError> {
        let synced_seq = self.commit.synced_seq();
        let result = match self.active_slot {
            Some(slot) => self
                .writer
                .append(&mut self.files[slot].map, body, synced_seq),
            None => self.writer.append(&mut [], body, synced_seq),
        };
        let appended = match result {
            Ok(appended) => appended,
            Err(AppendError::NeedRoll { .. }) => return Ok(None),
            Err(AppendError::BodyTooLarge { len, limit }) => {
                return Err(StorageError::TooLarge { len, limit });
            }
            Err(other) => {
                return Err(StorageError::Wal {
                    dir: self.dir.clone(),
                    source: other.into(),
                });
            }
        };
        // The record is in the mapping: from here on a refusal means the state machines no
        // longer match the log, and the log stops.
        let now = self.now();
        if let Err(error) = self.commit.handle_append(&appended, now) {
            return Err(self.fail(FatalError::Commit(error)));
        }
        if self
            .segments
            .handle_record(appended.segment_id, appended.offset, appended.seq, body)
            .is_err()
        {
            return Err(self.fail(FatalError::Invariant(
                "segment tracker refused an appended record",
            )));
        }
        self.publish();
        self.notify.notify();
        Ok(Some(appended))
    }

    /// Appends `body`, rolling to a new segment when the active one is full.
    fn append(&mut self, body: &Body<'_>) -> Result<Appended, StorageError> {
        self.check_alive()?;
        for _ in 0..3 {
            if let Some(appended) = self.try_append_here(body)? {
                return Ok(appended);
            }
            self.roll()?;
            if self.checkpoint_due {
                self.checkpoint_due = false;
                self.write_checkpoint_here()?;
            }
        }
        Err(self.fail(FatalError::Invariant(
            "a record did not fit in a fresh segment",
        )))
    }

    /// Seals the active segment and starts a new one in a free file.
    fn roll(&mut self) -> Result<(), StorageError> {
        if !self.commit.can_roll() {
            return Err(State::busy(
                BusyReason::SyncsPending,
                Some(self.last_ticket()),
            ));
        }
        let Some(&new_slot) = self.free.last() else {
            return Err(State::busy(BusyReason::LogFull, None));
        };
        if !self.segments.can_open() {
            return Err(State::busy(BusyReason::LogFull, None));
        }
        let created_unix_us = unix_micros();
        let synced_seq = self.commit.synced_seq();
        let result = match self.active_slot {
            Some(old_slot) if old_slot != new_slot => {
                let (closing, opening) = two_mut(&mut self.files, old_slot, new_slot);
                self.writer.roll(
                    Some(&mut closing.map),
                    &mut opening.map,
                    created_unix_us,
                    synced_seq,
                )
            }
            _ => self.writer.roll(
                None,
                &mut self.files[new_slot].map,
                created_unix_us,
                synced_seq,
            ),
        };
        let rolled = result.map_err(|error| StorageError::Wal {
            dir: self.dir.clone(),
            source: error.into(),
        })?;
        self.free.pop();
        let now = self.now();
        if let Some(sealed) = rolled.sealed
            && let Err(error) = self
                .commit
                .handle_seal(sealed.segment_id, sealed.end_offset, now)
        {
            return Err(self.fail(FatalError::Commit(error)));
        }
        if self
            .segments
            .handle_segment_opened(rolled.segment_id)
            .is_err()
        {
            return Err(self.fail(FatalError::Invariant(
                "segment tracker refused a new segment",
            )));
        }
        self.slot_of.insert(rolled.segment_id, new_slot);
        self.active_slot = Some(new_slot);
        self.checkpoint_due = self.dedup.sources() > 0;
        self.notify.notify();
        Ok(())
    }

    /// A dedup checkpoint in the active segment, if it fits there (it always does right
    /// after a roll, unless the snapshot is over a quarter of a segment: then relocation
    /// writes it later).
    fn write_checkpoint_here(&mut self) -> Result<(), StorageError> {
        let mut snapshot = std::mem::take(&mut self.scratch);
        self.dedup.encode_snapshot(&mut snapshot);
        let limit = self
            .writer
            .config()
            .record_body_len_max
            .min(self.writer.config().segment_len / 4);
        let result = if snapshot.len() <= limit {
            self.try_append_here(&Body::DedupCheckpoint {
                snapshot: &snapshot,
            })
            .map(|_| ())
        } else {
            Ok(())
        };
        self.scratch = snapshot;
        result
    }

    /// Appends the msg_id reservation the allocator asks for, if any; returns its ticket.
    fn top_up_reservation(&mut self) -> Result<Option<Ticket>, StorageError> {
        let Some(reservation) = self.msg_ids.poll_reservation() else {
            return Ok(None);
        };
        let appended = self.append(&Body::MsgIdReservation(reservation))?;
        if self
            .msg_ids
            .handle_reservation_appended(reservation, appended.seq)
            .is_err()
        {
            return Err(self.fail(FatalError::Invariant(
                "msg_id allocator refused its own reservation",
            )));
        }
        // In mode `none` the record was durable before the allocator knew its seq.
        self.msg_ids.handle_durable(self.commit.durable_seq());
        Ok(Some(Ticket(appended.seq)))
    }

    /// Re-appends what the segment tracker asks to move out of the oldest segment.
    fn relocate(&mut self) -> Result<(), StorageError> {
        loop {
            let next = self
                .pending_relocation
                .take()
                .or_else(|| self.segments.poll_relocate());
            let Some(relocation) = next else {
                return Ok(());
            };
            let result = match relocation {
                Relocate::CopyRecord { segment_id, offset } => self.copy_record(segment_id, offset),
                Relocate::WriteDedupCheckpoint => {
                    let mut snapshot = std::mem::take(&mut self.scratch);
                    self.dedup.encode_snapshot(&mut snapshot);
                    let result = self
                        .append(&Body::DedupCheckpoint {
                            snapshot: &snapshot,
                        })
                        .map(|_| ());
                    self.scratch = snapshot;
                    result
                }
            };
            match result {
                Ok(()) => {}
                Err(error) if error.is_busy() => {
                    self.pending_relocation = Some(relocation);
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn copy_record(&mut self, segment_id: u64, offset: usize) -> Result<(), StorageError> {
        let Some(&slot) = self.slot_of.get(&segment_id) else {
            return Err(self.fail(FatalError::Invariant("relocation of a segment not live")));
        };
        let owned = match decode_at(&self.files[slot].map, offset, segment_id) {
            Ok((Entry::Data(record), _)) => match record.body {
                Body::Message { key, frame } => (Some(key), true, frame.to_vec(), None),
                Body::Inbound { key, frame } => (Some(key), false, frame.to_vec(), None),
                Body::MsgIdReservation(reservation) => (None, false, Vec::new(), Some(reservation)),
                _ => return Ok(()),
            },
            _ => {
                return Err(self.fail(FatalError::Invariant(
                    "a record to relocate does not decode",
                )));
            }
        };
        let body = match owned {
            (Some(key), true, ref frame, _) => Body::Message { key, frame },
            (Some(key), false, ref frame, _) => Body::Inbound { key, frame },
            (None, _, _, Some(reservation)) => Body::MsgIdReservation(reservation),
            _ => return Ok(()),
        };
        self.append(&body).map(|_| ())
    }
}

/// The driver task of one log: syncs, durability, relocation, recycling, timers.
async fn drive(shared: Rc<Shared>) {
    loop {
        // 1. The sync the group-commit machine asks for.
        let sync = {
            let mut state = shared.state.borrow_mut();
            if shared.closing.get() {
                // Closing: every waiting group is due now.
                state
                    .commit
                    .handle_timeout(mesh_wal::Instant::from_micros(u64::MAX));
            }
            match state.commit.poll_action() {
                Some(Action::Sync {
                    sync_id,
                    segment_id,
                    ..
                }) => {
                    let Some(&slot) = state.slot_of.get(&segment_id) else {
                        state.fail(FatalError::Invariant("sync of a segment not live"));
                        return;
                    };
                    Some((sync_id, state.files[slot].file.clone()))
                }
                None => None,
            }
        };
        if let Some((sync_id, file)) = sync {
            let issued = std::time::Instant::now();
            let result = file.fdatasync().await;
            let mut state = shared.state.borrow_mut();
            match result {
                Ok(()) => {
                    shared.syncs_done.set(shared.syncs_done.get() + 1);
                    shared
                        .sync_latency
                        .borrow_mut()
                        .record_us(u64::try_from(issued.elapsed().as_micros()).unwrap_or(u64::MAX));
                    let now = state.now();
                    if let Err(error) = state.commit.handle_sync_done(sync_id, now) {
                        state.fail(FatalError::Commit(error));
                        return;
                    }
                    state.publish();
                }
                Err(error) => {
                    let errno = errno_of(&error);
                    tracing::error!(%error, "fdatasync of a WAL segment failed");
                    let failed = state.commit.handle_sync_failed(sync_id, errno);
                    state.fail(FatalError::Commit(failed));
                    return;
                }
            }
            continue;
        }

        // 2. Relocations (and the msg_id reservation, kept ahead of use). Not when closing:
        // they only make room for later appends, and with a log full of unsettled records
        // each relocation refills what the recycle after it frees, so close would never end.
        if !shared.closing.get() {
            let mut state = shared.state.borrow_mut();
            let result = state
                .relocate()
                .and_then(|()| state.top_up_reservation().map(|_| ()));
            match result {
                Err(error) if error.is_fatal() => return,
                Err(error) if !error.is_busy() => {
                    tracing::error!(%error, "WAL relocation failed");
                }
                _ => {}
            }
        }

        // 3. Recycling, oldest segment first (not when closing, as above).
        let recycle = if shared.closing.get() {
            None
        } else {
            let mut state = shared.state.borrow_mut();
            match state.segments.poll_recycle() {
                Some(segment_id) => {
                    let Some(slot) = state.slot_of.remove(&segment_id) else {
                        state.fail(FatalError::Invariant("recycle of a segment not live"));
                        return;
                    };
                    state.files[slot].map[..SEGMENT_HEADER_LEN].fill(0);
                    Some((segment_id, slot, state.files[slot].file.clone()))
                }
                None => None,
            }
        };
        if let Some((segment_id, slot, file)) = recycle {
            let result = file.fdatasync().await;
            let mut state = shared.state.borrow_mut();
            match result {
                Ok(()) => {
                    if state.segments.handle_recycled(segment_id).is_err() {
                        state.fail(FatalError::Invariant("tracker refused a recycle"));
                        return;
                    }
                    state.free.push(slot);
                    shared.watermark.progress();
                }
                Err(error) => {
                    state.fail(FatalError::RecycleSync {
                        segment_id,
                        errno: errno_of(&error),
                    });
                    return;
                }
            }
            continue;
        }

        // 4. Nothing to do: wait for an append, or for the batch deadline.
        let wait_us = {
            let state = shared.state.borrow();
            if shared.closing.get() && state.commit.pending_groups() == 0 {
                return;
            }
            state
                .commit
                .poll_timeout()
                .map(|deadline| deadline.as_micros().saturating_sub(state.now().as_micros()))
        };
        match wait_us {
            Some(0) => {}
            Some(wait_us) => {
                futures_lite::future::or(shared.notify.notified(), async {
                    glommio::timer::sleep(Duration::from_micros(wait_us)).await;
                })
                .await;
            }
            None => shared.notify.notified().await,
        }
        let mut state = shared.state.borrow_mut();
        let now = state.now();
        state.commit.handle_timeout(now);
    }
}

impl Storage for FileStorage {
    fn mode(&self) -> DurabilityMode {
        self.shared.state.borrow().mode
    }

    fn append_outbound(&self, key: MsgKey, frame: &[u8]) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        if !state.segments.has_room() {
            return Err(State::busy(BusyReason::TooManyUnsettled, None));
        }
        let appended = state.append(&Body::Message { key, frame })?;
        Ok(Ticket(appended.seq))
    }

    fn mark_settled(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        let appended = state.append(&Body::Delivered { key })?;
        Ok(Ticket(appended.seq))
    }

    fn append_inbound(&self, key: MsgKey, frame: &[u8]) -> Result<Inbound, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        if state.dedup.check(key.src_node, key.msg_id) != Verdict::New {
            return Ok(Inbound::Duplicate(state.last_ticket()));
        }
        let known_source = state
            .dedup
            .high_water_mark(key.src_node, partition_of(key.msg_id))
            .is_some();
        let sources_max = usize::try_from(state.dedup.config().sources_max).unwrap_or(usize::MAX);
        if !known_source && state.dedup.sources() >= sources_max {
            return Err(State::busy(BusyReason::TooManySources, None));
        }
        if !state.segments.has_room() {
            return Err(State::busy(BusyReason::TooManyUnsettled, None));
        }
        let appended = state.append(&Body::Inbound { key, frame })?;
        // Recorded only once the record is in the log: a refused append must not make a
        // retransmission look like a duplicate.
        if state
            .dedup
            .check_and_insert(key.src_node, key.msg_id)
            .is_err()
        {
            return Err(state.fail(FatalError::Invariant(
                "dedup window refused a checked source",
            )));
        }
        Ok(Inbound::New(Ticket(appended.seq)))
    }

    fn mark_acked(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        let appended = state.append(&Body::Acked { key })?;
        Ok(Ticket(appended.seq))
    }

    fn allocate_msg_id(&self) -> Result<u64, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        let id = match state.msg_ids.allocate() {
            Ok(id) => id,
            Err(MsgIdError::NoneReserved { .. }) => {
                state.top_up_reservation()?;
                return Err(State::busy(
                    BusyReason::MsgIdsPending,
                    Some(state.last_ticket()),
                ));
            }
            Err(error) => return Err(StorageError::Config(error.to_string())),
        };
        // Keep the next block ahead of use; back-pressure here is retried on the next call.
        match state.top_up_reservation() {
            Err(error) if error.is_fatal() => Err(error),
            _ => Ok(id),
        }
    }

    fn durable(&self) -> Ticket {
        Ticket(self.shared.watermark.durable())
    }

    fn wait_durable(&self, ticket: Ticket) -> WaitDurable {
        WaitDurable::new(self.shared.watermark.clone(), ticket)
    }

    fn wait_progress(&self) -> WaitProgress {
        WaitProgress::new(self.shared.watermark.clone())
    }

    fn is_duplicate(&self, key: MsgKey) -> bool {
        self.shared
            .state
            .borrow()
            .dedup
            .check(key.src_node, key.msg_id)
            != Verdict::New
    }

    fn take_recovered(&self) -> RecoveredState {
        self.shared
            .state
            .borrow_mut()
            .recovered
            .take()
            .unwrap_or_default()
    }
}
