//! The per-connection state machine.
//!
//! ```text
//!               peer HELLO valid              DRAIN received / drain()
//!  Handshaking ─────────────────▶ Established ───────────────────────▶ Draining
//!       │                              │                                   │
//!       └──────────────┬───────────────┴───────────────────────────────────┘
//!                      ▼  error, timeout, dead peer, CLOSE received, close()
//!                    Closed
//! ```
//!
//! **Driving it** (quinn-proto style; the shell owns socket, TLS, timers and the clock):
//!
//! 1. After TCP connect/accept (and the TLS handshake, if any) create the session with
//!    [`Session::new`], passing a fresh 32-byte nonce from the shell's CSPRNG. It queues its
//!    HELLO at once (both sides send HELLO without waiting for the other).
//! 2. Create the connection's `mesh_wire::Decoder` with [`Session::decoder_limits`]
//!    ([`HANDSHAKE_LIMITS`] until established), and after every [`SessionEvent::Established`]
//!    call `decoder.set_limits(session.decoder_limits())` *before polling the next frame*.
//! 3. Feed every decoded frame to [`Session::handle_frame`]; forward the frames it hands back
//!    (`Ok(Some(_))`: DATA, DELIVERED, ACK, NACK, CREDIT, RESUME, LSA, LSA_ACK). Feed decoder
//!    errors to [`Session::handle_decode_error`]. Report raw socket progress with
//!    [`Session::note_received`] (so a large frame arriving slowly is not a dead peer) and
//!    every write of the shell's own frames with [`Session::note_sent`] (so no keepalive is
//!    sent on a busy session).
//! 4. After every input, drain [`Session::poll_transmit`] (write those frames),
//!    [`Session::poll_event`], and re-arm one timer at [`Session::poll_timeout`]; when it fires
//!    call [`Session::handle_timeout`].
//! 5. Once [`Session::is_closed`], write what `poll_transmit` still yields (the CLOSE), then
//!    shut the socket down. Nothing else is ever produced.
//!
//! Every failure caused by the peer ends in a CLOSE frame with a typed reason and a
//! [`SessionEvent::Closed`]; the methods return the [`SessionError`] for logging. Nothing here
//! panics on any input.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mesh_wire::{CloseReason, DecodeError, Frame, FrameKind, Limits, OutFrame};

use crate::auth::{AuthError, ChannelSecurity, PeerCredentials, TlsChannel, Transcript};
use crate::control::{self, Addressing, HANDSHAKE_LIMITS};
use crate::hello::{Capabilities, Hello, NONCE_LEN, Role};
use crate::stats::{HandshakeFailure, SessionStats};

mod config;
mod error;

pub use config::{
    ConfigError, DEAD_AFTER_RANGE, DEFAULT_DEAD_AFTER, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL, HANDSHAKE_TIMEOUT_MS_RANGE, SessionConfig,
};
pub use error::SessionError;

/// Most frames a session queues for transmission: HELLO, KEEPALIVE, DRAIN and CLOSE, each at
/// most once at a time.
const MAX_TRANSMIT_QUEUE: usize = 4;
/// Most events a session queues: Established, Draining, Closed.
const MAX_EVENT_QUEUE: usize = 3;

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// This node dialed (TCP connect, TLS client).
    Initiator,
    /// This node accepted (TCP accept, TLS server).
    Acceptor,
}

impl Side {
    /// The other end's side.
    #[must_use]
    pub fn opposite(self) -> Side {
        match self {
            Side::Initiator => Side::Acceptor,
            Side::Acceptor => Side::Initiator,
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// HELLO sent, waiting for the peer's.
    Handshaking,
    /// Both HELLOs exchanged and accepted: routed frames flow.
    Established,
    /// One side announced DRAIN: in-flight work finishes, nothing new should start.
    Draining,
    /// Over. Only a final CLOSE may remain in `poll_transmit`.
    Closed,
}

/// What the session learned about its peer in the handshake, and what the two sides agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id (equal to its certificate's over TLS).
    pub node_id: u64,
    /// The peer's domain (as it claims).
    pub domain_id: u32,
    /// The peer's role.
    pub role: Role,
    /// The capabilities both sides offered: what this session may use.
    pub capabilities: Capabilities,
    /// The negotiated limits (smaller of both): use for the decoder and for chunking.
    pub limits: Limits,
    /// The negotiated keepalive interval (smaller of both).
    pub keepalive_interval: Duration,
    /// The negotiated session protocol version (highest common).
    pub version: u16,
    /// Whether the peer proved its identity (TLS certificate + ML-DSA signature). `false` on
    /// plain TCP: its node id is only a claim.
    pub authenticated: bool,
    /// The peer's HELLO nonce (with [`Session::nonce`], identifies this session, e.g. for RESUME).
    pub nonce: [u8; NONCE_LEN],
}

/// What the session tells the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake completed. Switch the decoder to `peer.limits`; register the session
    /// (e.g. in a [`crate::SessionTable`]).
    Established {
        /// Who the peer is and what was agreed.
        peer: PeerInfo,
    },
    /// The peer sent DRAIN: it is shutting down. Finish in-flight work, start nothing new on
    /// this session (reroute), expect its CLOSE.
    Draining,
    /// The session is over. Flush `poll_transmit`, then close the socket.
    Closed {
        /// The reason: the peer's (from its CLOSE) or ours.
        reason: CloseReason,
        /// Whether the peer closed.
        by_peer: bool,
    },
}

/// The state machine of one connection. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    side: Side,
    expected_peer: Option<u64>,
    state: SessionState,
    /// TLS facts and crypto; `None` on plain TCP and once the handshake is over.
    tls: Option<TlsChannel>,
    /// Whether the channel is TLS (kept after `tls` is dropped).
    is_tls: bool,
    nonce: [u8; NONCE_LEN],
    peer: Option<PeerInfo>,
    handshake_deadline: Option<Instant>,
    keepalive_interval: Duration,
    last_sent: Instant,
    last_received: Instant,
    local_draining: bool,
    peer_draining: bool,
    transmit: VecDeque<OutFrame>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
}

impl Session {
    /// A session on a freshly connected (and, with TLS, handshaken) connection.
    ///
    /// `expected_peer` is the node dialed (initiators), `None` when any node may be on the other
    /// end (acceptors). `nonce` must be 32 fresh bytes from a CSPRNG. The HELLO is queued at
    /// once (signed through `security`'s crypto over TLS). When `require_tls` refuses a plain
    /// channel, or our HELLO cannot be produced, the session is returned already closed, with
    /// the CLOSE queued.
    pub fn new(
        config: SessionConfig,
        side: Side,
        expected_peer: Option<u64>,
        security: ChannelSecurity,
        nonce: [u8; NONCE_LEN],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (tls, is_tls) = match security {
            ChannelSecurity::Plain => (None, false),
            ChannelSecurity::Tls(t) => (Some(t), true),
        };
        let mut s = Session {
            keepalive_interval: config.keepalive_interval,
            handshake_deadline: now.checked_add(config.handshake_timeout),
            config,
            side,
            expected_peer,
            state: SessionState::Handshaking,
            tls,
            is_tls,
            nonce,
            peer: None,
            last_sent: now,
            last_received: now,
            local_draining: false,
            peer_draining: false,
            transmit: VecDeque::with_capacity(MAX_TRANSMIT_QUEUE),
            events: VecDeque::with_capacity(MAX_EVENT_QUEUE),
            stats: SessionStats::default(),
        };
        if !s.is_tls && s.config.require_tls {
            let _ = s.fail(SessionError::TlsRequired, now);
            return Ok(s);
        }
        match s.hello_frame() {
            Ok(f) => s.queue(f, now),
            Err(e) => {
                let _ = s.fail(e, now);
            }
        }
        Ok(s)
    }

    fn hello_frame(&self) -> Result<OutFrame, SessionError> {
        let c = &self.config;
        let hello = Hello {
            versions: c.versions,
            node_id: c.node_id,
            domain_id: c.domain_id,
            role: c.role,
            capabilities: c.capabilities,
            limits: c.limits,
            keepalive_interval_ms: c.keepalive_interval_ms(),
            nonce: self.nonce,
        };
        let signature = match &self.tls {
            None => Vec::new(),
            Some(t) => {
                let fields = hello.signed_fields();
                let tr = Transcript {
                    signer_side: self.side,
                    signer_node_id: c.node_id,
                    channel_binding: &t.channel_binding,
                    hello_fields: &fields,
                };
                t.crypto.sign(&tr).map_err(|e| SessionError::LocalHello {
                    detail: e.to_string(),
                })?
            }
        };
        let body = hello
            .encode(&signature)
            .map_err(|e| SessionError::LocalHello {
                detail: e.to_string(),
            })?;
        control::hello_frame(self.addressing(), body).map_err(|e| SessionError::LocalHello {
            detail: e.to_string(),
        })
    }

    // ----- accessors -----

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether the session is over (only a final CLOSE may remain to transmit).
    pub fn is_closed(&self) -> bool {
        self.state == SessionState::Closed
    }

    /// Whether routed frames may flow (established or draining).
    pub fn is_established(&self) -> bool {
        matches!(
            self.state,
            SessionState::Established | SessionState::Draining
        )
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The peer, once the handshake completed.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// This end's HELLO nonce.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// The local configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The limits the connection's decoder must enforce now: [`HANDSHAKE_LIMITS`] until the
    /// handshake completes, the negotiated limits afterwards.
    pub fn decoder_limits(&self) -> Limits {
        self.peer.as_ref().map_or(HANDSHAKE_LIMITS, |p| p.limits)
    }

    // ----- inputs -----

    /// Handles one decoded frame from the peer.
    ///
    /// Returns `Ok(Some(frame))` for frames the shell handles (DATA, DELIVERED, ACK, NACK,
    /// CREDIT, RESUME, LSA, LSA_ACK) once established; `Ok(None)` when the session consumed
    /// the frame (HELLO, KEEPALIVE, DRAIN, CLOSE) or dropped it because the session is already
    /// closed; `Err` when the frame made the session close (the CLOSE is queued and a
    /// [`SessionEvent::Closed`] emitted).
    ///
    /// A CLOSE is accepted in every state, including before the handshake (it is how a peer
    /// refuses us: `TlsRequired`, `TooManySessions`, ...).
    pub fn handle_frame(
        &mut self,
        frame: Frame<BytesMut>,
        now: Instant,
    ) -> Result<Option<Frame<BytesMut>>, SessionError> {
        let kind = frame.kind();
        self.stats.frames_in.record(kind);
        if self.is_closed() {
            self.stats.frames_after_close = self.stats.frames_after_close.saturating_add(1);
            return Ok(None);
        }
        self.note_received(now);
        match (self.state, kind) {
            (_, FrameKind::Close) => {
                self.peer_closed(control::close_reason_of(&frame));
                Ok(None)
            }
            (SessionState::Handshaking, FrameKind::Hello) => match self.accept_hello(&frame) {
                Ok(peer) => {
                    self.establish(peer);
                    Ok(None)
                }
                Err(e) => Err(self.fail(e, now)),
            },
            (SessionState::Handshaking, _) | (_, FrameKind::Hello) => {
                let state = self.state;
                Err(self.fail(SessionError::UnexpectedFrame { kind, state }, now))
            }
            (_, FrameKind::Keepalive) => {
                self.expect_empty(&frame, now)?;
                Ok(None)
            }
            (_, FrameKind::Drain) => {
                self.expect_empty(&frame, now)?;
                if self.peer_draining {
                    let state = self.state;
                    return Err(self.fail(SessionError::UnexpectedFrame { kind, state }, now));
                }
                self.peer_draining = true;
                self.state = SessionState::Draining;
                self.push_event(SessionEvent::Draining);
                Ok(None)
            }
            _ => Ok(Some(frame)),
        }
    }

    /// Closes the session because the connection's decoder failed: CLOSE with
    /// `err.close_reason()`.
    pub fn handle_decode_error(&mut self, err: &DecodeError, now: Instant) {
        if !self.is_closed() {
            let _ = self.fail(SessionError::Decode(err.clone()), now);
        }
    }

    /// Advances timers: handshake deadline, dead-peer detection, keepalive. Call when the
    /// instant of [`Session::poll_timeout`] has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            SessionState::Closed => {}
            SessionState::Handshaking => {
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    let timeout = self.config.handshake_timeout;
                    let _ = self.fail(SessionError::HandshakeTimeout { timeout }, now);
                }
            }
            SessionState::Established | SessionState::Draining => {
                let limit = self.dead_interval();
                let silent = now.saturating_duration_since(self.last_received);
                if silent >= limit {
                    let _ = self.fail(SessionError::PeerDead { silent, limit }, now);
                    return;
                }
                let idle = now.saturating_duration_since(self.last_sent);
                let queued = self
                    .transmit
                    .iter()
                    .any(|f| f.header().kind == FrameKind::Keepalive as u8);
                if idle >= self.keepalive_interval
                    && !queued
                    && let Ok(f) = control::empty_frame(FrameKind::Keepalive, self.addressing())
                {
                    self.queue(f, now);
                }
            }
        }
    }

    /// The shell wrote bytes of its own frames to the peer at `now`: no keepalive is needed
    /// until one interval after that.
    pub fn note_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// Bytes arrived from the peer at `now` (even part of a frame): it is alive.
    /// [`Session::handle_frame`] calls this itself.
    pub fn note_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }

    /// Closes the session with `reason` (e.g. `Shutdown`, or `DuplicateSession` after a
    /// tie-break): queues the CLOSE, emits `Closed { by_peer: false }`. No-op when closed.
    pub fn close(&mut self, reason: CloseReason, now: Instant) {
        if !self.is_closed() {
            self.closed_locally(reason, None, now);
        }
    }

    /// Announces that this node is shutting down: queues DRAIN and enters `Draining` (routed
    /// frames keep flowing both ways until the shell calls [`Session::close`]). During the
    /// handshake there is nothing to drain: the session closes with `Shutdown`. No-op when
    /// already draining locally or closed.
    pub fn drain(&mut self, now: Instant) {
        match self.state {
            SessionState::Closed => {}
            SessionState::Handshaking => self.close(CloseReason::Shutdown, now),
            SessionState::Established | SessionState::Draining => {
                if self.local_draining {
                    return;
                }
                self.local_draining = true;
                self.state = SessionState::Draining;
                if let Ok(f) = control::empty_frame(FrameKind::Drain, self.addressing()) {
                    self.queue(f, now);
                }
            }
        }
    }

    // ----- outputs -----

    /// The next frame to write to the peer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        self.transmit.pop_front()
    }

    /// The next event for the shell.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Closed => None,
            SessionState::Handshaking => self.handshake_deadline,
            SessionState::Established | SessionState::Draining => {
                let dead = self.last_received.checked_add(self.dead_interval());
                let keepalive = self.last_sent.checked_add(self.keepalive_interval);
                match (dead, keepalive) {
                    (Some(d), Some(k)) => Some(d.min(k)),
                    (d, k) => d.or(k),
                }
            }
        }
    }

    // ----- internals -----

    fn dead_interval(&self) -> Duration {
        self.keepalive_interval
            .checked_mul(self.config.dead_after)
            .unwrap_or(Duration::MAX)
    }

    fn addressing(&self) -> Addressing {
        Addressing {
            src_node: self.config.node_id,
            src_domain: self.config.domain_id,
            dst_node: self.peer.as_ref().map_or(0, |p| p.node_id),
            dst_domain: self.peer.as_ref().map_or(0, |p| p.domain_id),
        }
    }

    fn queue(&mut self, frame: OutFrame, now: Instant) {
        assert!(
            self.transmit.len() < MAX_TRANSMIT_QUEUE,
            "session transmit queue over its bound of {MAX_TRANSMIT_QUEUE}"
        );
        if let Ok(kind) = FrameKind::try_from(frame.header().kind) {
            self.stats.frames_out.record(kind);
        }
        self.transmit.push_back(frame);
        self.note_sent(now);
    }

    fn push_event(&mut self, e: SessionEvent) {
        assert!(
            self.events.len() < MAX_EVENT_QUEUE,
            "session event queue over its bound of {MAX_EVENT_QUEUE}"
        );
        self.events.push_back(e);
    }

    fn expect_empty(&mut self, frame: &Frame<BytesMut>, now: Instant) -> Result<(), SessionError> {
        let body_len = frame.len() - mesh_wire::HEADER_LEN;
        if body_len == 0 {
            Ok(())
        } else {
            Err(self.fail(
                SessionError::NonEmptyControlFrame {
                    kind: frame.kind(),
                    body_len,
                },
                now,
            ))
        }
    }

    /// Validates the peer's HELLO against every rule; returns what was agreed.
    fn accept_hello(&self, frame: &Frame<BytesMut>) -> Result<PeerInfo, SessionError> {
        let received = Hello::decode(frame.payload())?;
        let hello = &received.hello;
        let c = &self.config;
        let version =
            c.versions
                .negotiate(hello.versions)
                .ok_or(SessionError::NoCommonVersion {
                    ours_min: c.versions.min(),
                    ours_max: c.versions.max(),
                    peer_min: hello.versions.min(),
                    peer_max: hello.versions.max(),
                })?;
        // Identity checks first, the expensive signature check last.
        if let Some(t) = &self.tls {
            check_certificate(&t.peer, hello.node_id)?;
        }
        if let Some(expected) = self.expected_peer
            && expected != hello.node_id
        {
            return Err(SessionError::UnexpectedPeer {
                expected,
                found: hello.node_id,
            });
        }
        if hello.node_id == c.node_id {
            return Err(SessionError::SelfConnection {
                node_id: hello.node_id,
            });
        }
        let role_ok = match (c.role, hello.role) {
            (Role::Node, Role::Node) => true,
            (Role::Node, Role::Client) => c.accept_clients,
            (Role::Client, peer) => peer == Role::Node,
        };
        if !role_ok {
            return Err(SessionError::RoleNotAccepted {
                ours: c.role,
                peer: hello.role,
            });
        }
        let authenticated = match &self.tls {
            None => false,
            Some(t) => {
                if received.signature.is_empty() {
                    return Err(AuthError::MissingSignature {
                        node_id: hello.node_id,
                    }
                    .into());
                }
                let tr = Transcript {
                    signer_side: self.side.opposite(),
                    signer_node_id: hello.node_id,
                    channel_binding: &t.channel_binding,
                    hello_fields: received.signed_fields(),
                };
                t.crypto.verify(&t.peer, &tr, &received.signature)?;
                true
            }
        };
        let peer_keepalive = Duration::from_millis(u64::from(hello.keepalive_interval_ms));
        Ok(PeerInfo {
            node_id: hello.node_id,
            domain_id: hello.domain_id,
            role: hello.role,
            capabilities: c.capabilities.intersection(hello.capabilities),
            limits: c.limits.negotiate(&hello.limits),
            keepalive_interval: c.keepalive_interval.min(peer_keepalive),
            version,
            authenticated,
            nonce: hello.nonce,
        })
    }

    fn establish(&mut self, peer: PeerInfo) {
        debug_assert_eq!(self.state, SessionState::Handshaking);
        debug_assert!(peer.node_id != 0 && peer.node_id != self.config.node_id);
        debug_assert!(Limits::new(peer.limits.max_frame_len, peer.limits.max_meta_len).is_ok());
        debug_assert!(!peer.authenticated || self.is_tls);
        self.keepalive_interval = peer.keepalive_interval;
        self.peer = Some(peer.clone());
        self.state = SessionState::Established;
        self.handshake_deadline = None;
        // The signer and verifier are not needed any more.
        self.tls = None;
        self.push_event(SessionEvent::Established { peer });
    }

    fn record_handshake_failure(&mut self, reason: CloseReason, by_peer: bool) {
        if self.state == SessionState::Handshaking {
            self.stats.handshake_failure = Some(HandshakeFailure { reason, by_peer });
        }
    }

    /// Closes because of `err`; returns it for the caller to hand to the shell.
    fn fail(&mut self, err: SessionError, now: Instant) -> SessionError {
        let reason = err.close_reason();
        self.record_handshake_failure(reason, false);
        let text = err.text_for_peer();
        self.closed_locally(reason, text.as_deref(), now);
        err
    }

    fn closed_locally(&mut self, reason: CloseReason, text: Option<&str>, now: Instant) {
        debug_assert!(!self.is_closed());
        // Whatever was queued (HELLO, KEEPALIVE, DRAIN) is moot now.
        self.transmit.clear();
        let f = control::close_frame(self.addressing(), reason, text);
        self.queue(f, now);
        self.enter_closed(reason, false);
    }

    fn peer_closed(&mut self, reason: CloseReason) {
        self.record_handshake_failure(reason, true);
        self.transmit.clear();
        self.enter_closed(reason, true);
    }

    fn enter_closed(&mut self, reason: CloseReason, by_peer: bool) {
        self.state = SessionState::Closed;
        self.tls = None;
        self.push_event(SessionEvent::Closed { reason, by_peer });
        debug_assert!(self.transmit.len() <= 1);
    }
}

fn check_certificate(peer: &PeerCredentials, hello_node_id: u64) -> Result<(), AuthError> {
    match peer.cert_node_id {
        None => Err(AuthError::CertificateWithoutNodeId),
        Some(cert_node_id) if cert_node_id != hello_node_id => Err(AuthError::NodeIdMismatch {
            cert_node_id,
            hello_node_id,
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
