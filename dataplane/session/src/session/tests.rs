//! Two sessions driven against each other in memory: every transmitted frame goes through
//! `OutFrame::to_vec` and a `mesh_wire::Decoder` into the other side, as on a socket. Time is
//! simulated.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mesh_wire::{
    CloseReason, Decoder, Envelope, Frame, FrameKind, Limits, MetaLimits, encode_frame,
};
use proptest::prelude::*;

use super::*;
use crate::admission::{Registration, SessionTable};
use crate::auth::{ChannelSecurity, PeerCredentials, TlsChannel};
use crate::hello::{Capabilities, Hello, HelloError, Role, VersionRange};
use crate::testing::TestCrypto;

const A: u64 = 3;
const B: u64 = 9;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One end: a session, the decoder in front of it, and everything it reported.
struct End {
    s: Session,
    dec: Decoder,
    events: Vec<SessionEvent>,
    routed: Vec<Frame<BytesMut>>,
    errors: Vec<SessionError>,
    /// Whether frames from this end reach the other (false: a cut cable in this direction).
    link_up: bool,
}

impl End {
    fn new(s: Session) -> Self {
        let dec = Decoder::new(s.decoder_limits());
        let mut e = End {
            s,
            dec,
            events: Vec::new(),
            routed: Vec::new(),
            errors: Vec::new(),
            link_up: true,
        };
        e.collect_events();
        e
    }

    fn collect_events(&mut self) {
        while let Some(ev) = self.s.poll_event() {
            self.events.push(ev);
        }
    }

    fn feed(&mut self, bytes: &[u8], now: Instant) {
        self.dec.handle_bytes(bytes);
        loop {
            match self.dec.poll_frame() {
                Ok(Some(f)) => {
                    match self.s.handle_frame(f, now) {
                        Ok(Some(routed)) => self.routed.push(routed),
                        Ok(None) => {}
                        Err(e) => self.errors.push(e),
                    }
                    // What a shell does after every frame: follow the negotiated limits.
                    self.dec.set_limits(self.s.decoder_limits());
                    self.collect_events();
                }
                Ok(None) => break,
                Err(e) => {
                    self.s.handle_decode_error(&e, now);
                    self.collect_events();
                    break;
                }
            }
        }
    }

    fn closed_event(&self) -> Option<(CloseReason, bool)> {
        self.events.iter().find_map(|e| match e {
            SessionEvent::Closed { reason, by_peer } => Some((*reason, *by_peer)),
            _ => None,
        })
    }

    fn established(&self) -> Option<&PeerInfo> {
        self.events.iter().find_map(|e| match e {
            SessionEvent::Established { peer } => Some(peer),
            _ => None,
        })
    }
}

struct Pair {
    a: End,
    b: End,
    now: Instant,
}

impl Pair {
    fn new(a: Session, b: Session, now: Instant) -> Self {
        Pair {
            a: End::new(a),
            b: End::new(b),
            now,
        }
    }

    /// Moves frames both ways until neither side has anything to send. Each round first
    /// takes what both sides queued, then delivers it, so frames sent "at the same time" (both
    /// HELLOs) cross on the wire as they do on a real connection.
    fn pump(&mut self) {
        for _ in 0..16 {
            let from_a: Vec<_> = std::iter::from_fn(|| self.a.s.poll_transmit()).collect();
            let from_b: Vec<_> = std::iter::from_fn(|| self.b.s.poll_transmit()).collect();
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for f in from_a.iter().filter(|_| self.a.link_up) {
                self.b.feed(&f.to_vec(), self.now);
            }
            for f in from_b.iter().filter(|_| self.b.link_up) {
                self.a.feed(&f.to_vec(), self.now);
            }
        }
        panic!("frames kept flowing for 16 rounds");
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.s.handle_timeout(self.now);
        self.b.s.handle_timeout(self.now);
        self.a.collect_events();
        self.b.collect_events();
        self.pump();
    }
}

fn config(node_id: u64) -> SessionConfig {
    SessionConfig::new(node_id, 1)
}

fn plain(cfg: SessionConfig, side: Side, expected: Option<u64>, now: Instant) -> Session {
    let nonce = [u8::try_from(cfg.node_id & 0xFF).unwrap(); 32];
    Session::new(cfg, side, expected, ChannelSecurity::Plain, nonce, now).unwrap()
}

/// A TLS session for `cfg.node_id`, signing with key `node_id * 100`, seeing a peer whose
/// certificate names `peer_cert_node` with the key of `peer_key_node`.
fn tls(
    cfg: SessionConfig,
    side: Side,
    expected: Option<u64>,
    binding: [u8; 32],
    peer_cert_node: u64,
    peer_key_node: u64,
    now: Instant,
) -> Session {
    let own_key = cfg.node_id * 100;
    let security = TestCrypto::tls(
        own_key,
        binding,
        TestCrypto::credentials(peer_cert_node, peer_key_node * 100),
    );
    let nonce = [0x11; 32];
    Session::new(cfg, side, expected, security, nonce, now).unwrap()
}

fn plain_pair(ca: SessionConfig, cb: SessionConfig) -> Pair {
    let now = t0();
    let (a_id, b_id) = (ca.node_id, cb.node_id);
    let _ = a_id;
    let a = plain(ca, Side::Initiator, Some(b_id), now);
    let b = plain(cb, Side::Acceptor, None, now);
    Pair::new(a, b, now)
}

fn tls_pair() -> Pair {
    let now = t0();
    let a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let b = tls(config(B), Side::Acceptor, None, [7; 32], A, A, now);
    Pair::new(a, b, now)
}

fn frame(kind: FrameKind, payload: &[u8]) -> Frame<BytesMut> {
    let mut env = Envelope::new(kind);
    env.src_node = B;
    let out = encode_frame(
        &env,
        &[],
        Bytes::copy_from_slice(payload),
        &Limits::default(),
    )
    .unwrap();
    Frame::new_checked(BytesMut::from(&out.to_vec()[..]), &Limits::default()).unwrap()
}

fn close_reason_sent(s: &mut Session) -> CloseReason {
    let f = s.poll_transmit().expect("a CLOSE is queued");
    assert_eq!(f.header().kind, FrameKind::Close as u8);
    let m = mesh_wire::Metadata::decode(f.meta(), &MetaLimits::default()).unwrap();
    assert!(s.poll_transmit().is_none(), "nothing after the CLOSE");
    CloseReason::from_code(m.reason.unwrap())
}

// ----- handshake -----

#[test]
fn plain_handshake_negotiates_everything() {
    let mut ca = config(A);
    ca.limits = Limits::new(64 * 1024, 2048).unwrap();
    ca.keepalive_interval = ms(2_000);
    ca.capabilities = Capabilities::CHUNKING | Capabilities::RESUME;
    let mut cb = config(B);
    cb.domain_id = 2;
    cb.keepalive_interval = ms(5_000);
    cb.capabilities = Capabilities::CHUNKING | Capabilities::E2E_ENC;
    let mut p = plain_pair(ca, cb);
    assert_eq!(p.a.s.state(), SessionState::Handshaking);
    assert_eq!(
        p.a.s.poll_timeout(),
        Some(p.now + DEFAULT_HANDSHAKE_TIMEOUT)
    );
    p.pump();

    let pa = p.a.established().expect("a established").clone();
    let pb = p.b.established().expect("b established").clone();
    assert_eq!(pa.node_id, B);
    assert_eq!(pa.domain_id, 2);
    assert_eq!(pb.node_id, A);
    assert_eq!(pb.domain_id, 1);
    for peer in [&pa, &pb] {
        assert!(!peer.authenticated);
        assert_eq!(peer.version, 1);
        assert_eq!(peer.role, Role::Node);
        assert_eq!(peer.limits, Limits::new(64 * 1024, 2048).unwrap());
        assert_eq!(peer.keepalive_interval, ms(2_000));
        assert_eq!(peer.capabilities, Capabilities::CHUNKING);
    }
    assert_eq!(pa.nonce, *p.b.s.nonce());
    assert_eq!(p.a.s.state(), SessionState::Established);
    assert_eq!(p.b.s.state(), SessionState::Established);
    assert_eq!(p.a.s.decoder_limits(), pa.limits);
    assert_eq!(p.a.dec.limits(), &pa.limits);
    assert!(p.a.errors.is_empty() && p.b.errors.is_empty());
    assert_eq!(p.a.s.stats().frames_out.get(FrameKind::Hello), 1);
    assert_eq!(p.a.s.stats().frames_in.get(FrameKind::Hello), 1);
    assert_eq!(p.a.s.stats().handshake_failure, None);
    // Timers now track keepalive, not the handshake deadline.
    assert_eq!(p.a.s.poll_timeout(), Some(p.now + ms(2_000)));
}

#[test]
fn tls_handshake_authenticates_both_sides() {
    let mut p = tls_pair();
    let hello = p.a.s.poll_transmit().unwrap();
    // An ML-DSA-65-sized signature travels in the HELLO.
    assert!(hello.len() > 3309 && hello.len() <= HANDSHAKE_LIMITS.max_frame_len as usize);
    p.b.feed(&hello.to_vec(), p.now);
    p.pump();
    assert!(p.a.established().unwrap().authenticated);
    assert!(p.b.established().unwrap().authenticated);
    assert_eq!(p.a.established().unwrap().node_id, B);
    assert_eq!(p.b.established().unwrap().node_id, A);
}

#[test]
fn certificate_id_mismatch_fails_authentication() {
    let now = t0();
    // b's TLS layer sees a certificate for node 99, but a's HELLO claims node 3.
    let a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let b = tls(config(B), Side::Acceptor, None, [7; 32], 99, A, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert_eq!(
        p.b.errors,
        vec![SessionError::Auth(AuthError::NodeIdMismatch {
            cert_node_id: 99,
            hello_node_id: A
        })]
    );
    assert_eq!(
        p.b.closed_event(),
        Some((CloseReason::AuthenticationFailed, false))
    );
    assert_eq!(
        p.a.closed_event(),
        Some((CloseReason::AuthenticationFailed, true))
    );
    assert!(p.b.established().is_none());
    let f = p.b.s.stats().handshake_failure.unwrap();
    assert_eq!(
        (f.reason, f.by_peer),
        (CloseReason::AuthenticationFailed, false)
    );
    // a accepted b's HELLO (the two crossed), so for a the handshake succeeded and the
    // session was then closed by its peer.
    assert!(p.a.established().is_some());
    assert_eq!(p.a.s.stats().handshake_failure, None);
}

#[test]
fn certificate_without_node_id_fails_authentication() {
    let now = t0();
    let a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let security = ChannelSecurity::Tls(TlsChannel {
        channel_binding: [7; 32],
        peer: PeerCredentials {
            cert_node_id: None,
            ..TestCrypto::credentials(A, A * 100)
        },
        crypto: Box::new(TestCrypto::new(B * 100)),
    });
    let b = Session::new(config(B), Side::Acceptor, None, security, [0; 32], now).unwrap();
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert_eq!(
        p.b.errors,
        vec![SessionError::Auth(AuthError::CertificateWithoutNodeId)]
    );
}

#[test]
fn bad_signature_fails_authentication() {
    let now = t0();
    // b believes a's ML-DSA key is node 4's: a's signature does not verify.
    let a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let b = tls(config(B), Side::Acceptor, None, [7; 32], A, 4, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert!(matches!(
        p.b.errors[..],
        [SessionError::Auth(AuthError::BadSignature {
            node_id: A,
            len: 3309
        })]
    ));
    assert_eq!(
        p.a.closed_event(),
        Some((CloseReason::AuthenticationFailed, true))
    );
}

#[test]
fn relayed_signature_fails_on_another_channel() {
    // A man in the middle has two TLS connections, so two different exporters: each end's
    // signature is over the wrong binding for the other.
    let now = t0();
    let a = tls(config(A), Side::Initiator, Some(B), [1; 32], B, B, now);
    let b = tls(config(B), Side::Acceptor, None, [2; 32], A, A, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert_eq!(
        p.a.closed_event().map(|c| c.0),
        Some(CloseReason::AuthenticationFailed)
    );
    assert_eq!(
        p.b.closed_event().map(|c| c.0),
        Some(CloseReason::AuthenticationFailed)
    );
}

#[test]
fn missing_signature_over_tls_fails() {
    let now = t0();
    let mut b = tls(config(B), Side::Acceptor, None, [7; 32], A, A, now);
    let hello = Hello {
        versions: VersionRange::CURRENT,
        node_id: A,
        domain_id: 1,
        role: Role::Node,
        capabilities: Capabilities::EMPTY,
        limits: Limits::default(),
        keepalive_interval_ms: 1000,
        nonce: [0; 32],
    };
    let body = hello.encode(&[]).unwrap();
    let _ = b.poll_transmit(); // b's own HELLO
    let err = b
        .handle_frame(frame(FrameKind::Hello, &body), now)
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Auth(AuthError::MissingSignature { node_id: A })
    );
    assert_eq!(close_reason_sent(&mut b), CloseReason::AuthenticationFailed);
}

#[test]
fn auth_failure_close_carries_no_detail_but_others_do() {
    let now = t0();
    let mut s = plain(config(B), Side::Acceptor, None, now);
    let _ = s.poll_transmit();
    let _ = s.handle_frame(frame(FrameKind::Data, b"x"), now);
    let f = s.poll_transmit().unwrap();
    let m = mesh_wire::Metadata::decode(f.meta(), &MetaLimits::default()).unwrap();
    assert!(m.text.unwrap().contains("Data"));

    let mut s = tls(config(B), Side::Acceptor, None, [7; 32], 99, A, now);
    let _ = s.poll_transmit();
    let mut a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let hello = a.poll_transmit().unwrap().to_vec();
    let f = Frame::new_checked(BytesMut::from(&hello[..]), &HANDSHAKE_LIMITS).unwrap();
    assert!(s.handle_frame(f, now).is_err());
    let f = s.poll_transmit().unwrap();
    let m = mesh_wire::Metadata::decode(f.meta(), &MetaLimits::default()).unwrap();
    assert_eq!(m.text, None);
}

#[test]
fn require_tls_refuses_a_plain_peer() {
    let now = t0();
    let a = plain(config(A), Side::Initiator, Some(B), now);
    let mut cb = config(B);
    cb.require_tls = true;
    let b = plain(cb, Side::Acceptor, None, now);
    // Refused at once: no HELLO, only the CLOSE.
    assert!(b.is_closed());
    assert_eq!(b.poll_timeout(), None);
    let mut p = Pair::new(a, b, now);
    assert_eq!(p.b.closed_event(), Some((CloseReason::TlsRequired, false)));
    p.pump();
    assert_eq!(p.a.closed_event(), Some((CloseReason::TlsRequired, true)));
    assert_eq!(
        p.a.s.stats().handshake_failure,
        Some(HandshakeFailure {
            reason: CloseReason::TlsRequired,
            by_peer: true
        })
    );
    assert_eq!(p.b.s.stats().frames_out.get(FrameKind::Hello), 0);
    assert_eq!(p.b.s.stats().frames_after_close, 1);
}

#[test]
fn require_tls_accepts_tls() {
    let now = t0();
    let mut cb = config(B);
    cb.require_tls = true;
    let a = tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now);
    let b = tls(cb, Side::Acceptor, None, [7; 32], A, A, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert!(p.b.established().unwrap().authenticated);
}

#[test]
fn version_negotiation_picks_highest_common() {
    let mut ca = config(A);
    ca.versions = VersionRange::new(1, 3).unwrap();
    let mut cb = config(B);
    cb.versions = VersionRange::new(2, 5).unwrap();
    let mut p = plain_pair(ca, cb);
    p.pump();
    assert_eq!(p.a.established().unwrap().version, 3);
    assert_eq!(p.b.established().unwrap().version, 3);
}

#[test]
fn version_negotiation_failure_closes_both() {
    let mut ca = config(A);
    ca.versions = VersionRange::new(1, 1).unwrap();
    let mut cb = config(B);
    cb.versions = VersionRange::new(2, 4).unwrap();
    let mut p = plain_pair(ca, cb);
    p.pump();
    // Both HELLOs cross; each side refuses the other's.
    assert_eq!(
        p.a.closed_event(),
        Some((CloseReason::UnsupportedVersion, false))
    );
    assert_eq!(
        p.b.closed_event(),
        Some((CloseReason::UnsupportedVersion, false))
    );
    assert_eq!(
        p.a.errors,
        vec![SessionError::NoCommonVersion {
            ours_min: 1,
            ours_max: 1,
            peer_min: 2,
            peer_max: 4
        }]
    );
}

#[test]
fn handshake_deadline() {
    let now = t0();
    let mut s = plain(config(A), Side::Initiator, Some(B), now);
    let _ = s.poll_transmit();
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + ms(2_000));
    s.handle_timeout(now + ms(1_999));
    assert_eq!(s.state(), SessionState::Handshaking);
    assert!(s.poll_transmit().is_none());
    // Bytes arriving do not extend the handshake deadline.
    s.note_received(now + ms(1_500));
    s.handle_timeout(deadline);
    assert!(s.is_closed());
    assert_eq!(close_reason_sent(&mut s), CloseReason::HandshakeTimeout);
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed {
            reason: CloseReason::HandshakeTimeout,
            by_peer: false
        })
    );
    assert_eq!(
        s.stats().handshake_failure.map(|f| f.reason),
        Some(CloseReason::HandshakeTimeout)
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn unexpected_peer_self_connection_and_roles() {
    // Dialed 9, reached 10.
    let mut ca = config(A);
    ca.node_id = A;
    let now = t0();
    let a = plain(ca, Side::Initiator, Some(B), now);
    let b = plain(config(10), Side::Acceptor, None, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert_eq!(
        p.a.errors,
        vec![SessionError::UnexpectedPeer {
            expected: B,
            found: 10
        }]
    );
    assert_eq!(
        p.b.closed_event(),
        Some((CloseReason::AuthenticationFailed, true))
    );

    // Connected to itself.
    let a = plain(config(A), Side::Initiator, None, now);
    let b = plain(config(A), Side::Acceptor, None, now);
    let mut p = Pair::new(a, b, now);
    p.pump();
    assert_eq!(
        p.a.errors,
        vec![SessionError::SelfConnection { node_id: A }]
    );

    // A node that does not accept clients.
    let mut ca = config(A);
    ca.role = Role::Client;
    let mut cb = config(B);
    cb.accept_clients = false;
    let mut p = plain_pair(ca.clone(), cb);
    p.pump();
    assert_eq!(
        p.b.errors,
        vec![SessionError::RoleNotAccepted {
            ours: Role::Node,
            peer: Role::Client
        }]
    );
    // A node that does: the client attaches.
    let mut p = plain_pair(ca.clone(), config(B));
    p.pump();
    assert_eq!(p.b.established().unwrap().role, Role::Client);
    assert_eq!(p.a.established().unwrap().role, Role::Node);
    // Two clients never talk to each other.
    let mut cb = config(B);
    cb.role = Role::Client;
    let mut p = plain_pair(ca, cb);
    p.pump();
    assert!(matches!(
        p.a.errors[..],
        [SessionError::RoleNotAccepted { .. }]
    ));
}

#[test]
fn signing_failure_is_an_internal_close() {
    let now = t0();
    let security = ChannelSecurity::Tls(TlsChannel {
        channel_binding: [0; 32],
        peer: TestCrypto::credentials(B, B),
        crypto: Box::new(TestCrypto::failing_signer(A)),
    });
    let mut s = Session::new(config(A), Side::Initiator, Some(B), security, [0; 32], now).unwrap();
    assert!(s.is_closed());
    assert_eq!(close_reason_sent(&mut s), CloseReason::Internal);
}

#[test]
fn invalid_config_is_refused() {
    let now = t0();
    let new = |c: SessionConfig| {
        Session::new(
            c,
            Side::Acceptor,
            None,
            ChannelSecurity::Plain,
            [0; 32],
            now,
        )
        .map(|_| ())
    };
    assert_eq!(new(config(0)), Err(ConfigError::NodeIdZero));
    let mut c = config(A);
    c.keepalive_interval = ms(50);
    assert!(matches!(new(c), Err(ConfigError::KeepaliveInterval { .. })));
    let mut c = config(A);
    c.keepalive_interval = Duration::from_micros(1_000_500);
    assert!(matches!(new(c), Err(ConfigError::KeepaliveInterval { .. })));
    let mut c = config(A);
    c.dead_after = 1;
    assert_eq!(
        new(c),
        Err(ConfigError::DeadAfter {
            value: 1,
            min: 2,
            max: 100
        })
    );
    let mut c = config(A);
    c.handshake_timeout = Duration::from_secs(3600);
    assert!(matches!(new(c), Err(ConfigError::HandshakeTimeout { .. })));
    let mut c = config(A);
    c.limits.max_frame_len = 10;
    assert!(matches!(new(c), Err(ConfigError::Limits(_))));
}

// ----- frames in the wrong state -----

#[test]
fn data_before_hello_is_unexpected() {
    let now = t0();
    let mut s = plain(config(A), Side::Acceptor, None, now);
    let _ = s.poll_transmit();
    let err = s
        .handle_frame(frame(FrameKind::Data, b"early"), now)
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::UnexpectedFrame {
            kind: FrameKind::Data,
            state: SessionState::Handshaking
        }
    );
    assert_eq!(close_reason_sent(&mut s), CloseReason::UnexpectedFrame);
    // Later frames are dropped and counted.
    assert_eq!(s.handle_frame(frame(FrameKind::Data, b"x"), now), Ok(None));
    assert_eq!(s.stats().frames_after_close, 1);
    assert_eq!(s.stats().frames_in.get(FrameKind::Data), 2);
}

#[test]
fn data_before_hello_through_the_pipe() {
    let now = t0();
    let a = plain(config(A), Side::Initiator, Some(B), now);
    let mut b = plain(config(B), Side::Acceptor, None, now);
    // b's first frame on the wire is a DATA frame, its HELLO only after.
    let hello = b.poll_transmit().unwrap();
    let mut p = Pair::new(a, b, now);
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = B;
    let data = encode_frame(&env, &[], Bytes::from_static(b"hi"), &Limits::default()).unwrap();
    p.a.feed(&data.to_vec(), now);
    p.a.feed(&hello.to_vec(), now);
    p.pump();
    assert_eq!(
        p.a.closed_event(),
        Some((CloseReason::UnexpectedFrame, false))
    );
    assert_eq!(
        p.b.closed_event(),
        Some((CloseReason::UnexpectedFrame, true))
    );
    assert!(p.a.routed.is_empty());
}

#[test]
fn second_hello_is_unexpected() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    let mut again = plain(config(B), Side::Acceptor, None, p.now);
    let hello = again.poll_transmit().unwrap();
    p.a.feed(&hello.to_vec(), p.now);
    assert_eq!(
        p.a.errors,
        vec![SessionError::UnexpectedFrame {
            kind: FrameKind::Hello,
            state: SessionState::Established
        }]
    );
    p.pump();
    assert_eq!(
        p.b.closed_event(),
        Some((CloseReason::UnexpectedFrame, true))
    );
}

#[test]
fn malformed_hello_and_decode_errors_close_with_their_reason() {
    let now = t0();
    let mut s = plain(config(A), Side::Acceptor, None, now);
    let _ = s.poll_transmit();
    let err = s
        .handle_frame(frame(FrameKind::Hello, &[0xA0]), now)
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::Hello(HelloError::MissingField { .. })
    ));
    assert_eq!(close_reason_sent(&mut s), CloseReason::MalformedFrame);

    // Bad magic through the decoder.
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    p.a.feed(&[0u8; 48], p.now);
    assert_eq!(p.a.closed_event(), Some((CloseReason::BadMagic, false)));
    p.pump();
    assert_eq!(p.b.closed_event(), Some((CloseReason::BadMagic, true)));
}

#[test]
fn oversized_frame_during_handshake_is_refused_by_the_decoder() {
    // Before the handshake the decoder enforces HANDSHAKE_LIMITS, not the 1 MiB default.
    let now = t0();
    let b = plain(config(B), Side::Acceptor, None, now);
    let mut end = End::new(b);
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = A;
    let big = encode_frame(
        &env,
        &[],
        Bytes::from(vec![0u8; 20_000]),
        &Limits::default(),
    )
    .unwrap();
    end.feed(&big.to_vec()[..mesh_wire::HEADER_LEN], now);
    assert_eq!(
        end.closed_event(),
        Some((CloseReason::FrameTooLarge, false))
    );
}

#[test]
fn non_empty_keepalive_is_malformed() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    let err =
        p.a.s
            .handle_frame(frame(FrameKind::Keepalive, b"junk"), p.now)
            .unwrap_err();
    assert_eq!(
        err,
        SessionError::NonEmptyControlFrame {
            kind: FrameKind::Keepalive,
            body_len: 4
        }
    );
    assert_eq!(close_reason_sent(&mut p.a.s), CloseReason::MalformedFrame);
}

// ----- established traffic -----

#[test]
fn routed_frames_are_handed_back() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    let routed = [
        FrameKind::Data,
        FrameKind::Delivered,
        FrameKind::Ack,
        FrameKind::Nack,
        FrameKind::Credit,
        FrameKind::Resume,
        FrameKind::Lsa,
        FrameKind::LsaAck,
    ];
    for kind in routed {
        let f = p.a.s.handle_frame(frame(kind, b"body"), p.now).unwrap();
        let f = f.expect("handed back");
        assert_eq!(f.kind(), kind);
        assert_eq!(f.payload(), b"body");
    }
    assert_eq!(
        p.a.s.handle_frame(frame(FrameKind::Keepalive, b""), p.now),
        Ok(None)
    );
    assert_eq!(p.a.s.stats().frames_in.total(), 1 + routed.len() as u64 + 1);
}

#[test]
fn negotiated_limits_apply_after_the_handshake() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    // 100 KB is over the 16 KiB handshake limit but within the negotiated 1 MiB.
    let mut env = Envelope::new(FrameKind::Data);
    env.src_node = B;
    let big = encode_frame(
        &env,
        &[],
        Bytes::from(vec![5u8; 100_000]),
        &Limits::default(),
    )
    .unwrap();
    p.a.feed(&big.to_vec(), p.now);
    assert_eq!(p.a.routed.len(), 1);
    assert_eq!(p.a.routed[0].payload().len(), 100_000);
    assert!(p.a.s.is_established());
}

#[test]
fn keepalive_is_sent_when_idle_and_suppressed_by_traffic() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    let start = p.now;
    // Just before the interval: nothing.
    p.advance(ms(4_999));
    assert_eq!(p.a.s.stats().frames_out.get(FrameKind::Keepalive), 0);
    // At the interval both sides send one, and each receives the other's.
    p.advance(ms(1));
    assert_eq!(p.a.s.stats().frames_out.get(FrameKind::Keepalive), 1);
    assert_eq!(p.b.s.stats().frames_in.get(FrameKind::Keepalive), 1);
    assert_eq!(p.a.s.poll_timeout(), Some(start + ms(10_000)));
    // The shell writing its own frames counts as sending: no keepalive needed.
    p.now += ms(4_000);
    p.a.s.note_sent(p.now);
    p.advance(ms(1_000));
    assert_eq!(p.a.s.stats().frames_out.get(FrameKind::Keepalive), 1);
    assert_eq!(p.b.s.stats().frames_out.get(FrameKind::Keepalive), 2);
    // Half an hour of idleness on a healthy link: keepalives flow, nobody dies.
    for _ in 0..2_000 {
        p.advance(ms(1_000));
    }
    assert!(p.a.s.is_established() && p.b.s.is_established());
    let ka = p.a.s.stats().frames_out.get(FrameKind::Keepalive);
    assert!(
        (390..=410).contains(&ka),
        "{ka} keepalives in ~2000 s at 5 s"
    );
    // Never more than one queued keepalive, even if the shell does not poll.
    p.now += ms(60_000);
    p.a.s.note_received(p.now);
    p.a.s.handle_timeout(p.now);
    p.a.s.handle_timeout(p.now + ms(1));
    assert!(p.a.s.poll_transmit().is_some());
    assert!(p.a.s.poll_transmit().is_none());
}

#[test]
fn silent_peer_is_declared_dead() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    let start = p.now;
    // b's frames stop reaching a (b keeps sending, a keeps hearing nothing).
    p.b.link_up = false;
    p.advance(ms(5_000));
    p.advance(ms(5_000));
    assert!(p.a.s.is_established());
    assert_eq!(p.a.s.poll_timeout(), Some(start + ms(15_000)));
    p.advance(ms(4_999));
    assert!(p.a.s.is_established());
    p.advance(ms(1));
    assert_eq!(p.a.closed_event(), Some((CloseReason::PeerDead, false)));
    assert!(
        matches!(p.a.errors[..], []),
        "timeouts report through events, not handle_frame errors"
    );
    // a's CLOSE reached b (a → b still works).
    assert_eq!(p.b.closed_event(), Some((CloseReason::PeerDead, true)));
    assert_eq!(p.a.s.stats().handshake_failure, None);
}

#[test]
fn partial_bytes_keep_a_slow_peer_alive() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    p.b.link_up = false;
    for _ in 0..10 {
        p.now += ms(5_000);
        // A large frame trickles in: the shell reports socket progress.
        p.a.s.note_received(p.now);
        p.a.s.handle_timeout(p.now);
    }
    assert!(p.a.s.is_established());
}

#[test]
fn drain_then_close() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    p.a.s.drain(p.now);
    assert_eq!(p.a.s.state(), SessionState::Draining);
    p.a.s.drain(p.now); // idempotent
    p.pump();
    assert_eq!(p.b.s.state(), SessionState::Draining);
    assert!(p.b.events.contains(&SessionEvent::Draining));
    assert_eq!(p.a.s.stats().frames_out.get(FrameKind::Drain), 1);
    // In-flight work still flows both ways while draining.
    assert!(
        p.b.s
            .handle_frame(frame(FrameKind::Data, b"late"), p.now)
            .unwrap()
            .is_some()
    );
    assert!(
        p.a.s
            .handle_frame(frame(FrameKind::Ack, b""), p.now)
            .unwrap()
            .is_some()
    );
    // Keepalives continue.
    p.advance(ms(5_000));
    assert!(p.b.s.is_established());
    // A second DRAIN from the same peer is a protocol error.
    let err =
        p.b.s
            .handle_frame(frame(FrameKind::Drain, b""), p.now)
            .unwrap_err();
    assert!(matches!(
        err,
        SessionError::UnexpectedFrame {
            kind: FrameKind::Drain,
            ..
        }
    ));
    p.pump();
    assert_eq!(
        p.a.closed_event(),
        Some((CloseReason::UnexpectedFrame, true))
    );
}

#[test]
fn drain_and_close_by_the_shell() {
    let mut p = plain_pair(config(A), config(B));
    p.pump();
    p.a.s.drain(p.now);
    p.pump();
    p.a.s.close(CloseReason::Shutdown, p.now);
    p.a.collect_events();
    assert!(p.a.s.is_closed());
    assert_eq!(p.a.closed_event(), Some((CloseReason::Shutdown, false)));
    p.pump();
    assert_eq!(p.b.closed_event(), Some((CloseReason::Shutdown, true)));
    assert!(p.b.s.is_closed());
    assert_eq!(p.b.s.poll_timeout(), None);
    assert!(p.b.s.poll_transmit().is_none(), "no reply to a CLOSE");
    // Closing twice is a no-op.
    p.a.s.close(CloseReason::Normal, p.now);
    assert!(p.a.s.poll_transmit().is_none());
    assert!(p.a.s.poll_event().is_none());
    // Draining a handshaking session closes it.
    let mut s = plain(config(A), Side::Initiator, Some(B), p.now);
    s.drain(p.now);
    assert_eq!(close_reason_sent(&mut s), CloseReason::Shutdown);
}

#[test]
fn close_during_handshake_is_the_peers_refusal() {
    let now = t0();
    let mut s = plain(config(A), Side::Initiator, Some(B), now);
    let refusal = crate::control::close_frame(
        crate::control::Addressing::default(),
        CloseReason::TooManySessions,
        None,
    );
    let f = Frame::new_checked(BytesMut::from(&refusal.to_vec()[..]), &HANDSHAKE_LIMITS).unwrap();
    assert_eq!(s.handle_frame(f, now), Ok(None));
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed {
            reason: CloseReason::TooManySessions,
            by_peer: true
        })
    );
    assert!(s.poll_transmit().is_none(), "the queued HELLO is dropped");
    assert_eq!(
        s.stats().handshake_failure,
        Some(HandshakeFailure {
            reason: CloseReason::TooManySessions,
            by_peer: true
        })
    );
}

// ----- simultaneous dial -----

#[test]
fn simultaneous_dial_keeps_the_lower_dialers_session_on_both_sides() {
    let now = t0();
    // Session 1: A dials B. Session 2: B dials A. Both complete.
    let mut s1 = Pair::new(
        plain(config(A), Side::Initiator, Some(B), now),
        plain(config(B), Side::Acceptor, None, now),
        now,
    );
    let mut s2 = Pair::new(
        plain(config(B), Side::Initiator, Some(A), now),
        plain(config(A), Side::Acceptor, None, now),
        now,
    );
    s1.pump();
    s2.pump();
    let mut table_a: SessionTable<u32> = SessionTable::new(A, 16);
    let mut table_b: SessionTable<u32> = SessionTable::new(B, 16);
    // Node A sees session 2 established first, node B sees session 1 first.
    assert_eq!(table_a.register(B, 2, s2.b.s.side()), Registration::Keep);
    let on_a = table_a.register(B, 1, s1.a.s.side());
    assert_eq!(table_b.register(A, 1, s1.b.s.side()), Registration::Keep);
    let on_b = table_b.register(A, 2, s2.a.s.side());
    assert_eq!(on_a, Registration::Replace { old: 2 });
    assert_eq!(on_b, Registration::Reject { existing: 1 });
    // Both keep session 1 (dialed by A, the lower id) and close session 2.
    assert_eq!(table_a.get(B), Some(1));
    assert_eq!(table_b.get(A), Some(1));
    s2.b.s.close(on_a.close_reason().unwrap(), now); // A's end of session 2
    s2.a.s.close(on_b.close_reason().unwrap(), now); // B's end of session 2
    s2.pump();
    assert!(s2.a.s.is_closed() && s2.b.s.is_closed());
    assert_eq!(
        s2.a.closed_event(),
        Some((CloseReason::DuplicateSession, false))
    );
    assert!(s1.a.s.is_established() && s1.b.s.is_established());
}

// ----- properties -----

/// One input to a session under test.
#[derive(Debug, Clone)]
enum Input {
    Frame(FrameKind, Vec<u8>),
    ValidHello,
    Advance(u64),
    DecodeError,
    Drain,
    Close(u16),
    NoteSent,
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (proptest::sample::select(FrameKind::ALL.to_vec()), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(k, p)| Input::Frame(k, p)),
        2 => Just(Input::ValidHello),
        3 => (0u64..8_000).prop_map(Input::Advance),
        1 => Just(Input::DecodeError),
        1 => Just(Input::Drain),
        1 => any::<u16>().prop_map(Input::Close),
        1 => Just(Input::NoteSent),
    ]
}

fn valid_hello_body(use_tls: bool) -> Vec<u8> {
    // The peer's HELLO as the peer would send it (signed over the shared binding when TLS).
    let now = t0();
    let mut peer = if use_tls {
        tls(config(B), Side::Acceptor, None, [7; 32], A, A, now)
    } else {
        plain(config(B), Side::Acceptor, None, now)
    };
    peer.poll_transmit().unwrap().payload().to_vec()
}

fn check_invariants(s: &Session, events: &[SessionEvent]) {
    let established = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Established { .. }))
        .count();
    let closed = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Closed { .. }))
        .count();
    assert!(established <= 1 && closed <= 1);
    if closed == 1 {
        assert!(matches!(events.last(), Some(SessionEvent::Closed { .. })));
        assert!(s.is_closed());
        assert_eq!(s.poll_timeout(), None);
    } else {
        assert!(!s.is_closed());
        assert!(s.poll_timeout().is_some());
    }
    if let Some(i) = events.iter().position(|e| *e == SessionEvent::Draining) {
        assert!(matches!(
            events[..i].first(),
            Some(SessionEvent::Established { .. })
        ));
    }
    assert_eq!(s.is_established(), s.peer().is_some() && !s.is_closed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_random_inputs_never_panic(
        use_tls in any::<bool>(),
        inputs in proptest::collection::vec(arb_input(), 0..40),
    ) {
        let start = t0();
        let mut now = start;
        let mut s = if use_tls {
            tls(config(A), Side::Initiator, Some(B), [7; 32], B, B, now)
        } else {
            plain(config(A), Side::Initiator, Some(B), now)
        };
        let hello = valid_hello_body(use_tls);
        let mut events = Vec::new();
        let mut sent_after_close = 0;
        for input in inputs {
            let was_closed = s.is_closed();
            match input {
                Input::Frame(kind, payload) => {
                    let r = s.handle_frame(frame(kind, &payload), now);
                    if was_closed {
                        prop_assert_eq!(r, Ok(None));
                    }
                }
                Input::ValidHello => {
                    let _ = s.handle_frame(frame(FrameKind::Hello, &hello), now);
                }
                Input::Advance(by) => {
                    now += ms(by);
                    s.handle_timeout(now);
                }
                Input::DecodeError => s.handle_decode_error(
                    &mesh_wire::DecodeError::BadMagic { found: [0, 0] },
                    now,
                ),
                Input::Drain => s.drain(now),
                Input::Close(code) => s.close(CloseReason::from_code(code), now),
                Input::NoteSent => s.note_sent(now),
            }
            while let Some(e) = s.poll_event() {
                events.push(e);
            }
            while let Some(f) = s.poll_transmit() {
                if was_closed {
                    sent_after_close += 1;
                }
                prop_assert!(f.len() <= HANDSHAKE_LIMITS.max_frame_len as usize);
            }
            check_invariants(&s, &events);
        }
        prop_assert_eq!(sent_after_close, 0);
    }

    #[test]
    fn prop_random_bytes_through_the_decoder_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        handshake_first in any::<bool>(),
    ) {
        let now = t0();
        let a = plain(config(A), Side::Initiator, Some(B), now);
        let mut end = End::new(a);
        if handshake_first {
            let mut peer = plain(config(B), Side::Acceptor, None, now);
            end.feed(&peer.poll_transmit().unwrap().to_vec(), now);
        }
        end.feed(&bytes, now);
        check_invariants(&end.s, &end.events);
    }
}
