//! The native mesh client: an application attaches to its local node over the wire protocol,
//! with the client role in HELLO, to send messages and (optionally) receive the messages
//! addressed to the node — for producers and consumers too fast for gRPC. gRPC remains the
//! integration API.
//!
//! Blocking `std` sockets: no runtime, usable from any thread. Writes are buffered and go out
//! as one `write` per [`Client::flush`] (or when the buffer passes its limit), so a producer
//! sending small messages pays one syscall per batch, not per message. The session state
//! machine (HELLO, keepalive, CLOSE) is `mesh-session`'s, driven on every call.
//!
//! The node stamps what a client sends with its own node id and domain and a msg_id it
//! allocates, persists it, and reports what becomes of it in [`Receipt`]s (PERSISTED once its
//! record is durable, then DELIVERED, ACK_SUCCESS / ACK_FAILURE or FAILED): [`Client::send`]
//! returns the client's own sequence number, which each receipt echoes. A subscriber gets every
//! message stored for the node until it [`Client::ack`]s it; an unacked message is offered
//! again (with [`Delivery::redelivered`] set). Messages larger than one frame are chunked on
//! the wire and tracked as one message.
//!
//! ```no_run
//! use mesh_client::{Client, ClientOptions};
//! let mut c = Client::connect("127.0.0.1:7001", ClientOptions::default())?;
//! c.send(3, 0, b"hello")?;
//! c.flush()?;
//! # Ok::<(), mesh_client::ClientError>(())
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mesh_session::{
    Capabilities, ChannelSecurity, PeerInfo, Role, Session, SessionConfig, SessionEvent, Side,
};
use mesh_wire::{
    ChunkOutcome, CloseReason, Decoder, Envelope, Flags, Frame, FrameKind, Limits, MetaLimits,
    Metadata, Reassembler, ReassemblyLimits, chunk_message,
};

/// Options of a client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// This client's id in HELLO (random by default): only names the client in the node's logs.
    pub client_id: u64,
    /// Ask the node for the messages addressed to it.
    pub subscribe: bool,
    /// Keepalive interval offered (the node's may be shorter).
    pub keepalive: Duration,
    /// Bytes buffered before a write goes out without an explicit flush.
    pub write_buffer_len: usize,
    /// Time allowed to connect and finish the handshake.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// The session (sans-IO) a client with these options opens with its node: the initiator
    /// of a plain connection, its HELLO ready to send. For drivers other than [`Client`] (the
    /// node's gRPC gateway runs one on tokio).
    ///
    /// # Errors
    /// The options make an invalid session configuration (a keepalive out of range).
    pub fn session(&self, now: Instant) -> Result<Session, mesh_session::ConfigError> {
        let mut cfg = SessionConfig::new(self.client_id, 0);
        cfg.role = Role::Client;
        cfg.capabilities = if self.subscribe {
            Capabilities::CHUNKING | Capabilities::SUBSCRIBE
        } else {
            Capabilities::CHUNKING
        };
        cfg.keepalive_interval = self.keepalive;
        let mut nonce = [0u8; 32];
        let _ = getrandom::fill(&mut nonce);
        Session::new(
            cfg,
            Side::Initiator,
            None,
            ChannelSecurity::Plain,
            nonce,
            now,
        )
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        Self {
            client_id: u64::from_be_bytes(id) | 1,
            subscribe: false,
            keepalive: Duration::from_secs(1),
            write_buffer_len: 256 << 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The node closed the session.
    #[error("session closed: {reason:?}")]
    Closed {
        /// Why.
        reason: CloseReason,
    },
    /// The handshake did not complete in time.
    #[error("handshake with the node did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The message could not be framed.
    #[error("cannot frame the message: {0}")]
    Frame(String),
    /// Invalid argument.
    #[error("{0}")]
    Invalid(&'static str),
}

/// A message received from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The node that sent it.
    pub src_node: u64,
    /// Its domain.
    pub src_domain: u32,
    /// Its msg_id (unique per source node).
    pub msg_id: u64,
    /// Correlation id, if the sender set one.
    pub corr_id: Option<u64>,
    /// The payload.
    pub payload: Bytes,
    /// Hops left (TTL) when it arrived.
    pub ttl: u8,
    /// The sender wants the application's ack reported back to it.
    pub require_ack: bool,
    /// Offered before and not acked in time (or the node restarted since).
    pub redelivered: bool,
}

/// What the node reports about a message this client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The sequence number [`Client::send`] returned for it.
    pub seq: u64,
    /// The msg_id the node gave it (unique for the node, never reused).
    pub msg_id: u64,
    /// The status reached: a `mesh.v1.MessageStatus` number (see [`status`]).
    pub status: u16,
    /// The message carried an idempotency key the node already took
    /// ([`Client::send_idempotent`]): `msg_id` is the first send's, nothing was sent again,
    /// and `status` is [`status::ACCEPTED`] (later receipts for it go to the first sender).
    pub duplicate: bool,
    /// With [`status::FAILED`]: why, as a `mesh.v1.FailureReason` number.
    pub reason: Option<u16>,
}

/// The frame a client sends to ack (`success`) or reject the delivery of (`src_node`,
/// `msg_id`): an ACK addressed back to the message's source, with `ack_success` set.
///
/// # Errors
/// Only if the frame cannot be encoded under the default limits (it always can).
pub fn ack_frame(
    src_node: u64,
    msg_id: u64,
    success: bool,
) -> Result<mesh_wire::OutFrame, mesh_wire::EncodeError> {
    let mut env = Envelope::new(FrameKind::Ack);
    env.dst_node = src_node;
    env.msg_id = msg_id;
    let meta = Metadata {
        ack_success: Some(success),
        ..Metadata::default()
    };
    mesh_wire::encode_frame_with_meta(
        &env,
        &meta,
        &MetaLimits::default(),
        Bytes::new(),
        &Limits::default(),
    )
}

impl Receipt {
    /// The receipt a frame from the node carries: an ACK frame with metadata `client_seq` and
    /// `status` (anything else is not a receipt).
    pub fn from_frame(frame: &Frame<BytesMut>) -> Option<Receipt> {
        if frame.kind() != FrameKind::Ack {
            return None;
        }
        let m = frame.meta(&MetaLimits::default()).ok()?;
        Some(Receipt {
            seq: m.client_seq?,
            msg_id: frame.envelope().msg_id,
            status: m.status?,
            duplicate: m.duplicate == Some(true),
            reason: m.reason,
        })
    }
}

/// `mesh.v1.MessageStatus` numbers found in [`Receipt::status`].
pub mod status {
    /// Taken by the origin node (not yet durable).
    pub const ACCEPTED: u16 = 1;
    /// Durable at the origin node: it will arrive, across crashes of any node.
    pub const PERSISTED: u16 = 2;
    /// Stored at the destination node.
    pub const DELIVERED: u16 = 4;
    /// The destination application acked it.
    pub const ACK_SUCCESS: u16 = 6;
    /// The destination application rejected it.
    pub const ACK_FAILURE: u16 = 7;
    /// The destination was never known to the mesh.
    pub const UNDELIVERABLE: u16 = 8;
    /// Given up (expired, retries exhausted, refused).
    pub const FAILED: u16 = 11;
}

/// A session with the local node.
pub struct Client {
    sock: TcpStream,
    session: Session,
    decoder: Decoder,
    reassembler: Reassembler,
    node: Option<PeerInfo>,
    out: Vec<u8>,
    write_buffer_len: usize,
    closed: Option<CloseReason>,
    next_msg: u64,
    /// Deliveries read but not yet returned by [`Client::recv`], in arrival order.
    pending: std::collections::VecDeque<Delivery>,
    /// Receipts read but not yet returned by [`Client::receipts`], in arrival order.
    receipts: std::collections::VecDeque<Receipt>,
    /// When [`Client::flush`] next takes in what the node sent.
    next_input_poll: Instant,
}

/// How often a sending client takes in the node's frames while it flushes.
pub const INPUT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most reads one input poll of [`Client::flush`] makes.
const READS_PER_POLL: usize = 64;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the node at `addr` and completes the handshake.
    pub fn connect(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or(ClientError::Invalid("no address to connect to"))?;
        let sock = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
        sock.set_nodelay(true)?;
        let now = Instant::now();
        let session = options
            .session(now)
            .map_err(|e| ClientError::Frame(e.to_string()))?;
        let limits = session.decoder_limits();
        let mut c = Client {
            sock,
            session,
            decoder: Decoder::new(limits),
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            node: None,
            out: Vec::with_capacity(options.write_buffer_len),
            write_buffer_len: options.write_buffer_len,
            closed: None,
            next_msg: 1,
            pending: std::collections::VecDeque::new(),
            receipts: std::collections::VecDeque::new(),
            next_input_poll: now,
        };
        let deadline = now + options.connect_timeout;
        while c.node.is_none() {
            if Instant::now() >= deadline {
                return Err(ClientError::HandshakeTimeout(options.connect_timeout));
            }
            c.pump()?;
            c.flush()?;
            if c.node.is_none() {
                c.read_some(Some(Duration::from_millis(50)))?;
            }
        }
        Ok(c)
    }

    /// What the handshake learned about the node (its id, domain, limits).
    pub fn node(&self) -> Option<&PeerInfo> {
        self.node.as_ref()
    }

    /// Queues a message to `dst_node` (in `dst_domain`, 0 when unknown: the node resolves it).
    /// Goes out at the next [`Client::flush`] or when the write buffer fills. Returns this
    /// client's sequence number for the message, echoed by its [`Receipt`]s.
    pub fn send(
        &mut self,
        dst_node: u64,
        dst_domain: u32,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        self.send_with(
            dst_node,
            dst_domain,
            &Metadata::default(),
            Flags::EMPTY,
            Bytes::copy_from_slice(payload),
        )
    }

    /// Queues a message with metadata and flags (`REQUIRE_ACK`: report the destination
    /// application's ack); messages larger than a frame are chunked. Returns the sequence
    /// number, as [`Client::send`].
    pub fn send_with(
        &mut self,
        dst_node: u64,
        dst_domain: u32,
        meta: &Metadata,
        flags: Flags,
        payload: Bytes,
    ) -> Result<u64, ClientError> {
        if dst_node == 0 {
            return Err(ClientError::Invalid("dst_node must not be 0"));
        }
        self.check_open()?;
        let limits = self
            .node
            .as_ref()
            .map_or_else(Limits::default, |n| n.limits);
        let mut env = Envelope::new(FrameKind::Data);
        env.flags = flags;
        env.dst_node = dst_node;
        env.dst_domain = dst_domain;
        // The node replaces src and msg_id; a client-local counter keeps chunks of one message
        // together until then.
        let seq = self.next_msg;
        env.msg_id = seq;
        self.next_msg += 1;
        let chunks = chunk_message(&env, meta, &MetaLimits::default(), payload, &limits)
            .map_err(|e| ClientError::Frame(e.to_string()))?;
        for f in chunks {
            f.write_to(&mut self.out);
        }
        self.session.note_sent(Instant::now());
        if self.out.len() >= self.write_buffer_len {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Queues a message with an idempotency key (at most
    /// [`mesh_wire::IDEMPOTENCY_KEY_MAX`] bytes): if the node already took a message with this
    /// key and still tracks it (from this or another client, before or after a restart of the
    /// node), the receipt says [`Receipt::duplicate`] with the first one's msg_id and nothing is
    /// sent again. For retrying after a lost connection without sending twice.
    pub fn send_idempotent(
        &mut self,
        dst_node: u64,
        dst_domain: u32,
        key: &[u8],
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        if key.is_empty() || key.len() > mesh_wire::IDEMPOTENCY_KEY_MAX {
            return Err(ClientError::Invalid(
                "an idempotency key has 1 to 128 bytes",
            ));
        }
        let meta = Metadata {
            idempotency_key: Some(key.to_vec()),
            ..Metadata::default()
        };
        self.send_with(
            dst_node,
            dst_domain,
            &meta,
            Flags::EMPTY,
            Bytes::copy_from_slice(payload),
        )
    }

    /// Acknowledges a delivery (`success = false` rejects it: its sender sees ACK_FAILURE).
    /// The node stops offering it once the ack arrives. Goes out at the next flush.
    pub fn ack(&mut self, src_node: u64, msg_id: u64, success: bool) -> Result<(), ClientError> {
        self.check_open()?;
        let f =
            ack_frame(src_node, msg_id, success).map_err(|e| ClientError::Frame(e.to_string()))?;
        f.write_to(&mut self.out);
        self.session.note_sent(Instant::now());
        if self.out.len() >= self.write_buffer_len {
            self.flush()?;
        }
        Ok(())
    }

    /// Receipts that arrived so far (after a [`Client::flush`], [`Client::recv`] or
    /// [`Client::wait_receipts`] took in the node's frames), oldest first.
    pub fn receipts(&mut self) -> Vec<Receipt> {
        self.receipts.drain(..).collect()
    }

    /// Flushes, then waits up to `timeout` for at least one receipt; returns those that came.
    pub fn wait_receipts(&mut self, timeout: Duration) -> Result<Vec<Receipt>, ClientError> {
        let deadline = Instant::now() + timeout;
        self.flush()?;
        while self.receipts.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.read_some(Some(left))?;
            self.flush()?;
        }
        Ok(self.receipts())
    }

    /// Writes everything buffered. Also takes in, without waiting, what the node sent
    /// (keepalives, CLOSE, deliveries for [`Client::recv`]) at least every
    /// [`INPUT_POLL_INTERVAL`], so a client that only sends stays alive.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        if now >= self.next_input_poll {
            self.next_input_poll = now + INPUT_POLL_INTERVAL;
            self.read_available()?;
        }
        self.pump()?;
        if !self.out.is_empty() {
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever with `None`) for the next message addressed to the node.
    /// Needs [`ClientOptions::subscribe`]. `Ok(None)`: nothing arrived in time.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Delivery>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Ok(Some(d));
            }
            self.flush()?;
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
                None => None,
            };
            self.read_some(wait)?;
        }
    }

    /// Sends CLOSE, then waits (up to 10 s) for the node to close its side, reading and
    /// discarding what it still sends. Dropping a socket with unread bytes makes the kernel
    /// reset the connection, and a reset makes the node's kernel discard messages it had
    /// received but not yet read: a graceful close drains first.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.session.close(CloseReason::Normal, Instant::now());
        match self.flush() {
            // Our own CLOSE: `pump` wrote it out and reports the session closed.
            Ok(()) | Err(ClientError::Closed { .. }) => {}
            Err(e) => return Err(e),
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sink = [0u8; 16 << 10];
        while Instant::now() < deadline {
            self.sock
                .set_read_timeout(Some(Duration::from_millis(200)))?;
            match self.sock.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match self.closed {
            Some(reason) => Err(ClientError::Closed { reason }),
            None => Ok(()),
        }
    }

    /// Reads whatever the node has sent, without blocking.
    fn read_available(&mut self) -> Result<(), ClientError> {
        self.sock.set_nonblocking(true)?;
        // Everything the node sent (up to READS_PER_POLL reads): a client that sends fast gets
        // a receipt or two per message, more than one read holds, and what it leaves unread
        // waits in the node's queue to it.
        let mut r = Ok(0);
        for _ in 0..READS_PER_POLL {
            r = self.read_input(None);
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
        }
        self.sock.set_nonblocking(false)?;
        r?;
        self.pump()
    }

    /// One non-blocking read, its frames handled (no timers run).
    fn read_input_now(&mut self) -> Result<(), ClientError> {
        self.sock.set_nonblocking(true)?;
        let r = self.read_input(None);
        self.sock.set_nonblocking(false)?;
        r.map(drop)
    }

    /// Runs session timers and moves its frames and events along.
    fn pump(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            // What the node sent may sit unread while the application was busy: take it in
            // before the session judges the node silent.
            self.read_input_now()?;
            self.session.handle_timeout(Instant::now());
        }
        while let Some(f) = self.session.poll_transmit() {
            f.write_to(&mut self.out);
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                SessionEvent::Established { peer } => {
                    self.decoder.set_limits(peer.limits);
                    self.node = Some(peer);
                }
                SessionEvent::Draining => {}
                SessionEvent::Closed { reason, .. } => self.closed = Some(reason),
            }
        }
        if let Some(reason) = self.closed {
            // Let the CLOSE out before reporting.
            if !self.out.is_empty() {
                let _ = self.sock.write_all(&self.out);
                self.out.clear();
            }
            return Err(ClientError::Closed { reason });
        }
        Ok(())
    }

    /// One read (waiting at most `wait`, bounded by the session's next timer), then every
    /// whole frame handled; deliveries are queued for [`Client::recv`].
    fn read_some(&mut self, wait: Option<Duration>) -> Result<(), ClientError> {
        self.read_input(wait)?;
        self.pump()
    }

    /// [`Client::read_some`] without running the session's timers. Returns the bytes read.
    fn read_input(&mut self, wait: Option<Duration>) -> Result<usize, ClientError> {
        let timer = self
            .session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let wait = match (wait, timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(1)),
        }
        .max(Duration::from_millis(1));
        // Ignored while the socket is non-blocking (`read_available`).
        self.sock.set_read_timeout(Some(wait))?;
        let n = match self.sock.read(self.decoder.read_buf()) {
            Ok(0) => {
                self.closed.get_or_insert(CloseReason::Normal);
                return Err(ClientError::Closed {
                    reason: self.closed.unwrap_or(CloseReason::Normal),
                });
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) => return Err(e.into()),
        };
        self.decoder.commit(n);
        let now = Instant::now();
        if n > 0 {
            self.session.note_received(now);
        }
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
        Ok(n)
    }

    fn take(&mut self, frame: Frame<BytesMut>, now: Instant) {
        if frame.kind() == FrameKind::Ack {
            // A receipt from the node about one of our messages.
            if let Some(r) = Receipt::from_frame(&frame) {
                self.receipts.push_back(r);
            }
            return;
        }
        if frame.kind() != FrameKind::Data {
            return;
        }
        let env = frame.envelope();
        if frame.flags().contains(Flags::CHUNK) {
            if let Ok(ChunkOutcome::Complete(m)) = self.reassembler.handle_chunk(frame, now) {
                let meta = Metadata::decode(&m.meta, &MetaLimits::default()).unwrap_or_default();
                self.pending.push_back(Delivery {
                    src_node: m.envelope.src_node,
                    src_domain: m.envelope.src_domain,
                    msg_id: m.envelope.msg_id,
                    corr_id: meta.corr_id,
                    payload: Bytes::from(m.to_contiguous()),
                    ttl: m.envelope.ttl,
                    require_ack: m.envelope.flags.contains(Flags::REQUIRE_ACK),
                    redelivered: m.envelope.flags.contains(Flags::RETRANSMIT),
                });
            }
            return;
        }
        let corr_id = frame
            .meta(&MetaLimits::default())
            .ok()
            .and_then(|m| m.corr_id);
        let (_, _, payload) = frame.into_parts();
        self.pending.push_back(Delivery {
            src_node: env.src_node,
            src_domain: env.src_domain,
            msg_id: env.msg_id,
            corr_id,
            payload: payload.freeze(),
            ttl: env.ttl,
            require_ack: env.flags.contains(Flags::REQUIRE_ACK),
            redelivered: env.flags.contains(Flags::RETRANSMIT),
        });
    }
}
