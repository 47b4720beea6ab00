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

/// The mesh system the ratios are about (the pair when it ran).
fn primary_mesh(r: &Results) -> Option<&str> {
    r.config
        .systems
        .iter()
        .find(|s| s.as_str() == "mesh-pair")
        .or_else(|| r.config.systems.iter().find(|s| s.starts_with("mesh")))
        .map(String::as_str)
}

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

/// The whole summary as Markdown tables.
#[allow(clippy::cast_precision_loss)] // a rate as f64 for display
pub fn summary(r: &Results) -> String {
    let mut out = String::new();
    let mesh = primary_mesh(r).unwrap_or("mesh-pair");
    let _ = writeln!(
        out,
        "{} — {} × {} ({}), load at start {}\n",
        r.date, r.machine.nproc, r.machine.cpu_model, r.machine.kernel, r.machine.loadavg_at_start
    );
    let _ = writeln!(
        out,
        "Throughput at saturation, msgs/s (MB/s); lost = sent − received\n"
    );
    let mut head = String::from("| payload |");
    let mut rule = String::from("|---|");
    for s in &r.config.systems {
        let _ = write!(head, " {s} |");
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{head} {mesh}/nats | {mesh}/tcp |");
    let _ = writeln!(out, "{rule}---|---|");
    for &len in &r.config.payloads {
        let mut row = format!("| {} |", size_label(len));
        for s in &r.config.systems {
            match tput(r, s, len) {
                Some(t) => {
                    let lost = if t.lost > 0 {
                        format!(", lost {}", t.lost)
                    } else {
                        String::new()
                    };
                    let _ = write!(row, " {} ({:.0}{lost}) |", si(t.msgs_per_s), t.mb_per_s);
                }
                None => row.push_str(" - |"),
            }
        }
        let m = tput(r, mesh, len).map(|t| t.msgs_per_s);
        let _ = writeln!(
            row,
            " {} | {} |",
            ratio(m, tput(r, "nats", len).map(|t| t.msgs_per_s)),
            ratio(m, tput(r, "tcp", len).map(|t| t.msgs_per_s))
        );
        out.push_str(&row);
    }
    let _ = writeln!(
        out,
        "\nLatency at a fixed rate, µs: p50 / p99 / p99.9 / max\n"
    );
    let _ = writeln!(out, "{head} {mesh}/nats p50, p99 |");
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
                    let lost = if l.lost > 0 {
                        format!(", lost {}", l.lost)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        row,
                        " {:.0} / {:.0} / {:.0} / {:.0}{lost} |",
                        x.p50_us, x.p99_us, x.p999_us, x.max_us
                    );
                }
                None => row.push_str(" - |"),
            }
        }
        let m = lat(r, mesh, len);
        let n = lat(r, "nats", len);
        let _ = writeln!(
            row,
            " {}, {} |",
            ratio(m.map(|l| l.latency.p50_us), n.map(|l| l.latency.p50_us)),
            ratio(m.map(|l| l.latency.p99_us), n.map(|l| l.latency.p99_us))
        );
        out.push_str(&row);
    }
    if r.mesh_lost > 0 {
        let _ = writeln!(
            out,
            "\nWARNING: mesh lost {} messages in this run (a clean run loses none)",
            r.mesh_lost
        );
    }
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
        r.mesh_lost = 3;
        assert!(summary(&r).contains("mesh lost 3"));
    }
}
