//! The `file` backend on real files in a tempdir, on real glommio executors: restart round
//! trip, dedup and msg_ids across restarts, corruption and torn tails, durability modes.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use mesh_storage::{
    DurabilityMode, FileConfig, FileStorage, Inbound, MsgKey, RecoveredState, Storage, StorageError,
};

fn config(dir: &std::path::Path, mode: DurabilityMode) -> FileConfig {
    FileConfig::new(dir.join("wal"), 0)
        .with_segment_len(64 << 10)
        .with_segments(8)
        .with_mode(mode)
}

fn frame(n: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|index| (n * 7 + index).to_le_bytes()[0])
        .collect()
}

fn out_key(msg_id: u64) -> MsgKey {
    MsgKey {
        src_node: 1,
        msg_id,
    }
}

fn in_key(msg_id: u64) -> MsgKey {
    MsgKey {
        src_node: 9,
        msg_id,
    }
}

#[test]
fn round_trip_recovers_exactly_the_unsettled() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), DurabilityMode::Batch);
    let first = config.clone();
    let (ids, expected_out, expected_in) = common::run(move || async move {
        let storage = FileStorage::open(first).await.unwrap();
        assert_eq!(storage.take_recovered(), RecoveredState::default());
        let mut ids = Vec::new();
        let mut expected_out = Vec::new();
        let mut last = None;
        // Enough bytes to roll over several 64 KiB segments.
        for n in 0..600_u64 {
            let msg_id = storage.allocate_msg_id().unwrap();
            ids.push(msg_id);
            let body = frame(n, 100 + usize::try_from(n % 50).unwrap());
            last = Some(storage.append_outbound(out_key(msg_id), &body).unwrap());
            if n % 3 == 0 {
                last = Some(storage.mark_settled(out_key(msg_id)).unwrap());
            } else {
                expected_out.push((out_key(msg_id), body));
            }
        }
        let mut expected_in = Vec::new();
        for n in 1..=200_u64 {
            let body = frame(n + 1000, 64);
            match storage.append_inbound(in_key(n), &body).unwrap() {
                Inbound::New(ticket) => last = Some(ticket),
                Inbound::Duplicate(_) => panic!("first arrival of {n} reported duplicate"),
            }
            assert!(matches!(
                storage.append_inbound(in_key(n), &body).unwrap(),
                Inbound::Duplicate(_)
            ));
            if n % 2 == 0 {
                last = Some(storage.mark_acked(in_key(n)).unwrap());
            } else {
                expected_in.push((in_key(n), body));
            }
        }
        storage.wait_durable(last.unwrap()).await.unwrap();
        assert!(storage.live_segments() > 1, "the test must roll segments");
        // Drop without close: everything reported durable must survive.
        drop(storage);
        (ids, expected_out, expected_in)
    });

    let second = config.clone();
    let ids_after = common::run(move || async move {
        let storage = FileStorage::open(second).await.unwrap();
        let recovered = storage.take_recovered();
        let outbound: Vec<(MsgKey, Vec<u8>)> = recovered
            .outbound
            .into_iter()
            .map(|message| (message.key, message.frame))
            .collect();
        let inbound: Vec<(MsgKey, Vec<u8>)> = recovered
            .inbound
            .into_iter()
            .map(|message| (message.key, message.frame))
            .collect();
        assert_eq!(outbound, expected_out);
        assert_eq!(inbound, expected_in);
        assert!(storage.take_recovered().outbound.is_empty());
        // Dedup survives the restart: acked and unacked ones alike.
        for n in 1..=200_u64 {
            assert!(storage.is_duplicate(in_key(n)), "inbound {n} forgotten");
            assert!(matches!(
                storage.append_inbound(in_key(n), b"again").unwrap(),
                Inbound::Duplicate(_)
            ));
        }
        assert!(matches!(
            storage.append_inbound(in_key(201), b"new").unwrap(),
            Inbound::New(_)
        ));
        let mut after = Vec::new();
        for _ in 0..100 {
            after.push(storage.allocate_msg_id().unwrap());
        }
        storage.close().await.unwrap();
        after
    });
    let before: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(before.len(), ids.len());
    let max_before = *before.last().unwrap();
    assert!(
        ids_after
            .iter()
            .all(|id| *id > max_before && !before.contains(id))
    );

    // A third start sees the same state plus the new inbound message.
    common::run(move || async move {
        let storage = FileStorage::open(config).await.unwrap();
        let recovered = storage.take_recovered();
        assert_eq!(recovered.inbound.last().unwrap().key, in_key(201));
        assert!(recovered.truncated.is_none());
        storage.close().await.unwrap();
    });
}

#[test]
fn settled_segments_are_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), DurabilityMode::Batch);
    common::run(move || async move {
        let storage = FileStorage::open(config).await.unwrap();
        // Far more than 8 segments of 64 KiB: only recycling lets this finish.
        let body = vec![0xA5; 1000];
        let mut last = None;
        for _ in 0..2000 {
            let msg_id = storage.allocate_msg_id().unwrap();
            let ticket = loop {
                match storage.append_outbound(out_key(msg_id), &body) {
                    Ok(ticket) => break ticket,
                    Err(error) if error.is_busy() => storage.wait_progress().await.unwrap(),
                    Err(error) => panic!("{error}"),
                }
            };
            storage.wait_durable(ticket).await.unwrap();
            last = Some(loop {
                match storage.mark_settled(out_key(msg_id)) {
                    Ok(ticket) => break ticket,
                    Err(error) if error.is_busy() => storage.wait_progress().await.unwrap(),
                    Err(error) => panic!("{error}"),
                }
            });
        }
        storage.wait_durable(last.unwrap()).await.unwrap();
        assert!(storage.live_segments() <= 8);
        storage.close().await.unwrap();
    });
}

/// Writes `count` outbound records of 144 bytes each (no padding), each synced before the
/// next is written, into a fresh log; returns the first segment file's path.
fn write_synced_records(dir: &std::path::Path, count: u64) -> PathBuf {
    let config = config(dir, DurabilityMode::Batch);
    common::run(move || async move {
        let storage = FileStorage::open(config).await.unwrap();
        let path = storage.segment_paths()[0].clone();
        for n in 0..count {
            let ticket = storage
                .append_outbound(out_key(1_000 + n), &frame(n, 104))
                .unwrap();
            storage.wait_durable(ticket).await.unwrap();
        }
        storage.close().await.unwrap();
        path
    })
}

/// Offset of the `index`-th outbound record written by [`write_synced_records`]: the segment
/// header (64 bytes), the msg_id reservation record (24 + 16) and `index` records of 144.
fn record_offset(index: usize) -> usize {
    64 + 40 + 144 * index
}

#[test]
fn flipped_bit_in_synced_data_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_synced_records(dir.path(), 50);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = record_offset(20);
    bytes[offset + 60] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let config = config(dir.path(), DurabilityMode::Batch);
    let error = common::run(move || async move {
        match FileStorage::open(config).await {
            Ok(_) => panic!("a corrupt log must not open"),
            Err(error) => error.to_string() + "\n" + &format!("{error:?}"),
        }
    });
    assert!(error.contains("Corruption"), "{error}");
    assert!(error.contains(&format!("offset: {offset}")), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");

    // The same, as a value.
    let config = crate::config(dir.path(), DurabilityMode::Batch);
    let (found_path, found_offset) = common::run(move || async move {
        match FileStorage::open(config).await {
            Err(StorageError::Corruption { path, offset, .. }) => (path, offset),
            other => panic!("expected corruption, got {other:?}"),
        }
    });
    assert_eq!(found_path, path);
    assert_eq!(found_offset, offset);
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_synced_records(dir.path(), 10);
    let mut bytes = std::fs::read(&path).unwrap();
    // Tear the last record: its second half never reached the disk.
    let last = record_offset(9);
    bytes[last + 72..last + 144].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let config = config(dir.path(), DurabilityMode::Batch);
    common::run(move || async move {
        let storage = FileStorage::open(config).await.unwrap();
        let recovered = storage.take_recovered();
        assert_eq!(recovered.outbound.len(), 9);
        let truncated = recovered.truncated.expect("truncation reported");
        assert_eq!(truncated.offset, last);
        // The log continues past the truncation.
        let ticket = storage.append_outbound(out_key(5_000), b"after").unwrap();
        storage.wait_durable(ticket).await.unwrap();
        storage.close().await.unwrap();
    });
}

#[test]
fn batch_reports_durable_only_after_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), DurabilityMode::Batch);
    config.wal.commit.sync_deadline_us = 30_000;
    config.wal.commit.group_bytes_max = 1 << 30;
    common::run(move || async move {
        let storage = FileStorage::open(config).await.unwrap();
        let syncs_before = storage.syncs_completed();
        let ticket = storage.append_outbound(out_key(1), b"grouped").unwrap();
        assert!(storage.durable() < ticket);
        // Well inside the 30 ms deadline: the group is not synced yet, so not durable.
        glommio::timer::sleep(Duration::from_millis(2)).await;
        assert!(storage.durable() < ticket);
        assert_eq!(storage.syncs_completed(), syncs_before);
        let second = storage.append_outbound(out_key(2), b"same group").unwrap();
        storage.wait_durable(ticket).await.unwrap();
        // One sync covered both.
        assert!(storage.durable() >= second);
        assert_eq!(storage.syncs_completed(), syncs_before + 1);
        storage.close().await.unwrap();
    });
}

#[test]
fn always_syncs_each_append_and_none_syncs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let always = config(dir.path(), DurabilityMode::Always);
    common::run(move || async move {
        let storage = FileStorage::open(always).await.unwrap();
        assert_eq!(storage.mode(), DurabilityMode::Always);
        for n in 0..5 {
            let before = storage.syncs_completed();
            let ticket = storage.append_outbound(out_key(10 + n), b"always").unwrap();
            assert!(storage.durable() < ticket);
            storage.wait_durable(ticket).await.unwrap();
            assert_eq!(storage.syncs_completed(), before + 1);
        }
        storage.close().await.unwrap();
    });
    let other = tempfile::tempdir().unwrap();
    let none = config(other.path(), DurabilityMode::None);
    common::run(move || async move {
        let storage = FileStorage::open(none).await.unwrap();
        let ticket = storage.append_outbound(out_key(1), b"none").unwrap();
        assert!(storage.durable() >= ticket);
        glommio::timer::sleep(Duration::from_millis(1)).await;
        assert_eq!(storage.syncs_completed(), 0);
        storage.close().await.unwrap();
    });
}

#[test]
fn close_ends_when_the_log_is_full_of_unsettled_records() {
    // Nothing is ever settled: once the chain is long enough the driver relocates the oldest
    // segment's records, which fills the head as fast as the recycle frees the tail. Close
    // must still sync what was appended and end.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), DurabilityMode::None);
    config.wal.segments.entries_max = 1 << 16;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        common::run(move || async move {
            let storage = FileStorage::open(config).await.unwrap();
            let frame = frame(1, 1000);
            for _ in 0..2_000 {
                let Ok(msg_id) = storage.allocate_msg_id() else {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                if storage.append_outbound(out_key(msg_id), &frame).is_err() {
                    break;
                }
                futures_lite::future::yield_now().await;
            }
            storage.close().await.unwrap();
        });
        done_tx.send(()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "close did not end"
    );
}
