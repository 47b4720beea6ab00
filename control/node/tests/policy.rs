//! SetPolicy in the data plane (SPEC §2 policy, issue 5): on a line A -> B -> C with gRPC on A,
//!
//! - a deny of C makes A's messages to C fail (FAILED, DENIED_BY_POLICY counted) while
//!   messages to B still go;
//! - a rate limit on C (40 msgs/s, burst 5) spreads 85 messages over at least two seconds,
//!   back-pressuring the client (each still arrives once), and A counts the waits;
//! - a policy without the limit lets messages go without waiting.

use std::time::{Duration, Instant};

use mesh_client::{Client, ClientOptions, status};
use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_control_client::MeshControlClient;

mod common;
use common::Node;

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;

fn set_policy(rt: &tokio::runtime::Runtime, url: &str, policy: pb::Policy) {
    rt.block_on(async {
        let t0 = Instant::now();
        let mut c = loop {
            match MeshControlClient::connect(url.to_owned()).await {
                Ok(c) => break c,
                Err(e) => assert!(t0.elapsed() < Duration::from_secs(20), "{url}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        c.set_policy(pb::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("the policy is accepted");
    });
}

/// Sends `n` messages to `dst` and waits until each has the receipt `want`; returns how long.
fn send_and_wait(client: &mut Client, dst: u64, n: usize, want: u16) -> Duration {
    let t0 = Instant::now();
    let mut seqs = std::collections::HashSet::new();
    for i in 0..n {
        seqs.insert(client.send(dst, 0, format!("m{i}").as_bytes()).unwrap());
    }
    while !seqs.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} receipts {want} missing",
            seqs.len()
        );
        for r in client.wait_receipts(Duration::from_millis(100)).unwrap() {
            if r.status == want {
                seqs.remove(&r.seq);
            }
        }
    }
    t0.elapsed()
}

#[test]
fn deny_and_rate_limits_apply_to_what_the_node_sends() {
    let mut c = Node::new(C, vec![]);
    let mut b = Node::new(B, vec![c.listen]);
    let mut a = Node::new(A, vec![b.listen]);
    let url = a.with_grpc();
    c.start();
    b.start();
    a.start();
    for n in [&a, &b, &c] {
        n.wait_metric("mesh_route_entries", 2, Duration::from_secs(20));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sub = Client::connect(
        c.listen,
        ClientOptions {
            subscribe: true,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut client = Client::connect(a.listen, ClientOptions::default()).unwrap();

    // Deny C: messages to it fail; B is still reachable.
    set_policy(
        &rt,
        &url,
        pb::Policy {
            version: 1,
            deny: Some(pb::DestinationSet {
                nodes: vec![C],
                domains: vec![],
            }),
            ..pb::Policy::default()
        },
    );
    let t0 = Instant::now();
    loop {
        // The policy applies at A's next route computation: probe until it does.
        let seq = client.send(C, 0, b"probe").unwrap();
        let failed = loop {
            let got = client.wait_receipts(Duration::from_millis(200)).unwrap();
            if let Some(r) = got
                .iter()
                .find(|r| r.seq == seq && matches!(r.status, status::FAILED | status::DELIVERED))
            {
                break r.status == status::FAILED;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no answer to a probe"
            );
        };
        if failed {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the deny never applied"
        );
    }
    send_and_wait(&mut client, C, 10, status::FAILED);
    send_and_wait(&mut client, B, 10, status::DELIVERED);
    assert!(
        a.scrape_nonzero("mesh_dropped_total")
            .contains("denied_by_policy")
    );
    // Drain what reached C before the deny applied.
    while sub
        .recv(Some(Duration::from_millis(300)))
        .unwrap()
        .is_some()
    {}

    // A rate limit on C: 80 messages past the burst of 5 at 40/s take two seconds.
    set_policy(
        &rt,
        &url,
        pb::Policy {
            version: 2,
            rate_limits: vec![pb::RateLimit {
                scope: Some(pb::rate_limit::Scope::DstNode(C)),
                msgs_per_sec: 40,
                burst: 5,
            }],
            ..pb::Policy::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let took = send_and_wait(&mut client, C, 85, status::PERSISTED);
    assert!(
        took >= Duration::from_millis(1800),
        "85 messages at 40/s (burst 5) went in {took:?}"
    );
    let waits = a.metric("mesh_rate_limited_total").unwrap();
    assert!(waits > 0);
    let mut got = 0;
    while got < 85 {
        let d = sub
            .recv(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("every limited message arrives");
        sub.ack(d.src_node, d.msg_id, true).unwrap();
        got += 1;
    }
    eprintln!("85 messages at 40/s, burst 5: {took:?}, {waits} waits");

    // Without the limit nothing waits.
    set_policy(
        &rt,
        &url,
        pb::Policy {
            version: 3,
            ..pb::Policy::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    send_and_wait(&mut client, C, 200, status::PERSISTED);
    assert_eq!(a.metric("mesh_rate_limited_total"), Some(waits));
    let _ = client.close();
}
