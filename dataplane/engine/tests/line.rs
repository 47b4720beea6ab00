//! Three engines in a line A - B - C on loopback (real sockets, real glommio executors):
//! frames from A reach C intact and in order, chunked messages reassemble at C, a frame with a
//! spent TTL or no route comes back to A as a NACK, and B forwards without copying payloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mesh_engine::{EngineConfig, EngineEvent, EngineHandle, StaticRoutes, start};
use mesh_wire::{
    ChunkOutcome, Envelope, Flags, Frame, FrameKind, Limits, MetaLimits, Metadata, NackReason,
    Reassembler, ReassemblyLimits, chunk_message, encode_frame,
};

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn node(id: u64, connect: Vec<SocketAddr>, routes: StaticRoutes) -> EngineHandle {
    node_with(id, connect, routes, mesh_engine::QueueLimits::default())
}

fn node_with(
    id: u64,
    connect: Vec<SocketAddr>,
    routes: StaticRoutes,
    queue: mesh_engine::QueueLimits,
) -> EngineHandle {
    let mut cfg = EngineConfig::new(id, 1, any_port());
    cfg.connect = connect;
    cfg.queue = queue;
    // Routing and forwarding under test: deliveries go to the control side as they arrive.
    cfg.delivery.mode = mesh_engine::DeliveryMode::Raw;
    start(cfg, &(Arc::new(routes) as mesh_engine::RouteSnapshot)).expect("engine starts")
}

fn wait_for<T>(h: &EngineHandle, what: &str, mut f: impl FnMut(EngineEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match h.events().try_recv() {
            Some(ev) => {
                if let Some(t) = f(ev) {
                    return t;
                }
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    panic!("timed out waiting for {what}");
}

fn peer_up(h: &EngineHandle, peer: u64) {
    wait_for(h, &format!("peer {peer} up"), |ev| match ev {
        EngineEvent::PeerUp { peer: p, .. } if p.node_id == peer => Some(()),
        _ => None,
    });
}

fn data(msg_id: u64, payload: Bytes) -> mesh_wire::OutFrame {
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = A;
    env.src_domain = 1;
    env.dst_node = C;
    env.dst_domain = 1;
    env.msg_id = msg_id;
    encode_frame(&env, &[], payload, &Limits::default()).unwrap()
}

fn submit(h: &EngineHandle, mut f: mesh_wire::OutFrame) {
    loop {
        match h.submit(f) {
            Ok(()) => return,
            Err(mesh_engine::SubmitError::Busy(back)) => {
                f = back;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

struct Line {
    a: EngineHandle,
    b: EngineHandle,
    c: EngineHandle,
}

fn line() -> Line {
    line_with(mesh_engine::QueueLimits::default())
}

/// The line A - B - C, B's outbound queues bounded by `b_queue`, once A and C see B.
fn line_with(b_queue: mesh_engine::QueueLimits) -> Line {
    let c = node(
        C,
        vec![],
        StaticRoutes::new(1, 1)
            .with_node_route(A, B)
            .with_node_route(B, B),
    );
    let b = node_with(
        B,
        vec![c.local_addr()],
        StaticRoutes::new(1, 1)
            .with_node_route(A, A)
            .with_node_route(C, C),
        b_queue,
    );
    let a = node(
        A,
        vec![b.local_addr()],
        StaticRoutes::new(1, 1)
            .with_node_route(C, B)
            .with_node_route(B, B),
    );
    peer_up(&c, B);
    peer_up(&a, B);
    Line { a, b, c }
}

impl Line {
    fn shutdown(self) {
        self.a.shutdown();
        self.b.shutdown();
        self.c.shutdown();
    }
}

#[test]
fn frames_cross_two_hops_in_order_and_chunked_messages_reassemble() {
    let l = line();
    let count = 5_000u64;
    for i in 0..count {
        let mut p = i.to_be_bytes().to_vec();
        p.extend(std::iter::repeat_n(u8::try_from(i % 251).unwrap(), 200));
        submit(&l.a, data(i, Bytes::from(p)));
    }
    // Transit node B forwards small frames without copying them: the only received bytes it
    // copies are partial frames carried over when a read buffer fills, a small fraction.
    let m = &l.b.metrics()[0];
    let t0 = Instant::now();
    while mesh_engine::CoreMetrics::get(&m.forwarded) < count {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "B forwards the small frames"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let bytes_in = mesh_engine::CoreMetrics::get(&m.bytes_in);
    let copied = mesh_engine::CoreMetrics::get(&m.forward_bytes_copied);
    assert!(
        copied * 50 < bytes_in,
        "B copied {copied} of {bytes_in} bytes received"
    );
    // A 3 MiB message in 1 MiB frames.
    let big: Bytes = (0..3 * 1024 * 1024u32)
        .map(|i| i.to_le_bytes()[1])
        .collect::<Vec<_>>()
        .into();
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = A;
    env.src_domain = 1;
    env.dst_node = C;
    env.dst_domain = 1;
    env.msg_id = 1_000_000;
    env.flags = Flags::REQUIRE_ACK;
    let meta = Metadata {
        corr_id: Some(42),
        ..Metadata::default()
    };
    let chunks = chunk_message(
        &env,
        &meta,
        &MetaLimits::default(),
        big.clone(),
        &Limits::default(),
    )
    .unwrap();
    assert!(chunks.frame_count() >= 4);
    for f in chunks {
        submit(&l.a, f);
    }

    let mut next = 0u64;
    let mut reassembler = Reassembler::new(ReassemblyLimits::default());
    let mut big_done = false;
    wait_for(&l.c, "all frames at C", |ev| {
        if let EngineEvent::Deliver(f) = ev {
            let e = f.envelope();
            assert_eq!((e.src_node, e.dst_node), (A, C));
            assert_eq!(e.ttl, mesh_wire::DEFAULT_TTL - 1, "one transit hop");
            if f.flags().contains(Flags::CHUNK) {
                if let ChunkOutcome::Complete(m) =
                    reassembler.handle_chunk(f, Instant::now()).unwrap()
                {
                    assert_eq!(m.to_contiguous(), big.to_vec());
                    assert_eq!(
                        Metadata::decode(&m.meta, &MetaLimits::default())
                            .unwrap()
                            .corr_id,
                        Some(42)
                    );
                    big_done = true;
                }
            } else {
                assert_eq!(e.msg_id, next, "in order");
                let p = f.payload();
                assert_eq!(u64::from_be_bytes(p[..8].try_into().unwrap()), next);
                assert!(p[8..].iter().all(|b| u64::from(*b) == next % 251), "intact");
                next += 1;
            }
        }
        (next == count && big_done).then_some(())
    });
    let forwarded = mesh_engine::CoreMetrics::get(&l.b.metrics()[0].forwarded);
    assert!(forwarded >= count + 3, "B forwarded {forwarded}");
    l.shutdown();
}

#[test]
fn spent_ttl_and_missing_routes_come_back_as_nacks() {
    let l = line();
    // TTL 1: B must not forward it.
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = A;
    env.src_domain = 1;
    env.dst_node = C;
    env.dst_domain = 1;
    env.msg_id = 7;
    env.ttl = 1;
    submit(
        &l.a,
        encode_frame(&env, &[], Bytes::from_static(b"x"), &Limits::default()).unwrap(),
    );
    // No route at B toward node 99.
    env.ttl = 8;
    env.dst_node = 99;
    env.msg_id = 8;
    let mut routes_a = StaticRoutes::new(1, 2)
        .with_node_route(C, B)
        .with_node_route(B, B);
    routes_a = routes_a.with_node_route(99, B);
    l.a.publish_routes(&(Arc::new(routes_a) as mesh_engine::RouteSnapshot));
    std::thread::sleep(Duration::from_millis(50));
    submit(
        &l.a,
        encode_frame(&env, &[], Bytes::from_static(b"y"), &Limits::default()).unwrap(),
    );
    let mut seen = Vec::new();
    wait_for(&l.a, "two NACKs at A", |ev| {
        if let EngineEvent::Deliver(f) = ev {
            assert_eq!(f.kind(), FrameKind::Nack);
            let reason = f.meta(&MetaLimits::default()).unwrap().reason.unwrap();
            seen.push((f.envelope().msg_id, NackReason::from_code(reason)));
        }
        (seen.len() == 2).then_some(())
    });
    seen.sort_by_key(|(id, _)| *id);
    assert_eq!(
        seen,
        vec![(7, NackReason::TtlExpired), (8, NackReason::NoRoute)]
    );
    l.shutdown();
}

#[test]
fn a_transit_node_with_tiny_queues_stalls_and_drains_without_loss() {
    // B's queue toward C holds 4 frames: B's reads from A stall again and again, with whole
    // frames left in its decoder; once A has sent everything, those must still be forwarded.
    let l = line_with(mesh_engine::QueueLimits {
        frames_max: 4,
        bytes_max: 4096,
    });
    let count = 20_000u64;
    for i in 0..count {
        submit(&l.a, data(i, Bytes::from(i.to_be_bytes().to_vec())));
    }
    let mut next = 0;
    let progress = std::cell::Cell::new(0u64);
    let report = scopeguard_report(&progress, &l.b);
    wait_for(&l.c, "every frame through the tiny queue", |ev| {
        if let EngineEvent::Deliver(f) = ev {
            assert_eq!(f.envelope().msg_id, next);
            next += 1;
            progress.set(next);
        }
        (next == count).then_some(())
    });
    drop(report);
    l.shutdown();
}

#[allow(dead_code)]
fn assert_frame_is_send(f: Frame<BytesMut>) -> impl Send {
    f
}

/// On a failing test, prints how far the frames got and the transit node's counters.
struct Report<'a>(&'a std::cell::Cell<u64>, &'a EngineHandle);
impl Drop for Report<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let m = &self.1.metrics()[0];
            eprintln!(
                "progress {} forwarded {} frames_in {} dropped {:?}",
                self.0.get(),
                mesh_engine::CoreMetrics::get(&m.forwarded),
                mesh_engine::CoreMetrics::get(&m.frames_in),
                m.dropped
                    .iter()
                    .map(mesh_engine::CoreMetrics::get)
                    .collect::<Vec<_>>()
            );
        }
    }
}
fn scopeguard_report<'a>(p: &'a std::cell::Cell<u64>, b: &'a EngineHandle) -> Report<'a> {
    Report(p, b)
}

#[test]
fn the_transit_node_recycles_its_read_buffers_and_payloads_stay_intact() {
    let l = line();
    // 64 MiB in 64 KiB frames: B reads them into 1 MiB chunks from its pool. Each payload
    // carries its index in every byte group, so a chunk handed out again while a frame still
    // viewed it would show up as a corrupt payload at C.
    let count = 1_024u64;
    let payload_len = 64 << 10;
    let mut next = 0u64;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..count {
                let mut p = Vec::with_capacity(payload_len);
                while p.len() < payload_len {
                    p.extend_from_slice(&i.to_le_bytes());
                }
                submit(&l.a, data(i, Bytes::from(p)));
            }
        });
        wait_for(&l.c, "every 64 KiB frame at C", |ev| {
            if let EngineEvent::Deliver(f) = ev {
                let p = f.payload();
                assert_eq!(p.len(), payload_len);
                assert_eq!(f.envelope().msg_id, next, "in order");
                assert!(
                    p.chunks_exact(8)
                        .all(|w| u64::from_le_bytes(w.try_into().unwrap()) == next),
                    "payload {next} intact"
                );
                next += 1;
            }
            (next == count).then_some(())
        });
    });
    let m = &l.b.metrics()[0];
    let reused = mesh_engine::CoreMetrics::get(&m.buffers_reused);
    let allocated = mesh_engine::CoreMetrics::get(&m.buffers_allocated);
    let chunks_read = mesh_engine::CoreMetrics::get(&m.bytes_in) >> 20;
    // About 64 chunks of 1 MiB went through B: each one was its own buffer reclaimed in place
    // or a retired one from the pool; only the first few, while the pipeline filled, were
    // fresh memory.
    assert!(chunks_read >= 64, "B read {chunks_read} MiB");
    assert!(
        reused > 0 && allocated * 4 < chunks_read,
        "B's buffers: {reused} reused, {allocated} allocated for {chunks_read} MiB"
    );
    l.shutdown();
}
