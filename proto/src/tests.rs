//! Tests of the generated contract: wire compatibility with the seed's field numbers, defaults,
//! encode/decode round trips of every main message, the embedded descriptor set, and an
//! in-process gRPC server and client for both services.

use std::collections::HashMap;
use std::fmt::Debug;

use prost::Message;
use prost::bytes::Bytes;
use prost_types::Timestamp;
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::codegen::{BoxStream, tokio_stream::Stream};
use tonic::{Request, Response, Status, Streaming};

use crate::FILE_DESCRIPTOR_SET;
use crate::v1::mesh_control_client::MeshControlClient;
use crate::v1::mesh_control_server::{MeshControl, MeshControlServer};
use crate::v1::mesh_data_client::MeshDataClient;
use crate::v1::mesh_data_server::{MeshData, MeshDataServer};
use crate::v1::{
    AckRequest, DestinationSet, DomainPreference, FailureReason, GetStatusRequest,
    GetStatusResponse, GetTopologyRequest, LinkCostOverride, LinkState, MessageStatus,
    MessageStatusEntry, NodeLoad, NodeRange, NodeState, Policy, RateLimit, Received, SendMode,
    SendRequest, SendResponse, SetPolicyRequest, StateSync, SubscribeRequest, SubscribeStart,
    Topology, TopologyDomain, TopologyLink, TopologyNode, rate_limit, subscribe_request,
};

/// Encodes `msg`, decodes the bytes, and checks that nothing was lost or changed.
fn assert_round_trip<M: Message + Default + PartialEq + Debug>(msg: &M) {
    let encoded = msg.encode_to_vec();
    let decoded = M::decode(encoded.as_slice()).expect("a message we encoded decodes");
    assert_eq!(&decoded, msg);
    // (Re-encoding is not compared: map entries are encoded in HashMap order.)
}

fn seed_send_request() -> SendRequest {
    SendRequest {
        dst_node: 12345,
        payload: Bytes::from_static(b"hello"),
        require_ack: true,
        ..SendRequest::default()
    }
}

fn full_send_request() -> SendRequest {
    SendRequest {
        dst_domain: Some(7),
        headers: HashMap::from([
            ("trace-id".to_owned(), Bytes::from_static(b"abc")),
            ("bin".to_owned(), Bytes::from_static(&[0, 255, 1])),
        ]),
        corr_id: 99,
        idempotency_key: "order-1".to_owned(),
        mode: SendMode::WaitForAck.into(),
        timeout_ms: 1500,
        ttl: 16,
        class: 3,
        ..seed_send_request()
    }
}

fn ack_request() -> AckRequest {
    AckRequest {
        src_node: 5,
        msg_id: 77,
        success: false,
        message: "schema mismatch".to_owned(),
    }
}

fn sample_topology() -> Topology {
    Topology {
        node_id: 1,
        domain_id: 10,
        epoch: 42,
        nodes: vec![
            TopologyNode {
                node_id: 1,
                domain_id: 10,
                state: NodeState::Up.into(),
                addresses: vec!["10.0.0.1:8080".to_owned()],
                capabilities: vec!["e2e-enc".to_owned()],
                load: Some(NodeLoad {
                    cpu_permille: 250,
                    memory_permille: 500,
                    queued_msgs: 12,
                    sessions: 3,
                }),
                cost: Some(0),
                next_hops: vec![],
            },
            TopologyNode {
                node_id: 2,
                domain_id: 10,
                state: NodeState::Unreachable.into(),
                cost: None,
                ..TopologyNode::default()
            },
        ],
        links: vec![TopologyLink {
            from_node: 1,
            to_node: 2,
            cost: 10,
            state: LinkState::OneWay.into(),
            advertised_cost: 5,
        }],
        domains: vec![TopologyDomain {
            domain_id: 11,
            border_nodes: vec![1_000_001],
            member_ranges: vec![NodeRange {
                first: 1_000_000,
                last: 1_000_999,
            }],
            member_count: 1000,
            cost: Some(20),
        }],
        policy_version: 3,
    }
}

fn sample_policy() -> Policy {
    Policy {
        version: 3,
        link_costs: vec![LinkCostOverride {
            from_node: 1,
            to_node: 2,
            cost: u32::MAX,
        }],
        domain_preferences: vec![DomainPreference {
            domain_id: 11,
            preferred_border_nodes: vec![1_000_001, 1_000_002],
            extra_cost: 5,
            avoid_transit: true,
        }],
        deny: Some(DestinationSet {
            nodes: vec![666],
            domains: vec![13],
        }),
        allow: Some(DestinationSet::default()),
        rate_limits: vec![
            RateLimit {
                scope: Some(rate_limit::Scope::DstNode(2)),
                msgs_per_sec: 1000,
                burst: 0,
            },
            RateLimit {
                scope: Some(rate_limit::Scope::DstDomain(11)),
                msgs_per_sec: 10_000,
                burst: 20_000,
            },
            RateLimit {
                scope: Some(rate_limit::Scope::Client("*".to_owned())),
                msgs_per_sec: 100,
                burst: 10,
            },
        ],
    }
}

#[test]
fn seed_fields_keep_seed_numbers_and_encoding() {
    // field 1 varint (tag 0x08) 12345 = 0xB9 0x60; field 2 bytes (0x12) len 5 "hello";
    // field 3 varint (0x18) true.
    let expected: &[u8] = &[
        0x08, 0xB9, 0x60, 0x12, 0x05, b'h', b'e', b'l', b'l', b'o', 0x18, 0x01,
    ];
    assert_eq!(seed_send_request().encode_to_vec(), expected);
    assert_eq!(
        SendRequest::decode(expected).expect("seed bytes decode"),
        seed_send_request()
    );
}

#[test]
fn default_mode_is_fire_and_forget() {
    assert_eq!(SendRequest::default().mode(), SendMode::FireAndForget);
    assert_eq!(SendMode::default(), SendMode::FireAndForget);
    let decoded = SendRequest::decode(&[][..]).expect("empty message decodes");
    assert_eq!(decoded.mode(), SendMode::FireAndForget);
    assert_eq!(
        SendMode::FireAndForget.as_str_name(),
        "SEND_MODE_FIRE_AND_FORGET"
    );
}

#[test]
fn enum_zero_values_mean_unset() {
    assert_eq!(MessageStatus::default(), MessageStatus::Unspecified);
    assert_eq!(FailureReason::default(), FailureReason::Unspecified);
    assert_eq!(NodeState::default(), NodeState::Unspecified);
    assert_eq!(LinkState::default(), LinkState::Unspecified);
    // The status ladder keeps the spec's order.
    let ladder = [
        MessageStatus::Accepted,
        MessageStatus::Persisted,
        MessageStatus::Forwarded,
        MessageStatus::Delivered,
        MessageStatus::WaitingForClientAck,
        MessageStatus::AckSuccess,
    ];
    assert!(ladder.windows(2).all(|w| (w[0] as i32) < (w[1] as i32)));
    assert_eq!(
        MessageStatus::from_str_name("MESSAGE_STATUS_PENDING_CLIENT"),
        Some(MessageStatus::PendingClient)
    );
}

#[test]
fn unknown_enum_numbers_are_kept_not_mapped() {
    let req = SendRequest {
        mode: 9,
        ..SendRequest::default()
    };
    let decoded = SendRequest::decode(req.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(
        decoded.mode, 9,
        "the raw number survives for the server to reject"
    );
    assert!(SendMode::try_from(decoded.mode).is_err());
}

#[test]
fn optional_fields_tell_unset_from_zero() {
    let unset = SendRequest::default().encode_to_vec();
    let zero = SendRequest {
        dst_domain: Some(0),
        ..SendRequest::default()
    }
    .encode_to_vec();
    assert!(unset.is_empty());
    assert_eq!(zero, [0x20, 0x00], "field 4 present with value 0");
    let decoded = SendRequest::decode(zero.as_slice()).expect("decodes");
    assert_eq!(decoded.dst_domain, Some(0));
}

#[test]
fn data_messages_round_trip() {
    assert_round_trip(&seed_send_request());
    assert_round_trip(&full_send_request());
    assert_round_trip(&SendResponse {
        msg_id: 1 << 40,
        status: MessageStatus::Failed.into(),
        status_message: "ttl reached 0 at node 9".to_owned(),
        position: 17,
        failure_reason: FailureReason::TtlExpired.into(),
        duplicate: true,
    });
    assert_round_trip(&Received {
        src_node: 5,
        src_domain: 10,
        dst_node: 6,
        msg_id: 77,
        corr_id: 99,
        payload: Bytes::from(vec![7_u8; 4096]),
        headers: HashMap::from([("k".to_owned(), Bytes::from_static(b"v"))]),
        require_ack: true,
        delivery_attempt: 2,
        class: 3,
    });
    assert_round_trip(&ack_request());
    assert_round_trip(&GetStatusRequest {
        msg_ids: vec![1, 2, u64::MAX],
    });
    assert_round_trip(&GetStatusResponse {
        entries: vec![
            MessageStatusEntry {
                msg_id: 1,
                found: true,
                status: MessageStatus::AckFailure.into(),
                status_message: "rejected".to_owned(),
                updated_at: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                failure_reason: FailureReason::Unspecified.into(),
            },
            MessageStatusEntry {
                msg_id: 2,
                ..MessageStatusEntry::default()
            },
        ],
    });
}

#[test]
fn subscribe_request_variants_round_trip() {
    let variants = [
        subscribe_request::Kind::Start(SubscribeStart {
            src_node: Some(5),
            class: None,
            initial_credits: 64,
        }),
        subscribe_request::Kind::Credits(32),
        subscribe_request::Kind::Ack(ack_request()),
    ];
    for kind in variants {
        assert_round_trip(&SubscribeRequest { kind: Some(kind) });
    }
    assert_round_trip(&SubscribeRequest::default());
}

#[test]
fn control_messages_round_trip() {
    assert_round_trip(&StateSync {
        node_id: 0,
        domain_id: Some(10),
        addresses: vec!["10.0.0.1:8080".to_owned(), "[::1]:8080".to_owned()],
        capabilities: vec!["e2e-enc".to_owned()],
        load: Some(NodeLoad {
            cpu_permille: 1000,
            memory_permille: 1,
            queued_msgs: u64::MAX,
            sessions: 0,
        }),
        draining: true,
        sequence: 8,
    });
    assert_round_trip(&GetTopologyRequest { domain_id: Some(0) });
    assert_round_trip(&GetTopologyRequest::default());
    assert_round_trip(&sample_topology());
    assert_round_trip(&SetPolicyRequest {
        policy: Some(sample_policy()),
    });
}

#[test]
fn descriptor_set_describes_both_services() {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET is a FileDescriptorSet");
    let file = set
        .file
        .iter()
        .find(|f| f.name() == "mesh.proto")
        .expect("mesh.proto is in the set");
    assert_eq!(file.package(), "mesh.v1");
    let services: Vec<&str> = file
        .service
        .iter()
        .map(prost_types::ServiceDescriptorProto::name)
        .collect();
    assert_eq!(services, ["MeshData", "MeshControl"]);
    let data_methods: Vec<&str> = file.service[0]
        .method
        .iter()
        .map(prost_types::MethodDescriptorProto::name)
        .collect();
    assert_eq!(
        data_methods,
        ["Send", "SendStream", "Subscribe", "Ack", "GetStatus"]
    );
    let control_methods: Vec<&str> = file.service[1]
        .method
        .iter()
        .map(prost_types::MethodDescriptorProto::name)
        .collect();
    assert_eq!(
        control_methods,
        ["PublishState", "GetTopology", "SetPolicy"]
    );
    assert!(
        set.file
            .iter()
            .any(|f| f.name() == "google/protobuf/timestamp.proto"),
        "imports are included, as reflection needs them"
    );
}

/// A stand-in node: answers from the request alone, with no state.
struct EchoNode;

const ECHO_MSG_ID: u64 = 4242;

#[tonic::async_trait]
impl MeshData for EchoNode {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let req = request.into_inner();
        if req.dst_node == 0 {
            return Err(Status::invalid_argument("dst_node must not be 0"));
        }
        Ok(Response::new(SendResponse {
            msg_id: ECHO_MSG_ID,
            status: MessageStatus::Persisted.into(),
            status_message: format!("{} bytes for node {}", req.payload.len(), req.dst_node),
            ..SendResponse::default()
        }))
    }

    type SendStreamStream = BoxStream<SendResponse>;

    async fn send_stream(
        &self,
        request: Request<Streaming<SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let mut position = 0_u64;
        let responses = request.into_inner().map(move |req| {
            let req = req?;
            let resp = SendResponse {
                msg_id: ECHO_MSG_ID + position,
                status: MessageStatus::Persisted.into(),
                status_message: String::from_utf8_lossy(&req.payload).into_owned(),
                position,
                ..SendResponse::default()
            };
            position += 1;
            Ok(resp)
        });
        Ok(Response::new(Box::pin(responses)))
    }

    type SubscribeStream = BoxStream<Received>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut requests = request.into_inner();
        let Some(SubscribeRequest {
            kind: Some(subscribe_request::Kind::Start(start)),
        }) = requests.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first request must be `start`",
            ));
        };
        // One message per initial credit, from the filtered source.
        let src_node = start.src_node.unwrap_or(1);
        let deliveries = (1..=u64::from(start.initial_credits)).map(move |msg_id| {
            Ok(Received {
                src_node,
                dst_node: 2,
                msg_id,
                payload: Bytes::from_static(b"hi"),
                require_ack: true,
                delivery_attempt: 1,
                ..Received::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(deliveries))))
    }

    async fn ack(&self, _request: Request<AckRequest>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let entries = request
            .into_inner()
            .msg_ids
            .into_iter()
            .map(|msg_id| MessageStatusEntry {
                msg_id,
                found: msg_id == ECHO_MSG_ID,
                ..MessageStatusEntry::default()
            })
            .collect();
        Ok(Response::new(GetStatusResponse { entries }))
    }
}

#[tonic::async_trait]
impl MeshControl for EchoNode {
    async fn publish_state(&self, request: Request<StateSync>) -> Result<Response<()>, Status> {
        match request.into_inner().node_id {
            0 | 1 => Ok(Response::new(())),
            other => Err(Status::failed_precondition(format!(
                "node 1 cannot publish the state of node {other}"
            ))),
        }
    }

    async fn get_topology(
        &self,
        request: Request<GetTopologyRequest>,
    ) -> Result<Response<Topology>, Status> {
        let mut topology = sample_topology();
        if let Some(domain_id) = request.into_inner().domain_id {
            topology.domains.retain(|d| d.domain_id == domain_id);
        }
        Ok(Response::new(topology))
    }

    async fn set_policy(&self, request: Request<SetPolicyRequest>) -> Result<Response<()>, Status> {
        match request.into_inner().policy {
            Some(_) => Ok(Response::new(())),
            None => Err(Status::invalid_argument("policy is required")),
        }
    }
}

/// Starts `EchoNode` on 127.0.0.1 (an ephemeral port) and connects a channel to it.
async fn start_echo_node() -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let server = tonic::transport::Server::builder()
        .add_service(MeshDataServer::new(EchoNode))
        .add_service(MeshControlServer::new(EchoNode))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect to the in-process server")
}

async fn collect<T>(mut stream: impl Stream<Item = Result<T, Status>> + Unpin) -> Vec<T> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item.expect("stream item"));
    }
    items
}

#[tokio::test]
async fn generated_clients_call_generated_servers() {
    let channel = start_echo_node().await;
    let mut data = MeshDataClient::new(channel.clone());
    let mut control = MeshControlClient::new(channel);

    // The seed's call.
    let resp = data
        .send(seed_send_request())
        .await
        .expect("Send succeeds")
        .into_inner();
    assert_eq!(resp.msg_id, ECHO_MSG_ID);
    assert_eq!(resp.status(), MessageStatus::Persisted);
    assert_eq!(resp.status_message, "5 bytes for node 12345");

    let err = data
        .send(SendRequest::default())
        .await
        .expect_err("dst_node 0 is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // SendStream: one response per request, carrying its position.
    let requests: Vec<SendRequest> = ["a", "b", "c"]
        .iter()
        .map(|p| SendRequest {
            payload: Bytes::from_static(p.as_bytes()),
            ..seed_send_request()
        })
        .collect();
    let responses = collect(
        data.send_stream(tokio_stream::iter(requests))
            .await
            .expect("SendStream opens")
            .into_inner(),
    )
    .await;
    let positions: Vec<(u64, &str)> = responses
        .iter()
        .map(|r| (r.position, r.status_message.as_str()))
        .collect();
    assert_eq!(positions, [(0, "a"), (1, "b"), (2, "c")]);

    // Subscribe: start with a filter and 3 credits, receive 3 messages.
    let start = SubscribeRequest {
        kind: Some(subscribe_request::Kind::Start(SubscribeStart {
            src_node: Some(5),
            class: None,
            initial_credits: 3,
        })),
    };
    let received = collect(
        data.subscribe(tokio_stream::iter([start]))
            .await
            .expect("Subscribe opens")
            .into_inner(),
    )
    .await;
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.src_node == 5 && r.require_ack));

    data.ack(ack_request()).await.expect("Ack succeeds");
    let status = data
        .get_status(GetStatusRequest {
            msg_ids: vec![ECHO_MSG_ID, 1],
        })
        .await
        .expect("GetStatus succeeds")
        .into_inner();
    let found: Vec<(u64, bool)> = status.entries.iter().map(|e| (e.msg_id, e.found)).collect();
    assert_eq!(found, [(ECHO_MSG_ID, true), (1, false)]);

    // MeshControl.
    control
        .publish_state(StateSync::default())
        .await
        .expect("PublishState succeeds");
    let topology = control
        .get_topology(GetTopologyRequest {
            domain_id: Some(11),
        })
        .await
        .expect("GetTopology succeeds")
        .into_inner();
    assert_eq!((topology.node_id, topology.epoch), (1, 42));
    assert_eq!(topology.domains.len(), 1);
    control
        .set_policy(SetPolicyRequest {
            policy: Some(sample_policy()),
        })
        .await
        .expect("SetPolicy succeeds");
    let err = control
        .set_policy(SetPolicyRequest::default())
        .await
        .expect_err("a missing policy is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
