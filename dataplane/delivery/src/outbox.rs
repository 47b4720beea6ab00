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
//! The retransmission timeout adapts to each destination's measured round trip (send to
//! DELIVERED, RFC 6298's smoothed estimate and variance) with Karn's rules: only messages sent
//! once are sampled, and a timeout backs off the destination's timeout, not only the message's,
//! until a new sample comes. A loaded path is not flooded with copies the destination already
//! has (the hops are TCP: a copy is needed only when a node or link failed on the way, and those
//! are answered at once by the route change or peer-up they cause).
//!
//! A window per destination bounds the messages on their way (sent, not yet DELIVERED); the
//! rest wait, PERSISTED, in order. Without it a fast producer fills every queue and socket
//! buffer on the path, the round trip grows with the backlog and outruns the retransmission
//! timeout. The window adapts like TCP's congestion window: it starts at
//! [`OutboxConfig::window_initial`], grows by one per DELIVERED up to the first timeout (slow
//! start), then by one per window's worth, is halved by a timeout (at most once per round trip)
//! and never exceeds [`OutboxConfig::window`].
//!
//! The destination's duplicate filter remembers, per source partition, a window of
//! [`OutboxConfig::dedup_span`] msg_ids below the highest it saw; an id below that counts as a
//! duplicate. So a message leaves only while its id is less than `dedup_span` above the oldest
//! message to the same destination not yet DELIVERED (sent or not): a retransmission is then
//! always inside the destination's window, whatever else the origin sent meanwhile. Waiting
//! messages leave in id order, so the oldest always can.
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
    /// Retransmission timeout before a destination's round trip was measured.
    pub rto_initial: Duration,
    /// Smallest retransmission timeout, however fast the measured round trip.
    pub rto_min: Duration,
    /// Largest retransmission timeout (backoff doubles up to it).
    pub rto_max: Duration,
    /// How often a PENDING_NODE message is tried again.
    pub pending_node_retry: Duration,
    /// Most messages in flight (accepted, not yet delivered or finished).
    pub in_flight_max: usize,
    /// Most messages on their way to one destination (sent, not yet DELIVERED).
    pub window: usize,
    /// The window toward a destination before its first timeout taught it better.
    pub window_initial: usize,
    /// The destinations' duplicate-filter window in msg_ids (module docs); the mesh-wide
    /// dedup window length.
    pub dedup_span: u64,
    /// Most transmissions of one message before it fails (`None`: until its deadline).
    pub attempts_max: Option<u32>,
    /// Finished messages whose status is kept for `status` queries.
    pub status_kept: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(10),
            pending_node_retry: Duration::from_secs(1),
            in_flight_max: 262_144,
            window: 8192,
            window_initial: 256,
            dedup_span: u64::from(mesh_wal::dedup::WINDOW_LEN_DEFAULT),
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
    /// The message's status can no longer change (a final status, or DELIVERED without an
    /// ack to wait for): its owner may forget it. Comes after its last `Status`; the status
    /// stays answerable through [`Outbox::status`].
    Finished {
        /// The message.
        msg_id: u64,
    },
}

#[derive(Debug, Clone)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one message"
)]
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
    /// When the first transmission left (the round-trip sample, if it is the only one).
    first_sent: Option<Instant>,
    /// Holds one of its destination's window slots.
    on_way: bool,
    /// Waits for a window slot (in its destination's `waiting` queue).
    waiting: bool,
}

/// The window of one destination.
#[derive(Debug, Default)]
struct Window {
    /// Messages holding a slot.
    on_way: usize,
    /// Messages waiting for a slot, by msg_id.
    waiting: BTreeSet<u64>,
    /// Every message to this destination not yet DELIVERED (nor finished), by msg_id.
    undelivered: BTreeSet<u64>,
}

impl Window {
    /// Whether `msg_id` may take a slot now.
    fn admits(&self, msg_id: u64, limit: usize, span: u64) -> bool {
        let oldest = self.undelivered.first().copied().unwrap_or(msg_id);
        self.on_way < limit && msg_id.saturating_sub(oldest) < span.max(1)
    }
}

/// Destinations whose round trip is tracked one by one; more share one estimate.
const RTT_DESTINATIONS_MAX: usize = 65_536;

/// The first retransmission timeout toward `dst_node`: its own estimate, else the one over
/// every destination, else the configured initial value; within `rto_min ..= rto_max`.
fn rto_estimate(
    cfg: &OutboxConfig,
    rtt: &HashMap<u64, RttEstimate>,
    rtt_all: Option<&RttEstimate>,
    dst_node: u64,
) -> Duration {
    rtt.get(&dst_node)
        .or(rtt_all)
        .map_or(cfg.rto_initial, RttEstimate::rto)
        .max(cfg.rto_min)
        .min(cfg.rto_max)
}

/// [`Outbox::window_for`] over the outbox's fields.
fn window_limit(cfg: &OutboxConfig, rtt: &HashMap<u64, RttEstimate>, dst_node: u64) -> usize {
    rtt.get(&dst_node)
        .map_or(cfg.window_initial, RttEstimate::window)
        .min(cfg.window)
        .max(1)
}

/// A message count as a float (windows are far below 2^32).
fn count_f64(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A smoothed round-trip time and its variance (RFC 6298 §2), and the backed-off timeout a
/// retransmission left until the next sample.
/// Also the destination's congestion window (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
struct RttEstimate {
    srtt: Duration,
    rttvar: Duration,
    backoff: Duration,
    cwnd: f64,
    ssthresh: f64,
    last_cut: Option<Instant>,
}

impl RttEstimate {
    fn first(sample: Duration, cfg: &OutboxConfig) -> Self {
        Self {
            srtt: sample,
            rttvar: sample / 2,
            backoff: Duration::ZERO,
            cwnd: count_f64(cfg.window_initial.max(1)) + 1.0,
            ssthresh: count_f64(cfg.window.max(1)),
            last_cut: None,
        }
    }

    fn update(&mut self, sample: Duration, cfg: &OutboxConfig) {
        let diff = self.srtt.abs_diff(sample);
        self.rttvar = (self.rttvar * 3 + diff) / 4;
        self.srtt = (self.srtt * 7 + sample) / 8;
        self.backoff = Duration::ZERO;
        let grow = if self.cwnd < self.ssthresh {
            1.0
        } else {
            1.0 / self.cwnd
        };
        self.cwnd = (self.cwnd + grow).min(count_f64(cfg.window.max(1)));
    }

    /// A retransmission timeout toward this destination: the window halves, at most once per
    /// round trip (one burst of timeouts is one congestion event).
    fn cut(&mut self, now: Instant, cfg: &OutboxConfig) {
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < self.srtt)
        {
            return;
        }
        self.last_cut = Some(now);
        let floor = count_f64(cfg.window_initial.clamp(1, 16));
        self.ssthresh = (self.cwnd / 2.0).max(floor);
        self.cwnd = self.ssthresh;
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "cwnd is positive and at most `window`"
    )]
    fn window(&self) -> usize {
        self.cwnd as usize
    }

    /// SRTT + max(G, 4 * RTTVAR), with a clock granularity G of 1 ms, or the backed-off value.
    fn rto(&self) -> Duration {
        (self.srtt + (self.rttvar * 4).max(Duration::from_millis(1))).max(self.backoff)
    }
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
    /// Round trips per destination (at most [`RTT_DESTINATIONS_MAX`]).
    rtt: HashMap<u64, RttEstimate>,
    /// Round trip over every destination: for those without their own estimate.
    rtt_all: Option<RttEstimate>,
    /// Windows of the destinations with messages on their way or waiting.
    windows: HashMap<u64, Window>,
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
            rtt: HashMap::new(),
            rtt_all: None,
            windows: HashMap::new(),
        }
    }

    /// Messages to `dst_node` sent and not yet DELIVERED, and messages waiting for a slot.
    #[must_use]
    pub fn window_in_use(&self, dst_node: u64) -> (usize, usize) {
        self.windows
            .get(&dst_node)
            .map_or((0, 0), |w| (w.on_way, w.waiting.len()))
    }

    /// DELIVERED or finished: `msg_id` no longer holds back its destination's later ids.
    fn settle(&mut self, msg_id: u64) {
        let Some(dst) = self.msgs.get(&msg_id).map(|m| m.dst_node) else {
            return;
        };
        if let Some(w) = self.windows.get_mut(&dst) {
            w.undelivered.remove(&msg_id);
        }
    }

    /// Gives up `msg_id`'s window slot (delivered, NACKed or finished) and lets the next
    /// waiting messages of its destination go.
    fn free_slot(&mut self, msg_id: u64) {
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        let dst = m.dst_node;
        if m.on_way {
            m.on_way = false;
            if let Some(w) = self.windows.get_mut(&dst) {
                w.on_way = w.on_way.saturating_sub(1);
            }
        } else if m.waiting {
            // Finished while waiting.
            m.waiting = false;
            if let Some(w) = self.windows.get_mut(&dst) {
                w.waiting.remove(&msg_id);
            }
        }
        self.fill_window(dst);
    }

    fn fill_window(&mut self, dst: u64) {
        loop {
            let limit = window_limit(&self.cfg, &self.rtt, dst);
            let Some(w) = self.windows.get_mut(&dst) else {
                return;
            };
            let Some(&id) = w.waiting.first() else {
                if w.on_way == 0 && w.undelivered.is_empty() {
                    self.windows.remove(&dst);
                }
                return;
            };
            if !w.admits(id, limit, self.cfg.dedup_span) {
                return;
            }
            w.waiting.pop_first();
            if let Some(m) = self.msgs.get_mut(&id)
                && m.waiting
            {
                m.waiting = false;
                self.queue(id);
            }
        }
    }

    /// The first retransmission timeout for a message to `dst_node`.
    #[must_use]
    pub fn rto_for(&self, dst_node: u64) -> Duration {
        rto_estimate(&self.cfg, &self.rtt, self.rtt_all.as_ref(), dst_node)
    }

    fn sample_rtt(&mut self, dst_node: u64, sample: Duration) {
        let cfg = &self.cfg;
        match self.rtt_all.as_mut() {
            Some(e) => e.update(sample, cfg),
            None => self.rtt_all = Some(RttEstimate::first(sample, cfg)),
        }
        if let Some(e) = self.rtt.get_mut(&dst_node) {
            e.update(sample, cfg);
        } else if self.rtt.len() < RTT_DESTINATIONS_MAX {
            self.rtt.insert(dst_node, RttEstimate::first(sample, cfg));
        }
    }

    /// How many messages may be on their way to `dst_node` now.
    #[must_use]
    pub fn window_for(&self, dst_node: u64) -> usize {
        self.rtt
            .get(&dst_node)
            .map_or(self.cfg.window_initial, RttEstimate::window)
            .min(self.cfg.window)
            .max(1)
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
                first_sent: None,
                on_way: false,
                waiting: false,
            },
        );
        self.events.push_back(OutboxEvent::Status { msg_id, entry });
        self.windows
            .entry(dst_node)
            .or_default()
            .undelivered
            .insert(msg_id);
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
        if m.queued || m.waiting || (m.delivered && !m.require_ack) {
            return;
        }
        if !m.on_way && !m.delivered {
            let limit = window_limit(&self.cfg, &self.rtt, m.dst_node);
            let w = self.windows.entry(m.dst_node).or_default();
            w.undelivered.insert(msg_id);
            // Older messages wait first: they leave in id order.
            let older_waiting = w.waiting.first().is_some_and(|&first| first < msg_id);
            if older_waiting || !w.admits(msg_id, limit, self.cfg.dedup_span) {
                m.waiting = true;
                w.waiting.insert(msg_id);
                return;
            }
            w.on_way += 1;
            m.on_way = true;
        }
        m.queued = true;
        m.attempts += 1;
        if m.attempts == 1 {
            m.rto = rto_estimate(&self.cfg, &self.rtt, self.rtt_all.as_ref(), m.dst_node);
        }
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
        if m.attempts == 1 && m.first_sent.is_none() {
            m.first_sent = Some(now);
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
        // Karn's rule: a message sent more than once does not say which copy was answered.
        let sample = match m.first_sent {
            Some(t) if m.attempts == 1 => Some((m.dst_node, now.saturating_duration_since(t))),
            _ => None,
        };
        if let Some((dst, rtt)) = sample {
            self.sample_rtt(dst, rtt);
        }
        self.settle(msg_id);
        self.free_slot(msg_id);
        let Some(m) = self.msgs.get_mut(&msg_id) else {
            return;
        };
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
                // Not on its way any more; it takes a slot again when retried.
                self.free_slot(msg_id);
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
            let Some(dst) = self.msgs.get(&id).map(|m| m.dst_node) else {
                continue;
            };
            let rto = self.rto_for(dst);
            if let Some(m) = self.msgs.get_mut(&id) {
                m.rto = rto;
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
            if !m.delivered && m.entry.status == MessageStatus::Forwarded {
                // Karn: the path is slower than thought; later messages start from the
                // doubled timeout too, until a message sent once is answered.
                let (dst, backoff) = (m.dst_node, m.rto);
                for e in [self.rtt.get_mut(&dst), self.rtt_all.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    e.backoff = e.backoff.max(backoff);
                }
                if let Some(e) = self.rtt.get_mut(&dst) {
                    e.cut(now, &self.cfg);
                }
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
        self.settle(msg_id);
        self.free_slot(msg_id);
        let Some(m) = self.msgs.remove(&msg_id) else {
            return;
        };
        self.events.push_back(OutboxEvent::Finished { msg_id });
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

    /// Short timers, for round numbers in the tests.
    fn timers() -> OutboxConfig {
        OutboxConfig {
            rto_initial: Duration::from_millis(200),
            rto_min: Duration::from_millis(50),
            ..OutboxConfig::default()
        }
    }

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
    fn a_delivered_message_is_finished_only_when_it_waits_for_no_ack() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig::default());
        let finished = |o: &mut Outbox| {
            let mut v = Vec::new();
            while let Some(e) = o.poll_event() {
                if let OutboxEvent::Finished { msg_id } = e {
                    v.push(msg_id);
                }
            }
            v
        };
        for (id, require_ack) in [(1, false), (2, true)] {
            o.handle_accepted(id, 9, require_ack, None, t).unwrap();
            o.handle_persisted(id, t);
            let _ = o.poll_transmit();
            o.handle_sent(id, t);
            assert!(finished(&mut o).is_empty(), "in flight");
            o.handle_delivered(id, t);
            // No ack wanted: DELIVERED is where it ends. Else it waits for the ack.
            let want = if require_ack { vec![] } else { vec![id] };
            assert_eq!(finished(&mut o), want);
        }
        // The finished one's status is still answered.
        assert_eq!(o.status(1).unwrap().status, MessageStatus::Delivered);
        // The other waits for the application's ack; its Finished comes after its last status.
        o.handle_ack(2, true, t);
        let mut last = Vec::new();
        while let Some(e) = o.poll_event() {
            last.push(e);
        }
        assert!(
            matches!(
                last.as_slice(),
                [
                    OutboxEvent::Status { msg_id: 2, entry },
                    OutboxEvent::Finished { msg_id: 2 }
                ] if entry.status == MessageStatus::AckSuccess
            ),
            "{last:?}"
        );
    }

    #[test]
    fn retransmits_with_backoff_until_delivered() {
        let t = Instant::now();
        let mut o = Outbox::new(timers());
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

    /// Sends message `id` to `dst` at `sent` and returns when its first retransmission is due.
    fn first_timeout(o: &mut Outbox, id: u64, dst: u64, sent: Instant) -> Duration {
        o.handle_accepted(id, dst, false, None, sent).unwrap();
        o.handle_persisted(id, sent);
        let tx = o.poll_transmit().unwrap();
        assert_eq!((tx.msg_id, tx.attempt), (id, 1));
        o.handle_sent(id, sent);
        o.poll_timeout().unwrap() - sent
    }

    #[test]
    fn the_timeout_follows_the_measured_round_trip() {
        let t = Instant::now();
        let mut o = Outbox::new(timers());
        assert_eq!(first_timeout(&mut o, 1, 9, t), Duration::from_millis(200));
        // A slow path: 400 ms to DELIVERED. SRTT 400, RTTVAR 200: RTO 1.2 s.
        o.handle_delivered(1, t + Duration::from_millis(400));
        let t2 = t + Duration::from_secs(1);
        assert_eq!(first_timeout(&mut o, 2, 9, t2), Duration::from_millis(1200));
        // No copy at 200 ms, the old fixed timeout, while the round trip is 400 ms.
        o.handle_timeout(t2 + Duration::from_millis(1100));
        assert!(o.poll_transmit().is_none());
        // Fast answers pull it down, never under rto_min.
        o.handle_delivered(2, t2 + Duration::from_millis(400));
        let mut now = t2 + Duration::from_secs(1);
        for id in 3..40 {
            first_timeout(&mut o, id, 9, now);
            o.handle_delivered(id, now + Duration::from_millis(1));
            now += Duration::from_millis(10);
        }
        assert_eq!(o.rto_for(9), Duration::from_millis(50));
        // A destination never measured borrows the estimate over all of them.
        assert_eq!(o.rto_for(8), o.rto_for(9));
    }

    #[test]
    fn a_retransmitted_message_is_not_a_sample() {
        let t = Instant::now();
        let mut o = Outbox::new(timers());
        let first = first_timeout(&mut o, 1, 9, t);
        o.handle_timeout(t + first);
        let tx = o.poll_transmit().unwrap();
        assert_eq!(tx.attempt, 2);
        o.handle_sent(1, t + first);
        // DELIVERED 5 s later: for the first copy or the second? Karn: neither.
        o.handle_delivered(1, t + Duration::from_secs(5));
        assert_eq!(o.rto_for(9), Duration::from_millis(200));
    }

    #[test]
    fn backoff_doubles_from_the_estimate_and_stops_at_rto_max() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig {
            rto_max: Duration::from_secs(2),
            ..timers()
        });
        first_timeout(&mut o, 1, 9, t);
        o.handle_delivered(1, t + Duration::from_millis(300));
        let mut now = t + Duration::from_secs(1);
        let mut gap = first_timeout(&mut o, 2, 9, now);
        let mut gaps = vec![gap];
        for _ in 0..3 {
            now += gap;
            o.handle_timeout(now);
            let _ = o.poll_transmit().unwrap();
            o.handle_sent(2, now);
            gap = o.poll_timeout().unwrap() - now;
            gaps.push(gap);
        }
        assert_eq!(
            gaps,
            vec![
                Duration::from_millis(900),
                Duration::from_millis(1800),
                Duration::from_secs(2),
                Duration::from_secs(2)
            ]
        );
    }

    #[test]
    fn a_timeout_backs_off_the_next_messages_until_a_sample() {
        let t = Instant::now();
        let mut o = Outbox::new(timers());
        first_timeout(&mut o, 1, 9, t);
        o.handle_delivered(1, t + Duration::from_millis(100));
        let rto = o.rto_for(9);
        assert_eq!(rto, Duration::from_millis(300));
        // A message times out: the path got slower. The next one waits twice as long.
        let t2 = t + Duration::from_secs(1);
        first_timeout(&mut o, 2, 9, t2);
        o.handle_timeout(t2 + rto);
        assert_eq!(o.poll_transmit().map(|x| x.attempt), Some(2));
        o.handle_sent(2, t2 + rto);
        assert_eq!(o.rto_for(9), rto * 2);
        assert_eq!(first_timeout(&mut o, 3, 9, t2 + rto), rto * 2);
        // Message 3 was sent once: its answer is a sample and ends the backoff.
        o.handle_delivered(3, t2 + rto + Duration::from_millis(100));
        assert!(o.rto_for(9) < rto * 2);
    }

    fn sent_ids(o: &mut Outbox, now: Instant) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some(t) = o.poll_transmit() {
            o.handle_sent(t.msg_id, now);
            ids.push(t.msg_id);
        }
        ids
    }

    #[test]
    fn a_window_per_destination_holds_the_rest_back_in_order() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig {
            window: 2,
            ..timers()
        });
        for id in 1..=5 {
            o.handle_accepted(id, 9, false, None, t).unwrap();
            o.handle_persisted(id, t);
        }
        o.handle_accepted(6, 8, false, None, t).unwrap();
        o.handle_persisted(6, t);
        // Destination 8 has its own window.
        assert_eq!(sent_ids(&mut o, t), vec![1, 2, 6]);
        assert_eq!(o.window_in_use(9), (2, 3));
        assert_eq!(o.status(3).unwrap().status, MessageStatus::Persisted);
        // DELIVERED frees a slot; so does a NACK that leaves a message waiting for a route.
        o.handle_delivered(1, t);
        assert_eq!(sent_ids(&mut o, t), vec![3]);
        o.handle_nack(2, NackReason::NoRoute, t);
        assert_eq!(sent_ids(&mut o, t), vec![4]);
        // Retransmissions are not held back: they already hold their slot.
        let due = o.poll_timeout().unwrap();
        o.handle_timeout(due);
        let again: Vec<_> = std::iter::from_fn(|| o.poll_transmit()).collect();
        assert!(again.iter().all(|x| x.attempt > 1));
        assert_eq!(o.window_in_use(9), (2, 1));
        // The NACKed message takes a slot again when retried: it queues behind 5.
        for id in [3, 4, 6] {
            o.handle_delivered(id, due);
        }
        assert_eq!(sent_ids(&mut o, due), vec![5]);
        o.handle_delivered(5, due);
        let retry = t + Duration::from_secs(1);
        o.handle_timeout(retry);
        assert_eq!(sent_ids(&mut o, retry), vec![2]);
        o.handle_delivered(2, retry);
        assert_eq!(o.window_in_use(9), (0, 0));
        assert_eq!(o.in_flight(), 0);
        assert!(o.windows.is_empty(), "no window kept for idle destinations");
    }

    #[test]
    fn the_window_grows_with_answers_and_halves_on_a_timeout() {
        let t = Instant::now();
        let mut o = Outbox::new(OutboxConfig {
            window: 64,
            window_initial: 4,
            ..timers()
        });
        assert_eq!(o.window_for(9), 4);
        let mut now = t;
        let mut id = 0;
        // Slow start: every DELIVERED of a message sent once adds one.
        for _ in 0..20 {
            id += 1;
            first_timeout(&mut o, id, 9, now);
            now += Duration::from_millis(10);
            o.handle_delivered(id, now);
        }
        assert_eq!(o.window_for(9), 4 + 20);
        // A burst of timeouts is one congestion event: halved once.
        for _ in 0..3 {
            id += 1;
            first_timeout(&mut o, id, 9, now);
        }
        let due = o.poll_timeout().unwrap();
        o.handle_timeout(due);
        assert_eq!(o.window_for(9), 12);
        // Then it grows by one per window's worth of answers.
        for _ in 0..3 {
            let r = o.poll_transmit().unwrap();
            o.handle_sent(r.msg_id, due);
            o.handle_delivered(r.msg_id, due);
        }
        now = due;
        for _ in 0..13 {
            id += 1;
            first_timeout(&mut o, id, 9, now);
            now += Duration::from_millis(10);
            o.handle_delivered(id, now);
        }
        assert_eq!(o.window_for(9), 13);
        // Never above the configured window.
        for _ in 0..10_000 {
            id += 1;
            first_timeout(&mut o, id, 9, now);
            o.handle_delivered(id, now);
        }
        assert_eq!(o.window_for(9), 64);
    }
}
