//! Real `mesh` processes on loopback: three nodes in a line A - B - C converge by link-state;
//! stopping B withdraws the routes through it, and restarting B brings sessions and routes back
//! by themselves. Every node stops cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

mod common;
use common::Node;

#[test]
fn a_line_converges_loses_its_middle_and_heals() {
    let mut c = Node::new(3, vec![]);
    c.start();
    let mut b = Node::new(2, vec![c.listen]);
    b.start();
    let mut a = Node::new(1, vec![b.listen]);
    a.start();
    let t = Duration::from_secs(15);
    // Each end routes to the two others: own domain, no other domain.
    a.wait_metric("mesh_route_entries", 2, t);
    c.wait_metric("mesh_route_entries", 2, t);
    b.wait_metric("mesh_neighbors", 2, t);

    // Stop B: A and C lose their only neighbour and every route.
    b.stop();
    let down_a = a.wait_metric("mesh_route_entries", 0, t);
    c.wait_metric("mesh_route_entries", 0, t);
    assert!(
        down_a < Duration::from_secs(2),
        "routes withdrawn in {down_a:?}"
    );
    eprintln!("routes withdrawn after {down_a:?}");

    // Restart B on the same address: A redials with backoff, B dials C; routes come back.
    b.start();
    let back = a.wait_metric("mesh_route_entries", 2, t);
    c.wait_metric("mesh_route_entries", 2, t);
    assert!(back < Duration::from_secs(12), "routes back in {back:?}");
    eprintln!("routes back after {back:?}");

    a.stop();
    b.stop();
    c.stop();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["--node-id", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-id: must be a non-zero"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "node-id = 5\nlisten = \"not an address\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn a_node_that_cannot_write_its_errors_still_exits_with_its_code() {
    // stderr on /dev/full (every write fails with ENOSPC, as a log file on a full disk): the
    // node reports the failure as best it can and exits 1 or 2, never a panic's 101.
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("data");
    std::fs::write(&not_a_dir, "a file where the data directory should be").unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let status = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["--node-id", "1", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--delivery", "exactly-once", "--data-dir"])
        .arg(&not_a_dir)
        .stdout(full())
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let status = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["--node-id", "0"])
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn certs_writes_a_ca_and_node_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    common::make_certs(&out_dir, &[1, 2]);
    for f in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-1.mldsa",
        "node-2.pem",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // Existing files are never overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["certs", "--nodes", "1", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
