//! An origin's `Outbox` and three destinations' `Inbox`es over a simulated network that loses,
//! duplicates and reorders frames (seeded): every accepted message reaches the application
//! exactly once, and the origin learns every outcome. The origin's msg_ids are interleaved over
//! the destinations and the destinations' dedup windows are small (64 ids), so a message held
//! back too long would fall below its destination's window and be taken for a duplicate.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use mesh_delivery::{
    Inbox, InboxConfig, InboxTransmit, MessageStatus, Outbox, OutboxConfig, Verdict,
};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Wire {
    Data(u64),
    Delivered(u64),
    Ack(u64, bool),
}

/// Destination of message `id`: nodes 2, 3 and 4 in turn.
fn dst_of(id: u64) -> u64 {
    2 + id % 3
}

/// The destinations' dedup window, and so the origin's span.
const DEDUP_WINDOW: u32 = 64;

struct Net {
    rng: u64,
    loss_pct: u64,
    dup_pct: u64,
    /// (arrival time in ms, sequence for ties, frame), to the destination or back.
    to_dst: BTreeMap<(u64, u64), Wire>,
    to_src: BTreeMap<(u64, u64), Wire>,
    seq: u64,
}

impl Net {
    fn next(&mut self) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.rng >> 33
    }

    fn send(&mut self, now_ms: u64, to_dst: bool, w: Wire) {
        if self.next() % 100 < self.loss_pct {
            return;
        }
        let copies = if self.next() % 100 < self.dup_pct {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now_ms + 1 + self.next() % 50;
            self.seq += 1;
            let q = if to_dst {
                &mut self.to_dst
            } else {
                &mut self.to_src
            };
            q.insert((at, self.seq), w);
        }
    }
}

fn run(seed: u64, messages: u64, loss_pct: u64, dup_pct: u64) {
    let t0 = Instant::now();
    let mut out = Outbox::new(OutboxConfig {
        rto_initial: Duration::from_millis(100),
        rto_max: Duration::from_millis(800),
        dedup_span: u64::from(DEDUP_WINDOW),
        ..OutboxConfig::default()
    });
    let mut inboxes: BTreeMap<u64, Inbox> = (2..=4)
        .map(|d| {
            let mut cfg = InboxConfig::default();
            cfg.dedup.window_len = DEDUP_WINDOW;
            let mut inbox = Inbox::new(cfg).unwrap();
            inbox.handle_subscribers(1);
            (d, inbox)
        })
        .collect();
    let mut net = Net {
        rng: seed | 1,
        loss_pct,
        dup_pct,
        to_dst: BTreeMap::new(),
        to_src: BTreeMap::new(),
        seq: 0,
    };
    for id in 1..=messages {
        out.handle_accepted(id, dst_of(id), id % 2 == 0, None, t0)
            .unwrap();
        out.handle_persisted(id, t0);
    }
    let mut app_got: Vec<u64> = Vec::new();
    let mut now_ms = 0u64;
    while now_ms < 600_000 {
        let now = t0 + Duration::from_millis(now_ms);
        out.handle_timeout(now);
        while let Some(tx) = out.poll_transmit() {
            out.handle_sent(tx.msg_id, now);
            net.send(now_ms, true, Wire::Data(tx.msg_id));
        }
        // Destination side.
        let due: Vec<_> = net
            .to_dst
            .range(..(now_ms + 1, 0))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, w) in due {
            net.to_dst.remove(&k);
            if let Wire::Data(id) = w {
                let inbox = inboxes.get_mut(&dst_of(id)).unwrap();
                if inbox.handle_data(1, id, id % 2 == 0).unwrap() == Verdict::New {
                    inbox.handle_persisted(1, id);
                }
            }
        }
        for inbox in inboxes.values_mut() {
            while let Some(offer) = inbox.poll_offer(now) {
                app_got.push(offer.msg_id);
                inbox.handle_client_ack(1, offer.msg_id, true).unwrap();
            }
            inbox.handle_timeout(now);
            while let Some(tx) = inbox.poll_transmit() {
                let w = match tx {
                    InboxTransmit::Delivered { msg_id, .. } => Wire::Delivered(msg_id),
                    InboxTransmit::Ack {
                        msg_id, success, ..
                    } => Wire::Ack(msg_id, success),
                };
                net.send(now_ms, false, w);
            }
        }
        // Origin side.
        let due: Vec<_> = net
            .to_src
            .range(..(now_ms + 1, 0))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, w) in due {
            net.to_src.remove(&k);
            match w {
                Wire::Delivered(id) => out.handle_delivered(id, now),
                Wire::Ack(id, ok) => out.handle_ack(id, ok, now),
                Wire::Data(_) => unreachable!(),
            }
        }
        while out.poll_event().is_some() {}
        if out.in_flight() == 0 {
            break;
        }
        now_ms += 1;
    }
    assert_eq!(
        out.in_flight(),
        0,
        "seed {seed}: every outcome known within the simulated time"
    );
    let unique: HashSet<u64> = app_got.iter().copied().collect();
    assert_eq!(
        unique.len(),
        app_got.len(),
        "seed {seed}: delivered to the application twice"
    );
    assert_eq!(
        unique.len() as u64,
        messages,
        "seed {seed}: every message delivered"
    );
    for id in 1..=messages {
        let s = out.status(id).unwrap().status;
        let want = if id % 2 == 0 {
            MessageStatus::AckSuccess
        } else {
            MessageStatus::Delivered
        };
        assert_eq!(s, want, "seed {seed}: message {id}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn exactly_once_over_a_lossy_duplicating_network(seed in any::<u64>(), loss in 0u64..40, dup in 0u64..40) {
        run(seed, 200, loss, dup);
    }
}

#[test]
fn a_clean_network_needs_no_retransmission() {
    run(7, 1_000, 0, 0);
}
