//! The node's gRPC API (SPEC §4, package `mesh.v1`), served by tonic on the control thread's
//! tokio runtime.
//!
//! - [`control_service`]: `MeshControl` (GetTopology, SetPolicy, PublishState), answered by the
//!   control loop through `control::requests`;
//! - [`topology`]: the router's view as a `Topology`;
//! - [`policy`]: `Policy` from the wire to `mesh-routing`, verdicts to status codes;
//! - [`data_service`]: `MeshData` (Send, SendStream, Subscribe, Ack, GetStatus), through
//! - [`gateway`]: native-client sessions of the node with itself;
//! - [`metrics`]: requests and latency per method.
//!
//! [`routes`] is the one place services are registered.

pub mod control_service;
pub mod data_service;
pub mod gateway;
pub mod metrics;
pub mod policy;
pub mod topology;

use std::future::Future;

use mesh_proto::v1::mesh_control_server::MeshControlServer;
use mesh_proto::v1::mesh_data_server::MeshDataServer;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

pub use control_service::MeshControlService;
pub use data_service::MeshDataService;
pub use metrics::{GrpcMethod, GrpcMetrics};

/// HTTP/2 receive window of one stream, bytes.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 receive window of one connection (all its streams), bytes.
pub const CONNECTION_WINDOW: u32 = 2 << 20;

/// Every gRPC service of the node, ready to serve.
#[must_use]
pub fn routes(control: MeshControlService, data: MeshDataService) -> Routes {
    let mut routes = RoutesBuilder::default();
    routes.add_service(MeshControlServer::new(control));
    routes.add_service(
        MeshDataServer::new(data).max_decoding_message_size(data_service::MAX_PAYLOAD + (1 << 20)),
    );
    routes.routes()
}

/// Serves `routes` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the calls in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // HTTP/2 receive windows larger than the protocol's 64 KiB default: a SendStream of small
    // messages would otherwise wait for a WINDOW_UPDATE every few hundred messages. They bound
    // what one client can have buffered in the node unread (per stream and per connection).
    let mut server = Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW));
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
