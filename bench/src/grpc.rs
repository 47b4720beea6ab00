//! mesh through its gRPC API (SPEC §4): the producer streams `SendRequest`s over one
//! `SendStream` at the first node, the consumer holds one `Subscribe` at the last, the way a Go
//! or Python application would use the mesh.
//!
//! The producer keeps up to [`STREAM_WINDOW`] requests unanswered (the node answers each at
//! ACCEPTED or PERSISTED, as FIRE_AND_FORGET asks); the consumer keeps
//! [`SUBSCRIBE_WINDOW`] credits outstanding, granting back what it received after each batch.
//! Any answer other than ACCEPTED / PERSISTED fails the run: nothing is counted as sent that
//! the node refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_lite::StreamExt;
use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_data_client::MeshDataClient;
use tokio::sync::{Semaphore, mpsc};

use crate::systems::{Consumer, Producer};

/// Requests of the producer's stream sent and not yet answered, at most.
pub const STREAM_WINDOW: usize = 4096;
/// Credits the consumer keeps granted.
pub const SUBSCRIBE_WINDOW: u32 = 8192;
/// Requests handed to the stream per channel item.
const CHUNK: usize = 64;

/// The tokio runtime the gRPC clients of a system run on (two workers: the machine's cores).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("grpc-client")
        .enable_all()
        .build()?)
}

async fn connect(addr: SocketAddr) -> Result<MeshDataClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect()
        .await
        .with_context(|| format!("gRPC connect to {addr}"))?;
    Ok(MeshDataClient::new(channel)
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20))
}

/// What the producer's answer reader found.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicU64,
    refused: AtomicU64,
    first_refusal: std::sync::Mutex<Option<String>>,
}

/// Closes the window when the answer reader ends: `acquire_many` then fails instead of
/// waiting for answers that will not come.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The sending end: one `SendStream` at `addr` to node `dst`.
pub struct GrpcProducer {
    rt: tokio::runtime::Handle,
    tx: Option<mpsc::Sender<Vec<pb::SendRequest>>>,
    window: Arc<Semaphore>,
    answers: Arc<Answers>,
    sent: u64,
    reader: Option<tokio::task::JoinHandle<Result<()>>>,
    dst: u64,
    dst_domain: u32,
    buf: Vec<u8>,
    chunk: Vec<pb::SendRequest>,
}

impl GrpcProducer {
    /// Opens the stream to node `dst` of domain `dst_domain`.
    pub fn open(
        rt: tokio::runtime::Handle,
        addr: SocketAddr,
        dst: u64,
        dst_domain: u32,
    ) -> Result<GrpcProducer> {
        let (tx, rx) = mpsc::channel::<Vec<pb::SendRequest>>(64);
        let window = Arc::new(Semaphore::new(STREAM_WINDOW));
        let answers = Arc::new(Answers::default());
        let requests = futures_lite::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .flat_map(futures_lite::stream::iter);
        let mut responses = rt.block_on(async {
            let mut client = connect(addr).await?;
            Ok::<_, anyhow::Error>(client.send_stream(requests).await?.into_inner())
        })?;
        let (win, ans) = (window.clone(), answers.clone());
        let reader = rt.spawn(async move {
            // However the answers end, a producer waiting for window stops waiting.
            let _close = CloseOnDrop(win.clone());
            while let Some(r) = responses.message().await? {
                win.add_permits(1);
                let status = r.status();
                if matches!(
                    status,
                    pb::MessageStatus::Accepted | pb::MessageStatus::Persisted
                ) {
                    ans.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    ans.refused.fetch_add(1, Ordering::Relaxed);
                    let mut first = ans
                        .first_refusal
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    first.get_or_insert_with(|| format!("{status:?}: {}", r.status_message));
                }
            }
            Ok(())
        });
        Ok(GrpcProducer {
            rt,
            tx: Some(tx),
            window,
            answers,
            sent: 0,
            reader: Some(reader),
            dst,
            dst_domain,
            buf: Vec::new(),
            chunk: Vec::with_capacity(CHUNK),
        })
    }

    fn push_chunk(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let n = u32::try_from(chunk.len())?;
        let (tx, window) = (self.tx.as_ref().context("stream closed")?, &self.window);
        self.rt.block_on(async {
            // Back-pressure: wait until the node answered enough of what is in flight.
            window
                .acquire_many(n)
                .await
                .map_err(|_| anyhow::anyhow!("the SendStream's answers ended"))?
                .forget();
            tx.send(chunk)
                .await
                .map_err(|_| anyhow::anyhow!("the SendStream ended"))
        })?;
        self.sent += u64::from(n);
        Ok(())
    }

    fn check_refusals(&self) -> Result<()> {
        let refused = self.answers.refused.load(Ordering::Relaxed);
        if refused > 0 {
            let first = self
                .answers
                .first_refusal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            bail!("the node refused {refused} messages (first: {first})");
        }
        Ok(())
    }
}

impl Producer for GrpcProducer {
    fn send_batch(
        &mut self,
        count: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        self.buf.resize(len, 0x5A);
        for _ in 0..count {
            fill(&mut self.buf);
            self.chunk.push(pb::SendRequest {
                dst_node: self.dst,
                dst_domain: Some(self.dst_domain),
                payload: Bytes::copy_from_slice(&self.buf),
                ..pb::SendRequest::default()
            });
            if self.chunk.len() >= CHUNK {
                self.push_chunk()?;
            }
        }
        self.check_refusals()
    }

    fn flush(&mut self) -> Result<()> {
        self.push_chunk()
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.push_chunk()?;
        drop(self.tx.take());
        if let Some(reader) = self.reader.take() {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(60), reader).await })
                .context("the node did not answer every request within 60 s")???;
        }
        self.check_refusals()?;
        let ok = self.answers.ok.load(Ordering::Relaxed);
        if ok != self.sent {
            bail!("{} requests sent, {ok} answered", self.sent);
        }
        Ok(())
    }
}

/// The receiving end: one `Subscribe` at `addr`.
pub struct GrpcConsumer {
    rt: tokio::runtime::Handle,
    credits: mpsc::UnboundedSender<pb::SubscribeRequest>,
    stream: tonic::Streaming<pb::Received>,
}

impl GrpcConsumer {
    /// Subscribes (every source, every class) with [`SUBSCRIBE_WINDOW`] credits.
    pub fn open(rt: tokio::runtime::Handle, addr: SocketAddr) -> Result<GrpcConsumer> {
        let (credits, rx) = mpsc::unbounded_channel();
        credits.send(pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
                initial_credits: SUBSCRIBE_WINDOW,
                ..pb::SubscribeStart::default()
            })),
        })?;
        let requests =
            futures_lite::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let stream = rt.block_on(async {
            let mut client = connect(addr).await?;
            Ok::<_, anyhow::Error>(client.subscribe(requests).await?.into_inner())
        })?;
        Ok(GrpcConsumer {
            rt,
            credits,
            stream,
        })
    }
}

impl Consumer for GrpcConsumer {
    fn recv_batch(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let stream = &mut self.stream;
        let n = self.rt.block_on(async {
            let first = match tokio::time::timeout(timeout, stream.message()).await {
                Err(_) => return Ok::<_, anyhow::Error>(0),
                Ok(r) => r?.context("the Subscribe stream ended")?,
            };
            on_msg(&first.payload);
            let mut n = 1;
            while n < 4096 {
                match futures_lite::future::poll_once(stream.message()).await {
                    Some(r) => {
                        let m = r?.context("the Subscribe stream ended")?;
                        on_msg(&m.payload);
                        n += 1;
                    }
                    None => break,
                }
            }
            Ok(n)
        })?;
        if n > 0 {
            self.credits.send(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Credits(u32::try_from(n)?)),
            })?;
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
