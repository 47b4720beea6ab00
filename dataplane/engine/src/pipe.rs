//! In-process byte streams between the control thread and a core: the sessions the gRPC
//! gateway holds with its own node.
//!
//! SPEC §1 has application deliveries cross between the tokio control thread and the glommio
//! cores over channels. A gateway session is a native-client session like any other (the same
//! frames, handshake, limits and flow control, run by the same `mesh_session::Session` at both
//! ends); only its byte pipe differs: chunks of bytes move through a bounded queue in memory
//! instead of through a loopback socket, so no system call, kernel TCP stack or socket buffer
//! stands between the gateway and the core.
//!
//! A [`LocalStream`] is one end: a [`PipeReader`] and a [`PipeWriter`]. Each direction holds at
//! most its capacity in bytes (a write waits for room, as a full socket does); either end may
//! be driven by tokio or glommio, since wakers are woken from the other thread (glommio's
//! notifier hands a foreign wake to the owning executor). Dropping an end closes it: the other
//! side reads what was written, then end of stream; writing to a dropped reader is an error.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes};

/// Bytes one direction of a gateway session holds at most (about a socket buffer's worth).
pub const LOCAL_PIPE_CAPACITY: usize = 4 << 20;

/// One end of an in-process duplex byte stream.
#[derive(Debug)]
pub struct LocalStream {
    /// What the other end wrote.
    pub reader: PipeReader,
    /// What the other end reads.
    pub writer: PipeWriter,
}

/// Two connected ends, each direction holding at most `capacity` bytes.
pub fn local_pair(capacity: usize) -> (LocalStream, LocalStream) {
    let (w1, r1) = pipe(capacity);
    let (w2, r2) = pipe(capacity);
    (
        LocalStream {
            reader: r2,
            writer: w1,
        },
        LocalStream {
            reader: r1,
            writer: w2,
        },
    )
}

/// One direction: a writer and its reader, holding at most `capacity` bytes (at least 1).
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        readable: AtomicWaker::new(),
        writable: AtomicWaker::new(),
        capacity: capacity.max(1),
    });
    (
        PipeWriter {
            shared: shared.clone(),
        },
        PipeReader { shared },
    )
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The reader's task, waiting for bytes.
    readable: AtomicWaker,
    /// The writer's task, waiting for room.
    writable: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    bytes: usize,
    writer_gone: bool,
    reader_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in a critical section can panic halfway through an update; a poisoned lock
        // still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writing half of one direction.
#[derive(Debug)]
pub struct PipeWriter {
    shared: Arc<Shared>,
}

impl PipeWriter {
    /// `Ready(Ok(room))` once the pipe has room (bytes it can take before it is full; a push
    /// may overshoot it), `Ready(Err(BrokenPipe))` once the reader is gone, else `Pending` with
    /// the task registered to be woken when the reader makes room.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if let Some(r) = self.room() {
            return Poll::Ready(r);
        }
        self.shared.writable.register(cx.waker());
        // Room made between the check and the registration woke the previous waker.
        match self.room() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    fn room(&self) -> Option<io::Result<usize>> {
        let s = self.shared.lock();
        if s.reader_gone {
            return Some(Err(io::ErrorKind::BrokenPipe.into()));
        }
        (s.bytes < self.shared.capacity).then(|| Ok(self.shared.capacity - s.bytes))
    }

    /// Appends `chunk` (whatever the room: the caller sized it by [`PipeWriter::poll_room`])
    /// and wakes the reader. `BrokenPipe` once the reader is gone or this end was closed.
    pub fn push(&self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        {
            let mut s = self.shared.lock();
            if s.reader_gone || s.writer_gone {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            s.bytes += chunk.len();
            s.chunks.push_back(chunk);
        }
        self.shared.readable.wake();
        Ok(())
    }

    /// Bytes written and not yet read.
    pub fn unread(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Ends the stream: the reader reads what was written, then its end. Later pushes are
    /// refused; closing twice, or dropping after closing, is harmless.
    pub fn close(&self) {
        self.shared.lock().writer_gone = true;
        self.shared.readable.wake();
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The reading half of one direction.
#[derive(Debug)]
pub struct PipeReader {
    shared: Arc<Shared>,
}

impl PipeReader {
    /// Copies what was written into `buf`: `Ready(Ok(n))` with `n > 0`, `Ready(Ok(0))` at the
    /// end (the writer is gone and everything was read) or for an empty `buf`, else `Pending`
    /// with the task registered to be woken by the next write.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(n) = self.read(buf) {
            return Poll::Ready(Ok(n));
        }
        self.shared.readable.register(cx.waker());
        match self.read(buf) {
            Some(n) => Poll::Ready(Ok(n)),
            None => Poll::Pending,
        }
    }

    /// `Ready` once there is something to read or the stream ended (then [`PipeReader::try_read`]
    /// does not block), else `Pending` with the task registered to be woken by the next write.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.readable_now() {
            return Poll::Ready(());
        }
        self.shared.readable.register(cx.waker());
        if self.readable_now() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn readable_now(&self) -> bool {
        let s = self.shared.lock();
        s.bytes > 0 || s.writer_gone
    }

    /// Copies what was written into `buf` without waiting: `Ok(0)` at the end (or for an empty
    /// `buf`), `WouldBlock` when nothing is there yet.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read(buf)
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    /// `Some(n)`: `n` bytes copied, or 0 at the end; `None`: nothing to read yet.
    fn read(&self, buf: &mut [u8]) -> Option<usize> {
        let mut n = 0;
        let was_full;
        {
            let mut s = self.shared.lock();
            was_full = s.bytes >= self.shared.capacity;
            while n < buf.len() {
                let Some(front) = s.chunks.front_mut() else {
                    break;
                };
                let take = front.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&front[..take]);
                front.advance(take);
                n += take;
                if front.is_empty() {
                    s.chunks.pop_front();
                }
            }
            s.bytes -= n;
            if n == 0 {
                return s.writer_gone.then_some(0);
            }
        }
        if was_full {
            self.shared.writable.wake();
        }
        Some(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            s.reader_gone = true;
            // Nobody will read them: free them now.
            s.chunks.clear();
            s.bytes = 0;
        }
        self.shared.writable.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn bytes_arrive_in_order_across_chunk_boundaries() {
        let (w, r) = pipe(1 << 10);
        w.push(Bytes::from_static(b"hello ")).unwrap();
        w.push(Bytes::from_static(b"")).unwrap();
        w.push(Bytes::from_static(b"world")).unwrap();
        assert_eq!(w.unread(), 11);
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        while let Poll::Ready(Ok(n)) = r.poll_read(&mut cx, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() == 11 {
                break;
            }
        }
        assert_eq!(got, b"hello world");
        assert_eq!(w.unread(), 0);
    }

    #[test]
    fn a_reader_waits_then_is_woken_by_a_write_and_sees_the_end() {
        let (w, r) = pipe(16);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 8];
        assert!(r.poll_read(&mut cx, &mut buf).is_pending());
        w.push(Bytes::from_static(b"ab")).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(r.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(2))));
        assert!(r.poll_read(&mut cx, &mut buf).is_pending());
        drop(w);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "closing wakes the reader"
        );
        assert!(matches!(r.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(0))));
    }

    #[test]
    fn a_full_pipe_holds_the_writer_until_the_reader_makes_room() {
        let (w, r) = pipe(8);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(w.poll_room(&mut cx), Poll::Ready(Ok(8))));
        w.push(Bytes::from_static(b"0123456789")).unwrap();
        assert!(w.poll_room(&mut cx).is_pending(), "over capacity: no room");
        let mut buf = [0u8; 4];
        assert!(matches!(r.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(4))));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "room made wakes the writer"
        );
        assert!(matches!(w.poll_room(&mut cx), Poll::Ready(Ok(2))));
    }

    #[test]
    fn readiness_then_a_read_that_does_not_wait() {
        let (w, r) = pipe(16);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 8];
        assert!(r.poll_readable(&mut cx).is_pending());
        assert_eq!(
            r.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        w.push(Bytes::from_static(b"xyz")).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(r.poll_readable(&mut cx).is_ready());
        assert_eq!(r.try_read(&mut buf).unwrap(), 3);
        w.close();
        assert!(r.poll_readable(&mut cx).is_ready(), "the end is readable");
        assert_eq!(r.try_read(&mut buf).unwrap(), 0);
        let e = w.push(Bytes::from_static(b"late")).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::BrokenPipe,
            "a closed end takes no more"
        );
    }

    #[test]
    fn writing_to_a_dropped_reader_is_a_broken_pipe_and_frees_what_was_queued() {
        let (w, r) = pipe(8);
        w.push(Bytes::from_static(b"queued")).unwrap();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        w.push(Bytes::from_static(b"more")).unwrap();
        assert!(w.poll_room(&mut cx).is_pending());
        drop(r);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the writer learns at once"
        );
        assert_eq!(w.unread(), 0);
        let e = w.push(Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(w.poll_room(&mut cx), Poll::Ready(Err(_))));
    }

    /// Reads `r` to its end, waiting as a task would.
    fn read_all(r: &PipeReader) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 100];
        loop {
            let n = futures_lite::future::block_on(std::future::poll_fn(|cx| {
                r.poll_read(cx, &mut buf)
            }))
            .unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    fn write_all(w: &PipeWriter, data: &[u8]) {
        for part in data.chunks(33) {
            futures_lite::future::block_on(std::future::poll_fn(|cx| w.poll_room(cx))).unwrap();
            w.push(Bytes::copy_from_slice(part)).unwrap();
        }
    }

    #[test]
    fn a_pair_carries_both_directions_between_threads() {
        // Small pipes, so that writers on both sides wait for room many times.
        let (a, b) = local_pair(64);
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 7];
            let mut seen = 0usize;
            loop {
                let n = futures_lite::future::block_on(std::future::poll_fn(|cx| {
                    b.reader.poll_read(cx, &mut buf)
                }))
                .unwrap();
                if n == 0 {
                    return seen; // dropping `b` ends the way back
                }
                seen += n;
                write_all(&b.writer, &buf[..n]);
            }
        });
        let LocalStream { reader, writer } = a;
        let back = std::thread::spawn(move || read_all(&reader));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        write_all(&writer, &data);
        drop(writer);
        assert_eq!(echo.join().unwrap(), data.len());
        assert_eq!(back.join().unwrap(), data);
    }
}
