//! Starting the data plane: one glommio executor per core, each with its listener (SO_REUSEPORT),
//! its dialers, its inbox, and the sessions it accepted or dialed. The control thread keeps an
//! [`EngineHandle`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, timer::sleep};
use mesh_session::{Admission, AdmissionConfig, Backoff, BackoffConfig, ChannelSecurity, Side};
use mesh_wire::{CloseReason, OutFrame};
use tracing::{debug, info, warn};

use mesh_storage::memory::MemoryConfig;
use mesh_storage::{FileConfig, FileStorage, MemoryStorage, RedisConfig, RedisStorage, Storage};

use crate::config::{EngineConfig, Placement, StorageSpec};
use crate::conn::run_connection;
use crate::core::{Core, CoreMsg, EngineEvent, Push};
use crate::delivery::CoreDelivery;
use crate::idempotency::IdempotencyKeys;
use crate::mailbox::{MailboxError, MailboxReceiver, MailboxSender, mailbox};
use crate::metrics::CoreMetrics;
use crate::pipe::{LOCAL_PIPE_CAPACITY, LocalStream, local_pair};
use crate::routes::RouteSnapshot;
use crate::transport::Transport;

/// Why [`EngineHandle::status`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// A core's inbox is full (or the engine stopped): ask again.
    #[error("the data plane is busy")]
    Busy,
    /// A core did not answer in time.
    #[error("the data plane did not answer in time")]
    Timeout,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// An executor could not be created (e.g. more pinned cores than CPUs).
    #[error("core {core}: cannot start executor: {detail}")]
    Executor {
        /// Core index.
        core: usize,
        /// What glommio said.
        detail: String,
    },
    /// The core's storage could not be opened (or recovery found corruption).
    #[error("core {core}: storage: {detail}")]
    Storage {
        /// Core index.
        core: usize,
        /// What the storage said.
        detail: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Error.
        detail: String,
    },
}

/// Why a frame could not be handed to the data plane.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The core's inbox is full: retry later (backpressure).
    #[error("data plane busy")]
    Busy(OutFrame),
    /// The engine stopped.
    #[error("data plane stopped")]
    Stopped(OutFrame),
}

/// Why an in-process session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenLocalError {
    /// The core's inbox is full: try again shortly.
    #[error("the core is busy: its inbox is full")]
    Busy,
    /// The data plane stopped.
    #[error("the data plane stopped")]
    Stopped,
}

/// The control thread's handle on the running data plane.
pub struct EngineHandle {
    inboxes: Vec<MailboxSender<CoreMsg>>,
    routes: Vec<MailboxSender<RouteSnapshot>>,
    events: MailboxReceiver<EngineEvent>,
    metrics: Vec<Arc<CoreMetrics>>,
    local_addr: SocketAddr,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    node_id: u64,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("node_id", &self.node_id)
            .field("cores", &self.inboxes.len())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Where the engine listens (the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inboxes.len()
    }

    /// Per-core counters.
    pub fn metrics(&self) -> &[Arc<CoreMetrics>] {
        &self.metrics
    }

    /// Events from the cores (deliveries, control frames, peers up and down).
    pub fn events(&self) -> &MailboxReceiver<EngineEvent> {
        &self.events
    }

    /// Publishes a new route snapshot to every core. Snapshots travel apart from the cores'
    /// inboxes, so a core waiting for queue room (and not reading its inbox) still takes the
    /// routes that may relieve it. Each core keeps only the newest; a full route mailbox
    /// (a core that stopped) drops the snapshot with a warning.
    pub fn publish_routes(&self, routes: &RouteSnapshot) {
        for (core, tx) in self.routes.iter().enumerate() {
            if let Err(MailboxError::Full(_)) = tx.post(routes.clone()) {
                warn!(
                    core,
                    epoch = routes.epoch(),
                    "route snapshot dropped: the core is not taking them"
                );
            }
        }
    }

    /// Hands a frame this node originates to the data plane, which routes it. The core is
    /// chosen by destination so one destination's frames keep their order.
    pub fn submit(&self, frame: OutFrame) -> Result<(), SubmitError> {
        let dst = frame.header().dst_node.get();
        let core = usize::try_from(dst % self.inboxes.len() as u64).unwrap_or(0);
        match self.inboxes[core].post(CoreMsg::Originate(frame)) {
            Ok(()) => Ok(()),
            Err(MailboxError::Full(CoreMsg::Originate(f))) => Err(SubmitError::Busy(f)),
            Err(MailboxError::Closed(CoreMsg::Originate(f))) => Err(SubmitError::Stopped(f)),
            Err(_) => unreachable!("the message posted is an Originate"),
        }
    }

    /// Sends a frame to a neighbour directly (control frames such as LSAs).
    pub fn send_to_peer(&self, peer: u64, frame: OutFrame) -> Result<(), SubmitError> {
        // The owning core is not known here; core 0 forwards it to the owner.
        match self.inboxes[0].post(CoreMsg::ToPeer {
            peer,
            item: crate::queue::OutItem::Local(frame),
        }) {
            Ok(()) => Ok(()),
            Err(MailboxError::Full(CoreMsg::ToPeer {
                item: crate::queue::OutItem::Local(f),
                ..
            })) => Err(SubmitError::Busy(f)),
            Err(MailboxError::Closed(CoreMsg::ToPeer {
                item: crate::queue::OutItem::Local(f),
                ..
            })) => Err(SubmitError::Stopped(f)),
            Err(_) => unreachable!("the message posted is a local ToPeer"),
        }
    }

    /// The statuses of messages this node originated (GetStatus), in the order of `msg_ids`;
    /// `None` for an id no core tracks (or tracks no more). Each id is asked of the core that
    /// allocated it. Blocks up to `timeout` for the cores' answers.
    pub fn status(
        &self,
        msg_ids: &[u64],
        timeout: std::time::Duration,
    ) -> Result<Vec<Option<mesh_delivery::StatusEntry>>, StatusError> {
        let cores = self.inboxes.len();
        let mut by_core: Vec<Vec<u64>> = vec![Vec::new(); cores];
        for &id in msg_ids {
            let partition = u64::from(mesh_wal::msg_id::partition_of(id));
            by_core[usize::try_from(partition % cores as u64).unwrap_or(0)].push(id);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for (core, ids) in by_core.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            if self.inboxes[core]
                .post(CoreMsg::Status {
                    msg_ids: ids,
                    reply: tx.clone(),
                })
                .is_err()
            {
                return Err(StatusError::Busy);
            }
            asked += 1;
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut found = std::collections::HashMap::new();
        for _ in 0..asked {
            let answer = rx
                .recv_deadline(deadline)
                .map_err(|_| StatusError::Timeout)?;
            found.extend(answer);
        }
        Ok(msg_ids
            .iter()
            .map(|id| found.get(id).copied().flatten())
            .collect())
    }

    /// Opens an in-process session with core `core` (`core % cores`): the returned end speaks
    /// the native-client protocol to the core, as a TCP connection to the node's listener
    /// would, without the kernel in between. This is how the gRPC gateway reaches the data
    /// plane.
    ///
    /// # Errors
    /// The core's inbox is full, or the data plane stopped.
    pub fn open_local(&self, core: usize) -> Result<LocalStream, OpenLocalError> {
        let (ours, theirs) = local_pair(LOCAL_PIPE_CAPACITY);
        match self.inboxes[core % self.inboxes.len()].post(CoreMsg::Local(theirs)) {
            Ok(()) => Ok(ours),
            Err(MailboxError::Full(_)) => Err(OpenLocalError::Busy),
            Err(MailboxError::Closed(_)) => Err(OpenLocalError::Stopped),
        }
    }

    /// Asks the engine to dial `addr` and keep a session with it.
    pub fn connect(&self, addr: SocketAddr) {
        let core = addr.port() as usize % self.inboxes.len();
        let _ = self.inboxes[core].post(CoreMsg::Connect(addr));
    }

    /// Stops: every session sends CLOSE(shutdown), then the executors end. Waits for them.
    pub fn shutdown(self) {
        for inbox in &self.inboxes {
            let _ = inbox.post(CoreMsg::Shutdown);
        }
        // Closing the route mailboxes ends each core's route task.
        drop(self.routes);
        for t in self.threads {
            if let Err(e) = t.join() {
                warn!(error = %e, "executor ended with an error");
            }
        }
    }
}

/// Starts the data plane with `routes` as the first snapshot.
pub fn start(cfg: EngineConfig, routes: &RouteSnapshot) -> Result<EngineHandle, EngineError> {
    if cfg.node_id == 0 {
        return Err(EngineError::Config("node_id must not be 0".into()));
    }
    if cfg.cores == 0 {
        return Err(EngineError::Config("cores must be at least 1".into()));
    }
    if cfg.listen.port() != 0 && listener_stays(cfg.listen) {
        // The cores bind with SO_REUSEPORT, which would let this node silently share the port
        // with another node already listening there.
        return Err(EngineError::Listen {
            addr: cfg.listen,
            detail: "another process is listening there (is another node running?)".into(),
        });
    }
    let cfg = Arc::new(cfg);
    let n = cfg.cores;
    let mut inbox_tx = Vec::with_capacity(n);
    let mut inbox_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mailbox(cfg.mailbox_capacity);
        inbox_tx.push(tx);
        inbox_rx.push(rx);
    }
    let (events_tx, events_rx) = mailbox(cfg.mailbox_capacity);
    let mut routes_tx = Vec::with_capacity(n);
    let mut routes_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mailbox::<RouteSnapshot>(ROUTE_MAILBOX_CAPACITY);
        routes_tx.push(tx);
        routes_rx.push(rx);
    }
    let metrics: Vec<Arc<CoreMetrics>> = (0..n).map(|_| Arc::new(CoreMetrics::default())).collect();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, StartError>>();
    let keys = Arc::new(IdempotencyKeys::default());
    let mut threads = Vec::with_capacity(n);
    let mut listen_addr = cfg.listen;
    for (id, (rx, route_rx)) in inbox_rx.into_iter().zip(routes_rx).enumerate() {
        let placement = match cfg.placement {
            Placement::Unbound => glommio::Placement::Unbound,
            Placement::Pinned { first_cpu } => glommio::Placement::Fixed(first_cpu + id),
        };
        let core_cfg = cfg.clone();
        let inboxes = inbox_tx.clone();
        let events = events_tx.clone();
        let m = metrics[id].clone();
        let routes = routes.clone();
        let addr_tx = addr_tx.clone();
        let keys = keys.clone();
        let bind = listen_addr;
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("mesh-core-{id}"))
            .io_memory(cfg.io_memory);
        let handle = builder
            .spawn(move || async move {
                let delivery = match open_delivery(&core_cfg, id, keys).await {
                    Ok(d) => d,
                    Err(detail) => {
                        let _ = addr_tx.send(Err(StartError::Storage(detail)));
                        return;
                    }
                };
                let core = Rc::new(Core::new(
                    id, core_cfg, routes, inboxes, events, m, delivery,
                ));
                glommio::spawn_local(take_routes(core.clone(), route_rx)).detach();
                glommio::spawn_local(crate::delivery::run(core.clone())).detach();
                run_core(core, rx, bind, addr_tx).await;
            })
            .map_err(|e| EngineError::Executor {
                core: id,
                detail: e.to_string(),
            })?;
        // Core 0 binds first; with port 0 the others must bind the port it got.
        match addr_rx.recv() {
            Ok(Ok(addr)) => listen_addr = addr,
            Ok(Err(StartError::Listen(detail))) => {
                return Err(EngineError::Listen {
                    addr: listen_addr,
                    detail,
                });
            }
            Ok(Err(StartError::Storage(detail))) => {
                return Err(EngineError::Storage { core: id, detail });
            }
            Err(_) => {
                return Err(EngineError::Executor {
                    core: id,
                    detail: "executor ended before binding".into(),
                });
            }
        }
        threads.push(handle);
    }
    let handle = EngineHandle {
        inboxes: inbox_tx,
        routes: routes_tx,
        events: events_rx,
        metrics,
        local_addr: listen_addr,
        threads,
        node_id: cfg.node_id,
    };
    for addr in &cfg.connect {
        handle.connect(*addr);
    }
    Ok(handle)
}

/// Whether something accepts connections at `addr` (a wildcard address is probed on loopback).
/// Connections a stopped node left behind do not count, so a node restarts on its own port.
fn listener_present(addr: SocketAddr) -> bool {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok()
}

/// Whether a listener at `addr` is still there after up to two seconds. A node that just died
/// can leave its listening socket open for a moment (its io_uring is torn down after the
/// process exits, and a pending accept keeps the socket alive until then), so a restart on the
/// same port waits for that instead of refusing or, worse, sharing the port with it.
fn listener_stays(addr: SocketAddr) -> bool {
    for waited in 0..20u32 {
        if !listener_present(addr) {
            if waited > 0 {
                info!(%addr, waited_ms = waited * 100, "the previous listener on this address went away");
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Route snapshots a core's mailbox may hold (each publication supersedes the last).
const ROUTE_MAILBOX_CAPACITY: usize = 64;

/// Swaps in each published route snapshot, the newest when several wait.
async fn take_routes(core: Rc<Core>, rx: MailboxReceiver<RouteSnapshot>) {
    while let Some(mut routes) = rx.recv().await {
        while let Some(newer) = rx.try_recv() {
            routes = newer;
        }
        core.set_routes(routes);
    }
}

/// Why a core could not start.
#[derive(Debug)]
enum StartError {
    Listen(String),
    Storage(String),
}

/// Opens the core's storage (recovering what it holds) and the delivery machines over it.
async fn open_delivery(
    cfg: &EngineConfig,
    core: usize,
    keys: Arc<IdempotencyKeys>,
) -> Result<CoreDelivery, String> {
    let partition = u8::try_from(core)
        .map_err(|_| format!("core {core} has no msg_id partition (at most 256 cores)"))?;
    let storage: Rc<dyn Storage> = match &cfg.storage {
        StorageSpec::Memory => {
            let mut m = MemoryConfig::new(partition);
            m.mode = cfg.durability;
            Rc::new(MemoryStorage::new(m).map_err(|e| e.to_string())?)
        }
        StorageSpec::File {
            dir,
            segment_len,
            segments,
        } => {
            // A message's frames are one record: up to three quarters of a segment, at most
            // 16 MiB.
            let record_max = (*segment_len / 4 * 3).min(mesh_wal::record::RECORD_BODY_LEN_MAX);
            let fc = FileConfig::new(dir, partition)
                .with_mode(cfg.durability)
                .with_segment_len(*segment_len)
                .with_segments(*segments)
                .with_record_len_max(record_max);
            Rc::new(FileStorage::open(fc).await.map_err(|e| e.to_string())?)
        }
        StorageSpec::Redis { url } => {
            let mut rc =
                RedisConfig::new(url.as_str(), cfg.node_id, partition).with_mode(cfg.durability);
            // As with the file backend: a message's frames, up to 16 MiB.
            rc.frame_len_max = mesh_wal::record::RECORD_BODY_LEN_MAX;
            Rc::new(RedisStorage::open(rc).await.map_err(|e| e.to_string())?)
        }
    };
    CoreDelivery::new(cfg.delivery, storage, cfg.limits, keys)
}

async fn run_core(
    core: Rc<Core>,
    inbox: MailboxReceiver<CoreMsg>,
    bind: SocketAddr,
    addr_tx: std::sync::mpsc::Sender<Result<SocketAddr, StartError>>,
) {
    let listener = match TcpListener::bind(bind) {
        Ok(l) => l,
        Err(e) => {
            let _ = addr_tx.send(Err(StartError::Listen(e.to_string())));
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(bind);
    let _ = addr_tx.send(Ok(local));
    info!(core = core.id, addr = %local, "listening");
    let admission = Rc::new(std::cell::RefCell::new(Admission::new(AdmissionConfig {
        max_sessions: core.cfg.max_sessions.div_ceil(core.cfg.cores),
        max_half_open: core.cfg.max_half_open.div_ceil(core.cfg.cores),
    })));
    let accept = glommio::spawn_local(accept_loop(core.clone(), listener, admission.clone()));
    loop {
        let Some(msg) = inbox.recv().await else { break };
        match msg {
            CoreMsg::ToPeer { peer, item } => {
                let push = core.to_peer(peer, item);
                push_until_done(&core, peer, push).await;
            }
            CoreMsg::Originate(frame) => {
                let (peer, push) = core.originate(frame);
                push_until_done(&core, peer, push).await;
            }
            CoreMsg::PeerUp {
                peer,
                core: c,
                side,
                session,
            } => core.remote_up(peer, c, side, session),
            CoreMsg::PeerDown {
                peer,
                core: c,
                session,
            } => core.remote_down(peer, c, session),
            CoreMsg::Connect(addr) => {
                glommio::spawn_local(dial_loop(core.clone(), addr, admission.clone())).detach();
            }
            CoreMsg::Local(stream) => {
                glommio::spawn_local(run_local(core.clone(), stream)).detach();
            }
            CoreMsg::Deliver(frame) => core.deliver_from_core(frame),
            CoreMsg::Delivery(frame) => core.delivery_frame(frame),
            CoreMsg::Offer(frame) => core.offer_from_core(frame),
            CoreMsg::ClientAck {
                src_node,
                msg_id,
                success,
            } => core.delivery.handle_client_ack(src_node, msg_id, success),
            CoreMsg::Subscribers { core: c, present } => core.remote_subscribers(c, present),
            CoreMsg::Status { msg_ids, reply } => {
                let answer = msg_ids
                    .into_iter()
                    .map(|id| (id, core.delivery.status(id)))
                    .collect();
                let _ = reply.send(answer);
            }
            CoreMsg::Shutdown => break,
        }
    }
    core.shutting_down.set(true);
    core.close_all(CloseReason::Shutdown);
    drop(accept.cancel());
    // Sync the log: what was appended (settle and ack records included) is on disk when the
    // process ends.
    let synced = futures_lite::future::or(async { Some(core.delivery.sync().await) }, async {
        sleep(SHUTDOWN_SYNC_WAIT).await;
        None
    })
    .await;
    match synced {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::error!(core = core.id, error = %e, "the log failed at shutdown"),
        None => tracing::warn!(
            core = core.id,
            "the log did not sync within {SHUTDOWN_SYNC_WAIT:?} at shutdown"
        ),
    }
    // Give sessions a moment to send their CLOSE and flush.
    for _ in 0..50 {
        if CoreMetrics::get(&core.metrics.sessions_open) == 0 {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Longest a core waits for its log's last sync at shutdown.
const SHUTDOWN_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Finishes a push that found no room: waits for the queue (or briefly for a full inbox) and
/// retries. While it waits, this core takes nothing more from its inbox, so the control thread's
/// `submit` sees `Busy`: backpressure instead of unbounded buffering.
async fn push_until_done(core: &Core, peer: u64, mut push: Push) {
    loop {
        push = match push {
            Push::Done => return,
            Push::Wait(item, q) => {
                q.room().await;
                core.to_peer(peer, item)
            }
            Push::Later(item) => {
                sleep(Duration::from_micros(100)).await;
                core.to_peer(peer, item)
            }
        };
    }
}

async fn accept_loop(
    core: Rc<Core>,
    listener: TcpListener,
    admission: Rc<std::cell::RefCell<Admission>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(core = core.id, error = %e, "accept failed");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if core.shutting_down.get() {
            return;
        }
        let ticket = admission.borrow_mut().try_admit();
        let ticket = match ticket {
            Ok(t) => t,
            Err(e) => {
                CoreMetrics::add(&core.metrics.admission_refused, 1);
                debug!(core = core.id, error = %e, "connection refused at admission");
                drop(stream);
                continue;
            }
        };
        // The handshake deadline counts from here: the TLS handshake and the HELLO exchange
        // share it, so a peer that stalls each of them in turn is still closed in time.
        let started = Instant::now();
        let _ = stream.set_nodelay(true);
        let core2 = core.clone();
        let adm = admission.clone();
        glommio::spawn_local(async move {
            let Some((transport, security, plain_client_only)) =
                secure(&core2, stream, Side::Acceptor, started).await
            else {
                adm.borrow_mut().release(ticket);
                return;
            };
            let out = run_connection(
                core2.clone(),
                transport,
                Side::Acceptor,
                None,
                security,
                nonce(),
                plain_client_only,
                started,
            )
            .await;
            debug!(core = core2.id, peer = ?out.peer.map(|p| p.node_id), reason = ?out.reason, "inbound session ended");
            adm.borrow_mut().release(ticket);
        })
        .detach();
    }
}

/// Runs a session over an in-process stream: a native client's (the gRPC gateway's), plain,
/// and outside the admission limits (the gateway keeps one per core plus its subscriber).
async fn run_local(core: Rc<Core>, stream: LocalStream) {
    if core.shutting_down.get() {
        return;
    }
    let out = run_connection(
        core.clone(),
        Transport::Local(stream),
        Side::Acceptor,
        None,
        ChannelSecurity::Plain,
        nonce(),
        // Only a client may hold it, whether or not TLS is required of peers.
        true,
        Instant::now(),
    )
    .await;
    debug!(core = core.id, reason = ?out.reason, "in-process session ended");
}

async fn dial_loop(core: Rc<Core>, addr: SocketAddr, admission: Rc<std::cell::RefCell<Admission>>) {
    let seed = core.node_id() ^ u64::from(addr.port()) << 32;
    let mut backoff = Backoff::new(BackoffConfig::default(), seed);
    while !core.shutting_down.get() {
        let connected = TcpStream::connect_timeout(addr, Duration::from_secs(2)).await;
        match connected {
            Ok(stream) => {
                let started = Instant::now();
                let _ = stream.set_nodelay(true);
                let ticket = admission.borrow_mut().try_admit();
                if let Ok(ticket) = ticket {
                    let Some((transport, security, _)) =
                        secure(&core, stream, Side::Initiator, started).await
                    else {
                        admission.borrow_mut().release(ticket);
                        let delay = backoff.next_delay().unwrap_or(Duration::from_secs(10));
                        sleep(delay).await;
                        continue;
                    };
                    let out = run_connection(
                        core.clone(),
                        transport,
                        Side::Initiator,
                        None,
                        security,
                        nonce(),
                        false,
                        started,
                    )
                    .await;
                    admission.borrow_mut().release(ticket);
                    if out.peer.is_some() {
                        backoff.reset();
                    }
                    debug!(core = core.id, %addr, reason = ?out.reason, "outbound session ended");
                    if let (CloseReason::DuplicateSession, Some(peer)) = (out.reason, &out.peer) {
                        // The other session with this peer is the one both sides keep: dial
                        // again only once it is gone.
                        while core.has_session(peer.node_id) && !core.shutting_down.get() {
                            sleep(Duration::from_millis(200)).await;
                        }
                        continue;
                    }
                }
            }
            Err(e) => debug!(core = core.id, %addr, error = %e, "connect failed"),
        }
        if core.shutting_down.get() {
            break;
        }
        let delay = backoff.next_delay().unwrap_or(Duration::from_secs(10));
        sleep(delay).await;
    }
}

/// Secures a fresh connection: TLS when configured (a TLS node still answers a plain peer, so
/// that it can allow it or refuse it with CLOSE `TlsRequired`), plain TCP otherwise. `None` when
/// the TLS handshake failed (logged and counted). The flag is set for a plain connection from
/// loopback under `require_tls`: only a local native client may use it.
///
/// Everything here happens before the handshake deadline that started at `started` (the TCP
/// connection): the peek at the first byte and the TLS handshake get what is left of it.
async fn secure(
    core: &Core,
    stream: TcpStream,
    side: Side,
    started: Instant,
) -> Option<(Transport, ChannelSecurity, bool)> {
    let Some(tls) = &core.cfg.tls else {
        return Some((Transport::Plain(stream), ChannelSecurity::Plain, false));
    };
    let deadline = started + core.cfg.handshake_timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    if side == Side::Acceptor {
        // A TLS ClientHello starts with 0x16; a plain mesh peer starts with its HELLO ("MS").
        let mut first = [0u8; 2];
        let peeked = glommio::timer::timeout(left(), async { stream.peek(&mut first).await }).await;
        if let Err(glommio::GlommioError::TimedOut(_)) = peeked {
            handshake_timed_out(core, side, started);
            return None;
        }
        if matches!(peeked, Ok(n) if n >= 1 && first[0] == mesh_wire::MAGIC[0]) {
            let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
            let client_only = core.cfg.require_tls && local;
            return Some((
                Transport::Plain(stream),
                ChannelSecurity::Plain,
                client_only,
            ));
        }
    }
    match crate::tls::handshake(tls, stream, side, left()).await {
        Ok((s, security)) => Some((Transport::Tls(Box::new(s)), security, false)),
        Err(crate::tls::TlsHandshakeError::Timeout(_)) => {
            handshake_timed_out(core, side, started);
            None
        }
        Err(e) => {
            CoreMetrics::add(&core.metrics.handshake_failures, 1);
            warn!(core = core.id, ?side, error = %e, "TLS handshake refused");
            None
        }
    }
}

/// Counts and logs a connection closed because its handshake (TLS and HELLO) did not finish
/// within the deadline.
pub(crate) fn handshake_timed_out(core: &Core, side: Side, started: Instant) {
    CoreMetrics::add(&core.metrics.handshake_failures, 1);
    CoreMetrics::add(&core.metrics.handshake_timeouts, 1);
    info!(
        core = core.id,
        ?side,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        deadline_ms = u64::try_from(core.cfg.handshake_timeout.as_millis()).unwrap_or(u64::MAX),
        "handshake deadline passed: connection closed"
    );
}

/// 32 fresh bytes from the OS CSPRNG for a HELLO nonce.
fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut n) {
        // Without OS randomness the nonce only loses its freshness, not safety: the TLS exporter
        // still binds signatures to the connection.
        warn!(error = %e, "getrandom failed; HELLO nonce is not random");
    }
    n
}
