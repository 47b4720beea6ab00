//! The MeshControl gRPC service of real `mesh` processes, through a tonic client:
//!
//! ```text
//!        domain 1                 domain 2
//!   A(1) ─── B(2) ─── C(3) ─────── D(4)
//!  gRPC     gRPC
//! ```
//!
//! GetTopology on A shows its domain's three nodes and links with costs and states, the border
//! C and the other domain's summary (border D, member range 4..=4), and scopes to a domain;
//! SetPolicy overrides a link cost (visible on A at once and on B once flooded, with the policy
//! version), refuses bad policies with INVALID_ARGUMENT naming the field and stale versions with
//! FAILED_PRECONDITION while the node keeps serving; PublishState records the node's own state
//! and refuses another node's; the calls are counted in the metrics. A taken gRPC address is a
//! start-up error.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_proto::v1 as pb;
use mesh_proto::v1::mesh_control_client::MeshControlClient;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::Node;

const WITHIN: Duration = Duration::from_secs(20);

async fn connect(url: String) -> MeshControlClient<Channel> {
    let t0 = Instant::now();
    loop {
        match MeshControlClient::connect(url.clone()).await {
            Ok(c) => return c,
            Err(e) => assert!(t0.elapsed() < WITHIN, "{url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn topology(
    c: &mut MeshControlClient<Channel>,
    scope: Option<u32>,
) -> Result<pb::Topology, tonic::Status> {
    c.get_topology(pb::GetTopologyRequest { domain_id: scope })
        .await
        .map(tonic::Response::into_inner)
}

/// Polls GetTopology until `ok` holds for it, and returns that topology.
async fn wait_topology(
    c: &mut MeshControlClient<Channel>,
    what: &str,
    ok: impl Fn(&pb::Topology) -> bool,
) -> pb::Topology {
    let t0 = Instant::now();
    loop {
        let t = topology(c, None).await.expect("GetTopology answers");
        if ok(&t) {
            return t;
        }
        assert!(t0.elapsed() < WITHIN, "{what}: last topology {t:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn link(t: &pb::Topology, from: u64, to: u64) -> Option<&pb::TopologyLink> {
    t.links
        .iter()
        .find(|l| l.from_node == from && l.to_node == to)
}

fn node(t: &pb::Topology, id: u64) -> &pb::TopologyNode {
    t.nodes
        .iter()
        .find(|n| n.node_id == id)
        .unwrap_or_else(|| panic!("node {id} missing in {t:#?}"))
}

async fn set_policy(
    c: &mut MeshControlClient<Channel>,
    policy: pb::Policy,
) -> Result<(), tonic::Status> {
    c.set_policy(pb::SetPolicyRequest {
        policy: Some(policy),
    })
    .await
    .map(|_| ())
}

fn cost_override(version: u64, from: u64, to: u64, cost: u32) -> pb::Policy {
    pb::Policy {
        version,
        link_costs: vec![pb::LinkCostOverride {
            from_node: from,
            to_node: to,
            cost,
        }],
        ..pb::Policy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_control_over_a_line_of_two_domains() {
    let mut node_d = Node::new(4, vec![]);
    node_d.domain = 2;
    node_d.start();
    let mut node_c = Node::new(3, vec![node_d.listen]);
    node_c.start();
    let mut node_b = Node::new(2, vec![node_c.listen]);
    let b_url = node_b.with_grpc();
    node_b.start();
    let mut node_a = Node::new(1, vec![node_b.listen]);
    let a_url = node_a.with_grpc();
    node_a.start();
    let mut ca = connect(a_url).await;
    let mut cb = connect(b_url).await;

    // Converged: A routes to B, C and domain 2, and knows every link of the line.
    let t = wait_topology(&mut ca, "A converges", |t| {
        t.nodes.len() == 3
            && t.nodes.iter().all(|n| n.state() == pb::NodeState::Up)
            && t.links.len() == 6
            && t.links.iter().all(|l| l.state() == pb::LinkState::Up)
            && t.domains.len() == 2
            && t.domains.iter().all(|d| d.cost.is_some())
    })
    .await;
    assert_eq!((t.node_id, t.domain_id, t.policy_version), (1, 1, 0));
    let ids: Vec<u64> = t.nodes.iter().map(|n| n.node_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(node(&t, 1).cost, Some(0));
    assert_eq!(node(&t, 1).addresses, [node_a.listen.to_string()]);
    assert_eq!(node(&t, 2).cost, Some(1));
    assert_eq!(
        (node(&t, 3).cost, &node(&t, 3).next_hops[..]),
        (Some(2), &[2][..])
    );
    for (from, to) in [(1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 3)] {
        let l = link(&t, from, to).unwrap_or_else(|| panic!("link {from}-{to} in {t:#?}"));
        assert_eq!((l.cost, l.advertised_cost), (1, 1), "{l:?}");
    }
    let d1 = &t.domains[0];
    assert_eq!((d1.domain_id, &d1.border_nodes[..]), (1, &[3][..]));
    assert_eq!(d1.member_ranges, [pb::NodeRange { first: 1, last: 3 }]);
    assert_eq!((d1.member_count, d1.cost), (3, Some(0)));
    let d2 = &t.domains[1];
    assert_eq!((d2.domain_id, &d2.border_nodes[..]), (2, &[4][..]));
    assert_eq!(d2.member_ranges, [pb::NodeRange { first: 4, last: 4 }]);
    assert_eq!(d2.member_count, 1);
    assert!(t.epoch > 0);
    assert_eq!(node_a.metric("mesh_route_entries"), Some(3));

    // Scopes: the own domain in detail; another domain as its summary only; unknown: NOT_FOUND.
    let own = topology(&mut ca, Some(1)).await.unwrap();
    assert_eq!(
        (own.nodes.len(), own.links.len(), own.domains.len()),
        (3, 6, 1)
    );
    assert_eq!(own.domains[0].domain_id, 1);
    let other = topology(&mut ca, Some(2)).await.unwrap();
    assert!(
        other.nodes.is_empty() && other.links.is_empty(),
        "{other:#?}"
    );
    assert_eq!(other.domains.len(), 1);
    assert_eq!(other.domains[0].border_nodes, [4]);
    let e = topology(&mut ca, Some(9)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // SetPolicy: A's link to B costs 5 now: on A at once, on B once A's LSA is flooded.
    set_policy(&mut ca, cost_override(1, 1, 2, 5))
        .await
        .unwrap();
    let t1 = wait_topology(&mut ca, "A applies the override", |t| {
        link(t, 1, 2).is_some_and(|l| l.cost == 5) && node(t, 3).cost == Some(6)
    })
    .await;
    assert_eq!(t1.policy_version, 1);
    assert!(t1.epoch > t.epoch, "epoch {} then {}", t.epoch, t1.epoch);
    assert_eq!(
        link(&t1, 1, 2).unwrap().advertised_cost,
        1,
        "before the policy"
    );
    assert_eq!(link(&t1, 2, 1).unwrap().cost, 1, "costs are per direction");
    let tb = wait_topology(&mut cb, "B sees A's new cost", |t| {
        link(t, 1, 2).is_some_and(|l| l.cost == 5)
    })
    .await;
    assert_eq!(tb.policy_version, 0, "B's own policy is unchanged");

    // Bad policies: INVALID_ARGUMENT naming the field; nothing changes.
    let e = set_policy(&mut ca, cost_override(2, 1, 2, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("link_costs"), "{e:?}");
    let no_scope = pb::Policy {
        version: 2,
        rate_limits: vec![pb::RateLimit {
            scope: None,
            msgs_per_sec: 10,
            burst: 0,
        }],
        ..pb::Policy::default()
    };
    let e = set_policy(&mut ca, no_scope).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("rate_limits[0]"), "{e:?}");
    let e = set_policy(&mut ca, cost_override(2, 2, 3, 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("from_node"), "{e:?}");
    let e = ca
        .set_policy(pb::SetPolicyRequest { policy: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A version that does not increase: FAILED_PRECONDITION.
    for version in [1, 0] {
        let e = set_policy(&mut ca, cost_override(version, 1, 2, 9))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("version"), "{e:?}");
    }
    let still = topology(&mut ca, None).await.unwrap();
    assert_eq!(still.policy_version, 1);
    assert_eq!(link(&still, 1, 2).unwrap().cost, 5);

    // PublishState: the node's own state shows in GetTopology; another node's is refused.
    let state = pb::StateSync {
        node_id: 0,
        domain_id: Some(1),
        addresses: vec!["10.1.1.1:7001".into(), "[fd00::1]:7001".into()],
        capabilities: vec!["e2e-enc".into()],
        load: Some(pb::NodeLoad {
            cpu_permille: 250,
            memory_permille: 100,
            queued_msgs: 7,
            sessions: 1,
        }),
        draining: true,
        sequence: 2,
    };
    ca.publish_state(state.clone()).await.unwrap();
    let older = pb::StateSync {
        node_id: 1,
        addresses: vec!["10.9.9.9:1".into()],
        draining: false,
        sequence: 1,
        ..state.clone()
    };
    ca.publish_state(older)
        .await
        .expect("an old sequence is ignored, not an error");
    let t2 = topology(&mut ca, None).await.unwrap();
    let me = node(&t2, 1);
    assert_eq!(me.state(), pb::NodeState::Draining);
    assert_eq!(me.addresses, state.addresses);
    assert_eq!(me.capabilities, ["e2e-enc"]);
    assert_eq!(me.load, state.load);
    assert!(t2.epoch > still.epoch);
    for foreign in [
        pb::StateSync {
            node_id: 2,
            ..state.clone()
        },
        pb::StateSync {
            domain_id: Some(2),
            ..state.clone()
        },
    ] {
        let e = ca.publish_state(foreign).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    let e = ca
        .publish_state(pb::StateSync {
            addresses: vec!["no-port".into()],
            ..state.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("addresses[0]"), "{e:?}");

    // Every call is counted, by method and code, with its latency.
    let counted = node_a.scrape_nonzero("mesh_grpc_requests_total");
    for want in [
        "method=\"MeshControl/SetPolicy\",code=\"OK\"} 1",
        "method=\"MeshControl/SetPolicy\",code=\"INVALID_ARGUMENT\"} 4",
        "method=\"MeshControl/SetPolicy\",code=\"FAILED_PRECONDITION\"} 2",
        "method=\"MeshControl/GetTopology\",code=\"NOT_FOUND\"} 1",
        "method=\"MeshControl/PublishState\",code=\"OK\"} 2",
        "method=\"MeshControl/PublishState\",code=\"FAILED_PRECONDITION\"} 2",
    ] {
        assert!(counted.contains(want), "{want} not in {counted}");
    }
    assert!(
        node_a
            .metric("mesh_grpc_request_seconds_count")
            .unwrap_or(0)
            >= 10
    );

    // Clean stops with client connections still open.
    node_a.stop();
    node_b.stop();
    node_c.stop();
    node_d.stop();
}

#[test]
fn a_taken_grpc_address_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["--node-id", "7", "--listen", &listen, "--enable-grpc"])
        .arg("--grpc-listen")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > WITHIN {
            let _ = child.kill();
            panic!("the node kept running on a taken gRPC address");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("grpc-listen {addr}")), "{err}");
}
