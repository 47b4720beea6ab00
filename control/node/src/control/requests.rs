//! Requests from the gRPC services to the control loop, and what the loop keeps to answer them.
//!
//! The [`Router`] is owned by the control loop (`control::run`) and never shared: a gRPC
//! handler sends a [`ControlRequest`] carrying a oneshot reply channel through a bounded
//! `mpsc` queue ([`ControlHandle`]), and the loop answers it between two routing inputs, in the
//! same `select!` that takes engine events and timers. No lock is taken anywhere, the data
//! plane never sees these requests, and a request is answered against a consistent router
//! state. A policy set here is applied by the loop's next route computation, which runs right
//! after the request is handled.

use std::sync::Arc;

use mesh_proto::v1 as pb;
use mesh_routing::{DomainId, Policy, PolicyError, Router};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::LinkStateRoutes;
use crate::grpc::topology;

/// Most requests queued for the control loop; further senders wait (backpressure on the gRPC
/// handlers, never on the data plane).
pub const MAX_PENDING_REQUESTS: usize = 64;

/// One request to the control loop, with the channel its answer goes back on.
#[derive(Debug)]
pub enum ControlRequest {
    /// GetTopology: the topology as this node sees it, optionally scoped to one domain.
    GetTopology {
        /// `None`: own domain in detail plus every domain's summary; `Some(d)`: domain `d` only.
        scope: Option<DomainId>,
        /// The answer (NOT_FOUND for a domain this node does not know).
        reply: oneshot::Sender<Result<pb::Topology, Status>>,
    },
    /// SetPolicy: a new policy for the router, applied at the next route computation.
    SetPolicy {
        /// The policy, converted from the request but not yet validated.
        policy: Policy,
        /// The router's verdict.
        reply: oneshot::Sender<Result<(), PolicyError>>,
    },
    /// PublishState: this node's own announced state.
    PublishState {
        /// The announcement, checked to be about this node.
        update: StateUpdate,
        /// Whether it was applied (`false`: an old sequence number, ignored).
        reply: oneshot::Sender<bool>,
    },
}

/// One PublishState announcement about this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateUpdate {
    /// Addresses (host:port), replacing the announced ones unless empty.
    pub addresses: Vec<String>,
    /// Capability names, replacing the announced set.
    pub capabilities: Vec<String>,
    /// Load figures, replacing the announced ones when set.
    pub load: Option<pb::NodeLoad>,
    /// Whether the node is draining.
    pub draining: bool,
    /// 0: apply after everything so far; otherwise apply only above the last applied sequence.
    pub sequence: u64,
}

/// What this node announces about itself, as GetTopology shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncedState {
    /// Addresses (host:port) peers can reach this node at; starts as the listen address.
    pub addresses: Vec<String>,
    /// Capability names.
    pub capabilities: Vec<String>,
    /// Last announced load, if any.
    pub load: Option<pb::NodeLoad>,
    /// Whether the node announced it is draining.
    pub draining: bool,
    /// The highest sequence number applied.
    pub sequence: u64,
}

impl AnnouncedState {
    /// Applies `u` per the StateSync rules; returns `false` (changing nothing) when its
    /// non-zero sequence number is not above the last one applied, so retries are harmless.
    pub fn apply(&mut self, u: StateUpdate) -> bool {
        if u.sequence != 0 && u.sequence <= self.sequence {
            return false;
        }
        self.sequence = self.sequence.max(u.sequence);
        if !u.addresses.is_empty() {
            self.addresses = u.addresses;
        }
        self.capabilities = u.capabilities;
        if u.load.is_some() {
            self.load = u.load;
        }
        self.draining = u.draining;
        true
    }
}

/// What the control loop keeps for answering requests, next to its router.
#[derive(Debug, Default)]
pub struct ApiState {
    /// This node's announced state.
    pub announced: AnnouncedState,
    /// Grows with every change of the routing input or of the announced state.
    pub topology_epoch: u64,
    /// The last route table published, if any.
    pub routes: Option<Arc<LinkStateRoutes>>,
}

/// Answers one request. A policy change leaves the router's routes dirty: the loop's
/// `poll_routes` right after this call recomputes and re-advertises.
pub fn handle(router: &mut Router, api: &mut ApiState, req: ControlRequest) {
    match req {
        ControlRequest::GetTopology { scope, reply } => {
            let table = api.routes.as_ref().map(|r| &r.table);
            let topo = topology::build(router, table, &api.announced, api.topology_epoch, scope);
            let _ = reply.send(topo);
        }
        ControlRequest::SetPolicy { policy, reply } => {
            let r = router.handle_set_policy(policy);
            if r.is_ok() {
                api.topology_epoch += 1;
            }
            let _ = reply.send(r);
        }
        ControlRequest::PublishState { update, reply } => {
            let applied = api.announced.apply(update);
            if applied {
                api.topology_epoch += 1;
            }
            let _ = reply.send(applied);
        }
    }
}

/// The gRPC side of the request queue: cheap to clone, one per service.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<ControlRequest>,
}

/// A request queue: the handle for the gRPC services, the receiver for `control::run`.
#[must_use]
pub fn channel() -> (ControlHandle, mpsc::Receiver<ControlRequest>) {
    let (tx, rx) = mpsc::channel(MAX_PENDING_REQUESTS);
    (ControlHandle { tx }, rx)
}

fn stopping() -> Status {
    Status::unavailable("the node's control loop is stopping")
}

impl ControlHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())
    }

    /// The topology as the node sees it now (UNAVAILABLE when the node is stopping).
    pub async fn get_topology(&self, scope: Option<DomainId>) -> Result<pb::Topology, Status> {
        self.ask(|reply| ControlRequest::GetTopology { scope, reply })
            .await?
    }

    /// Offers a policy to the router: the outer error is UNAVAILABLE (stopping), the inner one
    /// the router's verdict.
    pub async fn set_policy(&self, policy: Policy) -> Result<Result<(), PolicyError>, Status> {
        self.ask(|reply| ControlRequest::SetPolicy { policy, reply })
            .await
    }

    /// Records this node's announced state; `Ok(false)` when ignored as an old sequence.
    pub async fn publish_state(&self, update: StateUpdate) -> Result<bool, Status> {
        self.ask(|reply| ControlRequest::PublishState { update, reply })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(sequence: u64, addr: &str, draining: bool) -> StateUpdate {
        StateUpdate {
            addresses: if addr.is_empty() {
                vec![]
            } else {
                vec![addr.to_owned()]
            },
            draining,
            sequence,
            ..StateUpdate::default()
        }
    }

    #[test]
    fn sequences_order_announcements_and_empty_addresses_keep_the_old_ones() {
        let mut s = AnnouncedState {
            addresses: vec!["127.0.0.1:7001".into()],
            ..AnnouncedState::default()
        };
        assert!(s.apply(update(5, "10.0.0.1:7001", false)));
        assert!(
            !s.apply(update(5, "10.0.0.2:7001", false)),
            "a retry is ignored"
        );
        assert!(
            !s.apply(update(3, "10.0.0.3:7001", true)),
            "an older one too"
        );
        assert_eq!(s.addresses, ["10.0.0.1:7001"]);
        assert!(s.apply(update(0, "", true)), "0 always applies");
        assert_eq!(s.addresses, ["10.0.0.1:7001"]);
        assert!(s.draining);
        assert_eq!(s.sequence, 5);
    }
}
