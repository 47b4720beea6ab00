//! The processes a run starts: `mesh` nodes in a pair or a line, a two-server NATS cluster;
//! free loopback ports for them; every process killed and every temp dir removed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768 and up by default).
const PORTS: std::ops::Range<u32> = 20_000..32_768;

/// A loopback port that is free now and that this process has not handed out before.
///
/// A `mesh` node listens with SO_REUSEPORT, so a second process bound to the same port does
/// not fail but silently shares it; ports outside the ephemeral range, from a per-process
/// starting point and never repeated, avoid handing out one that is in use.
pub fn free_port() -> Result<u16> {
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
        let port = u16::try_from(PORTS.start + (start + n) % len)?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {PORTS:?}")
}

fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd`; `name` is for error messages.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Result<Proc> {
        let name = name.into();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name, child })
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0 to `addr`; the response body (headers stripped).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(_, b)| b)
        .to_owned())
}

/// Sum of the samples of Prometheus metric `name` (all label sets) in `body`.
pub fn prometheus_sum(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = v as u64; // counters and gauges here are small non-negative integers
            v
        })
        .reduce(|a, b| a + b)
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if t0.elapsed() > within {
            bail!("{what}: not ready within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shape of a mesh under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Two nodes: the producer attaches to one, the consumer to the other.
    Pair,
    /// A line of `hops` links (hops + 1 nodes), producer at one end, consumer at the other.
    Line {
        /// Links between the producer's node and the consumer's.
        hops: u32,
    },
}

impl Shape {
    /// Nodes in the shape.
    pub fn nodes(self) -> u32 {
        match self {
            Shape::Pair => 2,
            Shape::Line { hops } => hops.max(1) + 1,
        }
    }
}

/// `mesh` nodes 1..=n in a line on loopback (node i dials node i - 1), routes converged.
#[derive(Debug)]
pub struct MeshCluster {
    /// Client (and peer) addresses of the nodes, node 1 first.
    pub listen: Vec<SocketAddr>,
    /// Prometheus addresses, same order.
    pub metrics: Vec<SocketAddr>,
    procs: Vec<Proc>,
    /// The nodes' stderr logs (removed with the cluster).
    logs: tempfile::TempDir,
}

impl MeshCluster {
    /// Starts the nodes of `shape` from the binary at `bin` and waits until the end nodes have
    /// a route to every other node.
    pub fn start(bin: &Path, shape: Shape) -> Result<MeshCluster> {
        if !bin.is_file() {
            bail!(
                "no mesh binary at {} (build it: cargo build --release -p mesh-node --bin mesh, or pass --mesh-bin)",
                bin.display()
            );
        }
        let logs = tempfile::Builder::new().prefix("mesh-bench-").tempdir()?;
        let n = shape.nodes();
        let mut c = MeshCluster {
            listen: Vec::new(),
            metrics: Vec::new(),
            procs: Vec::new(),
            logs,
        };
        for id in 1..=n {
            let listen = free_addr()?;
            let metrics = free_addr()?;
            let log = std::fs::File::create(c.logs.path().join(format!("node-{id}.log")))?;
            let mut cmd = Command::new(bin);
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--domain")
                .arg("1")
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                .arg("--keepalive-ms")
                .arg("1000")
                // Compared with NATS core (no persistence): forwarding and at-most-once
                // delivery, nothing stored.
                .arg("--storage")
                .arg("memory")
                .arg("--delivery")
                .arg("raw")
                .env("MESH_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if let Some(prev) = c.listen.last() {
                cmd.arg("--connect").arg(prev.to_string());
            }
            c.procs
                .push(Proc::spawn(format!("mesh node {id}"), &mut cmd)?);
            c.listen.push(listen);
            c.metrics.push(metrics);
        }
        let want = u64::from(n - 1);
        for i in [0, c.metrics.len() - 1] {
            let addr = c.metrics[i];
            wait_until(
                &format!("mesh node {} routes", i + 1),
                Duration::from_secs(30),
                || {
                    Ok(
                        prometheus_sum(&http_get(addr, "/metrics")?, "mesh_route_entries")
                            == Some(want),
                    )
                },
            )?;
        }
        for p in &mut c.procs {
            p.check_running()?;
        }
        Ok(c)
    }

    /// Node id the consumer attaches to (the far end).
    pub fn last_node_id(&self) -> u64 {
        self.listen.len() as u64
    }

    /// Sum of `mesh_dropped_total` over the nodes (all reasons), if they answer.
    pub fn dropped_total(&self) -> Option<u64> {
        self.metrics
            .iter()
            .map(|m| {
                http_get(*m, "/metrics")
                    .ok()
                    .and_then(|b| prometheus_sum(&b, "mesh_dropped_total"))
            })
            .sum()
    }
}

/// Where `nats-server` is: `--nats-bin`, else on `PATH`, else Debian's `/usr/sbin`.
pub fn find_nats_server() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nats-server"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let f = PathBuf::from("/usr/sbin/nats-server");
        f.is_file().then_some(f)
    })
}

/// Two `nats-server` processes routed to each other in one cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    /// Client URLs: the publisher uses the first, the subscriber the second.
    pub urls: [String; 2],
    /// `nats-server --version`.
    pub version: String,
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the two servers and waits until each has its route to the other.
    pub fn start(bin: &Path) -> Result<NatsCluster> {
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let dir = tempfile::Builder::new()
            .prefix("mesh-bench-nats-")
            .tempdir()?;
        let client = [free_port()?, free_port()?];
        let cluster = [free_port()?, free_port()?];
        let monitor = [free_addr()?, free_addr()?];
        let mut procs = Vec::new();
        for i in 0..2 {
            let name = ["a", "b"][i];
            let mut cmd = Command::new(bin);
            cmd.args(["-a", "127.0.0.1", "-n", &format!("bench-{name}")])
                .args(["-p", &client[i].to_string()])
                .args(["-m", &monitor[i].port().to_string()])
                .args(["--cluster_name", "bench"])
                .args(["-cluster", &format!("nats://127.0.0.1:{}", cluster[i])])
                .args(["-routes", &format!("nats://127.0.0.1:{}", cluster[1 - i])])
                .arg("-l")
                .arg(dir.path().join(format!("nats-{name}.log")))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            procs.push(Proc::spawn(format!("nats-server {name}"), &mut cmd)?);
        }
        for m in monitor {
            wait_until("nats route", Duration::from_secs(20), || {
                let body = http_get(m, "/routez")?;
                Ok(body.contains("\"num_routes\": 1") || body.contains("\"num_routes\":1"))
            })?;
        }
        for p in &mut procs {
            p.check_running()?;
        }
        Ok(NatsCluster {
            urls: client.map(|p| format!("nats://127.0.0.1:{p}")),
            version,
            _procs: procs,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sum_adds_label_sets_of_one_metric_only() {
        let body = "# HELP x\nmesh_route_entries{core=\"0\"} 2\nmesh_route_entries{core=\"1\"} 1\n\
                    mesh_route_entries_other 9\nmesh_dropped_total{reason=\"no_route\"} 0\n";
        assert_eq!(prometheus_sum(body, "mesh_route_entries"), Some(3));
        assert_eq!(prometheus_sum(body, "mesh_dropped_total"), Some(0));
        assert_eq!(prometheus_sum(body, "absent"), None);
    }

    #[test]
    fn ports_are_not_handed_out_twice() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
    }
}
