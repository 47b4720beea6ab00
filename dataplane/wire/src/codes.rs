//! Reason codes carried in CLOSE and NACK frames (documented in `docs/wire.md`).
//!
//! Codes are stable `u16` values. A received code this version does not know decodes to
//! `Unknown(code)` rather than an error: a CLOSE is the end of a session either way, and the
//! code is only for logs and metrics.

/// Why a session is closed. Sent in the metadata of a CLOSE frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Orderly shutdown.
    Normal,
    /// The node is draining and going away.
    Shutdown,
    /// Frame did not start with the magic bytes.
    BadMagic,
    /// Wire version not supported.
    UnsupportedVersion,
    /// Unknown frame kind or flag bits.
    UnknownKindOrFlags,
    /// Frame or metadata over the negotiated limit.
    FrameTooLarge,
    /// Lengths or flags that disagree.
    MalformedFrame,
    /// Undecodable CBOR metadata.
    BadMetadata,
    /// A frame that is not allowed in the session's current state (e.g. DATA before HELLO).
    UnexpectedFrame,
    /// The handshake did not finish within its deadline.
    HandshakeTimeout,
    /// The peer failed authentication (certificate, node id, ML-DSA signature).
    AuthenticationFailed,
    /// The node already holds its maximum number of sessions.
    TooManySessions,
    /// No keepalive from the peer within the dead interval.
    PeerDead,
    /// Another session with the same peer won the simultaneous-dial tie-break.
    DuplicateSession,
    /// A peer exceeded a queue or credit bound.
    FlowControlViolation,
    /// The node refuses plain-TCP peers (`require_tls`).
    TlsRequired,
    /// An internal error on this node.
    Internal,
    /// A code this version does not know.
    Unknown(u16),
}

impl CloseReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 0,
            CloseReason::Shutdown => 1,
            CloseReason::BadMagic => 10,
            CloseReason::UnsupportedVersion => 11,
            CloseReason::UnknownKindOrFlags => 12,
            CloseReason::FrameTooLarge => 13,
            CloseReason::MalformedFrame => 14,
            CloseReason::BadMetadata => 15,
            CloseReason::UnexpectedFrame => 16,
            CloseReason::HandshakeTimeout => 20,
            CloseReason::AuthenticationFailed => 21,
            CloseReason::TooManySessions => 22,
            CloseReason::PeerDead => 23,
            CloseReason::DuplicateSession => 24,
            CloseReason::FlowControlViolation => 25,
            CloseReason::TlsRequired => 26,
            CloseReason::Internal => 99,
            CloseReason::Unknown(c) => c,
        }
    }

    /// Decodes a wire code; unknown codes are kept as `Unknown`.
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => CloseReason::Normal,
            1 => CloseReason::Shutdown,
            10 => CloseReason::BadMagic,
            11 => CloseReason::UnsupportedVersion,
            12 => CloseReason::UnknownKindOrFlags,
            13 => CloseReason::FrameTooLarge,
            14 => CloseReason::MalformedFrame,
            15 => CloseReason::BadMetadata,
            16 => CloseReason::UnexpectedFrame,
            20 => CloseReason::HandshakeTimeout,
            21 => CloseReason::AuthenticationFailed,
            22 => CloseReason::TooManySessions,
            23 => CloseReason::PeerDead,
            24 => CloseReason::DuplicateSession,
            25 => CloseReason::FlowControlViolation,
            26 => CloseReason::TlsRequired,
            99 => CloseReason::Internal,
            c => CloseReason::Unknown(c),
        }
    }
}

/// Why a routed frame was dropped. Sent back to its source in the metadata of a NACK frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackReason {
    /// The hop limit reached zero.
    TtlExpired,
    /// No route to the destination node or domain.
    NoRoute,
    /// The destination node is not known anywhere in the mesh.
    UnknownDestination,
    /// Policy denies this destination.
    DeniedByPolicy,
    /// A queue on the path is full.
    QueueFull,
    /// The message outlived its deadline.
    Expired,
    /// The message is larger than the destination accepts.
    TooLarge,
    /// A code this version does not know.
    Unknown(u16),
}

impl NackReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            NackReason::TtlExpired => 1,
            NackReason::NoRoute => 2,
            NackReason::UnknownDestination => 3,
            NackReason::DeniedByPolicy => 4,
            NackReason::QueueFull => 5,
            NackReason::Expired => 6,
            NackReason::TooLarge => 7,
            NackReason::Unknown(c) => c,
        }
    }

    /// Decodes a wire code; unknown codes are kept as `Unknown`.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => NackReason::TtlExpired,
            2 => NackReason::NoRoute,
            3 => NackReason::UnknownDestination,
            4 => NackReason::DeniedByPolicy,
            5 => NackReason::QueueFull,
            6 => NackReason::Expired,
            7 => NackReason::TooLarge,
            c => NackReason::Unknown(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(CloseReason::from_code(code).code(), code);
            assert_eq!(NackReason::from_code(code).code(), code);
        }
        assert_eq!(CloseReason::from_code(13), CloseReason::FrameTooLarge);
        assert_eq!(NackReason::from_code(1), NackReason::TtlExpired);
    }
}
