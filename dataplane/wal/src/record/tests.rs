use super::*;

const SEG: u64 = 7;

fn segment() -> Vec<u8> {
    vec![0u8; SEGMENT_LEN_MIN]
}

#[test]
fn header_round_trip_and_checks() {
    let mut seg = segment();
    let header = SegmentHeader {
        segment_id: 9,
        prev_segment_id: 4,
        first_seq: 100,
        created_unix_us: 1_700_000_000_000_000,
        segment_len: 4096,
        log_id: 3,
    };
    header.encode(&mut seg).unwrap();
    assert_eq!(&seg[0..4], b"MWAL");
    assert_eq!(SegmentHeader::decode(&seg), Ok(header));
    assert!(!SegmentHeader::is_zeroed(&seg));
    seg[20] ^= 1;
    assert!(matches!(
        SegmentHeader::decode(&seg),
        Err(HeaderError::ChecksumMismatch { .. })
    ));
    assert_eq!(
        SegmentHeader::decode(&seg[..10]),
        Err(HeaderError::TooShort {
            len: 10,
            needed: 64
        })
    );
    let bad = SegmentHeader {
        prev_segment_id: 9,
        ..header
    };
    assert_eq!(
        bad.encode(&mut seg),
        Err(EncodeError::Header(HeaderError::PrevNotBelow {
            segment_id: 9,
            prev: 9
        }))
    );
    let bad = SegmentHeader {
        segment_len: 5000,
        ..header
    };
    assert_eq!(
        bad.encode(&mut seg),
        Err(EncodeError::Header(HeaderError::SegmentLen { len: 5000 }))
    );
    assert!(SegmentHeader::is_zeroed(&segment()));
}

#[test]
fn encode_decode_every_kind() {
    let mut seg = segment();
    let key = MsgKey {
        src_node: 11,
        msg_id: 12,
    };
    let bodies = [
        Body::Message {
            key,
            frame: b"hello",
        },
        Body::Inbound { key, frame: &[] },
        Body::Delivered { key },
        Body::Acked { key },
        Body::DedupCheckpoint { snapshot: b"snap" },
        Body::MsgIdReservation(Reservation::new(1, 65_537).unwrap()),
    ];
    let mut offset = SEGMENT_HEADER_LEN;
    let mut offsets = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        offsets.push(offset);
        let seq = 10 + i as u64;
        let next = encode_record(&mut seg, offset, SEG, seq, 9, body).unwrap();
        assert_eq!(next - offset, record_len(body.len()));
        assert_eq!(next % RECORD_ALIGN, 0);
        offset = next;
    }
    for (i, (&at, body)) in offsets.iter().zip(&bodies).enumerate() {
        let (entry, next) = decode_at(&seg, at, SEG).unwrap();
        let seq = 10 + i as u64;
        assert_eq!(
            entry,
            Entry::Data(Record {
                seq,
                synced_seq: Some(9),
                body: *body
            })
        );
        assert_eq!(next, at + record_len(body.len()));
        // The same bytes under another segment id fail the CRC.
        assert!(matches!(
            decode_at(&seg, at, SEG + 1),
            Err(DecodeError::Bad(BadRecord::ChecksumMismatch { .. }))
        ));
    }
    let end = encode_end(&mut seg, offset, SEG, 16, 0).unwrap();
    assert_eq!(
        decode_at(&seg, offset, SEG).unwrap(),
        (Entry::End { next_seq: 16 }, end)
    );
    assert_eq!(
        decode_at(&seg, end, SEG),
        Err(DecodeError::Bad(BadRecord::Unwritten))
    );
    let pad_end = encode_padding(&mut seg, end, SEG, 16, 64).unwrap();
    assert_eq!(pad_end, end + 64);
    assert_eq!(
        decode_at(&seg, end, SEG).unwrap(),
        (Entry::Padding { next_seq: 16 }, pad_end)
    );
}

#[test]
fn encoder_refuses_before_writing() {
    let mut seg = segment();
    let frame = vec![1u8; 5000];
    let key = MsgKey {
        src_node: 1,
        msg_id: 1,
    };
    let body = Body::Message { key, frame: &frame };
    assert_eq!(
        encode_record(&mut seg, 64, SEG, 1, 0, &body),
        Err(EncodeError::DoesNotFit {
            offset: 64,
            needed: record_len(5016),
            available: 4096 - 64
        })
    );
    assert!(seg.iter().all(|&b| b == 0), "nothing written on refusal");
    let huge = vec![0u8; RECORD_BODY_LEN_MAX];
    let body = Body::Message { key, frame: &huge };
    assert_eq!(
        encode_record(&mut seg, 3, 0, 0, 0, &body),
        Err(EncodeError::BodyTooLarge {
            len: RECORD_BODY_LEN_MAX + 16,
            limit: RECORD_BODY_LEN_MAX
        }),
        "the size limit is checked before anything else"
    );
    let body = Body::Delivered { key };
    assert_eq!(
        encode_record(&mut seg, 65, SEG, 1, 0, &body),
        Err(EncodeError::Misaligned {
            offset: 65,
            align: 8
        })
    );
    assert_eq!(
        encode_record(&mut seg, 64, SEG, 0, 0, &body),
        Err(EncodeError::SeqZero)
    );
    assert_eq!(
        encode_record(&mut seg, 64, 0, 1, 0, &body),
        Err(EncodeError::SegmentIdZero)
    );
    assert!(matches!(
        encode_record(&mut seg, 1 << 40, SEG, 1, 0, &body),
        Err(EncodeError::DoesNotFit { available: 0, .. })
    ));
    // Exactly fits at the end.
    let last = 4096 - record_len(16);
    assert_eq!(encode_record(&mut seg, last, SEG, 1, 0, &body), Ok(4096));
}

#[test]
fn absurd_lengths_do_not_panic() {
    let mut seg = segment();
    assert_eq!(record_len(usize::MAX), usize::MAX);
    assert!(matches!(
        encode_padding(&mut seg, 64, SEG, 1, usize::MAX),
        Err(EncodeError::BodyTooLarge { .. })
    ));
    assert!(matches!(
        encode_padding(&mut seg, 64, SEG, 1, 30),
        Err(EncodeError::Misaligned { .. })
    ));
    assert!(matches!(
        decode_at(&seg, usize::MAX - 7, SEG),
        Err(DecodeError::BadOffset { .. })
    ));
}

#[test]
fn sync_lag_semantics() {
    assert_eq!(sync_lag(10, 0), 0);
    assert_eq!(sync_lag(10, 10), 0);
    assert_eq!(sync_lag(10, 3), 7);
    assert_eq!(sync_lag(u64::MAX, 1), 0, "too far: unknown");
}

#[test]
fn invalid_checksummed_records_are_typed() {
    let mut seg = segment();
    let key = MsgKey {
        src_node: 1,
        msg_id: 2,
    };
    let next = encode_record(&mut seg, 64, SEG, 5, 0, &Body::Delivered { key }).unwrap();
    // Turn it into an unknown kind and fix up the CRC: a writer bug, not a torn write.
    seg[64 + field::KIND] = 77;
    let crc = RecordView::new_checked(&seg[64..next])
        .unwrap()
        .computed_crc(SEG);
    seg[64 + 4..64 + 8].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_at(&seg, 64, SEG),
        Err(DecodeError::Invalid(InvalidRecord::UnknownKind { raw: 77 }))
    );
    // A DELIVERED body of the wrong length.
    seg[64 + field::KIND] = RecordKind::Delivered.as_u8();
    seg[64..68].copy_from_slice(&8u32.to_le_bytes());
    let crc = RecordView::new_checked(&seg[64..next])
        .unwrap()
        .computed_crc(SEG);
    seg[64 + 4..64 + 8].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_at(&seg, 64, SEG),
        Err(DecodeError::Invalid(InvalidRecord::Body(
            BodyError::LenMismatch {
                kind: RecordKind::Delivered,
                expected: 16,
                len: 8
            }
        )))
    );
    assert_eq!(
        decode_at(&seg, 12, SEG),
        Err(DecodeError::BadOffset {
            offset: 12,
            len: 4096
        })
    );
}

#[test]
fn view_rejects_lengths_without_panicking() {
    let mut raw = [0u8; 40];
    assert_eq!(
        RecordView::new_checked(&raw[..]).err(),
        Some(BadRecord::Unwritten)
    );
    raw[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        RecordView::new_checked(&raw[..]).err(),
        Some(BadRecord::BodyLenOverLimit {
            body_len: u32::MAX as usize,
            limit: RECORD_BODY_LEN_MAX
        })
    );
    raw[0..4].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(
        RecordView::new_checked(&raw[..]).err(),
        Some(BadRecord::BeyondEnd {
            record_len: 128,
            available: 40
        })
    );
    assert_eq!(
        RecordView::new_checked(&raw[..10]).err(),
        Some(BadRecord::BeyondEnd {
            record_len: 24,
            available: 10
        })
    );
}
