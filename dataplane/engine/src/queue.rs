//! Per-peer outbound queues: bounded, owned by one core, drained by that peer's connection task.
//!
//! A queue holds frames as they will be written: forwarded frames are the very buffers they were
//! read into ([`OutItem::Forward`]); frames this node originates are header, metadata and
//! payload parts ([`OutItem::Local`]). Both give `io_slices` for one vectored write of many
//! frames, so no payload is copied on the way out.
//!
//! Bounded by frames and bytes. A producer that finds the queue full gets its item back and
//! parks a waker; the writer wakes the parked producers once the queue drains below half, so a
//! slow peer pushes back on whoever feeds it (down to TCP on the inbound side) instead of
//! growing memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::task::Waker;

use bytes::BytesMut;
use mesh_wire::{Frame, OutFrame};

/// One frame waiting to be written.
#[derive(Debug)]
pub enum OutItem {
    /// A received frame being forwarded: one buffer, header rewritten in place.
    Forward(Frame<BytesMut>),
    /// A frame built here.
    Local(OutFrame),
}

impl OutItem {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        match self {
            OutItem::Forward(f) => f.len(),
            OutItem::Local(f) => f.len(),
        }
    }

    /// Always false: a frame has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends this frame's slices, skipping the first `skip` bytes (already written).
    pub fn push_slices<'a>(&'a self, skip: usize, out: &mut Vec<IoSlice<'a>>) {
        let mut skip = skip;
        let mut push = |s: &'a [u8]| {
            if skip >= s.len() {
                skip -= s.len();
            } else {
                out.push(IoSlice::new(&s[skip..]));
                skip = 0;
            }
        };
        match self {
            OutItem::Forward(f) => push(f.as_bytes()),
            OutItem::Local(f) => {
                push(zerocopy::IntoBytes::as_bytes(f.header()));
                push(f.meta());
                push(f.payload());
            }
        }
    }
}

/// Limits of one peer queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most frames queued.
    pub frames_max: usize,
    /// Most bytes queued.
    pub bytes_max: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            frames_max: 8192,
            bytes_max: 64 << 20,
        }
    }
}

/// A bounded outbound queue with wakers for its writer and its blocked producers.
#[derive(Debug)]
pub struct PeerQueue {
    inner: RefCell<Inner>,
    limits: QueueLimits,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<OutItem>,
    bytes: usize,
    /// Bytes of the front item already written.
    front_written: usize,
    writer: Option<Waker>,
    producers: Vec<Waker>,
    closed: bool,
}

impl PeerQueue {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            inner: RefCell::new(Inner::default()),
            limits,
        }
    }

    /// Queues `item`, or hands it back when the queue is full or closed. Control frames pass
    /// `force` to bypass the bounds (they are few and small, and must not wait behind data).
    pub fn push(&self, item: OutItem, force: bool) -> Result<(), OutItem> {
        let mut q = self.inner.borrow_mut();
        if q.closed {
            return Err(item);
        }
        let len = item.len();
        if !force
            && !q.items.is_empty()
            && (q.items.len() >= self.limits.frames_max || q.bytes + len > self.limits.bytes_max)
        {
            return Err(item);
        }
        q.bytes += len;
        q.items.push_back(item);
        if let Some(w) = q.writer.take() {
            w.wake();
        }
        Ok(())
    }

    /// Whether a producer that respects the bounds may push now (closed queues "have room":
    /// the push fails at once and the producer moves on).
    pub fn has_room(&self) -> bool {
        let q = self.inner.borrow();
        q.closed || (q.items.len() < self.limits.frames_max && q.bytes < self.limits.bytes_max)
    }

    /// Waits until [`PeerQueue::has_room`].
    pub async fn room(&self) {
        std::future::poll_fn(|cx| {
            if self.has_room() {
                std::task::Poll::Ready(())
            } else {
                self.wait_for_room(cx.waker());
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Parks a producer's waker until the queue drains below half or closes.
    pub fn wait_for_room(&self, waker: &Waker) {
        let mut q = self.inner.borrow_mut();
        if !q.producers.iter().any(|w| w.will_wake(waker)) {
            q.producers.push(waker.clone());
        }
    }

    /// Registers the writer's waker, woken by the next push.
    pub fn register_writer(&self, waker: &Waker) {
        let mut q = self.inner.borrow_mut();
        match &q.writer {
            Some(w) if w.will_wake(waker) => {}
            _ => q.writer = Some(waker.clone()),
        }
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.inner.borrow().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.borrow().items.is_empty()
    }

    /// Bytes queued (including the unwritten rest of a partly written frame).
    pub fn bytes(&self) -> usize {
        let q = self.inner.borrow();
        q.bytes - q.front_written
    }

    /// Calls `f` with up to `max` slices of queued frames, in order; `f` returns how many bytes
    /// it wrote. Those bytes are consumed (whole frames released, a partial front remembered).
    /// Returns what `f` returned.
    pub fn write_with<E>(
        &self,
        max_slices: usize,
        f: impl FnOnce(&[IoSlice<'_>]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut q = self.inner.borrow_mut();
        let written = {
            let mut slices = Vec::with_capacity(max_slices.min(3 * q.items.len()));
            let mut skip = q.front_written;
            for item in &q.items {
                if slices.len() + 3 > max_slices {
                    break;
                }
                item.push_slices(skip, &mut slices);
                skip = 0;
            }
            if slices.is_empty() {
                return Ok(0);
            }
            f(&slices)?
        };
        let mut left = written + q.front_written;
        q.front_written = 0;
        while let Some(front) = q.items.front() {
            let len = front.len();
            if left >= len {
                left -= len;
                q.bytes -= len;
                q.items.pop_front();
            } else {
                q.front_written = left;
                break;
            }
        }
        let low_water =
            q.items.len() <= self.limits.frames_max / 2 && q.bytes <= self.limits.bytes_max / 2;
        if low_water && !q.producers.is_empty() {
            for w in q.producers.drain(..) {
                w.wake();
            }
        }
        Ok(written)
    }

    /// Closes the queue: pushes fail from now on, parked producers are woken, and the frames
    /// still queued are returned (for NACKs / retransmission accounting).
    pub fn close(&self) -> Vec<OutItem> {
        let mut q = self.inner.borrow_mut();
        q.closed = true;
        q.bytes = 0;
        q.front_written = 0;
        for w in q.producers.drain(..) {
            w.wake();
        }
        if let Some(w) = q.writer.take() {
            w.wake();
        }
        q.items.drain(..).collect()
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.borrow().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mesh_wire::{Envelope, FrameKind, Limits, encode_frame};

    fn item(n: usize) -> OutItem {
        OutItem::Local(
            encode_frame(
                &Envelope::new(FrameKind::Data),
                &[],
                Bytes::from(vec![1u8; n]),
                &Limits::default(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let q = PeerQueue::new(QueueLimits::default());
        q.push(item(10), false).unwrap();
        q.push(item(20), false).unwrap();
        let total = q.bytes();
        assert_eq!(total, 58 + 68);
        let mut out = Vec::new();
        // Write 30 bytes, then the rest, collecting what was "sent".
        q.write_with(64, |s| -> Result<usize, ()> {
            let mut n = 0;
            for sl in s {
                for b in sl.iter() {
                    if n < 30 {
                        out.push(*b);
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
        .unwrap();
        assert_eq!(q.bytes(), total - 30);
        q.write_with(64, |s| -> Result<usize, ()> {
            let mut n = 0;
            for sl in s {
                out.extend_from_slice(sl);
                n += sl.len();
            }
            Ok(n)
        })
        .unwrap();
        assert!(q.is_empty());
        assert_eq!(out.len(), total);
        let mut expect = Vec::new();
        for n in [10, 20] {
            if let OutItem::Local(f) = item(n) {
                expect.extend(f.to_vec());
            }
        }
        assert_eq!(out, expect);
    }

    #[test]
    fn bounded_by_frames_unless_forced() {
        let q = PeerQueue::new(QueueLimits {
            frames_max: 2,
            bytes_max: 1 << 20,
        });
        q.push(item(1), false).unwrap();
        q.push(item(1), false).unwrap();
        assert!(q.push(item(1), false).is_err());
        assert!(q.push(item(1), true).is_ok());
        assert_eq!(q.close().len(), 3);
        assert!(q.push(item(1), true).is_err());
    }
}
