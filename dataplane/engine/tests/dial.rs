//! Two nodes that dial each other at once end with one session (the one dialed by the lower
//! node id, on both sides), and the loser's dialer does not churn.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_engine::{CoreMetrics, EngineConfig, EngineHandle, RouteSnapshot, StaticRoutes, start};

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn node(id: u64, listen: std::net::SocketAddr, peer: std::net::SocketAddr) -> EngineHandle {
    let mut cfg = EngineConfig::new(id, 1, listen);
    cfg.connect = vec![peer];
    start(cfg, &(Arc::new(StaticRoutes::new(1, 1)) as RouteSnapshot)).unwrap()
}

fn open(h: &EngineHandle) -> u64 {
    h.metrics()
        .iter()
        .map(|m| CoreMetrics::get(&m.sessions_open))
        .sum()
}

#[test]
fn simultaneous_dials_end_with_one_session() {
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let a = node(1, addr_a, addr_b);
    let b = node(2, addr_b, addr_a);
    // Wait until each side holds exactly one session and stays there.
    let t0 = Instant::now();
    let mut stable_since = None;
    loop {
        let one = open(&a) == 1 && open(&b) == 1;
        match (one, stable_since) {
            (true, None) => stable_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() > Duration::from_millis(1500) => break,
            (false, _) => stable_since = None,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sessions open: A {}, B {}",
            open(&a),
            open(&b)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // No churn: the loser's dialer waits while the kept session lives.
    let est_a = CoreMetrics::get(&a.metrics()[0].sessions_established);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        CoreMetrics::get(&a.metrics()[0].sessions_established),
        est_a
    );
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_port_held_by_another_process_is_refused_not_shared() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let err = start(
        EngineConfig::new(1, 1, addr),
        &(Arc::new(StaticRoutes::new(1, 1)) as RouteSnapshot),
    )
    .unwrap_err();
    assert!(
        matches!(err, mesh_engine::EngineError::Listen { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("another process is listening"),
        "{err}"
    );
}
