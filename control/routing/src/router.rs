//! [`Router`]: one node's whole routing core — flooding, LSDB, SPF, domain routes, policy.
//!
//! # Driving it (the sans-IO contract)
//!
//! The shell (tokio control plane, or a simulator) owns the clock and the sockets. It feeds:
//! - [`Router::handle_neighbor_up`] / [`Router::handle_neighbor_down`] when a session to a
//!   neighbour is established (HELLO told us its domain) or lost;
//! - [`Router::handle_message`] (or [`Router::handle_bytes`]) for every LSA / LSA_ACK frame body;
//! - [`Router::handle_timeout`] when the time from [`Router::poll_timeout`] has come;
//! - [`Router::handle_set_policy`] for SetPolicy.
//!
//! After a batch of inputs it calls [`Router::poll_routes`] (which originates the node's own
//! LSAs and recomputes routes if anything changed, returning a new [`RouteTable`] when the
//! result differs from the last one), then drains [`Router::poll_transmit`] until `None`, and
//! reads [`Router::poll_event`]. Delaying `poll_routes` is how the shell throttles SPF; it
//! should time that call and report it with [`Router::record_spf_duration`] — there are no
//! clocks inside.
//!
//! Time is a [`Duration`] since an arbitrary start chosen by the shell (monotonic; never goes
//! backwards). Randomness (timer jitter) comes only from [`RouterConfig::seed`].
//!
//! # Memory
//!
//! The router keeps its LSDB index (24 bytes per origin; the LSAs themselves are shared `Arc`s
//! when a simulator delivers messages in-process), neighbour state, its own LSAs and counters.
//! It does not keep the route table it returns, only its fingerprint. SPF scratch space is
//! kept between computations by [`Router::poll_routes`] (~30 KiB for 1,000 nodes), or passed
//! in by the caller with [`Router::poll_routes_with`] (a simulator shares one workspace and
//! keeps none per router). [`Router::heap_bytes`] reports the total.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::compute::{ComputeInput, compute};
use crate::flood::{
    FloodConfig, FloodError, FloodEvent, FloodStats, Flooder, MAX_PENDING_EVENTS, Transmit,
};
use crate::ids::{DomainId, NodeId};
use crate::lsa::{CodecError, Link, MAX_AGE_S, MAX_LINKS_PER_LSA};
use crate::lsdb::Lsdb;
use crate::message::{MAX_HEADERS_PER_MESSAGE, Message};
use crate::policy::{Policy, PolicyError, ValidPolicy};
use crate::spf::SpfWorkspace;
use crate::table::RouteTable;

/// Settings of one [`Router`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// This node.
    pub node: NodeId,
    /// This node's domain.
    pub domain: DomainId,
    /// Seed of all randomness (timer jitter): the same seed and inputs give the same outputs.
    pub seed: u64,
    /// Retransmission interval of unacknowledged LSAs (default 5 s).
    pub retransmit_interval: Duration,
    /// Refresh interval of own LSAs (default 30 min; at most MaxAge - 10 min).
    pub refresh_interval: Duration,
    /// Most neighbours (default 256; at most the links one LSA can carry).
    pub max_neighbors: usize,
    /// Most origins in the LSDB: domain members plus foreign borders (default 4,096).
    pub max_origins: usize,
    /// Low bits of `msg_id` that number chunks, ignored by ECMP (default 0: chunks share their
    /// message's `msg_id`, as in `mesh-wire`).
    pub ecmp_chunk_bits: u8,
    /// Most ranges per domain member set in advertised summaries (default 16).
    pub summary_ranges_per_domain: usize,
}

impl RouterConfig {
    /// Defaults for `node` in `domain`.
    #[must_use]
    pub fn new(node: NodeId, domain: DomainId) -> RouterConfig {
        RouterConfig {
            node,
            domain,
            seed: node.get(),
            retransmit_interval: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(1800),
            max_neighbors: 256,
            max_origins: 4096,
            ecmp_chunk_bits: 0,
            summary_ranges_per_domain: 16,
        }
    }

    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        check(
            "retransmit_interval_ms",
            ms(self.retransmit_interval),
            1,
            3_600_000,
        )?;
        check(
            "refresh_interval_ms",
            ms(self.refresh_interval),
            1000,
            (u64::from(MAX_AGE_S) - 600) * 1000,
        )?;
        check(
            "max_neighbors",
            self.max_neighbors as u64,
            1,
            MAX_LINKS_PER_LSA as u64,
        )?;
        check(
            "max_origins",
            self.max_origins as u64,
            1,
            MAX_HEADERS_PER_MESSAGE as u64,
        )?;
        check("ecmp_chunk_bits", u64::from(self.ecmp_chunk_bits), 0, 63)?;
        check(
            "summary_ranges_per_domain",
            self.summary_ranges_per_domain as u64,
            1,
            4096,
        )?;
        Ok(())
    }
}

/// A configuration value outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `field` is `value`, outside `min..=max`.
    #[error("router config {field} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The field (with its unit).
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

/// Errors of router inputs. None of them changes the router's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// A flooding-level error (unknown neighbour, limits).
    #[error(transparent)]
    Flood(#[from] FloodError),
    /// A message body did not decode.
    #[error("undecodable message from {from}: {error}")]
    Decode {
        /// The sending neighbour.
        from: NodeId,
        /// Why.
        error: CodecError,
    },
    /// A link cost of 0.
    #[error("link cost to {neighbor} is 0; costs are 1..=4294967295")]
    ZeroCost {
        /// The neighbour.
        neighbor: NodeId,
    },
}

/// Something the shell may want to log or count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// The LSDB changed in a way that affects routes (a recomputation is due).
    TopologyChanged {
        /// The domain.
        domain: DomainId,
    },
    /// LSAs of new origins were dropped: the LSDB holds `limit` origins.
    LsdbFull {
        /// The domain.
        domain: DomainId,
        /// The limit.
        limit: usize,
    },
    /// Summary entries were left out to respect the LSA size limits.
    SummaryTruncated {
        /// Entries left out, over all summaries of the computation.
        dropped: usize,
    },
}

/// Counters (SPEC §8: route recomputations and SPF time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Flooding counters (LSAs sent, received, retransmitted, acknowledged, ...).
    pub flood: FloodStats,
    /// Route computations run.
    pub spf_runs: u64,
    /// Route tables returned by [`Router::poll_routes`].
    pub tables_published: u64,
    /// Duration of the last computation, as measured and reported by the shell.
    pub last_spf_duration: Option<Duration>,
    /// Messages refused (undecodable, or from a node that is not a neighbour).
    pub messages_rejected: u64,
    /// Summary entries left out to respect LSA limits.
    pub summary_entries_dropped: u64,
}

#[derive(Clone, Copy, Debug)]
struct NeighborInfo {
    id: NodeId,
    domain: DomainId,
    cost: u32,
}

/// The routing core of one node (see the module docs).
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    flooder: Flooder,
    neighbors: Vec<NeighborInfo>,
    policy: Arc<ValidPolicy>,
    own_lsa_dirty: bool,
    routes_dirty: bool,
    last_fingerprint: Option<u64>,
    generation: u64,
    events: VecDeque<Event>,
    metrics: Metrics,
    /// SPF scratch kept between computations (created by the first [`Router::poll_routes`]).
    spf: Option<SpfWorkspace>,
}

impl Router {
    /// A router for `config.node`, starting at `now` with no neighbours.
    pub fn new(config: RouterConfig, now: Duration) -> Result<Router, ConfigError> {
        config.validate()?;
        let flooder = Flooder::new(
            FloodConfig {
                node: config.node,
                domain: config.domain,
                retransmit_interval: config.retransmit_interval,
                refresh_interval: config.refresh_interval,
                max_neighbors: config.max_neighbors,
                max_origins: config.max_origins,
                seed: config.seed,
            },
            now,
        );
        Ok(Router {
            config,
            flooder,
            neighbors: Vec::new(),
            policy: Arc::new(ValidPolicy::default()),
            own_lsa_dirty: false,
            routes_dirty: true,
            last_fingerprint: None,
            generation: 0,
            events: VecDeque::new(),
            metrics: Metrics::default(),
            spf: None,
        })
    }

    /// This node.
    #[must_use]
    pub const fn node(&self) -> NodeId {
        self.config.node
    }

    /// This node's domain.
    #[must_use]
    pub const fn domain(&self) -> DomainId {
        self.config.domain
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Whether this node has a neighbour in another domain.
    #[must_use]
    pub fn is_border(&self) -> bool {
        self.neighbors
            .iter()
            .any(|n| n.domain != self.config.domain)
    }

    /// Neighbours: (id, domain, configured cost), sorted by id.
    pub fn neighbors(&self) -> impl Iterator<Item = (NodeId, DomainId, u32)> + '_ {
        self.neighbors.iter().map(|n| (n.id, n.domain, n.cost))
    }

    /// The LSDB (for GetTopology).
    #[must_use]
    pub const fn lsdb(&self) -> &Lsdb {
        self.flooder.lsdb()
    }

    /// The flooding state machine (own summaries, unacknowledged state).
    #[must_use]
    pub const fn flooder(&self) -> &Flooder {
        &self.flooder
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &ValidPolicy {
        &self.policy
    }

    /// Counters.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        Metrics {
            flood: *self.flooder.stats(),
            ..self.metrics
        }
    }

    /// Heap bytes held by the router (LSDB index, neighbour state, queues), not counting LSAs
    /// shared with other holders.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.flooder.heap_bytes()
            + self.neighbors.capacity() * core::mem::size_of::<NeighborInfo>()
            + self.events.capacity() * core::mem::size_of::<Event>()
            + self.spf.as_ref().map_or(0, SpfWorkspace::heap_bytes)
    }

    /// A session with `neighbor`, a node of `domain`, is up; the link costs `cost` (>= 1,
    /// unless the policy overrides it). Calling it again for a neighbour that is up updates
    /// the cost, or restarts the adjacency when the domain differs.
    pub fn handle_neighbor_up(
        &mut self,
        neighbor: NodeId,
        domain: DomainId,
        cost: u32,
        now: Duration,
    ) -> Result<(), RouterError> {
        if cost == 0 {
            return Err(RouterError::ZeroCost { neighbor });
        }
        match self.neighbors.binary_search_by_key(&neighbor, |n| n.id) {
            Ok(i) if self.neighbors[i].domain == domain => {
                self.neighbors[i].cost = cost;
            }
            Ok(_) => {
                self.handle_neighbor_down(neighbor, now)?;
                return self.handle_neighbor_up(neighbor, domain, cost, now);
            }
            Err(i) => {
                self.flooder.handle_neighbor_up(neighbor, domain, now)?;
                self.neighbors.insert(
                    i,
                    NeighborInfo {
                        id: neighbor,
                        domain,
                        cost,
                    },
                );
                self.routes_dirty = true;
            }
        }
        self.own_lsa_dirty = true;
        self.pump_events();
        Ok(())
    }

    /// The session with `neighbor` is gone.
    ///
    /// # Panics
    /// Only on a broken invariant (router and flooder disagree on the neighbours).
    pub fn handle_neighbor_down(
        &mut self,
        neighbor: NodeId,
        now: Duration,
    ) -> Result<(), RouterError> {
        self.flooder.handle_neighbor_down(neighbor, now)?;
        let i = self
            .neighbors
            .binary_search_by_key(&neighbor, |n| n.id)
            .expect("router and flooder agree on neighbours");
        self.neighbors.remove(i);
        self.own_lsa_dirty = true;
        self.routes_dirty = true;
        self.pump_events();
        Ok(())
    }

    /// A decoded flooding message from neighbour `from`.
    pub fn handle_message(
        &mut self,
        from: NodeId,
        msg: Message,
        now: Duration,
    ) -> Result<(), RouterError> {
        let r = self.flooder.handle_message(from, msg, now);
        if r.is_err() {
            self.metrics.messages_rejected += 1;
        }
        self.pump_events();
        Ok(r?)
    }

    /// The body of an LSA / LSA_ACK frame from neighbour `from`.
    pub fn handle_bytes(
        &mut self,
        from: NodeId,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), RouterError> {
        match Message::decode(bytes) {
            Ok(msg) => self.handle_message(from, msg, now),
            Err(error) => {
                self.metrics.messages_rejected += 1;
                Err(RouterError::Decode { from, error })
            }
        }
    }

    /// Timers: retransmissions, LSDB ageing, refresh of own LSAs.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.flooder.handle_timeout(now);
        self.pump_events();
    }

    /// A new policy: validated, its version checked against the one in force; applied by the
    /// next [`Router::poll_routes`]. On error nothing changes.
    pub fn handle_set_policy(&mut self, policy: Policy) -> Result<(), PolicyError> {
        let valid = policy.validate()?;
        self.policy.check_successor(&valid)?;
        self.policy = Arc::new(valid);
        self.own_lsa_dirty = true;
        self.routes_dirty = true;
        Ok(())
    }

    /// The shell's measurement of the last [`Router::poll_routes`] that computed.
    pub fn record_spf_duration(&mut self, d: Duration) {
        self.metrics.last_spf_duration = Some(d);
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.flooder.poll_transmit()
    }

    /// When [`Router::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.flooder.poll_timeout()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Originates own LSAs and recomputes routes if anything changed since the last call;
    /// returns the new table when it differs from the last one returned. The SPF scratch
    /// space is kept in the router between calls, so a computation allocates only the table.
    ///
    /// # Panics
    /// Only on a broken invariant (see [`Router::poll_routes_with`]).
    #[must_use]
    pub fn poll_routes(&mut self, now: Duration) -> Option<RouteTable> {
        let mut ws = self.spf.take().unwrap_or_default();
        let table = self.poll_routes_with(now, &mut ws);
        self.spf = Some(ws);
        table
    }

    /// [`Router::poll_routes`] with the caller's SPF scratch space: a simulator driving many
    /// routers from one thread shares one workspace and keeps none per router.
    ///
    /// # Panics
    /// Only on a broken invariant (own LSA missing from the LSDB, own LSA or summary over the
    /// limits that configuration validation and summary trimming guarantee).
    #[must_use]
    pub fn poll_routes_with(&mut self, now: Duration, ws: &mut SpfWorkspace) -> Option<RouteTable> {
        if std::mem::take(&mut self.own_lsa_dirty) {
            let links = self.links_to(|_| true);
            self.flooder
                .originate_own(links, now)
                .expect("own links are bounded by max_neighbors and have costs >= 1");
            self.pump_events();
        }
        if !std::mem::take(&mut self.routes_dirty) {
            return None;
        }
        let mut border_domains: Vec<DomainId> = self
            .neighbors
            .iter()
            .map(|n| n.domain)
            .filter(|d| *d != self.config.domain)
            .collect();
        border_domains.sort_unstable();
        border_domains.dedup();
        let input = ComputeInput {
            lsdb: self.flooder.lsdb(),
            node: self.config.node,
            policy: &self.policy,
            border_domains: &border_domains,
            chunk_bits: self.config.ecmp_chunk_bits,
            generation: self.generation + 1,
            summary_ranges_per_domain: self.config.summary_ranges_per_domain,
        };
        let computed = compute(&input, ws).expect("the own LSA is always in the LSDB");
        self.metrics.spf_runs += 1;
        if computed.reach_dropped > 0 {
            self.metrics.summary_entries_dropped += computed.reach_dropped as u64;
            self.push_event(Event::SummaryTruncated {
                dropped: computed.reach_dropped,
            });
        }
        for (domain, summary) in computed.summaries {
            let links = self.links_to(|n| n.domain == domain);
            self.flooder
                .originate_summary(domain, links, summary, now)
                .expect("summaries are built within the LSA limits");
        }
        self.pump_events();
        let fingerprint = computed.table.fingerprint();
        if self.last_fingerprint == Some(fingerprint) {
            return None;
        }
        self.last_fingerprint = Some(fingerprint);
        self.generation += 1;
        self.metrics.tables_published += 1;
        Some(computed.table)
    }

    /// Own links to the neighbours selected, with policy cost overrides applied.
    fn links_to(&self, select: impl Fn(&NeighborInfo) -> bool) -> Vec<Link> {
        self.neighbors
            .iter()
            .filter(|n| select(n))
            .map(|n| Link::up(n.id, self.policy.link_cost(n.id).unwrap_or(n.cost)))
            .collect()
    }

    fn pump_events(&mut self) {
        while let Some(e) = self.flooder.poll_event() {
            match e {
                FloodEvent::TopologyChanged { domain } => {
                    self.routes_dirty = true;
                    self.push_event(Event::TopologyChanged { domain });
                }
                FloodEvent::LsdbFull { domain, limit } => {
                    self.push_event(Event::LsdbFull { domain, limit });
                }
            }
        }
    }

    /// Queues `e` unless an equal event is already waiting or the queue is full (events are
    /// hints for logs and metrics; the state they describe stays exact).
    fn push_event(&mut self, e: Event) {
        if self.events.len() < MAX_PENDING_EVENTS && !self.events.contains(&e) {
            self.events.push_back(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsa::tests::n;
    use crate::policy::LinkCost;
    use crate::table::NextHop;

    const D: DomainId = DomainId(1);

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn router(id: u64) -> Router {
        Router::new(RouterConfig::new(n(id), D), t(0)).unwrap()
    }

    /// Delivers everything until quiet between the routers given (all adjacent as set up).
    fn settle(rs: &mut [Router], now: Duration) -> Vec<Option<RouteTable>> {
        let mut tables: Vec<Option<RouteTable>> = vec![None; rs.len()];
        for _ in 0..100 {
            let mut queue = Vec::new();
            for (i, r) in rs.iter_mut().enumerate() {
                if let Some(tab) = r.poll_routes(now) {
                    tables[i] = Some(tab);
                }
                while let Some(tx) = r.poll_transmit() {
                    queue.push((r.node(), tx));
                }
            }
            if queue.is_empty() {
                return tables;
            }
            for (from, tx) in queue {
                let bytes = tx.msg.to_bytes().unwrap();
                let to = rs.iter_mut().find(|r| r.node() == tx.to).unwrap();
                to.handle_bytes(from, &bytes, now).unwrap();
            }
        }
        panic!("did not settle");
    }

    #[test]
    fn config_bounds() {
        let mut c = RouterConfig::new(n(1), D);
        c.refresh_interval = t(3600);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "refresh_interval_ms",
                ..
            })
        ));
        let mut c = RouterConfig::new(n(1), D);
        c.max_neighbors = 0;
        assert!(Router::new(c, t(0)).is_err());
    }

    #[test]
    fn two_routers_converge_and_policy_changes_costs() {
        let mut rs = vec![router(1), router(2)];
        rs[0].handle_neighbor_up(n(2), D, 3, t(0)).unwrap();
        rs[1].handle_neighbor_up(n(1), D, 3, t(0)).unwrap();
        let tables = settle(&mut rs, t(0));
        let t1 = tables[0].as_ref().unwrap();
        assert_eq!(t1.intra_route(n(2)).unwrap().cost, 3);
        assert_eq!(t1.lookup(D, n(2), n(1), 0), Ok(NextHop::Forward(n(2))));
        assert!(rs[0].metrics().spf_runs >= 1);
        assert!(rs[0].metrics().flood.lsas_sent >= 1);

        // A policy overriding the link cost is advertised and changes both tables.
        let p = Policy {
            version: 1,
            link_costs: vec![LinkCost {
                neighbor: n(2),
                cost: 9,
            }],
            ..Policy::default()
        };
        rs[0].handle_set_policy(p.clone()).unwrap();
        assert_eq!(
            rs[0].handle_set_policy(p),
            Err(PolicyError::StaleVersion {
                current: 1,
                proposed: 1
            })
        );
        let tables = settle(&mut rs, t(1));
        assert_eq!(
            tables[0].as_ref().unwrap().intra_route(n(2)).unwrap().cost,
            9
        );
        // Node 2's own cost towards 1 is still 3 (costs are per direction).
        assert!(tables[1].is_none(), "node 2's routes did not change");

        // Nothing changed: no new table.
        assert!(rs[0].poll_routes(t(2)).is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut r = router(1);
        assert!(matches!(
            r.handle_bytes(n(2), &[1, 0, 0, 0], t(0)),
            Err(RouterError::Flood(FloodError::UnknownNeighbor { .. }))
        ));
        r.handle_neighbor_up(n(2), D, 1, t(0)).unwrap();
        assert!(matches!(
            r.handle_bytes(n(2), &[1, 0, 0, 1, 0], t(0)),
            Err(RouterError::Decode { .. })
        ));
        assert_eq!(
            r.handle_neighbor_up(n(3), D, 0, t(0)),
            Err(RouterError::ZeroCost { neighbor: n(3) })
        );
        assert_eq!(r.metrics().messages_rejected, 2);
    }

    #[test]
    fn border_status_follows_neighbors() {
        let mut r = router(1);
        assert!(!r.is_border());
        r.handle_neighbor_up(n(5), DomainId(2), 1, t(0)).unwrap();
        assert!(r.is_border());
        let _ = r.poll_routes(t(0));
        assert!(r.flooder().own_summary(DomainId(2)).is_some());
        r.handle_neighbor_down(n(5), t(1)).unwrap();
        assert!(!r.is_border());
        assert!(r.flooder().own_summary(DomainId(2)).is_none());
    }
}
