//! Real `mesh` processes on loopback: three nodes in a line A - B - C converge by link-state;
//! stopping B withdraws the routes through it, and restarting B brings sessions and routes back
//! by themselves. Every node stops cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    id: u64,
    listen: SocketAddr,
    metrics: SocketAddr,
    connect: Vec<SocketAddr>,
    child: Option<Child>,
}

impl Node {
    fn new(id: u64, connect: Vec<SocketAddr>) -> Node {
        let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Node {
            id,
            listen,
            metrics,
            connect,
            child: None,
        }
    }

    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--keepalive-ms")
            .arg("200")
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for c in &self.connect {
            cmd.arg("--connect").arg(c.to_string());
        }
        self.child = Some(cmd.spawn().expect("mesh starts"));
    }

    /// SIGTERM, and the exit status must be success.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = i32::try_from(child.id()).unwrap();
        let rc = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(rc.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "node {} exited with {status}", self.id);
                return;
            }
            assert!(Instant::now() < deadline, "node {} did not stop", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metric(&self, name: &str) -> Option<u64> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .reduce(|a, b| a + b)
    }

    fn wait_metric(&self, name: &str, want: u64, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.metric(name) == Some(want) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "node {}: {name} is {:?}, want {want}",
                self.id,
                self.metric(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
fn certs_writes_a_ca_and_node_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["certs", "--nodes", "1,2", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
