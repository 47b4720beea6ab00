//! The mesh session layer (SPEC §3, §6), as a sans-IO library.
//!
//! A session is one connection between two mesh nodes (or a node and a wire-protocol client).
//! The data-plane shell owns the socket and TLS; this crate owns everything the connection
//! *means*:
//!
//! - [`hello`]: the HELLO body (CBOR), decoded under hard limits;
//! - [`auth`]: the authentication rules (certificate node id, ML-DSA signature over the TLS
//!   channel binding, `require_tls`) and the [`HandshakeCrypto`] trait the shell implements;
//! - [`session`]: the per-connection state machine [`Session`] (handshake, keepalive, dead-peer
//!   detection, drain and close), driven by `handle_*` inputs and `poll_*` outputs;
//! - [`control`]: encoders for the session-control frames (HELLO, KEEPALIVE, DRAIN, CLOSE);
//! - [`backoff`]: exponential backoff with full jitter for outbound connects, over [`rng`];
//! - [`admission`]: what unauthenticated peers may make a node spend, and the
//!   simultaneous-dial tie-break with its [`SessionTable`];
//! - [`stats`]: counters for metrics.
//!
//! No I/O, no runtime, no clocks (time is an argument), no randomness of its own (nonces and
//! seeds come from the shell), no crypto library (signing and verification are injected), no
//! `unsafe`. Every bad input from the network ends as a typed CLOSE, never a panic.

#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod backoff;
pub mod control;
pub mod hello;
pub mod rng;
pub mod session;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use admission::{
    Admission, AdmissionConfig, AdmissionError, Registration, SessionTable, Ticket, TieBreak,
    tie_break,
};
pub use auth::{
    AuthError, CHANNEL_BINDING_LEN, ChannelSecurity, EXPORTER_LABEL, HandshakeCrypto,
    PeerCredentials, TRANSCRIPT_LABEL, TlsChannel, Transcript,
};
pub use backoff::{Backoff, BackoffConfig};
pub use hello::{Capabilities, DecodedHello, Hello, HelloError, Role, VersionRange};
pub use rng::SplitMix64;
pub use session::{
    ConfigError, PeerInfo, Session, SessionConfig, SessionError, SessionEvent, SessionState, Side,
};
pub use stats::{FrameCounters, HandshakeFailure, HandshakeFailureCounters, SessionStats};
