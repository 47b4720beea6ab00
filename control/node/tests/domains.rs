//! Five real `mesh` processes in two domains, a ring 1 - 2 - 4 - 5 - 3 - 1 with the chord 2 - 3:
//!
//! ```text
//!          domain 1                domain 2
//!     1 ─────── 2 ──────────────────── 4
//!      \        │                      │
//!       \       │ chord                │
//!        \      │                      │
//!         ───── 3 ──────────────────── 5
//! ```
//!
//! Routes converge; node 2 is stopped (SIGTERM), killed (SIGKILL) and frozen (SIGSTOP) while
//! traffic flows, and each time traffic flows around it within a second (a frozen node once
//! its neighbours' keepalives find it dead: 600 ms, asserted within 2 s); each time it
//! restarts, routes and the shortest paths come back; ECMP spreads distinct messages of node 1
//! over its two equal exits towards domain 2 (via 2 and via 3) within 60/40; and a native
//! client in domain 1 reaches a node of domain 2 with and without naming its domain.
//!
//! **Route entries** (`mesh_route_entries`, SPEC §9): one per reachable node of the own domain
//! plus one per other domain. Foreign border nodes are leaves of the domain's LSDB (their summary
//! LSAs) and never own-domain entries, even on the border node adjacent to them: a frame for
//! another domain is forwarded by its domain alone.
//! - Converged: nodes 1, 2, 3 hold 2 own-domain nodes + domain 2 = 3; nodes 4, 5 hold 1 + 1 = 2.
//! - Node 2 down: nodes 1, 3 hold 1 + 1 = 2 (domain 2 through 3 - 5); nodes 4, 5 still 1 + 1 = 2
//!   (domain 1 through 5 - 3). Neighbours: 1 → 1, 3 → 2, 4 → 1, 5 → 2.
//!
//! **Paths.** Every node of domain 1 sees domain 2 at the same domain-level cost (1) through the
//! leaves 4 (behind 2) and 5 (behind 3); node 1 is 2 away from both, so its route to domain 2 has
//! the two equal next hops 2 and 3 and ECMP picks by a hash of (src, dst, msg_id): every message
//! is its own flow. The paths to node 5, 1 - 2 - 4 - 5 and 1 - 3 - 5, are equal for node 1,
//! which sees domain 2's cost and exits, not the nodes inside it. Node 4's nearest exit to domain 1 is node 2 (1 away; node 3 is 2 away), so
//! 4 → 1 has the single path 4 - 2 - 1, and 4 - 5 - 3 - 1 once node 2 is gone.
//!
//! Node 2 dials all its links, so a restarted node 2 reconnects at once instead of waiting for
//! its neighbours' backoff; its keepalive is 200 ms (the smaller side's interval wins), so its
//! neighbours find it dead after 600 ms of silence when it hangs.
//!
//! Messages in flight when node 2 fails may be lost (no WAL or retransmission yet): the test
//! measures when traffic flows again, not whether the failure lost anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mesh_client::{Client, ClientOptions};

mod common;
use common::Node;

const D1: u32 = 1;
const D2: u32 = 2;
/// Node 2's keepalive interval: its neighbours declare it dead after three silent intervals.
const FAST_KEEPALIVE_MS: u64 = 200;
/// (node, route entries, neighbours) of the whole ring.
const CONVERGED: [(u64, u64, u64); 5] = [(1, 3, 2), (2, 3, 3), (3, 3, 3), (4, 2, 2), (5, 2, 2)];
/// (node, route entries, neighbours) while node 2 is gone.
const WITHOUT_2: [(u64, u64, u64); 4] = [(1, 2, 1), (3, 2, 2), (4, 2, 1), (5, 2, 2)];
/// Messages node 1 sends towards domain 2 to measure the ECMP split.
const ECMP_MESSAGES: u64 = 20_000;
/// Payload length of every test message.
const PAYLOAD_LEN: usize = 64;
/// The sequence number of the last message of a flow.
const END: u64 = u64::MAX;

const TAG_READY: u32 = 0;
const TAG_PROBE: u32 = 1;
const TAG_RESOLVED: u32 = 2;
const TAG_EXPLICIT: u32 = 3;
const TAG_ECMP: u32 = 4;
const TAG_BACK: u32 = 5;

fn payload(tag: u32, seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(PAYLOAD_LEN, 0xA5);
    p
}

fn share_pct(part: u64, total: u64) -> f64 {
    100.0 * f64::from(u32::try_from(part).unwrap()) / f64::from(u32::try_from(total).unwrap())
}

// ----- the five nodes -----

struct Mesh {
    /// Node `id` at index `id - 1`.
    nodes: Vec<Node>,
}

impl Mesh {
    fn start() -> Mesh {
        let n1 = Node::new(1, vec![]);
        let mut n4 = Node::new(4, vec![]);
        n4.domain = D2;
        let n3 = Node::new(3, vec![n1.listen]);
        let mut n5 = Node::new(5, vec![n3.listen, n4.listen]);
        n5.domain = D2;
        let mut n2 = Node::new(2, vec![n1.listen, n3.listen, n4.listen]);
        n2.keepalive_ms = FAST_KEEPALIVE_MS;
        let mut mesh = Mesh {
            nodes: vec![n1, n2, n3, n4, n5],
        };
        for id in [1, 4, 3, 5, 2] {
            mesh.node_mut(id).start();
        }
        mesh
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[usize::try_from(id - 1).unwrap()]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(id - 1).unwrap()]
    }

    fn forwarded(&self, id: u64) -> u64 {
        self.node(id)
            .metric("mesh_forwarded_data_total")
            .unwrap_or_else(|| panic!("node {id} serves its metrics"))
    }

    /// Waits until every listed node has its (route entries, neighbours); returns how long.
    fn wait_routes(&self, want: &[(u64, u64, u64)], within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let state: Vec<(u64, Option<u64>, Option<u64>)> = want
                .iter()
                .map(|&(id, _, _)| {
                    let n = self.node(id);
                    (
                        id,
                        n.metric("mesh_route_entries"),
                        n.metric("mesh_neighbors"),
                    )
                })
                .collect();
            if want
                .iter()
                .zip(&state)
                .all(|(w, s)| Some(w.1) == s.1 && Some(w.2) == s.2)
            {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "routes did not converge in {within:?}: want (node, entries, neighbours) {want:?}, have {state:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Frames dropped by all five nodes.
    fn dropped(&self) -> u64 {
        (1..=5)
            .map(|id| {
                self.node(id)
                    .metric("mesh_dropped_total")
                    .unwrap_or_else(|| panic!("node {id} serves its metrics"))
            })
            .sum()
    }

    fn drops(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| {
                format!(
                    "node {id}: [{}]",
                    self.node(id).scrape_nonzero("mesh_dropped_total")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

// ----- receiving -----

/// One message as a subscriber received it.
struct Arrival {
    tag: u32,
    seq: u64,
    at: Instant,
    src_node: u64,
    src_domain: u32,
}

enum SinkEvent {
    Arrival(Arrival),
    Failed(String),
}

/// A subscriber at one node for the whole test, read by its own thread.
struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn attach(node: &Node, events: mpsc::Sender<SinkEvent>) -> Sink {
        let (id, listen) = (node.id, node.listen);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (ready_tx, ready) = mpsc::channel();
        // A client is not `Send`: it lives on its thread from the start.
        let thread = std::thread::spawn(move || {
            let mut client = Client::connect(
                listen,
                ClientOptions {
                    subscribe: true,
                    ..ClientOptions::default()
                },
            )
            .expect("subscriber attaches");
            // A message to its own node comes back once the node has made this client a
            // subscriber (it reads the HELLO before the DATA behind it).
            client.send(id, 0, &payload(TAG_READY, 0)).unwrap();
            let mut ready_tx = Some(ready_tx);
            while !stopping.load(Ordering::Relaxed) {
                match client.recv(Some(Duration::from_millis(50))) {
                    Ok(Some(d)) => {
                        let tag = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
                        let seq = u64::from_be_bytes(d.payload[4..12].try_into().unwrap());
                        if tag == TAG_READY {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                            continue;
                        }
                        let _ = events.send(SinkEvent::Arrival(Arrival {
                            tag,
                            seq,
                            at: Instant::now(),
                            src_node: d.src_node,
                            src_domain: d.src_domain,
                        }));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = events.send(SinkEvent::Failed(format!(
                            "subscriber at node {id} failed: {e}"
                        )));
                        return;
                    }
                }
            }
            let _ = client.close();
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber attached");
        Sink {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What arrived of one tag.
#[derive(Default)]
struct Received {
    at: HashMap<u64, Instant>,
    duplicates: u64,
    ended: bool,
    sources: Vec<(u64, u32)>,
}

/// Everything the subscribers received, by tag.
struct Collector {
    events: mpsc::Receiver<SinkEvent>,
    tags: HashMap<u32, Received>,
}

impl Collector {
    fn take(&mut self, ev: SinkEvent) {
        let a = match ev {
            SinkEvent::Arrival(a) => a,
            SinkEvent::Failed(e) => panic!("{e}"),
        };
        let r = self.tags.entry(a.tag).or_default();
        if !r.sources.contains(&(a.src_node, a.src_domain)) {
            r.sources.push((a.src_node, a.src_domain));
        }
        if a.seq == END {
            r.ended = true;
        } else if r.at.insert(a.seq, a.at).is_some() {
            r.duplicates += 1;
        }
    }

    /// Messages of `tag` received (end marker not counted).
    fn count(&self, tag: u32) -> u64 {
        self.tags.get(&tag).map_or(0, |r| r.at.len() as u64)
    }

    /// Messages of `tag` with a sequence number of at least `from`.
    fn count_from(&self, tag: u32, from: u64) -> u64 {
        self.tags
            .get(&tag)
            .map_or(0, |r| r.at.keys().filter(|s| **s >= from).count() as u64)
    }

    fn ended(&self, tag: u32) -> bool {
        self.tags.get(&tag).is_some_and(|r| r.ended)
    }

    fn received(&self, tag: u32) -> &Received {
        self.tags
            .get(&tag)
            .unwrap_or_else(|| panic!("nothing of tag {tag} arrived"))
    }

    /// Takes arrivals until `done` holds; after `within`, panics saying `what` (asked then, so
    /// it can report the state at the time of the failure).
    fn wait(
        &mut self,
        what: impl Fn() -> String,
        within: Duration,
        done: impl Fn(&Collector) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            if done(self) {
                return t0.elapsed();
            }
            let left = within.saturating_sub(t0.elapsed());
            assert!(!left.is_zero(), "{}: not done within {within:?}", what());
            if let Ok(ev) = self
                .events
                .recv_timeout(left.min(Duration::from_millis(20)))
            {
                self.take(ev);
                while let Ok(ev) = self.events.try_recv() {
                    self.take(ev);
                }
            }
        }
    }

    /// How a flow got through a failure at `t0`: the messages lost, and when the first
    /// message sent after both the failure and the last loss arrived.
    fn outage(&self, tag: u32, sent_at: &[Instant], t0: Instant) -> Outage {
        let r = self.received(tag);
        assert_eq!(r.duplicates, 0, "flow {tag}: duplicates");
        let sent = sent_at.len() as u64;
        let lost: Vec<u64> = (0..sent).filter(|s| !r.at.contains_key(s)).collect();
        let first_after = sent_at.partition_point(|t| *t < t0) as u64;
        let boundary = lost.last().map_or(first_after, |l| first_after.max(l + 1));
        assert!(
            boundary < sent,
            "flow {tag}: nothing sent after the failure and the last loss arrived ({} lost of {sent})",
            lost.len()
        );
        let back = (boundary..sent)
            .filter_map(|s| r.at.get(&s))
            .min()
            .expect("every message after the boundary arrived");
        Outage {
            sent,
            lost: lost.len(),
            recovery: back.duration_since(t0),
        }
    }
}

struct Outage {
    sent: u64,
    lost: usize,
    /// From the failure to the first arrival of a message sent after it and after the last
    /// message lost: when traffic flows again.
    recovery: Duration,
}

// ----- sending -----

/// A paced stream of numbered messages from a native client at one node to `dst_node`, ended
/// by a message numbered [`END`]. Each send is followed by a 1 ms read, which Linux rounds up to
/// a scheduler tick: a few milliseconds between messages.
struct Flow {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<Instant>>>,
}

impl Flow {
    fn start(from: &Node, dst_node: u64, dst_domain: u32, tag: u32) -> Flow {
        let listen = from.listen;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stopping, counter) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut client =
                Client::connect(listen, ClientOptions::default()).expect("sender attaches");
            let mut sent_at = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let seq = sent_at.len() as u64;
                sent_at.push(Instant::now());
                client
                    .send(dst_node, dst_domain, &payload(tag, seq))
                    .unwrap();
                counter.store(seq + 1, Ordering::Relaxed);
                // Flushes, paces, and reads what the node sends: a client that only writes
                // would find its node silent and declare it dead after three keepalives.
                assert!(
                    client
                        .recv(Some(Duration::from_millis(1)))
                        .unwrap()
                        .is_none()
                );
            }
            client
                .send(dst_node, dst_domain, &payload(tag, END))
                .unwrap();
            client.close().unwrap();
            sent_at
        });
        Flow {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Messages sent so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flow; returns when each message was sent.
    fn finish(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the sender ran without error")
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `count` messages of `tag` from a native client at `from`, as fast as it can.
fn send_batch(from: &Node, dst_node: u64, dst_domain: u32, tag: u32, count: u64) {
    let mut c = from.sender();
    for seq in 0..count {
        c.send(dst_node, dst_domain, &payload(tag, seq)).unwrap();
    }
    c.close().unwrap();
}

/// Sends small batches of probes (tagged `tag`) from `from` to `dst_node` until every node of
/// `via` has forwarded some of them: the route of `from` towards `dst_node` uses all of `via`.
/// Then waits until every probe arrived or was dropped, so that none is counted by what is
/// measured next. Needs the mesh otherwise quiet. Returns how long the route took.
fn wait_for_path(
    mesh: &Mesh,
    col: &mut Collector,
    (from, dst_node): (u64, u64),
    via: &[u64],
    tag: u32,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    let dropped_before = mesh.dropped();
    let base: Vec<u64> = via.iter().map(|&id| mesh.forwarded(id)).collect();
    let mut c = mesh.node(from).sender();
    let mut seq = 0;
    loop {
        for _ in 0..20 {
            c.send(dst_node, 0, &payload(tag, seq)).unwrap();
            seq += 1;
        }
        // Flushes the batch and gives it a moment to travel.
        assert!(c.recv(Some(Duration::from_millis(20))).unwrap().is_none());
        let now: Vec<u64> = via.iter().map(|&id| mesh.forwarded(id)).collect();
        if now.iter().zip(&base).all(|(n, b)| n > b) {
            break;
        }
        assert!(
            t0.elapsed() < within,
            "node {from} does not route to {dst_node} through all of {via:?} after {within:?}: forwarded {base:?} -> {now:?}"
        );
    }
    c.close().unwrap();
    let took = t0.elapsed();
    col.wait(
        || format!("{seq} probes {from} -> {dst_node} delivered or dropped"),
        within,
        |c| c.count(tag) + (mesh.dropped() - dropped_before) >= seq,
    );
    took
}

// ----- the phases -----

/// Node 1 sends [`ECMP_MESSAGES`] to node 5; transits 2 and 3 each carry 40–60 %.
fn ecmp_split(mesh: &Mesh, col: &mut Collector) {
    let warm = wait_for_path(
        mesh,
        col,
        (1, 5),
        &[2, 3],
        TAG_PROBE,
        Duration::from_secs(10),
    );
    let before = [mesh.forwarded(2), mesh.forwarded(3)];
    let t0 = Instant::now();
    send_batch(mesh.node(1), 5, D2, TAG_ECMP, ECMP_MESSAGES);
    col.wait(
        || {
            format!(
                "{ECMP_MESSAGES} ECMP messages at node 5 ({})",
                mesh.drops(&[1, 2, 3, 4, 5])
            )
        },
        Duration::from_secs(30),
        |c| c.count(TAG_ECMP) == ECMP_MESSAGES,
    );
    let took = t0.elapsed();
    assert_eq!(col.received(TAG_ECMP).duplicates, 0);
    let via2 = mesh.forwarded(2) - before[0];
    let via3 = mesh.forwarded(3) - before[1];
    eprintln!(
        "ECMP 1 -> 5: via node 2 {via2} ({:.1} %), via node 3 {via3} ({:.1} %); {ECMP_MESSAGES} delivered in {took:?} (paths in use after {warm:?} of probes)",
        share_pct(via2, ECMP_MESSAGES),
        share_pct(via3, ECMP_MESSAGES)
    );
    assert_eq!(
        via2 + via3,
        ECMP_MESSAGES,
        "every message crossed exactly one of the two transits"
    );
    for (id, n) in [(2, via2), (3, via3)] {
        assert!(
            (ECMP_MESSAGES * 4 / 10..=ECMP_MESSAGES * 6 / 10).contains(&n),
            "transit {id} carried {n} of {ECMP_MESSAGES}: outside 40-60 %"
        );
    }
}

/// A client of node 1 (domain 1) sends to node 4 (domain 2) without a domain and with it.
fn inter_domain(mesh: &Mesh, col: &mut Collector) {
    let mut c = mesh.node(1).sender();
    for seq in 0..100 {
        c.send(4, 0, &payload(TAG_RESOLVED, seq)).unwrap();
        c.send(4, D2, &payload(TAG_EXPLICIT, seq)).unwrap();
    }
    c.close().unwrap();
    let took = col.wait(
        || "inter-domain messages at node 4".into(),
        Duration::from_secs(10),
        |c| c.count(TAG_RESOLVED) == 100 && c.count(TAG_EXPLICIT) == 100,
    );
    for tag in [TAG_RESOLVED, TAG_EXPLICIT] {
        let r = col.received(tag);
        assert_eq!(r.duplicates, 0);
        assert_eq!(
            r.sources,
            vec![(1, D1)],
            "stamped with the origin's identity"
        );
    }
    eprintln!(
        "inter-domain 1 -> 4: 100 with dst_domain 0 and 100 with dst_domain {D2} received in {took:?}"
    );
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    /// SIGTERM: node 2 closes its sessions (CLOSE) and exits.
    Stop,
    /// SIGKILL: no CLOSE, but the kernel closes node 2's sockets.
    Kill,
    /// SIGSTOP: node 2 hangs with its sockets open; only keepalives tell.
    Freeze,
}

/// While node 4 streams to node 1 (all through node 2) and node 1 streams to node 5 (half
/// through node 2), node 2 fails `how`; both streams must flow again within `limit`. Then node
/// 2 restarts and the routes, and the path 4 - 2 - 1, come back.
fn fail_over(mesh: &mut Mesh, col: &mut Collector, how: Failure, round: u32, limit: Duration) {
    let tag_a = 100 + 2 * round;
    let tag_b = tag_a + 1;
    // Node 4 leaves the domain to the node (it resolves node 1's from the member sets).
    let flow_a = Flow::start(mesh.node(4), 1, 0, tag_a);
    let flow_b = Flow::start(mesh.node(1), 5, D2, tag_b);
    col.wait(
        || "both flows deliver".into(),
        Duration::from_secs(10),
        |c| c.count(tag_a) >= 100 && c.count(tag_b) >= 100,
    );
    let around_before = mesh.forwarded(5);

    let t0 = Instant::now();
    match how {
        Failure::Stop => mesh.node_mut(2).stop(),
        Failure::Kill => mesh.node_mut(2).kill(),
        Failure::Freeze => mesh.node_mut(2).freeze(),
    }
    mesh.wait_routes(&WITHOUT_2, Duration::from_secs(10));
    let rerouted = t0.elapsed();
    let (mark_a, mark_b) = (flow_a.sent(), flow_b.sent());
    col.wait(
        || {
            format!(
                "flows going on around node 2 ({})",
                mesh.drops(&[1, 3, 4, 5])
            )
        },
        Duration::from_secs(10),
        |c| c.count_from(tag_a, mark_a) >= 200 && c.count_from(tag_b, mark_b) >= 200,
    );
    let sent_a = flow_a.finish();
    let sent_b = flow_b.finish();
    col.wait(
        || "the flows' last messages".into(),
        Duration::from_secs(10),
        |c| c.ended(tag_a) && c.ended(tag_b),
    );
    let around = mesh.forwarded(5) - around_before;
    if matches!(how, Failure::Freeze) {
        mesh.node_mut(2).kill();
    }

    let out_a = col.outage(tag_a, &sent_a, t0);
    let out_b = col.outage(tag_b, &sent_b, t0);
    eprintln!(
        "{how:?} node 2: routes without it after {rerouted:?}; 4 -> 1 flows again after {:?} ({} lost of {}), 1 -> 5 after {:?} ({} lost of {}); node 5 forwarded {around} of 4 -> 1 around node 2",
        out_a.recovery, out_a.lost, out_a.sent, out_b.recovery, out_b.lost, out_b.sent
    );
    assert!(
        around >= 200,
        "4 -> 1 went 4 - 5 - 3 - 1: node 5 forwarded only {around}"
    );
    for (flow, out) in [("4 -> 1", &out_a), ("1 -> 5", &out_b)] {
        assert!(
            out.recovery < limit,
            "{how:?}: {flow} flowed again only after {:?} (limit {limit:?}; {} lost)",
            out.recovery,
            out.lost
        );
    }

    // Restart: sessions, routes, and the path 4 - 2 - 1 come back.
    let t1 = Instant::now();
    mesh.node_mut(2).start();
    mesh.wait_routes(&CONVERGED, Duration::from_secs(20));
    let routes_back = t1.elapsed();
    wait_for_path(
        mesh,
        col,
        (4, 1),
        &[2],
        TAG_PROBE * 1000 + round,
        Duration::from_secs(10),
    );
    let path_back = t1.elapsed();
    let tag_back = TAG_BACK * 1000 + round;
    let before = [mesh.forwarded(2), mesh.forwarded(5)];
    send_batch(mesh.node(4), 1, D1, tag_back, 1_000);
    col.wait(
        || "4 -> 1 after the restart".into(),
        Duration::from_secs(10),
        |c| c.count(tag_back) == 1_000,
    );
    let via2 = mesh.forwarded(2) - before[0];
    let via5 = mesh.forwarded(5) - before[1];
    assert_eq!(
        (via2, via5),
        (1_000, 0),
        "4 -> 1 back on the shortest path 4 - 2 - 1"
    );
    eprintln!(
        "{how:?} node 2, restarted: routes back after {routes_back:?}, 4 -> 1 through node 2 again after {path_back:?}"
    );
}

#[test]
fn two_domains_converge_fail_over_heal_and_spread() {
    let t0 = Instant::now();
    let mut mesh = Mesh::start();
    let converged = mesh.wait_routes(&CONVERGED, Duration::from_secs(20));
    let stats: Vec<String> = mesh
        .nodes
        .iter()
        .map(|n| {
            format!(
                "node {}: {} computations, last SPF {} us",
                n.id,
                n.metric("mesh_route_computations_total").unwrap_or(0),
                n.metric("mesh_spf_last_microseconds").unwrap_or(0)
            )
        })
        .collect();
    eprintln!(
        "converged {:?} after the first start ({converged:?} of waiting); {}",
        t0.elapsed(),
        stats.join("; ")
    );

    let (tx, rx) = mpsc::channel();
    let mut col = Collector {
        events: rx,
        tags: HashMap::new(),
    };
    let sinks = [1, 4, 5].map(|id| Sink::attach(mesh.node(id), tx.clone()));

    inter_domain(&mesh, &mut col);
    ecmp_split(&mesh, &mut col);
    fail_over(
        &mut mesh,
        &mut col,
        Failure::Stop,
        0,
        Duration::from_secs(1),
    );
    fail_over(
        &mut mesh,
        &mut col,
        Failure::Kill,
        1,
        Duration::from_secs(1),
    );
    // Dead after 3 x 200 ms of silence; the limit leaves room for a busy machine.
    fail_over(
        &mut mesh,
        &mut col,
        Failure::Freeze,
        2,
        Duration::from_secs(2),
    );

    drop(sinks);
    for id in 1..=5 {
        mesh.node_mut(id).stop();
    }
    eprintln!("whole scenario: {:?}", t0.elapsed());
}
