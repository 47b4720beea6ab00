//! The origin's side: messages this node accepted, until their fate is known.
//!
//! A message is accepted ([`Outbox::handle_accepted`]), becomes durable
//! ([`Outbox::handle_persisted`]), is sent ([`Outbox::poll_transmit`] then
//! [`Outbox::handle_sent`]) and retransmitted with exponential backoff until the destination's
//! DELIVERED arrives. A NACK moves it to PENDING_NODE (no route now: retried), or ends it
//! (TTL, policy, size, unknown destination). A change of routes or a peer coming back sends every
//! waiting message again at once. When DELIVERED arrives the record may be settled in the WAL
//! ([`OutboxEvent::Release`]); a message that asked for an application ack then waits for ACK.
//!
//! Bounded: at most [`OutboxConfig::in_flight_max`] messages in flight (the caller refuses more
//! with RESOURCE_EXHAUSTED), and the statuses of finished messages are kept for the most
//! recent [`OutboxConfig::status_kept`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_wire::NackReason;

use crate::status::{FailReason, MessageStatus, StatusEntry};

/// Settings of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// First retransmission timeout.
    pub rto_initial: Duration,
    /// Largest retransmission timeout (backoff doubles up to it).
    pub rto_max: Duration,
    /// How often a PENDING_NODE message is tried again.
    pub pending_node_retry: Duration,
    /// Most messages in flight (accepted, not yet delivered or finished).
    pub in_flight_max: usize,
    /// Most transmissions of one message before it fails (`None`: until its deadline).
    pub attempts_max: Option<u32>,
    /// Finished messages whose status is kept for `status` queries.
    pub status_kept: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            rto_initial: Duration::from_millis(200),
            rto_max: Duration::from_secs(10),
            pending_node_retry: Duration::from_secs(1),
            in_flight_max: 262_144,
            attempts_max: None,
            status_kept: 100_000,
        }
    }
}

/// Why the outbox refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The outbox holds its maximum of messages in flight.
    #[error("{in_flight} messages in flight, the limit")]
    Full {
        /// Messages in flight.
        in_flight: usize,
    },
    /// The msg_id is already in flight (msg_ids are never reused).
    #[error("msg_id {msg_id} is already in flight")]
    Duplicate {
        /// The id.
        msg_id: u64,
    },
}

/// A message to send (again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// The message.
    pub msg_id: u64,
    /// Its destination.
    pub dst_node: u64,
    /// 1 for the first transmission; more means set the RETRANSMIT flag.
    pub attempt: u32,
    /// A probe for the application's ack: the destination already stored the message (it
    /// answered DELIVERED and the payload was released), so send the frame without payload,
    /// with RETRANSMIT; the destination answers with the ACK it recorded.
    pub probe: bool,
}

/// What the outbox tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxEvent {
    /// A message's status changed (answer waiting Send calls, update GetStatus).
    Status {
        /// The message.
        msg_id: u64,
        /// Its new status.
        entry: StatusEntry,
    },
    /// The message's WAL record may be settled: delivered, or finished for good.
    Release {
        /// The message.
        msg_id: u64,
    },
}

#[derive(Debug, Clone)]
struct Out {
    dst_node: u64,
    require_ack: bool,
    entry: StatusEntry,
    attempts: u32,
    rto: Duration,
    /// When the next retransmission (or PENDING_NODE retry) is due.
    timer: Option<Instant>,
    deadline: Option<Instant>,
    /// Queued in `transmit` already.
    queued: bool,
    /// DELIVERED was heard (the record is released); only the application ack is awaited.
    delivered: bool,
}

/// The origin's state machine (module docs).
#[derive(Debug)]
pub struct Outbox {
    cfg: OutboxConfig,
    msgs: HashMap<u64, Out>,
    /// `(due, msg_id)`; entries whose message has another `timer` now are skipped.
    timers: BTreeSet<(Instant, u64)>,
    transmit: VecDeque<Retransmit>,
    events: VecDeque<OutboxEvent>,
    finished: HashMap<u64, StatusEntry>,
    finished_order: VecDeque<u64>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(cfg: OutboxConfig) -> Self {
        Self {
            cfg,
            msgs: HashMap::new(),
            timers: BTreeSet::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.msgs.len()
    }

    /// The status of a message, if it is in flight or among the recently finished.
    pub fn status(&self, msg_id: u64) -> Option<StatusEntry> {
        self.msgs
            .get(&msg_id)
            .map(|m| m.entry)
            .or_else(|| self.finished.get(&msg_id).copied())
    }

    /// A message was accepted from the application. `deadline`: it fails as EXPIRED if not
    /// delivered by then.
    pub fn handle_accepted(
        &mut self,
        msg_id: u64,
        dst_node: u64,
        require_ack: bool,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<(), OutboxError> {
        if self.msgs.contains_key(&msg_id) {
            return Err(OutboxError::Duplicate { msg_id });
        }
        if self.msgs.len() >= self.cfg.in_flight_max {
            return Err(OutboxError::Full {
                in_flight: self.msgs.len(),
            });
        }
        let entry = StatusEntry {
            status: MessageStatus::Accepted,
            reason: None,
            changed_at: now,
        };
        self.msgs.insert(
            msg_id,
            Out {
                dst_node,
                require_ack,
                entry,
                attempts: 0,
                rto: self.cfg.rto_initial,
                timer: None,
                deadline,
                queued: false,
                delivered: false,
            },
        );
        self.events.push_back(OutboxEvent::Status { msg_id, entry });
        if let Some(d) = deadline {
            self.arm(msg_id, d);
        }
        Ok(())
    }

    /// A message recovered from the WAL at start (durable, not yet delivered): send it again.
    pub fn handle_recovered(
        &mut self,
        msg_id: u64,
        dst_node: u64,
        require_ack: bool,
        now: Instant,
    ) -> Result<(), OutboxError> {
        self.handle_accepted(msg_id, dst_node, require_ack, None, now)?;
        self.handle_persisted(msg_id, now);
        Ok(())
    }

    /// The message's record is durable: it may leave.
    pub fn handle_persisted(&mut self, msg_id: u64, now: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if m.entry.status != MessageStatus::Accepted {
            return;
        }
        Self::set(
            &mut self.events,
            msg_id,
            m,
            MessageStatus::Persisted,
            None,
            now,
        );
        self.queue(msg_id);
    }

    fn queue(&mut self, msg_id: u64) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if m.queued || (m.delivered && !m.require_ack) {
            return;
        }
        m.queued = true;
        m.attempts += 1;
        self.transmit.push_back(Retransmit {
            msg_id,
            dst_node: m.dst_node,
            attempt: m.attempts,
            probe: m.delivered,
        });
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Retransmit> {
        while let Some(t) = self.transmit.pop_front() {
            if let Some(m) = self.msgs.get_mut(&t.msg_id)
                && m.queued
            {
                m.queued = false;
                return Some(t);
            }
        }
        None
    }

    /// The message left for its next hop: FORWARDED, and the retransmission timer runs.
    pub fn handle_sent(&mut self, msg_id: u64, now: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if m.delivered && !m.require_ack {
            return;
        }
        if matches!(
            m.entry.status,
            MessageStatus::Persisted | MessageStatus::PendingNode
        ) {
            Self::set(
                &mut self.events,
                msg_id,
                m,
                MessageStatus::Forwarded,
                None,
                now,
            );
        }
        let due = now + m.rto;
        m.rto = (m.rto * 2).min(self.cfg.rto_max);
        self.arm(msg_id, due);
    }

    fn arm(&mut self, msg_id: u64, due: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        let due = match m.deadline {
            Some(d) => due.min(d),
            None => due,
        };
        m.timer = Some(due);
        self.timers.insert((due, msg_id));
    }

    /// The destination stored the message.
    pub fn handle_delivered(&mut self, msg_id: u64, now: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if m.delivered {
            return;
        }
        m.delivered = true;
        m.timer = None;
        m.queued = false;
        m.rto = self.cfg.rto_initial;
        self.events.push_back(OutboxEvent::Release { msg_id });
        if m.require_ack {
            Self::set(
                &mut self.events,
                msg_id,
                m,
                MessageStatus::Delivered,
                None,
                now,
            );
            Self::set(
                &mut self.events,
                msg_id,
                m,
                MessageStatus::WaitingForClientAck,
                None,
                now,
            );
            // The ACK may be lost: probe for it until it comes (or the deadline passes).
            let due = now + self.cfg.rto_max;
            self.arm(msg_id, due);
        } else {
            Self::set(
                &mut self.events,
                msg_id,
                m,
                MessageStatus::Delivered,
                None,
                now,
            );
            self.finish(msg_id);
        }
    }

    /// The destination application acked (or rejected) the message. An ACK also proves
    /// delivery, should it overtake the DELIVERED.
    pub fn handle_ack(&mut self, msg_id: u64, success: bool, now: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if !m.delivered {
            m.delivered = true;
            self.events.push_back(OutboxEvent::Release { msg_id });
        }
        let status = if success {
            MessageStatus::AckSuccess
        } else {
            MessageStatus::AckFailure
        };
        Self::set(&mut self.events, msg_id, m, status, None, now);
        self.finish(msg_id);
    }

    /// The message was NACKed on its way.
    pub fn handle_nack(&mut self, msg_id: u64, reason: NackReason, now: Instant) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        if m.delivered {
            return;
        }
        let fail = |r| (MessageStatus::Failed, Some(r));
        let (status, reason) = match reason {
            NackReason::NoRoute | NackReason::QueueFull | NackReason::Unknown(_) => {
                // Kept, and tried again later.
                Self::set(
                    &mut self.events,
                    msg_id,
                    m,
                    MessageStatus::PendingNode,
                    None,
                    now,
                );
                let due = now + self.cfg.pending_node_retry;
                self.arm(msg_id, due);
                return;
            }
            NackReason::UnknownDestination => (MessageStatus::Undeliverable, None),
            NackReason::TtlExpired => fail(FailReason::TtlExpired),
            NackReason::DeniedByPolicy => fail(FailReason::RejectedByPolicy),
            NackReason::TooLarge => fail(FailReason::TooLarge),
            NackReason::Expired => fail(FailReason::Expired),
        };
        Self::set(&mut self.events, msg_id, m, status, reason, now);
        self.events.push_back(OutboxEvent::Release { msg_id });
        self.finish(msg_id);
    }

    /// Routes changed or a peer came back: every message still waiting is sent again now.
    pub fn handle_route_change(&mut self) {
        let waiting: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| {
                !m.delivered
                    && matches!(
                        m.entry.status,
                        MessageStatus::Forwarded | MessageStatus::PendingNode
                    )
            })
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(m) = self.msgs.get_mut(&id) {
                m.rto = self.cfg.rto_initial;
            }
            self.queue(id);
        }
    }

    /// When [`Outbox::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&(t, id)) = self.timers.first() {
            if self.msgs.get(&id).is_some_and(|m| m.timer == Some(t)) {
                return Some(t);
            }
            self.timers.pop_first();
        }
        None
    }

    /// Retransmits what is due and fails what expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(m) = self.msgs.get_mut(&id) else {
                continue;
            };
            if m.timer != Some(t) {
                continue;
            }
            m.timer = None;
            if m.delivered && !m.require_ack {
                continue;
            }
            let expired = m.deadline.is_some_and(|d| now >= d);
            let exhausted = self.cfg.attempts_max.is_some_and(|max| m.attempts >= max);
            if expired || exhausted {
                let reason = if expired {
                    FailReason::Expired
                } else {
                    FailReason::RetriesExhausted
                };
                Self::set(
                    &mut self.events,
                    id,
                    m,
                    MessageStatus::Failed,
                    Some(reason),
                    now,
                );
                self.events.push_back(OutboxEvent::Release { msg_id: id });
                self.finish(id);
                continue;
            }
            if m.entry.status == MessageStatus::Accepted {
                // Not durable yet: only its deadline could fire, and it has not.
                continue;
            }
            self.queue(id);
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<OutboxEvent> {
        self.events.pop_front()
    }

    fn set(
        events: &mut VecDeque<OutboxEvent>,
        msg_id: u64,
        m: &mut Out,
        status: MessageStatus,
        reason: Option<FailReason>,
        now: Instant,
    ) {
        debug_assert!(!m.entry.status.is_final(), "a final status never changes");
        m.entry = StatusEntry {
            status,
            reason,
            changed_at: now,
        };
        events.push_back(OutboxEvent::Status {
            msg_id,
            entry: m.entry,
        });
    }

    fn finish(&mut self, msg_id: u64) {
        let Some(m) = self.msgs.remove(&msg_id) else {
            return;
        };
        if self.cfg.status_kept == 0 {
            return;
        }
        if self.finished_order.len() >= self.cfg.status_kept
            && let Some(old) = self.finished_order.pop_front()
        {
            self.finished.remove(&old);
        }
        self.finished.insert(msg_id, m.entry);
        self.finished_order.push_back(msg_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(o: &mut Outbox) -> Vec<MessageStatus> {
        let mut v = Vec::new();
        while let Some(e) = o.poll_event() {
            if let OutboxEvent::Status { entry, .. } = e {
                v.push(entry.status);
            }
        }
        v
    }

    #[test]
    fn the_ladder_with_an_application_ack() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig::default());
        o.handle_accepted(1, 9, true, None, t).unwrap();
        assert!(o.poll_transmit().is_none(), "not before it is durable");
        o.handle_persisted(1, t);
        let tx = o.poll_transmit().unwrap();
        assert_eq!((tx.msg_id, tx.dst_node, tx.attempt), (1, 9, 1));
        o.handle_sent(1, t);
        o.handle_delivered(1, t);
        o.handle_ack(1, true, t);
        assert_eq!(
            statuses(&mut o),
            vec![
                MessageStatus::Accepted,
                MessageStatus::Persisted,
                MessageStatus::Forwarded,
                MessageStatus::Delivered,
                MessageStatus::WaitingForClientAck,
                MessageStatus::AckSuccess
            ]
        );
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.status(1).unwrap().status, MessageStatus::AckSuccess);
    }

    #[test]
    fn retransmits_with_backoff_until_delivered() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig::default());
        o.handle_accepted(1, 9, false, None, t).unwrap();
        o.handle_persisted(1, t);
        let mut now = t;
        let mut gaps = Vec::new();
        for attempt in 1..=4 {
            let tx = o.poll_transmit().unwrap();
            assert_eq!(tx.attempt, attempt);
            o.handle_sent(1, now);
            let due = o.poll_timeout().unwrap();
            gaps.push(due - now);
            now = due;
            o.handle_timeout(now);
        }
        assert_eq!(
            gaps,
            vec![
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_millis(800),
                Duration::from_millis(1600)
            ]
        );
        o.handle_delivered(1, now);
        o.handle_timeout(now + Duration::from_secs(60));
        assert!(
            o.poll_transmit().is_none(),
            "no retransmission after DELIVERED"
        );
        assert_eq!(o.status(1).unwrap().status, MessageStatus::Delivered);
    }

    #[test]
    fn nacks_map_to_statuses() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig::default());
        for (id, reason) in [
            (1, NackReason::NoRoute),
            (2, NackReason::UnknownDestination),
            (3, NackReason::TtlExpired),
            (4, NackReason::DeniedByPolicy),
        ] {
            o.handle_accepted(id, 9, false, None, t).unwrap();
            o.handle_persisted(id, t);
            let _ = o.poll_transmit();
            o.handle_sent(id, t);
            o.handle_nack(id, reason, t);
        }
        assert_eq!(o.status(1).unwrap().status, MessageStatus::PendingNode);
        assert_eq!(o.status(2).unwrap().status, MessageStatus::Undeliverable);
        let s3 = o.status(3).unwrap();
        assert_eq!(
            (s3.status, s3.reason),
            (MessageStatus::Failed, Some(FailReason::TtlExpired))
        );
        assert_eq!(
            o.status(4).unwrap().reason,
            Some(FailReason::RejectedByPolicy)
        );
        // The pending one is tried again after a second, and at once on a route change.
        o.handle_route_change();
        assert_eq!(o.poll_transmit().map(|t| t.msg_id), Some(1));
        assert_eq!(o.in_flight(), 1);
    }

    #[test]
    fn deadlines_expire_and_limits_hold() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig {
            in_flight_max: 2,
            ..OutboxConfig::default()
        });
        o.handle_accepted(1, 9, false, Some(t + Duration::from_millis(50)), t)
            .unwrap();
        o.handle_accepted(2, 9, false, None, t).unwrap();
        assert_eq!(
            o.handle_accepted(3, 9, false, None, t),
            Err(OutboxError::Full { in_flight: 2 })
        );
        assert_eq!(
            o.handle_accepted(2, 9, false, None, t),
            Err(OutboxError::Duplicate { msg_id: 2 })
        );
        o.handle_persisted(1, t);
        let _ = o.poll_transmit();
        o.handle_sent(1, t);
        o.handle_timeout(t + Duration::from_millis(50));
        let s = o.status(1).unwrap();
        assert_eq!(
            (s.status, s.reason),
            (MessageStatus::Failed, Some(FailReason::Expired))
        );
    }

    #[test]
    fn finished_statuses_are_bounded() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig {
            status_kept: 3,
            ..OutboxConfig::default()
        });
        for id in 0..10 {
            o.handle_accepted(id, 9, false, None, t).unwrap();
            o.handle_persisted(id, t);
            o.handle_delivered(id, t);
        }
        assert!(o.status(6).is_none());
        assert!(o.status(7).is_some() && o.status(9).is_some());
    }
}
