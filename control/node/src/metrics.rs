//! The Prometheus endpoint (SPEC §8): `GET /metrics` in the text exposition format, served by a
//! small HTTP/1.1 responder on the control thread (one request per connection, bounded request
//! size, nothing else served).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_engine::{CoreMetrics, DropReason, EngineHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::control::ControlMetrics;
use crate::grpc::GrpcMetrics;

/// Largest request accepted (a metrics scrape is a few hundred bytes).
const MAX_REQUEST: usize = 8 << 10;

/// A per-core counter: name, help, and how to find it in a core's block.
type CoreCounter = (&'static str, &'static str, fn(&CoreMetrics) -> &AtomicU64);

/// Renders every metric of the node.
pub fn render(
    node_id: u64,
    engine: &EngineHandle,
    control: &ControlMetrics,
    grpc: &GrpcMetrics,
) -> String {
    let mut out = String::with_capacity(8 << 10);
    let per_core: [CoreCounter; 22] = [
        ("mesh_frames_in_total", "Frames read from peers.", |m| {
            &m.frames_in
        }),
        ("mesh_bytes_in_total", "Bytes read from peers.", |m| {
            &m.bytes_in
        }),
        ("mesh_bytes_out_total", "Bytes written to peers.", |m| {
            &m.bytes_out
        }),
        (
            "mesh_forwarded_total",
            "Frames forwarded to another node.",
            |m| &m.forwarded,
        ),
        (
            "mesh_forwarded_data_total",
            "DATA frames forwarded to another node (the rest of mesh_forwarded_total are answers and control frames).",
            |m| &m.forwarded_data,
        ),
        (
            "mesh_cross_core_total",
            "Frames handed to another core.",
            |m| &m.cross_core,
        ),
        (
            "mesh_delivered_local_total",
            "Frames addressed to this node.",
            |m| &m.delivered_local,
        ),
        (
            "mesh_forward_bytes_copied_total",
            "Received bytes copied on the way through (partial frames carried into a new read buffer).",
            |m| &m.forward_bytes_copied,
        ),
        (
            "mesh_sessions_established_total",
            "Sessions established.",
            |m| &m.sessions_established,
        ),
        (
            "mesh_sessions_open",
            "Sessions open (handshaking or established).",
            |m| &m.sessions_open,
        ),
        (
            "mesh_admission_refused_total",
            "Connections refused at admission.",
            |m| &m.admission_refused,
        ),
        (
            "mesh_protocol_errors_total",
            "Sessions closed for a protocol error from the peer.",
            |m| &m.protocol_errors,
        ),
        (
            "mesh_handshake_failures_total",
            "Handshakes that failed.",
            |m| &m.handshake_failures,
        ),
        (
            "mesh_handshake_timeouts_total",
            "Connections closed because TLS and HELLO did not complete within the handshake deadline.",
            |m| &m.handshake_timeouts,
        ),
        ("mesh_frames_out_total", "Frames written to peers.", |m| {
            &m.frames_out
        }),
        (
            "mesh_outbox_in_flight",
            "Messages originated here and kept until the destination stored them.",
            |m| &m.outbox_in_flight,
        ),
        (
            "mesh_inbox_held",
            "Messages stored here for local applications, not yet acked.",
            |m| &m.inbox_held,
        ),
        (
            "mesh_retransmits_total",
            "Messages sent again (timeout, reconnect, route change).",
            |m| &m.retransmits,
        ),
        (
            "mesh_rate_limited_total",
            "Times a client's message waited for its destination's rate limit (SetPolicy).",
            |m| &m.rate_limited,
        ),
        (
            "mesh_buffers_reused_total",
            "Read buffers served from the core's pool.",
            |m| &m.buffers_reused,
        ),
        (
            "mesh_buffers_allocated_total",
            "Read buffers allocated (the core's pool had none free).",
            |m| &m.buffers_allocated,
        ),
        (
            "mesh_buffer_pool_retained_bytes",
            "Bytes of read buffers the core's pool holds for reuse.",
            |m| &m.buffer_pool_retained_bytes,
        ),
    ];
    for (name, help, get) in per_core {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, m) in engine.metrics().iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{node=\"{node_id}\",core=\"{core}\"}} {}",
                CoreMetrics::get(get(m))
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mesh_dropped_total Frames dropped, by reason.\n# TYPE mesh_dropped_total counter"
    );
    for (core, m) in engine.metrics().iter().enumerate() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "mesh_dropped_total{{node=\"{node_id}\",core=\"{core}\",reason=\"{}\"}} {}",
                r.label(),
                CoreMetrics::get(&m.dropped[i])
            );
        }
    }
    let control_metrics: [(&str, &str, &str, &AtomicU64); 10] = [
        (
            "mesh_route_computations_total",
            "counter",
            "Route computations (SPF) run.",
            &control.route_computations,
        ),
        (
            "mesh_spf_last_microseconds",
            "gauge",
            "Duration of the last route computation.",
            &control.last_spf_us,
        ),
        (
            "mesh_spf_microseconds_total",
            "counter",
            "Time spent computing routes.",
            &control.spf_us_total,
        ),
        (
            "mesh_route_entries",
            "gauge",
            "Route-table entries: own-domain nodes plus other domains.",
            &control.route_entries,
        ),
        (
            "mesh_lsa_messages_sent_total",
            "counter",
            "Routing messages sent.",
            &control.lsa_messages_sent,
        ),
        (
            "mesh_lsa_messages_received_total",
            "counter",
            "Routing messages received.",
            &control.lsa_messages_received,
        ),
        (
            "mesh_lsa_messages_rejected_total",
            "counter",
            "Routing messages refused.",
            &control.lsa_messages_rejected,
        ),
        (
            "mesh_neighbors",
            "gauge",
            "Adjacent peer nodes.",
            &control.neighbors,
        ),
        (
            "mesh_delivered_total",
            "counter",
            "Frames delivered to this node's application side.",
            &control.delivered,
        ),
        (
            "mesh_undeliverable_total",
            "counter",
            "Frames this node sent that could not be delivered.",
            &control.undeliverable,
        ),
    ];
    for (name, kind, help, v) in control_metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node_id}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    grpc.render(node_id, &mut out);
    out
}

/// Serves `/metrics` on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    node_id: u64,
    engine: Arc<EngineHandle>,
    control: Arc<ControlMetrics>,
    grpc: Arc<GrpcMetrics>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    loop {
        let (mut sock, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let engine = engine.clone();
        let control = control.clone();
        let grpc = grpc.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut len = 0;
            let head_end = loop {
                if len == buf.len() {
                    return;
                }
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[len..]),
                )
                .await;
                match read {
                    Ok(Ok(0) | Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => len += n,
                }
                if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]);
            let line = head.lines().next().unwrap_or("");
            let (status, body) = if line.starts_with("GET /metrics ") {
                ("200 OK", render(node_id, &engine, &control, &grpc))
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_owned(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                debug!(%peer, error = %e, "metrics response not sent");
            }
        });
    }
}
