//! Criterion benchmarks of the wire codec: header decode / encode, and decoder throughput on
//! 64 B, 1 KiB and 64 KiB frames.
//!
//! Run: `cargo bench -p mesh-wire --bench codec`.
//!
//! `decoder/adopt/*` hands the decoder buffers of ready frames (as io_uring completions do) and
//! measures the framing cost alone: payloads are never copied, so throughput grows with frame
//! size. `decoder/read_copy/*` adds the copy from a socket-sized read buffer into the decoder,
//! for comparison with a memcpy-bound path.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_wire::{Decoder, Envelope, FrameKind, Header, Limits, encode_frame};
use zerocopy::IntoBytes;

fn header_bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = 1;
    env.dst_node = 2;
    env.msg_id = 3;
    let frame = encode_frame(&env, &[], Bytes::from_static(&[0u8; 64]), &limits)
        .expect("valid")
        .to_vec();
    let mut g = c.benchmark_group("header");
    g.bench_function("decode_validate", |b| {
        b.iter(|| {
            let h = Header::ref_from_buf(black_box(&frame)).expect("48 bytes");
            let (kind, _) = h.validate(&limits).expect("valid");
            black_box((kind, h.dst_node.get(), h.dst_domain.get(), h.frame_len()))
        });
    });
    let mut out = [0u8; 48];
    g.bench_function("encode_in_place", |b| {
        b.iter(|| {
            let mut h = Header::new(FrameKind::Data);
            h.src_node.set(black_box(1));
            h.dst_node.set(black_box(2));
            h.msg_id.set(black_box(3));
            h.body_len.set(black_box(64));
            out.copy_from_slice(h.as_bytes());
            black_box(&out);
        });
    });
    g.finish();
}

fn frames_buffer(payload_len: usize, total: usize) -> (Vec<u8>, usize) {
    let limits = Limits::default();
    let env = Envelope::new(FrameKind::Data);
    let one = encode_frame(&env, &[], Bytes::from(vec![7u8; payload_len]), &limits)
        .expect("valid")
        .to_vec();
    let n = (total / one.len()).max(1);
    let mut v = Vec::with_capacity(n * one.len());
    for _ in 0..n {
        v.extend_from_slice(&one);
    }
    (v, n)
}

fn decoder_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decoder");
    for (name, payload) in [("64B", 64usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let (buf, n) = frames_buffer(payload, 4 << 20);
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::new("adopt", name), &buf, |b, buf| {
            b.iter_batched(
                || BytesMut::from(&buf[..]),
                |owned| {
                    let mut d = Decoder::new(Limits::default());
                    d.handle_owned(owned);
                    let mut count = 0;
                    while let Some(f) = d.poll_frame().expect("valid") {
                        black_box(f.payload().len());
                        count += 1;
                    }
                    assert_eq!(count, n);
                },
                criterion::BatchSize::LargeInput,
            );
        });
        g.bench_with_input(BenchmarkId::new("read_copy", name), &buf, |b, buf| {
            let mut d = Decoder::new(Limits::default());
            b.iter(|| {
                let mut count = 0;
                for chunk in buf.chunks(64 * 1024) {
                    let room = d.read_buf();
                    room[..chunk.len()].copy_from_slice(chunk);
                    d.commit(chunk.len());
                    while let Some(f) = d.poll_frame().expect("valid") {
                        black_box(f.payload().len());
                        count += 1;
                    }
                }
                assert_eq!(count, n);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, header_bench, decoder_bench);
criterion_main!(benches);
