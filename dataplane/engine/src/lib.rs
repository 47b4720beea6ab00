//! The mesh data plane (SPEC §1, §3): thread-per-core glommio executors that own peer sessions,
//! read frames with `mesh-wire`'s decoder, drive `mesh-session` state machines, and forward
//! frames hop by hop without copying payloads.
//!
//! - [`engine`]: start-up ([`start`]) and the control thread's [`EngineHandle`];
//! - [`core`]: one core's state and its routing of frames (local queue, other core, control);
//! - [`conn`]: the task that drives one connection;
//! - [`queue`]: bounded per-peer outbound queues of whole frames, written vectored;
//! - [`transport`]: plain TCP (and TLS) under a session;
//! - [`pipe`]: in-process byte streams for the gRPC gateway's sessions with its own node;
//! - [`routes`]: the route-snapshot interface the control plane publishes through;
//! - [`mod@mailbox`]: crossbeam queues with wakers between the control thread and the cores;
//! - [`metrics`]: per-core counters.
//!
//! glommio stays inside this crate (executors, sockets, timers): the protocol crates it drives
//! know nothing of it. `unsafe` appears once, for the vectored `sendmsg` (see `transport`).

mod buffers;
pub mod config;
pub mod conn;
pub mod core;
pub mod delivery;
pub mod engine;
mod idempotency;
pub mod mailbox;
pub mod metrics;
pub mod pipe;
pub mod queue;
mod ratelimit;
pub mod routes;
pub mod tls;
pub mod transport;

pub use config::{DurabilityMode, EngineConfig, Placement, StorageSpec};
pub use core::{CoreMsg, EngineEvent};
pub use delivery::{DeliveryConfig, DeliveryMode};
pub use engine::{EngineError, EngineHandle, OpenLocalError, StatusError, SubmitError, start};
pub use mailbox::{MailboxError, MailboxReceiver, MailboxSender, mailbox};
pub use metrics::{CoreMetrics, DropReason};
pub use pipe::{LOCAL_PIPE_CAPACITY, LocalStream, local_pair};
pub use queue::{OutItem, PeerQueue, QueueLimits};
pub use routes::{RateLimit, Route, RouteLookup, RouteSnapshot, StaticRoutes, ecmp_pick};
pub use tls::{TlsContext, TlsHandshakeError};
