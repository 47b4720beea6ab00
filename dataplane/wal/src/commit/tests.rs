use proptest::prelude::*;

use super::*;

fn config(durability: Durability) -> CommitConfig {
    CommitConfig {
        durability,
        group_bytes_max: 4096,
        sync_deadline_us: 200,
        groups_pending_max: 4,
    }
}

fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

/// Appends of `len` bytes, one after the other in one segment.
struct Log {
    seq: u64,
    segment_id: u64,
    offset: usize,
}

impl Log {
    fn new() -> Self {
        Self {
            seq: 1,
            segment_id: 1,
            offset: 64,
        }
    }

    fn next(&mut self, len: usize) -> Appended {
        let appended = Appended {
            seq: self.seq,
            segment_id: self.segment_id,
            offset: self.offset,
            end_offset: self.offset + len,
        };
        self.seq += 1;
        self.offset += len;
        appended
    }

    fn roll(&mut self) -> (u64, usize) {
        let sealed = (self.segment_id, self.offset);
        self.segment_id += 1;
        self.offset = 64;
        sealed
    }
}

#[test]
fn batch_waits_for_the_deadline_then_syncs() {
    let mut commit = GroupCommit::new(config(Durability::Batch), 1).unwrap();
    let mut log = Log::new();
    commit.handle_append(&log.next(100), at(1000)).unwrap();
    commit.handle_append(&log.next(100), at(1050)).unwrap();
    assert_eq!(commit.poll_action(), None);
    assert_eq!(commit.poll_durable(), None, "nothing durable before a sync");
    assert_eq!(commit.poll_timeout(), Some(at(1200)));
    commit.handle_timeout(at(1199));
    assert_eq!(commit.poll_action(), None);
    commit.handle_timeout(at(1200));
    assert_eq!(
        commit.poll_action(),
        Some(Action::Sync {
            sync_id: 1,
            segment_id: 1,
            up_to_offset: 264
        })
    );
    assert_eq!(commit.poll_action(), None, "one sync in flight");
    assert_eq!(commit.poll_timeout(), None);
    // Appends during the sync go to the next group.
    commit.handle_append(&log.next(100), at(1300)).unwrap();
    assert_eq!(commit.poll_durable(), None);
    assert_eq!(commit.synced_seq(), 0);
    commit.handle_sync_done(1, at(1350)).unwrap();
    assert_eq!(commit.poll_durable(), Some(2));
    assert_eq!(commit.poll_durable(), None);
    assert_eq!(commit.synced_seq(), 2);
    // The next group opened at 1300; its deadline is 1500.
    assert_eq!(commit.poll_action(), None);
    assert_eq!(commit.poll_timeout(), Some(at(1500)));
    commit.handle_timeout(at(1600));
    assert_eq!(
        commit.poll_action(),
        Some(Action::Sync {
            sync_id: 2,
            segment_id: 1,
            up_to_offset: 364
        })
    );
    commit.handle_sync_done(2, at(1700)).unwrap();
    assert_eq!(commit.poll_durable(), Some(3));
}

#[test]
fn batch_size_limit_closes_a_group() {
    let mut commit = GroupCommit::new(config(Durability::Batch), 1).unwrap();
    let mut log = Log::new();
    commit.handle_append(&log.next(3000), at(0)).unwrap();
    assert_eq!(commit.poll_action(), None);
    commit.handle_append(&log.next(1096), at(1)).unwrap();
    assert!(matches!(
        commit.poll_action(),
        Some(Action::Sync { sync_id: 1, .. })
    ));
}

#[test]
fn always_syncs_at_once_and_batches_during_a_sync() {
    let mut commit = GroupCommit::new(config(Durability::Always), 1).unwrap();
    let mut log = Log::new();
    commit.handle_append(&log.next(8), at(0)).unwrap();
    assert!(matches!(
        commit.poll_action(),
        Some(Action::Sync { sync_id: 1, .. })
    ));
    assert_eq!(commit.poll_timeout(), None);
    commit.handle_append(&log.next(8), at(1)).unwrap();
    commit.handle_append(&log.next(8), at(2)).unwrap();
    assert_eq!(commit.poll_action(), None);
    commit.handle_sync_done(1, at(3)).unwrap();
    assert_eq!(
        commit.poll_durable(),
        Some(1),
        "each append only after its own sync"
    );
    assert_eq!(
        commit.poll_action(),
        Some(Action::Sync {
            sync_id: 2,
            segment_id: 1,
            up_to_offset: 88
        })
    );
    commit.handle_sync_done(2, at(4)).unwrap();
    assert_eq!(commit.poll_durable(), Some(3));
}

#[test]
fn none_is_durable_at_append() {
    let mut commit = GroupCommit::new(config(Durability::None), 10).unwrap();
    let mut log = Log::new();
    log.seq = 10;
    commit.handle_append(&log.next(8), at(0)).unwrap();
    assert_eq!(commit.poll_durable(), Some(10));
    assert_eq!(commit.poll_action(), None);
    assert_eq!(commit.poll_timeout(), None);
    assert_eq!(commit.synced_seq(), 9, "recovered records count as synced");
}

#[test]
fn a_failed_sync_is_fatal() {
    let mut commit = GroupCommit::new(config(Durability::Always), 1).unwrap();
    let mut log = Log::new();
    commit.handle_append(&log.next(8), at(0)).unwrap();
    let Some(Action::Sync { sync_id, .. }) = commit.poll_action() else {
        panic!("no sync");
    };
    let failed = commit.handle_sync_failed(sync_id, 5);
    assert_eq!(
        failed,
        CommitError::Failed {
            sync_id,
            segment_id: 1,
            errno: 5
        }
    );
    assert!(commit.is_failed());
    assert_eq!(commit.handle_append(&log.next(8), at(1)), Err(failed));
    assert_eq!(commit.handle_sync_done(sync_id, at(1)), Err(failed));
    assert_eq!(commit.poll_action(), None, "never retried");
    assert_eq!(commit.poll_durable(), None);
    assert_eq!(commit.poll_timeout(), None);
    assert_eq!(
        commit.handle_sync_failed(9, 1),
        failed,
        "the first failure stays"
    );
}

#[test]
fn inputs_out_of_order_are_refused() {
    let mut commit = GroupCommit::new(config(Durability::Batch), 1).unwrap();
    let mut log = Log::new();
    let first = log.next(8);
    commit.handle_append(&first, at(0)).unwrap();
    assert_eq!(
        commit.handle_append(&first, at(0)),
        Err(CommitError::SeqNotNext {
            expected: 2,
            got: 1
        })
    );
    let mut back = log.next(8);
    back.offset = 8;
    back.end_offset = 16;
    assert!(matches!(
        commit.handle_append(&back, at(0)),
        Err(CommitError::PositionRegressed { .. })
    ));
    assert_eq!(
        commit.handle_sync_done(7, at(0)),
        Err(CommitError::UnexpectedSyncId {
            expected: None,
            got: 7
        })
    );
}

#[test]
fn a_roll_closes_the_group_and_groups_are_bounded() {
    let mut commit = GroupCommit::new(
        CommitConfig {
            groups_pending_max: 2,
            ..config(Durability::Batch)
        },
        1,
    )
    .unwrap();
    let mut log = Log::new();
    commit.handle_append(&log.next(8), at(0)).unwrap();
    let (segment, end) = log.roll();
    commit.handle_seal(segment, end + 24, at(0)).unwrap();
    assert_eq!(
        commit.poll_action(),
        Some(Action::Sync {
            sync_id: 1,
            segment_id: 1,
            up_to_offset: 96
        }),
        "a sealed segment is synced at once, END included"
    );
    commit.handle_append(&log.next(8), at(1)).unwrap();
    assert!(commit.can_roll());
    log.roll();
    commit.handle_append(&log.next(8), at(2)).unwrap();
    assert!(!commit.can_roll());
    log.roll();
    assert_eq!(
        commit.handle_append(&log.next(8), at(3)),
        Err(CommitError::GroupsPendingFull { limit: 2 })
    );
    commit.handle_sync_done(1, at(4)).unwrap();
    assert_eq!(commit.poll_durable(), Some(1));
    // Segment 2's group is ready because segment 3 started.
    assert!(matches!(
        commit.poll_action(),
        Some(Action::Sync { segment_id: 2, .. })
    ));
}

#[test]
fn config_is_checked() {
    let bad = CommitConfig {
        groups_pending_max: 0,
        ..CommitConfig::default()
    };
    assert!(matches!(
        GroupCommit::new(bad, 1),
        Err(ConfigError::OutOfRange {
            field: "commit.groups_pending_max",
            ..
        })
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, roll: bool },
    Advance(u64),
    CompleteSync,
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..700, proptest::bool::weighted(0.08))
            .prop_map(|(len, roll)| Op::Append { len: len.next_multiple_of(8), roll }),
        2 => (0u64..300).prop_map(Op::Advance),
        2 => Just(Op::CompleteSync),
        1 => Just(Op::Timeout),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Batch),
        Just(Durability::Always),
        Just(Durability::None)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The machine against a model: durable never passes what completed syncs covered, nothing
    /// is durable in Batch/Always before a sync completes, at most one sync is in flight, and
    /// everything appended is durable once the syncs complete.
    #[test]
    fn group_commit_against_model(mode in durability(), ops in proptest::collection::vec(op(), 0..120)) {
        let mut commit = GroupCommit::new(config(mode), 1).unwrap();
        let mut log = Log::new();
        let mut now = 0u64;
        // (seq, segment, end offset) of every append.
        let mut appended: Vec<(u64, u64, usize)> = Vec::new();
        let mut in_flight: Option<(u64, u64, usize)> = None;
        let mut synced_model = 0u64;
        let mut durable_seen = 0u64;
        for op in ops {
            let mut completed = false;
            match op {
                Op::Append { len, roll } => {
                    if roll && commit.can_roll() {
                        let (segment, end) = log.roll();
                        commit.handle_seal(segment, end, at(now)).unwrap();
                    }
                    if !roll || commit.can_roll() {
                        let next = log.next(len);
                        commit.handle_append(&next, at(now)).unwrap();
                        appended.push((next.seq, next.segment_id, next.end_offset));
                    }
                }
                Op::Advance(us) => now += us,
                Op::CompleteSync => {
                    if let Some((sync_id, segment, up_to)) = in_flight.take() {
                        let covered = appended
                            .iter()
                            .filter(|(_, s, end)| *s == segment && *end <= up_to)
                            .map(|(seq, ..)| *seq)
                            .max()
                            .unwrap();
                        prop_assert!(covered > synced_model, "each sync covers new appends");
                        commit.handle_sync_done(sync_id, at(now)).unwrap();
                        synced_model = covered;
                        completed = true;
                    }
                }
                Op::Timeout => commit.handle_timeout(at(now)),
            }
            if let Some(durable) = commit.poll_durable() {
                prop_assert!(durable > durable_seen);
                prop_assert!(durable < log.seq, "durable beyond the appends");
                if mode == Durability::None {
                    prop_assert_eq!(durable, log.seq - 1);
                } else {
                    prop_assert!(completed, "durable without a sync done");
                    prop_assert!(durable <= synced_model);
                }
                durable_seen = durable;
            }
            if in_flight.is_none() {
                if let Some(Action::Sync { sync_id, segment_id, up_to_offset }) = commit.poll_action() {
                    prop_assert!(mode != Durability::None);
                    in_flight = Some((sync_id, segment_id, up_to_offset));
                }
            } else {
                prop_assert_eq!(commit.poll_action(), None, "two syncs in flight");
            }
            if mode == Durability::Always && in_flight.is_none() {
                prop_assert_eq!(commit.pending_groups(), 0, "Always leaves nothing waiting");
            }
        }
        // Let time pass and complete every sync: everything becomes durable.
        for _ in 0..64 {
            now += 1_000_000;
            commit.handle_timeout(at(now));
            if in_flight.is_none()
                && let Some(Action::Sync { sync_id, segment_id, up_to_offset }) = commit.poll_action()
            {
                in_flight = Some((sync_id, segment_id, up_to_offset));
            }
            if let Some((sync_id, ..)) = in_flight.take() {
                commit.handle_sync_done(sync_id, at(now)).unwrap();
            }
            if let Some(durable) = commit.poll_durable() {
                durable_seen = durable;
            }
        }
        prop_assert_eq!(durable_seen, log.seq - 1);
        prop_assert_eq!(commit.durable_seq(), log.seq - 1);
    }
}
