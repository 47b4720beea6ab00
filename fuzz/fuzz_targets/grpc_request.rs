//! Fuzzes the gRPC request validation of the node (SPEC §4): arbitrary bytes decoded as the
//! prost request types an unauthenticated gRPC client can send, then run through the node's
//! own checks — `data_service::validate` (Send, SendStream), `data_service::validate_status`
//! (GetStatus) and `policy::from_proto` + the router's `Policy::validate` (SetPolicy).
//!
//! Never a panic; a refusal is always the documented status code; what passes is what the
//! request said (no silent change of destination, mode or limits).
//!
//! The first byte picks the request type, the rest is its protobuf encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_node::grpc::data_service::{MAX_PAYLOAD, MAX_STATUS_IDS, validate, validate_status};
use mesh_node::grpc::policy::{from_proto, rejection};
use mesh_proto::v1 as pb;
use mesh_routing::{NodeId, ValidPolicy};
use prost::Message;
use tonic::Code;

/// The node the SetPolicy requests are sent to.
const ME: u64 = 7;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => send(bytes),
        1 => set_policy(bytes),
        _ => get_status(bytes),
    }
});

fn send(bytes: &[u8]) {
    let Ok(req) = pb::SendRequest::decode(bytes) else {
        return;
    };
    let (dst, payload_len, require_ack, mode) =
        (req.dst_node, req.payload.len(), req.require_ack, req.mode);
    let (ttl, class, timeout_ms) = (req.ttl, req.class, req.timeout_ms);
    match validate(req) {
        Ok((msg, m, wait)) => {
            assert_ne!(dst, 0);
            assert_eq!(msg.dst_node, dst);
            assert!(payload_len <= MAX_PAYLOAD);
            assert_eq!(msg.payload.len(), payload_len);
            assert_eq!(u32::from(msg.ttl), ttl);
            assert_eq!(u32::from(msg.class), class);
            assert_eq!(m as i32, mode);
            assert!(m != pb::SendMode::WaitForAck || require_ack);
            assert!(timeout_ms == 0 || wait.as_millis() == u128::from(timeout_ms));
            // What passed fits a frame's metadata: the node can put it on the wire.
            if let Some(meta) = &msg.meta {
                meta.encode(&mesh_wire::MetaLimits::default())
                    .expect("validated metadata encodes");
            }
        }
        Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{s:?}"),
    }
}

fn set_policy(bytes: &[u8]) {
    let Ok(req) = pb::SetPolicyRequest::decode(bytes) else {
        return;
    };
    let Some(p) = req.policy else {
        return;
    };
    let me = NodeId::new(ME).expect("non-zero");
    match from_proto(me, &p) {
        Ok(policy) => {
            assert_eq!(policy.version, p.version);
            match policy.validate() {
                Ok(valid) => {
                    // As the router would apply it over the policy in force (none yet).
                    let in_force = ValidPolicy::default();
                    if let Err(e) = in_force.check_successor(&valid) {
                        let s = rejection(&e);
                        assert!(matches!(
                            s.code(),
                            Code::FailedPrecondition | Code::InvalidArgument
                        ));
                    }
                }
                Err(e) => {
                    let s = rejection(&e);
                    assert!(
                        matches!(s.code(), Code::FailedPrecondition | Code::InvalidArgument),
                        "{s:?}"
                    );
                }
            }
        }
        Err(s) => assert!(
            matches!(s.code(), Code::InvalidArgument | Code::Unimplemented),
            "{s:?}"
        ),
    }
}

fn get_status(bytes: &[u8]) {
    let Ok(req) = pb::GetStatusRequest::decode(bytes) else {
        return;
    };
    match validate_status(&req) {
        Ok(()) => assert!(req.msg_ids.len() <= MAX_STATUS_IDS),
        Err(s) => {
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(req.msg_ids.len() > MAX_STATUS_IDS);
        }
    }
}
