//! [`TlsStream`]: a rustls connection driven over any `futures-io` transport.
//!
//! rustls is sans-IO (`read_tls` / `process_new_packets` / `write_tls`); this adapter moves
//! bytes between it and a transport implementing `futures_lite::io::{AsyncRead, AsyncWrite}`
//! (glommio's `TcpStream` does, as does anything `futures-io`). It is runtime-agnostic: no
//! executor, no timers. Handshake deadlines are the caller's (race [`TlsStream::handshake`]
//! against a timer and drop the stream on expiry).
//!
//! # Readiness rules (why it never spins)
//!
//! The transport is only ever polled through a small adapter that turns `Poll::Pending` into
//! `io::ErrorKind::WouldBlock` for rustls and remembers that it did; a `WouldBlock` coming
//! back out of rustls is turned into `Poll::Pending` only when the transport itself returned
//! `Pending` (and so registered the waker). Every loop iteration either makes progress
//! (bytes moved, records processed) or returns `Pending` with a waker registered, or an
//! error. Partial transport writes are normal: rustls keeps the unwritten tail queued.
//!
//! # Writing
//!
//! Plaintext goes into rustls (which encrypts it into records immediately once the handshake
//! is done), then queued records go to the transport with `write_tls`, which hands up to 64
//! records to one `poll_write_vectored` call. Three ways to write:
//!
//! - [`TlsStream::write_all_vectored`]: all slices of a frame (header, metadata, payload) in
//!   one rustls call, so a small frame becomes one record and one transport write; returns
//!   when everything is on the transport.
//! - [`TlsStream::queue_vectored`] several times, then [`AsyncWriteExt::flush`]: encrypts
//!   several frames and writes all their records with one vectored transport write (bounded
//!   by the rustls buffer limit, 64 KiB by default; `queue_vectored` reports how much it took).
//! - the `AsyncWrite` impl, as in tokio-rustls/futures-rustls: `poll_write*` accepts what
//!   rustls takes and pushes what the transport takes; `poll_flush` drains; `poll_close`
//!   sends `close_notify`, drains and closes the transport.
//!
//! # Reading
//!
//! The `AsyncRead` impl returns decrypted bytes; `Ok(0)` means the peer sent `close_notify`
//! (clean end); a transport EOF without it is `io::ErrorKind::UnexpectedEof` (possible
//! truncation). TLS errors come out as `io::ErrorKind::InvalidData` wrapping the
//! [`rustls::Error`] (`get_ref()` / `downcast` to recover it); the alert rustls queued for
//! the peer is sent on a best-effort basis first.
//!
//! [`AsyncWriteExt::flush`]: futures_lite::io::AsyncWriteExt::flush

use std::io::{self, IoSlice, Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::CertificateDer;
use rustls::{NamedGroup, ProtocolVersion, Side};

use crate::certs::PeerCredentials;
use crate::error::Error;
use crate::mldsa::{ChannelBinding, export_channel_binding};

/// A TLS connection over the transport `T` (see the module docs).
#[derive(Debug)]
pub struct TlsStream<T> {
    io: T,
    conn: rustls::Connection,
    close_notify_queued: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> TlsStream<T> {
    /// Wraps a fresh connection (from [`crate::client_connection`] or
    /// [`crate::server_connection`]) and its transport. Call [`Self::handshake`] next.
    pub fn new(io: T, conn: impl Into<rustls::Connection>) -> Self {
        Self {
            io,
            conn: conn.into(),
            close_notify_queued: false,
        }
    }

    /// Runs the handshake to completion: certificates verified both ways, the client's
    /// Finished sent and flushed. On error the alert rustls chose is sent on a best-effort
    /// basis; the stream must then be dropped.
    ///
    /// In TLS 1.3 the server checks the client certificate after the client has finished, so
    /// a client whose certificate the server refuses learns it from its first read (an
    /// alert), not from this call.
    pub async fn handshake(&mut self) -> Result<(), Error> {
        future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    /// Polling form of [`Self::handshake`].
    pub fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            // Our flight first: the peer cannot answer what it has not received.
            ready!(self.poll_flush_tls(cx)).map_err(Error::Transport)?;
            if !self.conn.is_handshaking() {
                return Pin::new(&mut self.io)
                    .poll_flush(cx)
                    .map_err(Error::Transport);
            }
            let n = ready!(self.poll_read_tls(cx)).map_err(Error::Transport)?;
            if let Err(e) = self.conn.process_new_packets() {
                self.send_alert_best_effort(cx);
                return Poll::Ready(Err(Error::Tls(e)));
            }
            if n == 0 {
                return Poll::Ready(Err(Error::HandshakeEof));
            }
        }
    }

    /// Feeds as much of `bufs` as rustls's send buffer takes into one batch of records,
    /// without any I/O; returns the number of plaintext bytes taken (0 when the buffer is
    /// full: flush first). Follow with `flush().await` to put the records on the transport.
    /// Only after the handshake.
    pub fn queue_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.conn.is_handshaking() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake not complete",
            ));
        }
        self.conn.writer().write_vectored(bufs)
    }

    /// Writes all of `bufs` (consumed as it goes) and flushes the records to the transport:
    /// each batch rustls accepts becomes as few records as the plaintext allows, and each
    /// flush one vectored transport write per 64 records.
    pub async fn write_all_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        if self.conn.is_handshaking() {
            self.handshake().await.map_err(io::Error::other)?;
        }
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let n = self.conn.writer().write_vectored(bufs)?;
            if n == 0 {
                if !self.conn.wants_write() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                // The send buffer is full: drain it, then feed the rest.
                future::poll_fn(|cx| self.poll_flush_tls(cx)).await?;
            } else {
                IoSlice::advance_slices(&mut bufs, n);
            }
        }
        future::poll_fn(|cx| self.poll_flush_tls(cx)).await?;
        future::poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await
    }

    /// This side of the connection.
    pub fn side(&self) -> Side {
        match self.conn {
            rustls::Connection::Client(_) => Side::Client,
            rustls::Connection::Server(_) => Side::Server,
        }
    }

    /// The peer's side of the connection (the role its HELLO signature was made in).
    pub fn peer_side(&self) -> Side {
        match self.side() {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// The negotiated TLS version (`TLSv1_3` for every mesh link), after the handshake.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The negotiated key exchange group (`X25519MLKEM768` for every mesh link).
    pub fn negotiated_key_exchange_group(&self) -> Option<NamedGroup> {
        self.conn
            .negotiated_key_exchange_group()
            .map(rustls::crypto::SupportedKxGroup::name)
    }

    /// The negotiated ALPN protocol ([`crate::config::ALPN_MESH`]).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The peer's end-entity certificate, verified by the handshake.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(<[_]>::first)
    }

    /// The peer's node id and ML-DSA-65 public key, read from its certificate.
    pub fn peer_credentials(&self) -> Result<PeerCredentials, Error> {
        crate::config::peer_credentials(&self.conn)
    }

    /// The channel binding (TLS exporter) both ends of this connection share.
    pub fn channel_binding(&self) -> Result<ChannelBinding, Error> {
        export_channel_binding(&self.conn)
    }

    /// The rustls connection, e.g. for `export_keying_material` with another label.
    pub fn connection(&self) -> &rustls::Connection {
        &self.conn
    }

    /// The rustls connection, mutably: for `set_buffer_limit` or `refresh_traffic_keys`. Do
    /// not read or write records through it; that is this adapter's job.
    pub fn connection_mut(&mut self) -> &mut rustls::Connection {
        &mut self.conn
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Takes the stream apart.
    pub fn into_inner(self) -> (T, rustls::Connection) {
        (self.io, self.conn)
    }

    /// One `read_tls` from the transport: `Ready(Ok(0))` is end of stream.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut io = SyncIo::new(&mut self.io, cx);
        let result = self.conn.read_tls(&mut io);
        io.into_poll(result)
    }

    /// Writes every queued record to the transport (several `write_tls` calls if the
    /// transport takes them in pieces).
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut io = SyncIo::new(&mut self.io, cx);
            let result = self.conn.write_tls(&mut io);
            if ready!(io.into_poll(result))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// After a TLS error rustls has queued an alert; try once to send it, never wait.
    fn send_alert_best_effort(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(Ok(())) = self.poll_flush_tls(cx) {
            // Ignoring the result: the connection is failing anyway, and the error that
            // caused it is the one worth reporting.
            let _ = Pin::new(&mut self.io).poll_flush(cx);
        }
    }

    /// `poll_write*` body: `feed` hands plaintext to rustls.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        empty: bool,
        feed: impl Fn(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.conn.is_handshaking() {
            ready!(self.poll_handshake(cx)).map_err(io::Error::other)?;
        }
        if empty {
            return Poll::Ready(Ok(0));
        }
        loop {
            let taken = feed(&mut self.conn.writer())?;
            let had_records = self.conn.wants_write();
            match self.poll_flush_tls(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The records stay queued for the next write or flush.
                Poll::Pending if taken > 0 => return Poll::Ready(Ok(taken)),
                Poll::Pending => return Poll::Pending,
            }
            if taken > 0 {
                return Poll::Ready(Ok(taken));
            }
            if !had_records {
                // Nothing taken and nothing to drain: retrying could not change anything.
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // The send buffer was full and is now empty: feed again.
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Records rustls queued by itself (key update replies, alerts) go out while we
            // wait for data, but reading never waits on the transport accepting them.
            if let Poll::Ready(Err(e)) = this.poll_flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            // 0 (end of stream) is recorded by rustls: the next `reader().read` reports
            // `Ok(0)` after close_notify or `UnexpectedEof` without it.
            ready!(this.poll_read_tls(cx))?;
            if let Err(e) = this.conn.process_new_packets() {
                this.send_alert_best_effort(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, buf.is_empty(), |w| w.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let empty = bufs.iter().all(|b| b.is_empty());
        self.get_mut()
            .poll_write_with(cx, empty, |w| w.write_vectored(bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_tls(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_queued {
            this.conn.send_close_notify();
            this.close_notify_queued = true;
        }
        ready!(this.poll_flush_tls(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// Blocking-style `Read`/`Write` over an async transport for one poll: `Pending` becomes
/// `WouldBlock`, and [`SyncIo::into_poll`] turns it back into `Pending` only if it came from
/// the transport.
struct SyncIo<'a, 'b, T> {
    io: &'a mut T,
    cx: &'a mut Context<'b>,
    transport_pending: bool,
}

impl<'a, 'b, T: AsyncRead + AsyncWrite + Unpin> SyncIo<'a, 'b, T> {
    fn new(io: &'a mut T, cx: &'a mut Context<'b>) -> Self {
        Self {
            io,
            cx,
            transport_pending: false,
        }
    }

    fn into_poll(self, result: io::Result<usize>) -> Poll<io::Result<usize>> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.transport_pending => {
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    fn pending<R>(&mut self, poll: Poll<io::Result<R>>) -> io::Result<R> {
        match poll {
            Poll::Ready(result) => result,
            Poll::Pending => {
                self.transport_pending = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> io::Read for SyncIo<'_, '_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let poll = Pin::new(&mut *self.io).poll_read(self.cx, buf);
        self.pending(poll)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> io::Write for SyncIo<'_, '_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let poll = Pin::new(&mut *self.io).poll_write(self.cx, buf);
        self.pending(poll)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let poll = Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs);
        self.pending(poll)
    }

    fn flush(&mut self) -> io::Result<()> {
        let poll = Pin::new(&mut *self.io).poll_flush(self.cx);
        self.pending(poll)
    }
}
