//! The control thread: a tokio runtime that runs link-state routing for this node on top of
//! the data plane.
//!
//! It turns the engine's events into `mesh-routing` inputs (a node session up or down is a
//! neighbour up or down; an LSA / LSA_ACK frame is a routing message), sends what the router
//! wants sent as LSA / LSA_ACK frames to the neighbour, and publishes every route table the
//! router computes to all cores as an immutable snapshot. SPF time is measured here, outside
//! the pure router.
//!
//! The gRPC MeshControl service reaches the router only through [`requests`]: a bounded queue
//! of requests with oneshot replies, taken by the same `select!` as the engine's events, so the
//! router stays owned by this one task and nothing is locked.

pub mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_engine::{EngineEvent, EngineHandle, Route, RouteLookup, RouteSnapshot, SubmitError};
use mesh_routing::{
    Destination, DomainId, Event, NextHop, NodeId, RouteError, RouteTable, Router, RouterConfig,
};
use mesh_session::Role;
use mesh_wire::{Envelope, FrameKind, Limits, encode_frame};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use self::requests::{AnnouncedState, ApiState, ControlRequest};

/// A route table from `mesh-routing` as the data plane sees it.
#[derive(Debug)]
pub struct LinkStateRoutes {
    table: RouteTable,
    epoch: u64,
}

impl RouteLookup for LinkStateRoutes {
    fn next_hop(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Option<u64> {
        match self.route(src_node, dst_domain, dst_node, msg_id) {
            Route::Forward(n) => Some(n),
            Route::NoRoute | Route::Denied => None,
        }
    }

    fn route(&self, src_node: u64, dst_domain: u32, dst_node: u64, msg_id: u64) -> Route {
        let Some(dst) = NodeId::new(dst_node) else {
            return Route::NoRoute;
        };
        let src = NodeId::new(src_node).unwrap_or(dst);
        // A frame without a destination domain resolves it from the member sets.
        let domain = if dst_domain == 0 {
            match self.table.domain_of(dst) {
                Some(d) => d,
                None => return Route::NoRoute,
            }
        } else {
            DomainId(dst_domain)
        };
        match self.table.lookup(domain, dst, src, msg_id) {
            Ok(NextHop::Forward(n)) => Route::Forward(n.get()),
            Ok(NextHop::Local) | Err(RouteError::NoRoute { .. }) => Route::NoRoute,
            Err(RouteError::Denied { .. }) => Route::Denied,
        }
    }

    fn rate_limit(&self, dst_domain: u32, dst_node: u64) -> Option<mesh_engine::RateLimit> {
        let dst = NodeId::new(dst_node)?;
        let domain = if dst_domain == 0 {
            self.table.domain_of(dst)?
        } else {
            DomainId(dst_domain)
        };
        let r = self.table.rate_limit(domain, dst)?;
        let scope = match r.dst {
            Destination::Node(n) => (false, n.get()),
            Destination::Domain(d) => (true, u64::from(d.0)),
        };
        Some(mesh_engine::RateLimit {
            scope,
            msgs_per_s: r.msgs_per_s,
            burst: r.burst,
        })
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// Counters of the control thread, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Route computations run.
    pub route_computations: AtomicU64,
    /// Duration of the last SPF / route computation, in microseconds.
    pub last_spf_us: AtomicU64,
    /// Sum of all route computation times, in microseconds.
    pub spf_us_total: AtomicU64,
    /// Route-table entries of the last snapshot (own-domain nodes + other domains).
    pub route_entries: AtomicU64,
    /// Routing messages sent.
    pub lsa_messages_sent: AtomicU64,
    /// Routing messages received.
    pub lsa_messages_received: AtomicU64,
    /// Routing messages refused (undecodable, or refused by the router).
    pub lsa_messages_rejected: AtomicU64,
    /// Peer nodes currently adjacent.
    pub neighbors: AtomicU64,
    /// Frames delivered to this node (awaiting the storage / gRPC layers).
    pub delivered: AtomicU64,
    /// Frames this node sent that came back undeliverable.
    pub undeliverable: AtomicU64,
}

/// Runs until `shutdown` flips to true, answering the gRPC services' `requests` on the way
/// (a closed `requests` queue, gRPC off, is fine).
pub async fn run(
    engine: Arc<EngineHandle>,
    node_id: u64,
    domain: u32,
    metrics: Arc<ControlMetrics>,
    mut requests: mpsc::Receiver<ControlRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let Some(node) = NodeId::new(node_id) else {
        warn!("node id 0 cannot run link-state routing");
        return;
    };
    let mut router = match Router::new(RouterConfig::new(node, DomainId(domain)), Duration::ZERO) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "invalid router configuration");
            return;
        }
    };
    let mut epoch = 0u64;
    let mut api = ApiState {
        announced: AnnouncedState {
            addresses: vec![engine.local_addr().to_string()],
            ..AnnouncedState::default()
        },
        ..ApiState::default()
    };
    loop {
        let now = start.elapsed();
        let deadline = router
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| t.saturating_sub(now));
        tokio::select! {
            ev = engine.events().recv() => {
                let Some(ev) = ev else { break };
                handle_event(&mut router, &metrics, ev, start.elapsed());
                // Take whatever else is waiting before computing routes.
                for _ in 0..1024 {
                    match engine.events().try_recv() {
                        Some(ev) => handle_event(&mut router, &metrics, ev, start.elapsed()),
                        None => break,
                    }
                }
            }
            () = tokio::time::sleep(deadline) => router.handle_timeout(start.elapsed()),
            Some(req) = requests.recv() => requests::handle(&mut router, &mut api, req),
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
        while let Some(ev) = router.poll_event() {
            if matches!(ev, Event::TopologyChanged { .. }) {
                api.topology_epoch += 1;
            }
        }
        let t0 = Instant::now();
        if let Some(table) = router.poll_routes(start.elapsed()) {
            let spf = t0.elapsed();
            router.record_spf_duration(spf);
            epoch += 1;
            let entries = table.intra_routes().len() + table.inter_routes().len();
            metrics.route_computations.fetch_add(1, Ordering::Relaxed);
            let us = u64::try_from(spf.as_micros()).unwrap_or(u64::MAX);
            metrics.last_spf_us.store(us, Ordering::Relaxed);
            metrics.spf_us_total.fetch_add(us, Ordering::Relaxed);
            metrics
                .route_entries
                .store(entries as u64, Ordering::Relaxed);
            debug!(epoch, entries, spf_us = us, "publishing routes");
            let routes = Arc::new(LinkStateRoutes { table, epoch });
            api.routes = Some(routes.clone());
            api.topology_epoch += 1;
            let snapshot: RouteSnapshot = routes;
            engine.publish_routes(&snapshot);
        }
        while let Some(t) = router.poll_transmit() {
            send_routing(&engine, &metrics, node_id, domain, t.to.get(), &t.msg);
        }
    }
    info!("control thread stopping");
}

fn handle_event(router: &mut Router, metrics: &ControlMetrics, ev: EngineEvent, now: Duration) {
    match ev {
        EngineEvent::PeerUp { peer, .. } => {
            if peer.role != Role::Node {
                return;
            }
            let Some(id) = NodeId::new(peer.node_id) else {
                return;
            };
            match router.handle_neighbor_up(id, DomainId(peer.domain_id), 1, now) {
                Ok(()) => {
                    metrics.neighbors.fetch_add(1, Ordering::Relaxed);
                    info!(peer = peer.node_id, domain = peer.domain_id, "neighbour up");
                }
                Err(e) => warn!(peer = peer.node_id, error = %e, "neighbour refused by the router"),
            }
        }
        EngineEvent::PeerDown { node_id, reason } => {
            if let Some(id) = NodeId::new(node_id)
                && router.neighbors().any(|(n, _, _)| n == id)
                && router.handle_neighbor_down(id, now).is_ok()
            {
                metrics.neighbors.fetch_sub(1, Ordering::Relaxed);
                info!(peer = node_id, ?reason, "neighbour down");
            }
        }
        EngineEvent::Control { from, frame } => match frame.kind() {
            FrameKind::Lsa | FrameKind::LsaAck => {
                metrics
                    .lsa_messages_received
                    .fetch_add(1, Ordering::Relaxed);
                let Some(from) = NodeId::new(from) else {
                    return;
                };
                if let Err(e) = router.handle_bytes(from, frame.payload(), now) {
                    metrics
                        .lsa_messages_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(peer = from.get(), error = %e, "routing message refused");
                }
            }
            other => debug!(?other, "control frame not handled by this node yet"),
        },
        EngineEvent::Deliver(frame) => {
            metrics.delivered.fetch_add(1, Ordering::Relaxed);
            let e = frame.envelope();
            debug!(src = e.src_node, msg_id = e.msg_id, kind = ?e.kind, len = frame.payload().len(), "delivered");
        }
        EngineEvent::Undeliverable { envelope, reason } => {
            metrics.undeliverable.fetch_add(1, Ordering::Relaxed);
            debug!(
                dst = envelope.dst_node,
                msg_id = envelope.msg_id,
                ?reason,
                "undeliverable"
            );
        }
    }
}

fn send_routing(
    engine: &EngineHandle,
    metrics: &ControlMetrics,
    node_id: u64,
    domain: u32,
    to: u64,
    msg: &mesh_routing::Message,
) {
    let kind = match msg.frame_kind() {
        mesh_routing::FrameKind::Lsa => FrameKind::Lsa,
        mesh_routing::FrameKind::LsaAck => FrameKind::LsaAck,
    };
    let body = match msg.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "routing message does not encode");
            return;
        }
    };
    let mut env = Envelope::new(kind);
    env.ttl = 1;
    env.src_node = node_id;
    env.src_domain = domain;
    env.dst_node = to;
    let frame = match encode_frame(&env, &[], Bytes::from(body), &Limits::default()) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "routing message does not fit a frame");
            return;
        }
    };
    match engine.send_to_peer(to, frame) {
        Ok(()) => {
            metrics.lsa_messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        // The router retransmits unacknowledged LSAs; a busy data plane only delays them.
        Err(SubmitError::Busy(_) | SubmitError::Stopped(_)) => {
            debug!(peer = to, "routing message not queued: data plane busy");
        }
    }
}
