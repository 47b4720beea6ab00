//! Forwarding through one transit node, measured side by side with a plain loopback TCP stream.
//!
//! `cargo bench -p mesh-engine --bench forward` (add `-- --secs 5` for longer runs).
//!
//! Three engines in one process, A -> B -> C on loopback, one core each (unbound): the bench
//! thread submits frames at A as fast as A takes them (`Busy` is backpressure), B forwards, C's
//! deliveries are counted as they reach the control side. For each payload size it reports
//! frames/s and payload Gbit/s delivered at C, and the bytes B copied per forwarded payload
//! byte and how many read buffers B's pool reused versus allocated. The TCP ceiling is one loopback stream between two threads writing and reading
//! 64 KiB buffers, measured in the same run. Results go to stdout and to
//! `target/bench-forward.json`.

// Counts become f64 rates here; 52 bits of mantissa are plenty for statistics.
#![allow(clippy::cast_precision_loss)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_engine::{
    CoreMetrics, EngineConfig, EngineEvent, EngineHandle, RouteSnapshot, StaticRoutes, SubmitError,
    start,
};
use mesh_wire::{Envelope, FrameKind, Limits, encode_frame};

fn node(id: u64, connect: Vec<std::net::SocketAddr>, routes: StaticRoutes) -> EngineHandle {
    let mut cfg = EngineConfig::new(id, 1, "127.0.0.1:0".parse().unwrap());
    cfg.connect = connect;
    cfg.keepalive_interval = Duration::from_secs(1);
    // Routing and forwarding under test: deliveries go to the control side as they arrive.
    cfg.delivery.mode = mesh_engine::DeliveryMode::Raw;
    start(cfg, &(Arc::new(routes) as RouteSnapshot)).unwrap()
}

fn wait_up(h: &EngineHandle, peer: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(EngineEvent::PeerUp { peer: p, .. }) = h.events().try_recv()
            && p.node_id == peer
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("peer {peer} not up");
}

/// Gbit/s of one loopback TCP stream moving 64 KiB writes for `secs`.
fn tcp_ceiling(secs: f64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut w = TcpStream::connect(addr).unwrap();
        let buf = vec![7u8; 64 << 10];
        while !s2.load(Ordering::Relaxed) {
            if w.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let (mut r, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes += n as u64,
        }
    }
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(r);
    let _ = writer.join();
    bytes as f64 * 8.0 / el / 1e9
}

struct Run {
    payload: usize,
    frames_per_sec: f64,
    gbit: f64,
    copied_per_payload_byte: f64,
    buffers_reused: u64,
    buffers_allocated: u64,
}

fn forward(payload: usize, secs: f64) -> Run {
    let c = node(3, vec![], StaticRoutes::new(1, 1).with_node_route(1, 2));
    let b = node(
        2,
        vec![c.local_addr()],
        StaticRoutes::new(1, 1)
            .with_node_route(1, 1)
            .with_node_route(3, 3),
    );
    let a = node(
        1,
        vec![b.local_addr()],
        StaticRoutes::new(1, 1).with_node_route(3, 2),
    );
    wait_up(&a, 2);
    wait_up(&c, 2);
    let body = Bytes::from(vec![0xABu8; payload]);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Count deliveries at C; the clock starts after a warm-up of 0.3 s.
            let warm = Instant::now() + Duration::from_millis(300);
            let mut n = 0u64;
            let mut t0 = None;
            while !stop.load(Ordering::Relaxed) {
                match c.events().try_recv() {
                    Some(EngineEvent::Deliver(_)) => {
                        if t0.is_none() && Instant::now() >= warm {
                            t0 = Some(Instant::now());
                        }
                        if t0.is_some() {
                            n += 1;
                        }
                    }
                    Some(_) => {}
                    None => std::hint::spin_loop(),
                }
            }
            let el = t0.map_or(1.0, |t| t.elapsed().as_secs_f64());
            (n, el, c)
        })
    };
    let end = Instant::now() + Duration::from_secs_f64(secs + 0.3);
    let mut msg = 0u64;
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = 1;
    env.src_domain = 1;
    env.dst_node = 3;
    env.dst_domain = 1;
    let limits = Limits::default();
    let b_in0 = CoreMetrics::get(&b.metrics()[0].bytes_in);
    let b_copied0 = CoreMetrics::get(&b.metrics()[0].forward_bytes_copied);
    let b_reused0 = CoreMetrics::get(&b.metrics()[0].buffers_reused);
    let b_alloc0 = CoreMetrics::get(&b.metrics()[0].buffers_allocated);
    while Instant::now() < end {
        env.msg_id = msg;
        msg += 1;
        let mut f = encode_frame(&env, &[], body.clone(), &limits).unwrap();
        loop {
            match a.submit(f) {
                Ok(()) => break,
                Err(SubmitError::Busy(back)) => {
                    f = back;
                    std::thread::yield_now();
                }
                Err(SubmitError::Stopped(_)) => panic!("engine stopped"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (n, el, c) = counter.join().unwrap();
    let b_in = CoreMetrics::get(&b.metrics()[0].bytes_in) - b_in0;
    let copied = CoreMetrics::get(&b.metrics()[0].forward_bytes_copied) - b_copied0;
    let reused = CoreMetrics::get(&b.metrics()[0].buffers_reused) - b_reused0;
    let allocated = CoreMetrics::get(&b.metrics()[0].buffers_allocated) - b_alloc0;
    let payload_in = b_in as f64 * payload as f64 / (payload + mesh_wire::HEADER_LEN) as f64;
    a.shutdown();
    b.shutdown();
    c.shutdown();
    Run {
        payload,
        frames_per_sec: n as f64 / el,
        gbit: n as f64 * payload as f64 * 8.0 / el / 1e9,
        copied_per_payload_byte: copied as f64 / payload_in.max(1.0),
        buffers_reused: reused,
        buffers_allocated: allocated,
    }
}

fn main() {
    let mut secs = 3.0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--secs") {
        secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(secs);
    }
    if args.iter().any(|a| a == "--test" || a == "--list") {
        // `cargo test --benches` probes bench targets; nothing to do.
        return;
    }
    eprintln!("forward: plain loopback TCP ceiling ({secs} s)");
    let ceiling = tcp_ceiling(secs);
    let mut runs = Vec::new();
    for payload in [64usize, 1024, 64 * 1024] {
        eprintln!("forward: {payload} B payloads through one transit node ({secs} s)");
        runs.push(forward(payload, secs));
    }
    println!("\nForwarding through one transit node (A -> B -> C, one core each, loopback)");
    println!(
        "{:>9} {:>14} {:>12} {:>14} {:>22} {:>24}",
        "payload",
        "frames/s",
        "Gbit/s",
        "% of TCP",
        "B copied / payload B",
        "B's buffers reused/new"
    );
    for r in &runs {
        println!(
            "{:>9} {:>14.0} {:>12.2} {:>13.1}% {:>22.4} {:>24}",
            r.payload,
            r.frames_per_sec,
            r.gbit,
            100.0 * r.gbit / ceiling,
            r.copied_per_payload_byte,
            format!("{}/{}", r.buffers_reused, r.buffers_allocated)
        );
    }
    println!("plain loopback TCP stream (64 KiB writes): {ceiling:.2} Gbit/s");
    let json = format!(
        "{{\"tcp_ceiling_gbit\":{ceiling:.3},\"runs\":[{}]}}\n",
        runs.iter()
            .map(|r| format!(
                "{{\"payload\":{},\"frames_per_sec\":{:.0},\"gbit\":{:.3},\"pct_of_tcp\":{:.1},\"copied_per_payload_byte\":{:.5},\"buffers_reused\":{},\"buffers_allocated\":{}}}",
                r.payload, r.frames_per_sec, r.gbit, 100.0 * r.gbit / ceiling, r.copied_per_payload_byte,
                r.buffers_reused, r.buffers_allocated
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-forward.json");
    if let Err(e) = std::fs::write(&path, json) {
        eprintln!("forward: cannot write {}: {e}", path.display());
    }
}
