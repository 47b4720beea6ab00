//! One data-plane core: the state a glommio executor owns, and how it routes frames.
//!
//! Shared-nothing: a core's sessions, queues and route snapshot are its own (`Rc`, `RefCell`
//! inside one thread). What crosses cores moves by ownership through the cores' inboxes: a
//! frame whose next hop's session lives on another core is posted there as is (the same
//! buffer), and session up/down announcements keep every core's map of "which core owns the
//! session to peer P" current.
//!
//! Duplicate sessions with one peer (both nodes dialing at once, possibly landing on different
//! cores) are resolved by `mesh_session::tie_break` on the dialer's node id, which both ends
//! and every core compute alike; two sessions with the same dialer keep the one on the lower
//! core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mesh_session::{PeerInfo, Registration, SessionTable, Side, TieBreak, tie_break};
use mesh_wire::{
    CloseReason, Envelope, Frame, FrameKind, Limits, MetaLimits, Metadata, NackReason, OutFrame,
    encode_frame_with_meta,
};

use crate::buffers::CoreBuffers;
use crate::config::EngineConfig;
use crate::delivery::{CoreDelivery, DeliveryMode, owner_core, source_core};
use crate::mailbox::{MailboxError, MailboxSender};
use crate::metrics::{CoreMetrics, DropReason};
use crate::queue::{OutItem, PeerQueue};
use crate::ratelimit::RateLimiter;
use crate::routes::{Route, RouteSnapshot};

/// Identifies a session within the engine: core in the high 16 bits, a counter below.
pub(crate) type SessionId = u64;

/// A message to a core's inbox.
#[derive(Debug)]
pub enum CoreMsg {
    /// A frame to write to `peer`, whose session lives on this core.
    ToPeer {
        /// Next-hop node.
        peer: u64,
        /// The frame.
        item: OutItem,
    },
    /// A frame built by the control thread: route it from here.
    Originate(OutFrame),
    /// A session with `peer` was established on core `core`.
    PeerUp {
        /// Peer node.
        peer: u64,
        /// Owning core.
        core: usize,
        /// The owning core's side of that session.
        side: Side,
        /// Its id.
        session: u64,
    },
    /// The session `session` with `peer` on core `core` ended.
    PeerDown {
        /// Peer node.
        peer: u64,
        /// Owning core.
        core: usize,
        /// Its id.
        session: u64,
    },
    /// Dial this address and keep the session up.
    Connect(SocketAddr),
    /// Run a native-client session over this in-process stream (the gRPC gateway's).
    Local(crate::pipe::LocalStream),
    /// A frame for this node, from a core without a native subscriber.
    Deliver(Frame<BytesMut>),
    /// A frame for this node's delivery machines on this core: DATA from a source this core
    /// owns, or DELIVERED / ACK / NACK for a msg_id it allocated.
    Delivery(Frame<BytesMut>),
    /// A stored message for a native subscriber on this core.
    Offer(OutFrame),
    /// A native subscriber acked a message whose source this core owns.
    ClientAck {
        /// The message's origin.
        src_node: u64,
        /// The message.
        msg_id: u64,
        /// Accepted or rejected.
        success: bool,
    },
    /// The statuses of messages this core allocated (GetStatus), answered on `reply` in the
    /// order asked.
    Status {
        /// The msg_ids.
        msg_ids: Vec<u64>,
        /// Where the answer goes.
        reply: crossbeam_channel::Sender<Vec<(u64, Option<mesh_delivery::StatusEntry>)>>,
    },
    /// Core `core` now has (or no longer has) native subscribers.
    Subscribers {
        /// The core.
        core: usize,
        /// Whether it has any.
        present: bool,
    },
    /// Drain every session and stop.
    Shutdown,
}

/// What the engine tells the control thread.
#[derive(Debug)]
pub enum EngineEvent {
    /// A session with a peer node (or client) was established.
    PeerUp {
        /// What the handshake established.
        peer: PeerInfo,
        /// Core owning the session.
        core: usize,
    },
    /// The session with `node_id` ended.
    PeerDown {
        /// Peer node.
        node_id: u64,
        /// Why.
        reason: CloseReason,
    },
    /// A routed frame addressed to this node (DATA, DELIVERED, ACK, NACK).
    Deliver(Frame<BytesMut>),
    /// A control frame from a neighbour (LSA, LSA_ACK, CREDIT, RESUME).
    Control {
        /// The neighbour it came from.
        from: u64,
        /// The frame.
        frame: Frame<BytesMut>,
    },
    /// A frame this node originated could not be sent.
    Undeliverable {
        /// Its envelope.
        envelope: Envelope,
        /// Why.
        reason: NackReason,
    },
}

/// A session as its core sees it.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    pub(crate) queue: Rc<PeerQueue>,
    pub(crate) ctl: Rc<SessionCtl>,
}

/// A way for the core to ask a session's task to close.
#[derive(Debug, Default)]
pub(crate) struct SessionCtl {
    close: Cell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
}

impl SessionCtl {
    pub(crate) fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) fn take_close(&self) -> Option<CloseReason> {
        self.close.take()
    }

    pub(crate) fn register(&self, waker: &Waker) {
        let mut w = self.waker.borrow_mut();
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }
}

/// The outcome of queueing a frame built on this node for a neighbour.
#[derive(Debug)]
pub(crate) enum Push {
    /// Queued, or dropped with its metric and event.
    Done,
    /// The neighbour's queue is at its bound: wait for room, then try again.
    Wait(OutItem, Rc<PeerQueue>),
    /// The owning core's inbox is full: try again shortly.
    Later(OutItem),
}

/// The outcome of routing one frame.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// Queued, delivered or dropped (with its metric): nothing more to do.
    Done,
    /// The next hop's queue is full: wait on it, then retry with the frame.
    Blocked(Frame<BytesMut>, Rc<PeerQueue>),
    /// Another core's inbox or the control mailbox is full: retry shortly.
    Retry(Frame<BytesMut>),
}

/// Where a stored message for this node's applications goes.
#[derive(Debug)]
pub(crate) enum SubscriberTarget {
    /// No native subscriber on the node.
    None,
    /// The oldest subscriber on this core.
    Local(Rc<PeerQueue>),
    /// Another core that has one.
    Core(usize),
}

/// The state of one core.
pub(crate) struct Core {
    pub(crate) id: usize,
    pub(crate) cfg: Arc<EngineConfig>,
    routes: RefCell<RouteSnapshot>,
    table: RefCell<SessionTable<SessionId>>,
    slots: RefCell<HashMap<SessionId, (u64, Side, SessionSlot)>>,
    /// Sessions owned by other cores: peer → (core, side, session).
    remote: RefCell<HashMap<u64, (usize, Side, SessionId)>>,
    pub(crate) inboxes: Vec<MailboxSender<CoreMsg>>,
    pub(crate) events: MailboxSender<EngineEvent>,
    pub(crate) metrics: Arc<CoreMetrics>,
    /// Read buffers of this core's connections.
    pub(crate) buffers: CoreBuffers,
    /// Exactly-once delivery: this core's outbox, inbox and storage.
    pub(crate) delivery: CoreDelivery,
    /// Native clients attached to this core, for receipts.
    pub(crate) clients: RefCell<HashMap<SessionId, Rc<PeerQueue>>>,
    next_session: Cell<u64>,
    pub(crate) shutting_down: Cell<bool>,
    /// Native clients on this core that asked for this node's deliveries, oldest first.
    subscribers: RefCell<Vec<(SessionId, Rc<PeerQueue>)>>,
    /// Cores with at least one native subscriber (from announcements), for deliveries that
    /// arrive on a core without one.
    subscriber_cores: RefCell<Vec<usize>>,
    /// msg_ids for frames of native clients: `base + n * cores + core`, where `base` comes from
    /// the wall clock at start (ms << 20), so ids do not repeat across restarts at realistic
    /// rates. (The WAL's durable reservations replace this with the storage layer.)
    msg_id_base: u64,
    msg_id_next: Cell<u64>,
    /// This core's share of the policy's rate limits.
    limiter: RefCell<RateLimiter>,
}

impl Core {
    pub(crate) fn new(
        id: usize,
        cfg: Arc<EngineConfig>,
        routes: RouteSnapshot,
        inboxes: Vec<MailboxSender<CoreMsg>>,
        events: MailboxSender<EngineEvent>,
        metrics: Arc<CoreMetrics>,
        delivery: CoreDelivery,
    ) -> Self {
        let table = SessionTable::new(cfg.node_id, cfg.max_sessions);
        let buffers = CoreBuffers::new(cfg.buffer_pool_bytes, metrics.clone());
        Self {
            id,
            cfg,
            routes: RefCell::new(routes),
            table: RefCell::new(table),
            slots: RefCell::new(HashMap::new()),
            remote: RefCell::new(HashMap::new()),
            inboxes,
            events,
            buffers,
            delivery,
            clients: RefCell::new(HashMap::new()),
            metrics,
            next_session: Cell::new(1),
            shutting_down: Cell::new(false),
            subscribers: RefCell::new(Vec::new()),
            subscriber_cores: RefCell::new(Vec::new()),
            msg_id_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0) << 20),
            msg_id_next: Cell::new(0),
            limiter: RefCell::new(RateLimiter::default()),
        }
    }

    pub(crate) fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// A msg_id for a frame a native client sent through this node.
    pub(crate) fn next_client_msg_id(&self) -> u64 {
        let n = self.msg_id_next.get();
        self.msg_id_next.set(n + 1);
        self.msg_id_base
            .wrapping_add(n.wrapping_mul(self.cfg.cores as u64))
            .wrapping_add(self.id as u64)
    }

    /// A native client that subscribes to this node's deliveries attached on this core.
    pub(crate) fn add_subscriber(&self, id: SessionId, queue: Rc<PeerQueue>) {
        let mut subs = self.subscribers.borrow_mut();
        let first = subs.is_empty();
        subs.push((id, queue));
        if first {
            self.announce_subscribers(true);
        }
        drop(subs);
        self.subscribers_changed();
    }

    /// A subscriber's session ended.
    pub(crate) fn remove_subscriber(&self, id: SessionId) {
        let mut subs = self.subscribers.borrow_mut();
        let before = subs.len();
        subs.retain(|(s, _)| *s != id);
        if before > 0 && subs.is_empty() {
            self.announce_subscribers(false);
        }
        drop(subs);
        self.subscribers_changed();
    }

    fn announce_subscribers(&self, present: bool) {
        for (core, inbox) in self.inboxes.iter().enumerate() {
            if core != self.id {
                let _ = inbox.post(CoreMsg::Subscribers {
                    core: self.id,
                    present,
                });
            }
        }
    }

    /// Another core gained its first or lost its last subscriber.
    pub(crate) fn remote_subscribers(&self, core: usize, present: bool) {
        let mut cores = self.subscriber_cores.borrow_mut();
        cores.retain(|c| *c != core);
        if present {
            cores.push(core);
            cores.sort_unstable();
        }
        drop(cores);
        self.subscribers_changed();
    }

    fn subscribers_changed(&self) {
        let count = self.subscribers.borrow().len() + self.subscriber_cores.borrow().len();
        self.delivery.handle_subscribers(count);
    }

    /// Where the next stored message for the applications goes.
    pub(crate) fn subscriber_target(&self) -> SubscriberTarget {
        if let Some((_, q)) = self.subscribers.borrow().first() {
            return SubscriberTarget::Local(q.clone());
        }
        match self.subscriber_cores.borrow().first() {
            Some(&c) => SubscriberTarget::Core(c),
            None => SubscriberTarget::None,
        }
    }

    /// A stored message handed over by its owner core, for a subscriber here.
    pub(crate) fn offer_from_core(&self, frame: OutFrame) {
        let q = self.subscribers.borrow().first().map(|(_, q)| q.clone());
        match q {
            Some(q) if q.push(OutItem::Local(frame), true).is_ok() => {}
            // The subscriber left: the owner offers it again after its redelivery timeout.
            _ => self.metrics.count_drop(DropReason::SessionClosed),
        }
    }

    /// Where a frame towards `dst_node` goes, in this core's route snapshot.
    pub(crate) fn route(
        &self,
        src_node: u64,
        dst_domain: u32,
        dst_node: u64,
        msg_id: u64,
    ) -> Route {
        self.routes
            .borrow()
            .route(src_node, dst_domain, dst_node, msg_id)
    }

    /// How long a client's message to `(dst_domain, dst_node)` must wait for the policy's rate
    /// limit; `None`: it may go now (and took its token).
    pub(crate) fn rate_wait(&self, dst_domain: u32, dst_node: u64) -> Option<Duration> {
        let limit = self.routes.borrow().rate_limit(dst_domain, dst_node)?;
        let wait = self
            .limiter
            .borrow_mut()
            .take(limit, self.cfg.cores, Instant::now())
            .err()?;
        CoreMetrics::add(&self.metrics.rate_limited, 1);
        Some(wait)
    }

    /// Tells a native client what became of one of its messages (a receipt: an ACK frame on
    /// the client's session with the node's msg_id, the client's own number and the status).
    pub(crate) fn send_receipt(
        &self,
        client: SessionId,
        msg_id: u64,
        client_seq: u64,
        status: u16,
        duplicate: bool,
        reason: Option<u16>,
    ) {
        let Some(q) = self.clients.borrow().get(&client).cloned() else {
            return;
        };
        let meta = Metadata {
            status: Some(status),
            client_seq: Some(client_seq),
            duplicate: duplicate.then_some(true),
            reason,
            ..Metadata::default()
        };
        if let Some(frame) = self.report(FrameKind::Ack, 0, 0, msg_id, &meta) {
            // Receipts are small and bounded by the client's own messages: never held back.
            let _ = q.push(OutItem::Local(frame), true);
        }
    }

    /// A native client acked a message: to the core that owns the message's source.
    pub(crate) fn client_ack(&self, src_node: u64, msg_id: u64, success: bool) {
        let owner = source_core(src_node, self.cfg.cores);
        if owner == self.id {
            self.delivery.handle_client_ack(src_node, msg_id, success);
        } else if self.inboxes[owner]
            .post(CoreMsg::ClientAck {
                src_node,
                msg_id,
                success,
            })
            .is_err()
        {
            // The message is offered again after its redelivery timeout and acked then.
            self.metrics.count_drop(DropReason::ControlBusy);
        }
    }

    /// A frame for this node's delivery machines, on the core that owns it.
    pub(crate) fn delivery_frame(&self, frame: Frame<BytesMut>) {
        if frame.kind() == FrameKind::Data {
            self.delivery.handle_inbound(self, frame);
        } else if let Some(f) = self.delivery.handle_report(frame)
            && !matches!(self.deliver(f), Dispatch::Done)
        {
            self.metrics.count_drop(DropReason::ControlBusy);
        }
    }

    /// Routes a frame addressed to this node: exactly-once traffic (DATA, chunks included, and
    /// the answers about it) to the delivery machines of the core that owns it, the rest (raw
    /// mode, frames nobody tracks) as before.
    pub(crate) fn arrive(&self, frame: Frame<BytesMut>) -> Dispatch {
        let tracked = self.delivery.mode() == DeliveryMode::ExactlyOnce
            && matches!(
                frame.kind(),
                FrameKind::Data | FrameKind::Delivered | FrameKind::Ack | FrameKind::Nack
            );
        if !tracked {
            return self.deliver(frame);
        }
        let owner = owner_core(&frame, self.cfg.cores);
        if owner == self.id {
            self.delivery_frame(frame);
            return Dispatch::Done;
        }
        match self.inboxes[owner].post(CoreMsg::Delivery(frame)) {
            Ok(()) => {
                CoreMetrics::add(&self.metrics.cross_core, 1);
                Dispatch::Done
            }
            Err(MailboxError::Full(CoreMsg::Delivery(f))) => Dispatch::Retry(f),
            Err(_) => Dispatch::Done,
        }
    }

    /// Delivers a frame addressed to this node: to the oldest native subscriber on this core,
    /// else to a core that has one, else to the control thread.
    fn deliver(&self, frame: Frame<BytesMut>) -> Dispatch {
        let local = self.subscribers.borrow().first().map(|(_, q)| q.clone());
        if let Some(q) = local {
            return match q.push(OutItem::Forward(frame), false) {
                Ok(()) => {
                    CoreMetrics::add(&self.metrics.delivered_local, 1);
                    Dispatch::Done
                }
                Err(OutItem::Forward(f)) if !q.is_closed() => Dispatch::Blocked(f, q),
                Err(OutItem::Forward(f)) => self.deliver_to_control(f),
                Err(OutItem::Local(_)) => Dispatch::Done,
            };
        }
        let remote = self.subscriber_cores.borrow().first().copied();
        if let Some(core) = remote {
            return match self.inboxes[core].post(CoreMsg::Deliver(frame)) {
                Ok(()) => {
                    CoreMetrics::add(&self.metrics.cross_core, 1);
                    Dispatch::Done
                }
                Err(MailboxError::Full(CoreMsg::Deliver(f))) => Dispatch::Retry(f),
                Err(MailboxError::Closed(CoreMsg::Deliver(f))) => self.deliver_to_control(f),
                Err(_) => Dispatch::Done,
            };
        }
        self.deliver_to_control(frame)
    }

    fn deliver_to_control(&self, frame: Frame<BytesMut>) -> Dispatch {
        match self.events.post(EngineEvent::Deliver(frame)) {
            Ok(()) => {
                CoreMetrics::add(&self.metrics.delivered_local, 1);
                Dispatch::Done
            }
            Err(MailboxError::Full(EngineEvent::Deliver(f))) => Dispatch::Retry(f),
            Err(_) => {
                self.metrics.count_drop(DropReason::ControlBusy);
                Dispatch::Done
            }
        }
    }

    /// A delivery handed over by another core: to a local subscriber if one is still here.
    pub(crate) fn deliver_from_core(&self, frame: Frame<BytesMut>) {
        let local = self.subscribers.borrow().first().map(|(_, q)| q.clone());
        let frame = match local {
            Some(q) => match q.push(OutItem::Forward(frame), true) {
                Err(OutItem::Forward(f)) => f,
                Ok(()) | Err(OutItem::Local(_)) => return,
            },
            None => frame,
        };
        if !matches!(self.deliver_to_control(frame), Dispatch::Done) {
            self.metrics.count_drop(DropReason::ControlBusy);
        }
    }

    pub(crate) fn new_session_id(&self) -> SessionId {
        let n = self.next_session.get();
        self.next_session.set(n + 1);
        ((self.id as u64) << 48) | n
    }

    pub(crate) fn set_routes(&self, routes: RouteSnapshot) {
        *self.routes.borrow_mut() = routes;
        self.delivery.handle_route_change();
    }

    /// Registers an established session. Returns the close reason if this session must close
    /// at once (it lost a tie-break or the table is full).
    pub(crate) fn register(
        &self,
        id: SessionId,
        peer: &PeerInfo,
        side: Side,
        slot: SessionSlot,
    ) -> Option<CloseReason> {
        let node = peer.node_id;
        // Another core's session with the same peer?
        let other = self.remote.borrow().get(&node).copied();
        if let Some((core, other_side, _)) = other
            && !self.wins_against(node, side, self.id, other_side, core)
        {
            return Some(CloseReason::DuplicateSession);
        }
        let reg = self.table.borrow_mut().register(node, id, side);
        match reg {
            Registration::Keep => {}
            Registration::Replace { old } => {
                if let Some((_, _, s)) = self.slots.borrow_mut().remove(&old) {
                    s.ctl.request_close(CloseReason::DuplicateSession);
                }
            }
            Registration::Reject { .. } | Registration::Full { .. } => {
                return reg.close_reason();
            }
        }
        self.slots.borrow_mut().insert(id, (node, side, slot));
        self.delivery.handle_route_change();
        for (core, inbox) in self.inboxes.iter().enumerate() {
            if core != self.id {
                let _ = inbox.post(CoreMsg::PeerUp {
                    peer: node,
                    core: self.id,
                    side,
                    session: id,
                });
            }
        }
        None
    }

    /// Whether a session on `core_a` (this node's side `side_a`) with `peer` wins over one on
    /// `core_b` (side `side_b`): the session dialed by the lower node id stays; between two
    /// with the same dialer, the one on the lower core.
    fn wins_against(
        &self,
        peer: u64,
        side_a: Side,
        core_a: usize,
        side_b: Side,
        core_b: usize,
    ) -> bool {
        let dialer = |s: Side| match s {
            Side::Initiator => self.node_id(),
            Side::Acceptor => peer,
        };
        if dialer(side_a) == dialer(side_b) {
            core_a < core_b
        } else {
            // `tie_break(existing = b, new = a)`: KeepNew means a stays.
            tie_break(self.node_id(), peer, side_b, side_a) == TieBreak::KeepNew
        }
    }

    /// Forgets a session (its task ended). Returns the queue's remaining frames.
    pub(crate) fn unregister(&self, id: SessionId, peer: u64) -> Vec<OutItem> {
        let slot = self.slots.borrow_mut().remove(&id);
        self.table.borrow_mut().remove(peer, id);
        let Some((_, _, slot)) = slot else {
            return Vec::new();
        };
        for (core, inbox) in self.inboxes.iter().enumerate() {
            if core != self.id {
                let _ = inbox.post(CoreMsg::PeerDown {
                    peer,
                    core: self.id,
                    session: id,
                });
            }
        }
        slot.queue.close()
    }

    /// Another core announced a session with `peer`.
    pub(crate) fn remote_up(&self, peer: u64, core: usize, side: Side, session: SessionId) {
        if let Some(local) = self.table.borrow().get(peer) {
            let local_side = self
                .slots
                .borrow()
                .get(&local)
                .map_or(Side::Initiator, |(_, s, _)| *s);
            if self.wins_against(peer, local_side, self.id, side, core) {
                // Ours stays; theirs will close itself when it hears of ours.
                return;
            }
            if let Some((_, _, s)) = self.slots.borrow().get(&local) {
                s.ctl.request_close(CloseReason::DuplicateSession);
            }
        }
        self.remote.borrow_mut().insert(peer, (core, side, session));
        self.delivery.handle_route_change();
    }

    /// Another core's session with `peer` ended.
    pub(crate) fn remote_down(&self, peer: u64, core: usize, session: SessionId) {
        let mut remote = self.remote.borrow_mut();
        if remote
            .get(&peer)
            .is_some_and(|&(c, _, s)| c == core && s == session)
        {
            remote.remove(&peer);
        }
    }

    /// The queue of the established session with `peer` on this core.
    pub(crate) fn local_queue(&self, peer: u64) -> Option<Rc<PeerQueue>> {
        let id = self.table.borrow().get(peer)?;
        self.slots
            .borrow()
            .get(&id)
            .map(|(_, _, s)| s.queue.clone())
    }

    /// Whether any core holds an established session with `peer`.
    pub(crate) fn has_session(&self, peer: u64) -> bool {
        self.table.borrow().get(peer).is_some() || self.remote.borrow().contains_key(&peer)
    }

    /// Asks every session on this core to drain (shutdown).
    pub(crate) fn close_all(&self, reason: CloseReason) {
        for (_, _, s) in self.slots.borrow().values() {
            s.ctl.request_close(reason);
        }
    }

    /// Routes a frame received from a peer, or originated here. Takes ownership; nothing is
    /// copied on the way to the next hop.
    pub(crate) fn dispatch(&self, frame: Frame<BytesMut>) -> Dispatch {
        self.dispatch_inner(frame, true)
    }

    /// Routes a frame that already waited once (its TTL was already decremented).
    pub(crate) fn redispatch(&self, frame: Frame<BytesMut>) -> Dispatch {
        self.dispatch_inner(frame, false)
    }

    fn count_forwarded(&self, kind: FrameKind) {
        CoreMetrics::add(&self.metrics.forwarded, 1);
        if kind == FrameKind::Data {
            CoreMetrics::add(&self.metrics.forwarded_data, 1);
        }
    }

    fn dispatch_inner(&self, mut frame: Frame<BytesMut>, fresh: bool) -> Dispatch {
        let env = frame.envelope();
        if env.dst_node == self.node_id() {
            return self.arrive(frame);
        }
        if fresh && frame.decrement_ttl().is_none() {
            self.metrics.count_drop(DropReason::TtlExpired);
            self.nack(&env, NackReason::TtlExpired);
            return Dispatch::Done;
        }
        let next = match self.route(env.src_node, env.dst_domain, env.dst_node, env.msg_id) {
            Route::Forward(next) => next,
            Route::NoRoute => {
                self.metrics.count_drop(DropReason::NoRoute);
                self.nack(&env, NackReason::NoRoute);
                return Dispatch::Done;
            }
            Route::Denied => {
                self.metrics.count_drop(DropReason::Denied);
                self.nack(&env, NackReason::DeniedByPolicy);
                return Dispatch::Done;
            }
        };
        if let Some(q) = self.local_queue(next) {
            return match q.push(OutItem::Forward(frame), false) {
                Ok(()) => {
                    self.count_forwarded(env.kind);
                    Dispatch::Done
                }
                Err(OutItem::Forward(f)) if !q.is_closed() => Dispatch::Blocked(f, q),
                Err(_) => {
                    self.metrics.count_drop(DropReason::SessionClosed);
                    Dispatch::Done
                }
            };
        }
        let owner = self.remote.borrow().get(&next).map(|&(c, _, _)| c);
        if let Some(core) = owner {
            let msg = CoreMsg::ToPeer {
                peer: next,
                item: OutItem::Forward(frame),
            };
            return match self.inboxes[core].post(msg) {
                Ok(()) => {
                    CoreMetrics::add(&self.metrics.cross_core, 1);
                    self.count_forwarded(env.kind);
                    Dispatch::Done
                }
                Err(MailboxError::Full(CoreMsg::ToPeer {
                    item: OutItem::Forward(f),
                    ..
                })) => Dispatch::Retry(f),
                Err(_) => {
                    self.metrics.count_drop(DropReason::SessionClosed);
                    Dispatch::Done
                }
            };
        }
        // The route names a neighbour we hold no session with (the snapshot is stale).
        self.metrics.count_drop(DropReason::NoRoute);
        self.nack(&env, NackReason::NoRoute);
        Dispatch::Done
    }

    /// Routes a frame the control thread built (origin traffic, NACKs, LSAs to a neighbour).
    /// Returns the next hop and what became of the frame: a full next-hop queue makes the
    /// caller wait (and stop taking from its inbox, so the submitter sees `Busy`).
    pub(crate) fn originate(&self, frame: OutFrame) -> (u64, Push) {
        let h = frame.header();
        let (src, dst_domain, dst, msg_id) = (
            h.src_node.get(),
            h.dst_domain.get(),
            h.dst_node.get(),
            h.msg_id.get(),
        );
        let next = match self.route(src, dst_domain, dst, msg_id) {
            Route::Forward(next) => next,
            Route::NoRoute => {
                self.undeliverable(&frame, NackReason::NoRoute);
                return (0, Push::Done);
            }
            Route::Denied => {
                self.undeliverable(&frame, NackReason::DeniedByPolicy);
                return (0, Push::Done);
            }
        };
        (next, self.to_peer(next, OutItem::Local(frame)))
    }

    /// Queues `item` for the session with `peer`, on whichever core owns it.
    pub(crate) fn to_peer(&self, peer: u64, item: OutItem) -> Push {
        if let Some(q) = self.local_queue(peer) {
            if !q.has_room() {
                return Push::Wait(item, q);
            }
            if let Err(item) = q.push(item, true) {
                self.metrics.count_drop(DropReason::SessionClosed);
                self.undeliverable_item(&item, NackReason::NoRoute);
            }
            return Push::Done;
        }
        let owner = self.remote.borrow().get(&peer).map(|&(c, _, _)| c);
        let Some(core) = owner else {
            self.metrics.count_drop(DropReason::NoRoute);
            self.undeliverable_item(&item, NackReason::NoRoute);
            return Push::Done;
        };
        match self.inboxes[core].post(CoreMsg::ToPeer { peer, item }) {
            Ok(()) => {
                CoreMetrics::add(&self.metrics.cross_core, 1);
                Push::Done
            }
            Err(MailboxError::Full(CoreMsg::ToPeer { item, .. })) => Push::Later(item),
            Err(e) => {
                let (MailboxError::Full(msg) | MailboxError::Closed(msg)) = e;
                if let CoreMsg::ToPeer { item, .. } = msg {
                    self.metrics.count_drop(DropReason::SessionClosed);
                    self.undeliverable_item(&item, NackReason::NoRoute);
                }
                Push::Done
            }
        }
    }

    /// Queues `item` right behind one [`Core::to_peer`] just took (the next chunk of the same
    /// message): never held back for room. If the session is gone or another core's inbox is
    /// full the item is dropped; the origin's retransmission sends the whole message again.
    pub(crate) fn to_peer_after(&self, peer: u64, item: OutItem) {
        if let Some(q) = self.local_queue(peer) {
            if q.push(item, true).is_err() {
                self.metrics.count_drop(DropReason::SessionClosed);
            }
            return;
        }
        let owner = self.remote.borrow().get(&peer).map(|&(c, _, _)| c);
        let posted = owner.is_some_and(|core| {
            self.inboxes[core]
                .post(CoreMsg::ToPeer { peer, item })
                .is_ok()
        });
        if posted {
            CoreMetrics::add(&self.metrics.cross_core, 1);
        } else {
            self.metrics.count_drop(DropReason::SessionClosed);
        }
    }

    fn undeliverable_item(&self, item: &OutItem, reason: NackReason) {
        match item {
            OutItem::Local(f) => self.undeliverable(f, reason),
            OutItem::Forward(f) => self.nack(&f.envelope(), reason),
        }
    }

    fn undeliverable(&self, frame: &OutFrame, reason: NackReason) {
        let env = frame.envelope();
        if env.src_node == self.node_id() {
            let _ = self.events.post(EngineEvent::Undeliverable {
                envelope: env,
                reason,
            });
        } else {
            self.nack(&env, reason);
        }
    }

    /// Sends a NACK for a dropped DATA frame back to its source (never for other kinds: a lost
    /// DELIVERED or ACK is recovered by the origin's retransmission, and NACKing a NACK would
    /// loop).
    pub(crate) fn nack(&self, env: &Envelope, reason: NackReason) {
        if env.kind != FrameKind::Data {
            return;
        }
        if env.src_node == self.node_id() {
            let _ = self.events.post(EngineEvent::Undeliverable {
                envelope: *env,
                reason,
            });
            return;
        }
        let meta = Metadata {
            reason: Some(reason.code()),
            ..Metadata::default()
        };
        if let Some(frame) = self.report(
            FrameKind::Nack,
            env.src_node,
            env.src_domain,
            env.msg_id,
            &meta,
        ) {
            // Best effort: a NACK with no route is dropped (the origin retransmits anyway).
            let _ = self.send_report(frame);
        }
    }

    /// A header-only frame from this node about message `msg_id` (NACK, DELIVERED, ACK, a
    /// client receipt), addressed to `dst_node` in `dst_domain`.
    pub(crate) fn report(
        &self,
        kind: FrameKind,
        dst_node: u64,
        dst_domain: u32,
        msg_id: u64,
        meta: &Metadata,
    ) -> Option<OutFrame> {
        let mut env = Envelope::new(kind);
        env.src_node = self.node_id();
        env.src_domain = self.cfg.domain_id;
        env.dst_node = dst_node;
        env.dst_domain = dst_domain;
        env.msg_id = msg_id;
        encode_frame_with_meta(
            &env,
            meta,
            &MetaLimits::default(),
            Bytes::new(),
            &Limits::default(),
        )
        .ok()
    }

    /// Sends a report towards its destination, best effort: a full next hop drops it with a
    /// metric (reports are asked for again by retransmission). False when there is no route.
    pub(crate) fn send_report(&self, frame: OutFrame) -> bool {
        let h = frame.header();
        // Answers are never denied: a policy limits what this node sends, not what it answers.
        let next = match self.route(
            h.src_node.get(),
            h.dst_domain.get(),
            h.dst_node.get(),
            h.msg_id.get(),
        ) {
            Route::Forward(next) => next,
            Route::NoRoute | Route::Denied => return false,
        };
        if !matches!(self.to_peer(next, OutItem::Local(frame)), Push::Done) {
            self.metrics.count_drop(DropReason::QueueFull);
        }
        true
    }
}
