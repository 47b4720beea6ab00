//! Smoke runs of the soak and hostile benchmarks' logic against a real `mesh` pair (the debug
//! binary of this workspace, built first if missing), a few seconds each. Counts and shapes are
//! asserted, never speed: the release binaries measure (`make soak`, `make hostile`).

use std::time::Duration;

use mesh_bench::hostile::{self, AttackConfig, HostileOptions};
use mesh_bench::soak::{self, NodeSettings, SoakOptions};

mod common;
use common::{SMALL_WAL, mesh_bin};

#[test]
fn soak_samples_every_node_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SoakOptions {
        mesh_bin: mesh_bin(),
        nodes: NodeSettings {
            node_args: SMALL_WAL.map(String::from).to_vec(),
            ..NodeSettings::default()
        },
        payload_len: 256,
        probe: Duration::from_secs(1),
        // A low rate: a debug build on a shared CI machine must keep up.
        rate_fraction: 0.2,
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        sample_every: Duration::from_millis(250),
        rss_tolerance_kib: 256 << 10,
    };
    let r = soak::run(&opts, &mut |_| {}).expect("the soak runs");
    assert!(r.max_msgs_per_s > 0.0 && r.rate_per_s > 0);
    assert!(r.sent > 0, "{r:?}");
    assert_eq!(r.lost, 0, "exactly-once loses nothing");
    assert_eq!(r.nodes.len(), 2);
    for n in &r.nodes {
        assert!(n.rss_start_kib > 0 && n.fds_start > 0, "{n:?}");
        assert!(r.samples.iter().filter(|s| s.node == n.node).count() >= 4);
    }
    assert!(r.passed(), "{:?}", r.failures);
    let json = dir.path().join("soak.json");
    soak::write_json(&r, &json).unwrap();
    let svg = dir.path().join("soak.svg");
    soak::write_svg(&r, &svg).unwrap();
    let back: soak::SoakReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(back.sent, r.sent);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn hostile_rounds_run_every_attack_and_report_memory() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HostileOptions {
        mesh_bin: mesh_bin(),
        rounds: 1,
        round: Duration::from_secs(2),
        attack: AttackConfig {
            half_open: 300,
            pace: Duration::from_millis(5),
        },
        durability: None,
    };
    let r = hostile::run(&opts, &mut |_| {}).expect("the hostile run");
    assert_eq!((r.baseline.len(), r.attacked.len()), (1, 1));
    assert!(
        r.baseline[0].received > 0 && r.attacked[0].received > 0,
        "{r:?}"
    );
    let c = &r.attack_counts;
    assert!(c.half_open_opened >= 300, "{c:?}");
    assert!(
        c.half_open_closed > 0,
        "the node closes half-open connections: {c:?}"
    );
    for n in [
        c.oversize_sent,
        c.forged_sent,
        c.replays_sent,
        c.hellos_sent,
    ] {
        assert!(n > 0, "every attack ran: {c:?}");
    }
    assert_eq!(r.memory.len(), 2);
    assert!(
        r.memory
            .iter()
            .all(|m| m.rss_before_kib > 0 && m.rss_after_kib > 0)
    );
    assert!(r.ratio > 0.0);
    let json = dir.path().join("hostile.json");
    hostile::write_json(&r, &json).unwrap();
    assert!(
        std::fs::read_to_string(&json)
            .unwrap()
            .contains("\"ratio\"")
    );
}
