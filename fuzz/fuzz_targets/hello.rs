//! Fuzzes what an unauthenticated peer sends first: HELLO decoding and the handshake state
//! machine behind it (SPEC §6).
//!
//! 1. The input as a HELLO body: never a panic, and whatever decodes re-encodes to a HELLO that
//!    decodes to the same fields.
//! 2. The same body in a HELLO frame from a peer, to a fresh `Session` on plain TCP and on TLS
//!    (the test double of the ML-DSA crypto).
//! 3. The input as a byte stream from the peer (its first byte picks side, TLS, an expected
//!    peer, whether clients are accepted, `require_tls`, whether a valid HELLO from a real peer
//!    session goes first, and how the stream is cut into reads), fed through the decoder to a
//!    session with simulated time — HELLO sequences, frames before and after the handshake,
//!    second HELLOs, DRAIN, CLOSE, garbage.
//!
//! Checked on every step: no panic; at most one `Established`, never after `Closed`; an
//! established peer is never this node, never 0, is the certificate's node over TLS (and then
//! authenticated), is the dialed node when one was expected, and a client only when clients are
//! accepted; nothing is established on plain TCP under `require_tls`; every frame the session
//! transmits decodes; nothing is transmitted after the CLOSE; and once the handshake deadline
//! passed the session is established or closed, never still handshaking.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mesh_session::control::{Addressing, hello_frame};
use mesh_session::hello::Role;
use mesh_session::testing::TestCrypto;
use mesh_session::{
    ChannelSecurity, Hello, Session, SessionConfig, SessionEvent, SessionState, Side,
};
use mesh_wire::{Decoder, Limits};

/// This node.
const LOCAL: u64 = 3;
/// The node whose certificate the TLS peer presents (and that a real peer session claims).
const PEER: u64 = 9;
const LOCAL_KEY: u64 = 0x1111;
const PEER_KEY: u64 = 0x2222;
const BINDING: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    decode_roundtrip(data);
    hello_body(data);
    stream(data);
});

fn decode_roundtrip(data: &[u8]) {
    if let Ok(d) = Hello::decode(data) {
        if let Ok(bytes) = d.hello.encode(&d.signature) {
            let again = Hello::decode(&bytes).expect("a re-encoded HELLO decodes");
            assert_eq!(again.hello, d.hello);
        }
    }
}

/// What the local session is told about its channel and peer.
#[derive(Clone, Copy)]
struct Setup {
    side: Side,
    tls: bool,
    expected: Option<u64>,
    accept_clients: bool,
    require_tls: bool,
}

impl Setup {
    fn security(self, own_key: u64, peer: u64, peer_key: u64) -> ChannelSecurity {
        if self.tls {
            TestCrypto::tls(own_key, BINDING, TestCrypto::credentials(peer, peer_key))
        } else {
            ChannelSecurity::Plain
        }
    }

    fn session(self, t0: Instant) -> Session {
        let mut cfg = SessionConfig::new(LOCAL, 1);
        cfg.accept_clients = self.accept_clients;
        cfg.require_tls = self.require_tls;
        let security = self.security(LOCAL_KEY, PEER, PEER_KEY);
        Session::new(cfg, self.side, self.expected, security, [1; 32], t0).expect("valid config")
    }

    /// The HELLO a real peer session sends on this channel (signed over TLS).
    fn peer_hello(self, t0: Instant) -> Vec<u8> {
        let cfg = SessionConfig::new(PEER, 2);
        let security = self.security(PEER_KEY, LOCAL, LOCAL_KEY);
        let mut p = Session::new(cfg, self.side.opposite(), None, security, [2; 32], t0)
            .expect("valid config");
        let mut out = Vec::new();
        while let Some(f) = p.poll_transmit() {
            out.extend_from_slice(&f.to_vec());
        }
        out
    }
}

/// Watches a session's outputs for the invariants above.
struct Watch {
    setup: Setup,
    established: bool,
    closed: bool,
}

impl Watch {
    fn new(setup: Setup) -> Self {
        Watch {
            setup,
            established: false,
            closed: false,
        }
    }

    fn drain(&mut self, s: &mut Session) {
        let was_closed = self.closed;
        let mut sent = 0;
        while let Some(f) = s.poll_transmit() {
            assert!(!was_closed, "a frame transmitted after the CLOSE");
            sent += 1;
            assert!(sent <= 4, "more frames queued than the session's bound");
            let bytes = f.to_vec();
            let mut d = Decoder::new(Limits::default());
            d.handle_bytes(&bytes);
            let frame = d
                .poll_frame()
                .expect("our frame decodes")
                .expect("a whole frame");
            assert_eq!(frame.len(), bytes.len());
        }
        while let Some(ev) = s.poll_event() {
            assert!(!self.closed, "an event after Closed: {ev:?}");
            match ev {
                SessionEvent::Established { peer } => {
                    assert!(!self.established, "established twice");
                    self.established = true;
                    assert_ne!(peer.node_id, 0);
                    assert_ne!(peer.node_id, LOCAL, "a session with itself");
                    if self.setup.tls {
                        assert_eq!(
                            peer.node_id, PEER,
                            "HELLO id differs from the certificate's"
                        );
                        assert!(peer.authenticated);
                    } else {
                        assert!(!peer.authenticated);
                        assert!(!self.setup.require_tls, "plain session under require_tls");
                    }
                    if let Some(e) = self.setup.expected {
                        assert_eq!(peer.node_id, e, "not the node dialed");
                    }
                    assert!(peer.role == Role::Node || self.setup.accept_clients);
                }
                SessionEvent::Draining => assert!(self.established),
                SessionEvent::Closed { .. } => self.closed = true,
            }
        }
        assert_eq!(s.is_closed(), self.closed);
    }
}

/// Feeds `input` to the session in reads of `chunk` bytes, 50 ms apart, then lets time run out.
fn run(setup: Setup, input: &[u8], chunk: usize) {
    let t0 = Instant::now();
    let mut s = setup.session(t0);
    let deadline = t0 + s.config().handshake_timeout;
    let mut w = Watch::new(setup);
    w.drain(&mut s);
    let mut dec = Decoder::new(s.decoder_limits());
    let mut now = t0;
    'reads: for piece in input.chunks(chunk.max(1)) {
        now += Duration::from_millis(50);
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
            w.drain(&mut s);
        }
        dec.handle_bytes(piece);
        loop {
            match dec.poll_frame() {
                Ok(Some(f)) => {
                    let _ = s.handle_frame(f, now);
                    dec.set_limits(s.decoder_limits());
                    w.drain(&mut s);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.close_reason();
                    s.handle_decode_error(&e, now);
                    w.drain(&mut s);
                    break 'reads;
                }
            }
        }
    }
    // The handshake deadline: established or closed by then, whatever the peer did.
    s.handle_timeout(deadline.max(now));
    w.drain(&mut s);
    assert_ne!(
        s.state(),
        SessionState::Handshaking,
        "handshaking past the deadline"
    );
    // A peer silent for an hour is dead.
    s.handle_timeout(now + Duration::from_secs(3600));
    w.drain(&mut s);
    assert!(s.is_closed(), "a silent peer outlived the dead-peer limit");
    assert!(s.poll_timeout().is_none());
}

fn hello_body(data: &[u8]) {
    let a = Addressing {
        src_node: PEER,
        src_domain: 2,
        dst_node: 0,
        dst_domain: 0,
    };
    let Ok(frame) = hello_frame(a, data.to_vec()) else {
        return;
    };
    let bytes = frame.to_vec();
    for tls in [false, true] {
        let setup = Setup {
            side: Side::Acceptor,
            tls,
            expected: None,
            accept_clients: true,
            require_tls: false,
        };
        run(setup, &bytes, usize::MAX);
    }
}

fn stream(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let setup = Setup {
        side: if mode & 1 == 0 {
            Side::Acceptor
        } else {
            Side::Initiator
        },
        tls: mode & 2 != 0,
        expected: (mode & 4 != 0).then_some(PEER),
        accept_clients: mode & 8 != 0,
        require_tls: mode & 16 != 0,
    };
    let mut input = Vec::new();
    if mode & 32 != 0 {
        input = setup.peer_hello(Instant::now());
    }
    input.extend_from_slice(rest);
    let chunk = [1, 7, 64, usize::MAX][usize::from(mode >> 6)];
    run(setup, &input, chunk);
}
