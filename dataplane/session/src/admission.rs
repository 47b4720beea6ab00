//! What an unauthenticated peer can make a node spend, and which of two sessions to the same
//! peer survives.
//!
//! **Admission.** Every accepted (or dialed) connection takes a [`Ticket`] from [`Admission`]
//! before a byte is read: a node holds at most `max_sessions` sessions, of which at most
//! `max_half_open` are still handshaking. The half-open bound is the one an attacker hits
//! (connections that never send a valid HELLO), and with [`crate::control::HANDSHAKE_LIMITS`]
//! and the handshake deadline it caps what they cost: `max_half_open` × 16 KiB for at most
//! 2 s each. A refused connection gets CLOSE `TooManySessions`
//! ([`crate::control::close_frame`]) or is simply dropped.
//!
//! **Simultaneous dial.** Two nodes may dial each other at once and end with two sessions.
//! Both ends must keep the same one without talking about it, so the rule uses only what both
//! know: *keep the session dialed by the node with the lower node id*. When both sessions were
//! dialed by the same node (it reconnected while the old session still looked alive here), the
//! newer one wins: the dialer gave up on the old one. [`tie_break`] is the rule as a pure
//! function; [`SessionTable`] applies it when a session becomes established.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use mesh_wire::CloseReason;

use crate::session::Side;

/// Admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most sessions, handshaking or established.
    pub max_sessions: usize,
    /// Most sessions still handshaking.
    pub max_half_open: usize,
}

impl Default for AdmissionConfig {
    /// 1,024 sessions, 64 half-open.
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            max_half_open: 64,
        }
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The node already holds `max_sessions` sessions.
    #[error("{current} sessions, the limit is {limit}")]
    TooManySessions {
        /// Sessions held.
        current: usize,
        /// Limit.
        limit: usize,
    },
    /// The node already has `max_half_open` handshakes in progress.
    #[error("{current} half-open sessions, the limit is {limit}")]
    TooManyHalfOpen {
        /// Handshakes in progress.
        current: usize,
        /// Limit.
        limit: usize,
    },
}

impl AdmissionError {
    /// The CLOSE reason for a refused connection.
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::TooManySessions
    }
}

/// A session's claim on the admission budget. Obtained from [`Admission::try_admit`], moved to
/// established with [`Admission::promote`], and given back with [`Admission::release`] exactly
/// once when the session ends (it cannot be copied).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be released when its session ends"]
pub struct Ticket {
    half_open: bool,
}

impl Ticket {
    /// Whether the session is still counted as handshaking.
    pub fn is_half_open(&self) -> bool {
        self.half_open
    }
}

/// Counts sessions against [`AdmissionConfig`]. One per core (each core admits its own
/// connections), so plain integers.
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    sessions: usize,
    half_open: usize,
}

impl Admission {
    /// An empty budget under `config`.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            sessions: 0,
            half_open: 0,
        }
    }

    /// Takes a half-open slot for a new connection, or says why not.
    pub fn try_admit(&mut self) -> Result<Ticket, AdmissionError> {
        if self.sessions >= self.config.max_sessions {
            return Err(AdmissionError::TooManySessions {
                current: self.sessions,
                limit: self.config.max_sessions,
            });
        }
        if self.half_open >= self.config.max_half_open {
            return Err(AdmissionError::TooManyHalfOpen {
                current: self.half_open,
                limit: self.config.max_half_open,
            });
        }
        self.sessions += 1;
        self.half_open += 1;
        Ok(Ticket { half_open: true })
    }

    /// The ticket's session completed its handshake: it no longer counts as half-open.
    /// Idempotent.
    ///
    /// # Panics
    /// If no half-open session is counted: the ticket came from another `Admission`.
    pub fn promote(&mut self, ticket: &mut Ticket) {
        if ticket.half_open {
            assert!(self.half_open > 0, "promote: no half-open session counted");
            self.half_open -= 1;
            ticket.half_open = false;
        }
    }

    /// The ticket's session ended.
    ///
    /// # Panics
    /// If the counts would go below zero: the ticket came from another `Admission` (a bug in
    /// the shell, not bad input).
    // Taking the ticket by value is the point: a released ticket cannot be released again.
    #[allow(clippy::needless_pass_by_value)]
    pub fn release(&mut self, ticket: Ticket) {
        let Ticket { half_open } = ticket;
        assert!(self.sessions > 0, "release: no session counted");
        self.sessions -= 1;
        if half_open {
            assert!(self.half_open > 0, "release: no half-open session counted");
            self.half_open -= 1;
        }
        debug_assert!(self.half_open <= self.sessions);
    }

    /// Sessions counted (handshaking or established).
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Sessions still handshaking.
    pub fn half_open(&self) -> usize {
        self.half_open
    }
}

/// Which of two sessions with the same peer to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieBreak {
    /// Keep the existing session; close the new one with `DuplicateSession`.
    KeepExisting,
    /// Keep the new session; close the existing one with `DuplicateSession`.
    KeepNew,
}

/// The simultaneous-dial rule (module docs), from this node's point of view: `existing` and
/// `new` are this node's sides of the two sessions with `peer_node`. Both ends compute the
/// same answer (each with its own view), so they keep the same session.
pub fn tie_break(local_node: u64, peer_node: u64, existing: Side, new: Side) -> TieBreak {
    let dialer = |side: Side| match side {
        Side::Initiator => local_node,
        Side::Acceptor => peer_node,
    };
    let (existing_dialer, new_dialer) = (dialer(existing), dialer(new));
    match existing_dialer.cmp(&new_dialer) {
        core::cmp::Ordering::Less => TieBreak::KeepExisting,
        // Same dialer: it reconnected, the newer session wins.
        core::cmp::Ordering::Equal | core::cmp::Ordering::Greater => TieBreak::KeepNew,
    }
}

/// The answer of [`SessionTable::register`]: what to do with the sessions involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration<Id> {
    /// No other session with this peer: keep the new one.
    Keep,
    /// Keep the new session; close `old` with `DuplicateSession`.
    Replace {
        /// The session to close.
        old: Id,
    },
    /// Close the new session with `DuplicateSession`; `existing` stays.
    Reject {
        /// The session that stays.
        existing: Id,
    },
    /// The table holds `capacity` peers already: close the new session with
    /// `TooManySessions`.
    Full {
        /// The table's capacity.
        capacity: usize,
    },
}

impl<Id> Registration<Id> {
    /// The CLOSE reason for the session this answer closes, if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self {
            Registration::Keep => None,
            Registration::Replace { .. } | Registration::Reject { .. } => {
                Some(CloseReason::DuplicateSession)
            }
            Registration::Full { .. } => Some(CloseReason::TooManySessions),
        }
    }
}

/// Established sessions by peer node id: at most one per peer.
#[derive(Debug, Clone)]
pub struct SessionTable<Id> {
    local_node: u64,
    capacity: usize,
    by_peer: HashMap<u64, (Id, Side)>,
}

impl<Id: Copy + Eq> SessionTable<Id> {
    /// An empty table for node `local_node`, holding at most `capacity` peers (allocated now).
    pub fn new(local_node: u64, capacity: usize) -> Self {
        Self {
            local_node,
            capacity,
            by_peer: HashMap::with_capacity(capacity),
        }
    }

    /// Session `id` (this node's `side` of it) with `peer_node` became established: applies the
    /// tie-break against any session already registered for that peer and records the winner.
    pub fn register(&mut self, peer_node: u64, id: Id, side: Side) -> Registration<Id> {
        let len = self.by_peer.len();
        match self.by_peer.entry(peer_node) {
            Entry::Vacant(v) => {
                if len >= self.capacity {
                    return Registration::Full {
                        capacity: self.capacity,
                    };
                }
                v.insert((id, side));
                Registration::Keep
            }
            Entry::Occupied(mut o) => {
                let (old, old_side) = *o.get();
                if old == id {
                    // Registering the same session twice changes nothing.
                    return Registration::Keep;
                }
                match tie_break(self.local_node, peer_node, old_side, side) {
                    TieBreak::KeepExisting => Registration::Reject { existing: old },
                    TieBreak::KeepNew => {
                        o.insert((id, side));
                        Registration::Replace { old }
                    }
                }
            }
        }
    }

    /// Session `id` with `peer_node` ended. Removes the entry only if it is this session (a
    /// session that lost the tie-break is not in the table). Returns whether it was removed.
    pub fn remove(&mut self, peer_node: u64, id: Id) -> bool {
        match self.by_peer.entry(peer_node) {
            Entry::Occupied(o) if o.get().0 == id => {
                o.remove();
                true
            }
            _ => false,
        }
    }

    /// The session kept for `peer_node`.
    pub fn get(&self, peer_node: u64) -> Option<Id> {
        self.by_peer.get(&peer_node).map(|(id, _)| *id)
    }

    /// Peers with a session.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether no peer has a session.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_bounds_sessions_and_half_open() {
        let mut a = Admission::new(AdmissionConfig {
            max_sessions: 3,
            max_half_open: 2,
        });
        let mut t1 = a.try_admit().unwrap();
        let t2 = a.try_admit().unwrap();
        assert_eq!(
            a.try_admit(),
            Err(AdmissionError::TooManyHalfOpen {
                current: 2,
                limit: 2
            })
        );
        a.promote(&mut t1);
        a.promote(&mut t1);
        assert!(!t1.is_half_open());
        assert_eq!((a.sessions(), a.half_open()), (2, 1));
        let t3 = a.try_admit().unwrap();
        let err = a.try_admit().unwrap_err();
        assert_eq!(
            err,
            AdmissionError::TooManySessions {
                current: 3,
                limit: 3
            }
        );
        assert_eq!(err.close_reason(), CloseReason::TooManySessions);
        a.release(t2);
        a.release(t1);
        assert_eq!((a.sessions(), a.half_open()), (1, 1));
        a.release(t3);
        assert_eq!((a.sessions(), a.half_open()), (0, 0));
    }

    #[test]
    #[should_panic(expected = "release: no session counted")]
    fn foreign_ticket_is_a_bug() {
        let mut a = Admission::new(AdmissionConfig::default());
        let mut b = Admission::new(AdmissionConfig::default());
        let t = a.try_admit().unwrap();
        b.release(t);
    }

    /// Node `a`'s and node `b`'s views of the same pair of sessions agree.
    fn both_views(a: u64, b: u64, first_dialer: u64, second_dialer: u64) -> (TieBreak, TieBreak) {
        let side = |me: u64, dialer: u64| {
            if me == dialer {
                Side::Initiator
            } else {
                Side::Acceptor
            }
        };
        (
            tie_break(a, b, side(a, first_dialer), side(a, second_dialer)),
            tie_break(b, a, side(b, first_dialer), side(b, second_dialer)),
        )
    }

    #[test]
    fn tie_break_keeps_the_lower_dialer_on_both_sides() {
        // 3 and 9 dial each other; 3's session must survive whichever was first.
        assert_eq!(
            both_views(3, 9, 3, 9),
            (TieBreak::KeepExisting, TieBreak::KeepExisting)
        );
        assert_eq!(
            both_views(3, 9, 9, 3),
            (TieBreak::KeepNew, TieBreak::KeepNew)
        );
        assert_eq!(
            both_views(9, 3, 3, 9),
            (TieBreak::KeepExisting, TieBreak::KeepExisting)
        );
        // Same dialer twice: the reconnect wins everywhere.
        assert_eq!(
            both_views(3, 9, 9, 9),
            (TieBreak::KeepNew, TieBreak::KeepNew)
        );
        assert_eq!(
            both_views(3, 9, 3, 3),
            (TieBreak::KeepNew, TieBreak::KeepNew)
        );
    }

    #[test]
    fn tie_break_is_symmetric_for_all_small_ids() {
        for a in 1..20u64 {
            for b in 1..20u64 {
                if a == b {
                    continue;
                }
                for (d1, d2) in [(a, a), (a, b), (b, a), (b, b)] {
                    let (x, y) = both_views(a, b, d1, d2);
                    assert_eq!(x, y, "a={a} b={b} dialers {d1},{d2}");
                    // The survivor was dialed by min(a, b) whenever the dialers differ.
                    if d1 != d2 {
                        let kept_dialer = if x == TieBreak::KeepExisting { d1 } else { d2 };
                        assert_eq!(kept_dialer, a.min(b));
                    }
                }
            }
        }
    }

    #[test]
    fn table_applies_the_rule_symmetrically() {
        // Node 3 and node 9 each hold a table; session "A" was dialed by 3, "B" by 9. They
        // become established in opposite orders on the two nodes.
        let mut t3: SessionTable<char> = SessionTable::new(3, 8);
        let mut t9: SessionTable<char> = SessionTable::new(9, 8);
        assert_eq!(t3.register(9, 'A', Side::Initiator), Registration::Keep);
        assert_eq!(
            t3.register(9, 'B', Side::Acceptor),
            Registration::Reject { existing: 'A' }
        );
        assert_eq!(t9.register(3, 'B', Side::Initiator), Registration::Keep);
        let r = t9.register(3, 'A', Side::Acceptor);
        assert_eq!(r, Registration::Replace { old: 'B' });
        assert_eq!(r.close_reason(), Some(CloseReason::DuplicateSession));
        assert_eq!(t3.get(9), Some('A'));
        assert_eq!(t9.get(3), Some('A'));
        // The loser's end does not remove the winner.
        assert!(!t9.remove(3, 'B'));
        assert!(t9.remove(3, 'A'));
        assert!(t9.is_empty());
        assert_eq!(t3.register(9, 'A', Side::Initiator), Registration::Keep);
        assert_eq!(t3.len(), 1);
    }

    #[test]
    fn table_is_bounded() {
        let mut t: SessionTable<u32> = SessionTable::new(1, 2);
        assert_eq!(t.register(2, 20, Side::Acceptor), Registration::Keep);
        assert_eq!(t.register(3, 30, Side::Acceptor), Registration::Keep);
        let r = t.register(4, 40, Side::Acceptor);
        assert_eq!(r, Registration::Full { capacity: 2 });
        assert_eq!(r.close_reason(), Some(CloseReason::TooManySessions));
        // A replacement for a known peer still fits.
        assert_eq!(
            t.register(2, 21, Side::Acceptor),
            Registration::Replace { old: 20 }
        );
        assert_eq!(Registration::<u32>::Keep.close_reason(), None);
    }
}
