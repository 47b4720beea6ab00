//! The destination's side: messages addressed to this node, from arrival to the application's
//! ack.
//!
//! A DATA frame is checked against the dedup window ([`Inbox::handle_data`]): a new message
//! must be persisted by the caller, then [`Inbox::handle_persisted`] queues its DELIVERED for
//! the origin and offers it to subscribers. A retransmission of a message already held or
//! delivered gets a DELIVERED again (the origin may have missed the first) and is never
//! offered twice. An offered message that is not acked within
//! [`InboxConfig::redeliver_after`] is offered again with its attempt number raised; the
//! application's ack ([`Inbox::handle_client_ack`]) releases it and, when the origin asked,
//! queues an ACK back. Without subscribers messages wait (PENDING_CLIENT at the origin's
//! application level).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_wal::dedup::{DedupConfig, DedupError, DedupWindow, Verdict as DedupVerdict};

/// Settings of an [`Inbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxConfig {
    /// The dedup window (per-source high-water mark and bitmap).
    pub dedup: DedupConfig,
    /// An offered message not acked within this time is offered again.
    pub redeliver_after: Duration,
    /// Most messages held (persisted or being persisted, not yet acked).
    pub held_max: usize,
    /// Application-ack outcomes remembered, to answer an origin whose ACK was lost.
    pub acks_kept: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            dedup: DedupConfig::default(),
            redeliver_after: Duration::from_secs(30),
            held_max: 1 << 20,
            acks_kept: 1 << 18,
        }
    }
}

/// Why the inbox refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    /// The inbox holds its maximum of messages: the frame is refused without a DELIVERED, so
    /// the origin retransmits it later.
    #[error("{held} messages held, the limit")]
    Full {
        /// Messages held.
        held: usize,
    },
    /// The dedup window refused the source (it tracks its maximum of sources).
    #[error("dedup: {0}")]
    Dedup(#[from] DedupError),
    /// The dedup window could not be built.
    #[error("dedup configuration: {0}")]
    Config(String),
    /// No such message is held.
    #[error("message {msg_id} from {src_node} is not held")]
    Unknown {
        /// Source.
        src_node: u64,
        /// Message.
        msg_id: u64,
    },
}

/// What to do with an arriving DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: persist it, then call [`Inbox::handle_persisted`].
    New,
    /// Seen before: drop it (a DELIVERED was queued if it is already durable).
    Duplicate,
}

/// A frame the inbox wants sent to an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxTransmit {
    /// The message is durable here.
    Delivered {
        /// The origin.
        src_node: u64,
        /// The message.
        msg_id: u64,
    },
    /// The application acked (or rejected) it.
    Ack {
        /// The origin.
        src_node: u64,
        /// The message.
        msg_id: u64,
        /// Accepted or rejected.
        success: bool,
    },
}

/// A message to hand to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The origin.
    pub src_node: u64,
    /// The message.
    pub msg_id: u64,
    /// 1 for the first offer; more after redeliveries.
    pub attempt: u32,
}

type Key = (u64, u64);

#[derive(Debug, Clone, Copy)]
struct Held {
    persisted: bool,
    require_ack: bool,
    attempts: u32,
    /// When the current offer times out.
    offer_due: Option<Instant>,
}

/// The destination's state machine (module docs).
#[derive(Debug)]
pub struct Inbox {
    cfg: InboxConfig,
    dedup: DedupWindow,
    held: HashMap<Key, Held>,
    ready: VecDeque<Key>,
    offers: BTreeSet<(Instant, Key)>,
    transmit: VecDeque<InboxTransmit>,
    subscribers: usize,
    acked: HashMap<Key, bool>,
    acked_order: VecDeque<Key>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new(cfg: InboxConfig) -> Result<Self, InboxError> {
        let dedup = DedupWindow::new(cfg.dedup).map_err(|e| InboxError::Config(e.to_string()))?;
        Ok(Self::with_dedup(cfg, dedup))
    }

    /// An inbox over a dedup window restored from the WAL.
    pub fn with_dedup(cfg: InboxConfig, dedup: DedupWindow) -> Self {
        Self {
            cfg,
            dedup,
            held: HashMap::new(),
            ready: VecDeque::new(),
            offers: BTreeSet::new(),
            transmit: VecDeque::new(),
            subscribers: 0,
            acked: HashMap::new(),
            acked_order: VecDeque::new(),
        }
    }

    /// Messages held (not yet acked by the application).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Messages waiting for a subscriber.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// The dedup window (for snapshots into the WAL).
    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }

    /// A DATA frame `(src_node, msg_id)` arrived.
    pub fn handle_data(
        &mut self,
        src_node: u64,
        msg_id: u64,
        require_ack: bool,
    ) -> Result<Verdict, InboxError> {
        let key = (src_node, msg_id);
        if let Some(h) = self.held.get(&key) {
            if h.persisted {
                self.transmit
                    .push_back(InboxTransmit::Delivered { src_node, msg_id });
            }
            return Ok(Verdict::Duplicate);
        }
        if self.held.len() >= self.cfg.held_max {
            return Err(InboxError::Full {
                held: self.held.len(),
            });
        }
        match self.dedup.check_and_insert(src_node, msg_id)? {
            DedupVerdict::New => {
                self.held.insert(
                    key,
                    Held {
                        persisted: false,
                        require_ack,
                        attempts: 0,
                        offer_due: None,
                    },
                );
                Ok(Verdict::New)
            }
            DedupVerdict::Duplicate | DedupVerdict::TooOld => {
                // Delivered and released: the origin missed our DELIVERED, or (a probe) our
                // ACK.
                let answer = match self.acked.get(&key) {
                    Some(&success) => InboxTransmit::Ack {
                        src_node,
                        msg_id,
                        success,
                    },
                    None => InboxTransmit::Delivered { src_node, msg_id },
                };
                self.transmit.push_back(answer);
                Ok(Verdict::Duplicate)
            }
        }
    }

    /// The message is durable here: tell the origin, and offer it.
    pub fn handle_persisted(&mut self, src_node: u64, msg_id: u64) {
        let key = (src_node, msg_id);
        let Some(h) = self.held.get_mut(&key) else {
            return;
        };
        if h.persisted {
            return;
        }
        h.persisted = true;
        self.transmit
            .push_back(InboxTransmit::Delivered { src_node, msg_id });
        self.ready.push_back(key);
    }

    /// The message [`Inbox::handle_data`] just called new turns out to be in the persistent
    /// dedup state already (stored and acked before a restart emptied this inbox's memory): it
    /// is not held or offered, and the origin hears DELIVERED again.
    pub fn handle_stored_before(&mut self, src_node: u64, msg_id: u64) {
        let key = (src_node, msg_id);
        if self.held.get(&key).is_some_and(|h| !h.persisted) {
            self.held.remove(&key);
            self.transmit
                .push_back(InboxTransmit::Delivered { src_node, msg_id });
        }
    }

    /// A message recovered from the WAL at start (durable, not acked): offer it again.
    pub fn handle_recovered(&mut self, src_node: u64, msg_id: u64, require_ack: bool) {
        let key = (src_node, msg_id);
        if self.held.contains_key(&key) {
            return;
        }
        self.held.insert(
            key,
            Held {
                persisted: true,
                require_ack,
                attempts: 0,
                offer_due: None,
            },
        );
        self.ready.push_back(key);
    }

    /// The number of subscribers changed.
    pub fn handle_subscribers(&mut self, count: usize) {
        self.subscribers = count;
    }

    /// The next message to hand to a subscriber (none without subscribers).
    #[must_use]
    pub fn poll_offer(&mut self, now: Instant) -> Option<Offer> {
        if self.subscribers == 0 {
            return None;
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(h) = self.held.get_mut(&key) else {
                continue;
            };
            h.attempts += 1;
            let due = now + self.cfg.redeliver_after;
            h.offer_due = Some(due);
            self.offers.insert((due, key));
            return Some(Offer {
                src_node: key.0,
                msg_id: key.1,
                attempt: h.attempts,
            });
        }
        None
    }

    /// An offered message goes back to the queue at once (its subscriber went away).
    pub fn requeue(&mut self, src_node: u64, msg_id: u64) {
        let key = (src_node, msg_id);
        if let Some(h) = self.held.get_mut(&key)
            && h.offer_due.take().is_some()
        {
            self.ready.push_front(key);
        }
    }

    /// The application acked (or rejected) a message: it is released (the caller records
    /// ACKED in the WAL) and, if the origin asked, an ACK goes back.
    pub fn handle_client_ack(
        &mut self,
        src_node: u64,
        msg_id: u64,
        success: bool,
    ) -> Result<(), InboxError> {
        let key = (src_node, msg_id);
        let h = self
            .held
            .remove(&key)
            .ok_or(InboxError::Unknown { src_node, msg_id })?;
        // Only a message not on offer now waits in `ready` (one offered was taken from it):
        // the common ack, of an offered message, costs no scan.
        if h.offer_due.is_none() {
            self.ready.retain(|k| *k != key);
        }
        if h.require_ack {
            self.transmit.push_back(InboxTransmit::Ack {
                src_node,
                msg_id,
                success,
            });
            if self.cfg.acks_kept > 0 {
                if self.acked_order.len() >= self.cfg.acks_kept
                    && let Some(old) = self.acked_order.pop_front()
                {
                    self.acked.remove(&old);
                }
                self.acked.insert(key, success);
                self.acked_order.push_back(key);
            }
        }
        Ok(())
    }

    /// When [`Inbox::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&(t, key)) = self.offers.first() {
            if self.held.get(&key).is_some_and(|h| h.offer_due == Some(t)) {
                return Some(t);
            }
            self.offers.pop_first();
        }
        None
    }

    /// Offers again what was not acked in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.offers.first() {
            if t > now {
                break;
            }
            self.offers.pop_first();
            if let Some(h) = self.held.get_mut(&key)
                && h.offer_due == Some(t)
            {
                h.offer_due = None;
                self.ready.push_back(key);
            }
        }
    }

    /// The next frame to send to an origin.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<InboxTransmit> {
        self.transmit.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_then_duplicate_then_ack() {
        let t = Instant::now();
        let mut i = Inbox::new(InboxConfig::default()).unwrap();
        i.handle_subscribers(1);
        assert_eq!(i.handle_data(5, 1, true).unwrap(), Verdict::New);
        // A retransmission before it is durable: nothing to send yet.
        assert_eq!(i.handle_data(5, 1, true).unwrap(), Verdict::Duplicate);
        assert!(i.poll_transmit().is_none());
        i.handle_persisted(5, 1);
        assert_eq!(
            i.poll_transmit(),
            Some(InboxTransmit::Delivered {
                src_node: 5,
                msg_id: 1
            })
        );
        let o = i.poll_offer(t).unwrap();
        assert_eq!((o.src_node, o.msg_id, o.attempt), (5, 1, 1));
        // A retransmission after it is durable: DELIVERED again, no second offer.
        assert_eq!(i.handle_data(5, 1, true).unwrap(), Verdict::Duplicate);
        assert!(matches!(
            i.poll_transmit(),
            Some(InboxTransmit::Delivered { .. })
        ));
        assert!(i.poll_offer(t).is_none());
        i.handle_client_ack(5, 1, false).unwrap();
        assert_eq!(
            i.poll_transmit(),
            Some(InboxTransmit::Ack {
                src_node: 5,
                msg_id: 1,
                success: false
            })
        );
        // Long after release, the dedup window still knows it.
        assert_eq!(i.handle_data(5, 1, true).unwrap(), Verdict::Duplicate);
        assert_eq!(i.held(), 0);
    }

    #[test]
    fn a_message_stored_before_a_restart_is_answered_not_offered() {
        let t = Instant::now();
        let mut i = Inbox::new(InboxConfig::default()).unwrap();
        i.handle_subscribers(1);
        assert_eq!(i.handle_data(8, 3, false).unwrap(), Verdict::New);
        i.handle_stored_before(8, 3);
        assert_eq!(
            i.poll_transmit(),
            Some(InboxTransmit::Delivered {
                src_node: 8,
                msg_id: 3
            })
        );
        assert_eq!(i.held(), 0);
        assert!(i.poll_offer(t).is_none());
        // Later copies are duplicates of the window.
        assert_eq!(i.handle_data(8, 3, false).unwrap(), Verdict::Duplicate);
    }

    #[test]
    fn an_ack_releases_a_message_whether_on_offer_or_waiting_again() {
        let t = Instant::now();
        let mut i = Inbox::new(InboxConfig::default()).unwrap();
        i.handle_subscribers(1);
        for id in 1..=3 {
            i.handle_data(5, id, false).unwrap();
            i.handle_persisted(5, id);
        }
        // 1 on offer and acked; 2 offered, its subscriber left (back in the queue), then acked
        // by the Ack call; 3 still waiting.
        assert_eq!(i.poll_offer(t).unwrap().msg_id, 1);
        assert_eq!(i.poll_offer(t).unwrap().msg_id, 2);
        i.requeue(5, 2);
        assert_eq!(i.waiting(), 2);
        i.handle_client_ack(5, 1, true).unwrap();
        assert_eq!(i.waiting(), 2);
        i.handle_client_ack(5, 2, true).unwrap();
        assert_eq!(i.waiting(), 1, "the acked one left the queue");
        assert_eq!(i.poll_offer(t).unwrap().msg_id, 3);
        assert!(i.poll_offer(t).is_none());
        assert_eq!(i.held(), 1);
    }

    #[test]
    fn unacked_offers_are_redelivered_and_wait_without_subscribers() {
        let t = Instant::now();
        let mut i = Inbox::new(InboxConfig {
            redeliver_after: Duration::from_secs(1),
            ..InboxConfig::default()
        })
        .unwrap();
        i.handle_data(5, 1, false).unwrap();
        i.handle_persisted(5, 1);
        assert!(i.poll_offer(t).is_none(), "no subscriber: it waits");
        assert_eq!(i.waiting(), 1);
        i.handle_subscribers(1);
        assert_eq!(i.poll_offer(t).unwrap().attempt, 1);
        assert_eq!(i.poll_timeout(), Some(t + Duration::from_secs(1)));
        i.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(i.poll_offer(t).unwrap().attempt, 2);
        i.requeue(5, 1);
        assert_eq!(i.poll_offer(t).unwrap().attempt, 3);
        i.handle_client_ack(5, 1, true).unwrap();
        assert!(
            i.poll_transmit()
                .is_some_and(|x| matches!(x, InboxTransmit::Delivered { .. }))
        );
        assert!(
            i.poll_transmit().is_none(),
            "no ACK unless the origin asked"
        );
        assert_eq!(
            i.handle_client_ack(5, 1, true),
            Err(InboxError::Unknown {
                src_node: 5,
                msg_id: 1
            })
        );
    }

    #[test]
    fn the_inbox_is_bounded() {
        let mut i = Inbox::new(InboxConfig {
            held_max: 2,
            ..InboxConfig::default()
        })
        .unwrap();
        i.handle_data(1, 1, false).unwrap();
        i.handle_data(1, 2, false).unwrap();
        assert_eq!(
            i.handle_data(1, 3, false),
            Err(InboxError::Full { held: 2 })
        );
    }
}
