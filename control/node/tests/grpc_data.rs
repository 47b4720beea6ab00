//! The MeshData gRPC service of real `mesh` processes, through a tonic client, on a line
//! A -> B -> C with gRPC on A (the producer's node) and C (the consumer's):
//!
//! - Send in each mode answers at the right moment (PERSISTED, DELIVERED, ACK_SUCCESS) with the
//!   msg_id; Subscribe on C receives payload, corr_id, headers and class unchanged, within its
//!   credits; acks on the stream and by the Ack call reach the origin; GetStatus reports each
//!   message's place on the ladder; an idempotency key answers a retry with the first msg_id;
//!   SendStream answers every request by position, a bad one with FAILED and the stream goes on;
//!   every bad request is INVALID_ARGUMENT naming the field and the node keeps serving.
//! - Kill C under a running Subscribe: the stream ends with an error; after C's restart a new
//!   Subscribe receives what was not yet acked, each message once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_data_client::MeshDataClient;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::Node;

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;
const WITHIN: Duration = Duration::from_secs(20);

/// Streams `reqs` over one SendStream and takes every answer, by position, with when it came
/// (from the call); the stream must end within [`WITHIN`].
async fn stream_answers(
    pa: &mut MeshDataClient<Channel>,
    reqs: Vec<pb::SendRequest>,
) -> HashMap<u64, (pb::SendResponse, Duration)> {
    let t0 = Instant::now();
    let mut out = pa
        .send_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut by_pos = HashMap::new();
    let all = async {
        while let Some(r) = out.message().await.unwrap() {
            by_pos.insert(r.position, (r, t0.elapsed()));
        }
    };
    assert!(
        tokio::time::timeout(WITHIN, all).await.is_ok(),
        "every request answered"
    );
    by_pos
}

async fn connect(url: &str) -> MeshDataClient<Channel> {
    let t0 = Instant::now();
    loop {
        match MeshDataClient::connect(url.to_owned()).await {
            Ok(c) => {
                return c
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
            }
            Err(e) => assert!(t0.elapsed() < WITHIN, "{url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn line() -> (Node, Node, Node, String, String) {
    let mut c = Node::new(C, vec![]);
    let mut b = Node::new(B, vec![c.listen]);
    let mut a = Node::new(A, vec![b.listen]);
    let url_a = a.with_grpc();
    let url_c = c.with_grpc();
    c.start();
    b.start();
    a.start();
    for n in [&a, &b, &c] {
        n.wait_metric("mesh_route_entries", 2, WITHIN);
    }
    (a, b, c, url_a, url_c)
}

fn request(payload: &str) -> pb::SendRequest {
    pb::SendRequest {
        dst_node: C,
        payload: payload.as_bytes().to_vec().into(),
        ..pb::SendRequest::default()
    }
}

/// A Subscribe stream: its Received messages, and the sender for credits and acks.
struct Sub {
    tx: tokio::sync::mpsc::Sender<pb::SubscribeRequest>,
    rx: tonic::Streaming<pb::Received>,
}

impl Sub {
    async fn start(client: &mut MeshDataClient<Channel>, credits: u32) -> Sub {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tx.send(pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
                src_node: None,
                class: None,
                initial_credits: credits,
            })),
        })
        .await
        .unwrap();
        let rx = client
            .subscribe(tokio_stream_from(rx))
            .await
            .expect("Subscribe starts")
            .into_inner();
        Sub { tx, rx }
    }

    async fn next(&mut self, within: Duration) -> Option<pb::Received> {
        match tokio::time::timeout(within, self.rx.message()).await {
            Ok(Ok(m)) => m,
            Ok(Err(s)) => panic!("Subscribe failed: {s}"),
            Err(_) => None,
        }
    }

    async fn ack(&self, m: &pb::Received) {
        self.tx
            .send(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Ack(pb::AckRequest {
                    src_node: m.src_node,
                    msg_id: m.msg_id,
                    success: true,
                    message: String::new(),
                })),
            })
            .await
            .unwrap();
    }

    async fn credits(&self, n: u32) {
        self.tx
            .send(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Credits(n)),
            })
            .await
            .unwrap();
    }
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<pb::SubscribeRequest>,
) -> impl tokio_stream::Stream<Item = pb::SubscribeRequest> {
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::many_single_char_names, reason = "one long scenario")]
async fn every_mesh_data_call_over_a_line() {
    let (a, _b, _c, url_a, url_c) = line();
    let mut pa = connect(&url_a).await;
    let mut pc = connect(&url_c).await;

    // FIRE_AND_FORGET answers once persisted; the subscriber sees the message unchanged.
    let mut sub = Sub::start(&mut pc, 2).await;
    let mut first = request("first");
    first.corr_id = 42;
    first.class = 7;
    first.headers.insert("k".into(), b"v".to_vec().into());
    let r = pa.send(first).await.unwrap().into_inner();
    assert_eq!(r.status, pb::MessageStatus::Persisted as i32, "{r:?}");
    assert_ne!(r.msg_id, 0);
    let first_id = r.msg_id;
    let m = sub.next(WITHIN).await.expect("the message arrives");
    assert_eq!((m.src_node, m.dst_node, m.msg_id), (A, C, first_id));
    assert_eq!(&m.payload[..], b"first");
    assert_eq!((m.corr_id, m.class, m.delivery_attempt), (42, 7, 1));
    assert_eq!(m.headers.get("k").map(|v| &v[..]), Some(&b"v"[..]));
    assert!(!m.require_ack);

    // WAIT_FOR_DELIVERY answers once C stored it.
    let mut d = request("delivered");
    d.mode = pb::SendMode::WaitForDelivery as i32;
    let r = pa.send(d).await.unwrap().into_inner();
    assert_eq!(r.status, pb::MessageStatus::Delivered as i32, "{r:?}");
    let m = sub.next(WITHIN).await.expect("the second message arrives");
    assert_eq!(&m.payload[..], b"delivered");

    // Credits: none left, so the next message waits until more are granted.
    let mut w = request("acked");
    w.require_ack = true;
    w.mode = pb::SendMode::WaitForAck as i32;
    let mut pa2 = pa.clone();
    let waiting = tokio::spawn(async move { pa2.send(w).await });
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "no credit, no delivery"
    );
    sub.credits(5).await;
    let m = sub.next(WITHIN).await.expect("delivered after credits");
    assert!(m.require_ack);
    // WAIT_FOR_ACK answers once the application acked.
    assert!(!waiting.is_finished());
    sub.ack(&m).await;
    let r = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(r.status, pb::MessageStatus::AckSuccess as i32, "{r:?}");
    let acked_id = r.msg_id;

    // The Ack call: unknown message → NOT_FOUND; a held one → OK, twice.
    let e = pc
        .ack(pb::AckRequest {
            src_node: A,
            msg_id: 12345,
            success: true,
            message: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let mut r2 = request("acked by call");
    r2.require_ack = true;
    let sent = pa.send(r2).await.unwrap().into_inner();
    let m = sub.next(WITHIN).await.expect("arrives");
    assert_eq!(m.msg_id, sent.msg_id);
    for _ in 0..2 {
        pc.ack(pb::AckRequest {
            src_node: m.src_node,
            msg_id: m.msg_id,
            success: false,
            message: "no thanks".into(),
        })
        .await
        .expect("Ack succeeds, and again");
    }

    // GetStatus: the ladder as the origin sees it.
    let t0 = Instant::now();
    let entries = loop {
        let s = pa
            .get_status(pb::GetStatusRequest {
                msg_ids: vec![first_id, acked_id, sent.msg_id, 999],
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        if s[2].status == pb::MessageStatus::AckFailure as i32 || t0.elapsed() > WITHIN {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entries.len(), 4);
    assert!(entries[0].found && entries[0].status == pb::MessageStatus::Delivered as i32);
    assert_eq!(entries[1].status, pb::MessageStatus::AckSuccess as i32);
    assert_eq!(entries[2].status, pb::MessageStatus::AckFailure as i32);
    assert!(entries[0].updated_at.is_some());
    assert!(!entries[3].found, "an id the node never gave");

    // Idempotency: a retried Send gets the first msg_id and sends nothing.
    let mut k = request("once");
    k.idempotency_key = "order-7".into();
    let r1 = pa.send(k.clone()).await.unwrap().into_inner();
    let r2 = pa.send(k).await.unwrap().into_inner();
    assert!(!r1.duplicate && r2.duplicate, "{r1:?} {r2:?}");
    assert_eq!(r1.msg_id, r2.msg_id);
    let m = sub.next(WITHIN).await.expect("arrives once");
    assert_eq!(&m.payload[..], b"once");
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "and only once"
    );

    // SendStream: 300 requests, one of them bad; every one answered by position.
    let reqs: Vec<pb::SendRequest> = (0..300)
        .map(|i| {
            let mut r = request(&format!("s{i}"));
            if i == 150 {
                r.dst_node = 0;
            }
            r
        })
        .collect();
    let by_pos = stream_answers(&mut pa, reqs).await;
    assert_eq!(by_pos.len(), 300);
    let (bad, _) = &by_pos[&150];
    assert_eq!(bad.status, pb::MessageStatus::Failed as i32);
    assert_eq!(bad.failure_reason, pb::FailureReason::InvalidRequest as i32);
    assert!(bad.status_message.contains("dst_node"), "{bad:?}");
    assert!(
        by_pos
            .iter()
            .filter(|(p, _)| **p != 150)
            .all(|(_, (r, _))| r.status == pb::MessageStatus::Persisted as i32 && r.msg_id != 0)
    );
    sub.credits(1000).await;
    let mut got = 0;
    while let Some(m) = sub.next(Duration::from_secs(5)).await {
        assert!(m.payload.starts_with(b"s"));
        got += 1;
        if got == 299 {
            break;
        }
    }
    assert_eq!(got, 299, "every good SendStream message arrived");

    // Bad requests: INVALID_ARGUMENT naming the field; the node keeps serving.
    let cases: Vec<(&str, pb::SendRequest)> = vec![
        ("dst_node", pb::SendRequest::default()),
        ("payload", {
            let mut r = request("");
            r.payload = vec![0u8; (16 << 20) + 1].into();
            r
        }),
        ("headers", {
            let mut r = request("x");
            r.headers.insert("mesh-trace".into(), b"1".to_vec().into());
            r
        }),
        ("idempotency_key", {
            let mut r = request("x");
            r.idempotency_key = "k".repeat(129);
            r
        }),
        ("ttl", {
            let mut r = request("x");
            r.ttl = 256;
            r
        }),
        ("class", {
            let mut r = request("x");
            r.class = 300;
            r
        }),
        ("mode", {
            let mut r = request("x");
            r.mode = pb::SendMode::WaitForAck as i32;
            r
        }),
        ("mode", {
            let mut r = request("x");
            r.mode = 9;
            r
        }),
    ];
    for (field, req) in cases {
        let e = pa.send(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    let e = pa
        .get_status(pb::GetStatusRequest {
            msg_ids: vec![1; 1025],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let r = pa
        .send(request("still serving"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::MessageStatus::Persisted as i32);
    assert!(
        a.scrape_nonzero("mesh_grpc_requests_total")
            .contains("MeshData/Send")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_its_node_die_and_gets_the_unacked_after_the_restart() {
    let (_a, _b, mut c, url_a, url_c) = line();
    let mut pa = connect(&url_a).await;
    let mut pc = connect(&url_c).await;
    let mut sub = Sub::start(&mut pc, 100).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut r = request(&format!("m{i}"));
        r.require_ack = true;
        r.mode = pb::SendMode::WaitForDelivery as i32;
        let resp = pa.send(r).await.unwrap().into_inner();
        assert_eq!(resp.status, pb::MessageStatus::Delivered as i32);
        ids.push(resp.msg_id);
    }
    // Ack the first 10 only.
    let mut seen = HashMap::new();
    while seen.len() < 20 {
        let m = sub.next(WITHIN).await.expect("all 20 arrive");
        let n: usize = std::str::from_utf8(&m.payload[1..])
            .unwrap()
            .parse()
            .unwrap();
        if n < 10 {
            sub.ack(&m).await;
        }
        seen.insert(n, m.msg_id);
    }
    // Let the acks reach C, then kill it under the running stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill();
    let ended = tokio::time::timeout(WITHIN, async {
        loop {
            match sub.rx.message().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends when its node dies");
    c.start();
    let mut pc = connect(&url_c).await;
    let mut again = Sub::start(&mut pc, 100).await;
    let mut redelivered = HashMap::new();
    while let Some(m) = again.next(Duration::from_secs(5)).await {
        let n: usize = std::str::from_utf8(&m.payload[1..])
            .unwrap()
            .parse()
            .unwrap();
        *redelivered.entry(n).or_insert(0) += 1;
        again.ack(&m).await;
        if redelivered.len() == 10 {
            break;
        }
    }
    // Late copies would show up now.
    while let Some(m) = again.next(Duration::from_secs(1)).await {
        let n: usize = std::str::from_utf8(&m.payload[1..])
            .unwrap()
            .parse()
            .unwrap();
        *redelivered.entry(n).or_insert(0) += 1;
    }
    let mut keys: Vec<_> = redelivered.keys().copied().collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        (10..20).collect::<Vec<_>>(),
        "exactly the unacked ones"
    );
    assert!(
        redelivered.values().all(|&k| k == 1),
        "each once: {redelivered:?}"
    );
}

/// `mesh status` and `mesh topology` print what GetStatus and GetTopology answer; an unreachable
/// API is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_topology_commands() {
    let (_a, _b, _c, url_a, _url_c) = line();
    let mut pa = connect(&url_a).await;
    let mut r = request("tracked");
    r.mode = pb::SendMode::WaitForDelivery as i32;
    let id = pa.send(r).await.unwrap().into_inner().msg_id;
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::spawn_blocking({
        let url = url_a.clone();
        move || {
            run(vec![
                "status".into(),
                "--grpc".into(),
                url,
                id.to_string(),
                "77".into(),
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{id}  DELIVERED")), "{out}");
    assert!(out.contains("77  not tracked"), "{out}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let url = url_a.clone();
        move || run(vec!["topology".into(), "--grpc".into(), url])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.starts_with("node 1 in domain 1"), "{out}");
    assert!(out.contains("nodes (3)") && out.contains("2 -> 3"), "{out}");
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run(vec![
            "topology".into(),
            "--grpc".into(),
            "http://127.0.0.1:1".into(),
        ])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("--enable-grpc"), "{err}");
}

/// SendStream mixes modes: FIRE_AND_FORGET answers at PERSISTED; WAIT_FOR_ACK with nobody
/// subscribed answers at its timeout with what was reached (stored at C, waiting for a
/// client), not before and not never; WAIT_FOR_DELIVERY answers once C stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_stream_answers_each_mode_at_its_moment() {
    let (_a, _b, _c, url_a, _url_c) = line();
    let mut pa = connect(&url_a).await;
    let reqs: Vec<pb::SendRequest> = (0..90)
        .map(|i| {
            let mut r = request(&format!("w{i}"));
            match i % 3 {
                0 => {}
                1 => {
                    r.require_ack = true;
                    r.mode = pb::SendMode::WaitForAck as i32;
                    r.timeout_ms = 700;
                }
                _ => r.mode = pb::SendMode::WaitForDelivery as i32,
            }
            r
        })
        .collect();
    let by_pos = stream_answers(&mut pa, reqs).await;
    assert_eq!(by_pos.len(), 90);
    for (pos, (r, at)) in &by_pos {
        match pos % 3 {
            0 => assert_eq!(r.status, pb::MessageStatus::Persisted as i32, "{r:?}"),
            1 => {
                assert!(
                    r.status == pb::MessageStatus::PendingClient as i32
                        || r.status == pb::MessageStatus::Delivered as i32,
                    "{r:?}"
                );
                assert!(*at >= Duration::from_millis(700), "answered at {at:?}");
                assert!(*at < Duration::from_secs(10), "answered at {at:?}");
            }
            _ => assert_eq!(r.status, pb::MessageStatus::Delivered as i32, "{r:?}"),
        }
        assert_ne!(r.msg_id, 0, "{r:?}");
    }
}
