//! In-process sessions (`EngineHandle::open_local`, the gRPC gateway's way in): a native
//! client completes its handshake with the core over one, as over TCP; a node cannot pose as a
//! peer over one; closing the client's end ends the session at the core.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_engine::{
    CoreMetrics, EngineConfig, EngineHandle, LocalStream, RouteSnapshot, StaticRoutes, start,
};
use mesh_session::{ChannelSecurity, Role, Session, SessionConfig, SessionEvent, Side};
use mesh_wire::{CloseReason, Decoder};

fn engine(id: u64) -> EngineHandle {
    let cfg = EngineConfig::new(id, 1, "127.0.0.1:0".parse().unwrap());
    start(cfg, &(Arc::new(StaticRoutes::new(1, 1)) as RouteSnapshot)).unwrap()
}

fn session(role: Role, id: u64) -> Session {
    let mut cfg = SessionConfig::new(id, 1);
    cfg.role = role;
    Session::new(
        cfg,
        Side::Initiator,
        None,
        ChannelSecurity::Plain,
        [7u8; 32],
        Instant::now(),
    )
    .unwrap()
}

/// Drives `s` over `stream` until it is established (`Ok`, unless `past_established`) or
/// closed (`Err` with the reason; `None`: the stream ended first).
fn drive(
    s: &mut Session,
    stream: &LocalStream,
    past_established: bool,
) -> Result<(), Option<CloseReason>> {
    let mut decoder = Decoder::new(s.decoder_limits());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut out = Vec::new();
        while let Some(f) = s.poll_transmit() {
            f.write_to(&mut out);
        }
        if !out.is_empty() {
            stream.writer.push(Bytes::from(out)).unwrap();
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                SessionEvent::Established { .. } if !past_established => return Ok(()),
                SessionEvent::Closed { reason, .. } => return Err(Some(reason)),
                SessionEvent::Established { .. } | SessionEvent::Draining => {}
            }
        }
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match stream.reader.poll_read(&mut cx, decoder.read_buf()) {
            Poll::Ready(Ok(0)) => return Err(None),
            Poll::Ready(Ok(n)) => {
                decoder.commit(n);
                while let Ok(Some(frame)) = decoder.poll_frame() {
                    let _ = s.handle_frame(frame, Instant::now());
                }
            }
            Poll::Ready(Err(e)) => panic!("read: {e}"),
            Poll::Pending => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    panic!("no handshake outcome in 10 s");
}

fn sessions_open(h: &EngineHandle) -> u64 {
    h.metrics()
        .iter()
        .map(|m| CoreMetrics::get(&m.sessions_open))
        .sum()
}

fn wait_open(h: &EngineHandle, n: u64) {
    let t0 = Instant::now();
    while sessions_open(h) != n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sessions open: {} (want {n})",
            sessions_open(h)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_client_completes_its_handshake_over_an_in_process_stream() {
    let h = engine(1);
    let stream = h.open_local(0).unwrap();
    let mut s = session(Role::Client, 77);
    assert_eq!(drive(&mut s, &stream, false), Ok(()));
    wait_open(&h, 1);
    // The client goes away: the core ends the session.
    drop(stream);
    wait_open(&h, 0);
    h.shutdown();
}

#[test]
fn a_node_cannot_pose_as_a_peer_over_an_in_process_stream() {
    let h = engine(1);
    let stream = h.open_local(0).unwrap();
    let mut s = session(Role::Node, 2);
    // Refused once it said who it is, as a plain-TCP node is under `--require-tls`.
    assert_eq!(
        drive(&mut s, &stream, true),
        Err(Some(CloseReason::TlsRequired))
    );
    wait_open(&h, 0);
    h.shutdown();
}
