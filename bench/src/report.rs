//! The summary table printed at the end of a run (and pasted into bench/README.md).

use std::fmt::Write as _;

use crate::results::Results;
use crate::run::{LatencyResult, ThroughputResult};

/// `64 B`, `4 KiB`, `1 MiB`.
pub fn size_label(len: usize) -> String {
    if len >= 1 << 20 && len.is_multiple_of(1 << 20) {
        format!("{} MiB", len >> 20)
    } else if len >= 1 << 10 && len.is_multiple_of(1 << 10) {
        format!("{} KiB", len >> 10)
    } else {
        format!("{len} B")
    }
}

/// `1.23M`, `45.6k`, `789`: counts and rates for people.
#[allow(clippy::cast_precision_loss)]
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// The mesh system the ratios are about (the pair through the native client when it ran).
fn primary_mesh(r: &Results) -> Option<&str> {
    r.config
        .systems
        .iter()
        .find(|s| s.as_str() == "mesh-pair")
        .or_else(|| {
            r.config
                .systems
                .iter()
                .find(|s| s.starts_with("mesh") && !s.contains("grpc"))
        })
        .or_else(|| r.config.systems.iter().find(|s| s.starts_with("mesh")))
        .map(String::as_str)
}

/// The gRPC mesh system of the ratios (the plain gRPC pair when it ran).
fn grpc_mesh(r: &Results) -> Option<&str> {
    r.config
        .systems
        .iter()
        .find(|s| s.as_str() == "mesh-grpc-pair")
        .or_else(|| r.config.systems.iter().find(|s| s.starts_with("mesh-grpc")))
        .map(String::as_str)
}

/// The systems mesh is compared with (they ran when they have results).
const PEERS: [&str; 2] = ["nats", "zenoh"];

fn tput<'a>(r: &'a Results, system: &str, len: usize) -> Option<&'a ThroughputResult> {
    r.throughput
        .iter()
        .find(|t| t.system == system && t.payload_len == len)
}

fn lat<'a>(r: &'a Results, system: &str, len: usize) -> Option<&'a LatencyResult> {
    r.latency
        .iter()
        .find(|t| t.system == system && t.payload_len == len)
}

/// The peer with the most msgs/s at `len`: (name, msgs/s).
fn best_peer_tput(r: &Results, len: usize) -> Option<(&'static str, f64)> {
    PEERS
        .iter()
        .filter_map(|p| tput(r, p, len).map(|t| (*p, t.msgs_per_s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The peer with the lowest p99 at `len`: (name, p99 µs).
fn best_peer_p99(r: &Results, len: usize) -> Option<(&'static str, f64)> {
    PEERS
        .iter()
        .filter_map(|p| lat(r, p, len).map(|l| (*p, l.latency.p99_us)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// What each hop past the first adds at p50, µs: for every `mesh-line<K><opts>` that ran with
/// a `mesh-pair<opts>` (same options), `(line p50 - pair p50) / (K - 1)`, as
/// `(line system, µs)`.
#[allow(clippy::cast_precision_loss)] // a hop count as f64
pub fn per_hop_p50(r: &Results, len: usize) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for s in &r.config.systems {
        let Some(rest) = s.strip_prefix("mesh-line") else {
            continue;
        };
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let (k, opts) = rest.split_at(digits);
        let Ok(k) = k.parse::<u32>() else { continue };
        if k < 2 {
            continue;
        }
        let pair = format!("mesh-pair{opts}");
        if let (Some(l), Some(p)) = (lat(r, s, len), lat(r, &pair, len)) {
            out.push((
                s.clone(),
                (l.latency.p50_us - p.latency.p50_us) / f64::from(k - 1),
            ));
        }
    }
    out
}

fn lost_label(lost: u64) -> String {
    if lost > 0 {
        format!(", lost {lost}")
    } else {
        String::new()
    }
}

/// The whole summary as Markdown tables.
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)] // a rate as f64 for display
pub fn summary(r: &Results) -> String {
    let mut out = String::new();
    let mesh = primary_mesh(r).unwrap_or("mesh-pair");
    // A run of gRPC only has it as its primary mesh: one column, not two.
    let grpc = grpc_mesh(r).filter(|g| *g != mesh);
    let _ = writeln!(
        out,
        "{} — {} × {} ({}), load at start {}\n",
        r.date, r.machine.nproc, r.machine.cpu_model, r.machine.kernel, r.machine.loadavg_at_start
    );
    let _ = writeln!(
        out,
        "Throughput at saturation, msgs/s (MB/s); lost = sent − received. \
         peer = the better of nats and zenoh\n"
    );
    let mut head = String::from("| payload |");
    let mut rule = String::from("|---|");
    for s in &r.config.systems {
        let _ = write!(head, " {s} |");
        rule.push_str("---|");
    }
    let grpc_col = grpc.map_or(String::new(), |g| format!(" {g}/peer |"));
    let _ = writeln!(out, "{head} {mesh}/peer |{grpc_col} {mesh}/tcp |");
    let _ = writeln!(
        out,
        "{rule}---|{}---|",
        if grpc.is_some() { "---|" } else { "" }
    );
    for &len in &r.config.payloads {
        let mut row = format!("| {} |", size_label(len));
        for s in &r.config.systems {
            match tput(r, s, len) {
                Some(t) => {
                    let _ = write!(
                        row,
                        " {} ({:.0}{}) |",
                        si(t.msgs_per_s),
                        t.mb_per_s,
                        lost_label(t.lost)
                    );
                }
                None => row.push_str(" - |"),
            }
        }
        let peer = best_peer_tput(r, len).map(|p| p.1);
        let m = tput(r, mesh, len).map(|t| t.msgs_per_s);
        let _ = write!(row, " {} |", ratio(m, peer));
        if let Some(g) = grpc {
            let _ = write!(
                row,
                " {} |",
                ratio(tput(r, g, len).map(|t| t.msgs_per_s), peer)
            );
        }
        let _ = writeln!(
            row,
            " {} |",
            ratio(m, tput(r, "tcp", len).map(|t| t.msgs_per_s))
        );
        out.push_str(&row);
    }
    let _ = writeln!(
        out,
        "\nLatency at a fixed rate, µs: p50 / p99 / p99.9 / max\n"
    );
    let _ = writeln!(out, "{head} {mesh}/peer p50, p99 |");
    let _ = writeln!(out, "{rule}---|");
    for &len in &r.config.payloads {
        let rate = r
            .latency
            .iter()
            .find(|l| l.payload_len == len)
            .map_or(0, |l| l.rate_per_s);
        let mut row = format!("| {} @ {}/s |", size_label(len), si(rate as f64));
        for s in &r.config.systems {
            match lat(r, s, len) {
                Some(l) => {
                    let x = &l.latency;
                    let _ = write!(
                        row,
                        " {:.0} / {:.0} / {:.0} / {:.0}{} |",
                        x.p50_us,
                        x.p99_us,
                        x.p999_us,
                        x.max_us,
                        lost_label(l.lost)
                    );
                }
                None => row.push_str(" - |"),
            }
        }
        let m = lat(r, mesh, len);
        let peer_p50 = PEERS
            .iter()
            .filter_map(|p| lat(r, p, len).map(|l| l.latency.p50_us))
            .min_by(f64::total_cmp);
        let _ = writeln!(
            row,
            " {}, {} |",
            ratio(m.map(|l| l.latency.p50_us), peer_p50),
            ratio(
                m.map(|l| l.latency.p99_us),
                best_peer_p99(r, len).map(|p| p.1)
            )
        );
        out.push_str(&row);
    }
    let hops: Vec<(usize, Vec<(String, f64)>)> = r
        .config
        .payloads
        .iter()
        .map(|&len| (len, per_hop_p50(r, len)))
        .filter(|(_, h)| !h.is_empty())
        .collect();
    if !hops.is_empty() {
        let _ = writeln!(
            out,
            "\nEach hop past the first adds at p50 (line − pair) / (hops − 1), µs\n"
        );
        for (len, h) in &hops {
            let list: Vec<String> = h.iter().map(|(s, us)| format!("{s} {us:.0}")).collect();
            let _ = writeln!(out, "- {}: {}", size_label(*len), list.join(", "));
        }
    }
    let mut lost = String::new();
    for s in &r.config.systems {
        let n: u64 = r
            .throughput
            .iter()
            .filter(|t| &t.system == s)
            .map(|t| t.lost)
            .chain(r.latency.iter().filter(|l| &l.system == s).map(|l| l.lost))
            .sum();
        let _ = write!(lost, "{}{s} {n}", if lost.is_empty() { "" } else { ", " });
    }
    let _ = writeln!(out, "\nMessages lost, all runs: {lost}");
    let _ = writeln!(out, "\n{}", targets(r, mesh, grpc));
    if r.mesh_lost > 0 {
        let _ = writeln!(
            out,
            "\nWARNING: mesh lost {} messages in this run (a clean run loses none)",
            r.mesh_lost
        );
    }
    out
}

/// The targets on this machine, each with what this run measured: `met`, `missed`
/// or `not measured`.
fn targets(r: &Results, mesh: &str, grpc: Option<&str>) -> String {
    let mut out = String::from("Targets:\n");
    // In a run of gRPC only, the native client's targets were not measured (mesh-pair has no
    // results then).
    let (mesh, grpc) = if mesh.contains("grpc") {
        ("mesh-pair", grpc.or(Some(mesh)))
    } else {
        (mesh, grpc)
    };
    let mut line = |what: &str, got: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| {
        let verdict = match got {
            Some(v) if ok(v) => format!("{v:.2}{unit}, met"),
            Some(v) => format!("{v:.2}{unit}, missed"),
            None => "not measured".to_owned(),
        };
        let _ = writeln!(out, "- {what}: {verdict}");
    };
    let peer = best_peer_tput(r, 256).map(|p| p.1);
    let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    line(
        &format!("{mesh} 256 B throughput / best peer >= 1.5"),
        ratio_of(tput(r, mesh, 256).map(|t| t.msgs_per_s), peer),
        "x",
        &|v| v >= 1.5,
    );
    if let Some(g) = grpc {
        line(
            &format!("{g} 256 B throughput / best peer >= 1.0"),
            ratio_of(tput(r, g, 256).map(|t| t.msgs_per_s), peer),
            "x",
            &|v| v >= 1.0,
        );
    }
    line(
        &format!("{mesh} 256 B p99 / best peer's p99 <= 0.5"),
        ratio_of(
            lat(r, mesh, 256).map(|l| l.latency.p99_us),
            best_peer_p99(r, 256).map(|p| p.1),
        ),
        "x",
        &|v| v <= 0.5,
    );
    line(
        &format!("{mesh} 64 KiB MB/s / tcp >= 0.6"),
        ratio_of(
            tput(r, mesh, 64 << 10).map(|t| t.mb_per_s),
            tput(r, "tcp", 64 << 10).map(|t| t.mb_per_s),
        ),
        "x",
        &|v| v >= 0.6,
    );
    let hop = per_hop_p50(r, 256)
        .into_iter()
        .find(|(s, _)| {
            s.strip_prefix("mesh-line")
                .is_some_and(|k| k.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|h| h.1);
    line(
        "each extra hop at p50, 256 B, < 25 µs",
        hop,
        " µs",
        &|v| v < 25.0,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(65_536), "64 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1000), "1000 B");
    }

    fn lat_at(system: &str, len: usize, p50: f64, p99: f64) -> LatencyResult {
        let mut l = sample().latency[0].clone();
        l.system = system.into();
        l.payload_len = len;
        l.lost = 0;
        l.latency.p50_us = p50;
        l.latency.p99_us = p99;
        l
    }

    #[test]
    fn per_hop_cost_compares_a_line_with_the_pair_of_the_same_options() {
        let mut r = sample();
        r.config.systems = ["mesh-pair", "mesh-line3", "mesh-line3+tls", "mesh-line1"]
            .map(String::from)
            .to_vec();
        r.latency = vec![
            lat_at("mesh-pair", 256, 100.0, 300.0),
            lat_at("mesh-line3", 256, 140.0, 500.0),
            lat_at("mesh-line3+tls", 256, 190.0, 500.0),
            lat_at("mesh-line1", 256, 100.0, 300.0),
        ];
        // mesh-line3+tls has no mesh-pair+tls and a line of one hop has no extra hop.
        assert_eq!(per_hop_p50(&r, 256), vec![("mesh-line3".to_owned(), 20.0)]);
        assert!(per_hop_p50(&r, 64).is_empty());
    }

    #[test]
    fn targets_take_the_better_peer_and_say_met_or_missed() {
        let mut r = sample();
        r.config.systems = ["mesh-pair", "mesh-grpc-pair", "nats", "zenoh", "tcp"]
            .map(String::from)
            .to_vec();
        let at = |system: &str, len: usize, msgs: f64, mb: f64| {
            let mut t = r.throughput[0].clone();
            t.system = system.into();
            t.payload_len = len;
            t.msgs_per_s = msgs;
            t.mb_per_s = mb;
            t
        };
        r.throughput = vec![
            at("mesh-pair", 256, 900.0, 0.0),
            at("mesh-grpc-pair", 256, 500.0, 0.0),
            at("nats", 256, 400.0, 0.0),
            at("zenoh", 256, 600.0, 0.0),
            at("mesh-pair", 65_536, 0.0, 700.0),
            at("tcp", 65_536, 0.0, 1000.0),
        ];
        r.latency = vec![
            lat_at("mesh-pair", 256, 50.0, 200.0),
            lat_at("nats", 256, 80.0, 900.0),
            lat_at("zenoh", 256, 60.0, 500.0),
        ];
        let t = targets(&r, "mesh-pair", Some("mesh-grpc-pair"));
        assert!(
            t.contains("256 B throughput / best peer >= 1.5: 1.50x, met"),
            "{t}"
        );
        assert!(
            t.contains("mesh-grpc-pair 256 B throughput / best peer >= 1.0: 0.83x, missed"),
            "{t}"
        );
        assert!(t.contains("p99 <= 0.5: 0.40x, met"), "{t}");
        assert!(t.contains("tcp >= 0.6: 0.70x, met"), "{t}");
        assert!(t.contains("< 25 µs: not measured"), "{t}");
    }

    #[test]
    fn a_run_of_grpc_only_has_one_ratio_column_and_only_the_grpc_target() {
        let mut r = sample();
        r.config.systems = ["mesh-grpc-pair", "nats"].map(String::from).to_vec();
        let mut g = r.throughput[0].clone();
        g.system = "mesh-grpc-pair".into();
        g.payload_len = 256;
        g.msgs_per_s = 300.0;
        let mut n = g.clone();
        n.system = "nats".into();
        n.msgs_per_s = 400.0;
        r.throughput = vec![g, n];
        let s = summary(&r);
        assert_eq!(s.matches("mesh-grpc-pair/peer |").count(), 1, "{s}");
        assert!(
            s.contains("mesh-grpc-pair 256 B throughput / best peer >= 1.0: 0.75x, missed"),
            "{s}"
        );
        assert!(
            s.contains("mesh-pair 256 B throughput / best peer >= 1.5: not measured"),
            "{s}"
        );
    }

    #[test]
    fn summary_has_a_row_per_payload_and_the_ratios() {
        let mut r = sample();
        let mut nats = r.throughput[0].clone();
        nats.system = "nats".into();
        nats.msgs_per_s = 4000.0;
        r.throughput.push(nats);
        let s = summary(&r);
        assert!(
            s.contains("| 64 B | 2.0k (0) | 4.0k (0) | - | 0.50x | - |"),
            "{s}"
        );
        assert!(s.contains("| 4 KiB |"), "{s}");
        assert!(s.contains("42 / 120 / 900 / 2000, lost 10"), "{s}");
        assert!(!s.contains("WARNING"));
        assert!(
            s.contains("Messages lost, all runs: mesh-pair 0, nats 10, tcp 0"),
            "{s}"
        );
        r.mesh_lost = 3;
        assert!(summary(&r).contains("mesh lost 3"));
    }
}
