//! The `mesh` processes of a run: each started inside its node's namespace with
//! `ip netns exec` (which execs `mesh` in place, so the child's pid is the node's), on one
//! unbound core, with its own data directory kept across restarts and its stderr appended to a
//! log file. A node dies with the orchestrator (`PR_SET_PDEATHSIG`), so even a SIGKILLed run
//! leaves no node behind. Clock skew is libfaketime preloaded into the node alone: the wall
//! clock shifted, the monotonic clock left true (machines disagree on the time of day; each
//! one's monotonic clock is its own).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns;
use crate::topology::{METRICS_PORT, NODE_PORT, Topology};

/// libfaketime for multi-threaded programs, as Debian's `faketime` package installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How a node is run.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The `mesh` binary.
    pub mesh_bin: PathBuf,
    /// `--keepalive-ms`.
    pub keepalive_ms: u64,
    /// `MESH_LOG` (a tracing filter).
    pub log_filter: String,
}

/// One `mesh` node of the run.
#[derive(Debug)]
pub struct MeshNode {
    /// Node id.
    pub id: u64,
    domain: u32,
    ns: String,
    connect: Vec<SocketAddr>,
    data_dir: PathBuf,
    log: PathBuf,
    settings: NodeSettings,
    child: Option<Child>,
}

impl MeshNode {
    /// A node of `topology` in namespace `ns`, its files under `run_dir` (not started).
    pub fn new(
        topology: &Topology,
        id: u64,
        ns: &str,
        run_dir: &Path,
        settings: &NodeSettings,
    ) -> anyhow::Result<MeshNode> {
        let spec = topology.node(id).with_context(|| format!("no node {id}"))?;
        Ok(MeshNode {
            id,
            domain: spec.domain,
            ns: ns.to_owned(),
            connect: topology.dials(id),
            data_dir: run_dir.join(format!("node-{id}")),
            log: run_dir.join(format!("node-{id}.log")),
            settings: settings.clone(),
            child: None,
        })
    }

    /// The namespace the node runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Where its stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the node, its wall clock `skew_s` seconds off when given. Must be called from
    /// the thread that will outlive it (the death signal follows the spawning thread).
    pub fn start(&mut self, skew_s: Option<i64>) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.id);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        writeln!(
            log,
            "--- mesh-chaos: start node {} (clock skew {:?} s)",
            self.id, skew_s
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.settings.mesh_bin)
            .args(["--node-id", &self.id.to_string()])
            .args(["--domain", &self.domain.to_string()])
            .args(["--listen", &format!("0.0.0.0:{NODE_PORT}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{METRICS_PORT}")])
            .args(["--cores", "1", "--placement", "unbound"])
            .args(["--keepalive-ms", &self.settings.keepalive_ms.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            // A small WAL, as the node's own tests use: 8 files of 4 MiB.
            .args(["--wal-segment-mib", "4", "--wal-segments", "8"])
            .args(["--delivery", "exactly-once", "--durability", "batch"])
            .env("MESH_LOG", &self.settings.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for c in &self.connect {
            cmd.args(["--connect", &c.to_string()]);
        }
        if let Some(skew) = skew_s {
            if !Path::new(LIBFAKETIME).exists() {
                bail!("{LIBFAKETIME} is missing: scripts/setup.sh installs the faketime package");
            }
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", format!("{skew:+}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        // SAFETY: the closure runs in the child between fork and exec and calls only `prctl`,
        // which is async-signal-safe; it touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("start mesh with ip netns exec")?);
        Ok(())
    }

    /// SIGKILL: the process ends at once, with nothing synced or said to its peers.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("node is not running")?;
        child.kill().context("SIGKILL")?;
        child.wait().context("reap")?;
        Ok(())
    }

    /// SIGTERM (drain and sync), then SIGKILL if it has not exited within 10 s. Returns
    /// whether it exited on its own with success.
    pub fn terminate(&mut self) -> anyhow::Result<bool> {
        let mut child = self.child.take().context("node is not running")?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(false)
    }

    /// Whether the process is running (it has not exited by itself).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The sum of every sample of metric `name` (`None`: the node did not answer).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let name = name.to_owned();
        let body = netns::run_in(&self.ns, move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })
        .ok()?;
        sum_samples(&body, &name)
    }

    /// Deletes its data directory (the node must be stopped).
    pub fn remove_data(&self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sum of the samples of `name` in a Prometheus text body (`None` without one).
pub fn sum_samples(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = v.max(0.0) as u64;
            v
        })
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_exact_name() {
        let body = "# HELP mesh_neighbors x\nmesh_neighbors{node=\"1\"} 2\n\
                    mesh_neighbors_total{node=\"1\"} 9\nmesh_route_entries{node=\"1\",core=\"0\"} 3\n\
                    mesh_route_entries{node=\"1\",core=\"1\"} 4\n";
        assert_eq!(sum_samples(body, "mesh_neighbors"), Some(2));
        assert_eq!(sum_samples(body, "mesh_route_entries"), Some(7));
        assert_eq!(sum_samples(body, "mesh_missing"), None);
    }
}
