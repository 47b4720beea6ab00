//! Size of one node of a 1,000-domain x 1,000-node mesh (SPEC §9): a `Router` fed the LSDB of
//! a 1,000-node domain whose 10 foreign borders each advertise 1,000 other domains, through
//! its real inputs (neighbour events, encoded update messages). Asserts the table shape (own
//! domain's nodes + one entry per other domain) and bounds on the memory the router and its
//! table hold; `--nocapture` prints the figures.

use std::time::Duration;

use mesh_routing::{
    DomainId, DomainMembers, DomainReach, Link, Lsa, LsaInstance, Message, NodeId, NodeRange,
    Router, RouterConfig, SeqNo, SpfWorkspace, Summary,
};

const NODES: usize = 1000;
const OTHER_DOMAINS: u32 = 1000;
const BORDERS: usize = 10;
const HOME: DomainId = DomainId(1);

fn id(raw: usize) -> NodeId {
    NodeId::new(raw as u64).unwrap()
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        usize::try_from((self.0 >> 33) % n as u64).unwrap()
    }
}

#[test]
fn one_node_of_a_million_node_mesh() {
    let mut rng = Rng(5);
    // Ring + chords: degree ~6; node 1 is "us".
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); NODES + 1];
    let mut add = |a: usize, b: usize| {
        if a != b && !adj[a].contains(&b) {
            adj[a].push(b);
            adj[b].push(a);
        }
    };
    for i in 1..=NODES {
        add(i, i % NODES + 1);
    }
    for _ in 0..2000 {
        add(1 + rng.below(NODES), 1 + rng.below(NODES));
    }
    let borders: Vec<(usize, usize)> = (0..BORDERS)
        .map(|k| (2_000_000 + k, 2 + rng.below(NODES - 1)))
        .collect();
    for &(b, at) in &borders {
        adj[at].push(b);
    }

    let now = Duration::from_secs(1);
    let mut router = Router::new(RouterConfig::new(id(1), HOME), now).unwrap();
    for &nb in &adj[1] {
        router.handle_neighbor_up(id(nb), HOME, 1, now).unwrap();
    }

    let mut lsas = Vec::new();
    for (i, links) in adj.iter().enumerate().skip(2) {
        let links = links.iter().map(|b| Link::up(id(*b), 1)).collect();
        lsas.push(Lsa::new(id(i), HOME, SeqNo(1), links, None).unwrap());
    }
    for (k, &(b, at)) in borders.iter().enumerate() {
        let home = DomainId(2 + u32::try_from(k).unwrap());
        let reach = (2..2 + OTHER_DOMAINS)
            .map(DomainId)
            .filter(|d| *d != home)
            .map(|d| DomainReach {
                domain: d,
                cost: 10,
                path: vec![d].into(),
            })
            .collect();
        let members = (2..2 + OTHER_DOMAINS)
            .map(|d| {
                let first = u64::from(d) * 1_000_000;
                let r = NodeRange::new(
                    NodeId::new(first).unwrap(),
                    NodeId::new(first + 999).unwrap(),
                );
                DomainMembers::new(DomainId(d), vec![r.unwrap()]).unwrap()
            })
            .collect();
        let s = Summary::new(home, reach, members).unwrap();
        lsas.push(Lsa::new(id(b), HOME, SeqNo(1), vec![Link::up(id(at), 10)], Some(s)).unwrap());
    }
    let lsa_bytes: usize = lsas.iter().map(Lsa::encoded_len).sum();

    // Deliver everything from one neighbour, in messages as the shell would, bytes and all.
    let from = id(adj[1][0]);
    let mut batch = Vec::new();
    let mut batch_len = 4;
    for lsa in lsas {
        if batch_len + lsa.encoded_len() > mesh_routing::message::MAX_MESSAGE_LEN {
            let bytes = Message::Update(std::mem::take(&mut batch))
                .to_bytes()
                .unwrap();
            router.handle_bytes(from, &bytes, now).unwrap();
            batch_len = 4;
        }
        batch_len += lsa.encoded_len();
        batch.push(LsaInstance { age_s: 0, lsa });
    }
    let bytes = Message::Update(batch).to_bytes().unwrap();
    router.handle_bytes(from, &bytes, now).unwrap();

    // As a simulator would: one SPF workspace shared by all routers, none kept per router.
    let mut ws = SpfWorkspace::new();
    let table = router.poll_routes_with(now, &mut ws).expect("a table");
    assert_eq!(
        table.intra_routes().len(),
        NODES - 1,
        "every other node of the domain"
    );
    assert_eq!(
        table.inter_routes().len(),
        OTHER_DOMAINS as usize,
        "one entry per other domain, not per node"
    );
    assert_eq!(
        table.domain_of(NodeId::new(7_000_123).unwrap()),
        Some(DomainId(7))
    );
    assert_eq!(table.domain_of(id(500)), Some(HOME));

    // Steady state: every neighbour acknowledges what it was sent.
    while let Some(tx) = router.poll_transmit() {
        let reply = match tx.msg {
            Message::Update(l) => Message::Ack(l.iter().map(LsaInstance::header).collect()),
            Message::DbSummary(_) => Message::SummaryAck,
            Message::Ack(_) | Message::SummaryAck => continue,
        };
        router.handle_message(tx.to, reply, now).unwrap();
    }
    assert!(!router.flooder().has_unacked());

    let router_bytes = router.heap_bytes();
    let table_bytes = table.heap_bytes();
    println!(
        "1,000-node domain, {OTHER_DOMAINS} other domains: router holds {router_bytes} B \
         ({} LSDB entries), route table {table_bytes} B ({} intra + {} inter routes, {} member \
         ranges), LSAs {lsa_bytes} B encoded (shareable across the domain's routers), SPF \
         workspace {} B (shared, or kept per router by poll_routes)",
        router.lsdb().len(),
        table.intra_routes().len(),
        table.inter_routes().len(),
        table.members().len(),
        ws.heap_bytes(),
    );
    assert!(router_bytes < 48 * 1024, "router state {router_bytes} B");
    assert!(table_bytes < 96 * 1024, "table {table_bytes} B");
}
