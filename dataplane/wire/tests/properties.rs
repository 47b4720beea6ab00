//! Property tests: frames survive any byte split, chunked messages survive any order and
//! duplication, and no byte sequence panics the decoder.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mesh_wire::{
    BufPool, BufPoolConfig, BufferSource, ChunkOutcome, Decoder, Envelope, Flags, Frame, FrameKind,
    Limits, MetaLimits, Metadata, Reassembler, ReassemblyLimits, chunk_message, encode_frame,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn arb_kind() -> impl Strategy<Value = FrameKind> {
    proptest::sample::select(FrameKind::ALL.to_vec())
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    (
        proptest::option::of(any::<u64>()),
        proptest::collection::vec(
            ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..16)),
            0..4,
        ),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(
            (256u64..10_000, proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
    )
        .prop_map(|(corr_id, headers, partition, reason, ack, mut ext)| {
            ext.sort_by_key(|(k, _)| *k);
            ext.dedup_by_key(|(k, _)| *k);
            Metadata {
                corr_id,
                headers,
                partition,
                reason,
                ack_success: ack,
                extensions: ext,
                ..Metadata::default()
            }
        })
}

prop_compose! {
    fn arb_frame()(
        kind in arb_kind(),
        flags in prop_oneof![Just(Flags::EMPTY), Just(Flags::REQUIRE_ACK), Just(Flags::RETRANSMIT | Flags::ROUTE_LOCK)],
        ttl in any::<u8>(),
        class in any::<u8>(),
        src_domain in any::<u32>(),
        dst_domain in any::<u32>(),
        src_node in any::<u64>(),
        dst_node in any::<u64>(),
        msg_id in any::<u64>(),
        meta in arb_metadata(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) -> (Envelope, Metadata, Vec<u8>) {
        let env = Envelope { kind, flags, ttl, class, src_domain, dst_domain, chunk_index: 0, src_node, dst_node, msg_id };
        (env, meta, payload)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_through_any_split(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let limits = Limits::default();
        let ml = MetaLimits::default();
        let mut stream = Vec::new();
        for (env, meta, payload) in &frames {
            let m = meta.encode(&ml).unwrap();
            encode_frame(env, &m, Bytes::copy_from_slice(payload), &limits).unwrap().write_to(&mut stream);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        // From the heap, and from a small pool that recycles a chunk as soon as the frames
        // split off it are dropped: every other frame is dropped at once and the others are
        // checked again at the end, so a chunk reused while a frame still views it would show.
        check_split(Decoder::with_read_chunk_len(limits, 100), &stream, &points, &frames)?;
        let pool = BufPool::shared(BufPoolConfig { classes: vec![100], max_retained_bytes: 400, scan: 2 });
        check_split(Decoder::with_source(limits, 100, pool), &stream, &points, &frames)?;
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Decoder::new(Limits::default());
        d.handle_bytes(&bytes);
        while let Ok(Some(f)) = d.poll_frame() {
            let _ = f.meta(&MetaLimits::default());
        }
        let _ = Frame::parse(&bytes, &Limits::default());
        let _ = Metadata::decode(&bytes, &MetaLimits::default());
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        mut hdr in proptest::collection::vec(any::<u8>(), 48),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        hdr[0] = b'M'; hdr[1] = b'S'; hdr[2] = 1; hdr[3] = (hdr[3] % 12) + 1;
        let mut d = Decoder::new(Limits::default());
        d.handle_bytes(&hdr);
        d.handle_bytes(&body);
        if let Ok(Some(f)) = d.poll_frame() {
            let _ = f.meta(&MetaLimits::default());
            prop_assert!(f.payload().len() <= body.len());
        }
    }

    #[test]
    fn metadata_round_trips(meta in arb_metadata()) {
        let ml = MetaLimits::default();
        let bytes = meta.encode(&ml).unwrap();
        prop_assert_eq!(Metadata::decode(&bytes, &ml).unwrap(), meta);
    }

    #[test]
    fn shuffled_and_duplicated_chunks_reassemble(
        len in 5_000usize..60_000,
        seed in any::<u64>(),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let limits = Limits::new(mesh_wire::limits::MIN_FRAME_LEN, 1024).unwrap();
        let payload: Vec<u8> = (0..len).map(|i| i.wrapping_mul(31).to_le_bytes()[0]).collect();
        let mut env = Envelope::new(FrameKind::Data);
        env.src_node = 9;
        env.msg_id = seed;
        let meta = Metadata { corr_id: Some(77), ..Metadata::default() };
        let mut frames: Vec<Frame<BytesMut>> = chunk_message(&env, &meta, &MetaLimits::default(), Bytes::from(payload.clone()), &limits)
            .unwrap()
            .map(|f| Frame::new_checked(BytesMut::from(&f.to_vec()[..]), &limits).unwrap())
            .collect();
        for d in &dups { let i = d.index(frames.len()); frames.push(frames[i].clone()); }
        // Deterministic shuffle from the seed (Fisher-Yates with an LCG).
        let mut s = seed | 1;
        for i in (1..frames.len()).rev() {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from(s >> 33).unwrap() % (i + 1);
            frames.swap(i, j);
        }
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        let mut complete = Vec::new();
        for f in frames {
            if let ChunkOutcome::Complete(m) = r.handle_chunk(f, now).unwrap() { complete.push(m); }
        }
        // Duplicates arriving after completion start a new partial, which completes again only
        // if a whole duplicate set arrives (the destination's dedup by msg_id drops it then).
        prop_assert!(!complete.is_empty());
        prop_assert!(complete.len() <= 1 + dups.len() / 2);
        for m in &complete {
            prop_assert_eq!(m.to_contiguous(), payload.clone());
            let meta_back = Metadata::decode(&m.meta, &MetaLimits::default()).unwrap();
            prop_assert_eq!(meta_back.message_len, Some(len as u64));
            prop_assert_eq!(meta_back.corr_id, Some(77));
        }
        prop_assert!(r.partial_count() <= 1);
    }
}

type ArbFrame = (Envelope, Metadata, Vec<u8>);

fn check_split<S: BufferSource>(
    mut d: Decoder<S>,
    stream: &[u8],
    points: &[usize],
    frames: &[ArbFrame],
) -> Result<(), TestCaseError> {
    let ml = MetaLimits::default();
    let check =
        |f: &Frame<BytesMut>, (env, meta, payload): &ArbFrame| -> Result<(), TestCaseError> {
            let mut expect = *env;
            if !meta.is_empty() {
                expect.flags = expect.flags | Flags::HAS_META;
            }
            prop_assert_eq!(f.envelope(), expect);
            prop_assert_eq!(&f.meta(&ml).unwrap(), meta);
            prop_assert_eq!(f.payload(), &payload[..]);
            Ok(())
        };
    let mut kept = Vec::new();
    let mut seen = 0;
    for w in points.windows(2) {
        // Alternate between the three ways bytes can enter the decoder.
        let piece = &stream[w[0]..w[1]];
        match w[0] % 3 {
            0 => d.handle_bytes(piece),
            1 => d.handle_owned(BytesMut::from(piece)),
            _ => {
                let mut off = 0;
                while off < piece.len() {
                    let room = d.read_buf();
                    let n = room.len().min(piece.len() - off);
                    room[..n].copy_from_slice(&piece[off..off + n]);
                    d.commit(n);
                    off += n;
                }
            }
        }
        while let Some(f) = d.poll_frame().unwrap() {
            prop_assert!(seen < frames.len(), "more frames than were sent");
            check(&f, &frames[seen])?;
            if seen % 2 == 0 {
                kept.push((seen, f));
            }
            seen += 1;
        }
    }
    prop_assert_eq!(seen, frames.len());
    prop_assert_eq!(d.buffered_len(), 0);
    for (i, f) in &kept {
        check(f, &frames[*i])?;
    }
    Ok(())
}
