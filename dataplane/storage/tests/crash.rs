//! Crash test with real processes: `wal-crash-writer` appends in `batch` mode and reports each
//! record as it becomes durable; this test SIGKILLs it at seeded random points, restarts it on
//! the same directory, and checks what it recovers against what it reported.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WRITER: &str = env!("CARGO_BIN_EXE_wal-crash-writer");

/// splitmix64: a seeded, reproducible sequence of kill points.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What the writer reported across all its runs.
#[derive(Default)]
struct Model {
    /// Every msg_id ever allocated for an append (all runs): ids must never repeat.
    appended: BTreeSet<u64>,
    /// Reported durable and not (durably) settled: must be recovered.
    durable_unsettled: BTreeSet<u64>,
    /// Settlement appended, durability not reported: may or may not come back.
    settling: BTreeSet<u64>,
    /// Settlement reported durable: must never come back.
    settled: BTreeSet<u64>,
}

struct Run {
    recovered: Vec<(u64, bool)>,
    ready: bool,
    durable_lines: u64,
}

/// Runs the writer once; kills it after `kill_after_durable` D lines (or when `deadline`
/// passes), then reads what it printed before it died.
fn run_writer(dir: &std::path::Path, kill_after_durable: u64, model: &mut Model) -> Run {
    let mut child = Command::new(WRITER)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wal-crash-writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut run = Run {
        recovered: Vec::new(),
        ready: false,
        durable_lines: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("writer output");
        let mut parts = line.split_whitespace();
        let tag = parts.next().unwrap_or("");
        let value = parts.next().unwrap_or("");
        match tag {
            "R" => {
                let ok = parts.next() == Some("ok");
                run.recovered.push((value.parse().expect("msg_id"), ok));
            }
            "READY" => run.ready = true,
            "A" => {}
            "I" => {
                let msg_id: u64 = value.parse().expect("msg_id");
                assert!(
                    model.appended.insert(msg_id),
                    "msg_id {msg_id} handed out twice"
                );
            }
            "D" => {
                let msg_id: u64 = value.parse().expect("msg_id");
                model.durable_unsettled.insert(msg_id);
                run.durable_lines += 1;
            }
            "T" => {
                let msg_id: u64 = value.parse().expect("msg_id");
                model.durable_unsettled.remove(&msg_id);
                model.settling.insert(msg_id);
            }
            "S" => {
                let msg_id: u64 = value.parse().expect("msg_id");
                model.settling.remove(&msg_id);
                model.settled.insert(msg_id);
            }
            other => panic!("unexpected writer output {other:?}: {line}"),
        }
        if !killed
            && run.ready
            && (run.durable_lines >= kill_after_durable || Instant::now() > deadline)
        {
            // SIGKILL: no destructor, no final sync; then keep reading what was printed.
            child.kill().expect("SIGKILL");
            killed = true;
        }
        if tag == "READY" {
            check_recovery(&run.recovered, model);
        }
    }
    let _ = child.wait();
    assert!(killed, "the writer exited on its own");
    run
}

fn check_recovery(recovered: &[(u64, bool)], model: &mut Model) {
    let mut seen = BTreeSet::new();
    for &(msg_id, ok) in recovered {
        assert!(ok, "msg_id {msg_id} recovered with a corrupt frame");
        assert!(seen.insert(msg_id), "msg_id {msg_id} recovered twice");
        assert!(
            model.appended.contains(&msg_id),
            "msg_id {msg_id} recovered but never appended"
        );
        assert!(
            !model.settled.contains(&msg_id),
            "msg_id {msg_id} recovered after its settlement was durable"
        );
    }
    let missing: Vec<u64> = model.durable_unsettled.difference(&seen).copied().collect();
    assert!(missing.is_empty(), "reported durable but lost: {missing:?}");
    // Start-up synced the live files: what was recovered is durable now, and a settlement
    // whose message did not come back is durable too.
    let settling = std::mem::take(&mut model.settling);
    model
        .settled
        .extend(settling.into_iter().filter(|msg_id| !seen.contains(msg_id)));
    model.durable_unsettled.extend(seen);
}

#[test]
fn sigkill_at_random_points_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let mut seeded = Seeded(0x6D65_7368_5741_4C21);
    let mut model = Model::default();
    let mut total_durable = 0;
    for _ in 0..10 {
        let kill_after = seeded.next() % 600;
        let started = Instant::now();
        let run = run_writer(&wal, kill_after, &mut model);
        eprintln!(
            "run: kill after {kill_after} durable, recovered {}, {} durable, {:?}",
            run.recovered.len(),
            run.durable_lines,
            started.elapsed()
        );
        assert!(run.ready, "the writer did not recover");
        total_durable += run.durable_lines;
    }
    // A last start checks the state the tenth kill left.
    let last = run_writer(&wal, 0, &mut model);
    assert!(last.ready);
    assert!(total_durable > 0);
}

#[test]
fn refuses_to_start_without_space() {
    let dir = tempfile::tempdir().unwrap();
    // A file-size limit of 256 KiB makes fallocate of the writer's 1 MiB segments fail, as
    // a full disk would (SIGXFSZ ignored, so the call returns EFBIG).
    let output = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$1\"")
        .arg(WRITER)
        .arg(dir.path().join("wal"))
        .output()
        .expect("run writer under ulimit");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot preallocate"), "{stderr}");
}
