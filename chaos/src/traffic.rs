//! The two applications of a run, each a thread inside its node's namespace speaking to the
//! node with the native client: the producer sends numbered messages at a steady rate and
//! notes which ones the origin answered PERSISTED; the consumer subscribes at the destination,
//! notes every copy it is handed (sequence number, src_node, msg_id, its subscriber session)
//! and acks it at once. Both reconnect when their node is killed and comes back. What they
//! note is the input of [`crate::check`].
//!
//! A payload is the sequence number (8 bytes, big-endian) followed by 24 bytes derived from it,
//! so a corrupted payload cannot pass for another message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mesh_client::{Client, ClientOptions, status};

use crate::check::{Received, Sent};
use crate::netns;

/// Length of a payload.
pub const PAYLOAD_LEN: usize = 32;
/// The sequence number recorded for a payload that is not one of ours.
pub const CORRUPT_SEQ: u64 = u64::MAX;

/// The payload of message `seq`.
pub fn payload(seq: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    let tag = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6d65_7368_6368_616f;
    for part in p[8..].chunks_mut(8) {
        part.copy_from_slice(&tag.to_be_bytes());
    }
    p
}

/// The sequence number of a payload, or [`CORRUPT_SEQ`] if it is not one [`payload`] makes.
pub fn seq_of(bytes: &[u8]) -> u64 {
    let Some(head) = bytes.get(..8) else {
        return CORRUPT_SEQ;
    };
    let mut seq = [0u8; 8];
    seq.copy_from_slice(head);
    let seq = u64::from_be_bytes(seq);
    if bytes == payload(seq) {
        seq
    } else {
        CORRUPT_SEQ
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect(node: SocketAddr, subscribe: bool) -> Result<Client, mesh_client::ClientError> {
    Client::connect(
        node,
        ClientOptions {
            subscribe,
            connect_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    )
}

/// What the producer noted.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Every message sent, by sequence number.
    pub sent: Vec<Sent>,
    /// FAILED receipts.
    pub failed: u64,
    /// DELIVERED receipts.
    pub delivered: u64,
    /// Sessions with the origin (one more after each restart of it).
    pub sessions: u32,
    /// Why each session that ended ended, and when.
    pub session_errors: Vec<(Duration, String)>,
}

/// The producer thread.
#[derive(Debug)]
pub struct Producer {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<ProducerRecord>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Producer {
    /// Starts sending `rate` messages per second to `dst_node` through the node at `node`,
    /// from inside namespace `ns`; times are noted since `t0`.
    pub fn start(
        ns: &str,
        node: SocketAddr,
        dst_node: u64,
        rate: u64,
        t0: Instant,
    ) -> anyhow::Result<Producer> {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(ProducerRecord::default()));
        let thread = {
            let (stop, record) = (stop.clone(), record.clone());
            netns::spawn_in(ns, "producer", move || {
                produce(node, dst_node, rate, t0, &stop, &record);
                Ok(())
            })?
        };
        Ok(Producer {
            stop,
            record,
            thread: Some(thread),
        })
    }

    /// What it noted so far.
    pub fn record(&self) -> ProducerRecord {
        lock(&self.record).clone()
    }

    /// Messages persisted so far.
    pub fn persisted(&self) -> usize {
        lock(&self.record)
            .sent
            .iter()
            .filter(|s| s.persisted_at.is_some())
            .count()
    }

    /// Stops sending, waits (up to 15 s) for the receipts of what it sent, and returns what
    /// it noted.
    pub fn finish(mut self) -> ProducerRecord {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.record()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends until `stop`, then waits for outstanding PERSISTED receipts.
fn produce(
    node: SocketAddr,
    dst_node: u64,
    rate: u64,
    t0: Instant,
    stop: &AtomicBool,
    record: &Mutex<ProducerRecord>,
) {
    // The client's own sequence number of each send on this session -> our seq.
    let mut session: Option<(Client, HashMap<u64, u64>)> = None;
    let mut next_seq = 0u64;
    // A token bucket: a backlog built up while the origin was down is not sent in one burst.
    let burst = (rate / 5).max(1);
    let mut tokens = 0u64;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let Some((client, seqs)) = session.as_mut() else {
            match connect(node, false) {
                Ok(c) => {
                    lock(record).sessions += 1;
                    session = Some((c, HashMap::new()));
                    last = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            continue;
        };
        let now = Instant::now();
        let elapsed_us = u64::try_from((now - last).as_micros()).unwrap_or(u64::MAX);
        let earned = rate.saturating_mul(elapsed_us) / 1_000_000;
        if earned > 0 {
            tokens = (tokens + earned).min(burst);
            last = now;
        }
        let mut failure = None;
        while tokens > 0 {
            let seq = next_seq;
            let client_seq = match client.send(dst_node, 0, &payload(seq)) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            seqs.insert(client_seq, seq);
            lock(record).sent.push(Sent {
                seq,
                persisted_at: None,
            });
            next_seq += 1;
            tokens -= 1;
        }
        if failure.is_none() {
            failure = client.flush().err();
        }
        note(client.receipts(), seqs, t0, record);
        if let Some(e) = failure {
            // The origin went away: what it persisted it retransmits after its restart.
            lock(record)
                .session_errors
                .push((t0.elapsed(), e.to_string()));
            session = None;
            continue;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The receipts of the last sends.
    if let Some((mut client, seqs)) = session {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && outstanding(&seqs, record) > 0 {
            match client.wait_receipts(Duration::from_millis(100)) {
                Ok(got) => note(got, &seqs, t0, record),
                Err(_) => break,
            }
        }
        let _ = client.close();
    }
}

/// Sends of this session not yet answered PERSISTED.
fn outstanding(seqs: &HashMap<u64, u64>, record: &Mutex<ProducerRecord>) -> usize {
    let r = lock(record);
    seqs.values()
        .filter(|&&seq| {
            usize::try_from(seq)
                .ok()
                .and_then(|i| r.sent.get(i))
                .is_some_and(|s| s.persisted_at.is_none())
        })
        .count()
}

fn note(
    receipts: Vec<mesh_client::Receipt>,
    seqs: &HashMap<u64, u64>,
    t0: Instant,
    record: &Mutex<ProducerRecord>,
) {
    if receipts.is_empty() {
        return;
    }
    let at = t0.elapsed();
    let mut r = lock(record);
    for receipt in receipts {
        let Some(i) = seqs
            .get(&receipt.seq)
            .and_then(|&seq| usize::try_from(seq).ok())
        else {
            continue;
        };
        match receipt.status {
            status::PERSISTED => {
                if let Some(s) = r.sent.get_mut(i) {
                    s.persisted_at.get_or_insert(at);
                }
            }
            status::DELIVERED => r.delivered += 1,
            status::FAILED => r.failed += 1,
            _ => {}
        }
    }
}

/// What the consumer noted.
#[derive(Debug, Clone, Default)]
pub struct ConsumerRecord {
    /// Every copy handed over, in arrival order.
    pub received: Vec<Received>,
    /// Subscriber sessions (one more after each restart of the destination).
    pub sessions: u32,
    /// When each session ended (by its number minus one): the node went away.
    pub session_ends: Vec<Duration>,
    /// Why each session that ended ended.
    pub session_errors: Vec<String>,
}

/// The consumer thread.
#[derive(Debug)]
pub struct Consumer {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<ConsumerRecord>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Consumer {
    /// Subscribes at the node at `node` from inside namespace `ns`; times are noted since
    /// `t0`.
    pub fn start(ns: &str, node: SocketAddr, t0: Instant) -> anyhow::Result<Consumer> {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(ConsumerRecord::default()));
        let thread = {
            let (stop, record) = (stop.clone(), record.clone());
            netns::spawn_in(ns, "consumer", move || {
                consume(node, t0, &stop, &record);
                Ok(())
            })?
        };
        Ok(Consumer {
            stop,
            record,
            thread: Some(thread),
        })
    }

    /// Whether every one of `seqs` has arrived at least once.
    pub fn has_all(&self, seqs: &[u64]) -> bool {
        let r = lock(&self.record);
        let got: std::collections::HashSet<u64> = r.received.iter().map(|x| x.seq).collect();
        seqs.iter().all(|s| got.contains(s))
    }

    /// Copies received so far.
    pub fn copies(&self) -> usize {
        lock(&self.record).received.len()
    }

    /// Stops and returns what it noted.
    pub fn finish(mut self) -> ConsumerRecord {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.record).clone()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn consume(node: SocketAddr, t0: Instant, stop: &AtomicBool, record: &Mutex<ConsumerRecord>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = connect(node, true) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let session = {
            let mut r = lock(record);
            r.sessions += 1;
            r.sessions
        };
        let mut failure = None;
        while failure.is_none() && !stop.load(Ordering::Relaxed) {
            match client.recv(Some(Duration::from_millis(100))) {
                Ok(Some(d)) => {
                    lock(record).received.push(Received {
                        seq: seq_of(&d.payload),
                        src_node: d.src_node,
                        msg_id: d.msg_id,
                        at: t0.elapsed(),
                        session,
                    });
                    failure = client.ack(d.src_node, d.msg_id, true).err();
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => {
                let mut r = lock(record);
                r.session_ends.push(t0.elapsed());
                r.session_errors.push(e.to_string());
            }
            None => {
                let _ = client.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_corruption_shows() {
        for seq in [0, 1, 77, u64::MAX - 1] {
            assert_eq!(seq_of(&payload(seq)), seq);
        }
        let mut p = payload(5);
        p[20] ^= 1;
        assert_eq!(seq_of(&p), CORRUPT_SEQ);
        assert_eq!(seq_of(&payload(5)[..31]), CORRUPT_SEQ);
        assert_eq!(seq_of(b"abc"), CORRUPT_SEQ);
    }
}
