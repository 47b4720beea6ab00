//! The gRPC API's way into the data plane: native-client sessions of this node with itself
//! over in-process streams (`mesh-session`'s client role, driven here on tokio; the core runs
//! the other end as it runs a TCP client's session).
//!
//! A gRPC Send is a native client's send: the core that takes it allocates the msg_id, appends
//! it to the WAL, tracks it and reports PERSISTED / DELIVERED / ACK / FAILED in receipts, which
//! this module routes back to the waiting call. Subscribe streams share one subscriber
//! session (a [`Link`] made with a deliveries channel): the node offers it what is addressed to
//! it and it hands each message on to the [`super::data_service`] hub. So gRPC traffic takes
//! exactly the path of native traffic, with every guarantee and limit of the data plane, and
//! no second implementation of them. The bytes between the gateway and the core move through a
//! [`mesh_engine::pipe`] (memory, no system call), not through a loopback socket.
//!
//! Each [`Link`] is one session run by one task. [`Gateway`] keeps one link per core of the
//! node and picks them in turn; a link that died is replaced at the next call. A SendStream
//! keeps its link for its life (its messages stay in order) and hands it what it decoded
//! together as one batch.
//!
//! The link's task owns each send's state until it is answered: the receipts received so far
//! ([`Reply`]), when its caller wants the answer ([`Wait`]) and its deadline. Answers go back
//! in batches on one channel per caller, so a message costs no task, no oneshot and no
//! channel of its own.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytes::BytesMut;
use foldhash::HashMap;
use mesh_client::{ClientOptions, Receipt};
use mesh_engine::{EngineHandle, LocalStream};
use mesh_session::{PeerInfo, Session, SessionEvent};
use mesh_wire::{
    ChunkOutcome, CloseReason, Decoder, Envelope, Flags, Frame, FrameKind, Limits, MetaLimits,
    Metadata, Reassembler, ReassemblyLimits, chunk_message,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Bytes of encoded frames a link buffers before it stops taking commands.
const OUT_BUFFER_MAX: usize = 4 << 20;
/// Bytes the frame buffer starts with (it grows as a batch needs).
const OUT_CHUNK: usize = 64 << 10;
/// Reads of the stream in a row before the task lets the others run.
const READS_PER_WAKE: usize = 16;
/// Commands waiting for a link.
const COMMANDS_MAX: usize = 4096;
/// Commands taken from the queue at once before the next write.
const COMMANDS_PER_WRITE: usize = 256;
/// Time allowed to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the gateway could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No session with the node (it is starting or stopping).
    #[error("the node's data plane is not reachable: {0}")]
    Unavailable(String),
    /// The message cannot be framed.
    #[error("{0}")]
    Invalid(String),
}

/// A message to send, as the gRPC request described it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Destination node (not 0).
    pub dst_node: u64,
    /// Destination domain, 0: resolved by the node.
    pub dst_domain: u32,
    /// Metadata (headers, corr_id, idempotency key); `None`: none (most messages: an order
    /// stays small where it is moved and queued).
    pub meta: Option<Box<Metadata>>,
    /// `REQUIRE_ACK` or nothing.
    pub flags: Flags,
    /// Hop limit, 0: the default.
    pub ttl: u8,
    /// Traffic class.
    pub class: u8,
    /// The body.
    pub payload: Bytes,
}

/// A message the node offered to the subscriber session.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its origin.
    pub src_node: u64,
    /// The origin's domain.
    pub src_domain: u32,
    /// This node.
    pub dst_node: u64,
    /// Its id at the origin.
    pub msg_id: u64,
    /// The application's correlation id.
    pub corr_id: Option<u64>,
    /// The application's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub payload: Bytes,
    /// The application must ack it.
    pub require_ack: bool,
    /// The node offered it before.
    pub redelivered: bool,
    /// Traffic class.
    pub class: u8,
}

/// When a send is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Once the session took it: forwarding only, the node tracks nothing.
    Taken,
    /// PERSISTED (or any later or final status): FIRE_AND_FORGET.
    Persisted,
    /// Stored at the destination: WAIT_FOR_DELIVERY.
    Delivered,
    /// Acked by the destination's application: WAIT_FOR_ACK.
    Acked,
}

/// One message to send and how its caller wants it answered.
#[derive(Debug)]
pub struct SendOrder {
    /// The message.
    pub msg: Outgoing,
    /// The caller's name for it, given back in its [`Answer`] (a SendStream's position).
    pub token: u64,
    /// When to answer.
    pub wait: Wait,
    /// Answer with what was reached by then, if not answered before.
    pub deadline: Option<tokio::time::Instant>,
}

/// The answer to one [`SendOrder`].
#[derive(Debug)]
pub struct Answer {
    /// The order's token.
    pub token: u64,
    /// What its receipts told (`Err`: never taken by the node).
    pub result: Result<Reply, GatewayError>,
}

/// Where a link puts answers: each message on it is a batch of answers of one caller.
pub type AnswerSink = mpsc::UnboundedSender<Vec<Answer>>;

/// What a send's receipts told so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Its msg_id (0 until the node named it).
    pub msg_id: u64,
    /// The highest status reached (a `mesh.v1.MessageStatus` number).
    pub status: u16,
    /// With FAILED: the `mesh.v1.FailureReason` number.
    pub reason: Option<u16>,
    /// The idempotency key was seen before: `msg_id` is the first send's.
    pub duplicate: bool,
}

impl Reply {
    /// Nothing heard yet: ACCEPTED.
    #[must_use]
    pub fn accepted() -> Reply {
        Reply {
            msg_id: 0,
            status: 1,
            reason: None,
            duplicate: false,
        }
    }

    /// Takes in one receipt.
    pub fn update(&mut self, r: &Receipt) {
        if r.msg_id != 0 {
            self.msg_id = r.msg_id;
        }
        // Statuses only move up the ladder; a late lower one changes nothing.
        if rank(r.status) >= rank(self.status) {
            self.status = r.status;
            self.reason = r.reason;
        }
        self.duplicate |= r.duplicate;
    }

    /// Whether what was reached answers a caller who waits for `wait`.
    #[must_use]
    pub fn answers(&self, wait: Wait) -> bool {
        let s = self.status;
        let fin = matches!(s, 6..=8 | 11);
        self.duplicate
            || fin
            || match wait {
                Wait::Taken => true,
                Wait::Persisted => s >= 2,
                Wait::Delivered => s == 4 || s == 5,
                Wait::Acked => false,
            }
    }
}

/// Where a status is on the ladder (PENDING_NODE sits between FORWARDED and DELIVERED).
fn rank(status: u16) -> u16 {
    match status {
        9 => 3,
        10 => 4,
        s => s.saturating_mul(2),
    }
}

/// A send whose answer is still due.
struct Waiter {
    sink: AnswerSink,
    token: u64,
    wait: Wait,
    reply: Reply,
}

enum Command {
    Send {
        orders: Vec<SendOrder>,
        sink: AnswerSink,
    },
    Acks(Vec<(u64, u64, bool)>),
}

/// One session with the node.
#[derive(Debug, Clone)]
pub struct Link {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send { orders, .. } => f
                .debug_struct("Send")
                .field("messages", &orders.len())
                .finish(),
            Command::Acks(a) => f.debug_struct("Acks").field("acks", &a.len()).finish(),
        }
    }
}

impl Link {
    /// Opens a session with core `core` of the node (`core % cores`) and completes the
    /// handshake. With `deliveries`, the session subscribes and every message the node offers
    /// goes there (reading stops while that channel is full: the node holds the rest).
    pub async fn connect(
        engine: &EngineHandle,
        core: usize,
        deliveries: Option<mpsc::Sender<Incoming>>,
    ) -> Result<Link, GatewayError> {
        let unavailable = |e: &dyn std::fmt::Display| GatewayError::Unavailable(e.to_string());
        let stream = engine.open_local(core).map_err(|e| unavailable(&e))?;
        let options = ClientOptions {
            subscribe: deliveries.is_some(),
            // The session's own default: an in-process session needs no faster liveness check.
            keepalive: mesh_session::session::DEFAULT_KEEPALIVE_INTERVAL,
            ..ClientOptions::default()
        };
        let session = options
            .session(Instant::now())
            .map_err(|e| unavailable(&e))?;
        let (tx, rx) = mpsc::channel(COMMANDS_MAX);
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver {
            decoder: Decoder::new(session.decoder_limits()),
            session,
            stream,
            out: BytesMut::with_capacity(OUT_CHUNK),
            node: None,
            ready: Some(ready_tx),
            next_seq: 1,
            waiters: HashMap::default(),
            deadlines: BinaryHeap::new(),
            answers: Vec::new(),
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            deliveries,
            held: VecDeque::new(),
        };
        tokio::spawn(driver.run(rx));
        tokio::time::timeout(HANDSHAKE_TIMEOUT, ready_rx)
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|_| {
                GatewayError::Unavailable("the session ended in its handshake".into())
            })??;
        Ok(Link { commands: tx })
    }

    /// Sends `orders`; their answers go to `sink`, in batches, each once (an order the node
    /// could not frame is answered `Err(Invalid)` at once; a session that ends answers what
    /// it still owes). If the session is already over, the orders come back.
    pub async fn send(
        &self,
        orders: Vec<SendOrder>,
        sink: AnswerSink,
    ) -> Result<(), Vec<SendOrder>> {
        self.commands
            .send(Command::Send { orders, sink })
            .await
            .map_err(|e| match e.0 {
                Command::Send { orders, .. } => orders,
                Command::Acks(_) => Vec::new(),
            })
    }

    /// Acks messages the node offered on this (subscriber) session: (src_node, msg_id,
    /// success) each.
    pub async fn acks(&self, acks: Vec<(u64, u64, bool)>) -> Result<(), GatewayError> {
        if acks.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::Acks(acks))
            .await
            .map_err(|_| GatewayError::Unavailable("the session with the node ended".into()))
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The sending side of the gateway: one link per core of the node, used in turn.
#[derive(Debug)]
pub struct Gateway {
    engine: Arc<EngineHandle>,
    links: Mutex<Vec<Option<Link>>>,
    next: AtomicUsize,
}

impl Gateway {
    /// A gateway to the data plane `engine`, one link per core, made at first use.
    pub fn new(engine: Arc<EngineHandle>) -> Gateway {
        let cores = engine.cores().max(1);
        Gateway {
            engine,
            links: Mutex::new(vec![None; cores]),
            next: AtomicUsize::new(0),
        }
    }

    /// A live link, connecting one if its slot is empty or dead.
    pub async fn link(&self) -> Result<Link, GatewayError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots();
        let current = self.lock()[slot].clone();
        if let Some(l) = current
            && !l.is_closed()
        {
            return Ok(l);
        }
        let l = Link::connect(&self.engine, slot, None).await?;
        self.lock()[slot] = Some(l.clone());
        Ok(l)
    }

    fn slots(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Link>>> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The task that runs one session.
struct Driver {
    session: Session,
    stream: LocalStream,
    decoder: Decoder,
    /// Frames encoded and not yet handed to the stream. Its allocation comes back to it once
    /// the core has read a chunk handed over (`BytesMut::reserve` reclaims a buffer nobody
    /// else holds), so a busy link does not allocate per write.
    out: BytesMut,
    node: Option<PeerInfo>,
    ready: Option<oneshot::Sender<Result<(), GatewayError>>>,
    next_seq: u64,
    /// Sends whose answers are due, by the sequence number they went out with.
    waiters: HashMap<u64, Waiter>,
    /// When waiters with a deadline must be answered: (deadline, sequence number).
    deadlines: BinaryHeap<Reverse<(tokio::time::Instant, u64)>>,
    /// Answers made and not yet handed to their sinks: runs of answers to one sink each, in
    /// the order made.
    answers: Vec<(AnswerSink, Vec<Answer>)>,
    reassembler: Reassembler,
    deliveries: Option<mpsc::Sender<Incoming>>,
    /// Offered messages waiting for room in `deliveries` (reading stops meanwhile).
    held: VecDeque<Incoming>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let reason = self.drive(&mut commands).await;
        debug!(?reason, "gateway session ended");
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(GatewayError::Unavailable(format!(
                "the session with the node ended: {reason:?}"
            ))));
        }
        // Every send still owed an answer gets one: what it reached if the node took it,
        // UNAVAILABLE if not (nor queued ones).
        let gone = || GatewayError::Unavailable("the session with the node ended".into());
        for (_, w) in std::mem::take(&mut self.waiters) {
            let result = if w.reply.msg_id == 0 && !w.reply.duplicate {
                Err(gone())
            } else {
                Ok(w.reply)
            };
            self.answer(&w.sink, w.token, result);
        }
        commands.close();
        while let Ok(c) = commands.try_recv() {
            if let Command::Send { orders, sink } = c {
                for o in orders {
                    self.answer(&sink, o.token, Err(gone()));
                }
            }
        }
        self.hand_answers();
    }

    /// Answers the order `token` of `sink` (handed over by [`Driver::hand_answers`]).
    fn answer(&mut self, sink: &AnswerSink, token: u64, result: Result<Reply, GatewayError>) {
        let answer = Answer { token, result };
        match self.answers.last_mut() {
            Some((last, run)) if last.same_channel(sink) => run.push(answer),
            _ => self.answers.push((sink.clone(), vec![answer])),
        }
    }

    /// Hands the answers made to their sinks, one batch per run of answers to one sink.
    fn hand_answers(&mut self) {
        for (sink, run) in self.answers.drain(..) {
            // A caller that went away no longer wants them.
            let _ = sink.send(run);
        }
    }

    /// Answers the waiters whose deadline passed with what they reached.
    fn expire(&mut self, now: tokio::time::Instant) {
        while let Some(Reverse((at, seq))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(w) = self.waiters.remove(&seq) {
                self.answer(&w.sink, w.token, Ok(w.reply));
            }
        }
    }

    async fn drive(&mut self, commands: &mut mpsc::Receiver<Command>) -> Option<CloseReason> {
        let mut buf_guard = 0usize;
        loop {
            if let Some(reason) = self.pump() {
                // The last frames (its CLOSE) go out whatever room is left.
                let _ = self.write_out();
                return Some(reason);
            }
            if !self.held.is_empty() {
                self.release_held();
            }
            if !self.answers.is_empty() {
                self.hand_answers();
            }
            let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
            let session_timer = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let timer = session_timer.into_iter().chain(deadline).min();
            let established = self.node.is_some();
            let take_commands = established && self.unwritten() < OUT_BUFFER_MAX;
            let read = self.held.is_empty();
            let write = self.unwritten() > 0;
            let room = async {
                match (&self.deliveries, self.held.is_empty()) {
                    (Some(d), false) => {
                        let _ = d.reserve().await;
                    }
                    _ => std::future::pending::<()>().await,
                }
            };
            let reader = &self.stream.reader;
            let writer = &self.stream.writer;
            tokio::select! {
                () = std::future::poll_fn(|cx| reader.poll_readable(cx)), if read => {
                    // What is there, a few reads' worth, before the other branches (and the
                    // runtime's other tasks: the hub, the gRPC streams) get their turn.
                    for _ in 0..READS_PER_WAKE {
                        match self.stream.reader.try_read(self.decoder.read_buf()) {
                            Ok(0) => return None,
                            Ok(n) => {
                                self.decoder.commit(n);
                                self.session.note_received(Instant::now());
                                self.handle_input();
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => return None,
                        }
                        if !self.held.is_empty() {
                            break;
                        }
                    }
                }
                r = std::future::poll_fn(|cx| writer.poll_room(cx)), if write => {
                    if r.is_err() || self.write_out().is_err() {
                        return None;
                    }
                    self.session.note_sent(Instant::now());
                }
                c = commands.recv(), if take_commands => match c {
                    Some(c) => {
                        self.command(c);
                        // Then what else is queued, so that one write carries many frames.
                        for _ in 1..COMMANDS_PER_WRITE {
                            if self.unwritten() >= OUT_BUFFER_MAX {
                                break;
                            }
                            match commands.try_recv() {
                                Ok(c) => self.command(c),
                                Err(_) => break,
                            }
                        }
                    }
                    None => self.session.close(CloseReason::Normal, Instant::now()),
                },
                () = room => {}
                () = async {
                    match timer {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let now = tokio::time::Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        self.expire(now);
                    }
                    if session_timer.is_some_and(|t| t <= now) {
                        self.session.handle_timeout(now.into_std());
                    }
                }
            }
            buf_guard = buf_guard.wrapping_add(1);
            if buf_guard.is_multiple_of(1024) {
                // Sends whose callers stopped listening.
                self.waiters.retain(|_, w| !w.sink.is_closed());
            }
        }
    }

    /// Moves the session's frames out and its events along; `Some` once it closed.
    fn pump(&mut self) -> Option<CloseReason> {
        while let Some(f) = self.session.poll_transmit() {
            f.write_to(&mut self.out);
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                SessionEvent::Established { peer } => {
                    self.decoder.set_limits(peer.limits);
                    self.node = Some(peer);
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                SessionEvent::Draining => {}
                SessionEvent::Closed { reason, .. } => return Some(reason),
            }
        }
        None
    }

    /// Hands `out` to the stream as one chunk (the buffer itself: no copy). The stream holds
    /// at most its capacity plus one such chunk: a write waits for room, but a chunk is not
    /// cut to fit it.
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // No reserve here: by the next frame the core has likely read this chunk and the
        // buffer is ours again.
        let chunk = self.out.split().freeze();
        self.stream.writer.push(chunk)
    }

    /// Bytes framed and not yet written.
    fn unwritten(&self) -> usize {
        self.out.len()
    }

    fn handle_input(&mut self) {
        let now = Instant::now();
        loop {
            match self.decoder.poll_frame() {
                Ok(Some(frame)) => {
                    if let Ok(Some(routed)) = self.session.handle_frame(frame, now) {
                        self.take(routed, now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.session.handle_decode_error(&e, now);
                    break;
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Send { orders, sink } => {
                for o in orders {
                    let token = o.token;
                    match self.encode_send(o.msg) {
                        Ok(seq) => {
                            if o.wait == Wait::Taken {
                                self.answer(&sink, token, Ok(Reply::accepted()));
                                continue;
                            }
                            if let Some(at) = o.deadline {
                                self.deadlines.push(Reverse((at, seq)));
                                // Entries of waiters answered before their deadline stay in
                                // the heap until it passes; past twice the waiters, they go.
                                if self.deadlines.len() > 2 * self.waiters.len() + 1024 {
                                    let waiters = &self.waiters;
                                    self.deadlines.retain(|Reverse((_, s))| {
                                        *s == seq || waiters.contains_key(s)
                                    });
                                }
                            }
                            self.waiters.insert(
                                seq,
                                Waiter {
                                    sink: sink.clone(),
                                    token,
                                    wait: o.wait,
                                    reply: Reply::accepted(),
                                },
                            );
                        }
                        Err(e) => self.answer(&sink, token, Err(e)),
                    }
                }
            }
            Command::Acks(acks) => {
                for (src_node, msg_id, success) in acks {
                    match mesh_client::ack_frame(src_node, msg_id, success) {
                        Ok(f) => f.write_to(&mut self.out),
                        Err(e) => warn!(error = %e, "an ack could not be framed"),
                    }
                }
            }
        }
    }

    fn encode_send(&mut self, msg: Outgoing) -> Result<u64, GatewayError> {
        let limits = self
            .node
            .as_ref()
            .map_or_else(Limits::default, |n| n.limits);
        let mut env = Envelope::new(FrameKind::Data);
        env.flags = msg.flags;
        env.dst_node = msg.dst_node;
        env.dst_domain = msg.dst_domain;
        env.class = msg.class;
        if msg.ttl != 0 {
            env.ttl = msg.ttl;
        }
        let seq = self.next_seq;
        env.msg_id = seq;
        let no_meta = Metadata::default();
        let chunks = chunk_message(
            &env,
            msg.meta.as_deref().unwrap_or(&no_meta),
            &MetaLimits::default(),
            msg.payload,
            &limits,
        )
        .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        self.next_seq += 1;
        for f in chunks {
            f.write_to(&mut self.out);
        }
        Ok(seq)
    }

    fn take(&mut self, frame: Frame<BytesMut>, now: Instant) {
        match frame.kind() {
            FrameKind::Ack => {
                let Some(r) = Receipt::from_frame(&frame) else {
                    return;
                };
                let seq = r.seq;
                let Some(w) = self.waiters.get_mut(&seq) else {
                    return;
                };
                w.reply.update(&r);
                if w.reply.answers(w.wait)
                    && let Some(w) = self.waiters.remove(&seq)
                {
                    self.answer(&w.sink, w.token, Ok(w.reply));
                }
            }
            FrameKind::Data if self.deliveries.is_some() => {
                let env = frame.envelope();
                let incoming = if frame.flags().contains(Flags::CHUNK) {
                    match self.reassembler.handle_chunk(frame, now) {
                        Ok(ChunkOutcome::Complete(m)) => {
                            let meta = Metadata::decode(&m.meta, &MetaLimits::default())
                                .unwrap_or_default();
                            Incoming {
                                src_node: m.envelope.src_node,
                                src_domain: m.envelope.src_domain,
                                dst_node: m.envelope.dst_node,
                                msg_id: m.envelope.msg_id,
                                corr_id: meta.corr_id,
                                headers: meta.headers,
                                payload: Bytes::from(m.to_contiguous()),
                                require_ack: m.envelope.flags.contains(Flags::REQUIRE_ACK),
                                redelivered: m.envelope.flags.contains(Flags::RETRANSMIT),
                                class: m.envelope.class,
                            }
                        }
                        _ => return,
                    }
                } else {
                    let meta = frame.meta(&MetaLimits::default()).unwrap_or_default();
                    let (_, _, payload) = frame.into_parts();
                    Incoming {
                        src_node: env.src_node,
                        src_domain: env.src_domain,
                        dst_node: env.dst_node,
                        msg_id: env.msg_id,
                        corr_id: meta.corr_id,
                        headers: meta.headers,
                        payload: payload.freeze(),
                        require_ack: env.flags.contains(Flags::REQUIRE_ACK),
                        redelivered: env.flags.contains(Flags::RETRANSMIT),
                        class: env.class,
                    }
                };
                self.held.push_back(incoming);
                self.release_held();
            }
            _ => {}
        }
    }

    fn release_held(&mut self) {
        let Some(d) = &self.deliveries else {
            self.held.clear();
            return;
        };
        while let Some(m) = self.held.pop_front() {
            match d.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.held.push_front(m);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.held.clear();
                    self.session.close(CloseReason::Normal, Instant::now());
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(status: u16) -> Receipt {
        Receipt {
            seq: 1,
            msg_id: 7,
            status,
            duplicate: false,
            reason: None,
        }
    }

    #[test]
    fn each_wait_is_answered_at_its_status_and_every_one_at_a_final_one() {
        let after = |statuses: &[u16]| {
            let mut r = Reply::accepted();
            for &s in statuses {
                r.update(&receipt(s));
            }
            r
        };
        let fresh = Reply::accepted();
        assert!(fresh.answers(Wait::Taken));
        assert!(!fresh.answers(Wait::Persisted));
        let persisted = after(&[2]);
        assert!(persisted.answers(Wait::Persisted));
        assert!(!persisted.answers(Wait::Delivered));
        // PENDING_NODE is past PERSISTED, short of DELIVERED.
        let pending = after(&[2, 9]);
        assert!(pending.answers(Wait::Persisted));
        assert!(!pending.answers(Wait::Delivered));
        let delivered = after(&[2, 3, 4]);
        assert!(delivered.answers(Wait::Delivered));
        assert!(!delivered.answers(Wait::Acked));
        for fin in [6, 7, 8, 11] {
            let r = after(&[2, fin]);
            for w in [Wait::Persisted, Wait::Delivered, Wait::Acked] {
                assert!(r.answers(w), "{fin} answers {w:?}");
            }
        }
        let mut dup = Reply::accepted();
        dup.update(&Receipt {
            duplicate: true,
            ..receipt(1)
        });
        assert!(dup.answers(Wait::Acked));
        assert_eq!(dup.msg_id, 7);
    }

    #[test]
    fn a_late_lower_status_does_not_move_a_reply_back() {
        let mut r = Reply::accepted();
        r.update(&receipt(4));
        r.update(&receipt(2));
        r.update(&receipt(9));
        assert_eq!(r.status, 4);
        let mut f = Reply::accepted();
        f.update(&Receipt {
            reason: Some(3),
            ..receipt(11)
        });
        assert_eq!((f.status, f.reason), (11, Some(3)));
    }
}
