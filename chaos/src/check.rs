//! The exactly-once verdict: from what the producer recorded (which sequence numbers it sent,
//! which the origin answered PERSISTED, and when) and what the consumer recorded (every copy
//! it was handed, with its msg_id and subscriber session), how many persisted messages were
//! lost, how many duplicated, and how long the mesh took to recover after each heal. Pure.
//!
//! # What counts
//!
//! - **Lost**: persisted, never handed to the consumer.
//! - **Duplicated**: a persisted or unconfirmed message handed over a second time where the
//!   mesh promises it will not be: as a *different* message (a second msg_id for one sequence
//!   number: the application cannot tell it from a new message), or again with the same msg_id
//!   on the *same* subscriber session (the consumer acked every copy at once, so the node had
//!   its ack).
//! - **Redelivered after a restart**: the same msg_id again on a *later* subscriber session,
//!   i.e. after the destination was SIGKILLed, when the previous copy came at most
//!   [`ACK_GRACE`] before that session ended. SPEC §5 has the destination deliver "until the
//!   application acks it", and an ack still in flight (in the socket, the node's queues, not
//!   yet appended to its log) dies with the node; the application tells these apart by their
//!   (src_node, msg_id). They are counted and printed, not failed. A copy acked longer before
//!   the node died than that was acked for good: handing it over again is a duplicate.
//! - **Unknown**: a copy whose sequence number the producer never sent (a corrupt payload).
//!
//! A message sent but never answered PERSISTED (its origin was killed first) may arrive or
//! not; if it arrives, it must arrive once like any other.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long before its subscriber session ended a copy's ack may still have been on its way
/// (the consumer acks at once; the node appends the ack within milliseconds): a copy handed
/// over again after a restart is a redelivery only if its previous copy came this late.
pub const ACK_GRACE: Duration = Duration::from_secs(2);

/// One message the producer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The application sequence number in the payload.
    pub seq: u64,
    /// When the origin answered PERSISTED (since the run's start), if it did.
    pub persisted_at: Option<Duration>,
}

/// One copy of a message the consumer was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The sequence number in the payload.
    pub seq: u64,
    /// The origin node the destination reported.
    pub src_node: u64,
    /// The msg_id the destination reported.
    pub msg_id: u64,
    /// When it was handed over (since the run's start).
    pub at: Duration,
    /// The consumer's subscriber session it came on (a new one after each reconnect).
    pub session: u32,
}

/// A message handed over more than the mesh allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Its sequence number.
    pub seq: u64,
    /// Every copy as (src_node, msg_id, subscriber session), in arrival order.
    pub copies: Vec<(u64, u64, u32)>,
}

/// The checker's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Messages the producer sent.
    pub sent: usize,
    /// Messages the origin answered PERSISTED.
    pub persisted: usize,
    /// Distinct sequence numbers the consumer got.
    pub received: usize,
    /// Every copy the consumer got.
    pub copies: usize,
    /// Persisted sequence numbers never received, ascending.
    pub lost: Vec<u64>,
    /// Messages handed over more than allowed.
    pub duplicated: Vec<Duplicate>,
    /// Copies of a msg_id already handed over, on a later subscriber session (allowed).
    pub redelivered_after_restart: usize,
    /// Sequence numbers received that the producer never sent.
    pub unknown: Vec<u64>,
    /// Per heal, how long after it every message persisted before it had arrived (`None`
    /// when one never did).
    pub recovery: Vec<Option<Duration>>,
}

impl Verdict {
    /// Nothing lost, nothing duplicated, nothing unknown.
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.unknown.is_empty()
    }

    /// Time to recover after the last heal (`None` with no heals or a loss).
    pub fn final_recovery(&self) -> Option<Duration> {
        self.recovery.last().copied().flatten()
    }
}

/// The verdict on a run: `sent` from the producer, `received` from the consumer in arrival
/// order, `session_ends[k]` when the consumer's session `k + 1` ended (sessions still open
/// have none), `heals` the times each fault was healed.
pub fn check(
    sent: &[Sent],
    received: &[Received],
    session_ends: &[Duration],
    heals: &[Duration],
) -> Verdict {
    let sent_by_seq: HashMap<u64, &Sent> = sent.iter().map(|s| (s.seq, s)).collect();
    // Per seq: its copies in arrival order.
    let mut copies: BTreeMap<u64, Vec<&Received>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for r in received {
        if sent_by_seq.contains_key(&r.seq) {
            copies.entry(r.seq).or_default().push(r);
        } else if !unknown.contains(&r.seq) {
            unknown.push(r.seq);
        }
    }
    let mut duplicated = Vec::new();
    let mut redelivered_after_restart = 0;
    for (&seq, list) in &copies {
        let key = |r: &Received| (r.src_node, r.msg_id);
        let one_msg = list.iter().all(|r| key(r) == key(list[0]));
        let ended = |session: u32| {
            usize::try_from(session)
                .ok()
                .and_then(|k| k.checked_sub(1))
                .and_then(|k| session_ends.get(k))
                .copied()
        };
        // Each copy on a later session than the one before, which ended before that copy's
        // ack could have been taken for good.
        let each_redelivered_after_a_restart = list.windows(2).all(|w| {
            w[0].session < w[1].session
                && ended(w[0].session).is_some_and(|end| end <= w[0].at + ACK_GRACE)
        });
        if one_msg && each_redelivered_after_a_restart {
            redelivered_after_restart += list.len() - 1;
        } else {
            duplicated.push(Duplicate {
                seq,
                copies: list
                    .iter()
                    .map(|r| (r.src_node, r.msg_id, r.session))
                    .collect(),
            });
        }
    }
    let first_at = |seq: u64| copies.get(&seq).map(|l| l[0].at);
    let persisted: Vec<&Sent> = sent.iter().filter(|s| s.persisted_at.is_some()).collect();
    let mut lost: Vec<u64> = persisted
        .iter()
        .filter(|s| !copies.contains_key(&s.seq))
        .map(|s| s.seq)
        .collect();
    lost.sort_unstable();
    let recovery = heals
        .iter()
        .map(|&heal| {
            let mut worst = Duration::ZERO;
            for s in persisted.iter().filter(|s| s.persisted_at <= Some(heal)) {
                worst = worst.max(first_at(s.seq)?.saturating_sub(heal));
            }
            Some(worst)
        })
        .collect();
    Verdict {
        sent: sent.len(),
        persisted: persisted.len(),
        received: copies.len(),
        copies: received.len() - unknown_copies(received, &sent_by_seq),
        lost,
        duplicated,
        redelivered_after_restart,
        unknown,
        recovery,
    }
}

/// The longest time within `from..to` in which no new message (a sequence number not seen
/// before) arrived: how long a fault held the traffic up. `received` in arrival order.
pub fn longest_pause(received: &[Received], from: Duration, to: Duration) -> Duration {
    let mut seen = std::collections::HashSet::new();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for r in received {
        if !seen.insert(r.seq) || r.at < from {
            continue;
        }
        if r.at > to {
            break;
        }
        longest = longest.max(r.at.saturating_sub(last));
        last = r.at;
    }
    longest.max(to.saturating_sub(last))
}

fn unknown_copies(received: &[Received], sent: &HashMap<u64, &Sent>) -> usize {
    received
        .iter()
        .filter(|r| !sent.contains_key(&r.seq))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sent(n: u64) -> Vec<Sent> {
        (0..n)
            .map(|seq| Sent {
                seq,
                persisted_at: Some(ms(seq * 10)),
            })
            .collect()
    }

    /// Sessions 1 and 2 ended at 10 ms and 60 ms.
    const ENDS: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(60)];

    fn got(seq: u64, at: u64, session: u32) -> Received {
        Received {
            seq,
            src_node: 1,
            msg_id: 1000 + seq,
            at: ms(at),
            session,
        }
    }

    #[test]
    fn every_message_once_passes() {
        let rx: Vec<_> = (0..5).map(|s| got(s, s * 10 + 5, 1)).collect();
        let v = check(&sent(5), &rx, &[], &[ms(20)]);
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.sent, v.persisted, v.received, v.copies), (5, 5, 5, 5));
        // Persisted by 20 ms: seqs 0..=2; the last of them arrived at 25 ms.
        assert_eq!(v.recovery, vec![Some(ms(5))]);
        assert_eq!(v.final_recovery(), Some(ms(5)));
    }

    #[test]
    fn a_lost_message_is_caught() {
        let rx: Vec<_> = [0, 1, 3, 4].iter().map(|&s| got(s, 100, 1)).collect();
        let v = check(&sent(5), &rx, &[], &[ms(50)]);
        assert!(!v.passed());
        assert_eq!(v.lost, vec![2]);
        assert_eq!(
            v.recovery,
            vec![None],
            "no recovery while a message is missing"
        );
    }

    #[test]
    fn a_message_never_persisted_may_be_missing() {
        let mut s = sent(3);
        s[2].persisted_at = None;
        let rx = vec![got(0, 1, 1), got(1, 2, 1)];
        let v = check(&s, &rx, &[], &[]);
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.persisted, 2);
    }

    #[test]
    fn the_same_msg_id_twice_on_one_session_is_a_duplicate() {
        let rx = vec![got(0, 1, 1), got(1, 2, 1), got(1, 3, 1)];
        let v = check(&sent(2), &rx, &ENDS, &[]);
        assert!(!v.passed());
        assert_eq!(v.duplicated.len(), 1);
        assert_eq!(v.duplicated[0].seq, 1);
        assert_eq!(v.duplicated[0].copies.len(), 2);
    }

    #[test]
    fn one_message_under_two_msg_ids_is_a_duplicate_even_across_sessions() {
        let mut again = got(1, 9, 2);
        again.msg_id = 77;
        let rx = vec![got(0, 1, 1), got(1, 2, 1), again];
        let v = check(&sent(2), &rx, &ENDS, &[]);
        assert_eq!(v.duplicated.len(), 1, "{v:?}");
        assert_eq!(v.redelivered_after_restart, 0);
    }

    #[test]
    fn a_duplicate_of_an_unconfirmed_message_is_caught_too() {
        let mut s = sent(2);
        s[1].persisted_at = None;
        let rx = vec![got(0, 1, 1), got(1, 2, 1), got(1, 3, 1)];
        assert_eq!(check(&s, &rx, &[], &[]).duplicated.len(), 1);
    }

    #[test]
    fn redelivery_after_the_destination_restarted_is_counted_not_failed() {
        let rx = vec![got(0, 1, 1), got(1, 2, 1), got(1, 50, 2), got(1, 80, 3)];
        let v = check(&sent(2), &rx, &ENDS, &[]);
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.redelivered_after_restart, 2);
        assert_eq!(v.copies, 4);
        // ...but twice on the later session is a duplicate.
        let rx = vec![got(0, 1, 1), got(1, 2, 1), got(1, 50, 2), got(1, 51, 2)];
        assert_eq!(check(&sent(2), &rx, &ENDS, &[]).duplicated.len(), 1);
    }

    #[test]
    fn redelivery_of_a_message_acked_long_before_the_restart_is_a_duplicate() {
        // Session 1 ended at 10 s; seq 1 came (and was acked) at 2 ms, 10 s before that.
        let ends = [Duration::from_secs(10)];
        let rx = vec![got(0, 1, 1), got(1, 2, 1), got(1, 10_500, 2)];
        let v = check(&sent(2), &rx, &ends, &[]);
        assert_eq!(v.duplicated.len(), 1, "{v:?}");
        assert_eq!(v.redelivered_after_restart, 0);
        // Acked 1.5 s before the end: its ack may have died with the node.
        let rx = vec![got(0, 1, 1), got(1, 8_500, 1), got(1, 10_500, 2)];
        assert!(check(&sent(2), &rx, &ends, &[]).passed());
    }

    #[test]
    fn a_payload_that_was_never_sent_fails() {
        let rx = vec![got(0, 1, 1), got(1, 1, 1), got(99, 2, 1)];
        let v = check(&sent(2), &rx, &ENDS, &[]);
        assert_eq!(v.unknown, vec![99]);
        assert!(!v.passed());
        assert_eq!(v.copies, 2);
    }

    #[test]
    fn the_longest_pause_counts_new_messages_only() {
        // Arrivals at 10, 20, (copy of 1 at 60), 90; window 0..100.
        let rx = vec![got(0, 10, 1), got(1, 20, 1), got(1, 60, 2), got(2, 90, 1)];
        assert_eq!(longest_pause(&rx, ms(0), ms(100)), ms(70));
        assert_eq!(longest_pause(&rx, ms(15), ms(25)), ms(5));
        assert_eq!(longest_pause(&rx, ms(91), ms(200)), ms(109));
    }

    #[test]
    fn recovery_is_measured_per_heal() {
        // Heal at 15 ms: seqs 0 and 1 persisted by then, 1 arrived at 40 ms.
        // Heal at 45 ms: seqs 0..=4 persisted by then, 4 arrived at 100 ms.
        let rx = vec![
            got(0, 5, 1),
            got(1, 40, 1),
            got(2, 41, 1),
            got(3, 42, 1),
            got(4, 100, 1),
        ];
        let v = check(&sent(5), &rx, &[], &[ms(15), ms(45)]);
        assert_eq!(v.recovery, vec![Some(ms(25)), Some(ms(55))]);
    }
}
