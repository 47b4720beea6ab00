//! End-to-end tests of mesh links: two nodes handshake over an in-memory duplex pipe (small
//! buffers and short reads/writes, so partial I/O and `Pending` are exercised on every
//! call) or over loopback TCP, through the public API only.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use futures_lite::future::{self, block_on};
use futures_lite::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use mesh_tls::rustls::{self, CertificateError, NamedGroup, ProtocolVersion};
use mesh_tls::{
    CertificateAuthority, Error, ExpectedPeer, MeshTlsConfig, MldsaKeyPair, NodeIdentity,
    TlsStream, Validity, client_connection, generate_node, mldsa, server_connection,
};

// ---------------------------------------------------------------------------------------------
// An in-memory duplex transport implementing futures-io.

struct Pipe {
    buf: VecDeque<u8>,
    capacity: usize,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn new(capacity: usize) -> Arc<Mutex<Pipe>> {
        Arc::new(Mutex::new(Pipe {
            buf: VecDeque::new(),
            capacity,
            closed: false,
            reader: None,
            writer: None,
        }))
    }
}

/// One end of a duplex: reads `rx`, writes `tx`, moves at most `chunk` bytes per call.
struct End {
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
    chunk: usize,
    write_calls: Arc<AtomicUsize>,
}

fn duplex(capacity: usize, chunk: usize) -> (End, End) {
    let (a, b) = (Pipe::new(capacity), Pipe::new(capacity));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
            chunk,
            write_calls: Arc::default(),
        },
        End {
            rx: b,
            tx: a,
            chunk,
            write_calls: Arc::default(),
        },
    )
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.rx.lock().unwrap();
        if p.buf.is_empty() {
            if p.closed {
                return Poll::Ready(Ok(0));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.len().min(p.buf.len()).min(self.chunk);
        for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
            *o = b;
        }
        if let Some(w) = p.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl End {
    fn push(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.write_calls.fetch_add(1, Ordering::Relaxed);
        let mut p = self.tx.lock().unwrap();
        if p.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = (p.capacity - p.buf.len()).min(self.chunk);
        if room == 0 {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            p.buf.extend(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn shut_both(&self) {
        for pipe in [&self.tx, &self.rx] {
            let mut p = pipe.lock().unwrap();
            p.closed = true;
            for w in [p.reader.take(), p.writer.take()].into_iter().flatten() {
                w.wake();
            }
        }
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.push(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.tx.lock().unwrap();
        p.closed = true;
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.shut_both();
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn id(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

struct Mesh {
    ca: CertificateAuthority,
}

impl Mesh {
    fn new() -> Self {
        Self::named("test mesh CA")
    }

    fn named(ca_name: &str) -> Self {
        Self {
            ca: CertificateAuthority::generate(ca_name, Validity::ca_default()).unwrap(),
        }
    }

    fn node_with(&self, n: u64, validity: Validity) -> NodeIdentity {
        let (issued, pq) =
            generate_node(&self.ca, id(n), &["localhost".to_owned()], validity).unwrap();
        NodeIdentity::new(issued.certificate, issued.private_key.into(), pq).unwrap()
    }

    fn node(&self, n: u64) -> NodeIdentity {
        self.node_with(n, Validity::node_default())
    }

    fn config(&self, node: &NodeIdentity) -> MeshTlsConfig {
        MeshTlsConfig::new(node, self.ca.certificate()).unwrap()
    }
}

type Stream = TlsStream<End>;

/// A stream and how its handshake ended.
type Handshaken = (Stream, Result<(), Error>);

/// Connects `client` to `server` over a fresh pipe and runs both handshakes concurrently.
fn connect(
    client: &MeshTlsConfig,
    server: &MeshTlsConfig,
    expected: ExpectedPeer,
) -> (Handshaken, Handshaken) {
    let (client_end, server_end) = duplex(2048, 700);
    let mut dialer = TlsStream::new(
        client_end,
        client_connection(&client.client, expected).unwrap(),
    );
    let mut acceptor = TlsStream::new(server_end, server_connection(&server.server).unwrap());
    block_on(future::zip(
        async move {
            let result = dialer.handshake().await;
            (dialer, result)
        },
        async move {
            let result = acceptor.handshake().await;
            (acceptor, result)
        },
    ))
}

fn invalid_certificate(e: &Error) -> Option<&CertificateError> {
    match e {
        Error::Tls(rustls::Error::InvalidCertificate(c)) => Some(c),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn mutual_handshake_is_tls13_hybrid_pq_and_names_both_nodes() {
    let mesh = Mesh::new();
    let (n1, n2) = (mesh.node(1), mesh.node(2));
    let (c1, c2) = (mesh.config(&n1), mesh.config(&n2));
    let ((c, cr), (s, sr)) = connect(&c1, &c2, ExpectedPeer::Node(id(2)));
    cr.unwrap();
    sr.unwrap();

    for stream in [&c, &s] {
        assert_eq!(stream.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(
            stream.negotiated_key_exchange_group(),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(stream.alpn_protocol(), Some(mesh_tls::ALPN_MESH));
    }
    let seen_by_client = c.peer_credentials().unwrap();
    let seen_by_server = s.peer_credentials().unwrap();
    assert_eq!(seen_by_client.node_id, id(2));
    assert_eq!(seen_by_server.node_id, id(1));
    assert_eq!(&seen_by_client, n2.credentials());
    assert_eq!(&seen_by_server, n1.credentials());
    assert!(c.peer_certificate().is_some());
}

#[test]
fn channel_binding_signature_verifies_only_with_the_right_key() {
    let mesh = Mesh::new();
    let (n1, n2) = (mesh.node(1), mesh.node(2));
    let ((c, cr), (s, sr)) = connect(&mesh.config(&n1), &mesh.config(&n2), ExpectedPeer::AnyNode);
    cr.unwrap();
    sr.unwrap();

    let binding = c.channel_binding().unwrap();
    assert_eq!(
        binding,
        s.channel_binding().unwrap(),
        "both ends export the same bytes"
    );

    // Node 1 (client) signs its HELLO; node 2 (server) verifies it with the key from node
    // 1's certificate.
    let fields = b"hello fields of node 1";
    let sig = mldsa::sign_hello(n1.mldsa(), &binding, c.side(), n1.node_id(), fields).unwrap();
    let peer = s.peer_credentials().unwrap();
    mldsa::verify_hello(
        &peer.mldsa_public_key,
        &binding,
        s.peer_side(),
        peer.node_id,
        fields,
        &sig,
    )
    .unwrap();

    // A signature by any other ML-DSA key fails against the certificate's key.
    let intruder = MldsaKeyPair::generate().unwrap();
    let forged = mldsa::sign_hello(&intruder, &binding, c.side(), n1.node_id(), fields).unwrap();
    assert!(matches!(
        mldsa::verify_hello(
            &peer.mldsa_public_key,
            &binding,
            s.peer_side(),
            peer.node_id,
            fields,
            &forged
        ),
        Err(Error::SignatureInvalid)
    ));
    // So does the genuine signature from another TLS session (different exporter).
    let ((c2, r1), (_s2, r2)) =
        connect(&mesh.config(&n1), &mesh.config(&n2), ExpectedPeer::AnyNode);
    r1.unwrap();
    r2.unwrap();
    let other_binding = c2.channel_binding().unwrap();
    assert_ne!(binding, other_binding);
    assert!(
        mldsa::verify_hello(
            &peer.mldsa_public_key,
            &other_binding,
            s.peer_side(),
            peer.node_id,
            fields,
            &sig
        )
        .is_err()
    );
}

#[test]
fn data_flows_both_ways_through_small_buffers_and_closes_cleanly() {
    let mesh = Mesh::new();
    let (c1, c2) = (mesh.config(&mesh.node(1)), mesh.config(&mesh.node(2)));
    let ((mut c, cr), (mut s, sr)) = connect(&c1, &c2, ExpectedPeer::Node(id(2)));
    cr.unwrap();
    sr.unwrap();

    // 300 KiB each way through a 2 KiB pipe that moves at most 700 bytes per call: more
    // than the rustls send buffer (64 KiB), so a full send buffer, partial transport writes
    // and Pending on both reads and writes all happen many times.
    let up: Vec<u8> = (0..300 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let down: Vec<u8> = (0..300 * 1024u32)
        .map(|i| u8::try_from(i % 241).unwrap())
        .collect();
    let (got_down, got_up) = block_on(future::zip(
        async {
            // One frame as three slices: header, metadata, payload.
            let (header, rest) = up.split_at(48);
            let (meta, payload) = rest.split_at(100);
            let mut slices = [
                IoSlice::new(header),
                IoSlice::new(meta),
                IoSlice::new(payload),
            ];
            c.write_all_vectored(&mut slices).await.unwrap();
            let mut got = vec![0u8; down.len()];
            c.read_exact(&mut got).await.unwrap();
            c.close().await.unwrap();
            got
        },
        async {
            let mut got = vec![0u8; up.len()];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&down).await.unwrap();
            s.flush().await.unwrap();
            // The client's close_notify ends the stream cleanly: Ok(0), not UnexpectedEof.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            got
        },
    ));
    assert!(got_up == up, "client to server bytes differ");
    assert!(got_down == down, "server to client bytes differ");
}

#[test]
fn transport_eof_without_close_notify_is_unexpected_eof() {
    let mesh = Mesh::new();
    let (c1, c2) = (mesh.config(&mesh.node(1)), mesh.config(&mesh.node(2)));
    let ((c, cr), (mut s, sr)) = connect(&c1, &c2, ExpectedPeer::Node(id(2)));
    cr.unwrap();
    sr.unwrap();
    drop(c); // the transport closes, no close_notify
    let mut buf = [0u8; 8];
    let err = block_on(s.read(&mut buf)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn queued_frames_go_out_in_one_vectored_transport_write() {
    let mesh = Mesh::new();
    let (c1, c2) = (mesh.config(&mesh.node(1)), mesh.config(&mesh.node(2)));
    // A roomy pipe so the transport takes everything offered in one call.
    let (client_end, server_end) = duplex(1 << 20, 1 << 20);
    let client_writes = client_end.write_calls.clone();
    let mut c = TlsStream::new(
        client_end,
        client_connection(&c1.client, ExpectedPeer::AnyNode).unwrap(),
    );
    let mut s = TlsStream::new(server_end, server_connection(&c2.server).unwrap());
    let (cr, sr) = block_on(future::zip(c.handshake(), s.handshake()));
    cr.unwrap();
    sr.unwrap();

    let before = client_writes.load(Ordering::Relaxed);
    let frames: Vec<[u8; 100]> = (0..10u8).map(|i| [i; 100]).collect();
    for f in &frames {
        let header = [0xAB; 48];
        let n = c
            .queue_vectored(&[IoSlice::new(&header), IoSlice::new(f)])
            .unwrap();
        assert_eq!(n, 148);
    }
    block_on(c.flush()).unwrap();
    assert_eq!(
        client_writes.load(Ordering::Relaxed) - before,
        1,
        "ten queued frames, one transport write"
    );
    let mut got = vec![0u8; 10 * 148];
    block_on(s.read_exact(&mut got)).unwrap();
    for (i, frame) in got.chunks(148).enumerate() {
        assert_eq!(&frame[..48], &[0xAB; 48]);
        assert!(frame[48..].iter().all(|b| usize::from(*b) == i));
    }
}

#[test]
fn expected_node_id_mismatch_is_refused() {
    let mesh = Mesh::new();
    let (c1, c2) = (mesh.config(&mesh.node(1)), mesh.config(&mesh.node(2)));
    let ((_, cr), (_, sr)) = connect(&c1, &c2, ExpectedPeer::Node(id(3)));
    let err = cr.unwrap_err();
    assert!(
        matches!(invalid_certificate(&err), Some(CertificateError::NotValidForNameContext { presented, .. })
            if presented == &["mesh://node/2".to_owned()]),
        "{err:?}"
    );
    assert!(sr.is_err(), "the server sees the client's alert");
}

#[test]
fn server_from_another_ca_is_refused() {
    let mesh = Mesh::new();
    // Same CA name, different key: webpki finds the "issuer" by name and the signature fails.
    let other = Mesh::new();
    let client = mesh.config(&mesh.node(1));
    // Node 2 with a certificate from a foreign CA (that trusts only itself).
    let rogue = other.config(&other.node(2));
    let ((_, cr), (_, sr)) = connect(&client, &rogue, ExpectedPeer::Node(id(2)));
    let err = cr.unwrap_err();
    assert_eq!(
        invalid_certificate(&err),
        Some(&CertificateError::BadSignature),
        "{err:?}"
    );
    assert!(sr.is_err());
}

#[test]
fn client_from_another_ca_is_refused() {
    let mesh = Mesh::new();
    // A differently named CA: no issuer is found at all.
    let other = Mesh::named("another mesh CA");
    let server = mesh.config(&mesh.node(2));
    // The rogue client trusts the real CA (so it accepts the server) but holds a foreign cert.
    let rogue_node = other.node(1);
    let rogue = MeshTlsConfig::new(&rogue_node, mesh.ca.certificate()).unwrap();
    let ((mut c, cr), (_, sr)) = connect(&rogue, &server, ExpectedPeer::Node(id(2)));
    let err = sr.unwrap_err();
    assert_eq!(
        invalid_certificate(&err),
        Some(&CertificateError::UnknownIssuer),
        "{err:?}"
    );
    // TLS 1.3: the client finished first and learns of the refusal from the alert on its
    // first read.
    cr.unwrap();
    let mut buf = [0u8; 16];
    let read_err = block_on(c.read(&mut buf)).unwrap_err();
    assert_eq!(read_err.kind(), io::ErrorKind::InvalidData);
    assert!(
        matches!(
            read_err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::AlertReceived(_))
        ),
        "{read_err:?}"
    );
}

#[test]
fn expired_certificates_are_refused_both_ways() {
    let mesh = Mesh::new();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = Validity::new(now - 30 * day, now - day).unwrap();
    let good = mesh.config(&mesh.node(1));
    let stale = mesh.config(&mesh.node_with(2, expired));

    // Expired server.
    let ((_, cr), _) = connect(&good, &stale, ExpectedPeer::Node(id(2)));
    let err = cr.unwrap_err();
    assert!(
        matches!(
            invalid_certificate(&err),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );

    // Expired client.
    let ((_, _), (_, sr)) = connect(&stale, &good, ExpectedPeer::Node(id(1)));
    let err = sr.unwrap_err();
    assert!(
        matches!(
            invalid_certificate(&err),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );

    // Not yet valid.
    let future_validity = Validity::new(now + day, now + 30 * day).unwrap();
    let early = mesh.config(&mesh.node_with(3, future_validity));
    let ((_, cr), _) = connect(&good, &early, ExpectedPeer::AnyNode);
    let err = cr.unwrap_err();
    assert!(
        matches!(
            invalid_certificate(&err),
            Some(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn classical_only_key_exchange_is_refused() {
    let mesh = Mesh::new();
    let server = mesh.config(&mesh.node(2));
    let node1 = mesh.node(1);
    // A client that offers only X25519 (no ML-KEM) but is otherwise a valid mesh node.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(mesh.ca.certificate().clone()).unwrap();
    let classical = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![node1.certificate().clone()],
            node1.tls_key().clone_key(),
        )
        .unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(classical), "localhost".try_into().unwrap())
        .unwrap();
    let (a, b) = duplex(4096, 4096);
    let mut c = TlsStream::new(a, conn);
    let mut s = TlsStream::new(b, server_connection(&server.server).unwrap());
    let (cr, sr) = block_on(future::zip(c.handshake(), s.handshake()));
    assert!(cr.is_err());
    assert!(
        matches!(
            sr,
            Err(Error::Tls(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoKxGroupsInCommon
            )))
        ),
        "{sr:?}"
    );
}

#[test]
fn handshake_reports_transport_eof() {
    let mesh = Mesh::new();
    let client = mesh.config(&mesh.node(1));
    let (a, b) = duplex(4096, 4096);
    let mut c = TlsStream::new(
        a,
        client_connection(&client.client, ExpectedPeer::AnyNode).unwrap(),
    );
    drop(b);
    assert!(matches!(
        block_on(c.handshake()),
        Err(Error::HandshakeEof | Error::Transport(_))
    ));
}

#[test]
fn works_over_loopback_tcp_with_blocking_sockets() {
    use futures_lite::io::AssertAsync;
    use std::net::{TcpListener, TcpStream};

    let mesh = Mesh::new();
    let (n1, n2) = (mesh.node(1), mesh.node(2));
    let (c1, c2) = (mesh.config(&n1), mesh.config(&n2));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut s = TlsStream::new(
            AssertAsync::new(tcp),
            server_connection(&c2.server).unwrap(),
        );
        block_on(async {
            s.handshake().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
            (s.peer_credentials().unwrap().node_id, buf)
        })
    });
    let tcp = TcpStream::connect(addr).unwrap();
    let mut c = TlsStream::new(
        AssertAsync::new(tcp),
        client_connection(&c1.client, ExpectedPeer::Node(id(2))).unwrap(),
    );
    let echoed = block_on(async {
        c.handshake().await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        buf
    });
    assert_eq!(&echoed, b"hello");
    assert_eq!(
        c.negotiated_key_exchange_group(),
        Some(NamedGroup::X25519MLKEM768)
    );
    assert_eq!(server.join().unwrap(), (id(1), *b"hello"));
}
