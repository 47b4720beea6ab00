//! Smoke runs of the Zenoh system (feature `zenoh`): two real `zenoh-router` processes (this
//! crate's binary, which cargo builds for the test), a publisher at one, a subscriber at the
//! other. Counts are asserted, never speed.
//!
//! `zenoh_figures_at_256_bytes` is ignored: it measures (2 s throughput, 2 s latency at
//! 20,000 msgs/s) and prints the figures; run it on a release build:
//! `cargo test --release -p mesh-bench --features zenoh --test zenoh_smoke -- --ignored --nocapture`.
#![cfg(feature = "zenoh")]

use std::path::Path;
use std::time::Duration;

use mesh_bench::payload::Clock;
use mesh_bench::run::{LatencySpec, ThroughputSpec, latency, throughput};
use mesh_bench::systems::System;
use mesh_bench::zenoh::ZenohSystem;

fn router_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_zenoh-router"))
}

#[test]
fn zenoh_routers_carry_every_message_across_their_link() {
    let mut sys = ZenohSystem::start(router_bin()).expect("zenoh routers start");
    assert_eq!(sys.name(), "zenoh");
    let clock = Clock::new();
    for (run, len) in [(1, 64), (2, 70_000)] {
        let spec = ThroughputSpec {
            payload_len: len,
            duration: Duration::from_secs(20),
            max_msgs: Some(2_000),
            idle_timeout: Duration::from_secs(5),
        };
        let r = throughput(&mut sys, &spec, run, clock).unwrap();
        assert_eq!(
            (r.sent, r.received, r.lost, r.reordered),
            (2_000, 2_000, 0, 0),
            "{r:?}"
        );
    }
    let spec = LatencySpec {
        payload_len: 256,
        rate_per_s: 2_000,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(5),
    };
    let l = latency(&mut sys, &spec, 3, clock).unwrap();
    assert_eq!(l.lost, 0, "{l:?}");
    assert!(l.sent > 400 && l.received == l.latency.count, "{l:?}");
    assert!(l.latency.p50_us > 0.0 && l.latency.max_us >= l.latency.p99_us);
}

#[test]
#[ignore = "measures for seconds; run with --release --ignored --nocapture"]
fn zenoh_figures_at_256_bytes() {
    let mut sys = ZenohSystem::start(router_bin()).expect("zenoh routers start");
    let clock = Clock::new();
    let t = throughput(
        &mut sys,
        &ThroughputSpec {
            payload_len: 256,
            duration: Duration::from_secs(2),
            max_msgs: None,
            idle_timeout: Duration::from_secs(1),
        },
        1,
        clock,
    )
    .unwrap();
    println!(
        "zenoh throughput 256 B: {:.0} msgs/s ({:.0} MB/s), sent {}, received {}, lost {}, reordered {}",
        t.msgs_per_s, t.mb_per_s, t.sent, t.received, t.lost, t.reordered
    );
    let l = latency(
        &mut sys,
        &LatencySpec {
            payload_len: 256,
            rate_per_s: 20_000,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(1),
        },
        2,
        clock,
    )
    .unwrap();
    let s = &l.latency;
    println!(
        "zenoh latency 256 B @ 20.0k/s, µs: p50 {:.0} / p99 {:.0} / p99.9 {:.0} / max {:.0}; \
         sent {}, lost {}, producer behind max {}",
        s.p50_us, s.p99_us, s.p999_us, s.max_us, l.sent, l.lost, l.producer_behind_max
    );
}
