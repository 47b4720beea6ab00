//! Local settings of a session and their bounds.

use std::time::Duration;

use mesh_wire::{Limits, LimitsError};

use crate::hello::{
    Capabilities, MAX_KEEPALIVE_INTERVAL_MS, MIN_KEEPALIVE_INTERVAL_MS, Role, VersionRange,
};

/// Default handshake deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default keepalive interval.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Default number of silent keepalive intervals after which the peer is dead.
pub const DEFAULT_DEAD_AFTER: u32 = 3;
/// Bounds of `dead_after`.
pub const DEAD_AFTER_RANGE: core::ops::RangeInclusive<u32> = 2..=100;
/// Bounds of the handshake timeout, in milliseconds.
pub const HANDSHAKE_TIMEOUT_MS_RANGE: core::ops::RangeInclusive<u64> = 100..=60_000;

/// Local settings of a session. Start from [`SessionConfig::new`] and adjust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// This node's id (non-zero).
    pub node_id: u64,
    /// This node's domain.
    pub domain_id: u32,
    /// Whether this end is a node or a wire-protocol client.
    pub role: Role,
    /// Features offered (the session uses the intersection with the peer's).
    pub capabilities: Capabilities,
    /// Session protocol versions spoken.
    pub versions: VersionRange,
    /// Largest frame and metadata accepted (the session uses the smaller of both sides').
    pub limits: Limits,
    /// Idle time after which a KEEPALIVE is sent (the session uses the smaller of both
    /// sides'); 100 ms ..= 10 min, whole milliseconds.
    pub keepalive_interval: Duration,
    /// The peer is dead after this many keepalive intervals without a byte from it.
    pub dead_after: u32,
    /// The peer's HELLO must arrive within this time of [`Session::new`](super::Session::new).
    pub handshake_timeout: Duration,
    /// Refuse plain-TCP peers with CLOSE `TlsRequired`.
    pub require_tls: bool,
    /// Accept peers whose role is [`Role::Client`] (when this end is a node).
    pub accept_clients: bool,
}

impl SessionConfig {
    /// Defaults for node `node_id` in `domain_id`: role node, capability CHUNKING, version 1,
    /// 1 MiB frames, keepalive 5 s, dead after 3 intervals, handshake deadline 2 s, plain TCP
    /// allowed, clients accepted.
    pub fn new(node_id: u64, domain_id: u32) -> Self {
        Self {
            node_id,
            domain_id,
            role: Role::Node,
            capabilities: Capabilities::CHUNKING,
            versions: VersionRange::CURRENT,
            limits: Limits::default(),
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            require_tls: false,
            accept_clients: true,
        }
    }

    /// Checks every bound; [`Session::new`](super::Session::new) refuses a config that fails this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::NodeIdZero);
        }
        Limits::new(self.limits.max_frame_len, self.limits.max_meta_len)?;
        let ka = self.keepalive_interval;
        let ka_ms = ka.as_millis();
        let ka_range =
            u128::from(MIN_KEEPALIVE_INTERVAL_MS)..=u128::from(MAX_KEEPALIVE_INTERVAL_MS);
        if !ka_range.contains(&ka_ms) || !ka.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(ConfigError::KeepaliveInterval {
                value: ka,
                min_ms: MIN_KEEPALIVE_INTERVAL_MS,
                max_ms: MAX_KEEPALIVE_INTERVAL_MS,
            });
        }
        if !DEAD_AFTER_RANGE.contains(&self.dead_after) {
            return Err(ConfigError::DeadAfter {
                value: self.dead_after,
                min: *DEAD_AFTER_RANGE.start(),
                max: *DEAD_AFTER_RANGE.end(),
            });
        }
        let hs_ms = self.handshake_timeout.as_millis();
        let hs_range = u128::from(*HANDSHAKE_TIMEOUT_MS_RANGE.start())
            ..=u128::from(*HANDSHAKE_TIMEOUT_MS_RANGE.end());
        if !hs_range.contains(&hs_ms) {
            return Err(ConfigError::HandshakeTimeout {
                value: self.handshake_timeout,
                min_ms: *HANDSHAKE_TIMEOUT_MS_RANGE.start(),
                max_ms: *HANDSHAKE_TIMEOUT_MS_RANGE.end(),
            });
        }
        Ok(())
    }

    pub(super) fn keepalive_interval_ms(&self) -> u32 {
        // validate() bounded it to 600,000 ms.
        u32::try_from(self.keepalive_interval.as_millis()).unwrap_or(MAX_KEEPALIVE_INTERVAL_MS)
    }
}

/// A [`SessionConfig`] that cannot be used. A local (operator) error, never a peer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `node_id` is 0.
    #[error("node_id must be non-zero")]
    NodeIdZero,
    /// `limits` are out of range.
    #[error("limits: {0}")]
    Limits(#[from] LimitsError),
    /// `keepalive_interval` out of range or not whole milliseconds.
    #[error(
        "keepalive_interval {value:?} must be whole milliseconds within [{min_ms}, {max_ms}] ms"
    )]
    KeepaliveInterval {
        /// Value given.
        value: Duration,
        /// Smallest allowed, ms.
        min_ms: u32,
        /// Largest allowed, ms.
        max_ms: u32,
    },
    /// `dead_after` out of range.
    #[error("dead_after {value} is outside [{min}, {max}]")]
    DeadAfter {
        /// Value given.
        value: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// `handshake_timeout` out of range.
    #[error("handshake_timeout {value:?} is outside [{min_ms}, {max_ms}] ms")]
    HandshakeTimeout {
        /// Value given.
        value: Duration,
        /// Smallest allowed, ms.
        min_ms: u64,
        /// Largest allowed, ms.
        max_ms: u64,
    },
}
