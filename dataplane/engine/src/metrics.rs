//! Per-core counters, written by one core with relaxed atomics (no contention: each core has
//! its own block) and read by the control thread for the Prometheus endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame was dropped on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// TTL reached its end.
    TtlExpired,
    /// No route to the destination.
    NoRoute,
    /// The next hop's queue was full and the frame could not wait.
    QueueFull,
    /// The next hop's session went away with the frame queued.
    SessionClosed,
    /// The control thread's mailbox was full.
    ControlBusy,
    /// The node's policy denies the destination.
    Denied,
}

// `count_drops` indexes `dropped` by discriminant: `ALL` must list the reasons in order.
const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i] as usize == i);
        i += 1;
    }
};

impl DropReason {
    /// Every reason, for exporting.
    pub const ALL: [DropReason; 6] = [
        DropReason::TtlExpired,
        DropReason::NoRoute,
        DropReason::QueueFull,
        DropReason::SessionClosed,
        DropReason::ControlBusy,
        DropReason::Denied,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NoRoute => "no_route",
            DropReason::QueueFull => "queue_full",
            DropReason::SessionClosed => "session_closed",
            DropReason::ControlBusy => "control_busy",
            DropReason::Denied => "denied_by_policy",
        }
    }
}

/// Counters of one core.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// Frames read from peers.
    pub frames_in: AtomicU64,
    /// Bytes read from peers.
    pub bytes_in: AtomicU64,
    /// Frames written to peers.
    pub frames_out: AtomicU64,
    /// Bytes written to peers.
    pub bytes_out: AtomicU64,
    /// Frames forwarded to another node.
    pub forwarded: AtomicU64,
    /// DATA frames among `forwarded` (the rest are DELIVERED / ACK / NACK answers and
    /// control frames).
    pub forwarded_data: AtomicU64,
    /// Frames handed to another core.
    pub cross_core: AtomicU64,
    /// Frames delivered to this node.
    pub delivered_local: AtomicU64,
    /// Received bytes copied by mesh code on the way through this node: a partly received frame
    /// carried into a new buffer when a read buffer fills (plain TCP); payloads themselves are
    /// never copied when forwarded.
    pub forward_bytes_copied: AtomicU64,
    /// Read buffers the core's pool served by reusing a retired one.
    pub buffers_reused: AtomicU64,
    /// Read buffers the core had to allocate (its pool had none free).
    pub buffers_allocated: AtomicU64,
    /// Bytes of retired read buffers the core's pool holds (gauge).
    pub buffer_pool_retained_bytes: AtomicU64,
    /// Messages this core originated and keeps until DELIVERED (gauge).
    pub outbox_in_flight: AtomicU64,
    /// Messages stored here for local applications, not yet acked (gauge).
    pub inbox_held: AtomicU64,
    /// Messages sent again (timeout, reconnect, route change).
    pub retransmits: AtomicU64,
    /// Times a client's message waited for its destination's rate limit.
    pub rate_limited: AtomicU64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub dropped: [AtomicU64; 6],
    /// Sessions established.
    pub sessions_established: AtomicU64,
    /// Sessions currently open (established or handshaking).
    pub sessions_open: AtomicU64,
    /// Connections refused at admission.
    pub admission_refused: AtomicU64,
    /// Sessions closed because of a protocol error from the peer.
    pub protocol_errors: AtomicU64,
    /// Handshakes that failed (any reason).
    pub handshake_failures: AtomicU64,
    /// Connections closed because TLS and HELLO did not complete within the handshake
    /// deadline (counted in `handshake_failures` too).
    pub handshake_timeouts: AtomicU64,
}

impl CoreMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts a drop.
    pub fn count_drop(&self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// Counts `n` drops for one reason.
    pub fn count_drops(&self, reason: DropReason, n: u64) {
        // The discriminant is the index into `dropped` (the order of `DropReason::ALL`).
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
