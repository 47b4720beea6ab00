//! gRPC request metrics (SPEC §8): requests per method and status code, and a latency
//! histogram per method, as fixed arrays of atomics (no map, no lock per request).
//!
//! Rendered as `mesh_grpc_requests_total{method,code}` and `mesh_grpc_request_seconds` (a
//! histogram: `_bucket{le}`, `_sum`, `_count` per method). A service records each call with
//! [`GrpcMetrics::record`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A gRPC method this node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMethod {
    /// `mesh.v1.MeshControl/PublishState`.
    PublishState,
    /// `mesh.v1.MeshControl/GetTopology`.
    GetTopology,
    /// `mesh.v1.MeshControl/SetPolicy`.
    SetPolicy,
    /// `mesh.v1.MeshData/Send`.
    Send,
    /// `mesh.v1.MeshData/SendStream` (one per stream).
    SendStream,
    /// `mesh.v1.MeshData/Subscribe` (one per stream).
    Subscribe,
    /// `mesh.v1.MeshData/Ack`.
    Ack,
    /// `mesh.v1.MeshData/GetStatus`.
    GetStatus,
}

impl GrpcMethod {
    /// Every method, in metric order.
    pub const ALL: [GrpcMethod; 8] = [
        GrpcMethod::PublishState,
        GrpcMethod::GetTopology,
        GrpcMethod::SetPolicy,
        GrpcMethod::Send,
        GrpcMethod::SendStream,
        GrpcMethod::Subscribe,
        GrpcMethod::Ack,
        GrpcMethod::GetStatus,
    ];

    /// The `method` label: service and method name.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            GrpcMethod::PublishState => "MeshControl/PublishState",
            GrpcMethod::GetTopology => "MeshControl/GetTopology",
            GrpcMethod::SetPolicy => "MeshControl/SetPolicy",
            GrpcMethod::Send => "MeshData/Send",
            GrpcMethod::SendStream => "MeshData/SendStream",
            GrpcMethod::Subscribe => "MeshData/Subscribe",
            GrpcMethod::Ack => "MeshData/Ack",
            GrpcMethod::GetStatus => "MeshData/GetStatus",
        }
    }
}

/// gRPC status codes by number, as the `code` label spells them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Upper bounds of the latency buckets, in microseconds (the last bucket, +Inf, is implied).
const BUCKETS_US: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

#[derive(Debug, Default)]
struct MethodMetrics {
    by_code: [AtomicU64; CODES.len()],
    /// Requests at or under each bound (not cumulative here; summed when rendered).
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// Counters of every method (see the module docs).
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    methods: [MethodMetrics; GrpcMethod::ALL.len()],
}

impl GrpcMetrics {
    /// Records one finished call of `method` that took `elapsed` and ended with `code`.
    pub fn record(&self, method: GrpcMethod, code: tonic::Code, elapsed: Duration) {
        let m = &self.methods[method as usize];
        let code = usize::try_from(i32::from(code)).map_or(2, |c| c.min(CODES.len() - 1));
        m.by_code[code].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        m.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        m.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Requests of `method` answered with `code` so far.
    #[must_use]
    pub fn requests(&self, method: GrpcMethod, code: tonic::Code) -> u64 {
        usize::try_from(i32::from(code)).map_or(0, |c| {
            self.methods[method as usize].by_code[c].load(Ordering::Relaxed)
        })
    }

    /// Appends the metrics in the Prometheus text format. Every method shows its OK count
    /// (0 included) and each other code it has answered with.
    pub fn render(&self, node_id: u64, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP mesh_grpc_requests_total gRPC requests answered, by method and status code.\n# TYPE mesh_grpc_requests_total counter"
        );
        for method in GrpcMethod::ALL {
            let m = &self.methods[method as usize];
            for (code, name) in CODES.iter().enumerate() {
                let n = m.by_code[code].load(Ordering::Relaxed);
                if n > 0 || code == 0 {
                    let _ = writeln!(
                        out,
                        "mesh_grpc_requests_total{{node=\"{node_id}\",method=\"{}\",code=\"{name}\"}} {n}",
                        method.label()
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP mesh_grpc_request_seconds gRPC request latency, by method.\n# TYPE mesh_grpc_request_seconds histogram"
        );
        for method in GrpcMethod::ALL {
            let m = &self.methods[method as usize];
            let label = method.label();
            let mut cumulative = 0;
            for (i, b) in m.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = BUCKETS_US
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |us| seconds(*us));
                let _ = writeln!(
                    out,
                    "mesh_grpc_request_seconds_bucket{{node=\"{node_id}\",method=\"{label}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "mesh_grpc_request_seconds_sum{{node=\"{node_id}\",method=\"{label}\"}} {}\nmesh_grpc_request_seconds_count{{node=\"{node_id}\",method=\"{label}\"}} {cumulative}",
                seconds(m.sum_us.load(Ordering::Relaxed))
            );
        }
    }
}

/// Microseconds as decimal seconds, exactly (`1500` → `0.0015`).
fn seconds(us: u64) -> String {
    let frac = format!("{:06}", us % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{}", us / 1_000_000)
    } else {
        format!("{}.{frac}", us / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_codes_and_fills_the_histogram() {
        let m = GrpcMetrics::default();
        m.record(
            GrpcMethod::SetPolicy,
            tonic::Code::InvalidArgument,
            Duration::from_micros(700),
        );
        m.record(
            GrpcMethod::SetPolicy,
            tonic::Code::Ok,
            Duration::from_secs(9),
        );
        assert_eq!(
            m.requests(GrpcMethod::SetPolicy, tonic::Code::InvalidArgument),
            1
        );
        let mut out = String::new();
        m.render(4, &mut out);
        for line in [
            "mesh_grpc_requests_total{node=\"4\",method=\"MeshControl/SetPolicy\",code=\"INVALID_ARGUMENT\"} 1",
            "mesh_grpc_requests_total{node=\"4\",method=\"MeshControl/GetTopology\",code=\"OK\"} 0",
            "mesh_grpc_request_seconds_bucket{node=\"4\",method=\"MeshControl/SetPolicy\",le=\"0.0005\"} 0",
            "mesh_grpc_request_seconds_bucket{node=\"4\",method=\"MeshControl/SetPolicy\",le=\"0.001\"} 1",
            "mesh_grpc_request_seconds_bucket{node=\"4\",method=\"MeshControl/SetPolicy\",le=\"+Inf\"} 2",
            "mesh_grpc_request_seconds_sum{node=\"4\",method=\"MeshControl/SetPolicy\"} 9.0007",
            "mesh_grpc_request_seconds_count{node=\"4\",method=\"MeshControl/SetPolicy\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
