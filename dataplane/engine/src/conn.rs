//! The task that drives one session: socket ⇄ decoder ⇄ `mesh_session::Session` ⇄ core.
//!
//! One task per connection multiplexes, in a single `poll`: writing the peer's queue, reading
//! and decoding, the session's timers, and close requests from the core. Reads and writes
//! progress independently, so two peers that both have a full send buffer never deadlock, and a
//! frame whose next hop is full stalls only this connection's reads (backpressure reaches the
//! sender through TCP), never the whole core.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::timer::Timer;
use mesh_session::{
    Capabilities, ChannelSecurity, PeerInfo, Role, Session, SessionConfig, SessionEvent, Side,
};
use mesh_wire::decoder::DEFAULT_READ_CHUNK_LEN;
use mesh_wire::reassembly::{ChunkOutcome, Reassembler, ReassemblyLimits};
use mesh_wire::{CloseReason, Decoder, Frame, FrameKind};
use tracing::{debug, info, warn};

use crate::buffers::{CoreBuffers, PEER_READ_CHUNK_LEN};
use crate::core::{Core, Dispatch, EngineEvent, SessionCtl, SessionSlot};
use crate::delivery::{ClientMessage, DeliveryMode, NotNow};
use crate::metrics::CoreMetrics;
use crate::queue::{OutItem, PeerQueue};
use crate::transport::Transport;

/// Reads per poll before the task yields to its neighbours.
const READS_PER_POLL: usize = 16;
/// Chunked messages one client may have in progress at once.
const MAX_CLIENT_CHUNKED: usize = 64;
/// How long a frame waits before retrying a full inbox or control mailbox.
const RETRY_DELAY: Duration = Duration::from_micros(200);

/// How a connection ended.
#[derive(Debug)]
pub struct ConnOutcome {
    /// The peer, if the handshake completed.
    pub peer: Option<PeerInfo>,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Builds the session configuration a core uses for its connections.
pub(crate) fn session_config(core: &Core) -> SessionConfig {
    let cfg = &core.cfg;
    let mut s = SessionConfig::new(cfg.node_id, cfg.domain_id);
    s.capabilities = Capabilities::CHUNKING | Capabilities::SUBSCRIBE;
    s.limits = cfg.limits;
    s.keepalive_interval = cfg.keepalive_interval;
    s.handshake_timeout = cfg.handshake_timeout;
    s.require_tls = cfg.require_tls;
    s
}

/// Runs one connection to its end. `started` is when the TCP connection was made: the
/// handshake deadline counts from then (a TLS handshake before this call used part of it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_connection(
    core: Rc<Core>,
    transport: Transport,
    side: Side,
    expected_peer: Option<u64>,
    security: ChannelSecurity,
    nonce: [u8; 32],
    plain_client_only: bool,
    started: Instant,
) -> ConnOutcome {
    let mut config = session_config(&core);
    if plain_client_only {
        // Checked at `Established`: only a client may stay on this plain connection.
        config.require_tls = false;
    }
    // Created as of `started`, so that its handshake deadline is the connection's.
    let session = match Session::new(config, side, expected_peer, security, nonce, started) {
        Ok(s) => s,
        Err(e) => {
            warn!(core = core.id, error = %e, "invalid session configuration");
            return ConnOutcome {
                peer: None,
                reason: CloseReason::Internal,
            };
        }
    };
    let limits = session.decoder_limits();
    let mut conn = Conn {
        id: core.new_session_id(),
        core: core.clone(),
        session,
        transport,
        decoder: Decoder::with_source(limits, DEFAULT_READ_CHUNK_LEN, core.buffers.clone()),
        queue: Rc::new(PeerQueue::new(core.cfg.queue)),
        ctl: Rc::new(SessionCtl::default()),
        side,
        peer: None,
        registered: false,
        subscriber: false,
        client_chunks: Vec::new(),
        client_reassembly: None,
        plain_client_only,
        stalled: None,
        timer: None,
        reason: None,
        eof: false,
        relocated_seen: 0,
        started,
    };
    CoreMetrics::add(&core.metrics.sessions_open, 1);
    std::future::poll_fn(|cx| conn.poll(cx)).await;
    conn.finish()
}

// Four independent facts about one connection (registered, subscriber, plain-client-only,
// EOF); an enum would couple states that change separately.
#[allow(clippy::struct_excessive_bools)]
struct Conn {
    id: u64,
    core: Rc<Core>,
    session: Session,
    transport: Transport,
    decoder: Decoder<CoreBuffers>,
    queue: Rc<PeerQueue>,
    ctl: Rc<SessionCtl>,
    side: Side,
    peer: Option<PeerInfo>,
    registered: bool,
    /// Whether this is a native client receiving the node's deliveries.
    subscriber: bool,
    /// Chunked messages of a native client in progress: (client msg_id, node msg_id).
    client_chunks: Vec<(u64, u64)>,
    /// A native client's chunked messages being reassembled (exactly-once mode), created at
    /// the first chunk.
    client_reassembly: Option<Reassembler>,
    /// Plain connection under `require_tls`, allowed only because it is a local client.
    plain_client_only: bool,
    /// A routed frame waiting for room at its next hop.
    stalled: Option<Stalled>,
    timer: Option<(Instant, Timer)>,
    reason: Option<CloseReason>,
    eof: bool,
    /// `decoder.bytes_relocated()` already counted in the metrics.
    relocated_seen: u64,
    /// When the TCP connection was made (the handshake deadline counts from then).
    started: Instant,
}

enum Stalled {
    /// Wait until the queue drains.
    Queue(Frame<BytesMut>),
    /// Wait a moment, then retry.
    Later(Frame<BytesMut>, Timer),
    /// A native client's message the core could not take yet: offer it again shortly.
    Client(ClientMessage, Timer),
    /// A native client's message waiting for its destination's rate limit.
    Limited(Frame<BytesMut>, Timer),
}

impl Conn {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.ctl.register(cx.waker());
        for _ in 0..4 {
            let now = Instant::now();
            if let Some(reason) = self.ctl.take_close() {
                self.session.close(reason, now);
            }
            self.poll_timer(cx, now);
            self.pump_session();
            // Write whatever is queued (control frames and routed frames alike).
            self.queue.register_writer(cx.waker());
            match self.transport.poll_write_queue(cx, &self.queue) {
                Poll::Ready(Ok(0)) | Poll::Pending => {}
                Poll::Ready(Ok(n)) => {
                    CoreMetrics::add(&self.core.metrics.bytes_out, n as u64);
                    self.session.note_sent(now);
                }
                Poll::Ready(Err(e)) => {
                    debug!(core = self.core.id, error = %e, "write failed");
                    self.reason.get_or_insert(CloseReason::Normal);
                    return Poll::Ready(());
                }
            }
            if !self.session.is_closed()
                && self.queue.bytes() > self.core.cfg.client_unread_max
                && self.peer.as_ref().is_some_and(|p| p.role == Role::Client)
            {
                warn!(
                    core = self.core.id,
                    unread = self.queue.bytes(),
                    "a native client leaves what the node sends it unread: session closed"
                );
                CoreMetrics::add(&self.core.metrics.protocol_errors, 1);
                self.session.close(CloseReason::FlowControlViolation, now);
                // What it left unread goes (deliveries are offered again after their
                // redelivery timeout); the connection ends without waiting for it.
                drop(self.queue.close());
                self.reason.get_or_insert(CloseReason::FlowControlViolation);
                self.eof = true;
            }
            if self.session.is_closed() || self.eof {
                if self.queue.is_empty() || self.eof {
                    let _ = self.transport.poll_close(cx);
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
            if !self.retry_stalled(cx) {
                // Reads wait until the stalled frame found room.
                self.arm_timer(cx);
                return Poll::Pending;
            }
            // Whole frames may still sit in the decoder from before a stall: handle them before
            // reading more (the peer may have nothing more to send).
            if !self.handle_frames(cx, now) {
                self.pump_session();
                self.arm_timer(cx);
                continue;
            }
            let progressed = self.poll_reads(cx, now);
            self.pump_session();
            self.arm_timer(cx);
            if !progressed && self.queue.is_empty() {
                return Poll::Pending;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        // Plenty of work: yield to the other tasks of this core, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>, now: Instant) {
        if let Some((_, t)) = &mut self.timer
            && Pin::new(t).poll(cx).is_ready()
        {
            self.timer = None;
        }
        if self.session.poll_timeout().is_some_and(|d| d <= now) {
            if self.stalled.is_some() {
                // This side stopped reading (backpressure): the peer's silence is ours, not a
                // sign of death. Its keepalives wait unread in the socket.
                self.session.note_received(now);
            }
            self.session.handle_timeout(now);
        }
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let Some(deadline) = self.session.poll_timeout() else {
            self.timer = None;
            return;
        };
        if self.timer.as_ref().is_some_and(|(d, _)| *d == deadline) {
            return;
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut t = Timer::new(wait);
        if Pin::new(&mut t).poll(cx).is_ready() {
            cx.waker().wake_by_ref();
            self.timer = None;
        } else {
            self.timer = Some((deadline, t));
        }
    }

    /// Moves the session's frames to the queue and acts on its events.
    fn pump_session(&mut self) {
        while let Some(f) = self.session.poll_transmit() {
            // Control frames bypass the bounds: few, small, and they must not wait.
            let _ = self.queue.push(OutItem::Local(f), true);
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                SessionEvent::Established { peer } => self.established(peer),
                SessionEvent::Draining => {
                    debug!(core = self.core.id, peer = ?self.peer.as_ref().map(|p| p.node_id), "peer draining");
                }
                SessionEvent::Closed { reason, by_peer } => {
                    self.reason = Some(reason);
                    let peer = self.peer.as_ref().map(|p| p.node_id);
                    if by_peer {
                        info!(
                            core = self.core.id,
                            ?peer,
                            ?reason,
                            "peer closed the session"
                        );
                    } else {
                        info!(core = self.core.id, ?peer, ?reason, "closing session");
                    }
                    if matches!(
                        reason,
                        CloseReason::BadMagic
                            | CloseReason::UnsupportedVersion
                            | CloseReason::UnknownKindOrFlags
                            | CloseReason::FrameTooLarge
                            | CloseReason::MalformedFrame
                            | CloseReason::BadMetadata
                            | CloseReason::UnexpectedFrame
                    ) && !by_peer
                    {
                        CoreMetrics::add(&self.core.metrics.protocol_errors, 1);
                    }
                    if self.peer.is_none() {
                        if reason == CloseReason::HandshakeTimeout && !by_peer {
                            crate::engine::handshake_timed_out(&self.core, self.side, self.started);
                        } else {
                            CoreMetrics::add(&self.core.metrics.handshake_failures, 1);
                        }
                    }
                }
            }
        }
    }

    fn established(&mut self, peer: PeerInfo) {
        self.decoder.set_limits(peer.limits);
        if peer.role == Role::Node {
            // Peer links carry the bulk: a large read chunk means a partly received large frame
            // is rarely carried into a new buffer (see `Decoder::bytes_relocated`).
            self.decoder.set_read_chunk_len(PEER_READ_CHUNK_LEN);
        }
        if self.plain_client_only && peer.role != Role::Client {
            warn!(
                core = self.core.id,
                peer = peer.node_id,
                "a node refused on a connection only clients may use (plain TCP under \
                 --require-tls, or in-process)"
            );
            self.session.close(CloseReason::TlsRequired, Instant::now());
            self.peer = Some(peer);
            return;
        }
        if peer.role == Role::Client {
            // A native application: not a routing neighbour. It may subscribe to this node's
            // deliveries; what it sends is stamped with this node's identity.
            info!(
                core = self.core.id,
                client = peer.node_id,
                subscribe = peer.capabilities.contains(Capabilities::SUBSCRIBE),
                "client attached"
            );
            self.core
                .clients
                .borrow_mut()
                .insert(self.id, self.queue.clone());
            if peer.capabilities.contains(Capabilities::SUBSCRIBE) {
                self.core.add_subscriber(self.id, self.queue.clone());
                self.subscriber = true;
            }
            CoreMetrics::add(&self.core.metrics.sessions_established, 1);
            self.peer = Some(peer);
            return;
        }
        let slot = SessionSlot {
            queue: self.queue.clone(),
            ctl: self.ctl.clone(),
        };
        info!(
            core = self.core.id,
            peer = peer.node_id,
            domain = peer.domain_id,
            authenticated = peer.authenticated,
            "session established"
        );
        if let Some(reason) = self.core.register(self.id, &peer, self.side, slot) {
            self.session.close(reason, Instant::now());
            self.peer = Some(peer);
            return;
        }
        self.registered = true;
        CoreMetrics::add(&self.core.metrics.sessions_established, 1);
        let _ = self.core.events.post(EngineEvent::PeerUp {
            peer: peer.clone(),
            core: self.core.id,
        });
        self.peer = Some(peer);
    }

    /// Retries the stalled frame. Returns whether reads may go on.
    fn retry_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(stalled) = self.stalled.take() else {
            return true;
        };
        let frame = match stalled {
            Stalled::Queue(f) => f,
            Stalled::Later(f, mut t) => {
                if Pin::new(&mut t).poll(cx).is_pending() {
                    self.stalled = Some(Stalled::Later(f, t));
                    return false;
                }
                f
            }
            Stalled::Client(f, mut t) => {
                if Pin::new(&mut t).poll(cx).is_pending() {
                    self.stalled = Some(Stalled::Client(f, t));
                    return false;
                }
                return self.accept_client_data(cx, f);
            }
            Stalled::Limited(f, mut t) => {
                if Pin::new(&mut t).poll(cx).is_pending() {
                    self.stalled = Some(Stalled::Limited(f, t));
                    return false;
                }
                return self.handle_routed(cx, f);
            }
        };
        self.route_again(cx, frame)
    }

    /// Routes one frame. Returns false when it stalled.
    /// Hands a native client's (unchunked) message to the core's delivery machines, which
    /// persist and track it. Returns false when it must wait (the client is back-pressured).
    fn accept_client_data(&mut self, cx: &mut Context<'_>, msg: ClientMessage) -> bool {
        match self
            .core
            .delivery
            .accept_client_data(&self.core, self.id, msg)
        {
            Ok(()) => true,
            Err(NotNow(f)) => {
                let mut t = Timer::new(RETRY_DELAY);
                let _ = Pin::new(&mut t).poll(cx);
                self.stalled = Some(Stalled::Client(f, t));
                false
            }
        }
    }

    fn route(&mut self, cx: &mut Context<'_>, frame: Frame<BytesMut>) -> bool {
        let d = self.core.dispatch(frame);
        self.after_dispatch(cx, d)
    }

    fn route_again(&mut self, cx: &mut Context<'_>, frame: Frame<BytesMut>) -> bool {
        let d = self.core.redispatch(frame);
        self.after_dispatch(cx, d)
    }

    fn after_dispatch(&mut self, cx: &mut Context<'_>, d: Dispatch) -> bool {
        match d {
            Dispatch::Done => true,
            Dispatch::Blocked(f, q) => {
                q.wait_for_room(cx.waker());
                self.stalled = Some(Stalled::Queue(f));
                false
            }
            Dispatch::Retry(f) => {
                let mut t = Timer::new(RETRY_DELAY);
                let _ = Pin::new(&mut t).poll(cx);
                self.stalled = Some(Stalled::Later(f, t));
                false
            }
        }
    }

    /// Reads and handles frames. Returns whether anything was read.
    fn poll_reads(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progressed = false;
        for _ in 0..READS_PER_POLL {
            match self.transport.poll_read(cx, self.decoder.read_buf()) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    self.reason.get_or_insert(CloseReason::Normal);
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progressed = true;
                    self.decoder.commit(n);
                    let relocated = self.decoder.bytes_relocated();
                    if relocated > self.relocated_seen {
                        CoreMetrics::add(
                            &self.core.metrics.forward_bytes_copied,
                            relocated - self.relocated_seen,
                        );
                        self.relocated_seen = relocated;
                    }
                    self.session.note_received(now);
                    CoreMetrics::add(&self.core.metrics.bytes_in, n as u64);
                    if self.transport.copies_reads() {
                        CoreMetrics::add(&self.core.metrics.forward_bytes_copied, n as u64);
                    }
                    if !self.handle_frames(cx, now) {
                        return true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    debug!(core = self.core.id, error = %e, "read failed");
                    self.eof = true;
                    self.reason.get_or_insert(CloseReason::Normal);
                    return true;
                }
            }
        }
        progressed
    }

    /// Decodes and handles every whole frame buffered. Returns false when reading must pause
    /// (a frame stalled, or the session closed).
    fn handle_frames(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        loop {
            match self.decoder.poll_frame() {
                Ok(None) => return true,
                Ok(Some(frame)) => {
                    CoreMetrics::add(&self.core.metrics.frames_in, 1);
                    match self.session.handle_frame(frame, now) {
                        // Session-control frames can change who the peer is (HELLO): act on
                        // the session's events before the next frame of the same read.
                        Ok(None) => self.pump_session(),
                        Ok(Some(routed)) => {
                            if !self.handle_routed(cx, routed) {
                                return false;
                            }
                        }
                        Err(e) => {
                            let peer = self.peer.as_ref().map(|p| p.node_id);
                            warn!(core = self.core.id, ?peer, error = %e, "session error");
                            return false;
                        }
                    }
                }
                Err(e) => {
                    let peer = self.peer.as_ref().map(|p| p.node_id);
                    warn!(core = self.core.id, ?peer, error = %e, reason = e.metric_label(), "bad frame from peer");
                    self.session.handle_decode_error(&e, now);
                    return false;
                }
            }
        }
    }

    /// Hands a frame for the control thread over (LSAs, application acks); a full mailbox
    /// drops it with a metric (the senders retransmit).
    fn to_control(&self, from: u64, frame: Frame<BytesMut>) {
        if self
            .core
            .events
            .post(EngineEvent::Control { from, frame })
            .is_err()
        {
            self.core
                .metrics
                .count_drop(crate::metrics::DropReason::ControlBusy);
        }
    }

    fn handle_routed(&mut self, cx: &mut Context<'_>, mut frame: Frame<BytesMut>) -> bool {
        let from = self.peer.as_ref().map_or(0, |p| p.node_id);
        if self.peer.as_ref().is_some_and(|p| p.role == Role::Client) {
            if frame.kind() == FrameKind::Data
                && (!frame.flags().contains(mesh_wire::Flags::CHUNK)
                    || frame.envelope().chunk_index == 0)
            {
                // A message (its first chunk) to a rate-limited destination waits its turn.
                let env = frame.envelope();
                if let Some(wait) = self.core.rate_wait(env.dst_domain, env.dst_node) {
                    let mut t = Timer::new(wait);
                    let _ = Pin::new(&mut t).poll(cx);
                    self.stalled = Some(Stalled::Limited(frame, t));
                    return false;
                }
            }
            if frame.kind() == FrameKind::Data
                && self.core.delivery.mode() == DeliveryMode::ExactlyOnce
            {
                if frame.flags().contains(mesh_wire::Flags::CHUNK) {
                    return self.client_chunk(cx, frame);
                }
                return self.accept_client_data(cx, ClientMessage::Frame(frame));
            }
            if frame.kind() == FrameKind::Ack
                && self.core.delivery.mode() == DeliveryMode::ExactlyOnce
            {
                // The application acks a message it was offered: (src_node, msg_id) are the
                // message's, sent back as dst_node and msg_id.
                let env = frame.envelope();
                let success = frame
                    .meta(&mesh_wire::MetaLimits::default())
                    .ok()
                    .and_then(|m| m.ack_success)
                    .unwrap_or(true);
                self.core.client_ack(env.dst_node, env.msg_id, success);
                return true;
            }
            if frame.kind() == FrameKind::Data {
                let Some(id) = self.client_msg_id(&frame) else {
                    self.session
                        .close(CloseReason::FlowControlViolation, Instant::now());
                    return false;
                };
                frame.set_origin(self.core.node_id(), self.core.cfg.domain_id, id);
                return self.route(cx, frame);
            }
            // Acknowledgements and the like from an application go to the control thread.
            self.to_control(from, frame);
            return true;
        }
        match frame.kind() {
            FrameKind::Data | FrameKind::Delivered | FrameKind::Ack | FrameKind::Nack => {
                self.route(cx, frame)
            }
            _ => {
                self.to_control(from, frame);
                true
            }
        }
    }

    /// One chunk of a native client's message (exactly-once mode): the whole message goes to
    /// the delivery machines once its last chunk came. Chunks over the reassembly bounds
    /// (64 messages at once, 64 MiB) close the session.
    fn client_chunk(&mut self, cx: &mut Context<'_>, frame: Frame<BytesMut>) -> bool {
        let now = Instant::now();
        let r = self.client_reassembly.get_or_insert_with(|| {
            Reassembler::new(ReassemblyLimits {
                source_partials_max: MAX_CLIENT_CHUNKED,
                partials_max: MAX_CLIENT_CHUNKED,
                ..ReassemblyLimits::default()
            })
        });
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        match r.handle_chunk(frame, now) {
            Ok(ChunkOutcome::Complete(m)) => self.accept_client_data(cx, ClientMessage::Chunked(m)),
            Ok(ChunkOutcome::Incomplete | ChunkOutcome::Duplicate) => true,
            Err(e) => {
                warn!(core = self.core.id, error = %e, "a client's chunked message refused");
                self.session.close(CloseReason::FlowControlViolation, now);
                false
            }
        }
    }

    /// The msg_id this node gives a client's frame: a fresh one per message, the same for every
    /// chunk of one message (keyed by the client's own msg_id until its LAST_CHUNK).
    fn client_msg_id(&mut self, frame: &Frame<BytesMut>) -> Option<u64> {
        let flags = frame.flags();
        if !flags.contains(mesh_wire::Flags::CHUNK) {
            return Some(self.core.next_client_msg_id());
        }
        let client_id = frame.envelope().msg_id;
        let known = self.client_chunks.iter().find(|(c, _)| *c == client_id);
        let id = if let Some(&(_, id)) = known {
            id
        } else {
            if self.client_chunks.len() >= MAX_CLIENT_CHUNKED {
                warn!(
                    core = self.core.id,
                    "client interleaves too many chunked messages"
                );
                return None;
            }
            let id = self.core.next_client_msg_id();
            self.client_chunks.push((client_id, id));
            id
        };
        if flags.contains(mesh_wire::Flags::LAST_CHUNK) {
            self.client_chunks.retain(|(c, _)| *c != client_id);
        }
        Some(id)
    }

    fn finish(self) -> ConnOutcome {
        CoreMetrics::sub(&self.core.metrics.sessions_open, 1);
        self.core.clients.borrow_mut().remove(&self.id);
        if self.subscriber {
            self.core.remove_subscriber(self.id);
            let left = self.queue.close();
            if !left.is_empty() {
                warn!(
                    core = self.core.id,
                    frames = left.len(),
                    "deliveries left unread by a closed subscriber"
                );
            }
        }
        let reason = self.reason.unwrap_or(CloseReason::Normal);
        if let Some(peer) = &self.peer
            && self.registered
        {
            let left = self.core.unregister(self.id, peer.node_id);
            if !left.is_empty() {
                debug!(
                    core = self.core.id,
                    peer = peer.node_id,
                    frames = left.len(),
                    "frames left in a closed session's queue"
                );
                self.core
                    .metrics
                    .count_drops(crate::metrics::DropReason::SessionClosed, left.len() as u64);
            }
            let _ = self.core.events.post(EngineEvent::PeerDown {
                node_id: peer.node_id,
                reason,
            });
        }
        if let Some(
            Stalled::Queue(_) | Stalled::Later(..) | Stalled::Client(..) | Stalled::Limited(..),
        ) = self.stalled
        {
            self.core
                .metrics
                .count_drop(crate::metrics::DropReason::SessionClosed);
        }
        ConnOutcome {
            peer: self.peer,
            reason,
        }
    }
}
