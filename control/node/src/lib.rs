//! The mesh node: configuration, the control thread (link-state routing over the data plane),
//! the gRPC API, the metrics endpoint, and operator commands. The `mesh` binary is
//! `src/main.rs`.

pub mod certs;
pub mod client_cmd;
pub mod config;
pub mod control;
pub mod grpc;
pub mod grpc_cmd;
pub mod metrics;
pub mod node;
