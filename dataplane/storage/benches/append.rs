//! Append throughput and append-to-durable latency of the `file` backend, per durability mode
//! and record size, on real files (a tempdir under `$MESH_BENCH_DIR`, default the system
//! temp dir) and a real glommio executor.
//!
//! `cargo bench -p mesh-storage --bench append` (release). Two measurements, because one
//! cannot give both honestly:
//!
//! 1. **Throughput at saturation.** An open-loop producer appends outbound records as fast as
//!    it can, keeping at most `window` (4096) appends not yet durable (the many clients of a
//!    core), for `MESH_BENCH_SECS` (default 1) or until half the log is full, whichever first
//!    (nothing is ever settled: past three quarters of the log the backend would start
//!    relocating). The log is 1 GiB here, 256 MiB in the latency runs: every case zero-fills a
//!    fresh log at open, and on the virtual disk this was written on, gigabytes written ahead
//!    made later fdatasyncs stall for hundreds of ms. Reports appends/s, MB/s of frame payload, syncs, and the
//!    `batch / none` ratio per size. The latency it sees is mostly queueing behind its own
//!    window (window / throughput, Little's law), so it is printed only as a reference.
//! 2. **Latency at a stated rate.** The producer appends on a schedule of
//!    `MESH_BENCH_RATE` appends/s (default 20,000), in the small bursts a timer tick allows,
//!    and sleeps in between; it wakes as soon as the durable watermark moves. Reports p50 /
//!    p99 / p99.9 / max of the time from an append returning to the moment its durability was
//!    observed, and the rate achieved. A sweep over rates (batch, 256 B) shows where the sync
//!    stops keeping up.
//!
//! The latency runs go first: they write little, and the saturation runs after them write
//! gigabytes, which on a virtual disk can stall later fdatasyncs for hundreds of ms (an
//! independent process saw the same stalls at the same moments).
//!
//! Every row also shows the group-commit `fdatasync`s: how many, and p50 / p99 / max of their
//! duration as the driver saw it ([`FileStorage::sync_latency`]), so that a latency tail can be
//! told apart: a device tail shows there too, a pipeline stall does not.
//!
//! Results go to `$MESH_BENCH_OUT` (default `target/bench-append` of the workspace):
//! `append.json` and `append.svg` (latency against rate; hand-written SVG, no plotting
//! dependency). The figures in `benches/results/` were written with
//! `MESH_BENCH_OUT=dataplane/storage/benches/results`.
//! `MESH_BENCH_QUICK=1` runs each case for a quarter of the time and skips the sweep;
//! `MESH_BENCH_CASE=batch:256:100000` runs one case (`mode:bytes:rate`, rate 0 = saturate).
//! Each case opens a fresh log (zero-filled at open, outside the timed part).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_storage::{
    DurabilityMode, FileConfig, FileStorage, MsgKey, Storage, SyncHistogram, Ticket,
};

/// Segment files of a saturation run's log: 32 of 32 MiB.
const SATURATION_LOG: (usize, usize) = (32, 32 << 20);
/// Segment files of a latency run's log: 16 of 16 MiB.
const RATE_LOG: (usize, usize) = (16, 16 << 20);
/// Appends not yet durable that the saturation producer allows.
const WINDOW: usize = 4096;
/// Record sizes measured.
const SIZES: [usize; 2] = [256, 4096];
/// Modes measured, in table order.
const MODES: [DurabilityMode; 3] = [
    DurabilityMode::None,
    DurabilityMode::Batch,
    DurabilityMode::Always,
];
/// Rates of the latency sweep (batch, 256 B), appends/s.
const SWEEP_RATES: [u64; 6] = [5_000, 20_000, 50_000, 100_000, 200_000, 400_000];

#[derive(Debug, Clone, Copy)]
enum Load {
    /// As fast as possible, at most `window` appends not yet durable.
    Saturate { window: usize },
    /// On a schedule of `per_second` appends.
    Rate { per_second: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Case {
    mode: DurabilityMode,
    record_len: usize,
    load: Load,
    run_for: Duration,
}

#[derive(Debug, Default)]
struct Outcome {
    appends: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    syncs: SyncHistogram,
}

struct Summary {
    case: Case,
    appends_per_s: f64,
    mb_per_s: f64,
    syncs: u64,
    sync_p50_us: u64,
    sync_p99_us: u64,
    sync_max_us: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Appends not yet durable, oldest first, and the latencies of those seen durable.
struct InFlight {
    queue: VecDeque<(Ticket, Instant)>,
    latencies_us: Vec<u64>,
}

impl InFlight {
    /// Records every append at or below the durable watermark as durable now.
    fn observe(&mut self, storage: &FileStorage) {
        let durable = storage.durable();
        let now = Instant::now();
        while let Some(&(ticket, at)) = self.queue.front() {
            if ticket > durable {
                break;
            }
            self.latencies_us.push(micros(now - at));
            self.queue.pop_front();
        }
    }
}

/// Appends one outbound record; `None` when the log refused it for good (full).
async fn append_one(storage: &FileStorage, frame: &[u8]) -> Option<(Ticket, Instant)> {
    loop {
        let msg_id = match storage.allocate_msg_id() {
            Ok(id) => id,
            Err(error) if error.is_busy() => {
                storage.wait_progress().await.expect("progress");
                continue;
            }
            Err(error) => panic!("{error}"),
        };
        let key = MsgKey {
            src_node: 1,
            msg_id,
        };
        let at = Instant::now();
        return match storage.append_outbound(key, frame) {
            Ok(ticket) => Some((ticket, at)),
            Err(error) if error.is_busy() => None,
            Err(error) => panic!("{error}"),
        };
    }
}

async fn run_case(case: Case, dir: PathBuf) -> Outcome {
    let (segments, segment_len) = match case.load {
        Load::Saturate { .. } => SATURATION_LOG,
        Load::Rate { .. } => RATE_LOG,
    };
    let mut config = FileConfig::new(dir, 0)
        .with_segment_len(segment_len)
        .with_segments(segments)
        .with_mode(case.mode);
    config.wal.segments.entries_max = 1 << 22;
    let storage = FileStorage::open(config).await.expect("open");
    let frame = vec![0x5A_u8; case.record_len];
    // Half the log, in appends (a record is a little more than its frame).
    let appends_max = (segments * segment_len / 2 / case.record_len) as u64;
    let mut in_flight = InFlight {
        queue: VecDeque::with_capacity(WINDOW),
        latencies_us: Vec::with_capacity(1 << 20),
    };
    let started = Instant::now();
    let mut appends = 0_u64;
    match case.load {
        Load::Saturate { window } => {
            while started.elapsed() < case.run_for && appends < appends_max {
                let Some(appended) = append_one(&storage, &frame).await else {
                    break;
                };
                in_flight.queue.push_back(appended);
                appends += 1;
                in_flight.observe(&storage);
                if in_flight.queue.len() >= window {
                    let (oldest, _) = in_flight.queue[0];
                    storage.wait_durable(oldest).await.expect("durable");
                    in_flight.observe(&storage);
                } else if appends.is_multiple_of(64) {
                    // Let the driver task run between bursts, as an engine core would.
                    futures_lite::future::yield_now().await;
                }
            }
        }
        Load::Rate { per_second } => {
            let interval_ns = 1_000_000_000 / per_second.max(1);
            let due =
                |index: u64| started + Duration::from_nanos(index.saturating_mul(interval_ns));
            'run: while started.elapsed() < case.run_for && appends < appends_max {
                // Everything scheduled up to now, in one burst.
                while due(appends) <= Instant::now() {
                    let Some(appended) = append_one(&storage, &frame).await else {
                        break 'run;
                    };
                    in_flight.queue.push_back(appended);
                    appends += 1;
                    in_flight.observe(&storage);
                }
                // Sleep until the next append is due, or until the oldest becomes durable.
                let sleep =
                    glommio::timer::sleep(due(appends).saturating_duration_since(Instant::now()));
                match in_flight.queue.front() {
                    Some(&(oldest, _)) => {
                        futures_lite::future::or(
                            async {
                                storage.wait_durable(oldest).await.expect("durable");
                            },
                            sleep,
                        )
                        .await;
                    }
                    None => sleep.await,
                }
                in_flight.observe(&storage);
            }
        }
    }
    while let Some(&(ticket, _)) = in_flight.queue.back() {
        storage.wait_durable(ticket).await.expect("durable");
        in_flight.observe(&storage);
    }
    let elapsed = started.elapsed();
    let syncs = storage.sync_latency();
    storage.close().await.expect("close");
    Outcome {
        appends,
        elapsed,
        latencies_us: in_flight.latencies_us,
        syncs,
    }
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn measure(case: Case, base: &Path) -> Summary {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let path = dir.path().join("wal");
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || async move { run_case(case, path).await })
        .expect("executor")
        .join()
        .expect("bench thread");
    let mut latencies = outcome.latencies_us;
    latencies.sort_unstable();
    let seconds = outcome.elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let (appends_per_s, mb_per_s) = (
        outcome.appends as f64 / seconds,
        (outcome.appends as f64 * case.record_len as f64) / seconds / 1e6,
    );
    Summary {
        case,
        appends_per_s,
        mb_per_s,
        syncs: outcome.syncs.count(),
        sync_p50_us: outcome.syncs.percentile_us(0.50),
        sync_p99_us: outcome.syncs.percentile_us(0.99),
        sync_max_us: outcome.syncs.max_us(),
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(error) => panic!("{name}={value}: {error}"),
    }
}

fn header() {
    println!(
        "{:<7} {:>6} {:>10} {:>11} {:>7} {:>6} {:>8} {:>8} {:>8} | {:>7} {:>7} {:>8} {:>7}",
        "mode",
        "bytes",
        "load",
        "appends/s",
        "MB/s",
        "syncs",
        "sync p50",
        "sync p99",
        "sync max",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us"
    );
}

fn load_label(load: Load) -> String {
    match load {
        Load::Saturate { window } => format!("win {window}"),
        Load::Rate { per_second } => format!("{per_second}/s"),
    }
}

fn row(summary: &Summary) {
    println!(
        "{:<7} {:>6} {:>10} {:>11.0} {:>7.1} {:>6} {:>8} {:>8} {:>8} | {:>7} {:>7} {:>8} {:>7}",
        summary.case.mode.as_str(),
        summary.case.record_len,
        load_label(summary.case.load),
        summary.appends_per_s,
        summary.mb_per_s,
        summary.syncs,
        summary.sync_p50_us,
        summary.sync_p99_us,
        summary.sync_max_us,
        summary.p50_us,
        summary.p99_us,
        summary.p999_us,
        summary.max_us,
    );
}

fn find(summaries: &[Summary], mode: DurabilityMode, record_len: usize) -> Option<&Summary> {
    summaries
        .iter()
        .find(|summary| summary.case.mode == mode && summary.case.record_len == record_len)
}

fn json_list(summaries: &[Summary]) -> String {
    let mut out = String::from("[");
    for (index, summary) in summaries.iter().enumerate() {
        let (load, value) = match summary.case.load {
            Load::Saturate { window } => ("window", window as u64),
            Load::Rate { per_second } => ("rate_per_s", per_second),
        };
        let _ = write!(
            out,
            "{}\n    {{\"mode\": \"{}\", \"record_bytes\": {}, \"{load}\": {value}, \
             \"appends_per_s\": {:.0}, \"mb_per_s\": {:.2}, \"syncs\": {}, \"sync_p50_us\": {}, \
             \"sync_p99_us\": {}, \"sync_max_us\": {}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}}}",
            if index == 0 { "" } else { "," },
            summary.case.mode.as_str(),
            summary.case.record_len,
            summary.appends_per_s,
            summary.mb_per_s,
            summary.syncs,
            summary.sync_p50_us,
            summary.sync_p99_us,
            summary.sync_max_us,
            summary.p50_us,
            summary.p99_us,
            summary.p999_us,
            summary.max_us,
        );
    }
    out.push_str("\n  ]");
    out
}

/// One line of the plot: its name, colour and the value it shows.
type Series = (&'static str, &'static str, fn(&Summary) -> u64);

/// `append.svg`: p50 / p99 / p99.9 append-to-durable (log µs) against the offered rate (log),
/// batch mode, 256 B records.
#[allow(clippy::cast_precision_loss)] // rates and microseconds as plot coordinates
fn svg(sweep: &[Summary], target_us: u64) -> String {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 400.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 150.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let rate = |summary: &Summary| match summary.case.load {
        Load::Rate { per_second } => per_second,
        Load::Saturate { .. } => 0,
    };
    let (rate_lo, rate_hi) = sweep
        .iter()
        .map(rate)
        .fold((u64::MAX, 1), |(lo, hi), r| (lo.min(r.max(1)), hi.max(r)));
    let (x_lo, x_hi) = ((rate_lo as f64).log10(), (rate_hi as f64).log10().max(1.0));
    let (y_lo, y_hi) = (1.0_f64, 6.0_f64); // 10 µs .. 1 s
    let x = |value: u64| {
        LEFT + ((value.max(1) as f64).log10() - x_lo) / (x_hi - x_lo).max(1e-9)
            * (WIDTH - LEFT - RIGHT)
    };
    let y = |micros: u64| {
        let log = (micros.max(10) as f64).log10().clamp(y_lo, y_hi);
        HEIGHT - BOTTOM - (log - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM)
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">file backend, batch, 256 B: append to durable against rate</text>\n"
    );
    for decade in 1..=6 {
        let micros = 10_u64.pow(decade);
        let label = match decade {
            1..=2 => format!("{micros} µs"),
            3..=5 => format!("{} ms", micros / 1000),
            _ => format!("{} s", micros / 1_000_000),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(micros) + 4.0,
            y = y(micros),
        );
    }
    for summary in sweep {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}k</text>",
            x(rate(summary)),
            HEIGHT - BOTTOM + 18.0,
            rate(summary) / 1000,
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">offered rate, appends/s (log)</text>\n\
         <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{target:.1}\" y2=\"{target:.1}\" stroke=\"#888\" \
         stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\">target p99 {} ms</text>",
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        WIDTH - RIGHT,
        WIDTH - RIGHT + 6.0,
        y(target_us) + 4.0,
        target_us / 1000,
        target = y(target_us),
    );
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |s| s.p50_us),
        ("p99", "#d62728", |s| s.p99_us),
        ("p99.9", "#9467bd", |s| s.p999_us),
    ];
    for (index, (name, colour, value)) in series.iter().enumerate() {
        let points: Vec<String> = sweep
            .iter()
            .map(|summary| format!("{:.1},{:.1}", x(rate(summary)), y(value(summary))))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
            points.join(" "),
            WIDTH - RIGHT + 6.0,
            TOP + 20.0 * index as f64,
        );
        for summary in sweep {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                x(rate(summary)),
                y(value(summary))
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn main() {
    let base = std::env::var_os("MESH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let out_dir: PathBuf = std::env::var_os("MESH_BENCH_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-append"),
        Into::into,
    );
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let run_for = Duration::from_millis(
        env_u64("MESH_BENCH_SECS").map_or(1000, |secs| secs * 1000) / if quick { 4 } else { 1 },
    );
    let rate = env_u64("MESH_BENCH_RATE").unwrap_or(20_000);
    let target_us = 2_000;
    if let Ok(only) = std::env::var("MESH_BENCH_CASE") {
        // `mode:bytes:rate` (rate 0: saturate), one case, printed, nothing written.
        let fields: Vec<&str> = only.split(':').collect();
        let [mode, bytes, per_second] = fields[..] else {
            panic!("MESH_BENCH_CASE={only}: expected mode:bytes:rate");
        };
        let per_second: u64 = per_second.parse().expect("rate");
        let case = Case {
            mode: mode.parse().expect("mode"),
            record_len: bytes.parse().expect("bytes"),
            load: if per_second == 0 {
                Load::Saturate { window: WINDOW }
            } else {
                Load::Rate { per_second }
            },
            run_for,
        };
        header();
        row(&measure(case, &base));
        return;
    }

    println!("# append-to-durable latency at {rate} appends/s (offered, open loop on a schedule)");
    header();
    let mut latency = Vec::new();
    for record_len in SIZES {
        for mode in MODES {
            let summary = measure(
                Case {
                    mode,
                    record_len,
                    load: Load::Rate { per_second: rate },
                    run_for,
                },
                &base,
            );
            row(&summary);
            latency.push(summary);
        }
    }
    for summary in &latency {
        if summary.case.mode != DurabilityMode::None {
            println!(
                "{:<6} {:>4} B at {rate}/s: p99 {} us (target < {target_us} us: {})",
                summary.case.mode.as_str(),
                summary.case.record_len,
                summary.p99_us,
                if summary.p99_us < target_us {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }

    let mut sweep = Vec::new();
    if !quick {
        println!("\n# rate sweep, batch, 256 B");
        header();
        for per_second in SWEEP_RATES {
            let summary = measure(
                Case {
                    mode: DurabilityMode::Batch,
                    record_len: 256,
                    load: Load::Rate { per_second },
                    run_for,
                },
                &base,
            );
            row(&summary);
            sweep.push(summary);
        }
    }

    println!(
        "\n# throughput at saturation ({WINDOW} appends not yet durable, {} ms or {} MiB per case)",
        run_for.as_millis(),
        (SATURATION_LOG.0 * SATURATION_LOG.1 / 2) >> 20
    );
    header();
    let mut saturation = Vec::new();
    for record_len in SIZES {
        for mode in MODES {
            let summary = measure(
                Case {
                    mode,
                    record_len,
                    load: Load::Saturate { window: WINDOW },
                    run_for,
                },
                &base,
            );
            row(&summary);
            saturation.push(summary);
        }
    }
    let mut ratios = Vec::new();
    for record_len in SIZES {
        if let (Some(batch), Some(none)) = (
            find(&saturation, DurabilityMode::Batch, record_len),
            find(&saturation, DurabilityMode::None, record_len),
        ) {
            let ratio = batch.appends_per_s / none.appends_per_s;
            println!(
                "batch / none at {record_len:>4} B: {ratio:.2} (target >= 0.50: {})",
                if ratio >= 0.5 { "met" } else { "NOT met" }
            );
            ratios.push((record_len, ratio));
        }
    }

    let ratios_json: Vec<String> = ratios
        .iter()
        .map(|(record_len, ratio)| format!("\"{record_len}\": {ratio:.3}"))
        .collect();
    let json = format!(
        "{{\n  \"bench\": \"mesh-storage append (file backend)\",\n  \"run_ms\": {},\n  \
         \"window\": {WINDOW},\n  \"latency_rate_per_s\": {rate},\n  \
         \"batch_over_none\": {{{}}},\n  \"saturation\": {},\n  \"latency\": {},\n  \
         \"sweep_batch_256\": {}\n}}\n",
        run_for.as_millis(),
        ratios_json.join(", "),
        json_list(&saturation),
        json_list(&latency),
        json_list(&sweep),
    );
    std::fs::create_dir_all(&out_dir).expect("results directory");
    let json_path = out_dir.join("append.json");
    std::fs::write(&json_path, json).expect("write append.json");
    println!("\nwrote {}", json_path.display());
    if !sweep.is_empty() {
        let svg_path = out_dir.join("append.svg");
        std::fs::write(&svg_path, svg(&sweep, target_us)).expect("write append.svg");
        println!("wrote {}", svg_path.display());
    }
}
