//! The two measurements, the same for every [`System`]: throughput at saturation and latency
//! at a fixed rate. Producer on its own thread, consumer on the calling thread, one [`Clock`].
//!
//! Before each run the producer sends probes until the consumer sees one, so a run starts on a
//! path that is up (routes converged, NATS interest propagated across the route). Messages are
//! stamped with the run id, so stragglers of an earlier run never count.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::hist::{LatencyHist, LatencySummary};
use crate::payload::{Clock, PROBE_SEQ, STAMP_LEN, Stamp};
use crate::rate::Pacer;
use crate::systems::{Consumer, Producer, System};

/// Messages per `send_batch` call at saturation (one time check per batch).
const SATURATION_BATCH: u64 = 64;
/// How long the consumer waits per `recv_batch` call.
const RECV_WAIT: Duration = Duration::from_millis(50);
/// Give up on a run this long after its planned end.
const RUN_GRACE: Duration = Duration::from_secs(30);
/// Producer sends "not yet finished" as this.
const NOT_DONE: u64 = u64::MAX;

/// A throughput run.
#[derive(Debug, Clone)]
pub struct ThroughputSpec {
    /// Bytes per message.
    pub payload_len: usize,
    /// Send for this long…
    pub duration: Duration,
    /// …or until this many messages went out.
    pub max_msgs: Option<u64>,
    /// After the producer finished, stop waiting once nothing arrived for this long.
    pub idle_timeout: Duration,
}

/// What a throughput run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputResult {
    /// System name.
    pub system: String,
    /// Bytes per message.
    pub payload_len: usize,
    /// Messages the producer handed to the system.
    pub sent: u64,
    /// Messages the consumer got.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Messages that arrived with a lower sequence number than one before them.
    pub reordered: u64,
    /// From the first send to the last receive.
    pub secs: f64,
    /// Messages received per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6) received per second.
    pub mb_per_s: f64,
}

/// A latency run.
#[derive(Debug, Clone)]
pub struct LatencySpec {
    /// Bytes per message.
    pub payload_len: usize,
    /// Messages per second, paced.
    pub rate_per_s: u64,
    /// Sent but not recorded, first.
    pub warmup: Duration,
    /// Recorded.
    pub duration: Duration,
    /// After the producer finished, stop waiting once nothing arrived for this long.
    pub idle_timeout: Duration,
}

/// What a latency run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyResult {
    /// System name.
    pub system: String,
    /// Bytes per message.
    pub payload_len: usize,
    /// Rate asked for.
    pub rate_per_s: u64,
    /// Messages sent after the warm-up.
    pub sent: u64,
    /// Of those, received.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Messages that arrived with a lower sequence number than one before them.
    pub reordered: u64,
    /// Most messages the producer was ever behind its schedule (0: it kept the rate).
    pub producer_behind_max: u64,
    /// Send-to-receive latency over the recorded part.
    pub latency: LatencySummary,
    /// p99 (µs) of each recorded second, to show whether the tail was steady.
    pub p99_us_per_second: Vec<f64>,
}

/// Counts what the consumer sees of one run.
struct Tally {
    run: u32,
    received: u64,
    reordered: u64,
    last_seq: Option<u64>,
}

impl Tally {
    fn new(run: u32) -> Tally {
        Tally {
            run,
            received: 0,
            reordered: 0,
            last_seq: None,
        }
    }

    /// The stamp of `msg` if it is a message of this run (not a probe, not a straggler).
    fn take(&mut self, msg: &[u8]) -> Option<Stamp> {
        let s = Stamp::read(msg)?;
        if s.run != self.run || s.seq == PROBE_SEQ {
            return None;
        }
        if self.last_seq.is_some_and(|l| s.seq < l) {
            self.reordered += 1;
        }
        self.last_seq = Some(self.last_seq.map_or(s.seq, |l| l.max(s.seq)));
        self.received += 1;
        Some(s)
    }
}

fn check_len(len: usize) -> Result<()> {
    if len < STAMP_LEN {
        bail!("payloads must be at least {STAMP_LEN} bytes (the stamp), not {len}");
    }
    Ok(())
}

/// Producer's view of the start: wait for the consumer's word.
const WAIT: u8 = 0;
/// Probes got through: run.
const GO: u8 = 1;
/// The consumer gave up: stop.
const ABORT: u8 = 2;

/// Sends probes (every 10 ms) until the consumer says go (or gives up).
fn probe_until_go(
    p: &mut dyn Producer,
    run: u32,
    len: usize,
    clock: Clock,
    go: &AtomicU8,
) -> Result<()> {
    loop {
        match go.load(Ordering::Acquire) {
            GO => return Ok(()),
            ABORT => bail!("the consumer gave up waiting for probes"),
            _ => {}
        }
        p.send_batch(1, len, &mut |b| {
            Stamp {
                run,
                seq: PROBE_SEQ,
                sent_ns: clock.now_ns(),
            }
            .write(b);
        })?;
        p.flush()?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until a probe of run `run` arrives (so the path is up), or 20 s, or the producer ended.
fn wait_probe(c: &mut dyn Consumer, run: u32, producer_finished: &dyn Fn() -> bool) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let mut seen = false;
        c.recv_batch(RECV_WAIT, &mut |m| {
            seen |= Stamp::read(m).is_some_and(|s| s.run == run && s.seq == PROBE_SEQ);
        })?;
        if seen {
            return Ok(());
        }
        if producer_finished() {
            bail!("the producer ended before any probe arrived");
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("no probe arrived within 20 s: the path is not up");
        }
    }
}

/// What [`drive`] needs to know about a run.
#[derive(Debug, Clone, Copy)]
struct RunCtx {
    run: u32,
    len: usize,
    clock: Clock,
    /// How long the producer means to send.
    planned: Duration,
    /// After the producer finished, stop waiting once nothing arrived for this long.
    idle_timeout: Duration,
}

/// One run of either kind: opens the consumer, then the producer on its own thread; probes
/// until the path is up; then `produce` sends (returning its result and how many messages
/// count) while the consumer hands every message to `on_msg` (which says whether it counted)
/// until all counted messages arrived, or nothing came for `idle_timeout` after the producer
/// finished, or `planned` plus a grace period passed.
fn drive<T: Send>(
    sys: &mut dyn System,
    ctx: &RunCtx,
    produce: impl FnOnce(&mut dyn Producer) -> Result<(T, u64)> + Send,
    on_msg: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<T> {
    let RunCtx {
        run,
        len,
        clock,
        planned,
        idle_timeout,
    } = *ctx;
    check_len(len)?;
    let mut c = sys.consumer()?;
    let opener = sys.producer()?;
    let go = AtomicU8::new(WAIT);
    let counted_total = AtomicU64::new(NOT_DONE);
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<T> {
            let mut p = opener()?;
            probe_until_go(p.as_mut(), run, len, clock, &go)?;
            let (out, counted) = produce(p.as_mut())?;
            p.flush()?;
            counted_total.store(counted, Ordering::Release);
            p.close()?;
            Ok(out)
        });
        let consumed = match wait_probe(c.as_mut(), run, &|| h.is_finished()) {
            Ok(()) => {
                go.store(GO, Ordering::Release);
                consume(
                    c.as_mut(),
                    &counted_total,
                    &|| h.is_finished(),
                    idle_timeout,
                    Instant::now() + planned + RUN_GRACE,
                    on_msg,
                )
            }
            Err(e) => {
                go.store(ABORT, Ordering::Release);
                Err(e)
            }
        };
        let produced = h.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
        let out = produced?;
        consumed?;
        Ok::<_, anyhow::Error>(out)
    })?;
    c.close()?;
    Ok(out)
}

/// Consumer loop: receive until the producer is done and everything it counted arrived, or
/// nothing arrived for `idle_timeout`, or the run overran `hard_deadline`.
fn consume(
    c: &mut dyn Consumer,
    counted_total: &AtomicU64,
    producer_finished: &dyn Fn() -> bool,
    idle_timeout: Duration,
    hard_deadline: Instant,
    on_msg: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<()> {
    let mut idle_since = Instant::now();
    let mut counted = 0u64;
    loop {
        let n = c.recv_batch(RECV_WAIT, &mut |m| counted += u64::from(on_msg(m)))?;
        let now = Instant::now();
        if n > 0 {
            idle_since = now;
        }
        let total = counted_total.load(Ordering::Acquire);
        if total != NOT_DONE {
            if counted >= total || now.duration_since(idle_since) > idle_timeout {
                return Ok(());
            }
        } else if producer_finished() {
            // It failed before saying how much it sent; `drive` reports its error.
            return Ok(());
        }
        if now > hard_deadline {
            return Ok(());
        }
    }
}

#[allow(clippy::cast_precision_loss)] // counts and nanoseconds to f64 rates
fn rates(received: u64, len: usize, ns: u64) -> (f64, f64, f64) {
    let secs = (ns as f64 / 1e9).max(1e-9);
    let msgs = received as f64 / secs;
    (secs, msgs, msgs * len as f64 / 1e6)
}

/// Sends as fast as the system takes messages for `spec.duration` (or `max_msgs`), counts
/// what arrives.
pub fn throughput(
    sys: &mut dyn System,
    spec: &ThroughputSpec,
    run: u32,
    clock: Clock,
) -> Result<ThroughputResult> {
    let len = spec.payload_len;
    let mut tally = Tally::new(run);
    let mut last_ns = 0;
    let start_ns = AtomicU64::new(0);
    let ctx = RunCtx {
        run,
        len,
        clock,
        planned: spec.duration,
        idle_timeout: spec.idle_timeout,
    };
    let sent = drive(
        sys,
        &ctx,
        |p| {
            start_ns.store(clock.now_ns(), Ordering::Release);
            let t0 = Instant::now();
            let mut seq = 0u64;
            while t0.elapsed() < spec.duration {
                let n = spec
                    .max_msgs
                    .map_or(SATURATION_BATCH, |m| SATURATION_BATCH.min(m - seq));
                if n == 0 {
                    break;
                }
                p.send_batch(n, len, &mut |b| {
                    Stamp {
                        run,
                        seq,
                        sent_ns: clock.now_ns(),
                    }
                    .write(b);
                    seq += 1;
                })?;
            }
            Ok((seq, seq))
        },
        &mut |m| {
            if tally.take(m).is_some() {
                last_ns = clock.now_ns();
                true
            } else {
                false
            }
        },
    )?;
    let start_ns = start_ns.load(Ordering::Acquire);
    let (secs, msgs_per_s, mb_per_s) = rates(tally.received, len, last_ns.saturating_sub(start_ns));
    Ok(ThroughputResult {
        system: sys.name(),
        payload_len: len,
        sent,
        received: tally.received,
        lost: sent.saturating_sub(tally.received),
        reordered: tally.reordered,
        secs,
        msgs_per_s,
        mb_per_s,
    })
}

/// Sends at `spec.rate_per_s` (paced, open loop), records send-to-receive latency of every
/// message sent after the warm-up.
pub fn latency(
    sys: &mut dyn System,
    spec: &LatencySpec,
    run: u32,
    clock: Clock,
) -> Result<LatencyResult> {
    let len = spec.payload_len;
    let windows_len = usize::try_from(spec.duration.as_secs()).unwrap_or(0) + 1;
    let mut windows = vec![LatencyHist::new(); windows_len];
    let mut tally = Tally::new(run);
    let warmup_ns = u64::try_from(spec.warmup.as_nanos()).unwrap_or(u64::MAX);
    // Set by the producer when it starts: messages stamped from then on are recorded.
    let measure_from_ns = AtomicU64::new(u64::MAX);
    let ctx = RunCtx {
        run,
        len,
        clock,
        planned: spec.warmup + spec.duration,
        idle_timeout: spec.idle_timeout,
    };
    let (behind_max, measured) = drive(
        sys,
        &ctx,
        |p| {
            let t0 = Instant::now();
            let from = clock.now_ns() + warmup_ns;
            measure_from_ns.store(from, Ordering::Release);
            let end = spec.warmup + spec.duration;
            // At most 10 ms worth per burst when catching up.
            let mut pacer = Pacer::new(spec.rate_per_s, (spec.rate_per_s / 100).max(1));
            let (mut seq, mut measured, mut behind_max) = (0u64, 0u64, 0u64);
            loop {
                let elapsed = t0.elapsed();
                if elapsed >= end {
                    break;
                }
                let n = pacer.due(elapsed);
                if n == 0 {
                    std::thread::sleep(pacer.next_due().saturating_sub(elapsed));
                    continue;
                }
                p.send_batch(n, len, &mut |b| {
                    let sent_ns = clock.now_ns();
                    Stamp { run, seq, sent_ns }.write(b);
                    seq += 1;
                    measured += u64::from(sent_ns >= from);
                })?;
                p.flush()?;
                behind_max = behind_max.max(pacer.behind(t0.elapsed()));
            }
            Ok(((behind_max, measured), measured))
        },
        &mut |m| {
            let Some(s) = tally.take(m) else {
                return false;
            };
            let from = measure_from_ns.load(Ordering::Acquire);
            if s.sent_ns < from {
                return false;
            }
            let now = clock.now_ns();
            let w = usize::try_from((s.sent_ns - from) / 1_000_000_000)
                .unwrap_or(usize::MAX)
                .min(windows_len - 1);
            windows[w].record(now.saturating_sub(s.sent_ns));
            true
        },
    )?;
    let mut all = LatencyHist::new();
    for w in &windows {
        all.merge(w);
    }
    let received = all.len();
    Ok(LatencyResult {
        system: sys.name(),
        payload_len: len,
        rate_per_s: spec.rate_per_s,
        sent: measured,
        received,
        lost: measured.saturating_sub(received),
        reordered: tally.reordered,
        producer_behind_max: behind_max,
        latency: all.summary(),
        p99_us_per_second: windows
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| w.summary().p99_us)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::TcpSystem;

    #[test]
    fn tcp_throughput_counts_every_message() {
        let mut sys = TcpSystem::start().unwrap();
        let spec = ThroughputSpec {
            payload_len: 256,
            duration: Duration::from_secs(10),
            max_msgs: Some(5_000),
            idle_timeout: Duration::from_secs(2),
        };
        let r = throughput(&mut sys, &spec, 1, Clock::new()).unwrap();
        assert_eq!(
            (r.sent, r.received, r.lost, r.reordered),
            (5_000, 5_000, 0, 0)
        );
        assert!(r.msgs_per_s > 0.0 && r.mb_per_s > 0.0);
    }

    #[test]
    fn tcp_latency_records_every_message_after_the_warmup() {
        let mut sys = TcpSystem::start().unwrap();
        let spec = LatencySpec {
            payload_len: 64,
            rate_per_s: 2_000,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            idle_timeout: Duration::from_secs(2),
        };
        let r = latency(&mut sys, &spec, 2, Clock::new()).unwrap();
        assert_eq!(r.lost, 0);
        assert_eq!(r.received, r.latency.count);
        // 2,000/s for 0.4 s, give or take the messages on the warm-up boundary.
        assert!((790..=810).contains(&r.sent), "{r:?}");
        assert!(r.latency.p50_us > 0.0 && r.latency.max_us >= r.latency.p99_us);
    }
}
