//! Why a session closes on its own initiative, and which CLOSE reason each cause sends.

use std::time::Duration;

use mesh_wire::{CloseReason, DecodeError, FrameKind};

use super::SessionState;
use crate::auth::AuthError;
use crate::hello::{HelloError, Role};

/// Why a session closed on its own initiative. Each variant maps to the CLOSE reason sent
/// ([`SessionError::close_reason`]), as rustls maps errors to alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The framing broke (reported by the decoder).
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The peer's HELLO body is invalid.
    #[error("HELLO: {0}")]
    Hello(#[from] HelloError),
    /// The peer failed authentication.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// Plain TCP while `require_tls` is set.
    #[error("plain TCP refused: this node requires TLS")]
    TlsRequired,
    /// No session protocol version in common.
    #[error(
        "no common protocol version: ours {ours_min}..={ours_max}, peer's {peer_min}..={peer_max}"
    )]
    NoCommonVersion {
        /// Our lowest.
        ours_min: u16,
        /// Our highest.
        ours_max: u16,
        /// Peer's lowest.
        peer_min: u16,
        /// Peer's highest.
        peer_max: u16,
    },
    /// A frame not allowed in the current state (DATA before HELLO, a second HELLO, ...).
    #[error("unexpected {kind:?} frame while {state:?}")]
    UnexpectedFrame {
        /// Kind received.
        kind: FrameKind,
        /// State it arrived in.
        state: SessionState,
    },
    /// A KEEPALIVE or DRAIN with a body.
    #[error("{kind:?} frame must be empty, has {body_len} bytes of body")]
    NonEmptyControlFrame {
        /// Kind received.
        kind: FrameKind,
        /// Its body length.
        body_len: usize,
    },
    /// The peer's HELLO did not arrive in time.
    #[error("no HELLO within the handshake deadline of {timeout:?}")]
    HandshakeTimeout {
        /// The deadline.
        timeout: Duration,
    },
    /// Nothing heard from the peer for too long.
    #[error("peer silent for {silent:?}, limit {limit:?}")]
    PeerDead {
        /// How long it was silent.
        silent: Duration,
        /// The limit (`dead_after` × keepalive interval).
        limit: Duration,
    },
    /// We dialed one node and reached another.
    #[error("dialed node {expected} but reached node {found}")]
    UnexpectedPeer {
        /// The node dialed.
        expected: u64,
        /// The node the HELLO names.
        found: u64,
    },
    /// The peer claims our own node id.
    #[error("peer claims this node's own id {node_id}")]
    SelfConnection {
        /// The id.
        node_id: u64,
    },
    /// The peer's role is not accepted here.
    #[error("a {peer:?} peer is not accepted by a {ours:?}")]
    RoleNotAccepted {
        /// Our role.
        ours: Role,
        /// The peer's role.
        peer: Role,
    },
    /// Signing or encoding our own HELLO failed (a local fault).
    #[error("cannot produce our HELLO: {detail}")]
    LocalHello {
        /// What failed.
        detail: String,
    },
}

impl SessionError {
    /// The CLOSE reason sent to the peer for this error.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            SessionError::Decode(e) => e.close_reason(),
            SessionError::Hello(_) | SessionError::NonEmptyControlFrame { .. } => {
                CloseReason::MalformedFrame
            }
            SessionError::Auth(_)
            | SessionError::UnexpectedPeer { .. }
            | SessionError::SelfConnection { .. }
            | SessionError::RoleNotAccepted { .. } => CloseReason::AuthenticationFailed,
            SessionError::TlsRequired => CloseReason::TlsRequired,
            SessionError::NoCommonVersion { .. } => CloseReason::UnsupportedVersion,
            SessionError::UnexpectedFrame { .. } => CloseReason::UnexpectedFrame,
            SessionError::HandshakeTimeout { .. } => CloseReason::HandshakeTimeout,
            SessionError::PeerDead { .. } => CloseReason::PeerDead,
            SessionError::LocalHello { .. } => CloseReason::Internal,
        }
    }

    /// Whether the CLOSE may carry this error's text. Authentication failures do not: the
    /// details would help someone probing for keys.
    pub(super) fn text_for_peer(&self) -> Option<String> {
        (self.close_reason() != CloseReason::AuthenticationFailed).then(|| self.to_string())
    }
}
