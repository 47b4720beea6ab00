//! Each core's pool of read buffers (a [`mesh_wire::BufPool`]) and its counters.
//!
//! Connections on a core read into buffers of two sizes: 64 KiB while handshaking (an
//! unauthenticated peer cannot make the node hold more) and 1 MiB on established node links.
//! Frames split off a buffer travel to their next hop, possibly on another core, and the buffer
//! returns to the pool of the core that read it once the last of them is written and dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use mesh_wire::decoder::DEFAULT_READ_CHUNK_LEN;
use mesh_wire::{BufPool, BufPoolConfig, BufferSource, PoolHandle};

use crate::metrics::CoreMetrics;

/// Read chunk of established node links: a partly received large frame is rarely carried into
/// a new buffer (see `Decoder::bytes_relocated`).
pub(crate) const PEER_READ_CHUNK_LEN: usize = 1 << 20;

/// Retired buffers examined per request.
const POOL_SCAN: usize = 8;

/// A core's buffer pool, counting what it does in the core's metrics.
#[derive(Debug, Clone)]
pub(crate) struct CoreBuffers {
    pool: PoolHandle,
    metrics: Arc<CoreMetrics>,
}

impl CoreBuffers {
    /// A pool keeping at most `max_retained_bytes` of retired buffers.
    pub(crate) fn new(max_retained_bytes: usize, metrics: Arc<CoreMetrics>) -> Self {
        let pool = BufPool::shared(BufPoolConfig {
            classes: vec![DEFAULT_READ_CHUNK_LEN, PEER_READ_CHUNK_LEN],
            max_retained_bytes,
            scan: POOL_SCAN,
        });
        Self { pool, metrics }
    }

    /// Mirrors the pool's counters (one pool per core, so its totals are the core's).
    fn publish(&self) {
        let s = self.pool.stats();
        let m = &self.metrics;
        m.buffers_reused.store(s.reused, Relaxed);
        m.buffers_allocated.store(s.allocated + s.unpooled, Relaxed);
        m.buffer_pool_retained_bytes
            .store(s.retained_bytes as u64, Relaxed);
    }
}

impl BufferSource for CoreBuffers {
    fn take(&mut self, capacity: usize) -> BytesMut {
        let buf = self.pool.take(capacity);
        self.publish();
        buf
    }

    fn give(&mut self, buf: BytesMut, capacity: usize) {
        self.pool.give(buf, capacity);
        self.publish();
    }
}
