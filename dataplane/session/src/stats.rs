//! Counters for metrics (SPEC §8): frames in and out per kind, handshake failures by reason.
//!
//! A [`Session`](crate::Session) keeps its own [`SessionStats`]; the shell adds them into
//! per-core totals ([`FrameCounters::merge`], [`HandshakeFailureCounters::record`]) when it
//! scrapes or when a session ends, and exports them with the stable labels of
//! [`close_reason_label`]. Plain integers, no atomics: each core owns its counters.

use mesh_wire::{CloseReason, FrameKind};

/// One counter per frame kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameCounters {
    counts: [u64; FrameKind::ALL.len()],
}

fn kind_index(kind: FrameKind) -> usize {
    // Kinds are numbered 1..=12 on the wire, in the order of FrameKind::ALL.
    usize::from(kind as u8) - 1
}

impl FrameCounters {
    /// Counts one frame of `kind`.
    pub fn record(&mut self, kind: FrameKind) {
        let c = &mut self.counts[kind_index(kind)];
        *c = c.saturating_add(1);
    }

    /// Frames of `kind` counted.
    pub fn get(&self, kind: FrameKind) -> u64 {
        self.counts[kind_index(kind)]
    }

    /// Frames of every kind.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &FrameCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }

    /// `(kind, count)` for every kind, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (FrameKind, u64)> + '_ {
        FrameKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }
}

/// How a session's handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// The CLOSE reason.
    pub reason: CloseReason,
    /// Whether the peer refused us (its CLOSE arrived during the handshake) rather than we it.
    pub by_peer: bool,
}

/// What one session counted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Frames given to `handle_frame`, per kind (including ones that closed the session).
    pub frames_in: FrameCounters,
    /// Frames the session produced through `poll_transmit`, per kind (the shell counts the
    /// routed frames it writes itself).
    pub frames_out: FrameCounters,
    /// Frames given to `handle_frame` after the session closed (dropped).
    pub frames_after_close: u64,
    /// Set when the session closed before it was established.
    pub handshake_failure: Option<HandshakeFailure>,
}

/// Every close reason this version knows, in code order; the index in this list is the
/// counter slot in [`HandshakeFailureCounters`].
const KNOWN_REASONS: [CloseReason; 17] = [
    CloseReason::Normal,
    CloseReason::Shutdown,
    CloseReason::BadMagic,
    CloseReason::UnsupportedVersion,
    CloseReason::UnknownKindOrFlags,
    CloseReason::FrameTooLarge,
    CloseReason::MalformedFrame,
    CloseReason::BadMetadata,
    CloseReason::UnexpectedFrame,
    CloseReason::HandshakeTimeout,
    CloseReason::AuthenticationFailed,
    CloseReason::TooManySessions,
    CloseReason::PeerDead,
    CloseReason::DuplicateSession,
    CloseReason::FlowControlViolation,
    CloseReason::TlsRequired,
    CloseReason::Internal,
];

/// A stable metrics label for a close reason (`other` for codes this version does not know).
pub fn close_reason_label(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Normal => "normal",
        CloseReason::Shutdown => "shutdown",
        CloseReason::BadMagic => "bad_magic",
        CloseReason::UnsupportedVersion => "unsupported_version",
        CloseReason::UnknownKindOrFlags => "unknown_kind_or_flags",
        CloseReason::FrameTooLarge => "frame_too_large",
        CloseReason::MalformedFrame => "malformed_frame",
        CloseReason::BadMetadata => "bad_metadata",
        CloseReason::UnexpectedFrame => "unexpected_frame",
        CloseReason::HandshakeTimeout => "handshake_timeout",
        CloseReason::AuthenticationFailed => "authentication_failed",
        CloseReason::TooManySessions => "too_many_sessions",
        CloseReason::PeerDead => "peer_dead",
        CloseReason::DuplicateSession => "duplicate_session",
        CloseReason::FlowControlViolation => "flow_control_violation",
        CloseReason::TlsRequired => "tls_required",
        CloseReason::Internal => "internal",
        CloseReason::Unknown(_) => "other",
    }
}

/// Handshake failures by reason, summed over sessions (one per core, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandshakeFailureCounters {
    /// Slots of KNOWN_REASONS, then one for unknown codes.
    counts: [u64; KNOWN_REASONS.len() + 1],
}

impl HandshakeFailureCounters {
    fn slot(reason: CloseReason) -> usize {
        KNOWN_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(KNOWN_REASONS.len())
    }

    /// Counts one failure.
    pub fn record(&mut self, reason: CloseReason) {
        let c = &mut self.counts[Self::slot(reason)];
        *c = c.saturating_add(1);
    }

    /// Counts the failure of `stats`, if its session had one.
    pub fn record_session(&mut self, stats: &SessionStats) {
        if let Some(f) = stats.handshake_failure {
            self.record(f.reason);
        }
    }

    /// Failures counted for `reason` (all unknown codes share one counter).
    pub fn get(&self, reason: CloseReason) -> u64 {
        self.counts[Self::slot(reason)]
    }

    /// `(label, count)` for every reason, including `other`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KNOWN_REASONS
            .iter()
            .map(|r| close_reason_label(*r))
            .chain(core::iter::once("other"))
            .zip(self.counts.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counters_count_per_kind() {
        let mut c = FrameCounters::default();
        c.record(FrameKind::Data);
        c.record(FrameKind::Data);
        c.record(FrameKind::LsaAck);
        assert_eq!(c.get(FrameKind::Data), 2);
        assert_eq!(c.get(FrameKind::LsaAck), 1);
        assert_eq!(c.get(FrameKind::Hello), 0);
        assert_eq!(c.total(), 3);
        let mut t = FrameCounters::default();
        t.merge(&c);
        t.merge(&c);
        assert_eq!(t.total(), 6);
        assert_eq!(t.iter().count(), 12);
    }

    #[test]
    fn handshake_failures_by_reason() {
        let mut h = HandshakeFailureCounters::default();
        h.record(CloseReason::AuthenticationFailed);
        h.record(CloseReason::Unknown(500));
        h.record(CloseReason::Unknown(501));
        assert_eq!(h.get(CloseReason::AuthenticationFailed), 1);
        assert_eq!(h.get(CloseReason::Unknown(7)), 2);
        assert_eq!(h.get(CloseReason::TlsRequired), 0);
        let labels: Vec<_> = h.iter().filter(|(_, c)| *c > 0).collect();
        assert_eq!(labels, vec![("authentication_failed", 1), ("other", 2)]);
        // Every known reason has its own label.
        let mut all: Vec<_> = KNOWN_REASONS
            .iter()
            .map(|r| close_reason_label(*r))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), KNOWN_REASONS.len());
    }
}
