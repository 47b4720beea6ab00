//! Reliable flooding: the per-neighbour state machine that keeps one domain's LSDB in sync.
//!
//! [`Flooder`] owns the node's [`Lsdb`] (its own domain) and the summary LSAs the node
//! originates into neighbouring domains when it is a border node. Inputs are `handle_*` calls
//! with the current time; outputs are polled: [`Flooder::poll_transmit`] (a [`Message`] for one
//! neighbour), [`Flooder::poll_timeout`] (when to call [`Flooder::handle_timeout`] next),
//! [`Flooder::poll_event`].
//!
//! Rules:
//! - **Scope.** An LSA of the node's domain is flooded to every neighbour in that domain except
//!   the one it came from; it never crosses to a neighbour in another domain. A border's
//!   summary LSA for domain X goes only to its neighbours in X, who flood it inside X. From a
//!   neighbour in another domain the only LSA accepted is that neighbour's own summary into
//!   our domain (and our own summary for its domain, echoed back); anything else is counted in
//!   [`FloodStats::lsas_rejected`] and dropped.
//! - **Reliability.** Every LSA sent to a neighbour stays on that neighbour's retransmission
//!   list until acknowledged by an [`Message::Ack`] naming the same instance (or implicitly, by
//!   the neighbour sending that same instance), and is resent every `retransmit_interval`.
//!   Installing a newer instance replaces older ones on every list.
//! - **Receive** ([`Flooder::handle_lsa`]): newer than held → install, flood, acknowledge; the
//!   same → implied acknowledgement or an acknowledgement; older → answer with the held copy.
//!   A flush (MaxAge) of something not held is acknowledged and dropped.
//! - **Own LSAs.** If the network holds an instance of one of our own LSAs that is newer than
//!   ours (we restarted and begin again at sequence 1), we re-originate our current content
//!   with that number + 1. Own LSAs are refreshed (re-originated, same content) every
//!   `refresh_interval` minus up to 10 % seeded jitter, well before [`crate::lsa::MAX_AGE_S`].
//! - **Database sync.** When an adjacency inside the domain comes up each side sends a
//!   [`Message::DbSummary`] (all headers, retransmitted until a [`Message::SummaryAck`]); each
//!   side answers the other's summary with every LSA the other lacks or holds older. Since both
//!   sides do this no request message is needed. Towards a neighbour in another domain, the
//!   node just sends its summary LSA for that domain.
//!
//! Sends are batched: everything one `handle_*` call queues for a neighbour leaves as one
//! update (split at [`MAX_LSAS_PER_UPDATE`] / [`MAX_MESSAGE_LEN`]) and one acknowledgement.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::hash::SplitMix64;
use crate::ids::{DomainId, NodeId, SeqNo};
use crate::lsa::{CodecError, Link, Lsa, LsaHeader, LsaInstance, MAX_AGE_S, Summary};
use crate::lsdb::{Freshness, Lsdb, LsdbError, compare, secs};
use crate::message::{
    MAX_HEADERS_PER_MESSAGE, MAX_LSAS_PER_UPDATE, MAX_MESSAGE_LEN, MESSAGE_PREFIX_LEN, Message,
};

/// Settings of a [`Flooder`] (validated by [`crate::router::RouterConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodConfig {
    /// This node.
    pub node: NodeId,
    /// This node's domain.
    pub domain: DomainId,
    /// Time between retransmissions of unacknowledged LSAs and database summaries.
    pub retransmit_interval: Duration,
    /// Time between refreshes of own LSAs (must stay well below MaxAge).
    pub refresh_interval: Duration,
    /// Most adjacent neighbours.
    pub max_neighbors: usize,
    /// Most origins in the LSDB.
    pub max_origins: usize,
    /// Seed of the refresh jitter.
    pub seed: u64,
}

/// One message for one neighbour.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// The neighbour to send to.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

/// Something the owner of the flooder should know about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FloodEvent {
    /// The LSDB of `domain` changed in a way that affects routes (recompute).
    TopologyChanged {
        /// The domain.
        domain: DomainId,
    },
    /// LSAs from new origins were dropped because the LSDB is full.
    LsdbFull {
        /// The domain.
        domain: DomainId,
        /// Its origin limit.
        limit: usize,
    },
}

/// Errors of flooder inputs. Bad LSAs inside a message are not errors: they are counted and
/// dropped so that one bad entry does not cost the good ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FloodError {
    /// A message or event names a node that is not an adjacent neighbour.
    #[error("{neighbor} is not an adjacent neighbour")]
    UnknownNeighbor {
        /// The node.
        neighbor: NodeId,
    },
    /// `handle_neighbor_up` for a neighbour already up.
    #[error("neighbour {neighbor} is already up")]
    AlreadyUp {
        /// The neighbour.
        neighbor: NodeId,
    },
    /// The neighbour table is full.
    #[error("too many neighbours: {count} exceeds the limit of {limit}")]
    TooManyNeighbors {
        /// The limit.
        limit: usize,
        /// Neighbours there would be.
        count: usize,
    },
    /// A node named itself as its neighbour.
    #[error("node {node} cannot be its own neighbour")]
    SelfNeighbor {
        /// The node.
        node: NodeId,
    },
}

/// Errors of originating an own LSA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The content breaks an LSA rule or limit.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The LSDB has no room (only possible if it was filled before the own LSA).
    #[error(transparent)]
    Lsdb(#[from] LsdbError),
}

/// Counters of the flooding protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodStats {
    /// LSAs received in updates.
    pub lsas_received: u64,
    /// Received LSAs installed (newer than held).
    pub lsas_installed: u64,
    /// LSAs sent in updates (first sends and retransmissions).
    pub lsas_sent: u64,
    /// LSAs queued again because their acknowledgement did not come in time.
    pub lsas_retransmitted: u64,
    /// LSAs dropped for breaking a scope rule.
    pub lsas_rejected: u64,
    /// LSAs from new origins dropped because the LSDB was full.
    pub lsas_dropped_full: u64,
    /// LSA headers acknowledged to neighbours.
    pub acks_sent: u64,
    /// LSA headers acknowledged by neighbours.
    pub acks_received: u64,
    /// Own LSAs originated (changes, refreshes, re-originations).
    pub lsas_originated: u64,
    /// LSDB entries purged by ageing.
    pub lsas_purged: u64,
    /// Messages produced.
    pub messages_sent: u64,
}

type Key = (DomainId, NodeId);

/// Most events held for the owner; beyond it new events are dropped (they are hints: the
/// counters and the LSDB stay exact).
pub const MAX_PENDING_EVENTS: usize = 64;

/// The instance last sent to a neighbour for one key, awaiting acknowledgement.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: SeqNo,
    checksum: u32,
    max_age: bool,
    /// In the outbox, to be (re)sent by the next flush.
    queued: bool,
}

impl Pending {
    fn matches(&self, h: &LsaHeader) -> bool {
        !self.queued
            && self.seq == h.seq
            && self.checksum == h.checksum
            && self.max_age == h.is_max_age()
    }
}

#[derive(Debug)]
struct Neighbor {
    id: NodeId,
    domain: DomainId,
    pending: BTreeMap<Key, Pending>,
    outbox: Vec<Key>,
    acks: Vec<LsaHeader>,
    summary_unacked: bool,
    send_summary: bool,
    send_summary_ack: bool,
    rxmt_deadline: Option<Duration>,
}

impl Neighbor {
    fn queue(&mut self, key: Key) {
        let p = self.pending.entry(key).or_insert(Pending {
            seq: SeqNo(0),
            checksum: 0,
            max_age: false,
            queued: false,
        });
        if !p.queued {
            p.queued = true;
            self.outbox.push(key);
        }
    }
}

#[derive(Debug)]
struct OwnSummary {
    domain: DomainId,
    lsa: Option<Lsa>,
    /// The newest sequence number used or seen for this scope.
    seq_floor: SeqNo,
    originated_at: Duration,
    refresh_at: Duration,
}

/// The flooding state machine of one node (see the module docs).
#[derive(Debug)]
pub struct Flooder {
    config: FloodConfig,
    lsdb: Lsdb,
    own_refresh_at: Duration,
    own_summaries: Vec<OwnSummary>,
    neighbors: Vec<Neighbor>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<FloodEvent>,
    topology_changed: bool,
    lsdb_full: bool,
    rng: SplitMix64,
    stats: FloodStats,
}

/// The instance currently held for `key`, if any.
fn current_instance(
    lsdb: &Lsdb,
    own_summaries: &[OwnSummary],
    key: Key,
    now: Duration,
) -> Option<LsaInstance> {
    if key.0 == lsdb.domain() {
        return lsdb.instance(key.1, now);
    }
    let s = own_summaries.iter().find(|s| s.domain == key.0)?;
    let lsa = s.lsa.clone()?;
    let age = secs(now).saturating_sub(secs(s.originated_at));
    Some(LsaInstance {
        age_s: u16::try_from(age).unwrap_or(MAX_AGE_S).min(MAX_AGE_S),
        lsa,
    })
}

impl Flooder {
    /// A flooder for `config.node`, holding just its own (empty) node LSA.
    ///
    /// # Panics
    /// If the configuration is unusable (zero limits or intervals); [`crate::router`] validates
    /// it first.
    #[must_use]
    pub fn new(config: FloodConfig, now: Duration) -> Flooder {
        assert!(config.max_neighbors > 0 && config.max_origins > 0);
        assert!(config.max_origins <= MAX_HEADERS_PER_MESSAGE);
        assert!(!config.retransmit_interval.is_zero() && !config.refresh_interval.is_zero());
        let mut lsdb = Lsdb::new(config.domain, config.node, config.max_origins);
        let own = Lsa::new(config.node, config.domain, SeqNo::INITIAL, Vec::new(), None)
            .expect("an empty node LSA is valid");
        lsdb.install_own(own, now)
            .expect("an empty LSDB has room for the own LSA");
        let mut f = Flooder {
            rng: SplitMix64::new(config.seed),
            config,
            lsdb,
            own_refresh_at: Duration::ZERO,
            own_summaries: Vec::new(),
            neighbors: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            topology_changed: false,
            lsdb_full: false,
            stats: FloodStats::default(),
        };
        f.own_refresh_at = f.refresh_deadline(now);
        f.stats.lsas_originated = 1;
        f
    }

    /// The node's LSDB.
    #[must_use]
    pub const fn lsdb(&self) -> &Lsdb {
        &self.lsdb
    }

    /// Protocol counters.
    #[must_use]
    pub const fn stats(&self) -> &FloodStats {
        &self.stats
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &FloodConfig {
        &self.config
    }

    /// Adjacent neighbours and their domains, sorted by id.
    pub fn neighbors(&self) -> impl Iterator<Item = (NodeId, DomainId)> + '_ {
        self.neighbors.iter().map(|n| (n.id, n.domain))
    }

    /// The summary LSA this node currently originates into `domain`, if any.
    #[must_use]
    pub fn own_summary(&self, domain: DomainId) -> Option<&Lsa> {
        self.own_summaries
            .iter()
            .find(|s| s.domain == domain)
            .and_then(|s| s.lsa.as_ref())
    }

    /// Whether any neighbour has unacknowledged LSAs or summary.
    #[must_use]
    pub fn has_unacked(&self) -> bool {
        self.neighbors
            .iter()
            .any(|n| !n.pending.is_empty() || n.summary_unacked)
    }

    /// Heap bytes held (LSDB index, neighbour state, queues), LSAs themselves not counted.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        let per_neighbor: usize = self
            .neighbors
            .iter()
            .map(|n| {
                n.pending.len() * (core::mem::size_of::<(Key, Pending)>() + 16)
                    + n.outbox.capacity() * core::mem::size_of::<Key>()
                    + n.acks.capacity() * core::mem::size_of::<LsaHeader>()
            })
            .sum();
        self.lsdb.heap_bytes()
            + self.neighbors.capacity() * core::mem::size_of::<Neighbor>()
            + per_neighbor
            + self.own_summaries.capacity() * core::mem::size_of::<OwnSummary>()
    }

    fn refresh_deadline(&mut self, now: Duration) -> Duration {
        let interval = self.config.refresh_interval;
        let jitter_ms = self
            .rng
            .below(u64::try_from(interval.as_millis() / 10).unwrap_or(u64::MAX));
        (now + interval).saturating_sub(Duration::from_millis(jitter_ms))
    }

    fn neighbor_index(&self, id: NodeId) -> Result<usize, FloodError> {
        self.neighbors
            .binary_search_by_key(&id, |n| n.id)
            .map_err(|_| FloodError::UnknownNeighbor { neighbor: id })
    }

    /// An adjacency with `neighbor` (a node of `domain`) came up: start the database sync.
    pub fn handle_neighbor_up(
        &mut self,
        neighbor: NodeId,
        domain: DomainId,
        now: Duration,
    ) -> Result<(), FloodError> {
        if neighbor == self.config.node {
            return Err(FloodError::SelfNeighbor { node: neighbor });
        }
        let Err(at) = self.neighbors.binary_search_by_key(&neighbor, |n| n.id) else {
            return Err(FloodError::AlreadyUp { neighbor });
        };
        if self.neighbors.len() >= self.config.max_neighbors {
            return Err(FloodError::TooManyNeighbors {
                limit: self.config.max_neighbors,
                count: self.neighbors.len() + 1,
            });
        }
        let mut n = Neighbor {
            id: neighbor,
            domain,
            pending: BTreeMap::new(),
            outbox: Vec::new(),
            acks: Vec::new(),
            summary_unacked: false,
            send_summary: false,
            send_summary_ack: false,
            rxmt_deadline: None,
        };
        if domain == self.config.domain {
            n.summary_unacked = true;
            n.send_summary = true;
        } else if self.own_summary(domain).is_some() {
            n.queue((domain, self.config.node));
        }
        self.neighbors.insert(at, n);
        self.flush(now);
        Ok(())
    }

    /// The adjacency with `neighbor` went down: forget its state. When it was the last
    /// neighbour in a foreign domain, the summary for that domain is no longer originated.
    pub fn handle_neighbor_down(
        &mut self,
        neighbor: NodeId,
        now: Duration,
    ) -> Result<(), FloodError> {
        let i = self.neighbor_index(neighbor)?;
        let gone = self.neighbors.remove(i);
        if gone.domain != self.config.domain
            && !self.neighbors.iter().any(|n| n.domain == gone.domain)
        {
            self.own_summaries.retain(|s| s.domain != gone.domain);
        }
        self.flush(now);
        Ok(())
    }

    /// Dispatches one decoded message from `from`.
    pub fn handle_message(
        &mut self,
        from: NodeId,
        msg: Message,
        now: Duration,
    ) -> Result<(), FloodError> {
        let i = self.neighbor_index(from)?;
        match msg {
            Message::Update(lsas) => {
                for inst in lsas {
                    self.process_lsa(i, inst, now);
                }
            }
            Message::Ack(headers) => self.process_acks(i, &headers),
            Message::DbSummary(headers) => self.process_db_summary(i, &headers, now),
            Message::SummaryAck => self.neighbors[i].summary_unacked = false,
        }
        self.flush(now);
        Ok(())
    }

    /// One LSA instance received from `from`.
    pub fn handle_lsa(
        &mut self,
        from: NodeId,
        inst: LsaInstance,
        now: Duration,
    ) -> Result<(), FloodError> {
        let i = self.neighbor_index(from)?;
        self.process_lsa(i, inst, now);
        self.flush(now);
        Ok(())
    }

    /// Acknowledgements received from `from`.
    pub fn handle_ack(
        &mut self,
        from: NodeId,
        headers: &[LsaHeader],
        now: Duration,
    ) -> Result<(), FloodError> {
        let i = self.neighbor_index(from)?;
        self.process_acks(i, headers);
        self.flush(now);
        Ok(())
    }

    /// Retransmits what is due, ages the LSDB, refreshes own LSAs.
    ///
    /// # Panics
    /// Only on a broken invariant (the own LSA is always in the LSDB).
    pub fn handle_timeout(&mut self, now: Duration) {
        for n in &mut self.neighbors {
            if n.rxmt_deadline.is_some_and(|d| d <= now) {
                n.rxmt_deadline = None;
                for (key, p) in &mut n.pending {
                    if !p.queued {
                        p.queued = true;
                        n.outbox.push(*key);
                        self.stats.lsas_retransmitted += 1;
                    }
                }
                if n.summary_unacked {
                    n.send_summary = true;
                }
            }
        }
        let aged = self.lsdb.age_out(now);
        if aged.purged > 0 {
            self.stats.lsas_purged += aged.purged as u64;
            self.topology_changed = true;
        }
        if self.own_refresh_at <= now {
            let own = self
                .lsdb
                .get(self.config.node)
                .expect("the own LSA is always held");
            let lsa = own.with_seq(own.seq().next());
            self.install_own(lsa, now);
        }
        for idx in 0..self.own_summaries.len() {
            let s = &self.own_summaries[idx];
            if let (Some(lsa), true) = (&s.lsa, s.refresh_at <= now) {
                let lsa = lsa.with_seq(lsa.seq().next());
                self.set_own_summary(idx, lsa, now);
            }
        }
        self.flush(now);
    }

    /// (Re)originates this node's node LSA with `links`. Returns whether anything changed
    /// (same content: nothing is sent).
    ///
    /// # Panics
    /// Only on a broken invariant (the own LSA is always in the LSDB).
    pub fn originate_own(
        &mut self,
        links: Vec<Link>,
        now: Duration,
    ) -> Result<bool, OriginateError> {
        let current = self
            .lsdb
            .get(self.config.node)
            .expect("the own LSA is always held");
        let lsa = Lsa::new(
            self.config.node,
            self.config.domain,
            current.seq().next(),
            links,
            None,
        )?;
        if lsa.same_content(current) {
            return Ok(false);
        }
        self.install_own(lsa, now);
        self.flush(now);
        Ok(true)
    }

    /// (Re)originates this border node's summary LSA into neighbouring `domain`, with its
    /// `links` to that domain's nodes. Returns whether anything changed.
    ///
    /// # Panics
    /// If `domain` is this node's own domain (a caller bug).
    pub fn originate_summary(
        &mut self,
        domain: DomainId,
        links: Vec<Link>,
        summary: Summary,
        now: Duration,
    ) -> Result<bool, OriginateError> {
        assert_ne!(domain, self.config.domain, "summaries go to other domains");
        let idx = self
            .own_summaries
            .iter()
            .position(|s| s.domain == domain)
            .unwrap_or_else(|| {
                self.own_summaries.push(OwnSummary {
                    domain,
                    lsa: None,
                    seq_floor: SeqNo(SeqNo::INITIAL.0.wrapping_sub(1)),
                    originated_at: now,
                    refresh_at: now,
                });
                self.own_summaries.len() - 1
            });
        let s = &self.own_summaries[idx];
        let seq = s.lsa.as_ref().map_or(s.seq_floor, Lsa::seq).next();
        let lsa = Lsa::new(self.config.node, domain, seq, links, Some(summary))?;
        if s.lsa.as_ref().is_some_and(|cur| cur.same_content(&lsa)) {
            return Ok(false);
        }
        self.set_own_summary(idx, lsa, now);
        self.flush(now);
        Ok(true)
    }

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<FloodEvent> {
        self.events.pop_front()
    }

    /// When [`Flooder::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let rxmt = self.neighbors.iter().filter_map(|n| n.rxmt_deadline).min();
        let summaries = self
            .own_summaries
            .iter()
            .filter(|s| s.lsa.is_some())
            .map(|s| s.refresh_at)
            .min();
        [
            rxmt,
            summaries,
            self.lsdb.next_expiry(),
            Some(self.own_refresh_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn install_own(&mut self, lsa: Lsa, now: Duration) {
        let installed = self
            .lsdb
            .install_own(lsa, now)
            .expect("the own LSA already has its slot");
        if installed.content_changed {
            self.topology_changed = true;
        }
        self.stats.lsas_originated += 1;
        self.own_refresh_at = self.refresh_deadline(now);
        self.flood((self.config.domain, self.config.node), None);
    }

    fn set_own_summary(&mut self, idx: usize, lsa: Lsa, now: Duration) {
        let refresh_at = self.refresh_deadline(now);
        let s = &mut self.own_summaries[idx];
        s.seq_floor = lsa.seq();
        s.lsa = Some(lsa);
        s.originated_at = now;
        s.refresh_at = refresh_at;
        let key = (s.domain, self.config.node);
        self.stats.lsas_originated += 1;
        for n in &mut self.neighbors {
            if n.domain == key.0 {
                n.queue(key);
            }
        }
    }

    /// Queues `key` to every neighbour of the node's domain except `except`, from whose list
    /// any older instance is dropped.
    fn flood(&mut self, key: Key, except: Option<usize>) {
        debug_assert_eq!(key.0, self.config.domain);
        for (i, n) in self.neighbors.iter_mut().enumerate() {
            if n.domain != key.0 {
                continue;
            }
            if Some(i) == except {
                n.pending.remove(&key);
            } else {
                n.queue(key);
            }
        }
    }

    fn reject(&mut self) {
        self.stats.lsas_rejected += 1;
    }

    fn ack(&mut self, i: usize, h: LsaHeader) {
        self.neighbors[i].acks.push(h);
    }

    /// The neighbour sent the very instance we hold: an implied acknowledgement if we were
    /// waiting for one, otherwise it wants an acknowledgement.
    fn duplicate(&mut self, i: usize, h: LsaHeader) {
        let n = &mut self.neighbors[i];
        let key = (h.domain, h.origin);
        if n.pending.get(&key).is_some_and(|p| p.matches(&h)) {
            n.pending.remove(&key);
        } else {
            n.acks.push(h);
        }
    }

    fn process_lsa(&mut self, i: usize, inst: LsaInstance, now: Duration) {
        self.stats.lsas_received += 1;
        let home = self.config.domain;
        let (nb_id, nb_domain) = (self.neighbors[i].id, self.neighbors[i].domain);
        let scope = inst.lsa.domain();
        let origin = inst.lsa.origin();
        if origin == self.config.node {
            if scope == home && nb_domain == home {
                self.process_own_node_lsa(i, &inst, now);
            } else if scope != home && scope == nb_domain {
                self.process_own_summary(i, &inst, now);
            } else {
                self.reject();
            }
            return;
        }
        if scope != home {
            self.reject();
            return;
        }
        if nb_domain != home {
            // A neighbour in another domain may only send its own summary into ours.
            let own_summary = origin == nb_id
                && inst
                    .lsa
                    .summary()
                    .is_some_and(|s| s.home_domain() == nb_domain);
            if !own_summary {
                self.reject();
                return;
            }
        }
        let header = inst.header();
        match self.lsdb.freshness(&inst, now) {
            None if inst.is_max_age() => self.ack(i, header),
            None | Some(Freshness::Newer) => match self.lsdb.install(inst, now) {
                Ok(installed) => {
                    self.stats.lsas_installed += 1;
                    if installed.content_changed {
                        self.topology_changed = true;
                    }
                    self.flood((home, origin), Some(i));
                    self.ack(i, header);
                }
                Err(LsdbError::Full { .. }) => {
                    // Acknowledge so the neighbour stops resending what we cannot hold.
                    self.stats.lsas_dropped_full += 1;
                    self.lsdb_full = true;
                    self.ack(i, header);
                }
            },
            Some(Freshness::Same) => self.duplicate(i, header),
            Some(Freshness::Older) => self.neighbors[i].queue((home, origin)),
        }
    }

    fn process_own_node_lsa(&mut self, i: usize, inst: &LsaInstance, now: Duration) {
        let node = self.config.node;
        let held = self
            .lsdb
            .header(node, now)
            .expect("the own LSA is always held");
        match compare(&inst.header(), &held) {
            Freshness::Newer => {
                // The network remembers a newer instance of ours (we restarted): jump past it.
                let own = self.lsdb.get(node).expect("the own LSA is always held");
                let lsa = own.with_seq(inst.lsa.seq().next());
                self.install_own(lsa, now);
            }
            Freshness::Same => self.duplicate(i, inst.header()),
            Freshness::Older => self.neighbors[i].queue((self.config.domain, node)),
        }
    }

    fn process_own_summary(&mut self, i: usize, inst: &LsaInstance, now: Duration) {
        let scope = inst.lsa.domain();
        let Some(idx) = self.own_summaries.iter().position(|s| s.domain == scope) else {
            // Not originating for this domain (yet): remember the number so the first
            // origination starts past it, and stop the neighbour's retransmissions.
            self.own_summaries.push(OwnSummary {
                domain: scope,
                lsa: None,
                seq_floor: inst.lsa.seq(),
                originated_at: now,
                refresh_at: now,
            });
            self.ack(i, inst.header());
            return;
        };
        let s = &mut self.own_summaries[idx];
        let Some(current) = s.lsa.clone() else {
            if inst.lsa.seq().is_newer_than(s.seq_floor) {
                s.seq_floor = inst.lsa.seq();
            }
            self.ack(i, inst.header());
            return;
        };
        let held = current_instance(
            &self.lsdb,
            &self.own_summaries,
            (scope, current.origin()),
            now,
        )
        .expect("an originated summary has an instance")
        .header();
        match compare(&inst.header(), &held) {
            Freshness::Newer => {
                let lsa = current.with_seq(inst.lsa.seq().next());
                self.set_own_summary(idx, lsa, now);
            }
            Freshness::Same => self.duplicate(i, inst.header()),
            Freshness::Older => self.neighbors[i].queue((scope, self.config.node)),
        }
    }

    fn process_acks(&mut self, i: usize, headers: &[LsaHeader]) {
        let n = &mut self.neighbors[i];
        for h in headers {
            self.stats.acks_received += 1;
            let key = (h.domain, h.origin);
            if n.pending.get(&key).is_some_and(|p| p.matches(h)) {
                n.pending.remove(&key);
            }
        }
    }

    fn process_db_summary(&mut self, i: usize, headers: &[LsaHeader], now: Duration) {
        let home = self.config.domain;
        if self.neighbors[i].domain != home {
            self.reject();
            return;
        }
        let mut theirs: Vec<LsaHeader> = headers
            .iter()
            .filter(|h| h.domain == home)
            .copied()
            .collect();
        theirs.sort_unstable_by_key(|h| h.origin);
        let mut wanted = Vec::new();
        for ours in self.lsdb.headers(now) {
            let send = match theirs.binary_search_by_key(&ours.origin, |h| h.origin) {
                Err(_) => !ours.is_max_age(),
                Ok(j) => compare(&ours, &theirs[j]) == Freshness::Newer,
            };
            if send {
                wanted.push((home, ours.origin));
            }
        }
        let n = &mut self.neighbors[i];
        for key in wanted {
            n.queue(key);
        }
        n.send_summary_ack = true;
    }

    /// Turns everything queued into messages, arms retransmission timers, raises events.
    fn flush(&mut self, now: Duration) {
        for n in &mut self.neighbors {
            if n.send_summary_ack {
                n.send_summary_ack = false;
                self.transmits.push_back(Transmit {
                    to: n.id,
                    msg: Message::SummaryAck,
                });
                self.stats.messages_sent += 1;
            }
            if n.send_summary {
                n.send_summary = false;
                let headers = self.lsdb.headers(now);
                debug_assert!(headers.len() <= MAX_HEADERS_PER_MESSAGE);
                self.transmits.push_back(Transmit {
                    to: n.id,
                    msg: Message::DbSummary(headers),
                });
                self.stats.messages_sent += 1;
            }
            if !n.outbox.is_empty() {
                let keys = std::mem::take(&mut n.outbox);
                let mut batch: Vec<LsaInstance> = Vec::new();
                let mut batch_len = MESSAGE_PREFIX_LEN;
                for key in keys {
                    let Some(p) = n.pending.get_mut(&key) else {
                        continue;
                    };
                    if !p.queued {
                        continue;
                    }
                    let Some(mut inst) =
                        current_instance(&self.lsdb, &self.own_summaries, key, now)
                    else {
                        n.pending.remove(&key);
                        continue;
                    };
                    // One second of transmission delay, as OSPF's InfTransDelay.
                    inst.age_s = inst.age_s.saturating_add(1).min(MAX_AGE_S);
                    *p = Pending {
                        seq: inst.lsa.seq(),
                        checksum: inst.lsa.checksum(),
                        max_age: inst.is_max_age(),
                        queued: false,
                    };
                    let len = inst.lsa.encoded_len();
                    if batch.len() == MAX_LSAS_PER_UPDATE || batch_len + len > MAX_MESSAGE_LEN {
                        self.stats.lsas_sent += batch.len() as u64;
                        self.stats.messages_sent += 1;
                        self.transmits.push_back(Transmit {
                            to: n.id,
                            msg: Message::Update(std::mem::take(&mut batch)),
                        });
                        batch_len = MESSAGE_PREFIX_LEN;
                    }
                    batch_len += len;
                    batch.push(inst);
                }
                if !batch.is_empty() {
                    self.stats.lsas_sent += batch.len() as u64;
                    self.stats.messages_sent += 1;
                    self.transmits.push_back(Transmit {
                        to: n.id,
                        msg: Message::Update(batch),
                    });
                }
            }
            if !n.acks.is_empty() {
                let acks = std::mem::take(&mut n.acks);
                self.stats.acks_sent += acks.len() as u64;
                for chunk in acks.chunks(MAX_HEADERS_PER_MESSAGE) {
                    self.stats.messages_sent += 1;
                    self.transmits.push_back(Transmit {
                        to: n.id,
                        msg: Message::Ack(chunk.to_vec()),
                    });
                }
            }
            let waiting = !n.pending.is_empty() || n.summary_unacked;
            if !waiting {
                n.rxmt_deadline = None;
            } else if n.rxmt_deadline.is_none() {
                n.rxmt_deadline = Some(now + self.config.retransmit_interval);
            }
            debug_assert!(n.pending.values().all(|p| !p.queued));
        }
        if std::mem::take(&mut self.topology_changed) {
            self.push_event(FloodEvent::TopologyChanged {
                domain: self.config.domain,
            });
        }
        if std::mem::take(&mut self.lsdb_full) {
            self.push_event(FloodEvent::LsdbFull {
                domain: self.config.domain,
                limit: self.config.max_origins,
            });
        }
    }

    /// Queues `e` unless the same event is already waiting or the queue is full.
    fn push_event(&mut self, e: FloodEvent) {
        if self.events.len() < MAX_PENDING_EVENTS && !self.events.contains(&e) {
            self.events.push_back(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsa::DomainMembers;
    use crate::lsa::tests::n;

    const D: DomainId = DomainId(1);
    const X: DomainId = DomainId(2);

    fn cfg(node: u64, domain: DomainId) -> FloodConfig {
        FloodConfig {
            node: n(node),
            domain,
            retransmit_interval: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(1800),
            max_neighbors: 16,
            max_origins: 64,
            seed: node,
        }
    }

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn drain(f: &mut Flooder) -> Vec<Transmit> {
        std::iter::from_fn(|| f.poll_transmit()).collect()
    }

    fn updates_to(tx: &[Transmit], to: u64) -> Vec<LsaInstance> {
        tx.iter()
            .filter(|t| t.to == n(to))
            .filter_map(|t| match &t.msg {
                Message::Update(l) => Some(l.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn node_lsa(origin: u64, seq: u32, links: &[(u64, u32)]) -> LsaInstance {
        LsaInstance {
            age_s: 0,
            lsa: Lsa::new(
                n(origin),
                D,
                SeqNo(seq),
                links.iter().map(|(nb, c)| Link::up(n(*nb), *c)).collect(),
                None,
            )
            .unwrap(),
        }
    }

    #[test]
    fn sync_on_adjacency_up_sends_summary_and_retransmits_until_acked() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        let tx = drain(&mut f);
        assert_eq!(tx.len(), 1);
        assert!(matches!(&tx[0].msg, Message::DbSummary(h) if h.len() == 1 && h[0].origin == n(1)));
        assert_eq!(f.poll_timeout(), Some(t(5)));
        f.handle_timeout(t(5));
        let tx = drain(&mut f);
        assert!(
            matches!(&tx[0].msg, Message::DbSummary(_)),
            "summary resent"
        );
        f.handle_message(n(2), Message::SummaryAck, t(6)).unwrap();
        assert!(!f.has_unacked());
        // The neighbour's summary is empty: it lacks our LSA, so we push it.
        f.handle_message(n(2), Message::DbSummary(vec![]), t(6))
            .unwrap();
        let tx = drain(&mut f);
        assert_eq!(updates_to(&tx, 2).len(), 1);
        assert!(tx.iter().any(|t| t.msg == Message::SummaryAck));
        assert!(f.has_unacked());
    }

    #[test]
    fn new_lsa_is_flooded_to_others_acked_to_sender_and_retransmitted() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        for nb in [2, 3, 4] {
            f.handle_neighbor_up(n(nb), D, t(0)).unwrap();
            f.handle_message(n(nb), Message::SummaryAck, t(0)).unwrap();
        }
        drain(&mut f);
        let lsa = node_lsa(9, 1, &[(2, 1)]);
        f.handle_message(n(2), Message::Update(vec![lsa.clone()]), t(1))
            .unwrap();
        let tx = drain(&mut f);
        assert!(updates_to(&tx, 2).is_empty(), "not back to the sender");
        assert_eq!(updates_to(&tx, 3).len(), 1);
        assert_eq!(updates_to(&tx, 4)[0].age_s, 1, "age grows by one per hop");
        assert!(
            tx.iter()
                .any(|t| t.to == n(2) && matches!(&t.msg, Message::Ack(h) if h[0] == lsa.header()))
        );
        assert_eq!(
            f.poll_event(),
            Some(FloodEvent::TopologyChanged { domain: D })
        );
        // Neighbour 3 acks, 4 does not: only 4 gets a retransmission.
        let sent = updates_to(&tx, 3)[0].header();
        f.handle_ack(n(3), &[sent], t(2)).unwrap();
        f.handle_timeout(t(6));
        let tx = drain(&mut f);
        assert!(updates_to(&tx, 3).is_empty());
        assert_eq!(updates_to(&tx, 4).len(), 1);
        assert_eq!(f.stats().lsas_retransmitted, 1);
        // Neighbour 4 floods the same instance back: implied acknowledgement.
        f.handle_lsa(n(4), updates_to(&tx, 4)[0].clone(), t(7))
            .unwrap();
        assert!(!f.has_unacked());
        assert!(drain(&mut f).is_empty());
    }

    #[test]
    fn older_instance_is_answered_with_ours() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        f.handle_neighbor_up(n(3), D, t(0)).unwrap();
        f.handle_lsa(n(2), node_lsa(9, 5, &[]), t(0)).unwrap();
        drain(&mut f);
        f.handle_lsa(n(3), node_lsa(9, 4, &[]), t(1)).unwrap();
        let tx = drain(&mut f);
        let back = updates_to(&tx, 3);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].lsa.seq(), SeqNo(5));
    }

    #[test]
    fn restarted_origin_jumps_past_its_old_number() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        f.originate_own(vec![Link::up(n(2), 1)], t(0)).unwrap();
        drain(&mut f);
        // The network still holds our instance 41 from before a restart.
        let old = node_lsa(1, 41, &[(2, 7)]);
        f.handle_lsa(n(2), old, t(1)).unwrap();
        let own = f.lsdb().get(n(1)).unwrap();
        assert_eq!(own.seq(), SeqNo(42));
        assert_eq!(own.links()[0].cost, 1, "our content, their number + 1");
        let tx = drain(&mut f);
        assert_eq!(updates_to(&tx, 2)[0].lsa.seq(), SeqNo(42));
    }

    #[test]
    fn scope_rules_reject_what_may_not_cross() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(5), X, t(0)).unwrap();
        // A node LSA of domain D from a neighbour in X: not allowed.
        f.handle_lsa(n(5), node_lsa(9, 1, &[]), t(0)).unwrap();
        // A node LSA of domain X: not ours to hold.
        let foreign = Lsa::new(n(5), X, SeqNo(1), vec![], None).unwrap();
        f.handle_lsa(
            n(5),
            LsaInstance {
                age_s: 0,
                lsa: foreign,
            },
            t(0),
        )
        .unwrap();
        assert_eq!(f.stats().lsas_rejected, 2);
        assert!(f.lsdb().get(n(9)).is_none());
        // Its own summary into D is accepted, and never flooded back to another domain.
        let summary = Summary::new(
            X,
            vec![],
            vec![DomainMembers::new(X, vec![crate::lsa::NodeRange::single(n(5))]).unwrap()],
        )
        .unwrap();
        let lsa = Lsa::new(n(5), D, SeqNo(1), vec![Link::up(n(1), 3)], Some(summary)).unwrap();
        f.handle_neighbor_up(n(6), X, t(0)).unwrap();
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        drain(&mut f);
        f.handle_lsa(n(5), LsaInstance { age_s: 0, lsa }, t(1))
            .unwrap();
        assert!(f.lsdb().get(n(5)).is_some());
        let tx = drain(&mut f);
        assert!(updates_to(&tx, 6).is_empty());
        assert_eq!(updates_to(&tx, 2).len(), 1);
    }

    #[test]
    fn summary_goes_only_to_that_domain_and_is_resent_on_adjacency() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        f.handle_neighbor_up(n(5), X, t(0)).unwrap();
        drain(&mut f);
        let summary = Summary::new(D, vec![], vec![]).unwrap();
        assert!(
            f.originate_summary(X, vec![Link::up(n(5), 2)], summary.clone(), t(1))
                .unwrap()
        );
        assert!(
            !f.originate_summary(X, vec![Link::up(n(5), 2)], summary, t(1))
                .unwrap(),
            "same content is not re-sent"
        );
        let tx = drain(&mut f);
        assert_eq!(updates_to(&tx, 5).len(), 1);
        assert!(updates_to(&tx, 2).is_empty());
        f.handle_neighbor_up(n(6), X, t(2)).unwrap();
        let tx = drain(&mut f);
        assert_eq!(updates_to(&tx, 6)[0].lsa.domain(), X);
        // The last X neighbour leaving ends the summary.
        f.handle_neighbor_down(n(5), t(3)).unwrap();
        f.handle_neighbor_down(n(6), t(3)).unwrap();
        assert!(f.own_summary(X).is_none());
    }

    #[test]
    fn refresh_and_purge_by_time() {
        let mut f = Flooder::new(cfg(1, D), t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        f.handle_message(n(2), Message::SummaryAck, t(0)).unwrap();
        f.handle_lsa(n(2), node_lsa(9, 1, &[]), t(0)).unwrap();
        drain(&mut f);
        while f.poll_event().is_some() {}
        let mut now = t(0);
        let mut refreshed = 0;
        while now < t(4000) {
            now = f
                .poll_timeout()
                .unwrap()
                .max(now + Duration::from_millis(1));
            let before = f.lsdb().get(n(1)).unwrap().seq();
            f.handle_timeout(now);
            if f.lsdb().get(n(1)).unwrap().seq() != before {
                refreshed += 1;
            }
            for tx in drain(&mut f) {
                if let Message::Update(l) = tx.msg {
                    let h: Vec<_> = l.iter().map(LsaInstance::header).collect();
                    f.handle_ack(n(2), &h, now).unwrap();
                }
            }
        }
        assert!(refreshed >= 2, "own LSA refreshed every ~30 min");
        assert!(f.lsdb().get(n(9)).is_none(), "dead origin purged at MaxAge");
        assert!(f.lsdb().get(n(1)).is_some());
        assert_eq!(
            f.poll_event(),
            Some(FloodEvent::TopologyChanged { domain: D })
        );
    }

    #[test]
    fn full_lsdb_drops_new_origins_with_an_event() {
        let mut c = cfg(1, D);
        c.max_origins = 2;
        let mut f = Flooder::new(c, t(0));
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        f.handle_lsa(n(2), node_lsa(9, 1, &[]), t(0)).unwrap();
        f.handle_lsa(n(2), node_lsa(10, 1, &[]), t(0)).unwrap();
        assert_eq!(f.stats().lsas_dropped_full, 1);
        let events: Vec<_> = std::iter::from_fn(|| f.poll_event()).collect();
        assert!(events.contains(&FloodEvent::LsdbFull {
            domain: D,
            limit: 2
        }));
    }

    #[test]
    fn unknown_neighbors_and_limits() {
        let mut c = cfg(1, D);
        c.max_neighbors = 1;
        let mut f = Flooder::new(c, t(0));
        assert_eq!(
            f.handle_message(n(7), Message::SummaryAck, t(0)),
            Err(FloodError::UnknownNeighbor { neighbor: n(7) })
        );
        assert_eq!(
            f.handle_neighbor_up(n(1), D, t(0)),
            Err(FloodError::SelfNeighbor { node: n(1) })
        );
        f.handle_neighbor_up(n(2), D, t(0)).unwrap();
        assert_eq!(
            f.handle_neighbor_up(n(2), D, t(0)),
            Err(FloodError::AlreadyUp { neighbor: n(2) })
        );
        assert_eq!(
            f.handle_neighbor_up(n(3), D, t(0)),
            Err(FloodError::TooManyNeighbors { limit: 1, count: 2 })
        );
    }
}
