//! The line A - B - C with TLS on every link (TLS 1.3, X25519MLKEM768, mutual authentication,
//! ML-DSA-65 HELLO signatures): frames still arrive intact and in order; every session is
//! authenticated; a node whose certificate comes from another CA gets no session.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_engine::{
    CoreMetrics, EngineConfig, EngineEvent, EngineHandle, RouteSnapshot, StaticRoutes, TlsContext,
    start,
};
use mesh_tls::{CertificateAuthority, MeshTlsConfig, NodeIdentity, Validity, generate_node};
use mesh_wire::{Envelope, FrameKind, Limits, encode_frame};

fn identity(ca: &CertificateAuthority, id: u64) -> TlsContext {
    let (issued, mldsa) = generate_node(
        ca,
        NonZeroU64::new(id).unwrap(),
        &["localhost".to_owned()],
        Validity::node_default(),
    )
    .unwrap();
    let identity = NodeIdentity::new(
        issued.certificate.clone(),
        issued.private_key.clone_key().into(),
        mldsa,
    )
    .unwrap();
    TlsContext {
        config: MeshTlsConfig::new(&identity, ca.certificate()).unwrap(),
        identity: Arc::new(identity),
    }
}

fn node(id: u64, tls: TlsContext, connect: Vec<SocketAddr>, routes: StaticRoutes) -> EngineHandle {
    let mut cfg = EngineConfig::new(id, 1, "127.0.0.1:0".parse().unwrap());
    cfg.connect = connect;
    cfg.tls = Some(tls);
    // Routing and forwarding under test: deliveries go to the control side as they arrive.
    cfg.delivery.mode = mesh_engine::DeliveryMode::Raw;
    cfg.require_tls = true;
    start(cfg, &(Arc::new(routes) as RouteSnapshot)).unwrap()
}

fn next_event(h: &EngineHandle, deadline: Instant) -> Option<EngineEvent> {
    while Instant::now() < deadline {
        if let Some(ev) = h.events().try_recv() {
            return Some(ev);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn wait_peer(h: &EngineHandle, peer: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(ev) = next_event(h, deadline) {
        if let EngineEvent::PeerUp { peer: p, .. } = ev
            && p.node_id == peer
        {
            assert!(p.authenticated, "TLS sessions are authenticated");
            return;
        }
    }
    panic!("peer {peer} never came up");
}

#[test]
fn tls_line_carries_frames_and_refuses_a_foreign_ca() {
    let ca = CertificateAuthority::generate("mesh test CA", Validity::ca_default()).unwrap();
    let c = node(
        3,
        identity(&ca, 3),
        vec![],
        StaticRoutes::new(1, 1)
            .with_node_route(1, 2)
            .with_node_route(2, 2),
    );
    let b = node(
        2,
        identity(&ca, 2),
        vec![c.local_addr()],
        StaticRoutes::new(1, 1)
            .with_node_route(1, 1)
            .with_node_route(3, 3),
    );
    let a = node(
        1,
        identity(&ca, 1),
        vec![b.local_addr()],
        StaticRoutes::new(1, 1)
            .with_node_route(3, 2)
            .with_node_route(2, 2),
    );
    wait_peer(&a, 2);
    wait_peer(&c, 2);

    for i in 0..2_000u64 {
        let mut env = Envelope::new(FrameKind::Data);
        env.src_node = 1;
        env.dst_node = 3;
        env.dst_domain = 1;
        env.src_domain = 1;
        env.msg_id = i;
        let mut f = encode_frame(
            &env,
            &[],
            Bytes::from(vec![u8::try_from(i % 256).unwrap(); 1000]),
            &Limits::default(),
        )
        .unwrap();
        while let Err(mesh_engine::SubmitError::Busy(back)) = a.submit(f) {
            f = back;
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < 2_000 {
        match next_event(&c, deadline) {
            Some(EngineEvent::Deliver(f)) => {
                assert_eq!(f.envelope().msg_id, next);
                assert!(f.payload().iter().all(|b| u64::from(*b) == next % 256));
                next += 1;
            }
            Some(_) => {}
            None => panic!("only {next} frames arrived"),
        }
    }

    // A node with a certificate from another CA cannot join B.
    let rogue_ca = CertificateAuthority::generate("rogue CA", Validity::ca_default()).unwrap();
    let rogue = node(
        9,
        identity(&rogue_ca, 9),
        vec![b.local_addr()],
        StaticRoutes::new(1, 1),
    );
    let t0 = Instant::now();
    while CoreMetrics::get(&b.metrics()[0].handshake_failures) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "B never refused the rogue node"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        CoreMetrics::get(&rogue.metrics()[0].sessions_established),
        0
    );
    assert_eq!(CoreMetrics::get(&b.metrics()[0].sessions_established), 2);
    rogue.shutdown();
    a.shutdown();
    b.shutdown();
    c.shutdown();
}
