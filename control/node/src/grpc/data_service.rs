//! The `mesh.v1.MeshData` service: Send, SendStream, Subscribe, Ack and GetStatus (SPEC §4).
//!
//! Sends go through the [`Gateway`] (a native-client session of this node with itself) and so
//! through the core that allocates the msg_id, the WAL and the exactly-once machines; the
//! receipts the node sends back decide when a call answers (its `mode`). Subscribe streams
//! share one subscriber session; a hub task hands each message the node offers to one matching
//! stream with credits, acks messages without `require_ack` once handed over, and gives a
//! stream's unacked messages to the next subscriber when it ends (`delivery_attempt` + 1).
//! GetStatus asks the cores that allocated the ids ([`EngineHandle::status`]).
//!
//! Bad requests are refused with INVALID_ARGUMENT and a message naming the field (in a
//! SendStream, a FAILED response with INVALID_REQUEST, and the stream goes on).

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mesh_engine::{DeliveryMode, EngineHandle};
use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_data_server::MeshData;
use mesh_wire::{Flags, IDEMPOTENCY_KEY_MAX, Metadata};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::gateway::{
    Answer, Gateway, GatewayError, Incoming, Link, Outgoing, Reply, SendOrder, Wait,
};
use super::metrics::{GrpcMethod, GrpcMetrics};

/// Largest payload a Send takes: a message is one record in the store (at most 16 MiB with the
/// default 64 MiB WAL segments; smaller segments refuse less with FAILED / TOO_LARGE).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// How long WAIT_FOR_DELIVERY and WAIT_FOR_ACK wait when the request says 0.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Most ids in one GetStatus.
pub const MAX_STATUS_IDS: usize = 1024;
/// Requests of one SendStream waiting for their answers at a time; the stream's next request
/// is read once one of them is answered.
pub const MAX_STREAM_IN_FLIGHT: usize = 8192;
/// Requests of one SendStream handed to the node at once (what was decoded together).
const SEND_BATCH_MAX: usize = 1024;
/// Initial credits of a Subscribe that asks for 0.
pub const DEFAULT_CREDITS: u32 = 256;
/// Messages the hub holds for subscribers that have no credits (more wait at the node).
const HUB_PENDING_MAX: usize = 4096;
/// Acked keys remembered, so that a repeated Ack succeeds.
const ACKED_KEPT: usize = 65_536;

/// MeshData for one node.
#[derive(Clone)]
pub struct MeshDataService {
    gateway: Arc<Gateway>,
    hub: mpsc::Sender<HubCommand>,
    engine: Arc<EngineHandle>,
    mode: DeliveryMode,
    metrics: Arc<GrpcMetrics>,
}

impl std::fmt::Debug for MeshDataService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshDataService")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl MeshDataService {
    /// The service of the node whose data plane is `engine`, reached through in-process
    /// sessions with its cores. Spawns the subscriber hub on the current tokio runtime.
    #[must_use]
    pub fn new(
        engine: Arc<EngineHandle>,
        mode: DeliveryMode,
        metrics: Arc<GrpcMetrics>,
    ) -> MeshDataService {
        let gateway = Arc::new(Gateway::new(engine.clone()));
        let (hub, rx) = mpsc::channel(1024);
        tokio::spawn(Hub::new(engine.clone(), mode == DeliveryMode::ExactlyOnce).run(rx));
        MeshDataService {
            gateway,
            hub,
            engine,
            mode,
            metrics,
        }
    }

    fn record<T>(&self, method: GrpcMethod, t0: Instant, r: &Result<T, Status>) {
        let code = r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.record(method, code, t0.elapsed());
    }

    /// When a request in `mode` is answered and until when it waits.
    fn order(&self, msg: Outgoing, mode: pb::SendMode, wait: Duration, token: u64) -> SendOrder {
        let (wait, deadline) = if self.mode == DeliveryMode::Raw {
            // Nothing is stored or tracked: taken is all there is to say.
            (Wait::Taken, None)
        } else {
            match mode {
                pb::SendMode::FireAndForget => (Wait::Persisted, None),
                pb::SendMode::WaitForDelivery => {
                    (Wait::Delivered, Some(tokio::time::Instant::now() + wait))
                }
                pb::SendMode::WaitForAck => (Wait::Acked, Some(tokio::time::Instant::now() + wait)),
            }
        };
        SendOrder {
            msg,
            token,
            wait,
            deadline,
        }
    }

    /// One Send: validated, handed to the node, answered when its mode is satisfied.
    async fn send_one(&self, req: pb::SendRequest) -> Result<pb::SendResponse, Status> {
        let (msg, mode, wait) = validate(req)?;
        let link = self.gateway.link().await.map_err(unavailable)?;
        let (sink, mut answers) = mpsc::unbounded_channel();
        if link
            .send(vec![self.order(msg, mode, wait, 0)], sink)
            .await
            .is_err()
        {
            return Err(Status::unavailable("the session with the node ended"));
        }
        let answer = answers
            .recv()
            .await
            .and_then(|mut batch| batch.pop())
            .ok_or_else(|| Status::unavailable("the session with the node ended"))?;
        match answer.result {
            Ok(reply) => Ok(response(reply, 0)),
            Err(GatewayError::Invalid(m)) => Err(Status::invalid_argument(m)),
            Err(e @ GatewayError::Unavailable(_)) => Err(unavailable(e)),
        }
    }

    /// Runs one SendStream: requests are read while fewer than [`MAX_STREAM_IN_FLIGHT`] wait
    /// for their answer (past that, HTTP/2 flow control holds the client back); what is
    /// already decoded goes to the node as one batch on the stream's link; answers are
    /// written as they come, each with its request's position.
    async fn run_send_stream(
        &self,
        mut requests: Streaming<pb::SendRequest>,
        tx: mpsc::Sender<Result<pb::SendResponse, Status>>,
    ) {
        let (sink, mut answers) = mpsc::unbounded_channel::<Vec<Answer>>();
        let mut link: Option<Link> = None;
        let mut position = 0u64;
        let mut in_flight = 0usize;
        let mut reading = true;
        while reading || in_flight > 0 {
            // Empty until requests come (answers are most turns of this loop).
            let mut orders = Vec::new();
            let mut refusals = Vec::new();
            tokio::select! {
                biased;
                Some(batch) = answers.recv() => {
                    in_flight -= batch.len();
                    for a in batch {
                        if tx.send(Ok(answer_response(a))).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                r = requests.message(), if reading && in_flight < MAX_STREAM_IN_FLIGHT => {
                    let mut next = Some(r);
                    while let Some(r) = next.take() {
                        match r {
                            Ok(Some(req)) => {
                                let pos = position;
                                position += 1;
                                match validate(req) {
                                    Ok((msg, mode, wait)) => {
                                        orders.push(self.order(msg, mode, wait, pos));
                                    }
                                    Err(s) => refusals.push(refused(pos, &s)),
                                }
                            }
                            Ok(None) => reading = false,
                            Err(e) => {
                                debug!(error = %e, "SendStream request stream failed");
                                reading = false;
                            }
                        }
                        // Then what is already decoded, without waiting for more.
                        if reading
                            && orders.len() + in_flight < MAX_STREAM_IN_FLIGHT
                            && orders.len() < SEND_BATCH_MAX
                        {
                            next = ready_now(requests.message());
                        }
                    }
                }
            }
            for r in refusals {
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
            if orders.is_empty() {
                continue;
            }
            let n = orders.len();
            let live = match link.take().filter(|l| !l.is_closed()) {
                Some(l) => Ok(l),
                None => self.gateway.link().await,
            };
            // Not taken: each is answered FAILED now, and the next batch tries a new link.
            let (back, status) = match live {
                Ok(l) => match l.send(orders, sink.clone()).await {
                    Ok(()) => {
                        in_flight += n;
                        link = Some(l);
                        continue;
                    }
                    Err(back) => (back, Status::unavailable("the session with the node ended")),
                },
                Err(e) => (orders, unavailable(e)),
            };
            for o in back {
                if tx.send(Ok(refused(o.token, &status))).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn get_status(&self, req: pb::GetStatusRequest) -> Result<pb::GetStatusResponse, Status> {
        validate_status(&req)?;
        let engine = self.engine.clone();
        let ids = req.msg_ids.clone();
        let found =
            tokio::task::spawn_blocking(move || engine.status(&ids, Duration::from_secs(5)))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
        let now_instant = Instant::now();
        let now_wall = SystemTime::now();
        let entries = req
            .msg_ids
            .iter()
            .zip(found)
            .map(|(&msg_id, entry)| match entry {
                None => pb::MessageStatusEntry {
                    msg_id,
                    found: false,
                    ..pb::MessageStatusEntry::default()
                },
                Some(e) => {
                    let age = now_instant.saturating_duration_since(e.changed_at);
                    let at = now_wall.checked_sub(age).unwrap_or(now_wall);
                    pb::MessageStatusEntry {
                        msg_id,
                        found: true,
                        status: i32::from(e.status.code()),
                        status_message: e
                            .reason
                            .map_or_else(String::new, |r| r.describe().to_owned()),
                        updated_at: Some(prost_types::Timestamp::from(at)),
                        failure_reason: e.reason.map_or(0, |r| i32::from(r.code())),
                    }
                }
            })
            .collect();
        Ok(pb::GetStatusResponse { entries })
    }

    async fn ack(&self, req: pb::AckRequest) -> Result<(), Status> {
        if req.src_node == 0 || req.msg_id == 0 {
            return Err(Status::invalid_argument(
                "src_node and msg_id: the Received message's, not 0",
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.hub
            .send(HubCommand::Ack {
                src_node: req.src_node,
                msg_id: req.msg_id,
                success: req.success,
                found: Some(tx),
            })
            .await
            .map_err(|_| Status::unavailable("the node is stopping"))?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::not_found(format!(
                "no message ({}, {}) is held for this node's gRPC subscribers",
                req.src_node, req.msg_id
            ))),
            Err(_) => Err(Status::unavailable("the node is stopping")),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

/// The SendResponse of a request at `position` whose receipts told `reply`.
fn response(reply: Reply, position: u64) -> pb::SendResponse {
    let failure_reason = if i32::from(reply.status) == pb::MessageStatus::Failed as i32 {
        i32::from(reply.reason.unwrap_or(0))
    } else {
        0
    };
    pb::SendResponse {
        msg_id: reply.msg_id,
        status: i32::from(reply.status),
        status_message: status_message(reply.status, reply.reason, reply.duplicate),
        position,
        failure_reason,
        duplicate: reply.duplicate,
    }
}

/// The SendResponse an answer makes.
fn answer_response(a: Answer) -> pb::SendResponse {
    match a.result {
        Ok(reply) => response(reply, a.token),
        Err(GatewayError::Invalid(m)) => refused(a.token, &Status::invalid_argument(m)),
        Err(e @ GatewayError::Unavailable(_)) => refused(a.token, &unavailable(e)),
    }
}

fn status_message(status: u16, reason: Option<u16>, duplicate: bool) -> String {
    if duplicate {
        return "idempotency key seen before: this is the first send's msg_id; nothing was sent again"
            .into();
    }
    match (status, reason) {
        (11, Some(1)) => "the hop limit ran out on the way".into(),
        (11, Some(2)) => "given up: not delivered in time".into(),
        (11, Some(3)) => "a policy denies the destination".into(),
        (11, Some(4)) => "larger than the destination or the store accepts".into(),
        (8, _) => "the destination is not known to the mesh".into(),
        _ => String::new(),
    }
}

/// Checks a SendRequest and makes the message, its mode and how long to wait for it; every
/// refusal is INVALID_ARGUMENT naming the field. Never panics, whatever the request holds (the
/// `grpc_request` fuzz target drives it with arbitrary decoded requests).
///
/// # Errors
/// INVALID_ARGUMENT: dst_node 0, payload over [`MAX_PAYLOAD`], a reserved header key, an
/// idempotency key over its limit, ttl or class over 255, an unknown mode, WAIT_FOR_ACK
/// without require_ack, or headers that do not fit a frame's metadata.
pub fn validate(req: pb::SendRequest) -> Result<(Outgoing, pb::SendMode, Duration), Status> {
    let bad = |m: String| Err(Status::invalid_argument(m));
    if req.dst_node == 0 {
        return bad("dst_node: must not be 0".into());
    }
    if req.payload.len() > MAX_PAYLOAD {
        return bad(format!(
            "payload: {} bytes, over the node's max message size of {MAX_PAYLOAD}",
            req.payload.len()
        ));
    }
    if let Some(k) = req.headers.keys().find(|k| k.starts_with("mesh-")) {
        return bad(format!(
            "headers[{k:?}]: keys starting with \"mesh-\" are reserved"
        ));
    }
    if req.idempotency_key.len() > IDEMPOTENCY_KEY_MAX {
        return bad(format!(
            "idempotency_key: {} bytes, at most {IDEMPOTENCY_KEY_MAX}",
            req.idempotency_key.len()
        ));
    }
    let Ok(ttl) = u8::try_from(req.ttl) else {
        return bad(format!("ttl: {}, at most 255", req.ttl));
    };
    let Ok(class) = u8::try_from(req.class) else {
        return bad(format!("class: {}, at most 255", req.class));
    };
    let Ok(mode) = pb::SendMode::try_from(req.mode) else {
        return bad(format!("mode: {} is not a SendMode", req.mode));
    };
    if mode == pb::SendMode::WaitForAck && !req.require_ack {
        return bad("mode: WAIT_FOR_ACK needs require_ack = true".into());
    }
    let mut headers: Vec<(String, Vec<u8>)> = req
        .headers
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    headers.sort();
    let meta = Metadata {
        corr_id: (req.corr_id != 0).then_some(req.corr_id),
        headers,
        idempotency_key: (!req.idempotency_key.is_empty())
            .then(|| req.idempotency_key.into_bytes()),
        ..Metadata::default()
    };
    // The metadata must fit in a frame's metadata field.
    let no_meta = meta.is_empty();
    if !no_meta && let Err(e) = meta.encode(&mesh_wire::MetaLimits::default()) {
        return bad(format!("headers: {e}"));
    }
    let wait = if req.timeout_ms == 0 {
        DEFAULT_WAIT
    } else {
        Duration::from_millis(u64::from(req.timeout_ms))
    };
    let msg = Outgoing {
        dst_node: req.dst_node,
        dst_domain: req.dst_domain.unwrap_or(0),
        meta: (!no_meta).then(|| Box::new(meta)),
        flags: if req.require_ack {
            Flags::REQUIRE_ACK
        } else {
            Flags::EMPTY
        },
        ttl,
        class,
        payload: req.payload,
    };
    Ok((msg, mode, wait))
}

/// Checks a GetStatusRequest before the cores are asked.
///
/// # Errors
/// INVALID_ARGUMENT when it lists more than [`MAX_STATUS_IDS`] msg_ids.
pub fn validate_status(req: &pb::GetStatusRequest) -> Result<(), Status> {
    if req.msg_ids.len() > MAX_STATUS_IDS {
        return Err(Status::invalid_argument(format!(
            "msg_ids: {} ids, at most {MAX_STATUS_IDS}",
            req.msg_ids.len()
        )));
    }
    Ok(())
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl MeshData for MeshDataService {
    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let t0 = Instant::now();
        let r = self.send_one(request.into_inner()).await;
        self.record(GrpcMethod::Send, t0, &r);
        r.map(Response::new)
    }

    type SendStreamStream = ResponseStream<pb::SendResponse>;

    async fn send_stream(
        &self,
        request: Request<Streaming<pb::SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let t0 = Instant::now();
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            this.run_send_stream(requests, tx).await;
            this.metrics
                .record(GrpcMethod::SendStream, tonic::Code::Ok, t0.elapsed());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = ResponseStream<pb::Received>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let t0 = Instant::now();
        let mut requests = request.into_inner();
        let first = requests.message().await;
        let start = match first {
            Ok(Some(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Start(s)),
            })) => s,
            Ok(_) => {
                let s = Status::invalid_argument("the first SubscribeRequest must be `start`");
                self.record(GrpcMethod::Subscribe, t0, &Err::<(), _>(s.clone()));
                return Err(s);
            }
            Err(s) => return Err(s),
        };
        let Ok(class) = start.class.map(u8::try_from).transpose() else {
            let s = Status::invalid_argument("start.class: at most 255");
            self.record(GrpcMethod::Subscribe, t0, &Err::<(), _>(s.clone()));
            return Err(s);
        };
        let (tx, rx) = mpsc::channel(1024);
        let id = next_stream_id();
        let credits = if start.initial_credits == 0 {
            DEFAULT_CREDITS
        } else {
            start.initial_credits
        };
        self.hub
            .send(HubCommand::Start {
                id,
                src_node: start.src_node,
                class,
                credits,
                tx,
            })
            .await
            .map_err(|_| Status::unavailable("the node is stopping"))?;
        let hub = self.hub.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            loop {
                match requests.message().await {
                    Ok(Some(pb::SubscribeRequest { kind: Some(k) })) => {
                        let cmd = match k {
                            pb::subscribe_request::Kind::Credits(n) => {
                                HubCommand::Credits { id, n }
                            }
                            pb::subscribe_request::Kind::Ack(a) => HubCommand::Ack {
                                src_node: a.src_node,
                                msg_id: a.msg_id,
                                success: a.success,
                                found: None,
                            },
                            pb::subscribe_request::Kind::Start(_) => {
                                debug!("a second `start` on a Subscribe stream ignored");
                                continue;
                            }
                        };
                        if hub.send(cmd).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = hub.send(HubCommand::End { id }).await;
            metrics.record(GrpcMethod::Subscribe, tonic::Code::Ok, t0.elapsed());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<()>, Status> {
        let t0 = Instant::now();
        let r = MeshDataService::ack(self, request.into_inner()).await;
        self.record(GrpcMethod::Ack, t0, &r);
        r.map(Response::new)
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let t0 = Instant::now();
        let r = MeshDataService::get_status(self, request.into_inner()).await;
        self.record(GrpcMethod::GetStatus, t0, &r);
        r.map(Response::new)
    }
}

/// The future's output if it is ready at its first poll (it is dropped otherwise: fine for
/// cancel-safe futures like [`Streaming::message`]).
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A SendStream answer for a request refused before it became a message.
fn refused(position: u64, s: &Status) -> pb::SendResponse {
    let reason = match s.code() {
        tonic::Code::InvalidArgument => pb::FailureReason::InvalidRequest,
        _ => pb::FailureReason::ResourceExhausted,
    };
    pb::SendResponse {
        msg_id: 0,
        status: pb::MessageStatus::Failed as i32,
        status_message: s.message().to_owned(),
        position,
        failure_reason: reason as i32,
        duplicate: false,
    }
}

fn next_stream_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What the subscriber hub is asked.
enum HubCommand {
    Start {
        id: u64,
        src_node: Option<u64>,
        class: Option<u8>,
        credits: u32,
        tx: mpsc::Sender<Result<pb::Received, Status>>,
    },
    Credits {
        id: u64,
        n: u32,
    },
    Ack {
        src_node: u64,
        msg_id: u64,
        success: bool,
        found: Option<oneshot::Sender<bool>>,
    },
    End {
        id: u64,
    },
}

struct Sub {
    id: u64,
    src_node: Option<u64>,
    class: Option<u8>,
    credits: u64,
    tx: mpsc::Sender<Result<pb::Received, Status>>,
}

impl Sub {
    fn wants(&self, m: &Incoming) -> bool {
        self.credits > 0
            && self.src_node.is_none_or(|s| s == m.src_node)
            && self.class.is_none_or(|c| c == m.class)
    }
}

/// The subscriber hub: one subscriber session with the node, many Subscribe streams.
struct Hub {
    engine: Arc<EngineHandle>,
    /// The node tracks what it offers (exactly-once): a message without require_ack is acked
    /// once handed over. Forwarding only, the node forgets what it offered and wants no ack.
    tracked: bool,
    link: Option<Link>,
    incoming: Option<mpsc::Receiver<Incoming>>,
    subs: Vec<Sub>,
    next_sub: usize,
    /// Offered by the node, not yet handed to a stream: (message, deliveries before).
    pending: VecDeque<(Incoming, u32)>,
    /// Handed to a stream, waiting for the application's ack: key → (stream, message, attempt).
    unacked: HashMap<(u64, u64), (u64, Incoming, u32)>,
    acked: HashSet<(u64, u64)>,
    acked_order: VecDeque<(u64, u64)>,
}

impl Hub {
    fn new(engine: Arc<EngineHandle>, tracked: bool) -> Hub {
        Hub {
            engine,
            tracked,
            link: None,
            incoming: None,
            subs: Vec::new(),
            next_sub: 0,
            pending: VecDeque::new(),
            unacked: HashMap::default(),
            acked: HashSet::default(),
            acked_order: VecDeque::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>) {
        loop {
            let take_incoming = self.pending.len() < HUB_PENDING_MAX;
            let incoming = async {
                match (&mut self.incoming, take_incoming) {
                    (Some(rx), true) => rx.recv().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => return,
                },
                m = incoming => if let Some(m) = m {
                    self.offered(m);
                    // Then what else arrived, so that one dispatch hands out many.
                    while self.pending.len() < HUB_PENDING_MAX
                        && let Some(m) = self.incoming.as_mut().and_then(|rx| rx.try_recv().ok())
                    {
                        self.offered(m);
                    }
                } else {
                        // The subscriber session ended (node restarting?): streams end with
                        // UNAVAILABLE; what they held is redelivered by the node.
                        warn!("the subscriber session with the node ended");
                        self.link = None;
                        self.incoming = None;
                        self.pending.clear();
                        self.unacked.clear();
                        for s in self.subs.drain(..) {
                            let _ = s
                                .tx
                                .try_send(Err(Status::unavailable("the node's data plane went away")));
                        }
                },
            }
            self.dispatch().await;
        }
    }

    async fn command(&mut self, c: HubCommand) {
        match c {
            HubCommand::Start {
                id,
                src_node,
                class,
                credits,
                tx,
            } => {
                if self.link.is_none() {
                    let (dtx, drx) = mpsc::channel(1024);
                    match Link::connect(&self.engine, 0, Some(dtx)).await {
                        Ok(l) => {
                            self.link = Some(l);
                            self.incoming = Some(drx);
                        }
                        Err(e) => {
                            let _ = tx.try_send(Err(Status::unavailable(e.to_string())));
                            return;
                        }
                    }
                }
                self.subs.push(Sub {
                    id,
                    src_node,
                    class,
                    credits: u64::from(credits),
                    tx,
                });
            }
            HubCommand::Credits { id, n } => {
                if let Some(s) = self.subs.iter_mut().find(|s| s.id == id) {
                    s.credits = s.credits.saturating_add(u64::from(n));
                }
            }
            HubCommand::Ack {
                src_node,
                msg_id,
                success,
                found,
            } => {
                let key = (src_node, msg_id);
                let held = self.unacked.remove(&key).is_some();
                if held && let Some(l) = &self.link {
                    let _ = l.acks(vec![(src_node, msg_id, success)]).await;
                    self.remember_acked(key);
                }
                if let Some(f) = found {
                    let _ = f.send(held || self.acked.contains(&key));
                }
            }
            HubCommand::End { id } => {
                self.subs.retain(|s| s.id != id);
                // Its unacked messages go to the next subscriber first.
                let mut back: Vec<_> = self
                    .unacked
                    .iter()
                    .filter(|(_, (sid, _, _))| *sid == id)
                    .map(|(k, _)| *k)
                    .collect();
                back.sort_unstable();
                for k in back.into_iter().rev() {
                    if let Some((_, m, attempt)) = self.unacked.remove(&k) {
                        self.pending.push_front((m, attempt));
                    }
                }
            }
        }
    }

    fn remember_acked(&mut self, key: (u64, u64)) {
        if self.acked.insert(key) {
            self.acked_order.push_back(key);
            if self.acked_order.len() > ACKED_KEPT
                && let Some(old) = self.acked_order.pop_front()
            {
                self.acked.remove(&old);
            }
        }
    }

    /// The node offered a message (again, if `redelivered`).
    fn offered(&mut self, m: Incoming) {
        let key = (m.src_node, m.msg_id);
        // Only a redelivery (on this session) can be in `pending`: the scan is for those.
        if self.unacked.contains_key(&key)
            || self.acked.contains(&key)
            || (m.redelivered
                && self
                    .pending
                    .iter()
                    .any(|(p, _)| (p.src_node, p.msg_id) == key))
        {
            // A redelivery of what a stream holds (or an ack on its way): nothing new.
            return;
        }
        let before = u32::from(m.redelivered);
        self.pending.push_back((m, before));
    }

    /// Hands pending messages to streams with credits, in turn.
    async fn dispatch(&mut self) {
        let mut acks = Vec::new();
        self.hand_out(&mut acks).await;
        if let Some(l) = &self.link {
            let _ = l.acks(acks).await;
        }
    }

    /// Hands pending messages to streams; the acks of those without require_ack (handed
    /// over is done for them) go to `acks`.
    async fn hand_out(&mut self, acks: &mut Vec<(u64, u64, bool)>) {
        let mut i = 0;
        // Nobody with credits: nothing can be handed out (and no scan of what is pending).
        while i < self.pending.len() && self.subs.iter().any(|s| s.credits > 0) {
            let n = self.subs.len();
            let pick = (0..n)
                .map(|k| (self.next_sub + k) % n)
                .find(|&k| self.subs[k].wants(&self.pending[i].0));
            let Some(k) = pick else {
                i += 1;
                continue;
            };
            let Some((m, before)) = self.pending.remove(i) else {
                break;
            };
            self.next_sub = (k + 1) % n;
            let attempt = before + 1;
            let sub = &mut self.subs[k];
            let received = pb::Received {
                src_node: m.src_node,
                src_domain: m.src_domain,
                dst_node: m.dst_node,
                msg_id: m.msg_id,
                corr_id: m.corr_id.unwrap_or(0),
                payload: m.payload.clone(),
                headers: m
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Bytes::copy_from_slice(v)))
                    .collect(),
                require_ack: m.require_ack,
                delivery_attempt: attempt,
                class: u32::from(m.class),
            };
            if sub.tx.try_send(Ok(received)).is_err() {
                // The stream is gone or not reading: the message waits for another.
                self.pending.insert(i, (m, before));
                let id = sub.id;
                if sub.tx.is_closed() {
                    Box::pin(self.command(HubCommand::End { id })).await;
                } else {
                    sub.credits = 0;
                }
                continue;
            }
            sub.credits -= 1;
            let key = (m.src_node, m.msg_id);
            if m.require_ack {
                let id = sub.id;
                self.unacked.insert(key, (id, m, attempt));
            } else if self.tracked {
                acks.push((key.0, key.1, true));
                self.remember_acked(key);
            }
        }
    }
}
