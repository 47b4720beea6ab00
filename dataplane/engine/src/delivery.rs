//! Exactly-once delivery on one core (SPEC §5): the shell that drives `mesh-delivery`'s
//! [`Outbox`] and [`Inbox`] with this core's [`Storage`].
//!
//! **Origin.** A native client's DATA frame gets a msg_id from the core's storage (never reused
//! across restarts), is stamped in place, appended to the WAL and handed to the outbox. Once the
//! record is durable the client hears PERSISTED (a receipt frame) and the message leaves; it is
//! kept, and retransmitted on timeout, when a peer comes up and when routes change, until the
//! destination's DELIVERED (and, if the client asked, its application's ACK) arrives; then its
//! record is settled. DELIVERED / ACK / NACK addressed to this node go to the core that owns
//! the msg_id's partition (the core that allocated it).
//!
//! **Destination.** DATA addressed to this node goes to the core that owns its source
//! (`src_node % cores`), which deduplicates by (src_node, msg_id) through the storage's
//! persistent window, appends new messages to its inbound queue, answers DELIVERED once the
//! record is durable (and again for every retransmission), offers each message to a native
//! subscriber until it is acked (redelivering after a timeout), records the ack and sends ACK
//! to the origin when asked.
//!
//! **Transit** nodes keep no per-message state: none of this runs for frames that only pass.
//!
//! **Chunked messages** (larger than one frame) are tracked as one message: the origin's
//! connection reassembles a client's chunks, the message gets one msg_id and is stored as its
//! chunk frames back to back in one record (so at most the storage's record limit, three
//! quarters of a WAL segment and at most 16 MiB; a larger one fails with FAILED), and every transmission sends all its chunks. The destination
//! reassembles them (bounded, with a timeout; chunks a retransmission repeats fill the gaps),
//! deduplicates and stores the whole message, and offers all its chunks to the subscriber.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::timer::Timer;
use mesh_delivery::{
    Inbox, InboxConfig, InboxTransmit, MessageStatus, Outbox, OutboxConfig, OutboxEvent, Retransmit,
};
use mesh_storage::{Inbound, MsgKey, Storage, StorageError, Ticket};
use mesh_wire::reassembly::{ChunkOutcome, Message, Reassembler, ReassemblyLimits};
use mesh_wire::{
    Flags, Frame, FrameKind, Limits, MetaLimits, Metadata, NackReason, OutFrame, chunk_message,
};
use tracing::{debug, error, info, warn};

use crate::core::{Core, CoreMsg, Dispatch, Push, SessionId, SubscriberTarget};
use crate::idempotency::IdempotencyKeys;
use crate::metrics::{CoreMetrics, DropReason};
use crate::queue::{OutItem, PeerQueue};
use crate::routes::Route;

/// How DATA addressed to this node is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Exactly once (SPEC §5): deduplicated, persisted, DELIVERED to the origin, offered to
    /// native subscribers until acked. Native clients' messages are persisted and tracked.
    #[default]
    ExactlyOnce,
    /// Forwarding only, at most once (like NATS core): frames addressed to this node go to a
    /// native subscriber or the control thread as they arrive; nothing is stored or answered.
    /// For benchmarks of the forwarding path and tests of routing.
    Raw,
}

/// Tuning of the delivery machines.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    /// How DATA for this node is handled.
    pub mode: DeliveryMode,
    /// The origin's retransmission and status bounds.
    pub outbox: OutboxConfig,
    /// The destination's redelivery and holding bounds.
    pub inbox: InboxConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::ExactlyOnce,
            outbox: OutboxConfig::default(),
            inbox: InboxConfig::default(),
        }
    }
}

/// Statuses a native client hears about its messages.
fn receipt_worthy(status: MessageStatus) -> bool {
    matches!(
        status,
        MessageStatus::Persisted
            | MessageStatus::Delivered
            | MessageStatus::AckSuccess
            | MessageStatus::AckFailure
            | MessageStatus::Undeliverable
            | MessageStatus::Failed
    )
}

/// A message as it travels: one frame, or the chunks of a larger message in order.
type Frames = Vec<OutFrame>;

/// A native client's message, as its connection hands it over.
#[derive(Debug)]
pub(crate) enum ClientMessage {
    /// One frame (the common case, no copy).
    Frame(Frame<BytesMut>),
    /// A chunked message, reassembled by the connection.
    Chunked(Message),
}

/// An outbound message the origin keeps until it is settled.
#[derive(Debug)]
struct OutMsg {
    /// The frames as stored (stamped with this node's id and the msg_id).
    frames: Frames,
    /// The native client that sent it and its own number for it, for receipts.
    client: Option<(SessionId, u64)>,
    /// Its idempotency key, released when the message is no longer tracked.
    key: Option<Box<[u8]>>,
}

/// What waits for a WAL ticket to become durable.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Outbound(u64),
    Inbound(u64, u64),
    /// A duplicate whose first copy must be durable before DELIVERED is repeated.
    Duplicate(u64, u64),
}

/// A wake-up for the core's delivery task.
#[derive(Debug, Default)]
struct Kick {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    fn kick(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct Kicked<'a>(&'a Kick);

impl Future for Kicked<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            Poll::Ready(())
        } else {
            *self.0.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Why a native client's message was not taken now; the connection waits and retries.
#[derive(Debug)]
pub(crate) struct NotNow(pub(crate) ClientMessage);

/// The delivery state of one core.
pub(crate) struct CoreDelivery {
    mode: DeliveryMode,
    storage: Rc<dyn Storage>,
    outbox: RefCell<Outbox>,
    inbox: RefCell<Inbox>,
    out_msgs: RefCell<HashMap<u64, OutMsg>>,
    in_msgs: RefCell<HashMap<(u64, u64), Frames>>,
    /// Chunks of inbound messages not yet complete.
    reassembler: RefCell<Reassembler>,
    pending: RefCell<VecDeque<(Ticket, Pending)>>,
    /// Transmissions that found the next hop's queue full, oldest first.
    blocked: RefCell<VecDeque<(Retransmit, Frames, Rc<PeerQueue>)>>,
    /// Settle / ack records refused by a busy log, retried in order.
    settle_later: RefCell<VecDeque<(MsgKey, bool)>>,
    /// Domains of the sources this core heard from, to address answers.
    domains: RefCell<HashMap<u64, u32>>,
    /// The node's idempotency keys, shared by its cores.
    keys: Arc<IdempotencyKeys>,
    /// Keys of finished messages, oldest first, still answered for a while (as many as the
    /// outbox keeps finished statuses).
    finished_keys: RefCell<VecDeque<(Box<[u8]>, u64)>>,
    finished_keys_max: usize,
    /// The latest ticket of anything appended.
    last_ticket: Cell<Ticket>,
    kick: Kick,
    in_flight_max: usize,
}

impl std::fmt::Debug for CoreDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDelivery")
            .field("mode", &self.mode)
            .field("in_flight", &self.outbox.borrow().in_flight())
            .field("held", &self.inbox.borrow().held())
            .finish_non_exhaustive()
    }
}

impl CoreDelivery {
    /// The delivery state over `storage`; what the storage recovered is queued again.
    pub(crate) fn new(
        cfg: DeliveryConfig,
        storage: Rc<dyn Storage>,
        limits: Limits,
        keys: Arc<IdempotencyKeys>,
    ) -> Result<Self, String> {
        let inbox = Inbox::new(cfg.inbox).map_err(|e| e.to_string())?;
        let d = Self {
            mode: cfg.mode,
            storage,
            outbox: RefCell::new(Outbox::new(cfg.outbox)),
            inbox: RefCell::new(inbox),
            out_msgs: RefCell::new(HashMap::new()),
            in_msgs: RefCell::new(HashMap::new()),
            reassembler: RefCell::new(Reassembler::new(ReassemblyLimits::default())),
            pending: RefCell::new(VecDeque::new()),
            blocked: RefCell::new(VecDeque::new()),
            settle_later: RefCell::new(VecDeque::new()),
            domains: RefCell::new(HashMap::new()),
            keys,
            finished_keys: RefCell::new(VecDeque::new()),
            finished_keys_max: cfg.outbox.status_kept,
            last_ticket: Cell::new(Ticket(0)),
            kick: Kick::default(),
            in_flight_max: cfg.outbox.in_flight_max,
        };
        d.recover(&limits);
        Ok(d)
    }

    #[allow(clippy::trivially_copy_pass_by_ref)] // `Limits` may grow.
    fn recover(&self, limits: &Limits) {
        let recovered = self.storage.take_recovered();
        let now = Instant::now();
        let (mut out, mut inn) = (0usize, 0usize);
        for m in recovered.outbound {
            let Some(f) = stored_frames(m.frame, limits) else {
                warn!(
                    msg_id = m.key.msg_id,
                    "a recovered outbound record is not a message; skipped"
                );
                continue;
            };
            let env = f[0].envelope();
            let require_ack = env.flags.contains(Flags::REQUIRE_ACK);
            if self
                .outbox
                .borrow_mut()
                .handle_recovered(m.key.msg_id, env.dst_node, require_ack, now)
                .is_ok()
            {
                let key = idempotency_key(&f[0])
                    .filter(|k| self.keys.claim(k, m.key.msg_id).is_ok())
                    .map(Vec::into_boxed_slice);
                self.out_msgs.borrow_mut().insert(
                    m.key.msg_id,
                    OutMsg {
                        frames: f,
                        client: None,
                        key,
                    },
                );
                out += 1;
            }
        }
        for m in recovered.inbound {
            let Some(f) = stored_frames(m.frame, limits) else {
                warn!(
                    src = m.key.src_node,
                    msg_id = m.key.msg_id,
                    "a recovered inbound record is not a message; skipped"
                );
                continue;
            };
            let env = f[0].envelope();
            let require_ack = env.flags.contains(Flags::REQUIRE_ACK);
            self.domains
                .borrow_mut()
                .insert(env.src_node, env.src_domain);
            self.inbox
                .borrow_mut()
                .handle_recovered(m.key.src_node, m.key.msg_id, require_ack);
            self.in_msgs
                .borrow_mut()
                .insert((m.key.src_node, m.key.msg_id), f);
            inn += 1;
        }
        if out + inn > 0 {
            info!(
                outbound = out,
                inbound = inn,
                "recovered messages to retransmit and to deliver"
            );
        }
    }

    pub(crate) fn mode(&self) -> DeliveryMode {
        self.mode
    }

    /// Remembers the latest ticket appended, for [`CoreDelivery::sync`].
    fn noted(&self, t: Ticket) -> Ticket {
        if t > self.last_ticket.get() {
            self.last_ticket.set(t);
        }
        t
    }

    /// Waits until everything this core appended is durable (a clean shutdown: settle and ack
    /// records reach the disk, so nothing is redelivered after the restart).
    pub(crate) async fn sync(&self) -> Result<(), StorageError> {
        let last = self.last_ticket.get();
        if self.storage.durable() >= last {
            return Ok(());
        }
        self.storage.wait_durable(last).await
    }

    /// The status of a message this core allocated, if it is tracked or recently finished.
    pub(crate) fn status(&self, msg_id: u64) -> Option<mesh_delivery::StatusEntry> {
        self.outbox.borrow().status(msg_id)
    }

    /// Messages the origin keeps (accepted, not yet settled).
    pub(crate) fn in_flight(&self) -> usize {
        self.outbox.borrow().in_flight()
    }

    /// Messages the destination holds (stored, not yet acked).
    pub(crate) fn held(&self) -> usize {
        self.inbox.borrow().held()
    }

    /// Origin: takes a native client's message. `NotNow` when the core cannot take more
    /// right now (outbox full, next hop backlogged, msg_ids or log room pending): the
    /// connection waits and offers it again, which back-pressures the client.
    pub(crate) fn accept_client_data(
        &self,
        core: &Core,
        client: SessionId,
        msg: ClientMessage,
    ) -> Result<(), NotNow> {
        if self.outbox.borrow().in_flight() >= self.in_flight_max
            || !self.blocked.borrow().is_empty()
        {
            return Err(NotNow(msg));
        }
        let msg_id = match self.storage.allocate_msg_id() {
            Ok(id) => id,
            Err(StorageError::Busy { .. }) => {
                self.kick.kick();
                return Err(NotNow(msg));
            }
            Err(e) => {
                self.fatal(&e);
                return Err(NotNow(msg));
            }
        };
        let (sent, meta) = match &msg {
            ClientMessage::Frame(f) => (
                f.envelope(),
                if f.flags().contains(Flags::HAS_META) {
                    f.meta(&MetaLimits::default()).map_err(|e| e.to_string())
                } else {
                    Ok(Metadata::default())
                },
            ),
            ClientMessage::Chunked(m) => (
                m.envelope,
                Metadata::decode(&m.meta, &MetaLimits::default()).map_err(|e| e.to_string()),
            ),
        };
        let client_seq = sent.msg_id;
        let meta = meta.unwrap_or_else(|e| {
            // The session checked the frame; its metadata is the client's business.
            debug!(error = %e, "a client's message has unreadable metadata");
            Metadata::default()
        });
        let idem = meta.idempotency_key.clone().map(Vec::into_boxed_slice);
        if let Some(k) = &idem
            && let Err(first) = self.keys.claim(k, msg_id)
        {
            // A retry of a send the node took: its msg_id, and nothing sent again. (This
            // msg_id is burnt; ids need not be dense.)
            core.send_receipt(
                client,
                first,
                client_seq,
                MessageStatus::Accepted.code(),
                true,
                None,
            );
            return Ok(());
        }
        let key = MsgKey {
            src_node: core.node_id(),
            msg_id,
        };
        // The message will not be sent: its key is free again (the msg_id is burnt; ids need not
        // be dense, and a retry stamps a new one).
        let release = || {
            if let Some(k) = &idem {
                self.keys.release(k, msg_id);
            }
        };
        // Refused for good, too large to store or to send on: the client hears FAILED.
        let too_large = || {
            release();
            core.send_receipt(
                client,
                0,
                client_seq,
                MessageStatus::Failed.code(),
                false,
                Some(mesh_delivery::FailReason::TooLarge.code()),
            );
        };
        let refuse = |e: StorageError, msg: ClientMessage| {
            release();
            match e {
                StorageError::Busy { .. } => {
                    self.kick.kick();
                    Err(NotNow(msg))
                }
                StorageError::TooLarge { len, limit } => {
                    warn!(
                        len,
                        limit, "a client's message is over the storage's record limit"
                    );
                    too_large();
                    Ok(())
                }
                e => {
                    self.fatal(&e);
                    Err(NotNow(msg))
                }
            }
        };
        let (frames, ticket) = match msg {
            ClientMessage::Frame(mut frame) => {
                frame.set_origin(core.node_id(), core.cfg.domain_id, msg_id);
                match self
                    .storage
                    .append_outbound(key, frame.as_bytes())
                    .map(|t| self.noted(t))
                {
                    Ok(t) => (vec![OutFrame::from(frame)], t),
                    Err(e) => {
                        // The frame goes back as the client sent it: its msg_id field is the
                        // client's sequence number, which the receipts echo.
                        frame.set_origin(sent.src_node, sent.src_domain, client_seq);
                        return refuse(e, ClientMessage::Frame(frame));
                    }
                }
            }
            ClientMessage::Chunked(m) => {
                let mut env = m.envelope;
                env.src_node = core.node_id();
                env.src_domain = core.cfg.domain_id;
                env.msg_id = msg_id;
                let frames = match chunk_message(
                    &env,
                    &meta,
                    &MetaLimits::default(),
                    Bytes::from(m.to_contiguous()),
                    &core.cfg.limits,
                ) {
                    Ok(c) => c.collect::<Frames>(),
                    Err(e) => {
                        warn!(error = %e, "a client's chunked message cannot be sent on");
                        too_large();
                        return Ok(());
                    }
                };
                match self
                    .storage
                    .append_outbound(key, &record_of(&frames))
                    .map(|t| self.noted(t))
                {
                    Ok(t) => (frames, t),
                    Err(e) => return refuse(e, ClientMessage::Chunked(m)),
                }
            }
        };
        let now = Instant::now();
        let require_ack = sent.flags.contains(Flags::REQUIRE_ACK);
        if let Err(e) =
            self.outbox
                .borrow_mut()
                .handle_accepted(msg_id, sent.dst_node, require_ack, None, now)
        {
            // Checked above; a duplicate id would be a storage bug.
            error!(msg_id, error = %e, "outbox refused a fresh message");
            return Ok(());
        }
        self.out_msgs.borrow_mut().insert(
            msg_id,
            OutMsg {
                frames,
                client: Some((client, client_seq)),
                key: idem,
            },
        );
        self.pending
            .borrow_mut()
            .push_back((ticket, Pending::Outbound(msg_id)));
        self.kick.kick();
        Ok(())
    }

    /// Origin: DELIVERED, ACK or NACK for a message of this core. Returns the frame when the
    /// outbox does not know the message (it is not tracked here).
    pub(crate) fn handle_report(&self, frame: Frame<BytesMut>) -> Option<Frame<BytesMut>> {
        let env = frame.envelope();
        if self.outbox.borrow().status(env.msg_id).is_none() {
            return Some(frame);
        }
        let now = Instant::now();
        let mut outbox = self.outbox.borrow_mut();
        match env.kind {
            FrameKind::Delivered => outbox.handle_delivered(env.msg_id, now),
            FrameKind::Ack => {
                let success = frame
                    .meta(&MetaLimits::default())
                    .ok()
                    .and_then(|m| m.ack_success)
                    .unwrap_or(true);
                outbox.handle_ack(env.msg_id, success, now);
            }
            FrameKind::Nack => {
                let reason = frame
                    .meta(&MetaLimits::default())
                    .ok()
                    .and_then(|m| m.reason)
                    .map_or(NackReason::Unknown(0), NackReason::from_code);
                outbox.handle_nack(env.msg_id, reason, now);
            }
            _ => return Some(frame),
        }
        drop(outbox);
        self.kick.kick();
        None
    }

    /// Destination: a DATA frame addressed to this node, from a source this core owns.
    pub(crate) fn handle_inbound(&self, core: &Core, frame: Frame<BytesMut>) {
        let env = frame.envelope();
        let dedup_sources_max = 1 << 16;
        let mut domains = self.domains.borrow_mut();
        if domains.len() < dedup_sources_max || domains.contains_key(&env.src_node) {
            domains.insert(env.src_node, env.src_domain);
        }
        drop(domains);
        let key = MsgKey {
            src_node: env.src_node,
            msg_id: env.msg_id,
        };
        let require_ack = env.flags.contains(Flags::REQUIRE_ACK);
        if self.storage.is_duplicate(key) {
            // A retransmission: answered once, at its first chunk (a retransmission repeats
            // them all).
            if env.flags.contains(Flags::CHUNK) && env.chunk_index != 0 {
                return;
            }
            self.answer_duplicate(env.src_node, env.msg_id, require_ack);
            self.kick.kick();
            return;
        }
        let (appended, frames) = if frame.flags().contains(Flags::CHUNK) {
            let Some(frames) = self.reassemble(core, frame) else {
                return;
            };
            (
                self.storage.append_inbound(key, &record_of(&frames)),
                frames,
            )
        } else {
            let r = self.storage.append_inbound(key, frame.as_bytes());
            (r, vec![OutFrame::from(frame)])
        };
        if let Ok(Inbound::New(t) | Inbound::Duplicate(t)) = &appended {
            self.noted(*t);
        }
        match appended {
            Ok(Inbound::New(ticket)) => {
                let r = self
                    .inbox
                    .borrow_mut()
                    .handle_data(env.src_node, env.msg_id, require_ack);
                match r {
                    Ok(mesh_delivery::Verdict::New) => {
                        self.in_msgs
                            .borrow_mut()
                            .insert((env.src_node, env.msg_id), frames);
                        self.pending
                            .borrow_mut()
                            .push_back((ticket, Pending::Inbound(env.src_node, env.msg_id)));
                    }
                    Ok(mesh_delivery::Verdict::Duplicate) => {}
                    Err(e) => {
                        // Stored but not held: it is recovered at the next start. The origin
                        // hears nothing now and retransmits.
                        warn!(src = env.src_node, msg_id = env.msg_id, error = %e, "inbox refused a stored message");
                        core.metrics.count_drop(DropReason::QueueFull);
                    }
                }
            }
            Ok(Inbound::Duplicate(ticket)) => {
                self.pending
                    .borrow_mut()
                    .push_back((ticket, Pending::Duplicate(env.src_node, env.msg_id)));
            }
            Err(StorageError::Busy { .. }) => {
                // No room in the log: no DELIVERED, so the origin retransmits later.
                core.metrics.count_drop(DropReason::QueueFull);
            }
            Err(StorageError::TooLarge { len, limit }) => {
                warn!(
                    src = env.src_node,
                    msg_id = env.msg_id,
                    len,
                    limit,
                    "a message over the storage's record limit is refused"
                );
                core.metrics.count_drop(DropReason::QueueFull);
                core.nack(&env, NackReason::TooLarge);
            }
            Err(e) => self.fatal(&e),
        }
        self.kick.kick();
    }

    /// One chunk of an inbound message; the whole message's frames once its last chunk came.
    fn reassemble(&self, core: &Core, frame: Frame<BytesMut>) -> Option<Frames> {
        let now = Instant::now();
        let mut r = self.reassembler.borrow_mut();
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        let m = match r.handle_chunk(frame, now) {
            Ok(ChunkOutcome::Complete(m)) => m,
            Ok(ChunkOutcome::Incomplete | ChunkOutcome::Duplicate) => return None,
            Err(e) => {
                debug!(error = %e, "a chunk of an inbound message refused");
                core.metrics.count_drop(DropReason::QueueFull);
                return None;
            }
        };
        drop(r);
        let mut env = m.envelope;
        env.flags = env.flags.without(Flags::RETRANSMIT);
        let meta = Metadata::decode(&m.meta, &MetaLimits::default()).unwrap_or_default();
        match chunk_message(
            &env,
            &meta,
            &MetaLimits::default(),
            Bytes::from(m.to_contiguous()),
            &core.cfg.limits,
        ) {
            Ok(c) => Some(c.collect()),
            Err(e) => {
                warn!(src = env.src_node, msg_id = env.msg_id, error = %e, "a reassembled message cannot be stored");
                core.nack(&env, NackReason::TooLarge);
                None
            }
        }
    }

    /// A copy of a message already stored here: the inbox answers it (DELIVERED, or the ACK it
    /// recorded); if a restart emptied the inbox's memory of it, it was stored and acked before.
    fn answer_duplicate(&self, src_node: u64, msg_id: u64, require_ack: bool) {
        let r = self
            .inbox
            .borrow_mut()
            .handle_data(src_node, msg_id, require_ack);
        match r {
            Ok(mesh_delivery::Verdict::New) => {
                self.inbox
                    .borrow_mut()
                    .handle_stored_before(src_node, msg_id);
            }
            Ok(mesh_delivery::Verdict::Duplicate) => {}
            Err(e) => debug!(src = src_node, msg_id, error = %e, "duplicate not answered"),
        }
    }

    /// Destination: the application acked (or rejected) a message it was offered.
    pub(crate) fn handle_client_ack(&self, src_node: u64, msg_id: u64, success: bool) {
        let r = self
            .inbox
            .borrow_mut()
            .handle_client_ack(src_node, msg_id, success);
        if let Err(e) = r {
            debug!(src = src_node, msg_id, error = %e, "ack for a message not held");
            return;
        }
        self.in_msgs.borrow_mut().remove(&(src_node, msg_id));
        self.record_settled(MsgKey { src_node, msg_id }, true);
        self.kick.kick();
    }

    /// A peer came up or routes changed: what waits for a route is tried again at once.
    pub(crate) fn handle_route_change(&self) {
        self.outbox.borrow_mut().handle_route_change();
        self.kick.kick();
    }

    /// The number of native subscribers on the node changed.
    pub(crate) fn handle_subscribers(&self, count: usize) {
        self.inbox.borrow_mut().handle_subscribers(count);
        self.kick.kick();
    }

    fn record_settled(&self, key: MsgKey, inbound: bool) {
        let r = if inbound {
            self.storage.mark_acked(key)
        } else {
            self.storage.mark_settled(key)
        }
        .map(|t| self.noted(t));
        match r {
            Ok(_) => {}
            Err(StorageError::Busy { .. }) => {
                self.settle_later.borrow_mut().push_back((key, inbound));
            }
            Err(e) => self.fatal(&e),
        }
    }

    #[allow(clippy::unused_self)]
    fn fatal(&self, e: &StorageError) {
        // SPEC §5: a failed sync stops the node; recovery runs at the next start. Nothing
        // acknowledged is lost: every promise was made after a successful sync.
        error!(error = %e, "storage failed; the node stops (recovery runs at the next start)");
        std::process::exit(70);
    }

    /// One pass of work: durable records, retransmissions, answers, offers, receipts; at most
    /// [`STEP_BATCH`] of each kind, so the core's connections run in between. Returns whether
    /// work was left for the next pass.
    fn step(&self, core: &Core, now: Instant) -> bool {
        let mut more = false;
        self.retry_settles();
        self.take_durable(now);
        self.retry_blocked(core, now);
        // Transmissions stop at the first that found its next hop full (BLOCKED_POLL retries).
        more |= bounded(
            || {
                if self.blocked.borrow().is_empty() {
                    self.outbox.borrow_mut().poll_transmit()
                } else {
                    None
                }
            },
            |t| self.transmit(core, t, now),
        );
        more |= bounded(
            || self.inbox.borrow_mut().poll_transmit(),
            |t| self.answer(core, t),
        );
        self.offer(core, now);
        more |= bounded(
            || self.outbox.borrow_mut().poll_event(),
            |ev| self.outbox_event(core, ev),
        );
        core.metrics.outbox_in_flight.store(
            self.in_flight() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        core.metrics
            .inbox_held
            .store(self.held() as u64, std::sync::atomic::Ordering::Relaxed);
        more
    }

    fn retry_settles(&self) {
        let waiting: Vec<_> = self.settle_later.borrow_mut().drain(..).collect();
        for (key, inbound) in waiting {
            self.record_settled(key, inbound);
        }
    }

    fn take_durable(&self, now: Instant) {
        let durable = self.storage.durable();
        loop {
            let next = {
                let mut p = self.pending.borrow_mut();
                match p.front() {
                    Some((t, _)) if *t <= durable => p.pop_front(),
                    _ => None,
                }
            };
            let Some((_, what)) = next else { break };
            match what {
                Pending::Outbound(msg_id) => self.outbox.borrow_mut().handle_persisted(msg_id, now),
                Pending::Inbound(src, msg_id) => {
                    self.inbox.borrow_mut().handle_persisted(src, msg_id);
                }
                // The first copy is durable: answer it.
                Pending::Duplicate(src, msg_id) => self.answer_duplicate(src, msg_id, false),
            }
        }
    }

    fn retry_blocked(&self, core: &Core, now: Instant) {
        loop {
            let head = {
                let mut b = self.blocked.borrow_mut();
                match b.front() {
                    Some((_, _, q)) if q.has_room() || q.is_closed() => b.pop_front(),
                    _ => None,
                }
            };
            let Some((t, frames, q)) = head else { break };
            for frame in frames {
                if q.push(OutItem::Local(frame), true).is_err() {
                    // The session went away: the retransmission timer takes it from here.
                    core.metrics.count_drop(DropReason::SessionClosed);
                    break;
                }
            }
            self.outbox.borrow_mut().handle_sent(t.msg_id, now);
        }
    }

    fn transmit(&self, core: &Core, t: Retransmit, now: Instant) {
        let Some(mut frames) = self
            .out_msgs
            .borrow()
            .get(&t.msg_id)
            .map(|m| m.frames.clone())
        else {
            return;
        };
        if t.attempt > 1 || t.probe {
            for frame in &mut frames {
                frame.set_transit_flags(Flags::RETRANSMIT);
            }
            CoreMetrics::add(&core.metrics.retransmits, 1);
        }
        let h = *frames[0].header();
        if h.dst_node.get() == core.node_id() {
            // Addressed to this node itself: stored through the inbox like any arrival.
            self.outbox.borrow_mut().handle_sent(t.msg_id, now);
            for frame in &frames {
                arrive_here(core, frame);
            }
            return;
        }
        let route = core.route(
            h.src_node.get(),
            h.dst_domain.get(),
            h.dst_node.get(),
            h.msg_id.get(),
        );
        let next = match route {
            Route::Forward(next) => next,
            Route::NoRoute => {
                self.outbox
                    .borrow_mut()
                    .handle_nack(t.msg_id, NackReason::NoRoute, now);
                return;
            }
            Route::Denied => {
                core.metrics.count_drop(DropReason::Denied);
                self.outbox
                    .borrow_mut()
                    .handle_nack(t.msg_id, NackReason::DeniedByPolicy, now);
                return;
            }
        };
        match core.to_peer(next, OutItem::Local(frames[0].clone())) {
            Push::Done => {
                // The other chunks follow the first into the same queue.
                for frame in frames.into_iter().skip(1) {
                    core.to_peer_after(next, OutItem::Local(frame));
                }
                self.outbox.borrow_mut().handle_sent(t.msg_id, now);
            }
            Push::Wait(OutItem::Local(_), q) => {
                self.blocked.borrow_mut().push_back((t, frames, q));
            }
            Push::Wait(..) | Push::Later(_) => {
                // Another core's inbox is full: the retransmission timer tries again.
                self.outbox.borrow_mut().handle_sent(t.msg_id, now);
            }
        }
    }

    /// Sends DELIVERED or ACK to an origin. Best effort: a lost answer is asked for again by
    /// the origin's retransmission.
    fn answer(&self, core: &Core, t: InboxTransmit) {
        let (kind, src_node, msg_id, success) = match t {
            InboxTransmit::Delivered { src_node, msg_id } => {
                (FrameKind::Delivered, src_node, msg_id, None)
            }
            InboxTransmit::Ack {
                src_node,
                msg_id,
                success,
            } => (FrameKind::Ack, src_node, msg_id, Some(success)),
        };
        // The origin's domain: the DATA frame carried it; routes by node id resolve it too.
        let domain = self.domains.borrow().get(&src_node).copied().unwrap_or(0);
        let meta = Metadata {
            ack_success: success,
            ..Metadata::default()
        };
        let Some(frame) = core.report(kind, src_node, domain, msg_id, &meta) else {
            return;
        };
        if src_node == core.node_id() {
            // This node sent it to itself: to the core that allocated the msg_id.
            arrive_here(core, &frame);
        } else if !core.send_report(frame) {
            core.metrics.count_drop(DropReason::NoRoute);
        }
    }

    fn offer(&self, core: &Core, now: Instant) {
        loop {
            let target = core.subscriber_target();
            let local = match &target {
                SubscriberTarget::None => return,
                SubscriberTarget::Local(q) if !q.has_room() => return,
                SubscriberTarget::Local(q) => Some(q.clone()),
                SubscriberTarget::Core(_) => None,
            };
            let o = self.inbox.borrow_mut().poll_offer(now);
            let Some(o) = o else { return };
            let Some(mut frames) = self.in_msgs.borrow().get(&(o.src_node, o.msg_id)).cloned()
            else {
                continue;
            };
            if o.attempt > 1 {
                for frame in &mut frames {
                    frame.set_transit_flags(Flags::RETRANSMIT);
                }
            }
            // All chunks or a retry: chunks handed before a failure are repeated then, and
            // the subscriber's reassembly takes each once.
            let handed = match (local, target) {
                (Some(q), _) => frames
                    .into_iter()
                    .all(|frame| q.push(OutItem::Local(frame), true).is_ok()),
                (None, SubscriberTarget::Core(c)) => frames
                    .into_iter()
                    .all(|frame| core.inboxes[c].post(CoreMsg::Offer(frame)).is_ok()),
                (None, _) => false,
            };
            if handed {
                CoreMetrics::add(&core.metrics.delivered_local, 1);
            } else {
                // Offered again at once when a subscriber has room.
                self.inbox.borrow_mut().requeue(o.src_node, o.msg_id);
                return;
            }
        }
    }

    fn outbox_event(&self, core: &Core, ev: OutboxEvent) {
        match ev {
            OutboxEvent::Status { msg_id, entry } => {
                let client = self.out_msgs.borrow().get(&msg_id).and_then(|m| m.client);
                if let Some((session, seq)) = client
                    && receipt_worthy(entry.status)
                {
                    core.send_receipt(
                        session,
                        msg_id,
                        seq,
                        entry.status.code(),
                        false,
                        entry.reason.map(mesh_delivery::FailReason::code),
                    );
                }
            }
            OutboxEvent::Release { msg_id } => {
                self.record_settled(
                    MsgKey {
                        src_node: core.node_id(),
                        msg_id,
                    },
                    false,
                );
            }
            // After its last status (and receipt): its frames and key can go.
            OutboxEvent::Finished { msg_id } => self.forget(msg_id),
        }
    }

    /// The message is no longer tracked: its frame goes; its idempotency key is still answered
    /// until `finished_keys_max` later messages with keys finished.
    fn forget(&self, msg_id: u64) {
        let gone = self.out_msgs.borrow_mut().remove(&msg_id);
        let Some(k) = gone.and_then(|m| m.key) else {
            return;
        };
        let mut finished = self.finished_keys.borrow_mut();
        finished.push_back((k, msg_id));
        while finished.len() > self.finished_keys_max {
            if let Some((old, id)) = finished.pop_front() {
                self.keys.release(&old, id);
            }
        }
    }

    /// When the next timer of either machine is due.
    fn next_timeout(&self) -> Option<Instant> {
        let a = self.outbox.borrow_mut().poll_timeout();
        let b = self.inbox.borrow_mut().poll_timeout();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeouts(&self, now: Instant) {
        self.outbox.borrow_mut().handle_timeout(now);
        self.inbox.borrow_mut().handle_timeout(now);
    }

    /// The first ticket something waits for, if any.
    fn first_pending(&self) -> Option<Ticket> {
        self.pending.borrow().front().map(|(t, _)| *t)
    }
}

/// Hands what `next` yields to `each`, at most [`STEP_BATCH`] items; whether it stopped at
/// the bound (more may be waiting).
fn bounded<T>(mut next: impl FnMut() -> Option<T>, mut each: impl FnMut(T)) -> bool {
    for _ in 0..STEP_BATCH {
        let Some(item) = next() else {
            return false;
        };
        each(item);
    }
    true
}

/// Longest the delivery task sleeps while transmissions wait for queue room.
const BLOCKED_POLL: Duration = Duration::from_millis(1);

/// Most transmissions, answers or outbox events handled in one pass before the delivery task
/// lets the core's other tasks run (a burst of 100,000 retransmissions must not silence the
/// core's connections, keepalives included, for its whole length).
const STEP_BATCH: usize = 256;

/// The core's delivery task: runs the machines until the core shuts down.
pub(crate) async fn run(core: Rc<Core>) {
    let d = &core.delivery;
    loop {
        if core.shutting_down.get() {
            return;
        }
        let now = Instant::now();
        d.handle_timeouts(now);
        if d.step(&core, now) {
            futures_lite::future::yield_now().await;
            continue;
        }
        let mut sleep = d
            .next_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        if !d.blocked.borrow().is_empty() {
            sleep = Some(sleep.map_or(BLOCKED_POLL, |s| s.min(BLOCKED_POLL)));
        }
        let durable = d.first_pending().map(|t| d.storage.wait_durable(t));
        let kicked = Kicked(&d.kick);
        let timer = async {
            match sleep {
                Some(s) => {
                    Timer::new(s).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let durable = async {
            match durable {
                Some(w) => {
                    if let Err(e) = w.await {
                        d.fatal(&e);
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        futures_lite::future::or(kicked, futures_lite::future::or(timer, durable)).await;
    }
}

/// A message as stored: its frames back to back.
fn record_of(frames: &[OutFrame]) -> Vec<u8> {
    let mut record = Vec::with_capacity(frames.iter().map(OutFrame::len).sum());
    for f in frames {
        f.write_to(&mut record);
    }
    record
}

/// The frames of a stored record (at least one), or `None` when it is not a message.
#[allow(clippy::trivially_copy_pass_by_ref)] // `Limits` may grow.
fn stored_frames(record: Vec<u8>, limits: &Limits) -> Option<Frames> {
    OutFrame::sequence_from_bytes(Bytes::from(record), limits)
        .ok()
        .filter(|f| !f.is_empty() && f.iter().all(|x| x.envelope().kind == FrameKind::Data))
}

/// The idempotency key in a stored frame's metadata, if any.
fn idempotency_key(frame: &OutFrame) -> Option<Vec<u8>> {
    let env = frame.envelope();
    if !env.flags.contains(Flags::HAS_META) {
        return None;
    }
    Metadata::decode(frame.meta(), &MetaLimits::default())
        .ok()
        .and_then(|m| m.idempotency_key)
}

/// A frame this node addressed to itself arrives as if from a peer (one copy into a receive
/// buffer), through the same owner-core routing as every arrival.
fn arrive_here(core: &Core, frame: &OutFrame) {
    let mut buf = BytesMut::with_capacity(frame.len());
    for part in frame.io_slices() {
        buf.extend_from_slice(&part);
    }
    let Ok(f) = Frame::new_checked(buf, &core.cfg.limits) else {
        return;
    };
    if !matches!(core.arrive(f), Dispatch::Done) {
        // The owner core's inbox is full: the origin's retransmission tries again.
        core.metrics.count_drop(DropReason::ControlBusy);
    }
}

/// The core whose delivery machines own a frame addressed to this node: DATA belongs to the
/// core of its source, reports (DELIVERED / ACK / NACK) to the core that allocated the msg_id.
pub(crate) fn owner_core(frame: &Frame<BytesMut>, cores: usize) -> usize {
    let env = frame.envelope();
    if env.kind == FrameKind::Data {
        source_core(env.src_node, cores)
    } else {
        let partition = u64::from(mesh_wal::msg_id::partition_of(env.msg_id));
        usize::try_from(partition % cores.max(1) as u64).unwrap_or(0)
    }
}

/// The core owning the inbox state of `src_node`.
pub(crate) fn source_core(src_node: u64, cores: usize) -> usize {
    usize::try_from(src_node % cores.max(1) as u64).unwrap_or(0)
}
