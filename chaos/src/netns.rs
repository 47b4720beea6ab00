//! Network namespaces, veth links and nftables faults: one namespace per node, named after the
//! run's process (`mchaos-<pid>-n<node>`) so parallel runs never share one; a veth pair per
//! link with both ends created directly inside their namespaces (no name ever exists in the
//! host's namespace); an nftables table `inet chaos` per namespace whose `faults` chain holds
//! the drop rules of the fault in progress.
//!
//! [`Lab`] owns all of it: dropping it deletes the namespaces, which takes their veth ends and
//! nftables tables with them. The processes inside are [`crate::node`]'s to kill first.
//! Namespaces left by a run that was itself SIGKILLed are found by their name's pid and
//! removed by [`clean_stale`] (every run calls it first).
//!
//! Sockets of this process enter a namespace through [`enter`] (`setns(2)` on the calling
//! thread): a socket stays in the namespace it was made in, and threads inherit their
//! creator's namespace, so the proxy and the applications run as threads of the orchestrator.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::topology::{Link, Topology};

/// Prefix of every namespace a chaos run makes.
pub const NAME_PREFIX: &str = "mchaos-";

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// The namespace name of `node` in the run of process `pid`.
pub fn namespace_name(pid: u32, node: u64) -> String {
    format!("{NAME_PREFIX}{pid}-n{node}")
}

/// The pid in a namespace name made by [`namespace_name`].
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Moves the calling thread into namespace `name`. Sockets it makes afterwards, and threads
/// it spawns, belong to that namespace.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    let ns = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: `setns` reads only its two integer arguments; `ns` is an open namespace file
    // that outlives the call. It changes the network namespace of this thread alone.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setns into {name}"));
    }
    Ok(())
}

/// Spawns a thread named `thread` that runs `f` inside namespace `ns`.
pub fn spawn_in<T, F>(
    ns: &str,
    thread: &str,
    f: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let ns = ns.to_owned();
    std::thread::Builder::new()
        .name(thread.to_owned())
        .spawn(move || {
            enter(&ns)?;
            f()
        })
        .context("spawn a thread")
}

/// Runs `f` inside namespace `ns` (on a thread of its own) and returns its result.
pub fn run_in<T, F>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    spawn_in(ns, "in-netns", f)?
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in namespace {ns} panicked"))?
}

/// Runs `program args`, failing with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program} (scripts/setup.sh installs it)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `nft` inside namespace `ns`.
fn nft(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["netns", "exec", ns, "nft"];
    all.extend_from_slice(args);
    sh("ip", &all)
}

/// Namespaces of this process's earlier runs and of runs whose process is gone.
pub fn stale_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| pid_of(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect()
}

/// Deletes the namespaces of chaos runs whose process is gone (after killing anything still
/// running in them). Returns their names.
pub fn clean_stale() -> Vec<String> {
    let stale = stale_namespaces();
    for ns in &stale {
        kill_all_in(ns);
        let _ = sh("ip", &["netns", "delete", ns]);
    }
    stale
}

/// SIGKILLs every process in namespace `ns` (`ip netns pids`).
pub fn kill_all_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// The namespaces, links and nftables of one run. Dropping it deletes them all.
#[derive(Debug)]
pub struct Lab {
    /// Namespace of node `i + 1` at index `i`.
    namespaces: Vec<String>,
    topology: Topology,
}

impl Lab {
    /// Makes a namespace per node of `topology` (loopback up, the `inet chaos` table with an
    /// empty `faults` chain), and a veth pair with addresses per link.
    pub fn create(topology: &Topology) -> anyhow::Result<Lab> {
        sh("ip", &["netns", "list"]).context("ip netns is not available")?;
        let pid = std::process::id();
        let mut lab = Lab {
            namespaces: Vec::new(),
            topology: topology.clone(),
        };
        for n in &topology.nodes {
            let ns = namespace_name(pid, n.id);
            sh("ip", &["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            nft(&ns, &["add", "table", "inet", "chaos"])?;
            nft(
                &ns,
                &[
                    "add",
                    "chain",
                    "inet",
                    "chaos",
                    "faults",
                    "{ type filter hook input priority 0; policy accept; }",
                ],
            )?;
        }
        for link in &topology.links {
            lab.add_link(link)?;
        }
        Ok(lab)
    }

    fn add_link(&self, link: &Link) -> anyhow::Result<()> {
        let (a, b) = (self.ns(link.lower)?, self.ns(link.higher)?);
        let (ia, ib) = (
            Topology::interface(link.higher),
            Topology::interface(link.lower),
        );
        sh(
            "ip",
            &[
                "-n", a, "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns", b,
            ],
        )?;
        for (ns, iface, node) in [(a, &ia, link.lower), (b, &ib, link.higher)] {
            let addr = format!("{}/24", Topology::address(link, node));
            sh("ip", &["-n", ns, "addr", "add", &addr, "dev", iface])?;
            sh("ip", &["-n", ns, "link", "set", iface, "up"])?;
        }
        Ok(())
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: u64) -> anyhow::Result<&str> {
        usize::try_from(node)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.namespaces.get(i))
            .map(String::as_str)
            .with_context(|| format!("no node {node}"))
    }

    /// Every namespace, by node.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Drops `percent` % (100: all) of the packets arriving at each end of `link`.
    pub fn drop_on(&self, link: &Link, percent: u8) -> anyhow::Result<()> {
        for node in [link.lower, link.higher] {
            let iface = Topology::interface(link.peer_of(node));
            let lt = percent.to_string();
            let mut rule = vec!["add", "rule", "inet", "chaos", "faults", "iifname", &iface];
            if percent < 100 {
                rule.extend_from_slice(&["numgen", "random", "mod", "100", "<", &lt]);
            }
            rule.push("drop");
            nft(self.ns(node)?, &rule)?;
        }
        Ok(())
    }

    /// Removes every drop rule in every namespace.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        for ns in &self.namespaces {
            nft(ns, &["flush", "chain", "inet", "chaos", "faults"])?;
        }
        Ok(())
    }

    /// The topology this lab was built for.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
            if let Err(e) = sh("ip", &["netns", "delete", ns]) {
                eprintln!("mesh-chaos: clean-up: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        let name = namespace_name(4242, 3);
        assert_eq!(name, "mchaos-4242-n3");
        assert_eq!(pid_of(&name), Some(4242));
        assert_eq!(pid_of("other-4242-n3"), None);
    }
}
