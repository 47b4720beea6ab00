//! The `mesh.v1.MeshControl` service: GetTopology, SetPolicy and PublishState, answered by the
//! control loop through its request queue ([`ControlHandle`]).
//!
//! Each handler checks what it can on its own (ids, bounds), asks the control loop, maps the
//! answer to a gRPC status with a message saying what to fix, and records the call in the
//! [`GrpcMetrics`].

use std::sync::Arc;
use std::time::Instant;

use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_control_server::MeshControl;
use mesh_routing::{DomainId, NodeId};
use tonic::{Request, Response, Status};

use super::metrics::{GrpcMethod, GrpcMetrics};
use super::policy;
use crate::control::requests::{ControlHandle, StateUpdate};

/// Most addresses a node announces.
pub const MAX_ADDRESSES: usize = 16;
/// Most capabilities a node announces.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest address or capability name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// MeshControl for one node.
#[derive(Debug, Clone)]
pub struct MeshControlService {
    node: NodeId,
    domain: DomainId,
    control: ControlHandle,
    metrics: Arc<GrpcMetrics>,
}

impl MeshControlService {
    /// The service of node `node` in `domain`, asking the control loop through `control`.
    #[must_use]
    pub fn new(
        node: NodeId,
        domain: DomainId,
        control: ControlHandle,
        metrics: Arc<GrpcMetrics>,
    ) -> MeshControlService {
        MeshControlService {
            node,
            domain,
            control,
            metrics,
        }
    }

    fn record<T>(&self, method: GrpcMethod, t0: Instant, r: &Result<T, Status>) {
        let code = r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.record(method, code, t0.elapsed());
    }

    async fn publish_state(&self, s: pb::StateSync) -> Result<(), Status> {
        if s.node_id != 0 && s.node_id != self.node.get() {
            return Err(Status::failed_precondition(format!(
                "node_id: {} is not this node ({}); a node only publishes its own state",
                s.node_id, self.node
            )));
        }
        if let Some(d) = s.domain_id
            && d != self.domain.0
        {
            return Err(Status::failed_precondition(format!(
                "domain_id: {d} is not this node's domain ({}); changing domains needs a restart",
                self.domain
            )));
        }
        check_names("addresses", &s.addresses, MAX_ADDRESSES, check_address)?;
        check_names(
            "capabilities",
            &s.capabilities,
            MAX_CAPABILITIES,
            |_| Ok(()),
        )?;
        if let Some(load) = &s.load {
            for (field, v) in [
                ("load.cpu_permille", load.cpu_permille),
                ("load.memory_permille", load.memory_permille),
            ] {
                if v > 1000 {
                    return Err(Status::invalid_argument(format!(
                        "{field}: {v} is over 1000 (per mille)"
                    )));
                }
            }
        }
        // An old sequence number is ignored by design (retries are harmless): still OK.
        let _applied = self
            .control
            .publish_state(StateUpdate {
                addresses: s.addresses,
                capabilities: s.capabilities,
                load: s.load,
                draining: s.draining,
                sequence: s.sequence,
            })
            .await?;
        Ok(())
    }

    async fn set_policy(&self, r: pb::SetPolicyRequest) -> Result<(), Status> {
        let p = r
            .policy
            .ok_or_else(|| Status::invalid_argument("policy: required"))?;
        let p = policy::from_proto(self.node, &p)?;
        self.control
            .set_policy(p)
            .await?
            .map_err(|e| policy::rejection(&e))
    }
}

fn check_names(
    field: &str,
    names: &[String],
    max: usize,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), Status> {
    if names.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {} entries, at most {max}",
            names.len()
        )));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || n.len() > MAX_NAME_LEN {
            return Err(Status::invalid_argument(format!(
                "{field}[{i}]: {} bytes; 1..={MAX_NAME_LEN} allowed",
                n.len()
            )));
        }
        check(n).map_err(|why| Status::invalid_argument(format!("{field}[{i}]: {why}")))?;
    }
    Ok(())
}

/// `host:port` with a non-empty host and a port number.
fn check_address(a: &str) -> Result<(), String> {
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{a:?} is not host:port")),
    }
}

#[tonic::async_trait]
impl MeshControl for MeshControlService {
    async fn publish_state(&self, request: Request<pb::StateSync>) -> Result<Response<()>, Status> {
        let t0 = Instant::now();
        let r = MeshControlService::publish_state(self, request.into_inner()).await;
        self.record(GrpcMethod::PublishState, t0, &r);
        r.map(Response::new)
    }

    async fn get_topology(
        &self,
        request: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::Topology>, Status> {
        let t0 = Instant::now();
        let scope = request.into_inner().domain_id.map(DomainId);
        let r = self.control.get_topology(scope).await;
        self.record(GrpcMethod::GetTopology, t0, &r);
        r.map(Response::new)
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<()>, Status> {
        let t0 = Instant::now();
        let r = MeshControlService::set_policy(self, request.into_inner()).await;
        self.record(GrpcMethod::SetPolicy, t0, &r);
        r.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert!(check_address("10.0.0.1:7001").is_ok());
        assert!(check_address("[::1]:7001").is_ok());
        assert!(check_address("node-3.example:1").is_ok());
        assert!(check_address("10.0.0.1").is_err());
        assert!(check_address(":7001").is_err());
        assert!(check_address("host:70000").is_err());
        let e = check_names("addresses", &["x".into()], 4, check_address).unwrap_err();
        assert!(e.message().starts_with("addresses[0]:"), "{e}");
    }
}
