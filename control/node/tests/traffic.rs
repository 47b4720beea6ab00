//! Application traffic through real `mesh` processes in a line A - B - C (plain TCP and TLS):
//! a native client at A sends, a native subscriber at C receives everything intact and in order,
//! large messages reassembled; garbage, oversize headers, unknown versions and hundreds of idle
//! or half-open connections against B neither disturb A -> C nor outlive the handshake
//! deadline; and after B restarts, sessions come back and traffic resumes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_client::Client;
use mesh_wire::{Envelope, Flags, FrameKind, Header, Metadata};
use zerocopy::IntoBytes;

mod common;
use common::{Node, make_certs};

fn line(certs: Option<&std::path::Path>) -> (Node, Node, Node) {
    let mut c = Node::new(3, vec![]);
    c.certs = certs.map(std::path::Path::to_path_buf);
    c.start();
    let mut b = Node::new(2, vec![c.listen]);
    b.certs.clone_from(&c.certs);
    b.start();
    let mut a = Node::new(1, vec![b.listen]);
    a.certs.clone_from(&c.certs);
    a.start();
    let t = Duration::from_secs(20);
    a.wait_metric("mesh_route_entries", 2, t);
    c.wait_metric("mesh_route_entries", 2, t);
    (a, b, c)
}

/// Sends `count` numbered messages A -> C and checks C gets each once, in order, intact.
fn exchange(a: &Node, sub: &mut Client, first: u64, count: u64) {
    exchange_via(a, &[], sub, first, count);
}

/// [`exchange`], reporting the drop counters of `nodes` if a message goes missing.
fn exchange_via(a: &Node, nodes: &[&Node], sub: &mut Client, first: u64, count: u64) {
    let mut s = a.sender();
    for i in first..first + count {
        let mut p = i.to_be_bytes().to_vec();
        p.resize(128, u8::try_from(i % 251).unwrap());
        s.send(3, 1, &p).unwrap();
    }
    s.close().unwrap();
    for i in first..first + count {
        let d = sub
            .recv(Some(Duration::from_secs(20)))
            .unwrap()
            .unwrap_or_else(|| {
                let report: Vec<String> = std::iter::once(a)
                    .chain(nodes.iter().copied())
                    .map(|n| format!("node {}: {}", n.id, n.scrape_nonzero("mesh_dropped_total")))
                    .collect();
                panic!("message {i} did not arrive; {report:?}")
            });
        assert_eq!(d.src_node, 1);
        assert_eq!(
            u64::from_be_bytes(d.payload[..8].try_into().unwrap()),
            i,
            "in order"
        );
        assert!(
            d.payload[8..].iter().all(|b| u64::from(*b) == i % 251),
            "intact"
        );
    }
}

fn big_message(a: &Node, sub: &mut Client) {
    let big: Bytes = (0..3_000_000u32)
        .map(|i| i.to_le_bytes()[0] ^ 0x5A)
        .collect::<Vec<_>>()
        .into();
    let mut s = a.sender();
    let meta = Metadata {
        corr_id: Some(77),
        ..Metadata::default()
    };
    s.send_with(3, 1, &meta, Flags::EMPTY, big.clone()).unwrap();
    s.close().unwrap();
    let d = sub
        .recv(Some(Duration::from_secs(20)))
        .unwrap()
        .expect("big message");
    assert_eq!(d.corr_id, Some(77));
    assert_eq!(d.payload.len(), big.len());
    assert!(d.payload == big, "reassembled intact");
}

fn run_line(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls.then(|| {
        make_certs(dir.path(), &[1, 2, 3]);
        dir.path()
    });
    let (mut a, mut b, mut c) = line(certs);
    let mut sub = c.subscriber();
    exchange(&a, &mut sub, 0, 20_000);
    big_message(&a, &mut sub);
    a.stop();
    b.stop();
    c.stop();
}

#[test]
fn line_plain_tcp() {
    run_line(false);
}

#[test]
fn line_tls() {
    run_line(true);
}

/// Reads from a hostile connection until the node closes it; returns how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) if t0.elapsed() > Duration::ZERO => {
                // A timeout is not a close: keep waiting unless the read was a real EOF/reset.
                match s.read(&mut buf) {
                    Ok(0) => return t0.elapsed(),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return t0.elapsed();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        assert!(
            t0.elapsed() < limit,
            "hostile connection still open after {limit:?}"
        );
    }
}

#[test]
fn hostile_connections_against_the_transit_node_change_nothing() {
    let (mut a, mut b, mut c) = line(None);
    let mut sub = c.subscriber();
    exchange(&a, &mut sub, 0, 1_000);

    let mut hostile = Vec::new();
    // Hundreds of idle connections that never send a byte, and half-open ones that send half
    // a header.
    for i in 0..300 {
        let mut conn = TcpStream::connect(b.listen).unwrap();
        if i % 2 == 0 {
            conn.write_all(&Header::new(FrameKind::Hello).as_bytes()[..20])
                .unwrap();
        }
        hostile.push(conn);
    }
    // Garbage.
    for _ in 0..20 {
        let mut conn = TcpStream::connect(b.listen).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap();
        hostile.push(conn);
    }
    // An oversize header: a 3 GiB body announced.
    let mut oversize = Header::new(FrameKind::Hello);
    oversize.body_len.set(3 << 30);
    let mut conn = TcpStream::connect(b.listen).unwrap();
    conn.write_all(oversize.as_bytes()).unwrap();
    hostile.push(conn);
    // An unknown wire version.
    let mut future = Header::new(FrameKind::Hello);
    future.version = 9;
    let mut conn = TcpStream::connect(b.listen).unwrap();
    conn.write_all(future.as_bytes()).unwrap();
    hostile.push(conn);
    // DATA before any HELLO.
    let mut env = Envelope::new(FrameKind::Data);
    env.dst_node = 3;
    let f = mesh_wire::encode_frame(
        &env,
        &[],
        Bytes::from_static(b"sneaky"),
        &mesh_wire::Limits::default(),
    )
    .unwrap()
    .to_vec();
    let mut conn = TcpStream::connect(b.listen).unwrap();
    conn.write_all(&f).unwrap();
    hostile.push(conn);

    // A -> C keeps flowing meanwhile.
    exchange_via(&a, &[&b, &c], &mut sub, 1_000, 10_000);

    // Every hostile connection is closed by B within the handshake deadline (2 s) plus slack.
    let t0 = Instant::now();
    for conn in hostile {
        closed_within(conn, Duration::from_secs(6));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t0.elapsed()
    );
    // Each was either refused at admission (the half-open cap is 256) or closed when its
    // handshake failed or timed out.
    let failed = b.metric("mesh_handshake_failures_total").unwrap();
    let refused = b.metric("mesh_admission_refused_total").unwrap();
    assert!(
        failed + refused >= 323,
        "failed {failed}, refused {refused}"
    );
    assert!(refused > 0, "the half-open cap was reached");
    assert_eq!(
        b.metric("mesh_sessions_open"),
        Some(2),
        "only A and C remain"
    );

    // Restart B: sessions come back by themselves and traffic resumes.
    b.stop();
    b.start();
    a.wait_metric("mesh_route_entries", 2, Duration::from_secs(20));
    c.wait_metric("mesh_route_entries", 2, Duration::from_secs(20));
    exchange(&a, &mut sub, 11_000, 1_000);
    a.stop();
    b.stop();
    c.stop();
}

#[test]
fn a_client_that_only_sends_stays_alive_across_keepalives() {
    // Keepalive 200 ms: a peer that reads nothing is dead after 600 ms. The sender never calls
    // `recv`; `flush` must still take in the node's keepalives. (The subscriber sits in `recv`
    // in its own thread, as subscribers do.)
    let mut a = Node::new(1, vec![]);
    a.keepalive_ms = 200;
    a.start();
    // The metrics endpoint answers once the data plane listens.
    a.wait_metric("mesh_sessions_open", 0, Duration::from_secs(10));
    let mut sub = a.subscriber();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        while let Ok(Some(d)) = sub.recv(Some(Duration::from_secs(5))) {
            if tx
                .send(u64::from_be_bytes(d.payload[..8].try_into().unwrap()))
                .is_err()
            {
                break;
            }
        }
    });
    let mut s = a.sender();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_millis(1500) {
        s.send(1, 0, &sent.to_be_bytes()).unwrap();
        s.flush().unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    s.close().unwrap();
    for i in 0..sent {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    drop(rx);
    a.stop();
    let _ = reader.join();
}
