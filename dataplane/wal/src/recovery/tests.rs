use proptest::prelude::*;

use super::*;
use crate::record::{
    Body, MsgKey, RECORD_ALIGN, SegmentHeader, encode_end, encode_padding, encode_record,
    record_len,
};

const LEN: usize = 4096;
static FRAME: [u8; 1024] = {
    let mut frame = [0u8; 1024];
    let mut i = 0;
    while i < frame.len() {
        #[allow(clippy::cast_possible_truncation)]
        {
            frame[i] = (i * 7 + 3) as u8;
        }
        i += 1;
    }
    frame
};

fn header(segment_id: u64, prev_segment_id: u64, first_seq: u64) -> SegmentHeader {
    SegmentHeader {
        segment_id,
        prev_segment_id,
        first_seq,
        created_unix_us: 0,
        segment_len: 4096,
        log_id: 0,
    }
}

fn message(seq: u64, frame_len: usize) -> Body<'static> {
    Body::Message {
        key: MsgKey {
            src_node: 1,
            msg_id: seq,
        },
        frame: &FRAME[usize::try_from(seq % 256).unwrap()..][..frame_len],
    }
}

/// A segment `segment_id` holding records `first_seq..first_seq + count` of varied lengths;
/// `synced` gives each record's synced seq. Returns the image and each record's (start, end of
/// body).
fn segment(
    segment_id: u64,
    prev: u64,
    first_seq: u64,
    count: u64,
    synced: impl Fn(u64) -> u64,
) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut image = vec![0u8; LEN];
    header(segment_id, prev, first_seq)
        .encode(&mut image)
        .unwrap();
    let mut offset = SEGMENT_HEADER_LEN;
    let mut spans = Vec::new();
    for seq in first_seq..first_seq + count {
        let frame_len = usize::try_from(seq * 37 % 200).unwrap();
        let body = message(seq, frame_len);
        let Ok(end) = encode_record(&mut image, offset, segment_id, seq, synced(seq), &body) else {
            break;
        };
        spans.push((offset, offset + RECORD_HEADER_LEN + body.len()));
        offset = end;
    }
    (image, spans)
}

fn scan(image: &[u8], policy: TailPolicy) -> (Vec<u64>, Result<SegmentEnd, RecoveryError>) {
    let mut scanner = SegmentScanner::new(image, policy).unwrap();
    let seqs = scanner.by_ref().map(|scanned| scanned.record.seq).collect();
    (seqs, scanner.finish())
}

fn config(policy: TailPolicy) -> RecoveryConfig {
    RecoveryConfig { policy, log_id: 0 }
}

#[test]
fn clean_segment_yields_every_record() {
    let (image, spans) = segment(3, 0, 10, 6, |_| 0);
    let (seqs, end) = scan(&image, TailPolicy::Strict);
    assert_eq!(seqs, (10..16).collect::<Vec<_>>());
    let last_end = spans[5].1.next_multiple_of(RECORD_ALIGN);
    assert_eq!(
        end,
        Ok(SegmentEnd::Clean {
            offset: last_end,
            next_seq: 16,
            reason: CleanEnd::Unwritten
        })
    );
}

#[test]
fn end_record_and_padding() {
    let (mut image, spans) = segment(3, 0, 1, 2, |_| 0);
    let at = spans[1].1.next_multiple_of(RECORD_ALIGN);
    let at = encode_padding(&mut image, at, 3, 3, 48).unwrap();
    let at = encode_record(&mut image, at, 3, 3, 0, &message(3, 5)).unwrap();
    encode_end(&mut image, at, 3, 4, 0).unwrap();
    // Stale garbage after END is never looked at.
    image[at + 64..at + 128].fill(0x5A);
    let (seqs, end) = scan(&image, TailPolicy::Strict);
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        end,
        Ok(SegmentEnd::Clean {
            offset: at,
            next_seq: 4,
            reason: CleanEnd::EndRecord
        })
    );
}

/// Cuts the segment at every byte offset (everything after the cut is lost: zero, or stale
/// bytes) and checks the scanner stops at the first incomplete record with all earlier records
/// intact.
#[test]
fn torn_tail_at_every_byte_offset() {
    let (image, spans) = segment(4, 0, 100, 5, |seq| seq - 1);
    let stale = {
        // What a recycled file holds under the cut: records of an older generation (older
        // seqs, another segment id).
        let (old, _) = segment(2, 0, 1, 40, |_| 0);
        old
    };
    let last_end = spans[4].1;
    for tail in [&vec![0u8; LEN], &stale] {
        for cut in SEGMENT_HEADER_LEN..=last_end + 8 {
            let mut torn = image.clone();
            torn[cut..].copy_from_slice(&tail[cut..]);
            // A record survives when every byte the CRC covers is unchanged (stale bytes can
            // coincide with the lost ones).
            let complete = spans
                .iter()
                .take_while(|(start, end)| torn[*start..*end] == image[*start..*end])
                .count();
            let expected: Vec<u64> = (100..105).take(complete).collect();
            let expected_offset = spans
                .get(complete)
                .map_or(last_end.next_multiple_of(RECORD_ALIGN), |(start, _)| *start);
            for policy in [TailPolicy::Strict, TailPolicy::TruncateUnsynced] {
                let (seqs, end) = scan(&torn, policy);
                assert_eq!(seqs, expected, "cut {cut}");
                let end = end.unwrap_or_else(|error| panic!("cut {cut}: {error}"));
                assert_eq!(end.offset(), expected_offset, "cut {cut}");
                assert_eq!(end.next_seq(), 100 + complete as u64, "cut {cut}");
                let zero_header = torn[expected_offset..expected_offset + RECORD_HEADER_LEN]
                    .iter()
                    .all(|&b| b == 0);
                match end {
                    SegmentEnd::Clean { reason, .. } => {
                        assert!(zero_header, "cut {cut}: clean end over written bytes");
                        assert_eq!(reason, CleanEnd::Unwritten);
                    }
                    SegmentEnd::TornTail { discarded, .. } => {
                        assert!(!zero_header, "cut {cut}");
                        assert_eq!(discarded, None, "cut {cut}");
                    }
                }
                // The whole log recovers to the same point.
                let recovered = recover(&[&torn], &config(policy)).unwrap();
                assert_eq!(recovered.next_seq, 100 + complete as u64, "cut {cut}");
                let resume = recovered.resume.unwrap();
                assert_eq!(resume.write_offset, expected_offset);
                assert_eq!(resume.mode, ResumeMode::Append);
                assert_eq!(
                    recovered.truncated.is_some(),
                    matches!(end, SegmentEnd::TornTail { .. })
                );
            }
        }
    }
}

#[test]
fn flipped_bit_mid_segment_is_corruption() {
    let (image, spans) = segment(6, 0, 1, 6, |seq| seq - 1);
    let (start, body_end) = spans[2];
    for byte in start..body_end {
        let mut bad = image.clone();
        bad[byte] ^= 1 << (byte % 8);
        for policy in [TailPolicy::Strict, TailPolicy::TruncateUnsynced] {
            let (seqs, end) = scan(&bad, policy);
            assert_eq!(seqs, vec![1, 2], "byte {byte}");
            let Err(RecoveryError::Corruption {
                segment_id,
                offset,
                expected_seq,
                valid_after,
                ..
            }) = end
            else {
                panic!("byte {byte} {policy:?}: {end:?}");
            };
            assert_eq!((segment_id, offset, expected_seq), (6, start, 3));
            assert_eq!(valid_after.segment_id, 6);
            assert!(valid_after.offset > start);
            assert!(matches!(
                recover(&[&bad], &config(policy)),
                Err(RecoveryError::Corruption {
                    segment_id: 6,
                    offset,
                    ..
                }) if offset == start
            ));
        }
    }
}

#[test]
fn corruption_message_names_segment_and_offset() {
    let (mut image, spans) = segment(6, 0, 1, 4, |_| 0);
    image[spans[1].0 + 30] ^= 0xFF;
    let error = scan(&image, TailPolicy::Strict).1.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("segment 6"), "{text}");
    assert!(text.contains(&format!("offset {}", spans[1].0)), "{text}");
    assert!(text.contains("crc mismatch"), "{text}");
}

#[test]
fn unsynced_hole_is_truncated_only_under_truncate_unsynced() {
    // Nothing was synced when these records were written (synced seq 0): a hole among them is
    // what a power loss during the first sync leaves.
    let (image, spans) = segment(6, 0, 1, 6, |_| 0);
    let mut holed = image.clone();
    holed[spans[2].0..spans[3].0].fill(0);
    let (seqs, end) = scan(&holed, TailPolicy::Strict);
    assert_eq!(seqs, vec![1, 2]);
    assert!(matches!(
        end,
        Err(RecoveryError::Corruption {
            found: BadRecord::Unwritten,
            ..
        })
    ));
    let (seqs, end) = scan(&holed, TailPolicy::TruncateUnsynced);
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(
        end,
        Ok(SegmentEnd::TornTail {
            offset: spans[2].0,
            next_seq: 3,
            found: BadRecord::Unwritten,
            discarded: Some(Discarded {
                records: 3,
                first: RecordLocation {
                    segment_id: 6,
                    offset: spans[3].0,
                    seq: 4
                }
            })
        })
    );
    let recovered = recover(&[&holed], &config(TailPolicy::TruncateUnsynced)).unwrap();
    assert_eq!(recovered.next_seq, 3);
    assert_eq!(recovered.resume.unwrap().mode, ResumeMode::SealAndRoll);
    assert_eq!(recovered.truncated.unwrap().discarded_records, 3);

    // Record 5 was written after a sync covering seq 3: the hole is corruption of synced data.
    let (image, spans) = segment(6, 0, 1, 6, |seq| if seq >= 5 { 3 } else { 0 });
    let mut holed = image.clone();
    holed[spans[2].0..spans[3].0].fill(0);
    let (_, end) = scan(&holed, TailPolicy::TruncateUnsynced);
    let Err(RecoveryError::Corruption { valid_after, .. }) = end else {
        panic!("{end:?}");
    };
    assert_eq!(valid_after.seq, 5, "the record that proves the sync");
}

#[test]
fn stale_records_of_a_recycled_segment_are_not_returned() {
    let (mut image, _) = segment(5, 0, 1, 40, |_| 0);
    let old = image.clone();
    // The file is recycled as segment 9: new header, two new records, old bytes after them.
    header(9, 0, 100).encode(&mut image).unwrap();
    let at = encode_record(&mut image, 64, 9, 100, 0, &message(100, 3)).unwrap();
    let at = encode_record(&mut image, at, 9, 101, 0, &message(101, 300)).unwrap();
    for policy in [TailPolicy::Strict, TailPolicy::TruncateUnsynced] {
        let (seqs, end) = scan(&image, policy);
        assert_eq!(seqs, vec![100, 101]);
        assert_eq!(end.unwrap().offset(), at);
        let recovered = recover(&[&image], &config(policy)).unwrap();
        assert_eq!(recovered.next_seq, 102);
    }
    // Same bytes, new id, nothing new written: nothing comes back.
    let mut recycled = old.clone();
    header(9, 0, 500).encode(&mut recycled).unwrap();
    let (seqs, end) = scan(&recycled, TailPolicy::Strict);
    assert!(seqs.is_empty());
    assert!(matches!(
        end,
        Ok(SegmentEnd::TornTail {
            offset: 64,
            next_seq: 500,
            discarded: None,
            ..
        })
    ));
}

fn images<'a>(segments: &'a [&'a Vec<u8>]) -> Vec<&'a [u8]> {
    segments.iter().map(|image| image.as_slice()).collect()
}

#[test]
fn recover_walks_the_chain_and_classifies_files() {
    let (s5, _) = segment(5, 4, 1, 3, |_| 0);
    let (s6, _) = segment(6, 5, 4, 3, |_| 0);
    let (mut s7, spans7) = segment(7, 6, 7, 2, |_| 0);
    let (orphan, _) = segment(2, 1, 1, 3, |_| 0);
    let zero = vec![0u8; LEN];
    // Segment 7's END was written: resume by rolling.
    let end7 = spans7[1].1.next_multiple_of(RECORD_ALIGN);
    encode_end(&mut s7, end7, 7, 9, 0).unwrap();
    let all = [&s7, &zero, &orphan, &s5, &s6];
    let images = images(&all);
    let recovered = recover(&images, &config(TailPolicy::Strict)).unwrap();
    assert_eq!(
        recovered
            .live
            .iter()
            .map(|segment| (segment.segment_id, segment.slot))
            .collect::<Vec<_>>(),
        vec![(5, 3), (6, 4), (7, 0)]
    );
    assert_eq!(recovered.free_slots, vec![1]);
    assert_eq!(recovered.recycle_slots, vec![2]);
    assert_eq!(recovered.next_seq, 9);
    assert_eq!(recovered.next_segment_id, 7 + SEGMENT_ID_RESTART_GAP);
    assert_eq!(
        recovered.resume,
        Some(Resume {
            slot: 0,
            segment_id: 7,
            write_offset: end7,
            mode: ResumeMode::Roll
        })
    );
    assert_eq!(recovered.truncated, None);
    let events: Vec<_> = recovered.replay(&images).collect();
    let mut seqs = Vec::new();
    let mut opened = Vec::new();
    for event in events {
        match event {
            ReplayEvent::Segment { segment_id, .. } => opened.push(segment_id),
            ReplayEvent::Record { record, .. } => seqs.push(record.seq),
        }
    }
    assert_eq!(opened, vec![5, 6, 7]);
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[test]
fn empty_log_starts_fresh() {
    let zero = vec![0u8; LEN];
    let recovered = recover(&[&zero, &zero], &config(TailPolicy::Strict)).unwrap();
    assert_eq!(recovered.next_seq, 1);
    assert_eq!(recovered.resume, None);
    assert_eq!(recovered.free_slots, vec![0, 1]);
    assert_eq!(recovered.next_segment_id, SEGMENT_ID_RESTART_GAP);
}

#[test]
fn torn_tail_of_an_older_segment_is_fine_when_the_next_continues() {
    // Segment 5's last record is torn, but segment 6 starts right where 5's valid records end:
    // the torn bytes were never needed (e.g. a roll after an earlier recovery).
    let (mut s5, spans5) = segment(5, 0, 1, 4, |_| 0);
    s5[spans5[3].0 + 2] ^= 0x10;
    let (s6, _) = segment(6, 5, 4, 2, |_| 0);
    let all = [&s5, &s6];
    let recovered = recover(&images(&all), &config(TailPolicy::Strict)).unwrap();
    assert_eq!(recovered.next_seq, 6);
    assert_eq!(recovered.truncated, None);
}

#[test]
fn gaps_between_segments() {
    let (s5, spans5) = segment(5, 0, 1, 4, |_| 0);
    let mut torn5 = s5.clone();
    torn5[spans5[3].0..].fill(0);
    // Segment 6 carries seq 5.. but seq 4 was lost with 5's tail.
    let (s6, _) = segment(6, 5, 5, 2, |_| 0);
    let all = [&torn5, &s6];
    let images = images(&all);
    assert_eq!(
        recover(&images, &config(TailPolicy::Strict)),
        Err(RecoveryError::SequenceGap {
            segment_id: 5,
            end_offset: spans5[3].0,
            expected_seq: 4,
            next_segment_id: 6,
            next_first_seq: 5,
            valid_after: None
        })
    );
    let recovered = recover(&images, &config(TailPolicy::TruncateUnsynced)).unwrap();
    assert_eq!(recovered.next_seq, 4);
    assert_eq!(recovered.recycle_slots, vec![1]);
    assert_eq!(recovered.resume.unwrap().segment_id, 5);
    assert_eq!(recovered.resume.unwrap().mode, ResumeMode::SealAndRoll);
    let truncation = recovered.truncated.unwrap();
    assert_eq!(truncation.discarded_segments, 1);
    assert_eq!(truncation.offset, spans5[3].0);

    // A record of segment 6 was written after seq 4 was synced: corruption, not truncation.
    let (s6, spans6) = segment(6, 5, 5, 2, |seq| if seq == 6 { 4 } else { 0 });
    let all = [&torn5, &s6];
    let Err(RecoveryError::SequenceGap {
        valid_after: Some(proof),
        ..
    }) = recover(&images_of(&all), &config(TailPolicy::TruncateUnsynced))
    else {
        panic!("a proven gap must be an error");
    };
    assert_eq!(
        (proof.segment_id, proof.offset, proof.seq),
        (6, spans6[1].0, 6)
    );
}

fn images_of<'a>(segments: &'a [&'a Vec<u8>]) -> Vec<&'a [u8]> {
    images(segments)
}

#[test]
fn inconsistent_files_are_errors() {
    let (s5, _) = segment(5, 0, 1, 4, |_| 0);
    let (overlap, _) = segment(6, 5, 3, 2, |_| 0);
    let all = [&s5, &overlap];
    assert!(matches!(
        recover(&images(&all), &config(TailPolicy::Strict)),
        Err(RecoveryError::SequenceOverlap {
            segment_id: 5,
            expected_seq: 5,
            next_segment_id: 6,
            next_first_seq: 3
        })
    ));
    let all = [&s5, &s5];
    assert!(matches!(
        recover(&images(&all), &config(TailPolicy::Strict)),
        Err(RecoveryError::DuplicateSegmentId {
            segment_id: 5,
            first_slot: 0,
            second_slot: 1
        })
    ));
    assert!(matches!(
        recover(
            &[&s5],
            &RecoveryConfig {
                policy: TailPolicy::Strict,
                log_id: 3
            }
        ),
        Err(RecoveryError::LogIdMismatch {
            expected: 3,
            found: 0,
            ..
        })
    ));
    assert!(matches!(
        recover(&[&s5[..LEN - 8]], &config(TailPolicy::Strict)),
        Err(RecoveryError::SegmentLenMismatch {
            header_len: 4096,
            image_len: 4088,
            ..
        })
    ));
    let mut bad = s5.clone();
    bad[9] ^= 1;
    assert!(matches!(
        recover(&[&bad], &config(TailPolicy::Strict)),
        Err(RecoveryError::BadSegmentHeader { slot: 0, .. })
    ));
}

#[test]
fn checksummed_but_invalid_records_are_errors_even_at_the_tail() {
    let (mut image, spans) = segment(5, 0, 1, 2, |_| 0);
    let at = spans[1].1.next_multiple_of(RECORD_ALIGN);
    // A valid record with seq 9 where 3 is expected.
    encode_record(&mut image, at, 5, 9, 0, &message(9, 1)).unwrap();
    assert_eq!(
        scan(&image, TailPolicy::TruncateUnsynced).1,
        Err(RecoveryError::SequenceMismatch {
            segment_id: 5,
            offset: at,
            expected: 3,
            found: 9
        })
    );
}

#[test]
fn scanner_start_past_the_end_is_full() {
    let (image, _) = segment(3, 0, 1, 2, |_| 0);
    for start in [LEN, LEN + 5, usize::MAX - 3, usize::MAX] {
        let scanner = SegmentScanner::with_start(&image, 3, 1, start, TailPolicy::Strict);
        assert!(matches!(
            scanner.finish(),
            Ok(SegmentEnd::Clean {
                reason: CleanEnd::Full,
                ..
            })
        ));
    }
}

fn body_strategy() -> impl Strategy<Value = (u8, u64, u64, usize)> {
    (0u8..6, any::<u64>(), 1u64..1 << 40, 0usize..512)
}

fn make_body(kind: u8, node: u64, id: u64, frame_len: usize) -> Body<'static> {
    let key = MsgKey {
        src_node: node,
        msg_id: id,
    };
    let frame = &FRAME[..frame_len];
    match kind {
        0 => Body::Message { key, frame },
        1 => Body::Inbound { key, frame },
        2 => Body::Delivered { key },
        3 => Body::Acked { key },
        4 => Body::DedupCheckpoint { snapshot: frame },
        _ => Body::MsgIdReservation(
            crate::msg_id::Reservation::new(id, id + 1 + u64::try_from(frame_len).unwrap())
                .unwrap(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever is encoded comes back, in order, and the segment ends where encoding stopped.
    #[test]
    fn encode_scan_round_trip(
        segment_id in 1u64..u64::MAX,
        first_seq in 1u64..1 << 60,
        bodies in proptest::collection::vec(body_strategy(), 0..40),
    ) {
        let mut image = vec![0u8; LEN];
        let mut head = header(segment_id, 0, first_seq);
        head.segment_id = segment_id;
        head.encode(&mut image).unwrap();
        let mut offset = SEGMENT_HEADER_LEN;
        let mut written = Vec::new();
        for (i, (kind, node, id, frame_len)) in bodies.into_iter().enumerate() {
            let body = make_body(kind, node, id, frame_len);
            let seq = first_seq + i as u64;
            match encode_record(&mut image, offset, segment_id, seq, seq - 1, &body) {
                Ok(next) => {
                    prop_assert_eq!(next - offset, record_len(body.len()));
                    written.push((offset, seq, body));
                    offset = next;
                }
                Err(crate::record::EncodeError::DoesNotFit { .. }) => break,
                Err(other) => return Err(TestCaseError::fail(other.to_string())),
            }
        }
        let mut scanner = SegmentScanner::new(&image, TailPolicy::Strict).unwrap();
        let read: Vec<_> = scanner.by_ref().collect();
        prop_assert_eq!(read.len(), written.len());
        for (scanned, (offset, seq, body)) in read.iter().zip(&written) {
            prop_assert_eq!(scanned.offset, *offset);
            prop_assert_eq!(scanned.record.seq, *seq);
            prop_assert_eq!(scanned.record.body, *body);
            prop_assert_eq!(scanned.record.synced_seq, (*seq > 1).then(|| seq - 1));
        }
        let end = scanner.finish().unwrap();
        prop_assert_eq!(end.offset(), offset);
        prop_assert_eq!(end.next_seq(), first_seq + written.len() as u64);
    }

    /// Random bytes never panic any parser, as a segment, as records, or as a log.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..9000)) {
        let _ = fuzz_scan(&data);
    }

    /// Random bytes after a valid header and a few records: the scanner ends without panicking,
    /// and every record it returns was one we wrote.
    #[test]
    fn random_tail_after_valid_records(
        count in 0u64..8,
        cut in 64usize..LEN,
        garbage in proptest::collection::vec(any::<u8>(), LEN),
    ) {
        let (mut image, spans) = segment(3, 0, 1, count, |_| 0);
        let cut = cut.next_multiple_of(8).min(LEN);
        image[cut..].copy_from_slice(&garbage[cut..]);
        for policy in [TailPolicy::Strict, TailPolicy::TruncateUnsynced] {
            let mut scanner = SegmentScanner::new(&image, policy).unwrap();
            let seqs: Vec<u64> = scanner.by_ref().map(|r| r.record.seq).collect();
            let complete = spans.iter().take_while(|(_, end)| *end <= cut).count();
            let expected: Vec<u64> = (1..=complete as u64).collect();
            prop_assert_eq!(seqs, expected);
            let _ = scanner.finish();
            let _ = recover(&[&image], &config(policy));
        }
    }
}
