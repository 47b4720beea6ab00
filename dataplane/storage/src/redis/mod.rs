//! The `redis` backend: the state of one core lives in a real Redis server, so a replacement
//! node with the same node id can take over a failed node's work.
//!
//! # What is stored
//!
//! Unsettled outbound messages, unacked inbound messages, the dedup state (per-source
//! high-water mark + window) and the msg_id reservation counter of node `N`, core `C`, under
//! keys that all start with `mesh:{N:C}:` (both decimal; the braces are a Redis Cluster hash tag,
//! so one `MULTI` … `EXEC` may span them):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `mesh:{N:C}:out` | hash | unsettled outbound messages: field = message key, value = message value |
//! | `mesh:{N:C}:in` | hash | unacked inbound messages, same encoding |
//! | `mesh:{N:C}:dedup` | string | the last dedup checkpoint: a `DEDUP_CHECKPOINT` snapshot of `mesh_wal::dedup` (its format, little-endian) |
//! | `mesh:{N:C}:seen` | hash | inbound message keys recorded since that checkpoint: field = message key, value empty |
//! | `mesh:{N:C}:msg_ids` | string (integer) | msg_ids of partition `C` reserved so far; grows by `INCRBY block_len` |
//!
//! | what | offset | size | field |
//! |---|---|---|---|
//! | message key (hash field) | 0 | 8 | src_node, u64 big-endian |
//! | | 8 | 8 | msg_id, u64 big-endian |
//! | message value | 0 | 8 | append seq, u64 big-endian: recovery sorts by it (append order) |
//! | | 8 | n | the frame, exactly as appended |
//!
//! The dedup state is the checkpoint with every key of `seen` replayed. A checkpoint (`SET
//! dedup`, `DEL seen`, in one transaction) is written once `seen` holds `dedup_checkpoint_min`
//! keys or a sixteenth of the snapshot's length, so what Redis holds stays bounded. The block
//! of a reservation is the last `block_len` ids of the `INCRBY` answer (counted from the
//! partition's first id).
//!
//! A [`RedisStorage`] opened for the same node id and core, on any host, finds all of it:
//! [`Storage::take_recovered`] returns the unsettled outbound and unacked inbound messages in
//! append order, a retransmission already seen is reported [`Inbound::Duplicate`], and msg_ids
//! continue after every block ever reserved.
//!
//! Takeover assumes the failed node is really gone: nothing fences a node that is merely
//! partitioned away and still writes (its writes and the replacement's would mix).
//!
//! # Durability: what "durable" means here
//!
//! A ticket is durable once Redis answered the `MULTI` … `EXEC` transaction that carries the
//! write, that is once the write is **in the Redis server's memory**. No PERSISTED or DELIVERED
//! is sent before that. Whether it survives a crash of the *Redis server* is the server's
//! configuration, not this backend's: with `appendonly yes` and `appendfsync always` Redis
//! fsyncs its AOF before it answers (nothing confirmed is lost); with `appendfsync everysec`
//! (Redis's default when the AOF is on) up to about a second of confirmed writes can be lost;
//! with RDB snapshots only, everything since the last snapshot; with no persistence,
//! everything. A lost msg_id counter means msg_ids may repeat after the server restarts, so run
//! the server with the AOF on. Replicas do not change this: a reply comes from the primary
//! before replication.
//!
//! The [`DurabilityMode`]: `always` and `batch` behave the same (a ticket is durable once Redis
//! confirmed it; writes queued while a transaction is in flight share the next one, which is
//! this backend's group commit); `none` reports every write durable at once, whether or not
//! Redis has it (msg_ids still come only from confirmed reservations).
//!
//! # Never blocking the core
//!
//! The trait is synchronous and used from a glommio executor thread that must never block on
//! I/O. So an append updates the core's own state (dedup window, key sets, msg_id blocks),
//! queues the write, wakes the driver task and returns its [`Ticket`] at once. The **driver
//! task** (one per storage, spawned on the caller's executor by [`RedisStorage::open`], like
//! the `file` backend's) hands the queued writes to the **I/O thread** (one std thread per
//! storage, which owns the blocking connection) over a crossbeam channel, and takes in its
//! answers from a second channel; the I/O thread wakes it through an [`AtomicWaker`] (a glommio
//! waker may be woken from another thread). Only an answer from Redis advances the durable
//! watermark.
//!
//! # Connection loss and errors
//!
//! The I/O thread keeps every unconfirmed write, retries with a jittered exponential backoff
//! (`backoff_min` doubling up to `backoff_max`), logs every failure (`error` for the first,
//! `warn` for the next, `info` once Redis answers again), counts them ([`RedisStats`]), and
//! resends the writes in order after reconnecting: `HSET`, `HDEL`, `SET` and `DEL` replayed in
//! order are idempotent, so a transaction that was executed but whose answer was lost does no
//! harm (`INCRBY` is not, and a lost answer only skips a block of msg_ids). Meanwhile appends
//! are accepted until `queue_writes_max` writes or `queue_bytes_max` bytes wait for
//! confirmation; then they are refused with [`StorageError::Busy`] and
//! [`BusyReason::WritesPending`]. An error reply that is neither a connection problem nor
//! transient (e.g. `WRONGTYPE`, `NOPERM`) fails the log: waiters and later calls get
//! [`StorageError::Fatal`] with [`FatalError::Redis`], never a panic. At start,
//! [`RedisStorage::open`] retries for `open_timeout`, then fails with [`StorageError::Redis`].

mod backoff;
mod config;
mod io;
mod layout;
mod msg_ids;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use glommio::task::JoinHandle;
use mesh_wal::{DedupWindow, MsgKey, Verdict};

pub use self::config::RedisConfig;
use self::config::redacted;
use self::io::{Counters, Endpoints, FromIo, Queued, Settings, ToIo, Write};
use self::layout::{FIELD_LEN, Keys, SEQ_LEN};
use self::msg_ids::MsgIdBlocks;
use crate::durable::{Ticket, WaitDurable, WaitProgress, Watermark};
use crate::error::{BusyReason, FatalError, StorageError};
use crate::{DurabilityMode, Inbound, RecoveredState, Storage};

/// Counters of one [`RedisStorage`] (for metrics and tests): a snapshot, see
/// [`RedisStorage::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Whether the I/O thread holds a connection it believes open.
    pub connected: bool,
    /// Connections made (the first one included).
    pub connects: u64,
    /// Connection attempts that failed and requests that lost their connection (refused,
    /// reset, timed out).
    pub connection_errors: u64,
    /// Transient error replies retried (`OOM`, `LOADING`, `BUSY`, ...).
    pub server_errors: u64,
    /// Transactions (and reservations) Redis confirmed.
    pub transactions: u64,
    /// Writes Redis confirmed.
    pub writes_confirmed: u64,
    /// Writes carried by requests that failed and are sent again (counted once per failed
    /// attempt).
    pub writes_resent: u64,
    /// Writes accepted and not confirmed yet.
    pub writes_pending: u64,
    /// Appends refused with [`BusyReason::WritesPending`].
    pub busy_refusals: u64,
}

/// A one-shot wake-up of the driver task by the core's own appends.
#[derive(Debug, Default)]
struct Kick {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    fn kick(&self) {
        if !self.set.replace(true)
            && let Some(waker) = self.waker.borrow_mut().take()
        {
            waker.wake();
        }
    }
}

/// Everything of one core's log, behind the `RefCell` of [`Shared`]; never borrowed across
/// an `.await`.
#[derive(Debug)]
struct State {
    config: RedisConfig,
    /// The ticket of the next write.
    next_seq: u64,
    /// The last ticket Redis confirmed.
    confirmed_seq: u64,
    outbound: HashSet<MsgKey>,
    inbound: HashSet<MsgKey>,
    dedup: DedupWindow,
    /// Inbound keys recorded since the last dedup checkpoint.
    seen_since_checkpoint: usize,
    msg_ids: MsgIdBlocks,
    /// Writes not handed to the I/O thread yet (the driver task does at its next turn).
    batch: Vec<Queued>,
    writes_pending: usize,
    bytes_pending: usize,
    busy_refusals: u64,
    recovered: Option<RecoveredState>,
    close_sent: bool,
    closed: bool,
    watermark: Rc<Watermark>,
    kick: Rc<Kick>,
}

impl State {
    fn check_alive(&self) -> Result<(), StorageError> {
        match self.watermark.failed() {
            Some(failed) => Err(failed.into()),
            None => Ok(()),
        }
    }

    fn check_frame(&self, frame: &[u8]) -> Result<(), StorageError> {
        if frame.len() > self.config.frame_len_max {
            return Err(StorageError::TooLarge {
                len: frame.len(),
                limit: self.config.frame_len_max,
            });
        }
        Ok(())
    }

    fn check_entries(&self) -> Result<(), StorageError> {
        if self.outbound.len() + self.inbound.len() >= self.config.entries_max {
            return Err(StorageError::Busy {
                reason: BusyReason::TooManyUnsettled,
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Room for one more write of `bytes` in the queue of unconfirmed writes.
    fn check_queue(&mut self, bytes: usize) -> Result<(), StorageError> {
        if self.writes_pending >= self.config.queue_writes_max
            || self.bytes_pending + bytes > self.config.queue_bytes_max
        {
            self.busy_refusals += 1;
            let retry_after = (self.config.mode != DurabilityMode::None)
                .then_some(Ticket(self.confirmed_seq + 1));
            return Err(StorageError::Busy {
                reason: BusyReason::WritesPending,
                retry_after,
            });
        }
        Ok(())
    }

    /// Queues the write `make(seq)` under the next ticket.
    fn queue(&mut self, make: impl FnOnce(u64) -> Write) -> Ticket {
        let seq = self.next_seq;
        self.next_seq += 1;
        let write = make(seq);
        self.writes_pending += 1;
        self.bytes_pending += write.bytes();
        self.batch.push(Queued { seq, write });
        if self.config.mode == DurabilityMode::None {
            self.watermark.advance(seq);
        }
        self.kick.kick();
        Ticket(seq)
    }

    /// The last ticket handed out (what a duplicate waits for: it covers the earlier copy).
    fn last_ticket(&self) -> Ticket {
        Ticket(self.next_seq - 1)
    }

    /// Queues the msg_id reservation the blocks ask for, if any.
    fn top_up_msg_ids(&mut self) {
        if self.msg_ids.wants_reservation() {
            let block_len = self.msg_ids.block_len();
            let ticket = self.queue(|_| Write::Reserve { block_len });
            self.msg_ids.handle_requested(ticket.0);
        }
    }

    /// Adds a dedup checkpoint to the batch if enough keys were recorded since the last one.
    fn checkpoint_if_due(&mut self) {
        let due = self
            .config
            .dedup_checkpoint_min
            .max(self.dedup.snapshot_len() / FIELD_LEN);
        if self.seen_since_checkpoint < due {
            return;
        }
        let mut snapshot = Vec::new();
        self.dedup.encode_snapshot(&mut snapshot);
        self.queue(|_| Write::Checkpoint { snapshot });
        self.seen_since_checkpoint = 0;
    }

    fn fail(&mut self, error: FatalError) {
        tracing::error!(
            node_id = self.config.node_id,
            core = self.config.core,
            %error,
            "redis storage failed; the node must stop"
        );
        self.watermark.fail(error);
    }

    fn handle(&mut self, message: &FromIo) {
        match message {
            FromIo::Confirmed {
                up_to,
                writes,
                bytes,
                reserved_total,
            } => {
                let (up_to, writes, bytes) = (*up_to, *writes, *bytes);
                self.writes_pending = self.writes_pending.saturating_sub(writes);
                self.bytes_pending = self.bytes_pending.saturating_sub(bytes);
                self.confirmed_seq = self.confirmed_seq.max(up_to);
                if let Some(total) = *reserved_total {
                    self.msg_ids.handle_reserved(total);
                }
                if up_to > self.watermark.durable() {
                    self.watermark.advance(up_to);
                } else {
                    // Mode `none` (durable already) or a reservation: room or ids were freed.
                    self.watermark.progress();
                }
            }
            FromIo::Failed(refusal) => self.fail(FatalError::Redis(*refusal)),
            FromIo::Closed => self.closed = true,
            FromIo::Loaded(_) => self.fail(FatalError::Invariant(
                "the redis I/O thread reported a second load",
            )),
        }
    }
}

struct Shared {
    state: RefCell<State>,
    watermark: Rc<Watermark>,
    kick: Rc<Kick>,
    to_io: Sender<ToIo>,
    from_io: Receiver<FromIo>,
    io_waker: Arc<AtomicWaker>,
    counters: Arc<Counters>,
    closing: Cell<bool>,
}

impl Shared {
    /// One turn of the driver task: hands the queued writes to the I/O thread and takes in its
    /// answers. `false` once the log is closed or failed.
    fn turn(&self) -> bool {
        let mut state = self.state.borrow_mut();
        // Answers first: a thread that stopped on a refusal has reported why.
        let io_alive = self.take_reports(&mut state);
        if state.watermark.failed().is_some() || state.closed {
            return false;
        }
        let mut sent = io_alive;
        if sent && !state.batch.is_empty() {
            state.checkpoint_if_due();
            let batch = std::mem::take(&mut state.batch);
            sent = self.to_io.send(ToIo::Writes(batch)).is_ok();
        }
        if sent && self.closing.get() && !state.close_sent {
            state.close_sent = true;
            sent = self.to_io.send(ToIo::Close).is_ok();
        }
        if !sent {
            self.take_reports(&mut state);
            if state.watermark.failed().is_none() && !state.closed {
                state.fail(FatalError::Invariant("the redis I/O thread stopped"));
            }
            return false;
        }
        true
    }

    /// Handles every report of the I/O thread; `false` if the thread is gone.
    fn take_reports(&self, state: &mut State) -> bool {
        loop {
            match self.from_io.try_recv() {
                Ok(message) => state.handle(&message),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }
}

/// Resolves when the core kicked the driver or the I/O thread reported something.
struct Wakeup<'a> {
    shared: &'a Shared,
}

impl Future for Wakeup<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self.shared;
        if shared.kick.set.replace(false) {
            return Poll::Ready(());
        }
        shared.io_waker.register(cx.waker());
        if !shared.from_io.is_empty() {
            return Poll::Ready(());
        }
        *shared.kick.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Resolves with the next report of the I/O thread (`None`: the thread is gone).
struct NextReport<'a> {
    from_io: &'a Receiver<FromIo>,
    waker: &'a AtomicWaker,
}

impl Future for NextReport<'_> {
    type Output = Option<FromIo>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FromIo>> {
        for attempt in 0..2 {
            match self.from_io.try_recv() {
                Ok(message) => return Poll::Ready(Some(message)),
                Err(TryRecvError::Disconnected) => return Poll::Ready(None),
                Err(TryRecvError::Empty) if attempt == 0 => self.waker.register(cx.waker()),
                Err(TryRecvError::Empty) => {}
            }
        }
        Poll::Pending
    }
}

/// The driver task of one storage.
async fn drive(shared: Rc<Shared>) {
    while shared.turn() {
        Wakeup { shared: &shared }.await;
    }
}

/// The `redis` backend of one core. Create it with [`RedisStorage::open`] on the core's glommio
/// executor; it starts its I/O thread and spawns its driver task there. Dropping it abandons
/// the writes Redis has not confirmed (as a crash would) and stops both; [`RedisStorage::close`]
/// waits until Redis confirmed everything first.
pub struct RedisStorage {
    shared: Rc<Shared>,
    driver: RefCell<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.borrow();
        f.debug_struct("RedisStorage")
            .field("url", &redacted(&state.config.url))
            .field("node_id", &state.config.node_id)
            .field("core", &state.config.core)
            .field("mode", &state.config.mode)
            .field("next_seq", &state.next_seq)
            .field("durable", &self.shared.watermark.durable())
            .field("writes_pending", &state.writes_pending)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to `config.url`, loads the state of (`config.node_id`, `config.core`), starts
    /// the I/O thread and the driver task (on the current glommio executor: call it from inside
    /// one), and waits for a first confirmed msg_id block. Unreachable for `open_timeout`,
    /// refused, or undecodable state: [`StorageError::Redis`]; a bad URL or bound:
    /// [`StorageError::Config`].
    pub async fn open(config: RedisConfig) -> Result<Self, StorageError> {
        config.validate()?;
        DedupWindow::new(config.dedup).map_err(|error| StorageError::Config(error.to_string()))?;
        let client = ::redis::Client::open(config.url.as_str()).map_err(|error| {
            StorageError::Config(format!("redis URL `{}`: {error}", redacted(&config.url)))
        })?;
        let keys = Keys::new(config.node_id, config.core);
        let settings = Settings {
            keys,
            dedup: config.dedup,
            node_id: config.node_id,
            core: config.core,
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
            open_timeout: config.open_timeout,
            pipeline_writes_max: config.pipeline_writes_max,
            pipeline_bytes_max: config.pipeline_bytes_max,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
            jitter_seed: config.jitter_seed,
        };
        let (to_io, io_in) = crossbeam_channel::unbounded();
        let (io_out, from_io) = crossbeam_channel::unbounded();
        let io_waker = Arc::new(AtomicWaker::new());
        let counters = Arc::new(Counters::default());
        let endpoints = Endpoints {
            to_io: io_in,
            from_io: io_out,
            waker: io_waker.clone(),
            counters: counters.clone(),
        };
        // The thread is detached: it ends by itself once this storage is dropped or closed.
        io::spawn(client, settings, endpoints).map_err(|error| StorageError::Redis {
            op: "start the I/O thread",
            detail: error.to_string(),
        })?;

        let report = NextReport {
            from_io: &from_io,
            waker: &io_waker,
        }
        .await;
        let loaded = match report {
            Some(FromIo::Loaded(loaded)) => (*loaded)?,
            _ => {
                return Err(StorageError::Redis {
                    op: "load",
                    detail: "the I/O thread stopped before it reported the load".to_owned(),
                });
            }
        };
        if !loaded.outbound.is_empty() || !loaded.inbound.is_empty() {
            tracing::info!(
                node_id = config.node_id,
                core = config.core,
                outbound = loaded.outbound.len(),
                inbound = loaded.inbound.len(),
                "recovered unsettled messages from Redis"
            );
        }
        let watermark = Watermark::new(loaded.last_seq);
        let kick = Rc::new(Kick::default());
        let state = State {
            next_seq: loaded.last_seq + 1,
            confirmed_seq: loaded.last_seq,
            outbound: loaded.outbound.iter().map(|message| message.key).collect(),
            inbound: loaded.inbound.iter().map(|message| message.key).collect(),
            dedup: loaded.dedup,
            seen_since_checkpoint: loaded.seen_since_checkpoint,
            msg_ids: MsgIdBlocks::new(config.core, config.msg_id_block_len),
            batch: Vec::new(),
            writes_pending: 0,
            bytes_pending: 0,
            busy_refusals: 0,
            recovered: Some(RecoveredState {
                outbound: loaded.outbound,
                inbound: loaded.inbound,
                truncated: None,
            }),
            close_sent: false,
            closed: false,
            watermark: watermark.clone(),
            kick: kick.clone(),
            config,
        };
        let shared = Rc::new(Shared {
            state: RefCell::new(state),
            watermark,
            kick,
            to_io,
            from_io,
            io_waker,
            counters,
            closing: Cell::new(false),
        });
        let driver = glommio::spawn_local(drive(shared.clone())).detach();
        let storage = Self {
            shared,
            driver: RefCell::new(Some(driver)),
        };
        // A first confirmed msg_id block, so that allocate_msg_id works at once.
        loop {
            let progress = {
                let mut state = storage.shared.state.borrow_mut();
                state.check_alive()?;
                state.top_up_msg_ids();
                if state.msg_ids.available() > 0 || state.msg_ids.exhausted() {
                    break;
                }
                storage.wait_progress()
            };
            progress.await?;
        }
        Ok(storage)
    }

    /// Waits until Redis confirmed every write, then stops the I/O thread and the driver task.
    /// While Redis is unreachable this keeps waiting (bound it with a timeout if needed).
    /// Returns the fatal error if the log had failed.
    pub async fn close(self) -> Result<(), StorageError> {
        self.shared.closing.set(true);
        self.shared.kick.kick();
        let driver = self.driver.borrow_mut().take();
        if let Some(driver) = driver {
            driver.await;
        }
        match self.shared.watermark.failed() {
            Some(failed) => Err(failed.into()),
            None => Ok(()),
        }
    }

    /// Counters of the connection and the queue.
    pub fn stats(&self) -> RedisStats {
        let counters = &self.shared.counters;
        let state = self.shared.state.borrow();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        RedisStats {
            connected: counters.connected.load(Ordering::Relaxed),
            connects: load(&counters.connects),
            connection_errors: load(&counters.connection_errors),
            server_errors: load(&counters.server_errors),
            transactions: load(&counters.transactions),
            writes_confirmed: load(&counters.writes_confirmed),
            writes_resent: load(&counters.writes_resent),
            writes_pending: u64::try_from(state.writes_pending).unwrap_or(u64::MAX),
            busy_refusals: state.busy_refusals,
        }
    }
}

impl Drop for RedisStorage {
    fn drop(&mut self) {
        // Ends the I/O thread at once (after a request in flight); after `close` it is gone
        // already and the message goes nowhere.
        if self.shared.to_io.send(ToIo::Stop).is_err() {
            tracing::trace!("redis I/O thread already stopped");
        }
        if let Some(driver) = self.driver.get_mut().take() {
            driver.cancel();
        }
    }
}

impl Storage for RedisStorage {
    fn mode(&self) -> DurabilityMode {
        self.shared.state.borrow().config.mode
    }

    fn append_outbound(&self, key: MsgKey, frame: &[u8]) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        state.check_frame(frame)?;
        if !state.outbound.contains(&key) {
            state.check_entries()?;
        }
        state.check_queue(SEQ_LEN + frame.len())?;
        state.outbound.insert(key);
        Ok(state.queue(|seq| Write::Outbound {
            key,
            value: layout::encode_message(seq, frame),
        }))
    }

    fn mark_settled(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        state.check_queue(0)?;
        state.outbound.remove(&key);
        Ok(state.queue(|_| Write::Settle { key }))
    }

    fn append_inbound(&self, key: MsgKey, frame: &[u8]) -> Result<Inbound, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        if state.dedup.check(key.src_node, key.msg_id) != Verdict::New {
            return Ok(Inbound::Duplicate(state.last_ticket()));
        }
        state.check_frame(frame)?;
        let known_source = state
            .dedup
            .high_water_mark(key.src_node, mesh_wal::msg_id::partition_of(key.msg_id))
            .is_some();
        let sources_max = usize::try_from(state.dedup.config().sources_max).unwrap_or(usize::MAX);
        if !known_source && state.dedup.sources() >= sources_max {
            return Err(StorageError::Busy {
                reason: BusyReason::TooManySources,
                retry_after: None,
            });
        }
        state.check_entries()?;
        state.check_queue(SEQ_LEN + frame.len())?;
        // Recorded only once the write is queued: a refused append must not make a
        // retransmission look like a duplicate.
        if state
            .dedup
            .check_and_insert(key.src_node, key.msg_id)
            .is_err()
        {
            let error = FatalError::Invariant("dedup window refused a checked source");
            state.fail(error);
            return Err(error.into());
        }
        state.inbound.insert(key);
        state.seen_since_checkpoint += 1;
        Ok(Inbound::New(state.queue(|seq| Write::Inbound {
            key,
            value: layout::encode_message(seq, frame),
        })))
    }

    fn mark_acked(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        state.check_queue(0)?;
        state.inbound.remove(&key);
        Ok(state.queue(|_| Write::Ack { key }))
    }

    fn allocate_msg_id(&self) -> Result<u64, StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_alive()?;
        let id = state.msg_ids.allocate();
        // Keep the next block ahead of use.
        state.top_up_msg_ids();
        match id {
            Some(id) => Ok(id),
            None if state.msg_ids.exhausted() => Err(StorageError::Config(format!(
                "msg_id space of partition {} exhausted",
                state.config.core
            ))),
            None => {
                let retry_after = state
                    .msg_ids
                    .pending()
                    .filter(|_| state.config.mode != DurabilityMode::None)
                    .map(Ticket);
                Err(StorageError::Busy {
                    reason: BusyReason::MsgIdsPending,
                    retry_after,
                })
            }
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
