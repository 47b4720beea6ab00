//! The protobuf and gRPC contract of mesh: package `mesh.v1`, compiled from `proto/mesh.proto`
//! (SPEC.md §4).
//!
//! - [`v1`] holds the messages (prost) and, per service, a client module
//!   ([`v1::mesh_data_client`], [`v1::mesh_control_client`]) and a server module
//!   ([`v1::mesh_data_server`], [`v1::mesh_control_server`]) with the trait a node implements.
//! - `bytes` fields (payloads, header values) are [`prost::bytes::Bytes`], so a payload moves
//!   from the gRPC layer to the data plane without a copy.
//! - `google.protobuf.Empty` is `()`, `google.protobuf.Timestamp` is [`prost_types::Timestamp`].
//! - Enum fields are stored as `i32` (protobuf keeps unknown values); use the generated
//!   accessors (`SendRequest::mode()`) or `TryFrom<i32>` to get the enum.
//!
//! The comments in `mesh.proto` are the contract; they are copied onto the generated items.

/// Package `mesh.v1`: every message, enum and service of `mesh.proto`.
///
/// Generated code: it follows prost's and tonic's conventions, not this workspace's lints.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/mesh.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `mesh.proto` and the files it imports
/// (with source info, so comments included), for gRPC server reflection (`tonic-reflection`)
/// and for tools that need the schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

#[cfg(test)]
mod tests;
