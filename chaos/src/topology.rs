//! The chaos mesh's shape: nodes in two domains, the links between them, their addresses and
//! who dials whom. Pure: the shells in [`crate::netns`] and [`crate::node`] build what this
//! describes.
//!
//! With `n` nodes, domain 1 holds nodes `1..=ceil(n/2)` and domain 2 the rest. Each domain is a
//! ring (a triangle for three nodes, one link for two). Two border links join the domains: the
//! second node of domain 1 to the first of domain 2, and the third of domain 1 to the second of
//! domain 2. The origin (the producer's node) is node 1, the destination (the consumer's node)
//! node `n`: every message crosses the domain border and at least one transit node, and each
//! link has an alternative, so a single cut never disconnects the two ends.
//!
//! ```text
//!   domain 1            domain 2          (6 nodes)
//!      1 ─── 2 ──────── 4
//!       \   /          / \
//!        \ /          /   \
//!         3 ─(proxy)─5 ─── 6
//! ```
//!
//! Link `i` (0-based) is the subnet `10.200.(i+1).0/24`: its lower node has `.1`, its higher
//! node `.2`. Namespaces isolate the addresses, so parallel runs reuse them freely. The lower
//! node of a link dials the higher one. The second border link goes through the delay proxy:
//! its lower node dials the proxy's port on the higher node's address, and the proxy (in the
//! higher node's namespace) relays to the node.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Port every node listens on for peers and clients (namespaces isolate it).
pub const NODE_PORT: u16 = 7000;
/// Port of the delay proxy on the proxied link.
pub const PROXY_PORT: u16 = 7001;
/// Port of every node's Prometheus endpoint, on its namespace's loopback.
pub const METRICS_PORT: u16 = 9100;
/// Fewest nodes: three in domain 1 (origin plus two borders), two in domain 2.
pub const NODES_MIN: usize = 5;
/// Most nodes (link subnets and interface names stay small).
pub const NODES_MAX: usize = 32;

/// A node: its id (1-based) and domain (1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id, also its position in [`Topology::nodes`] plus one.
    pub id: u64,
    /// Domain 1 or 2.
    pub domain: u32,
}

/// A link between two nodes; `lower < higher`, and the lower one dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Position in [`Topology::links`]; names its subnet.
    pub index: usize,
    /// The node with the lower id (dials).
    pub lower: u64,
    /// The node with the higher id (listens).
    pub higher: u64,
    /// Joins the two domains.
    pub border: bool,
    /// Goes through the delay proxy (the second border link).
    pub proxied: bool,
}

impl Link {
    /// The other end of the link from `node`.
    pub fn peer_of(&self, node: u64) -> u64 {
        if node == self.lower {
            self.higher
        } else {
            self.lower
        }
    }
}

/// Why a topology cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Node count out of range.
    #[error("{nodes} nodes: a chaos mesh has {NODES_MIN} to {NODES_MAX}")]
    NodeCount {
        /// What was asked.
        nodes: usize,
    },
}

/// Nodes and links of a chaos run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Every node, by id order.
    pub nodes: Vec<NodeSpec>,
    /// Every link, by index.
    pub links: Vec<Link>,
    /// The producer's node.
    pub origin: u64,
    /// The consumer's node.
    pub destination: u64,
}

impl Topology {
    /// Two domains of `nodes` nodes in total, as the module docs draw them.
    pub fn two_domains(nodes: usize) -> Result<Topology, TopologyError> {
        if !(NODES_MIN..=NODES_MAX).contains(&nodes) {
            return Err(TopologyError::NodeCount { nodes });
        }
        let first = nodes.div_ceil(2);
        let ids = |range: std::ops::Range<usize>| range.map(|i| i as u64 + 1).collect::<Vec<_>>();
        let d1 = ids(0..first);
        let d2 = ids(first..nodes);
        let mut pairs: Vec<(u64, u64, bool)> = Vec::new();
        for domain in [&d1, &d2] {
            for (i, &a) in domain.iter().enumerate() {
                let b = domain[(i + 1) % domain.len()];
                let pair = (a.min(b), a.max(b), false);
                if a != b && !pairs.contains(&pair) {
                    pairs.push(pair);
                }
            }
        }
        pairs.push((d1[1], d2[0], true));
        pairs.push((d1[2], d2[1], true));
        let links = pairs
            .iter()
            .enumerate()
            .map(|(index, &(lower, higher, border))| Link {
                index,
                lower,
                higher,
                border,
                proxied: border && index + 1 == pairs.len(),
            })
            .collect();
        let nodes = (1..=nodes as u64)
            .map(|id| NodeSpec {
                id,
                domain: if d1.contains(&id) { 1 } else { 2 },
            })
            .collect();
        Ok(Topology {
            nodes,
            links,
            origin: d1[0],
            destination: *d2.last().unwrap_or(&d2[0]),
        })
    }

    /// The node `id`.
    pub fn node(&self, id: u64) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Links `node` is an end of.
    pub fn links_of(&self, node: u64) -> impl Iterator<Item = &Link> {
        self.links
            .iter()
            .filter(move |l| l.lower == node || l.higher == node)
    }

    /// Nodes on the way between origin and destination (neither of the two).
    pub fn transits(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != self.origin && id != self.destination)
            .collect()
    }

    /// The link through the delay proxy.
    pub fn proxied_link(&self) -> Option<&Link> {
        self.links.iter().find(|l| l.proxied)
    }

    /// `node`'s address on `link` (`10.200.(index+1).1` for the lower end, `.2` for the
    /// higher).
    pub fn address(link: &Link, node: u64) -> Ipv4Addr {
        let subnet = u8::try_from(link.index + 1).unwrap_or(u8::MAX);
        let host = if node == link.lower { 1 } else { 2 };
        Ipv4Addr::new(10, 200, subnet, host)
    }

    /// The name of `node`'s interface towards `peer` (`to<peer>`; names are per namespace).
    pub fn interface(peer: u64) -> String {
        format!("to{peer}")
    }

    /// The addresses `node` dials: for each link where it is the lower end, the higher end's
    /// node port (or the proxy port, on the proxied link).
    pub fn dials(&self, node: u64) -> Vec<SocketAddr> {
        self.links
            .iter()
            .filter(|l| l.lower == node)
            .map(|l| {
                let port = if l.proxied { PROXY_PORT } else { NODE_PORT };
                SocketAddr::V4(SocketAddrV4::new(Self::address(l, l.higher), port))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_nodes_as_drawn() {
        let t = Topology::two_domains(6).unwrap();
        let pairs: Vec<_> = t.links.iter().map(|l| (l.lower, l.higher)).collect();
        assert_eq!(
            pairs,
            vec![
                (1, 2),
                (2, 3),
                (1, 3),
                (4, 5),
                (5, 6),
                (4, 6),
                (2, 4),
                (3, 5)
            ]
        );
        assert_eq!((t.origin, t.destination), (1, 6));
        assert_eq!(t.transits(), vec![2, 3, 4, 5]);
        let proxied = t.proxied_link().unwrap();
        assert_eq!((proxied.lower, proxied.higher), (3, 5));
        assert!(t.links.iter().filter(|l| l.border).count() == 2);
        assert_eq!(
            t.dials(3),
            vec!["10.200.8.2:7001".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.node(4).unwrap().domain, 2);
    }

    #[test]
    fn five_nodes_have_a_two_node_second_domain() {
        let t = Topology::two_domains(5).unwrap();
        let pairs: Vec<_> = t.links.iter().map(|l| (l.lower, l.higher)).collect();
        assert_eq!(pairs, vec![(1, 2), (2, 3), (1, 3), (4, 5), (2, 4), (3, 5)]);
        assert_eq!(t.destination, 5);
    }

    #[test]
    fn every_link_has_an_alternative() {
        for n in NODES_MIN..=12 {
            let t = Topology::two_domains(n).unwrap();
            for cut in &t.links {
                assert!(connected(&t, Some(cut.index)), "{n} nodes, cut {cut:?}");
            }
        }
    }

    #[test]
    fn node_count_is_bounded() {
        assert!(Topology::two_domains(4).is_err());
        assert!(Topology::two_domains(NODES_MAX + 1).is_err());
    }

    fn connected(t: &Topology, without: Option<usize>) -> bool {
        let mut seen = vec![t.origin];
        let mut i = 0;
        while i < seen.len() {
            let n = seen[i];
            for l in t.links_of(n).filter(|l| Some(l.index) != without) {
                let p = l.peer_of(n);
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
            i += 1;
        }
        seen.len() == t.nodes.len()
    }
}
