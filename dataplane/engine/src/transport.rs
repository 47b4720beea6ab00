//! The byte pipe under a session: plain TCP or TLS 1.3 over a glommio TCP stream, or an
//! in-process [`LocalStream`] (the gRPC gateway's sessions with its own node).
//!
//! Plain TCP writes a whole batch of queued frames with one `sendmsg` of many slices (the frames'
//! own buffers, no staging copy). When the socket is full, glommio's `poll_write` registers the
//! task for writability through io_uring and the batch resumes where it stopped.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::pipe::LocalStream;
use crate::queue::PeerQueue;

/// Most slices in one vectored write (Linux `IOV_MAX` is 1024).
pub const MAX_IOV: usize = 512;

/// A session's transport.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP (a node started without `--tls`).
    Plain(TcpStream),
    /// TLS 1.3 over TCP.
    Tls(Box<mesh_tls::TlsStream<TcpStream>>),
    /// An in-process stream from the control thread (the gRPC gateway).
    Local(LocalStream),
}

impl Transport {
    /// Reads into `buf`.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Transport::Local(s) => s.reader.poll_read(cx, buf),
        }
    }

    /// Whether received bytes are copied on their way to the decoder (TLS decrypts into its own
    /// buffer first; plain TCP reads straight into the decoder's).
    pub fn copies_reads(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Writes queued frames until the queue is empty (`Ready(Ok(total))`) or the socket is
    /// full (`Pending`, with the task registered for writability). Returns bytes written.
    pub fn poll_write_queue(
        &mut self,
        cx: &mut Context<'_>,
        queue: &PeerQueue,
    ) -> Poll<io::Result<usize>> {
        let mut total = 0;
        loop {
            if queue.is_empty() {
                if let Transport::Tls(s) = self {
                    // Records rustls already made must reach the socket too.
                    match Pin::new(&mut **s).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                return Poll::Ready(Ok(total));
            }
            match self {
                Transport::Tls(s) => {
                    // Plaintext is copied into TLS records (encryption); many frames per batch.
                    let r = queue.write_with(MAX_IOV, |slices| {
                        match Pin::new(&mut **s).poll_write_vectored(cx, slices) {
                            Poll::Ready(r) => r,
                            Poll::Pending => Err(io::Error::from(io::ErrorKind::WouldBlock)),
                        }
                    });
                    match r {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Transport::Local(s) => {
                    let room = match s.writer.poll_room(cx) {
                        Poll::Ready(Ok(room)) => room,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    };
                    // The frames are copied into one chunk, as a socket write copies them
                    // into the kernel.
                    let r = queue.write_with(MAX_IOV, |slices| {
                        let len = slices
                            .iter()
                            .map(|s| s.len())
                            .sum::<usize>()
                            .min(room.max(LOCAL_CHUNK_MIN));
                        let mut chunk = bytes::BytesMut::with_capacity(len);
                        for s in slices {
                            let take = s.len().min(len - chunk.len());
                            chunk.extend_from_slice(&s[..take]);
                        }
                        s.writer.push(chunk.freeze()).map(|()| len)
                    });
                    match r {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => total += n,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Transport::Plain(s) => {
                    let fd = s.as_raw_fd();
                    let r = queue.write_with(MAX_IOV, |slices| match sendmsg(fd, slices) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Let glommio try the first slice and, if the socket is still full,
                            // arm the writability poll that wakes this task.
                            match Pin::new(&mut *s).poll_write(cx, &slices[0]) {
                                Poll::Ready(r) => r,
                                Poll::Pending => Err(io::Error::from(io::ErrorKind::WouldBlock)),
                            }
                        }
                        Err(e) => Err(e),
                    });
                    match r {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }

    /// Flushes and shuts the write side down.
    pub fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_close(cx),
            Transport::Local(s) => {
                s.writer.close();
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// Bytes a write to a [`LocalStream`] may carry past the room left (a few frames): a nearly
/// full pipe still takes whole frames rather than slivers of one.
const LOCAL_CHUNK_MIN: usize = 64 << 10;

/// One non-blocking vectored send; `WouldBlock` when the socket buffer is full.
#[allow(unsafe_code)]
fn sendmsg(fd: std::os::fd::RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain old data; an all-zero value is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the kernel only reads them.
    msg.msg_iov = slices.as_ptr().cast_mut().cast();
    msg.msg_iovlen = slices.len().min(MAX_IOV);
    // SAFETY: `fd` is the open socket of a `TcpStream` the caller borrows for this call; `msg`
    // points at `slices`, which outlive the call; MSG_DONTWAIT keeps the executor thread from
    // blocking and MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
    let n = unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn sendmsg_writes_every_slice_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        let parts: [&[u8]; 3] = [b"head", b"", b"payload"];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let n = sendmsg(a.as_raw_fd(), &slices).unwrap();
        assert_eq!(n, 11);
        let mut got = [0u8; 11];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"headpayload");
    }

    #[test]
    fn sendmsg_to_a_closed_peer_is_an_error_not_a_signal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        drop(b);
        let big = vec![0u8; 1 << 20];
        let mut saw_error = false;
        for _ in 0..64 {
            match sendmsg(a.as_raw_fd(), &[IoSlice::new(&big)]) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    saw_error = true;
                    break;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert!(saw_error, "a closed peer must surface as an error");
    }
}
