//! The Zenoh comparison (feature `zenoh`): two routers as separate processes (the
//! `zenoh-router` binary of this crate), router B dialling router A, and two zenoh client
//! sessions in the harness: the publisher attached to router A only, the subscriber to router B
//! only, so every message crosses the router-to-router link, as a NATS message crosses the
//! cluster route and a mesh message a link.
//!
//! Settings, chosen to match how core NATS is used beside it:
//! - **Reliable** (zenoh's default reliability; over TCP every hop is reliable) and congestion
//!   control **Block** on the publisher: when a queue on the path is full the publisher (and a
//!   router forwarding its messages) waits instead of dropping, which is zenoh's lossless mode
//!   (the default, Drop, would discard messages under saturation). If zenoh still drops
//!   under load, the harness counts the difference as `lost`, as it does for NATS.
//! - Not express: messages are batched, but only under back-pressure (zenoh's adaptive
//!   batching; an idle link sends at once), as the NATS client and the mesh client buffer their
//!   writes.
//! - TCP only, multicast and gossip scouting off, everything else zenoh's default (as `zenohd`
//!   would run).
//!
//! No extra async runtime here, unlike [`crate::systems::NatsSystem`]: zenoh runs its own tokio
//! runtimes inside the process, and its [`Wait`] API is the synchronous face of the same calls
//! (`put(..).await` is `ready(put(..).wait())`), so the producer's thread blocks in `wait()`
//! when the publisher pushes back, and the consumer waits on the subscriber's bounded channel.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zenoh::Wait;
use zenoh::handlers::{FifoChannel, FifoChannelHandler};
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;

use crate::procs::{Proc, free_port};
use crate::systems::{Consumer, Producer, ProducerOpener, System};

/// Samples the subscriber's channel holds before zenoh's receive task blocks on it (and back-
/// pressure reaches router B): about the 1 MiB the TCP consumer reads into, at 64 B.
const SUBSCRIBER_QUEUE_LEN: usize = 16 << 10;
/// Most messages one `recv_batch` hands out (as the NATS consumer's).
const RECV_BATCH_MAX: usize = 4096;
/// How long the routers may take to start and connect to each other.
const ROUTERS_READY_WITHIN: Duration = Duration::from_secs(30);

/// Where the router binary is by default: `target/release/zenoh-router` of the current
/// directory, else of this workspace.
pub fn default_router_bin() -> PathBuf {
    let local = PathBuf::from("target/release/zenoh-router");
    if local.is_file() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/zenoh-router")
}

fn zerr(e: zenoh::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e)
}

/// The configuration of a client session attached to the router at `endpoint` and nothing else.
fn client_config(endpoint: &str) -> Result<zenoh::Config> {
    let json = serde_json::json!({
        "mode": "client",
        "connect": { "endpoints": [endpoint] },
        "scouting": {
            "multicast": { "enabled": false },
            "gossip": { "enabled": false },
        },
    });
    zenoh::Config::from_json5(&json.to_string())
        .map_err(zerr)
        .context("zenoh client configuration")
}

/// Two `zenoh-router` processes on loopback, connected to each other.
#[derive(Debug)]
struct ZenohRouters {
    /// Client endpoints (`tcp/127.0.0.1:port`): the publisher uses the first, the subscriber
    /// the second.
    endpoints: [String; 2],
    procs: Vec<Proc>,
    /// Ready files and the routers' stderr logs (removed with the routers).
    dir: tempfile::TempDir,
}

impl ZenohRouters {
    /// Starts router A and router B (which dials A), and waits until each is connected to the
    /// other.
    fn start(bin: &Path) -> Result<ZenohRouters> {
        if !bin.is_file() {
            bail!(
                "no zenoh-router binary at {} (build it: cargo build --release -p mesh-bench \
                 --features zenoh --bin zenoh-router)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("mesh-bench-zenoh-")
            .tempdir()?;
        let endpoints = [
            format!("tcp/127.0.0.1:{}", free_port()?),
            format!("tcp/127.0.0.1:{}", free_port()?),
        ];
        let mut procs = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("router-{name}.log")))?;
            let mut cmd = Command::new(bin);
            cmd.args(["--listen", &endpoints[i], "--routers", "1"])
                .arg("--ready-file")
                .arg(dir.path().join(format!("{name}.ready")))
                // Pinned: a RUST_LOG meant for something else must not slow the routers down.
                .env("RUST_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if i == 1 {
                // One dial, B to A: the link is a single transport either way.
                cmd.args(["--connect", &endpoints[0]]);
            }
            procs.push(Proc::spawn(format!("zenoh router {name}"), &mut cmd)?);
        }
        let mut routers = ZenohRouters {
            endpoints,
            procs,
            dir,
        };
        routers.wait_ready()?;
        Ok(routers)
    }

    /// Waits until both routers wrote their ready file (each sees the other), failing early if
    /// one exits.
    fn wait_ready(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            for p in &mut self.procs {
                p.check_running()
                    .with_context(|| format!("router logs in {}", self.dir.path().display()))?;
            }
            if ["a", "b"]
                .iter()
                .all(|n| self.dir.path().join(format!("{n}.ready")).is_file())
            {
                return Ok(());
            }
            if t0.elapsed() > ROUTERS_READY_WITHIN {
                bail!("zenoh routers not connected within {ROUTERS_READY_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Two Zenoh routers, publisher (client session) at router A, subscriber (client session) at
/// router B; reliable, congestion control Block (see the module docs).
#[derive(Debug)]
pub struct ZenohSystem {
    // Sessions first: they close before the routers are killed.
    publisher: zenoh::Session,
    subscriber: zenoh::Session,
    next_key: u64,
    _routers: ZenohRouters,
}

impl ZenohSystem {
    /// Starts the two routers from the binary at `router_bin` (see [`default_router_bin`]) and
    /// opens the two client sessions.
    pub fn start(router_bin: &Path) -> Result<ZenohSystem> {
        let routers = ZenohRouters::start(router_bin)?;
        let open = |endpoint: &str| -> Result<zenoh::Session> {
            zenoh::open(client_config(endpoint)?)
                .wait()
                .map_err(zerr)
                .with_context(|| format!("zenoh client attaches to {endpoint}"))
        };
        Ok(ZenohSystem {
            publisher: open(&routers.endpoints[0])?,
            subscriber: open(&routers.endpoints[1])?,
            next_key: 0,
            _routers: routers,
        })
    }

    fn key(&self) -> String {
        format!("bench/run/{}", self.next_key)
    }
}

impl System for ZenohSystem {
    fn name(&self) -> String {
        "zenoh".into()
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        self.next_key += 1;
        let sub = self
            .subscriber
            .declare_subscriber(self.key())
            .with(FifoChannel::new(SUBSCRIBER_QUEUE_LEN))
            .wait()
            .map_err(zerr)?;
        Ok(Box::new(ZenohConsumer { sub }))
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        let publisher = self
            .publisher
            .declare_publisher(self.key())
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(zerr)?;
        Ok(Box::new(move || {
            Ok(Box::new(ZenohProducer { publisher }) as Box<dyn Producer>)
        }))
    }
}

struct ZenohProducer {
    publisher: Publisher<'static>,
}

impl Producer for ZenohProducer {
    fn send_batch(
        &mut self,
        count: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        for _ in 0..count {
            // One owned buffer per message, moved into zenoh (NATS copies into a `Bytes`).
            let mut msg = vec![0x5A; len];
            fill(&mut msg);
            // Blocks while the transmission queue is full (congestion control Block).
            self.publisher.put(msg).wait().map_err(zerr)?;
        }
        Ok(())
    }

    /// Nothing to push: zenoh's transmit task sends queued batches as soon as the link takes
    /// them, without waiting for more.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.publisher.undeclare().wait().map_err(zerr)
    }
}

struct ZenohConsumer {
    sub: Subscriber<FifoChannelHandler<Sample>>,
}

impl Consumer for ZenohConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let Some(first) = self.sub.recv_timeout(timeout).map_err(zerr)? else {
            return Ok(0);
        };
        on_msg(&first.payload().to_bytes());
        let mut n = 1;
        // Then whatever is already queued, without waiting again.
        while n < RECV_BATCH_MAX {
            let Some(s) = self.sub.try_recv().map_err(zerr)? else {
                break;
            };
            on_msg(&s.payload().to_bytes());
            n += 1;
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.sub.undeclare().wait().map_err(zerr)
    }
}
