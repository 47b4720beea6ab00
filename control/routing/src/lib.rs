//! sans-IO link-state routing for mesh: flooding, LSDB, SPF with ECMP, domain routes, policy.
//!
//! A pure protocol crate (SPEC §1, STYLE "protocol cores without I/O"): no runtime, no I/O, no
//! clocks (time is a [`Duration`](std::time::Duration) argument), randomness only from a seed.
//! The tokio control-plane shell feeds a [`Router`] the LSA / LSA_ACK frame bodies it receives,
//! neighbour up/down events and timer ticks; it sends what [`Router::poll_transmit`] returns and
//! publishes the [`RouteTable`]s [`Router::poll_routes`] returns to the data-plane cores as
//! immutable snapshots.
//!
//! Modules, bottom-up:
//! - [`ids`]: node and domain ids, sequence numbers with RFC 1982 wrap;
//! - [`lsa`]: the advertisement and its canonical, bounded binary encoding;
//! - [`message`]: flooding messages (update, ack, database summary) and their encoding;
//! - [`lsdb`]: one domain's link-state database: newer-wins, ageing, flush, bounds;
//! - [`flood`]: the per-neighbour reliable flooding state machine and database sync;
//! - [`spf`]: Dijkstra keeping every equal-cost first hop;
//! - [`interdomain`]: the domain-level path vector carried in border summaries;
//! - [`members`]: member ranges and node → domain resolution;
//! - [`policy`]: SetPolicy: costs, preferences, allow/deny, rate limits;
//! - [`table`]: the route table and SPEC §3's lookup with ECMP;
//! - [`compute`](mod@compute): LSDB → table and summaries, as one pure function;
//! - [`router`]: all of it for one node.

#![forbid(unsafe_code)]

pub mod compute;
pub mod flood;
mod hash;
pub mod ids;
pub mod interdomain;
pub mod lsa;
pub mod lsdb;
pub mod members;
pub mod message;
pub mod policy;
pub mod router;
pub mod spf;
pub mod table;

pub use compute::{ComputeInput, Computed, compute};
pub use flood::{FloodConfig, FloodError, FloodEvent, FloodStats, Flooder, Transmit};
pub use ids::{DomainId, NodeId, SeqNo};
pub use lsa::{
    CodecError, DomainMembers, DomainReach, Link, LinkState, Lsa, LsaHeader, LsaInstance,
    NodeRange, Summary,
};
pub use lsdb::{Freshness, Lsdb, LsdbError};
pub use members::DomainMap;
pub use message::{FrameKind, Message};
pub use policy::{
    Destination, DomainPreference, LinkCost, Policy, PolicyError, RateLimit, TokenBucket,
    ValidPolicy,
};
pub use router::{ConfigError, Event, Metrics, Router, RouterConfig, RouterError};
pub use spf::{SpfError, SpfWorkspace};
pub use table::{NextHop, RouteError, RouteTable, ecmp_hash};
