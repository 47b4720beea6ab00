//! Benchmarks of the WAL hot paths: encoding a record into a mapped segment (the one copy of a
//! frame), and scanning a segment at recovery.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_wal::record::{Body, MsgKey, SEGMENT_HEADER_LEN, SegmentHeader, encode_record};
use mesh_wal::recovery::{SegmentScanner, TailPolicy};

const SEGMENT_LEN: usize = 8 << 20;
const SEGMENT_ID: u64 = 42;

fn header() -> SegmentHeader {
    SegmentHeader {
        segment_id: SEGMENT_ID,
        prev_segment_id: 0,
        first_seq: 1,
        created_unix_us: 0,
        segment_len: u32::try_from(SEGMENT_LEN).unwrap(),
        log_id: 0,
    }
}

fn message(frame: &[u8], seq: u64) -> Body<'_> {
    Body::Message {
        key: MsgKey {
            src_node: 7,
            msg_id: seq,
        },
        frame,
    }
}

/// A segment filled with `frame_len`-byte messages; returns it and the record count.
fn filled(frame_len: usize) -> (Vec<u8>, u64) {
    let mut segment = vec![0u8; SEGMENT_LEN];
    header().encode(&mut segment).unwrap();
    let frame = vec![0x5Au8; frame_len];
    let mut offset = SEGMENT_HEADER_LEN;
    let mut seq = 1;
    while let Ok(next) = encode_record(
        &mut segment,
        offset,
        SEGMENT_ID,
        seq,
        seq - 1,
        &message(&frame, seq),
    ) {
        offset = next;
        seq += 1;
    }
    (segment, seq - 1)
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for frame_len in [256usize, 4096] {
        let frame = vec![0xA5u8; frame_len];
        let mut segment = vec![0u8; SEGMENT_LEN];
        header().encode(&mut segment).unwrap();
        let mut offset = SEGMENT_HEADER_LEN;
        let mut seq = 1u64;
        group.throughput(Throughput::Bytes(frame_len as u64));
        group.bench_function(BenchmarkId::from_parameter(frame_len), |b| {
            b.iter(|| {
                let body = message(&frame, seq);
                offset = match encode_record(&mut segment, offset, SEGMENT_ID, seq, seq - 1, &body)
                {
                    Ok(next) => next,
                    // Segment full: start over at the front, as a roll to a recycled file would.
                    Err(_) => encode_record(
                        &mut segment,
                        SEGMENT_HEADER_LEN,
                        SEGMENT_ID,
                        seq,
                        seq - 1,
                        &body,
                    )
                    .unwrap(),
                };
                seq += 1;
                black_box(offset)
            });
        });
    }
    group.finish();
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    group.sample_size(20);
    for frame_len in [256usize, 4096] {
        let (segment, records) = filled(frame_len);
        group.throughput(Throughput::Bytes(SEGMENT_LEN as u64));
        group.bench_function(BenchmarkId::new("8MiB", frame_len), |b| {
            b.iter(|| {
                let mut scanner =
                    SegmentScanner::new(black_box(&segment), TailPolicy::Strict).unwrap();
                let count = scanner.by_ref().count() as u64;
                assert_eq!(count, records);
                black_box(scanner.finish().unwrap())
            });
        });
    }
    // Recovery of an active segment that is mostly unwritten: after the last record, the
    // scanner searches the whole zero tail for a valid record (torn tail or corruption?).
    let (segment, _) = filled(0);
    let mut mostly_empty = vec![0u8; SEGMENT_LEN];
    mostly_empty[..4096].copy_from_slice(&segment[..4096]);
    group.bench_function(BenchmarkId::new("8MiB", "zero-tail"), |b| {
        b.iter(|| {
            let scanner =
                SegmentScanner::new(black_box(&mostly_empty), TailPolicy::Strict).unwrap();
            black_box(scanner.finish().unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, encode, scan);
criterion_main!(benches);
