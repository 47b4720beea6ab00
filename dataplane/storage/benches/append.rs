//! Append throughput and append-to-durable latency of the `file` backend, per durability mode
//! and record size, on real files (a tempdir under `$MESH_BENCH_DIR`, default the system
//! temp dir) and a real glommio executor.
//!
//! `cargo bench -p mesh-storage --bench append` (release). Each case appends outbound records
//! for about one second, keeping at most `window` appends not yet durable (the many clients
//! of a core), and reports appends/s, MB/s of frame payload, and p50 / p99 / max of the time
//! from an append to the moment its durability was observed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mesh_storage::{DurabilityMode, FileConfig, FileStorage, MsgKey, Storage, Ticket};

struct Case {
    mode: DurabilityMode,
    record_len: usize,
    window: usize,
}

struct Outcome {
    appends: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    syncs: u64,
}

async fn run_case(case: &Case, dir: std::path::PathBuf) -> Outcome {
    let mut config = FileConfig::new(dir, 0)
        .with_segment_len(32 << 20)
        .with_segments(32)
        .with_mode(case.mode);
    config.wal.segments.entries_max = 1 << 22;
    let storage = FileStorage::open(config).await.expect("open");
    let frame = vec![0x5A_u8; case.record_len];
    let mut in_flight: VecDeque<(Ticket, Instant)> = VecDeque::with_capacity(case.window);
    let mut latencies_us = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let run_for = Duration::from_secs(1);
    let mut appends = 0_u64;
    let observe = |in_flight: &mut VecDeque<(Ticket, Instant)>, latencies: &mut Vec<u64>| {
        let durable = storage.durable();
        let now = Instant::now();
        while let Some(&(ticket, at)) = in_flight.front() {
            if ticket > durable {
                break;
            }
            latencies.push(u64::try_from((now - at).as_micros()).unwrap_or(u64::MAX));
            in_flight.pop_front();
        }
    };
    while started.elapsed() < run_for {
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
        match storage.append_outbound(key, &frame) {
            Ok(ticket) => in_flight.push_back((ticket, at)),
            Err(error) if error.is_busy() => break,
            Err(error) => panic!("{error}"),
        }
        appends += 1;
        observe(&mut in_flight, &mut latencies_us);
        if in_flight.len() >= case.window {
            let (oldest, _) = in_flight[0];
            storage.wait_durable(oldest).await.expect("durable");
            observe(&mut in_flight, &mut latencies_us);
        } else if appends.is_multiple_of(64) {
            // Let the driver task run between bursts, as an engine core would.
            futures_lite::future::yield_now().await;
        }
    }
    while let Some(&(ticket, _)) = in_flight.back() {
        storage.wait_durable(ticket).await.expect("durable");
        observe(&mut in_flight, &mut latencies_us);
    }
    let elapsed = started.elapsed();
    let syncs = storage.syncs_completed();
    storage.close().await.expect("close");
    Outcome {
        appends,
        elapsed,
        latencies_us,
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

fn main() {
    let base = std::env::var_os("MESH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let mut cases = Vec::new();
    for record_len in [256, 4096] {
        for mode in [
            DurabilityMode::None,
            DurabilityMode::Batch,
            DurabilityMode::Always,
        ] {
            cases.push(Case {
                mode,
                record_len,
                window: 4096,
            });
        }
    }
    for record_len in [256, 4096] {
        cases.push(Case {
            mode: DurabilityMode::Batch,
            record_len,
            window: 64,
        });
    }
    println!(
        "{:<7} {:>6} {:>7} {:>12} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "mode", "bytes", "window", "appends/s", "MB/s", "syncs", "p50 us", "p99 us", "max us"
    );
    for case in cases {
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let path = dir.path().join("wal");
        let case_for_executor = Case { ..case };
        let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move { run_case(&case_for_executor, path).await })
            .expect("executor")
            .join()
            .expect("bench thread");
        let mut latencies = outcome.latencies_us;
        latencies.sort_unstable();
        let seconds = outcome.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let (rate, megabytes) = (
            outcome.appends as f64 / seconds,
            (outcome.appends as f64 * case.record_len as f64) / seconds / 1e6,
        );
        println!(
            "{:<7} {:>6} {:>7} {:>12.0} {:>9.1} {:>8} {:>9} {:>9} {:>9}",
            case.mode.as_str(),
            case.record_len,
            case.window,
            rate,
            megabytes,
            outcome.syncs,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
        );
    }
}
