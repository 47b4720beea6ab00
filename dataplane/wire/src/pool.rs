//! Where a [`Decoder`](crate::Decoder) gets its read buffers: the heap, or a core's pool.
//!
//! A decoder reads socket bytes into one buffer and splits frames off its front as views of
//! the same allocation; those views travel to the next hop (possibly on another core) and are
//! dropped once written. When the decoder's room runs out it needs a fresh buffer while views
//! of the old one may still be alive, so the old buffer cannot be reused at once.
//!
//! A [`BufPool`] keeps such *retired* buffers. Asked for a buffer, it looks at the oldest
//! retired ones of that size and reuses the first whose views have all been dropped
//! (`BytesMut::try_reclaim`: the decoder's handle is then the only one left), so a core that
//! forwards at line rate recycles a handful of read chunks instead of asking the allocator
//! (which for 1 MiB means an `mmap`, page faults and an `munmap`) for every chunk. Views dropped
//! on another core only decrement a reference count; the memory comes back to the pool of the
//! core that read it.
//!
//! The pool is bounded: it retains at most [`BufPoolConfig::max_retained_bytes`] (counting
//! retired buffers whose frames are still queued somewhere, which is memory in use anyway; once
//! traffic stops it is all idle), only in its configured size classes, and looks at no more than
//! [`BufPoolConfig::scan`] retired buffers per request, oldest first, so a buffer pinned by a
//! slow peer's queue costs a bounded scan, not a stall.
//! Everything here is single-threaded (one pool per core) and free of `unsafe`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::BytesMut;

/// A supplier of read buffers for a [`Decoder`](crate::Decoder).
pub trait BufferSource {
    /// An empty buffer with room for at least `capacity` bytes.
    fn take(&mut self, capacity: usize) -> BytesMut;

    /// A buffer the decoder no longer reads into; frames split off it may still be alive.
    /// `capacity` is what [`BufferSource::take`] was asked for when it was handed out (0 for a
    /// buffer that did not come from this source).
    fn give(&mut self, buf: BytesMut, capacity: usize);
}

/// Buffers straight from the allocator; retired buffers are freed once their last view drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapBuffers;

impl BufferSource for HeapBuffers {
    fn take(&mut self, capacity: usize) -> BytesMut {
        BytesMut::with_capacity(capacity)
    }

    fn give(&mut self, _buf: BytesMut, _capacity: usize) {}
}

/// Bounds and size classes of a [`BufPool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufPoolConfig {
    /// Buffer sizes the pool keeps (a request of another size is allocated and not retained).
    pub classes: Vec<usize>,
    /// Most bytes of retired buffers retained, in all classes together.
    pub max_retained_bytes: usize,
    /// Most retired buffers examined per request.
    pub scan: usize,
}

impl Default for BufPoolConfig {
    /// Classes for handshaking connections (64 KiB) and established node links (1 MiB),
    /// 64 MiB retained, 8 buffers examined per request.
    fn default() -> Self {
        Self {
            classes: vec![64 << 10, 1 << 20],
            max_retained_bytes: 64 << 20,
            scan: 8,
        }
    }
}

/// Counters of a [`BufPool`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufPoolStats {
    /// Requests served by reusing a retired buffer.
    pub reused: u64,
    /// Requests of a pooled size served by the allocator (no retired buffer was free).
    pub allocated: u64,
    /// Requests of a size outside the classes (allocated, never retained).
    pub unpooled: u64,
    /// Retired buffers dropped because the pool was full.
    pub discarded: u64,
    /// Bytes of retired buffers held now.
    pub retained_bytes: usize,
    /// Retired buffers held now.
    pub retained: usize,
}

/// A bounded pool of read buffers of one core. See the module doc.
#[derive(Debug)]
pub struct BufPool {
    config: BufPoolConfig,
    /// Retired buffers per class (same order as `config.classes`), oldest first.
    retired: Vec<VecDeque<BytesMut>>,
    stats: BufPoolStats,
}

impl BufPool {
    /// An empty pool.
    pub fn new(config: BufPoolConfig) -> Self {
        let retired = config.classes.iter().map(|_| VecDeque::new()).collect();
        Self {
            config,
            retired,
            stats: BufPoolStats::default(),
        }
    }

    /// A handle decoders of this core share.
    pub fn shared(config: BufPoolConfig) -> PoolHandle {
        PoolHandle(Rc::new(RefCell::new(Self::new(config))))
    }

    /// The counters.
    pub fn stats(&self) -> BufPoolStats {
        self.stats
    }

    fn class(&self, capacity: usize) -> Option<usize> {
        self.config.classes.iter().position(|&c| c == capacity)
    }
}

impl BufferSource for BufPool {
    fn take(&mut self, capacity: usize) -> BytesMut {
        let Some(class) = self.class(capacity) else {
            self.stats.unpooled += 1;
            return BytesMut::with_capacity(capacity);
        };
        // Oldest first: frames leave in the order they were read, so the oldest retired buffer
        // is the first to be free; the order is kept for the next request.
        let retired = &mut self.retired[class];
        let free = (0..self.config.scan.min(retired.len())).find(|&i| {
            retired
                .get_mut(i)
                .is_some_and(|buf| buf.try_reclaim(capacity))
        });
        if let Some(buf) = free.and_then(|i| retired.remove(i)) {
            self.stats.reused += 1;
            self.stats.retained -= 1;
            self.stats.retained_bytes -= capacity;
            return buf;
        }
        self.stats.allocated += 1;
        BytesMut::with_capacity(capacity)
    }

    fn give(&mut self, mut buf: BytesMut, capacity: usize) {
        let Some(class) = self.class(capacity) else {
            return;
        };
        if self.stats.retained_bytes + capacity > self.config.max_retained_bytes {
            self.stats.discarded += 1;
            return;
        }
        buf.clear();
        self.retired[class].push_back(buf);
        self.stats.retained += 1;
        self.stats.retained_bytes += capacity;
    }
}

/// A shared handle on one core's [`BufPool`] (`Rc`: the pool never leaves its core).
#[derive(Debug, Clone)]
pub struct PoolHandle(Rc<RefCell<BufPool>>);

impl PoolHandle {
    /// The pool's counters.
    pub fn stats(&self) -> BufPoolStats {
        self.0.borrow().stats()
    }
}

impl BufferSource for PoolHandle {
    fn take(&mut self, capacity: usize) -> BytesMut {
        self.0.borrow_mut().take(capacity)
    }

    fn give(&mut self, buf: BytesMut, capacity: usize) {
        self.0.borrow_mut().give(buf, capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(classes: Vec<usize>, max_retained_bytes: usize) -> BufPool {
        BufPool::new(BufPoolConfig {
            classes,
            max_retained_bytes,
            scan: 8,
        })
    }

    #[test]
    fn a_retired_buffer_is_reused_once_its_views_are_gone() {
        let mut p = pool(vec![4096], 1 << 20);
        let mut buf = p.take(4096);
        let addr = buf.as_ptr();
        buf.resize(4096, 7);
        let frame = buf.split_to(1000);
        p.give(buf, 4096);
        // A view is alive: the pool must not hand out the same memory.
        let other = p.take(4096);
        assert_ne!(other.as_ptr(), addr);
        assert_eq!(frame[999], 7, "the live view is untouched");
        drop(frame);
        let again = p.take(4096);
        assert_eq!(
            again.as_ptr(),
            addr,
            "reused from the start of the allocation"
        );
        assert!(again.is_empty());
        assert!(again.capacity() >= 4096);
        let s = p.stats();
        assert_eq!((s.reused, s.allocated, s.retained), (1, 2, 0));
    }

    #[test]
    fn sizes_outside_the_classes_are_not_retained() {
        let mut p = pool(vec![4096], 1 << 20);
        let buf = p.take(5000);
        assert!(buf.capacity() >= 5000);
        p.give(buf, 5000);
        assert_eq!(p.stats().unpooled, 1);
        assert_eq!(p.stats().retained, 0);
    }

    #[test]
    fn retention_is_bounded_in_bytes() {
        let mut p = pool(vec![4096], 8192);
        for _ in 0..3 {
            let buf = p.take(4096);
            p.give(buf, 4096);
        }
        // The first two retired buffers were reclaimable, so each take reused one; force three
        // live buffers at once to exceed the bound.
        let bufs: Vec<_> = (0..3).map(|_| p.take(4096)).collect();
        for b in bufs {
            p.give(b, 4096);
        }
        let s = p.stats();
        assert_eq!(s.retained, 2);
        assert_eq!(s.retained_bytes, 8192);
        assert_eq!(s.discarded, 1);
    }

    #[test]
    fn the_scan_is_bounded() {
        let mut p = BufPool::new(BufPoolConfig {
            classes: vec![1024],
            max_retained_bytes: 1 << 20,
            scan: 2,
        });
        let mut views = Vec::new();
        for _ in 0..4 {
            let mut b = p.take(1024);
            b.resize(1024, 0);
            views.push(b.split_to(1));
            p.give(b, 1024);
        }
        // Free only the last retired buffer: a scan of 2 from the front does not reach it.
        let last = views.pop();
        drop(last);
        let before = p.stats().allocated;
        let _fresh = p.take(1024);
        assert_eq!(p.stats().allocated, before + 1);
        assert_eq!(p.stats().reused, 0);
        // Free the oldest: the next request reuses it.
        views.remove(0);
        let _reused = p.take(1024);
        assert_eq!(p.stats().reused, 1);
    }
}
