//! Exactly once end to end over real nodes (SPEC §5): 100,000 messages A -> B -> C while the
//! transit node B is killed (SIGKILL) and restarted, and again while the origin A is killed and
//! restarted. C's application receives each message at most once, and every message A reported
//! PERSISTED arrives.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_client::{Client, ClientError, ClientOptions, status};

use common::{Node, RedisServer};

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;
const MESSAGES: u64 = 100_000;

/// A -> B -> C; A keeps its state in `a_storage` (a `redis://` URL) instead of its WAL.
fn line(a_storage: Option<String>) -> (Node, Node, Node) {
    let mut c = Node::new(C, vec![]);
    let mut b = Node::new(B, vec![c.listen]);
    let mut a = Node::new(A, vec![b.listen]);
    a.storage = a_storage;
    for n in [&mut a, &mut b, &mut c] {
        n.keepalive_ms = 200;
        n.delivery = "exactly-once"; // the default, stated: this file is about it
    }
    c.start();
    b.start();
    a.start();
    for n in [&a, &b, &c] {
        n.wait_metric("mesh_route_entries", 2, Duration::from_secs(20));
    }
    (a, b, c)
}

/// C's application: counts every payload it receives and acks it.
struct Receiver {
    counts: Arc<Mutex<HashMap<u64, u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn attach(node: &Node) -> Receiver {
        let mut client = Client::connect(
            node.listen,
            ClientOptions {
                subscribe: true,
                ..ClientOptions::default()
            },
        )
        .expect("subscriber attaches");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let counts = counts.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.recv(Some(Duration::from_millis(100))) {
                        Ok(Some(d)) => {
                            let seq = u64::from_be_bytes(d.payload[..8].try_into().unwrap());
                            *counts.lock().unwrap().entry(seq).or_insert(0) += 1;
                            client.ack(d.src_node, d.msg_id, true).unwrap();
                        }
                        Ok(None) => {}
                        Err(e) => panic!("subscriber: {e}"),
                    }
                }
                let _ = client.close();
            })
        };
        Receiver {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> HashMap<u64, u32> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

/// A's application: sends `MESSAGES` numbered messages from `from`, collecting PERSISTED
/// receipts, until done or until its node goes away.
fn produce(
    node: SocketAddr,
    from: u64,
    persisted: &Mutex<HashSet<u64>>,
) -> Result<(), ClientError> {
    let mut client = Client::connect(node, ClientOptions::default())?;
    let mut seq_to_msg = HashMap::new();
    let mut seq = from;
    while seq < MESSAGES {
        for _ in 0..500 {
            if seq >= MESSAGES {
                break;
            }
            let s = client.send(C, 0, &seq.to_be_bytes())?;
            seq_to_msg.insert(s, seq);
            seq += 1;
        }
        client.flush()?;
        take_receipts(&mut client, &seq_to_msg, persisted);
    }
    // Wait for the last receipts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while persisted.lock().unwrap().len() < seq_to_msg.len() && Instant::now() < deadline {
        let got = client.wait_receipts(Duration::from_millis(100))?;
        note_receipts(got, &seq_to_msg, persisted);
    }
    client.close()
}

fn take_receipts(
    client: &mut Client,
    seq_to_msg: &HashMap<u64, u64>,
    persisted: &Mutex<HashSet<u64>>,
) {
    note_receipts(client.receipts(), seq_to_msg, persisted);
}

fn note_receipts(
    receipts: Vec<mesh_client::Receipt>,
    seq_to_msg: &HashMap<u64, u64>,
    persisted: &Mutex<HashSet<u64>>,
) {
    let mut p = persisted.lock().unwrap();
    for r in receipts {
        if r.status == status::PERSISTED
            && let Some(&n) = seq_to_msg.get(&r.seq)
        {
            p.insert(n);
        }
    }
}

/// Waits until C has every persisted message, then checks that none came twice.
fn check(rx: Receiver, persisted: &HashSet<u64>, what: &str, nodes: &[&Node]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = rx.counts.lock().unwrap().clone();
        let missing = persisted.iter().filter(|s| !got.contains_key(s)).count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            for n in nodes {
                eprintln!("node {}: {}", n.id, n.scrape_nonzero("mesh_"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {missing} of {} persisted messages never arrived ({} received)",
            persisted.len(),
            got.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Late retransmissions have time to show up as duplicates.
    std::thread::sleep(Duration::from_secs(1));
    let counts = rx.finish();
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        dups.is_empty(),
        "{what}: delivered more than once: {dups:?}"
    );
    eprintln!(
        "{what}: {} persisted, {} received, none twice",
        persisted.len(),
        counts.len()
    );
}

#[test]
fn transit_node_killed_and_restarted_mid_stream() {
    let (a, mut b, c) = line(None);
    let rx = Receiver::attach(&c);
    let persisted = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        let producer = s.spawn(|| produce(a.listen, 0, &persisted));
        while (persisted.lock().unwrap().len() as u64) < MESSAGES / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        b.kill();
        std::thread::sleep(Duration::from_millis(500));
        b.start();
        producer
            .join()
            .unwrap()
            .expect("the producer's node stays up");
    });
    let persisted = persisted.into_inner().unwrap();
    assert_eq!(
        persisted.len() as u64,
        MESSAGES,
        "A persisted every message"
    );
    check(rx, &persisted, "B killed", &[&a, &b, &c]);
    assert!(
        a.metric("mesh_retransmits_total").unwrap_or(0) > 0,
        "messages lost with B were sent again"
    );
}

#[test]
fn origin_killed_and_restarted_mid_stream() {
    origin_killed(None, "A killed");
}

/// The origin keeps its messages, msg_ids and dedup state in Redis (`--storage redis://`):
/// after the kill, the restarted node takes them from the server.
#[test]
fn origin_on_redis_killed_and_restarted_mid_stream() {
    let redis = RedisServer::start();
    origin_killed(Some(redis.url()), "A on Redis killed");
}

fn origin_killed(a_storage: Option<String>, what: &str) {
    let (mut a, _b, c) = line(a_storage);
    let rx = Receiver::attach(&c);
    let persisted = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        let addr = a.listen;
        let persisted = &persisted;
        let producer = s.spawn(move || produce(addr, 0, persisted));
        while (persisted.lock().unwrap().len() as u64) < MESSAGES / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        a.kill();
        // The producer's session ends with its node; what A persisted before it died is
        // retransmitted by A after its restart.
        assert!(
            producer.join().unwrap().is_err(),
            "the producer saw its node die"
        );
        a.start();
    });
    let persisted = persisted.into_inner().unwrap();
    assert!(
        persisted.len() as u64 >= MESSAGES / 4,
        "A persisted {} messages before it was killed",
        persisted.len()
    );
    check(rx, &persisted, what, &[&a, &c]);
}

/// The same stream with no fault: everything persisted arrives once, and the origin's
/// adaptive window and timeouts keep retransmissions rare (a fixed 200 ms timeout resent 70 to
/// 120 % of the messages here while queues on the path filled).
#[test]
fn steady_stream_without_faults() {
    let (a, b, c) = line(None);
    let rx = Receiver::attach(&c);
    let persisted = Mutex::new(HashSet::new());
    produce(a.listen, 0, &persisted).expect("the producer's node stays up");
    let persisted = persisted.into_inner().unwrap();
    assert_eq!(
        persisted.len() as u64,
        MESSAGES,
        "A persisted every message"
    );
    check(rx, &persisted, "steady", &[&a, &b, &c]);
    let resent = a.metric("mesh_retransmits_total").unwrap_or(0);
    eprintln!("steady: {resent} retransmissions");
    assert!(
        resent < MESSAGES / 4,
        "{resent} retransmissions for {MESSAGES} messages over healthy links"
    );
}

/// Waits for the receipt of `seq` that satisfies `want`.
fn receipt_for(
    client: &mut Client,
    seq: u64,
    want: impl Fn(&mesh_client::Receipt) -> bool,
) -> mesh_client::Receipt {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = client
            .wait_receipts(Duration::from_millis(100))
            .expect("the node answers");
        if let Some(r) = got.into_iter().find(|r| r.seq == seq && want(r)) {
            return r;
        }
        assert!(Instant::now() < deadline, "no receipt for send {seq}");
    }
}

/// Connects, waiting for a node that is starting.
fn connect(node: &Node, subscribe: bool) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let options = ClientOptions {
            subscribe,
            ..ClientOptions::default()
        };
        match Client::connect(node.listen, options) {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "node {} takes clients: {e}",
                    node.id
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// SPEC §4 idempotency keys: a retried send with the key of one the node took (from another
/// connection, and after the node was killed and restarted) gets the first one's msg_id and is
/// not sent again; the destination's application sees the message once.
#[test]
fn a_retried_send_with_its_idempotency_key_is_not_sent_twice() {
    let (mut a, _b, mut c) = line(None);
    // With C down, A keeps the message (persisted, waiting for a route) across its restart.
    c.kill();
    let mut first = connect(&a, false);
    let seq = first.send_idempotent(C, 0, b"order-1", b"first").unwrap();
    let persisted = receipt_for(&mut first, seq, |r| r.status == status::PERSISTED);
    assert!(!persisted.duplicate);
    let mut retry = connect(&a, false);
    let seq = retry.send_idempotent(C, 0, b"order-1", b"retry").unwrap();
    let dup = receipt_for(&mut retry, seq, |_| true);
    assert!(dup.duplicate, "{dup:?}");
    assert_eq!(dup.msg_id, persisted.msg_id);
    assert_eq!(dup.status, status::ACCEPTED);
    drop((first, retry));
    a.kill();
    a.start();
    let mut after = connect(&a, false);
    let seq = after
        .send_idempotent(C, 0, b"order-1", b"after restart")
        .unwrap();
    let dup = receipt_for(&mut after, seq, |_| true);
    assert!(dup.duplicate && dup.msg_id == persisted.msg_id, "{dup:?}");
    let seq = after.send_idempotent(C, 0, b"order-2", b"second").unwrap();
    let other = receipt_for(&mut after, seq, |r| r.status == status::PERSISTED);
    assert!(!other.duplicate && other.msg_id != persisted.msg_id);
    // C comes back: each message arrives once, the retries never.
    c.start();
    let mut sub = connect(&c, true);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 && Instant::now() < deadline {
        if let Some(d) = sub.recv(Some(Duration::from_millis(200))).unwrap() {
            sub.ack(d.src_node, d.msg_id, true).unwrap();
            got.push(String::from_utf8_lossy(&d.payload).into_owned());
        }
    }
    // Late copies would show up now.
    while let Some(d) = sub.recv(Some(Duration::from_secs(1))).unwrap() {
        got.push(String::from_utf8_lossy(&d.payload).into_owned());
    }
    got.sort();
    assert_eq!(got, vec!["first".to_owned(), "second".to_owned()]);
    let _ = after.close();
}

/// Messages larger than a frame travel as chunks and are tracked as one message: stored whole
/// at both ends, retransmitted whole, reassembled once. 12 messages of 1.5 MiB while the
/// transit node is killed and restarted: each arrives once, intact.
#[test]
fn chunked_messages_arrive_once_across_a_transit_restart() {
    const COUNT: u64 = 12;
    const LEN: usize = 1536 << 10;
    let (a, mut b, c) = line(None);
    let mut sub = connect(&c, true);
    let mut producer = connect(&a, false);
    let body = |n: u64| {
        let mut v = vec![u8::try_from(n).unwrap(); LEN];
        v[..8].copy_from_slice(&n.to_be_bytes());
        v[LEN - 1] = 0xEE;
        v
    };
    let mut seqs = HashMap::new();
    for n in 0..COUNT {
        let seq = producer
            .send_with(
                C,
                0,
                &mesh_wire::Metadata::default(),
                mesh_wire::Flags::EMPTY,
                bytes::Bytes::from(body(n)),
            )
            .unwrap();
        seqs.insert(seq, n);
        if n == COUNT / 3 {
            producer.flush().unwrap();
            b.kill();
            std::thread::sleep(Duration::from_millis(300));
            b.start();
        }
    }
    let mut persisted = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while persisted.len() < seqs.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT} persisted",
            persisted.len()
        );
        for r in producer.wait_receipts(Duration::from_millis(100)).unwrap() {
            assert_ne!(r.status, status::FAILED, "{r:?}");
            if r.status == status::PERSISTED {
                persisted.insert(seqs[&r.seq]);
            }
        }
    }
    let mut got: HashMap<u64, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < usize::try_from(COUNT).unwrap() {
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT} chunked messages arrived",
            got.len()
        );
        if let Some(d) = sub.recv(Some(Duration::from_millis(200))).unwrap() {
            let n = u64::from_be_bytes(d.payload[..8].try_into().unwrap());
            assert!(d.payload[..] == body(n)[..], "message {n} arrived intact");
            *got.entry(n).or_insert(0) += 1;
            sub.ack(d.src_node, d.msg_id, true).unwrap();
        }
    }
    while let Some(d) = sub.recv(Some(Duration::from_secs(1))).unwrap() {
        let n = u64::from_be_bytes(d.payload[..8].try_into().unwrap());
        *got.entry(n).or_insert(0) += 1;
    }
    assert!(got.values().all(|&k| k == 1), "none twice: {got:?}");
    let _ = producer.close();
}

/// A message over the storage's record limit (three quarters of a WAL segment: 3 MiB with the
/// tests' 4 MiB segments) is refused with FAILED; the node keeps serving and takes the next
/// message.
#[test]
fn a_message_over_the_record_limit_fails_and_the_node_goes_on() {
    let (a, _b, c) = line(None);
    let mut sub = connect(&c, true);
    let mut producer = connect(&a, false);
    let big = producer
        .send_with(
            C,
            0,
            &mesh_wire::Metadata::default(),
            mesh_wire::Flags::EMPTY,
            bytes::Bytes::from(vec![7u8; 3 << 20]),
        )
        .unwrap();
    let failed = receipt_for(&mut producer, big, |_| true);
    assert_eq!(failed.status, status::FAILED, "{failed:?}");
    let small = producer.send(C, 0, b"after").unwrap();
    receipt_for(&mut producer, small, |r| r.status == status::PERSISTED);
    let d = sub
        .recv(Some(Duration::from_secs(20)))
        .unwrap()
        .expect("the next message arrives");
    assert_eq!(&d.payload[..], b"after");
    let _ = producer.close();
}
