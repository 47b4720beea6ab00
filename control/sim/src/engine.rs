//! The discrete-event network that drives real [`Router`]s: simulated time, links with
//! latency, message delivery, timers, SPF throttling and transmission counters.
//!
//! Endpoints are live routers (the `mesh-routing` state machine, untouched) or *stubs*: the far
//! end of an inter-domain link whose router is not live in this run; a stub sends what a live
//! router sent in an earlier run (a recorded script, see [`crate::hier`]) and acknowledges what
//! it receives, as that router would.
//!
//! # Time and determinism
//!
//! Time is simulated, in microseconds. Events are ordered by `(time, insertion number)`, so a
//! run is a pure function of its inputs; wall-clock time is only *measured* (around each route
//! computation) and never feeds back. Each link has a fixed one-way latency, which keeps every
//! session FIFO, as the TLS session carrying it would be. Processing takes no simulated time.
//!
//! # Driving a router (the sans-IO contract of [`Router`])
//!
//! After every input (neighbour up/down, message, timeout) the engine drains the router's
//! events, sends what [`Router::poll_transmit`] returns, and re-arms its timer from
//! [`Router::poll_timeout`]. When the topology changed (an event, or a neighbour change) it
//! schedules a call of [`Router::poll_routes_with`] through an SPF throttle like OSPF
//! implementations use: `initial` after the first change; while changes keep coming, at least
//! `hold`, then `2 × hold`, `4 × hold`… (up to `max`) after the previous computation; back to
//! `initial` and `hold` after a quiet `2 × max`.
//! One [`SpfWorkspace`] is shared by every router of the engine; each computation is timed
//! with the wall clock and reported to the router with [`Router::record_spf_duration`].
//!
//! # Counting
//!
//! Every message is counted when sent, by kind, LSAs it carries (node or summary) and encoded
//! bytes, in the scope of the link it uses: the domain of an intra-domain link, or "between
//! domains". A phase's cost is the difference of two snapshots.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use mesh_routing::{
    DomainId, Event, LsaInstance, Message, NodeId, RouteTable, Router, SpfWorkspace,
};

use crate::rng::mix64;

/// Hashes node ids with one multiply-xorshift round: fast, and deterministic (the engine never
/// iterates its maps, so order cannot leak into results anyway).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }
}

type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// Simulated time in microseconds.
pub type Micros = u64;

/// `d` in microseconds.
#[must_use]
pub fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `t` microseconds as a [`Duration`].
#[must_use]
pub const fn duration(t: Micros) -> Duration {
    Duration::from_micros(t)
}

/// The SPF throttle of every router (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpfThrottle {
    /// Delay from the first change to the computation.
    pub initial_us: Micros,
    /// Least time between two computations (first value of the doubling hold).
    pub hold_us: Micros,
    /// Largest hold.
    pub max_us: Micros,
}

impl Default for SpfThrottle {
    fn default() -> SpfThrottle {
        SpfThrottle {
            initial_us: 50_000,
            hold_us: 200_000,
            max_us: 2_000_000,
        }
    }
}

/// Where a link's transmissions are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Inside the domain with this index (of the engine's own numbering).
    Domain(u32),
    /// Between two domains.
    Inter,
}

/// Counters of transmissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent.
    pub messages: u64,
    /// Update messages.
    pub updates: u64,
    /// Acknowledgement messages.
    pub acks: u64,
    /// Database summaries and their acknowledgements.
    pub db_syncs: u64,
    /// Node LSAs carried by updates.
    pub node_lsas: u64,
    /// Summary LSAs carried by updates.
    pub summary_lsas: u64,
    /// Encoded bytes of all messages.
    pub bytes: u64,
}

impl Traffic {
    /// Counts one message.
    pub fn record(&mut self, msg: &Message) {
        self.messages += 1;
        self.bytes += msg.encoded_len() as u64;
        match msg {
            Message::Update(lsas) => {
                self.updates += 1;
                for i in lsas {
                    if i.lsa.is_summary() {
                        self.summary_lsas += 1;
                    } else {
                        self.node_lsas += 1;
                    }
                }
            }
            Message::Ack(_) => self.acks += 1,
            Message::DbSummary(_) | Message::SummaryAck => self.db_syncs += 1,
        }
    }

    /// LSA transmissions (each LSA in each update counts once).
    #[must_use]
    pub const fn lsas(&self) -> u64 {
        self.node_lsas + self.summary_lsas
    }

    /// `self - before` (counters only grow).
    #[must_use]
    pub const fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            messages: self.messages - before.messages,
            updates: self.updates - before.updates,
            acks: self.acks - before.acks,
            db_syncs: self.db_syncs - before.db_syncs,
            node_lsas: self.node_lsas - before.node_lsas,
            summary_lsas: self.summary_lsas - before.summary_lsas,
            bytes: self.bytes - before.bytes,
        }
    }

    /// Adds `other` in.
    pub const fn add(&mut self, other: &Traffic) {
        self.messages += other.messages;
        self.updates += other.updates;
        self.acks += other.acks;
        self.db_syncs += other.db_syncs;
        self.node_lsas += other.node_lsas;
        self.summary_lsas += other.summary_lsas;
        self.bytes += other.bytes;
    }
}

/// What the engine keeps of a router's latest route table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Routes to nodes of the own domain.
    pub intra: u32,
    /// Routes to other domains.
    pub inter: u32,
    /// Node-id ranges of the member map.
    pub member_ranges: u32,
    /// Heap bytes of the table.
    pub heap_bytes: u32,
    /// The table's fingerprint (routes and next hops).
    pub fingerprint: u64,
}

impl TableStats {
    fn of(t: &RouteTable) -> TableStats {
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        TableStats {
            intra: n(t.intra_routes().len()),
            inter: n(t.inter_routes().len()),
            member_ranges: n(t.members().len()),
            heap_bytes: n(t.heap_bytes()),
            fingerprint: t.fingerprint(),
        }
    }

    /// Route-table entries: node routes plus domain routes.
    #[must_use]
    pub const fn entries(&self) -> u32 {
        self.intra + self.inter
    }
}

/// A live router and the engine's state about it.
#[derive(Debug)]
pub struct RouterSlot {
    /// The state machine.
    pub router: Router,
    /// Statistics of its latest table.
    pub table: Option<TableStats>,
    /// Its latest table itself, when the engine keeps tables.
    pub full_table: Option<RouteTable>,
    /// Wall-clock nanoseconds of its latest route computation.
    pub last_spf_ns: u64,
    poll_at: Option<Micros>,
    timer_at: Option<Micros>,
    last_spf_at: Option<Micros>,
    hold_us: Micros,
}

#[derive(Debug)]
enum Endpoint {
    Router(Box<RouterSlot>),
    /// The far end of inter-domain links whose router is not live here.
    Stub,
    Down,
}

#[derive(Clone, Copy, Debug)]
struct Adj {
    to: u32,
    latency_us: u32,
    scope: Scope,
    /// The directed link's queue in [`Engine::links`].
    link: u32,
}

/// One direction of a link: a FIFO of messages in flight. Only its head is in the event queue,
/// which keeps that queue as small as the number of busy links rather than of messages.
#[derive(Debug)]
struct LinkQueue {
    from: u32,
    to: u32,
    up: bool,
    /// `(arrival, insertion number, message)`.
    flight: VecDeque<(Micros, u64, Message)>,
}

#[derive(Debug)]
enum Ev {
    /// The head of a link's queue arrives.
    Deliver(u32),
    Poll(u32),
    Timer(u32),
    StubSend {
        stub: u32,
        to: u32,
        msg: Message,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: Micros,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in insertion order.
    fn cmp(&self, other: &Scheduled) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// An update sent over an inter-domain link, as recorded for replay by a stub.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// When it was sent.
    pub at: Micros,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

/// The network (see the module docs).
#[derive(Debug)]
pub struct Engine {
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    /// Deliveries, polls and stub sends queued (timers do not keep a run going).
    active: usize,
    endpoints: Vec<Endpoint>,
    ids: Vec<NodeId>,
    /// Counter scope of each endpoint (its domain's, for routers).
    scope_of: Vec<u32>,
    domains: Vec<DomainId>,
    index: IdMap<u32>,
    adj: Vec<Vec<Adj>>,
    links: Vec<LinkQueue>,
    throttle: SpfThrottle,
    ws: SpfWorkspace,
    keep_tables: bool,
    /// Traffic per domain scope.
    pub traffic: Vec<Traffic>,
    /// Traffic between domains.
    pub inter: Traffic,
    /// Inter-domain updates, when recording.
    pub recorded: Option<Vec<Recorded>>,
    /// Time of the last delivery or route computation.
    pub last_activity: Micros,
    /// Per domain scope, time of the last delivery to or computation by one of its routers.
    pub activity: Vec<Micros>,
    /// Per domain scope, route computations.
    pub spf_in: Vec<u64>,
    /// Route computations run.
    pub spf_runs: u64,
    /// Inputs a router refused (a simulator bug if not zero).
    pub errors: u64,
    /// Messages dropped because their link went down while they were in flight.
    pub dropped: u64,
}

impl Engine {
    /// An empty network with `domain_scopes` intra-domain counters, starting at time 0.
    #[must_use]
    pub fn new(domain_scopes: usize, throttle: SpfThrottle, keep_tables: bool) -> Engine {
        Engine {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            active: 0,
            endpoints: Vec::new(),
            ids: Vec::new(),
            scope_of: Vec::new(),
            domains: Vec::new(),
            index: IdMap::default(),
            adj: Vec::new(),
            links: Vec::new(),
            throttle,
            ws: SpfWorkspace::new(),
            keep_tables,
            traffic: vec![Traffic::default(); domain_scopes],
            inter: Traffic::default(),
            recorded: None,
            last_activity: 0,
            activity: vec![0; domain_scopes],
            spf_in: vec![0; domain_scopes],
            spf_runs: 0,
            errors: 0,
            dropped: 0,
        }
    }

    /// The current simulated time.
    #[must_use]
    pub const fn now(&self) -> Micros {
        self.now
    }

    /// Adds a live router counted in domain scope `scope`; returns its endpoint index.
    pub fn add_router(&mut self, router: Router, scope: u32) -> u32 {
        let (id, domain) = (router.node(), router.domain());
        let hold_us = self.throttle.hold_us;
        self.push(
            id,
            domain,
            scope,
            Endpoint::Router(Box::new(RouterSlot {
                router,
                table: None,
                full_table: None,
                last_spf_ns: 0,
                poll_at: None,
                timer_at: None,
                last_spf_at: None,
                hold_us,
            })),
        )
    }

    /// Adds a stub for node `id` of `domain` (linked to live routers by [`Engine::link_up`]).
    pub fn add_stub(&mut self, id: NodeId, domain: DomainId) -> u32 {
        self.push(id, domain, u32::MAX, Endpoint::Stub)
    }

    fn push(&mut self, id: NodeId, domain: DomainId, scope: u32, e: Endpoint) -> u32 {
        let i = u32::try_from(self.endpoints.len()).expect("fewer than 2^32 endpoints");
        let fresh = self.index.insert(id, i).is_none();
        assert!(fresh, "node {id} added twice");
        self.endpoints.push(e);
        self.ids.push(id);
        self.scope_of.push(scope);
        self.domains.push(domain);
        self.adj.push(Vec::new());
        i
    }

    /// Number of endpoints.
    #[must_use]
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether there are no endpoints.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoint index of `id`.
    #[must_use]
    pub fn index_of(&self, id: NodeId) -> Option<u32> {
        self.index.get(&id).copied()
    }

    /// The node id of endpoint `i`.
    #[must_use]
    pub fn id(&self, i: u32) -> NodeId {
        self.ids[i as usize]
    }

    /// The live router at `i`, if it is one.
    #[must_use]
    pub fn router(&self, i: u32) -> Option<&RouterSlot> {
        match &self.endpoints[i as usize] {
            Endpoint::Router(r) => Some(r),
            _ => None,
        }
    }

    /// Every live router, with its index.
    ///
    /// # Panics
    /// Never: endpoint indices fit `u32` (checked when added).
    pub fn routers(&self) -> impl Iterator<Item = (u32, &RouterSlot)> + '_ {
        self.endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Endpoint::Router(r) => Some((u32::try_from(i).expect("u32 index"), &**r)),
                _ => None,
            })
    }

    /// Whether `a` and `b` have a link up.
    #[must_use]
    pub fn linked(&self, a: u32, b: u32) -> bool {
        self.find_adj(a, b).is_some()
    }

    /// The cost of the link from `a` to `b` as `a` configured it, if up and `a` is a router.
    #[must_use]
    pub fn cost(&self, a: u32, b: u32) -> Option<u32> {
        let r = self.router(a)?;
        let id = self.ids[b as usize];
        r.router.neighbors().find(|n| n.0 == id).map(|n| n.2)
    }

    fn find_adj(&self, a: u32, b: u32) -> Option<Adj> {
        let v = &self.adj[a as usize];
        v.binary_search_by_key(&b, |x| x.to).ok().map(|k| v[k])
    }

    /// Brings up the link `a`–`b` (costs `cost` both ways) now: both routers learn their new
    /// neighbour (stubs need nothing).
    ///
    /// # Panics
    /// If the link is already up or a router refuses the neighbour (a simulator bug).
    pub fn link_up(&mut self, a: u32, b: u32, cost: u32, latency_us: u32, scope: Scope) {
        for (x, y) in [(a, b), (b, a)] {
            let link = u32::try_from(self.links.len()).expect("fewer than 2^32 links");
            self.links.push(LinkQueue {
                from: x,
                to: y,
                up: true,
                flight: VecDeque::new(),
            });
            let v = &mut self.adj[x as usize];
            let at = v
                .binary_search_by_key(&y, |e| e.to)
                .expect_err("link already up");
            v.insert(
                at,
                Adj {
                    to: y,
                    latency_us,
                    scope,
                    link,
                },
            );
        }
        for (x, y) in [(a, b), (b, a)] {
            let (id, domain, now) = (self.ids[y as usize], self.domains[y as usize], self.now);
            if let Endpoint::Router(r) = &mut self.endpoints[x as usize] {
                r.router
                    .handle_neighbor_up(id, domain, cost, duration(now))
                    .expect("a valid new neighbour");
                self.after_input(x, true);
            }
        }
    }

    /// Takes the link `a`–`b` down now: both routers lose the neighbour, messages in flight on
    /// it are dropped.
    ///
    /// # Panics
    /// If the link is not up.
    pub fn link_down(&mut self, a: u32, b: u32) {
        for (x, y) in [(a, b), (b, a)] {
            let v = &mut self.adj[x as usize];
            let at = v.binary_search_by_key(&y, |e| e.to).expect("link is up");
            let gone = v.remove(at);
            let q = &mut self.links[gone.link as usize];
            q.up = false;
            self.dropped += q.flight.len() as u64;
            q.flight.clear();
        }
        for (x, y) in [(a, b), (b, a)] {
            let (id, now) = (self.ids[y as usize], self.now);
            if let Endpoint::Router(r) = &mut self.endpoints[x as usize] {
                r.router
                    .handle_neighbor_down(id, duration(now))
                    .expect("the neighbour was up");
                self.after_input(x, true);
            }
        }
    }

    /// Node `i` dies now: every link of it goes down and it is gone.
    pub fn kill(&mut self, i: u32) {
        let neighbors: Vec<u32> = self.adj[i as usize].iter().map(|a| a.to).collect();
        for n in neighbors {
            self.link_down(i, n);
        }
        self.endpoints[i as usize] = Endpoint::Down;
    }

    /// Delivers `msg` to `to` from `from` now, as if it had come over a link (setup only:
    /// not counted as a transmission).
    pub fn inject(&mut self, from: NodeId, to: u32, msg: Message) {
        let now = self.now;
        if let Endpoint::Router(r) = &mut self.endpoints[to as usize] {
            if r.router.handle_message(from, msg, duration(now)).is_err() {
                self.errors += 1;
            }
            self.after_input(to, false);
        }
    }

    /// Makes stub `stub` send `msg` to `to` at time `at` (if their link is up then).
    pub fn schedule_stub_send(&mut self, stub: u32, to: u32, at: Micros, msg: Message) {
        self.schedule(at.max(self.now), Ev::StubSend { stub, to, msg });
    }

    fn schedule(&mut self, at: Micros, ev: Ev) {
        self.seq += 1;
        self.schedule_with(at, self.seq, ev);
    }

    /// Queues `ev` at `(at, seq)`; a message keeps the number it got when sent, so deliveries
    /// happen in global send order whatever link they use.
    fn schedule_with(&mut self, at: Micros, seq: u64, ev: Ev) {
        if !matches!(ev, Ev::Timer(_)) {
            self.active += 1;
        }
        self.queue.push(Scheduled { at, seq, ev });
    }

    /// Makes router `i` compute its routes at the current time, throttle or not (a shell's
    /// first computation at start-up).
    pub fn poll_now(&mut self, i: u32) {
        let now = self.now;
        if let Endpoint::Router(r) = &mut self.endpoints[i as usize] {
            r.poll_at = Some(now);
            self.schedule(now, Ev::Poll(i));
        }
    }

    /// Runs until nothing is in flight and no computation is pending; returns the time of the
    /// last delivery or computation. Timers due meanwhile fire in order; later ones wait.
    ///
    /// # Panics
    /// Only on a broken invariant (an active event missing from the queue).
    pub fn run_until_quiet(&mut self) -> Micros {
        while self.active > 0 {
            let s = self.queue.pop().expect("active events are queued");
            self.step(s);
        }
        self.last_activity
    }

    /// Processes every event up to `until` (timers included), then sets the clock to `until`.
    ///
    /// # Panics
    /// Only on a broken invariant (a peeked event gone).
    pub fn advance_to(&mut self, until: Micros) {
        while self.queue.peek().is_some_and(|s| s.at <= until) {
            let s = self.queue.pop().expect("peeked");
            self.step(s);
        }
        self.now = self.now.max(until);
    }

    fn step(&mut self, s: Scheduled) {
        self.now = self.now.max(s.at);
        if !matches!(s.ev, Ev::Timer(_)) {
            self.active -= 1;
        }
        match s.ev {
            Ev::Deliver(link) => self.deliver(link, s.seq),
            Ev::Poll(i) => self.poll(i, s.at),
            Ev::Timer(i) => self.timer(i, s.at),
            Ev::StubSend { stub, to, msg } => {
                if matches!(self.endpoints[stub as usize], Endpoint::Stub) {
                    self.send(stub, to, msg);
                }
            }
        }
    }

    fn deliver(&mut self, link: u32, seq: u64) {
        let q = &mut self.links[link as usize];
        // A session that went down lost what was in flight (counted then).
        if !q.up || q.flight.front().is_none_or(|m| m.1 != seq) {
            return;
        }
        let (_, _, msg) = q.flight.pop_front().expect("checked");
        let (from, to) = (q.from, q.to);
        if let Some(&(at, next, _)) = q.flight.front() {
            self.schedule_with(at, next, Ev::Deliver(link));
        }
        let (from_id, now) = (self.ids[from as usize], self.now);
        match &mut self.endpoints[to as usize] {
            Endpoint::Router(r) => {
                self.last_activity = now;
                self.activity[self.scope_of[to as usize] as usize] = now;
                if r.router
                    .handle_message(from_id, msg, duration(now))
                    .is_err()
                {
                    self.errors += 1;
                }
                self.after_input(to, false);
            }
            Endpoint::Stub => {
                self.last_activity = now;
                // As the far router would: acknowledge every LSA received.
                if let Message::Update(lsas) = msg {
                    let headers = lsas.iter().map(LsaInstance::header).collect();
                    self.send(to, from, Message::Ack(headers));
                }
            }
            Endpoint::Down => self.dropped += 1,
        }
    }

    fn poll(&mut self, i: u32, at: Micros) {
        let now = self.now;
        let keep = self.keep_tables;
        let Endpoint::Router(r) = &mut self.endpoints[i as usize] else {
            return;
        };
        if r.poll_at != Some(at) {
            return; // superseded by an earlier one
        }
        r.poll_at = None;
        let before = r.router.metrics().spf_runs;
        let started = Instant::now();
        let table = r.router.poll_routes_with(duration(now), &mut self.ws);
        let elapsed = started.elapsed();
        if r.router.metrics().spf_runs > before {
            self.spf_runs += 1;
            self.last_activity = now;
            let scope = self.scope_of[i as usize] as usize;
            self.activity[scope] = now;
            self.spf_in[scope] += 1;
            r.router.record_spf_duration(elapsed);
            r.last_spf_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            r.last_spf_at = Some(now);
        }
        if let Some(t) = table {
            r.table = Some(TableStats::of(&t));
            if keep {
                r.full_table = Some(t);
            }
        }
        // The computation consumed the changes its own origination signalled.
        while r.router.poll_event().is_some() {}
        self.drain(i);
        self.arm_timer(i);
    }

    fn timer(&mut self, i: u32, at: Micros) {
        let now = self.now;
        let Endpoint::Router(r) = &mut self.endpoints[i as usize] else {
            return;
        };
        if r.timer_at != Some(at) {
            return; // superseded
        }
        r.timer_at = None;
        if r.router.poll_timeout().is_some_and(|t| micros(t) <= now) {
            r.router.handle_timeout(duration(now));
        }
        self.after_input(i, false);
    }

    /// After an input to router `i`: schedule a computation if the topology changed, send,
    /// re-arm the timer.
    fn after_input(&mut self, i: u32, mut changed: bool) {
        let now = self.now;
        let throttle = self.throttle;
        let Endpoint::Router(r) = &mut self.endpoints[i as usize] else {
            return;
        };
        while let Some(e) = r.router.poll_event() {
            changed |= matches!(e, Event::TopologyChanged { .. });
        }
        if changed && r.poll_at.is_none() {
            let at = match r.last_spf_at {
                // Changes keep coming: wait the hold after the last computation, then double it.
                Some(last) if now < last + 2 * throttle.max_us => {
                    let at = (now + throttle.initial_us).max(last + r.hold_us);
                    r.hold_us = (r.hold_us * 2).min(throttle.max_us);
                    at
                }
                // Quiet for a while (or never computed): the initial delay, the hold reset.
                _ => {
                    r.hold_us = throttle.hold_us;
                    now + throttle.initial_us
                }
            };
            r.poll_at = Some(at);
            self.schedule(at, Ev::Poll(i));
        }
        self.drain(i);
        self.arm_timer(i);
    }

    fn drain(&mut self, i: u32) {
        loop {
            let Endpoint::Router(r) = &mut self.endpoints[i as usize] else {
                return;
            };
            let Some(tx) = r.router.poll_transmit() else {
                return;
            };
            match self.index.get(&tx.to) {
                Some(&to) => self.send(i, to, tx.msg),
                None => self.dropped += 1,
            }
        }
    }

    fn send(&mut self, from: u32, to: u32, msg: Message) {
        let Some(adj) = self.find_adj(from, to) else {
            self.dropped += 1;
            return;
        };
        match adj.scope {
            Scope::Domain(d) => self.traffic[d as usize].record(&msg),
            Scope::Inter => {
                self.inter.record(&msg);
                if let (Some(rec), Message::Update(_)) = (&mut self.recorded, &msg) {
                    rec.push(Recorded {
                        at: self.now,
                        from: self.ids[from as usize],
                        to: self.ids[to as usize],
                        msg: msg.clone(),
                    });
                }
            }
        }
        let at = self.now + u64::from(adj.latency_us);
        self.seq += 1;
        let seq = self.seq;
        let q = &mut self.links[adj.link as usize];
        let idle = q.flight.is_empty();
        q.flight.push_back((at, seq, msg));
        if idle {
            self.schedule_with(at, seq, Ev::Deliver(adj.link));
        }
    }

    fn arm_timer(&mut self, i: u32) {
        let now = self.now;
        let Endpoint::Router(r) = &mut self.endpoints[i as usize] else {
            return;
        };
        let Some(t) = r.router.poll_timeout().map(micros) else {
            return;
        };
        if r.timer_at.is_none_or(|cur| t < cur) {
            let at = t.max(now);
            r.timer_at = Some(at);
            self.schedule(at, Ev::Timer(i));
        }
    }

    /// Heap bytes of the SPF workspace the routers share.
    #[must_use]
    pub fn spf_workspace_bytes(&self) -> usize {
        self.ws.heap_bytes()
    }

    /// Live routers still waiting for an acknowledgement.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.routers()
            .filter(|(_, r)| r.router.flooder().has_unacked())
            .count()
    }

    /// LSAs all live routers rejected (scope violations; a simulator bug if not zero).
    #[must_use]
    pub fn lsas_rejected(&self) -> u64 {
        self.routers()
            .map(|(_, r)| {
                r.router.metrics().flood.lsas_rejected + r.router.metrics().messages_rejected
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_routing::RouterConfig;

    fn id(x: u64) -> NodeId {
        NodeId::new(x).unwrap()
    }

    #[test]
    fn a_line_of_routers_converges_and_counts() {
        let d = DomainId(1);
        let mut e = Engine::new(1, SpfThrottle::default(), true);
        let r: Vec<u32> = (1..=4)
            .map(|k| {
                e.add_router(
                    Router::new(RouterConfig::new(id(k), d), Duration::ZERO).unwrap(),
                    0,
                )
            })
            .collect();
        for w in r.windows(2) {
            e.link_up(w[0], w[1], 1, 1000, Scope::Domain(0));
        }
        let done = e.run_until_quiet();
        assert!(done > 0);
        assert_eq!(e.errors, 0);
        assert_eq!(e.unacked(), 0);
        for (_, s) in e.routers() {
            assert_eq!(s.table.unwrap().intra, 3);
        }
        // Every node LSA reaches the 3 others; a line sends each one at least 3 times.
        assert!(e.traffic[0].node_lsas >= 4 * 3);
        assert_eq!(e.inter, Traffic::default());

        // The middle link fails: two LSAs change, the line splits in two.
        let before = e.traffic[0];
        e.advance_to(e.now() + 10_000_000);
        e.link_down(r[1], r[2]);
        e.run_until_quiet();
        let cost = e.traffic[0].since(&before);
        assert!(cost.node_lsas >= 2, "{cost:?}");
        assert_eq!(e.router(r[0]).unwrap().table.unwrap().intra, 1);
    }
}
