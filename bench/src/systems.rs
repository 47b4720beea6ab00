//! The systems under test, behind one seam: a [`System`] opens a [`Producer`] and a
//! [`Consumer`] for a run, and the load loops in [`crate::run`] drive any of them the same way.
//!
//! mesh through the native client or gRPC ([`MeshSystem`]: pair, line or ring with domains;
//! forwarding only or exactly-once with a durability; TLS or not), a two-server NATS cluster
//! through `async-nats` ([`NatsSystem`]), and one plain loopback TCP stream with
//! length-prefixed messages ([`TcpSystem`], the ceiling).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_lite::StreamExt;
use mesh_client::{Client, ClientOptions};

use crate::procs::{MeshCluster, MeshOptions, NatsCluster, Shape};

/// The sending end of a run. Messages all have the same length within a run. Lives on the
/// producer thread (the mesh client is not `Send`): made there by a [`ProducerOpener`].
pub trait Producer {
    /// Queues `count` messages of `len` bytes; `fill` writes each one (its stamp) first.
    /// May block when the system pushes back.
    fn send_batch(&mut self, count: u64, len: usize, fill: &mut dyn FnMut(&mut [u8]))
    -> Result<()>;
    /// Pushes out everything queued.
    fn flush(&mut self) -> Result<()>;
    /// Flushes and ends the session gracefully.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Makes a [`Producer`] on the thread that calls it.
pub type ProducerOpener = Box<dyn FnOnce() -> Result<Box<dyn Producer>> + Send>;

/// The receiving end of a run (on the thread that opened it).
pub trait Consumer {
    /// Waits up to `timeout` for messages and hands each one that arrived to `on_msg`;
    /// returns how many.
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize>;
    /// Ends the session.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Something to measure, started and ready to carry messages. Each run opens a consumer,
/// then a producer whose messages reach it.
pub trait System {
    /// Short name for tables and files (`mesh-pair`, `nats`, `tcp`…).
    fn name(&self) -> String;
    /// The consumer of a new run (subscribed before the producer exists).
    fn consumer(&mut self) -> Result<Box<dyn Consumer>>;
    /// How to open the producer of that run, on the producer's thread.
    fn producer(&mut self) -> Result<ProducerOpener>;
    /// Messages the system itself reports dropping so far, if it reports any.
    fn dropped(&self) -> Option<u64> {
        None
    }
}

// --- mesh ------------------------------------------------------------------------------------

/// How the producer and the consumer reach their nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The native wire client (`mesh-client`).
    Native,
    /// The gRPC API: `SendStream` and `Subscribe` ([`crate::grpc`]).
    Grpc,
}

/// Where a run's producer and consumer attach and where the messages go: the same for the
/// nodes the harness started and for nodes it attached to.
#[derive(Debug)]
struct Endpoints {
    via: Via,
    /// The producer's node: its client port, or its gRPC port.
    producer: SocketAddr,
    /// The consumer's node, likewise.
    consumer: SocketAddr,
    dst_node: u64,
    dst_domain: u32,
    /// The native consumer acks every delivery (needed under exactly-once delivery; the gRPC
    /// hub acks for its subscribers).
    ack: bool,
    /// The gRPC clients' runtime (gRPC only).
    rt: Option<tokio::runtime::Runtime>,
}

impl Endpoints {
    fn new(
        via: Via,
        (producer, consumer): (SocketAddr, SocketAddr),
        (dst_node, dst_domain): (u64, u32),
        ack: bool,
    ) -> Result<Endpoints> {
        let rt = match via {
            Via::Grpc => Some(crate::grpc::runtime()?),
            Via::Native => None,
        };
        Ok(Endpoints {
            via,
            producer,
            consumer,
            dst_node,
            dst_domain,
            ack,
            rt,
        })
    }

    fn consumer(&self) -> Result<Box<dyn Consumer>> {
        if let Some(rt) = &self.rt {
            return Ok(Box::new(crate::grpc::GrpcConsumer::open(
                rt.handle().clone(),
                self.consumer,
            )?));
        }
        let client = Client::connect(
            self.consumer,
            ClientOptions {
                subscribe: true,
                ..ClientOptions::default()
            },
        )
        .with_context(|| format!("mesh subscriber attaches to {}", self.consumer))?;
        Ok(Box::new(MeshConsumer {
            client,
            ack: self.ack,
        }))
    }

    fn producer(&self) -> ProducerOpener {
        let (addr, dst, dst_domain) = (self.producer, self.dst_node, self.dst_domain);
        if let Some(rt) = &self.rt {
            let rt = rt.handle().clone();
            return Box::new(move || {
                Ok(
                    Box::new(crate::grpc::GrpcProducer::open(rt, addr, dst, dst_domain)?)
                        as Box<dyn Producer>,
                )
            });
        }
        Box::new(move || {
            let client = Client::connect(addr, ClientOptions::default())
                .with_context(|| format!("mesh producer attaches to {addr}"))?;
            Ok(Box::new(MeshProducer {
                client,
                dst,
                dst_domain,
                buf: Vec::new(),
            }) as Box<dyn Producer>)
        })
    }
}

/// mesh nodes in a [`Shape`]: producer at node 1, consumer (subscribed) at the shape's
/// consumer node, through the native client or gRPC.
#[derive(Debug)]
pub struct MeshSystem {
    shape: Shape,
    opts: MeshOptions,
    cluster: MeshCluster,
    ends: Endpoints,
}

impl MeshSystem {
    /// Starts the nodes: forwarding only, native client.
    pub fn start(bin: &Path, shape: Shape) -> Result<MeshSystem> {
        MeshSystem::start_with(bin, shape, Via::Native, MeshOptions::default())
    }

    /// Starts the nodes with `opts`, loaded through `via`.
    pub fn start_with(
        bin: &Path,
        shape: Shape,
        via: Via,
        mut opts: MeshOptions,
    ) -> Result<MeshSystem> {
        opts.grpc |= via == Via::Grpc;
        let cluster = MeshCluster::start_with(bin, shape, &opts)?;
        let consumer = shape.consumer_node() as usize - 1;
        let addrs = match via {
            Via::Native => (cluster.listen[0], cluster.listen[consumer]),
            Via::Grpc => (cluster.grpc[0], cluster.grpc[consumer]),
        };
        let dst = (
            u64::from(shape.consumer_node()),
            shape.domain_of(shape.consumer_node()),
        );
        let ends = Endpoints::new(via, addrs, dst, opts.durability.is_some())?;
        Ok(MeshSystem {
            shape,
            opts,
            cluster,
            ends,
        })
    }

    /// The nodes.
    pub fn cluster(&self) -> &MeshCluster {
        &self.cluster
    }
}

impl System for MeshSystem {
    fn name(&self) -> String {
        let via = match self.ends.via {
            Via::Native => "",
            Via::Grpc => "-grpc",
        };
        let shape = match self.shape {
            Shape::Pair => "pair".to_owned(),
            Shape::Line { hops } => format!("line{hops}"),
            Shape::Ring { nodes } => format!("ring{nodes}"),
        };
        format!("mesh{via}-{shape}{}", self.opts.label())
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        self.ends.consumer()
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        Ok(self.ends.producer())
    }

    fn dropped(&self) -> Option<u64> {
        self.cluster.dropped_total()
    }
}

/// mesh nodes the harness did not start (`--attach`): the producer attaches to one node, the
/// consumer to another (or the same), through the native client or gRPC. The nodes' delivery
/// mode is theirs; the consumer acks every delivery (harmless under raw delivery, needed under
/// exactly-once).
#[derive(Debug)]
pub struct AttachedSystem {
    ends: Endpoints,
}

impl AttachedSystem {
    /// Attaches to `producer_addr` and `consumer_addr` (client ports, or gRPC ports with
    /// `via` gRPC), sending to node `dst_node` of domain `dst_domain`. Connections are made
    /// per run.
    pub fn new(
        producer_addr: SocketAddr,
        consumer_addr: SocketAddr,
        dst_node: u64,
        dst_domain: u32,
        via: Via,
    ) -> Result<AttachedSystem> {
        Ok(AttachedSystem {
            ends: Endpoints::new(
                via,
                (producer_addr, consumer_addr),
                (dst_node, dst_domain),
                true,
            )?,
        })
    }
}

impl System for AttachedSystem {
    fn name(&self) -> String {
        match self.ends.via {
            Via::Native => "mesh-attached".into(),
            Via::Grpc => "mesh-grpc-attached".into(),
        }
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        self.ends.consumer()
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        Ok(self.ends.producer())
    }
}

/// A mesh system named on the command line: `mesh-<shape>[+<modifier>…]` with shape `pair`,
/// `line` (`hops` links) or `ring` (`ring_nodes` nodes in two domains) and modifiers `grpc`
/// (load through the gRPC API), `none` / `batch` / `always` (exactly-once delivery at that
/// durability; without one, forwarding only) and `tls`. `mesh-grpc-pair` is `mesh-pair+grpc`.
pub fn parse_mesh(name: &str, hops: u32, ring_nodes: u32) -> Result<(Shape, Via, MeshOptions)> {
    let (name, mut via) = match name.strip_prefix("mesh-grpc-") {
        Some(rest) => (format!("mesh-{rest}"), Via::Grpc),
        None => (name.to_owned(), Via::Native),
    };
    let mut parts = name.split('+');
    let shape = match parts.next().unwrap_or_default() {
        "mesh-pair" => Shape::Pair,
        "mesh-line" => Shape::Line { hops },
        "mesh-ring" => Shape::Ring { nodes: ring_nodes },
        other => anyhow::bail!("unknown mesh shape {other:?} (mesh-pair, mesh-line, mesh-ring)"),
    };
    let mut opts = MeshOptions::default();
    for m in parts {
        match m {
            "grpc" => via = Via::Grpc,
            "tls" => opts.tls = true,
            "none" | "batch" | "always" => opts.durability = Some(m.to_owned()),
            other => anyhow::bail!(
                "unknown modifier {other:?} of {name:?} (grpc, tls, none, batch, always)"
            ),
        }
    }
    Ok((shape, via, opts))
}

struct MeshProducer {
    client: Client,
    dst: u64,
    dst_domain: u32,
    buf: Vec<u8>,
}

impl Producer for MeshProducer {
    fn send_batch(
        &mut self,
        count: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        self.buf.resize(len, 0x5A);
        for _ in 0..count {
            fill(&mut self.buf);
            self.client.send(self.dst, self.dst_domain, &self.buf)?;
        }
        // Nothing here waits for receipts (losses are counted at the consumer): the ones the
        // client took in are dropped, so a long run does not pile them up.
        self.client.receipts().clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.client.flush()?)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.client.close()?)
    }
}

struct MeshConsumer {
    client: Client,
    /// Ack every delivery, as an application must under exactly-once delivery: the
    /// destination holds each message until it is acked (a bounded number per core; a
    /// consumer that never acks stalls the flow).
    ack: bool,
}

impl Consumer for MeshConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let Some(d) = self.client.recv(Some(timeout))? else {
            return Ok(0);
        };
        on_msg(&d.payload);
        if self.ack {
            self.client.ack(d.src_node, d.msg_id, true)?;
        }
        let mut n = 1;
        // Then whatever that read brought in, without waiting again.
        while let Some(d) = self.client.recv(Some(Duration::ZERO))? {
            on_msg(&d.payload);
            if self.ack {
                self.client.ack(d.src_node, d.msg_id, true)?;
            }
            n += 1;
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.client.close()?)
    }
}

// --- NATS ------------------------------------------------------------------------------------

/// A two-server NATS cluster (core NATS, no JetStream): publisher on server A, subscriber on
/// server B, so every message crosses the cluster route as a mesh message crosses a link.
#[derive(Debug)]
pub struct NatsSystem {
    rt: tokio::runtime::Runtime,
    publisher: async_nats::Client,
    subscriber: async_nats::Client,
    next_subject: u64,
    cluster: NatsCluster,
}

impl NatsSystem {
    /// Starts the servers and connects the two clients.
    pub fn start(bin: &Path) -> Result<NatsSystem> {
        let cluster = NatsCluster::start(bin)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats-client")
            .enable_all()
            .build()?;
        let (publisher, subscriber) = rt.block_on(async {
            let p = async_nats::connect(cluster.urls[0].as_str()).await?;
            let s = async_nats::connect(cluster.urls[1].as_str()).await?;
            Ok::<_, async_nats::ConnectError>((p, s))
        })?;
        Ok(NatsSystem {
            rt,
            publisher,
            subscriber,
            next_subject: 0,
            cluster,
        })
    }

    /// `nats-server --version` of the cluster.
    pub fn version(&self) -> &str {
        &self.cluster.version
    }
}

impl System for NatsSystem {
    fn name(&self) -> String {
        "nats".into()
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        self.next_subject += 1;
        let subject = format!("bench.run.{}", self.next_subject);
        let sub = self.rt.block_on(async {
            let sub = self.subscriber.subscribe(subject).await?;
            self.subscriber.flush().await?;
            Ok::<_, anyhow::Error>(sub)
        })?;
        Ok(Box::new(NatsConsumer {
            rt: self.rt.handle().clone(),
            sub,
        }))
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        let p = NatsProducer {
            rt: self.rt.handle().clone(),
            client: self.publisher.clone(),
            subject: async_nats::Subject::from(format!("bench.run.{}", self.next_subject)),
            buf: Vec::new(),
        };
        Ok(Box::new(move || Ok(Box::new(p) as Box<dyn Producer>)))
    }
}

struct NatsProducer {
    rt: tokio::runtime::Handle,
    client: async_nats::Client,
    subject: async_nats::Subject,
    buf: Vec<u8>,
}

impl Producer for NatsProducer {
    fn send_batch(
        &mut self,
        count: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        self.buf.resize(len, 0x5A);
        let (client, subject, buf) = (&self.client, &self.subject, &mut self.buf);
        // One block_on per batch, not per message: the async hop costs the same order as a
        // small publish.
        self.rt.block_on(async {
            for _ in 0..count {
                fill(buf);
                client
                    .publish(subject.clone(), bytes::Bytes::copy_from_slice(buf))
                    .await?;
            }
            Ok::<_, async_nats::PublishError>(())
        })?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.rt.block_on(self.client.flush())?)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.rt.block_on(self.client.flush())?)
    }
}

struct NatsConsumer {
    rt: tokio::runtime::Handle,
    sub: async_nats::Subscriber,
}

impl Consumer for NatsConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let sub = &mut self.sub;
        self.rt.block_on(async {
            let first = tokio::time::timeout(timeout, sub.next()).await;
            let Ok(Some(m)) = first else {
                return Ok(0);
            };
            on_msg(&m.payload);
            let mut n = 1;
            while n < 4096 {
                match futures_lite::future::poll_once(sub.next()).await {
                    Some(Some(m)) => {
                        on_msg(&m.payload);
                        n += 1;
                    }
                    _ => break,
                }
            }
            Ok(n)
        })
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let sub = &mut self.sub;
        Ok(self.rt.block_on(sub.unsubscribe())?)
    }
}

// --- plain TCP -------------------------------------------------------------------------------

/// One loopback TCP stream per run carrying `[u32 length][payload]` messages, written through
/// the same 256 KiB buffer as the mesh client's: what any broker on this machine could reach.
#[derive(Debug)]
pub struct TcpSystem {
    listener: TcpListener,
    /// The writing end of the stream the last consumer reads, until its producer takes it.
    pending_writer: Option<TcpStream>,
}

/// Write buffer of the TCP producer (as the mesh client's default).
const TCP_BUF_LEN: usize = 256 << 10;

impl TcpSystem {
    /// Listens on a loopback port.
    pub fn start() -> Result<TcpSystem> {
        Ok(TcpSystem {
            listener: TcpListener::bind("127.0.0.1:0")?,
            pending_writer: None,
        })
    }

    fn addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }
}

impl System for TcpSystem {
    fn name(&self) -> String {
        "tcp".into()
    }

    fn consumer(&mut self) -> Result<Box<dyn Consumer>> {
        let w = TcpStream::connect(self.addr()?)?;
        let (r, _) = self.listener.accept()?;
        w.set_nodelay(true)?;
        self.pending_writer = Some(w);
        Ok(Box::new(TcpConsumer {
            sock: r,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            eof: false,
        }))
    }

    fn producer(&mut self) -> Result<ProducerOpener> {
        let sock = self
            .pending_writer
            .take()
            .context("open the consumer of a run before its producer")?;
        Ok(Box::new(move || {
            Ok(Box::new(TcpProducer {
                sock,
                out: Vec::with_capacity(TCP_BUF_LEN),
                buf: Vec::new(),
            }) as Box<dyn Producer>)
        }))
    }
}

struct TcpProducer {
    sock: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Producer for TcpProducer {
    fn send_batch(
        &mut self,
        count: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        self.buf.resize(len, 0x5A);
        let len32 = u32::try_from(len)?;
        for _ in 0..count {
            fill(&mut self.buf);
            self.out.extend_from_slice(&len32.to_be_bytes());
            self.out.extend_from_slice(&self.buf);
            if self.out.len() >= TCP_BUF_LEN {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.sock.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.sock.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    }
}

struct TcpConsumer {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The producer closed its side: nothing more will come.
    eof: bool,
}

impl TcpConsumer {
    /// Hands out every whole message in the buffer.
    fn drain(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        loop {
            let have = &self.buf[self.start..self.end];
            let Some(len) = have
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                break;
            };
            let len = len as usize;
            if have.len() < 4 + len {
                if 4 + len > self.buf.len() {
                    self.buf.resize(4 + len, 0);
                }
                break;
            }
            on_msg(&have[4..4 + len]);
            self.start += 4 + len;
            n += 1;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        n
    }
}

impl Consumer for TcpConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.drain(on_msg);
            if n > 0 {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            if self.eof {
                std::thread::sleep(left);
                return Ok(0);
            }
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_system_names_parse_into_shape_path_and_options() {
        let (shape, via, opts) = parse_mesh("mesh-pair", 2, 6).unwrap();
        assert_eq!(
            (shape, via, opts),
            (Shape::Pair, Via::Native, MeshOptions::default())
        );
        let (shape, via, opts) = parse_mesh("mesh-grpc-line+batch+tls", 3, 6).unwrap();
        assert_eq!((shape, via), (Shape::Line { hops: 3 }, Via::Grpc));
        assert_eq!(opts.durability.as_deref(), Some("batch"));
        assert!(opts.tls);
        assert_eq!(opts.label(), "+batch+tls");
        let (shape, via, _) = parse_mesh("mesh-ring+grpc", 2, 6).unwrap();
        assert_eq!((shape, via), (Shape::Ring { nodes: 6 }, Via::Grpc));
        assert!(parse_mesh("mesh-star", 2, 6).is_err());
        assert!(parse_mesh("mesh-pair+fast", 2, 6).is_err());
    }

    #[test]
    fn tcp_messages_arrive_whole_across_reads_and_buffer_growth() {
        let mut sys = TcpSystem::start().unwrap();
        let mut c = sys.consumer().unwrap();
        let opener = sys.producer().unwrap();
        let sizes = [64usize, 3, 2 << 20, 100, 70_000];
        let writer = std::thread::spawn(move || {
            let mut p = opener().unwrap();
            for (i, len) in sizes.iter().enumerate() {
                let tag = u8::try_from(i).unwrap();
                p.send_batch(3, *len, &mut |b| b.fill(tag)).unwrap();
            }
            p.close().unwrap();
        });
        let mut got = Vec::new();
        while got.len() < 15 {
            c.recv_batch(Duration::from_secs(5), &mut |m| got.push((m.len(), m[0])))
                .unwrap();
        }
        writer.join().unwrap();
        let want: Vec<(usize, u8)> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, l)| std::iter::repeat_n((*l, u8::try_from(i).unwrap()), 3))
            .collect();
        assert_eq!(got, want);
    }
}
