//! mesh-bench: measures mesh end to end against a two-server NATS cluster and a plain
//! loopback TCP stream, on one machine, side by side in one run.
//!
//! It starts what it measures ([`procs`]: real `mesh` processes in a pair, a line or a ring of
//! two domains, two routed `nats-server` processes) and stops it all on drop. Every system sits
//! behind the [`systems::System`] seam (a producer and a consumer per run): mesh through the
//! native client or gRPC ([`grpc`]), NATS, plain TCP. [`run`] measures throughput at saturation (counting losses)
//! and latency at a fixed, paced rate ([`rate::Pacer`]) into hdrhistograms ([`hist`]), with
//! send timestamps in the payload ([`payload`]) on one clock. [`results`] writes the JSON,
//! [`report`] the table, [`plot`] the SVGs.

pub mod grpc;
pub mod hist;
pub mod hostile;
pub mod payload;
pub mod plot;
pub mod procs;
pub mod rate;
pub mod report;
pub mod results;
pub mod run;
pub mod soak;
pub mod systems;
#[cfg(feature = "zenoh")]
pub mod zenoh;
