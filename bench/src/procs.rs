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

/// The release `mesh` binary: `target/release/mesh` of the current directory, else of this
/// workspace (the default of `--mesh-bin`).
pub fn default_mesh_bin() -> PathBuf {
    let local = PathBuf::from("target/release/mesh");
    if local.is_file() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/mesh")
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
    /// A ring of `nodes` nodes in two domains (the first half in domain 1, the rest in domain
    /// 2), producer at node 1, consumer at the node opposite it: traffic crosses the domain
    /// border, and each side of the ring is a path.
    Ring {
        /// Nodes in the ring (at least 4).
        nodes: u32,
    },
}

impl Shape {
    /// Nodes in the shape.
    pub fn nodes(self) -> u32 {
        match self {
            Shape::Pair => 2,
            Shape::Line { hops } => hops.max(1) + 1,
            Shape::Ring { nodes } => nodes.max(4),
        }
    }

    /// The node the consumer attaches to (ids are 1..=nodes; the producer is at node 1).
    pub fn consumer_node(self) -> u32 {
        match self {
            Shape::Pair | Shape::Line { .. } => self.nodes(),
            Shape::Ring { .. } => self.nodes() / 2 + 1,
        }
    }

    /// The domain of node `id`.
    pub fn domain_of(self, id: u32) -> u32 {
        match self {
            Shape::Pair | Shape::Line { .. } => 1,
            Shape::Ring { .. } => {
                if id <= self.nodes() / 2 {
                    1
                } else {
                    2
                }
            }
        }
    }

    /// Links from the producer's node to the consumer's on the shortest path.
    pub fn hops(self) -> u32 {
        match self {
            Shape::Pair => 1,
            Shape::Line { hops } => hops.max(1),
            Shape::Ring { .. } => self.nodes() / 2,
        }
    }

    /// The peers node `id` dials (the one before it; the last node of a ring also closes it).
    fn dials(self, id: u32) -> Vec<u32> {
        let mut d = Vec::new();
        if id > 1 {
            d.push(id - 1);
        }
        if matches!(self, Shape::Ring { .. }) && id == self.nodes() {
            d.push(1);
        }
        d
    }
}

/// How the nodes of a [`MeshCluster`] run. The default is the forwarding path alone (raw
/// delivery, nothing stored, plaintext), as compared with NATS core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshOptions {
    /// Exactly-once delivery with the WAL at this `--durability` (`none`, `batch`, `always`);
    /// `None`: `--delivery raw --storage memory`.
    pub durability: Option<String>,
    /// TLS 1.3 between the nodes (certificates made with `mesh certs`).
    pub tls: bool,
    /// Serve the gRPC API on a free loopback port per node ([`MeshCluster::grpc`]).
    pub grpc: bool,
    /// More flags for every node, as given.
    pub extra_args: Vec<String>,
}

impl MeshOptions {
    /// A short label of the options for system names: `""`, `+batch`, `+tls`…
    pub fn label(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.durability {
            s.push('+');
            s.push_str(d);
        }
        if self.tls {
            s.push_str("+tls");
        }
        s
    }
}

/// `mesh` nodes 1..=n of a [`Shape`] on loopback (node i dials node i - 1; a ring's last
/// node also dials node 1), routes converged.
#[derive(Debug)]
pub struct MeshCluster {
    /// Client (and peer) addresses of the nodes, node 1 first.
    pub listen: Vec<SocketAddr>,
    /// Prometheus addresses, same order.
    pub metrics: Vec<SocketAddr>,
    /// gRPC addresses, same order (empty unless [`MeshOptions::grpc`]).
    pub grpc: Vec<SocketAddr>,
    shape: Shape,
    procs: Vec<Proc>,
    /// The nodes' stderr logs, data directories and certificates (removed with the cluster).
    dir: tempfile::TempDir,
}

impl MeshCluster {
    /// Starts the nodes of `shape` (forwarding only: [`MeshOptions::default`]).
    pub fn start(bin: &Path, shape: Shape) -> Result<MeshCluster> {
        MeshCluster::start_with(bin, shape, &MeshOptions::default())
    }

    /// Starts the nodes of `shape` from the binary at `bin` with `opts` and waits until the
    /// producer's and the consumer's nodes have their routes.
    pub fn start_with(bin: &Path, shape: Shape, opts: &MeshOptions) -> Result<MeshCluster> {
        if !bin.is_file() {
            bail!(
                "no mesh binary at {} (build it: cargo build --release -p mesh-node --bin mesh, or pass --mesh-bin)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("mesh-bench-").tempdir()?;
        let n = shape.nodes();
        if opts.tls {
            let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            let out = Command::new(bin)
                .args(["certs", "--nodes", &ids.join(","), "--out"])
                .arg(dir.path().join("certs"))
                .output()
                .context("running mesh certs")?;
            if !out.status.success() {
                bail!("mesh certs: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut c = MeshCluster {
            listen: Vec::new(),
            metrics: Vec::new(),
            grpc: Vec::new(),
            shape,
            procs: Vec::new(),
            dir,
        };
        for _ in 1..=n {
            c.listen.push(free_addr()?);
            c.metrics.push(free_addr()?);
            if opts.grpc {
                c.grpc.push(free_addr()?);
            }
        }
        for id in 1..=n {
            let i = (id - 1) as usize;
            let log = std::fs::File::create(c.dir.path().join(format!("node-{id}.log")))?;
            let mut cmd = Command::new(bin);
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--domain")
                .arg(shape.domain_of(id).to_string())
                .arg("--listen")
                .arg(c.listen[i].to_string())
                .arg("--metrics-listen")
                .arg(c.metrics[i].to_string())
                .arg("--keepalive-ms")
                .arg("1000")
                .env("MESH_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            match &opts.durability {
                // Compared with NATS core (no persistence): forwarding and at-most-once
                // delivery, nothing stored.
                None => {
                    cmd.args(["--storage", "memory", "--delivery", "raw"]);
                }
                Some(d) => {
                    cmd.args(["--delivery", "exactly-once", "--durability", d])
                        .arg("--data-dir")
                        .arg(c.dir.path().join(format!("data-{id}")));
                }
            }
            if opts.tls {
                let certs = c.dir.path().join("certs");
                cmd.arg("--tls")
                    .arg("--require-tls")
                    .arg("--cert")
                    .arg(certs.join(format!("node-{id}.pem")))
                    .arg("--key")
                    .arg(certs.join(format!("node-{id}.key")))
                    .arg("--ca")
                    .arg(certs.join("ca.pem"))
                    .arg("--pq-key")
                    .arg(certs.join(format!("node-{id}.mldsa")));
            }
            if opts.grpc {
                cmd.arg("--enable-grpc")
                    .arg("--grpc-listen")
                    .arg(c.grpc[i].to_string());
            }
            cmd.args(&opts.extra_args);
            for peer in shape.dials(id) {
                cmd.arg("--connect")
                    .arg(c.listen[(peer - 1) as usize].to_string());
            }
            c.procs
                .push(Proc::spawn(format!("mesh node {id}"), &mut cmd)?);
        }
        // Within one domain every node has a route to every other; across domains the ends
        // see at least the route to the other domain (the run's probes wait for the rest).
        let want = match shape {
            Shape::Ring { .. } => 1,
            _ => u64::from(n - 1),
        };
        for id in [1, shape.consumer_node()] {
            let addr = c.metrics[(id - 1) as usize];
            let procs = &mut c.procs;
            wait_until(
                &format!("mesh node {id} routes"),
                Duration::from_secs(30),
                || {
                    // A node that exited ends the wait; the check below says which.
                    if procs.iter_mut().any(|p| p.check_running().is_err()) {
                        return Ok(true);
                    }
                    Ok(
                        prometheus_sum(&http_get(addr, "/metrics")?, "mesh_route_entries")
                            .is_some_and(|r| r >= want),
                    )
                },
            )
            .with_context(|| format!("node logs in {}", c.dir.path().display()))?;
        }
        for (i, p) in c.procs.iter_mut().enumerate() {
            if let Err(e) = p.check_running() {
                // The cluster's directory goes with it: say what the node said first.
                let log = std::fs::read_to_string(c.dir.path().join(format!("node-{}.log", i + 1)))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(5)..];
                return Err(e.context(format!("its log ends:\n{}", tail.join("\n"))));
            }
        }
        Ok(c)
    }

    /// Node id the consumer attaches to.
    pub fn last_node_id(&self) -> u64 {
        u64::from(self.shape.consumer_node())
    }

    /// Client address of the consumer's node.
    pub fn consumer_addr(&self) -> SocketAddr {
        self.listen[(self.shape.consumer_node() - 1) as usize]
    }

    /// Process ids of the nodes, node 1 first.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
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
