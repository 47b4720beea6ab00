use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::msg_id::partition_first;

fn window(sources_max: u32, window_len: u32) -> DedupWindow {
    DedupWindow::new(DedupConfig {
        sources_max,
        window_len,
        hash_seed: 7,
    })
    .unwrap()
}

#[test]
fn verdicts_around_the_window() {
    let mut dedup = window(4, 128);
    assert_eq!(dedup.check_and_insert(1, 1000), Ok(Verdict::New));
    assert_eq!(dedup.check_and_insert(1, 1000), Ok(Verdict::Duplicate));
    assert_eq!(
        dedup.check_and_insert(1, 990),
        Ok(Verdict::New),
        "out of order, in window"
    );
    assert_eq!(dedup.check_and_insert(1, 990), Ok(Verdict::Duplicate));
    assert_eq!(dedup.check_and_insert(1, 1000 - 127), Ok(Verdict::New));
    assert_eq!(dedup.check_and_insert(1, 1000 - 128), Ok(Verdict::TooOld));
    assert_eq!(dedup.check_and_insert(1, 1100), Ok(Verdict::New));
    assert_eq!(
        dedup.check_and_insert(1, 990),
        Ok(Verdict::Duplicate),
        "still in window"
    );
    assert_eq!(dedup.check_and_insert(1, 1000), Ok(Verdict::Duplicate));
    assert_eq!(
        dedup.check_and_insert(1, 1050),
        Ok(Verdict::New),
        "slot cleared on advance"
    );
    assert_eq!(dedup.check_and_insert(1, 5000), Ok(Verdict::New));
    assert_eq!(
        dedup.check_and_insert(1, 4999),
        Ok(Verdict::New),
        "whole ring cleared"
    );
    assert_eq!(dedup.check_and_insert(1, 1100), Ok(Verdict::TooOld));
    assert_eq!(dedup.high_water_mark(1, 0), Some(5000));
    assert_eq!(
        dedup.check_and_insert(2, 0),
        Ok(Verdict::New),
        "msg_id 0 near nothing"
    );
    assert_eq!(dedup.check_and_insert(2, 0), Ok(Verdict::Duplicate));
}

#[test]
fn partitions_are_separate_streams() {
    let mut dedup = window(4, 64);
    let core0 = partition_first(0) + 10;
    let core1 = partition_first(1) + 3;
    assert_eq!(dedup.check_and_insert(9, core1), Ok(Verdict::New));
    assert_eq!(
        dedup.check_and_insert(9, core0),
        Ok(Verdict::New),
        "not too old"
    );
    assert_eq!(dedup.check_and_insert(9, core0), Ok(Verdict::Duplicate));
    assert_eq!(dedup.sources(), 2);
}

#[test]
fn sources_are_bounded() {
    let mut dedup = window(2, 64);
    dedup.check_and_insert(1, 1).unwrap();
    dedup.check_and_insert(2, 1).unwrap();
    assert_eq!(
        dedup.check_and_insert(3, 1),
        Err(DedupError::SourcesFull { limit: 2 })
    );
    assert_eq!(
        dedup.check_and_insert(1, 2),
        Ok(Verdict::New),
        "known sources go on"
    );
}

#[test]
fn snapshot_round_trip_is_canonical() {
    let mut dedup = window(8, 128);
    for (node, id) in [
        (3, 500),
        (1, 7),
        (3, 450),
        (2, partition_first(4) + 9),
        (1, 6),
    ] {
        dedup.check_and_insert(node, id).unwrap();
    }
    let mut bytes = Vec::new();
    dedup.encode_snapshot(&mut bytes);
    assert_eq!(bytes.len(), dedup.snapshot_len());
    assert_eq!(&bytes[..4], b"MDDP");
    let mut restored = window(8, 128);
    restored.restore(&bytes).unwrap();
    let mut again = Vec::new();
    restored.encode_snapshot(&mut again);
    assert_eq!(bytes, again, "same state, same bytes");
    for (node, id) in [(3, 500), (1, 7), (3, 450), (1, 6)] {
        assert_eq!(restored.check_and_insert(node, id), Ok(Verdict::Duplicate));
    }
    assert_eq!(restored.check_and_insert(3, 449), Ok(Verdict::New));
    assert_eq!(restored.check_and_insert(3, 372), Ok(Verdict::TooOld));
}

#[test]
fn snapshot_of_another_window_length_converts() {
    let mut wide = window(4, 256);
    for id in [1000, 900, 990] {
        wide.check_and_insert(5, id).unwrap();
    }
    let mut bytes = Vec::new();
    wide.encode_snapshot(&mut bytes);
    let narrow = DedupWindow::from_snapshot(
        DedupConfig {
            sources_max: 4,
            window_len: 64,
            hash_seed: 1,
        },
        &bytes,
    )
    .unwrap();
    let mut narrow = narrow;
    assert_eq!(narrow.check_and_insert(5, 990), Ok(Verdict::Duplicate));
    assert_eq!(narrow.check_and_insert(5, 900), Ok(Verdict::TooOld));
    assert_eq!(narrow.check_and_insert(5, 991), Ok(Verdict::New));
}

#[test]
fn bad_snapshots_are_typed_errors() {
    let mut dedup = window(2, 64);
    dedup.check_and_insert(1, 100).unwrap();
    dedup.check_and_insert(2, 100).unwrap();
    let mut good = Vec::new();
    dedup.encode_snapshot(&mut good);
    let mut target = window(2, 64);
    let check = |bytes: &[u8], target: &mut DedupWindow| target.restore(bytes);
    assert_eq!(
        check(&good[..3], &mut target),
        Err(DedupError::SnapshotTooShort { len: 3, needed: 16 })
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        check(&bad, &mut target),
        Err(DedupError::SnapshotMagic { .. })
    ));
    let mut bad = good.clone();
    bad[4] = 9;
    assert!(matches!(
        check(&bad, &mut target),
        Err(DedupError::SnapshotVersion { found: 9, .. })
    ));
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&100u32.to_le_bytes());
    assert!(matches!(
        check(&bad, &mut target),
        Err(DedupError::SnapshotWindow { found: 100, .. })
    ));
    assert_eq!(
        check(&good[..good.len() - 1], &mut target),
        Err(DedupError::SnapshotLen {
            expected: good.len(),
            found: good.len() - 1
        })
    );
    let mut small = window(1, 64);
    assert_eq!(
        small.restore(&good),
        Err(DedupError::SnapshotTooManySources { count: 2, limit: 1 })
    );
    // Swap the two sources: unsorted.
    let entry = 16 + 8;
    let mut bad = good.clone();
    let (first, second) = bad[16..].split_at_mut(entry);
    first.swap_with_slice(&mut second[..entry]);
    assert_eq!(
        check(&bad, &mut target),
        Err(DedupError::SnapshotUnsorted { index: 1 })
    );
    let mut bad = good.clone();
    bad[16 + 16..16 + 24].fill(0);
    assert_eq!(
        check(&bad, &mut target),
        Err(DedupError::SnapshotHwmNotSet { index: 0 })
    );
    assert_eq!(target.sources(), 0, "a refused snapshot changes nothing");
    target.restore(&good).unwrap();
    assert_eq!(target.sources(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Against a model that remembers every id: inside the window the answers agree; below it
    /// the answer is TooOld.
    #[test]
    fn window_against_hash_set(
        inserts in proptest::collection::vec((0u64..3, 0u64..600), 0..400),
    ) {
        const WINDOW: u64 = 128;
        let mut dedup = window(3, 128);
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut hwm: HashMap<u64, u64> = HashMap::new();
        for (node, id) in inserts {
            let peek = dedup.check(node, id);
            let verdict = dedup.check_and_insert(node, id).unwrap();
            prop_assert_eq!(peek, verdict);
            let expected = match hwm.get(&node) {
                Some(&mark) if id <= mark && mark - id >= WINDOW => Verdict::TooOld,
                _ if seen.contains(&(node, id)) => Verdict::Duplicate,
                _ => Verdict::New,
            };
            prop_assert_eq!(verdict, expected, "node {} id {}", node, id);
            if expected == Verdict::New {
                seen.insert((node, id));
                let mark = hwm.entry(node).or_insert(id);
                *mark = (*mark).max(id);
            }
        }
        // A snapshot restores the same answers.
        let mut bytes = Vec::new();
        dedup.encode_snapshot(&mut bytes);
        let mut restored = window(3, 128);
        restored.restore(&bytes).unwrap();
        for node in 0..3 {
            for id in 0..600 {
                prop_assert_eq!(restored.check(node, id), dedup.check(node, id));
            }
        }
    }

    /// Arbitrary bytes never panic the snapshot decoder.
    #[test]
    fn random_snapshots_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), valid_header in any::<bool>()) {
        if valid_header && bytes.len() >= 16 {
            bytes[..4].copy_from_slice(b"MDDP");
            bytes[4..8].copy_from_slice(&[1, 0, 0, 0]);
            bytes[8..12].copy_from_slice(&64u32.to_le_bytes());
            let count = u32::try_from((bytes.len() - 16) / 24).unwrap();
            bytes[12..16].copy_from_slice(&count.to_le_bytes());
            bytes.truncate(16 + 24 * count as usize);
        }
        let mut dedup = window(64, 64);
        let _ = dedup.restore(&bytes);
    }
}
