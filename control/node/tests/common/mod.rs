//! A real `mesh` process for integration tests: free loopback ports, start, SIGTERM with a
//! clean exit, Prometheus scrapes.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768 and up by default),
/// which `bind(0)` and outgoing connections draw from.
const PORTS: std::ops::Range<u32> = 20_000..32_768;

/// A loopback port that is free now and that this process has not handed out before.
///
/// A node listens with SO_REUSEPORT (its cores share the port), so a second node bound to the
/// same port does not fail: the two silently share the connections, and peers reach the wrong
/// node. `bind(0)` can return a port twice within a process, and another process's `bind(0)`
/// can take the port of a node that is down for a restart; ports outside the ephemeral range,
/// from a per-process starting point and never repeated, avoid both.
pub fn free_port() -> u16 {
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let len = PORTS.end - PORTS.start;
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % len
    });
    for _ in 0..len {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(PORTS.start + (start + n) % len).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

pub struct Node {
    pub id: u64,
    /// `--domain` (1 unless a test sets it before [`Node::start`]).
    pub domain: u32,
    /// `--keepalive-ms`: a peer is dead after three silent intervals.
    pub keepalive_ms: u64,
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    pub connect: Vec<SocketAddr>,
    /// Directory made by `mesh certs` holding this node's files: TLS on.
    pub certs: Option<PathBuf>,
    /// `--enable-grpc --grpc-listen` on this address (off unless a test sets it, e.g. with
    /// [`Node::with_grpc`], before [`Node::start`]).
    pub grpc: Option<SocketAddr>,
    /// `--data-dir`: kept across restarts of this node, removed when it is dropped.
    pub data: tempfile::TempDir,
    /// `--durability` (the node's default, `batch`, unless a test sets it).
    pub durability: &'static str,
    /// `--delivery` (the node's default, `exactly-once`, unless a test sets it).
    pub delivery: &'static str,
    /// `--storage` other than the node's data directory (e.g. a `redis://` URL).
    pub storage: Option<String>,
    /// More flags, as given.
    pub extra_args: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

impl Node {
    pub fn new(id: u64, connect: Vec<SocketAddr>) -> Node {
        let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Node {
            id,
            domain: 1,
            keepalive_ms: 1000,
            listen,
            metrics,
            connect,
            certs: None,
            grpc: None,
            data: tempfile::tempdir().expect("a data directory"),
            durability: "batch",
            delivery: "exactly-once",
            storage: None,
            extra_args: Vec::new(),
            child: None,
        }
    }

    /// A native client attached to this node that subscribes to what is addressed to it.
    pub fn subscriber(&self) -> mesh_client::Client {
        mesh_client::Client::connect(
            self.listen,
            mesh_client::ClientOptions {
                subscribe: true,
                ..mesh_client::ClientOptions::default()
            },
        )
        .expect("subscriber attaches")
    }

    /// A native client attached to this node, to send.
    pub fn sender(&self) -> mesh_client::Client {
        mesh_client::Client::connect(self.listen, mesh_client::ClientOptions::default())
            .expect("sender attaches")
    }

    /// Turns the gRPC API on, on a free loopback port; returns its `http://` URL.
    pub fn with_grpc(&mut self) -> String {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.grpc = Some(addr);
        format!("http://{addr}")
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--domain")
            .arg(self.domain.to_string())
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--keepalive-ms")
            .arg(self.keepalive_ms.to_string())
            // A small WAL: 8 files of 4 MiB per core.
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--wal-segment-mib")
            .arg("4")
            .arg("--wal-segments")
            .arg("8")
            .arg("--durability")
            .arg(self.durability)
            .arg("--delivery")
            .arg(self.delivery)
            .env(
                "MESH_LOG",
                std::env::var("MESH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for c in &self.connect {
            cmd.arg("--connect").arg(c.to_string());
        }
        if let Some(storage) = &self.storage {
            cmd.arg("--storage").arg(storage);
        }
        cmd.args(&self.extra_args);
        if let Some(addr) = self.grpc {
            cmd.arg("--enable-grpc")
                .arg("--grpc-listen")
                .arg(addr.to_string());
        }
        if let Some(dir) = &self.certs {
            let id = self.id;
            cmd.arg("--tls")
                .arg("--require-tls")
                .arg("--cert")
                .arg(dir.join(format!("node-{id}.pem")))
                .arg("--key")
                .arg(dir.join(format!("node-{id}.key")))
                .arg("--ca")
                .arg(dir.join("ca.pem"))
                .arg("--pq-key")
                .arg(dir.join(format!("node-{id}.mldsa")));
        }
        self.child = Some(cmd.spawn().expect("mesh starts"));
    }

    /// SIGTERM, and the exit status must be success.
    pub fn stop(&mut self) {
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

    /// SIGKILL: the process ends at once, without a CLOSE to its peers (its kernel still closes
    /// its sockets).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "node {} was killed", self.id);
    }

    /// SIGSTOP: the process hangs with its sockets open, as a node that stopped answering.
    /// [`Node::kill`] ends it; so does dropping the `Node`.
    pub fn freeze(&mut self) {
        let child = self.child.as_ref().expect("running");
        let rc = Command::new("kill")
            .arg("-STOP")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(rc.success());
    }

    /// Every sample of `name` that is not zero, as text (for failure reports).
    pub fn scrape_nonzero(&self, name: &str) -> String {
        let Ok(mut s) = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)) else {
            return "unreachable".into();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| l.starts_with(name) && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn metric(&self, name: &str) -> Option<u64> {
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

    pub fn wait_metric(&self, name: &str, want: u64, within: Duration) -> Duration {
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

/// Makes certificates for `ids` with `mesh certs` in `dir`.
pub fn make_certs(dir: &std::path::Path, ids: &[u64]) {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["certs", "--nodes", &list.join(","), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `redis-server` of our own on a free loopback port (AOF with `appendfsync always`, so what
/// it confirmed survives), killed when dropped.
#[allow(dead_code)] // Not every test file uses it.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl RedisServer {
    pub fn start() -> RedisServer {
        let binary = std::env::var("MESH_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().expect("a directory for redis");
        let port = free_port();
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts (scripts/setup.sh installs it): {e}"));
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "redis-server answers PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
