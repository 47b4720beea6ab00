//! Reassembly of chunked messages at their destination.
//!
//! Keyed by `(src_node, msg_id)`. Chunks may arrive in any order and more than once (a
//! retransmission after a reconnect); duplicates are ignored. Memory is bounded three ways: per
//! source ([`ReassemblyLimits::source_bytes_max`], and a count of incomplete messages), for the
//! whole node ([`ReassemblyLimits::total_bytes_max`], [`ReassemblyLimits::partials_max`]), and
//! per message ([`ReassemblyLimits::message_len_max`]). A chunk that would break a limit is
//! refused and its whole partial message is dropped, releasing its memory: the origin keeps the
//! message until it hears DELIVERED and sends it again. Incomplete messages are evicted
//! [`ReassemblyLimits::timeout`] after their first chunk arrived.
//!
//! Chunks are kept as the `BytesMut` payload views the decoder produced: nothing is copied
//! until the application asks for a contiguous message ([`Message::to_contiguous`]).
//!
//! Sans-IO: time is an input (`now: Instant`); [`Reassembler::poll_timeout`] says when
//! [`Reassembler::handle_timeout`] has work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::error::ChunkError;
use crate::frame::{Envelope, Frame};
use crate::header::HEADER_LEN;
use crate::kind::Flags;

/// Limits on reassembly memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Bytes (frame lengths) one source may hold in incomplete messages.
    pub source_bytes_max: usize,
    /// Incomplete messages one source may have at once.
    pub source_partials_max: usize,
    /// Bytes all sources together may hold.
    pub total_bytes_max: usize,
    /// Incomplete messages all sources together may have.
    pub partials_max: usize,
    /// Largest reassembled message payload.
    pub message_len_max: usize,
    /// How long an incomplete message is kept after its first chunk.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            source_bytes_max: 64 << 20,
            source_partials_max: 64,
            total_bytes_max: 512 << 20,
            partials_max: 4096,
            message_len_max: 256 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A reassembled message: chunk 0's envelope and metadata, and the payload parts in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Envelope of chunk 0 (its `chunk_index` is 0; chunk flags as on chunk 0).
    pub envelope: Envelope,
    /// Raw CBOR metadata of chunk 0.
    pub meta: BytesMut,
    /// Payload parts in chunk order; their concatenation is the message.
    pub parts: Vec<BytesMut>,
}

impl Message {
    /// Total payload length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(BytesMut::len).sum()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload in one buffer (copies the parts; the one copy of a chunked message, at the
    /// point of delivery to an application that wants contiguous bytes).
    pub fn to_contiguous(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for p in &self.parts {
            v.extend_from_slice(p);
        }
        v
    }
}

/// What one chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored; the message is not complete yet.
    Incomplete,
    /// A chunk already held (or of a message just completed and evicted): ignored.
    Duplicate,
    /// The last missing chunk: here is the whole message.
    Complete(Message),
}

#[derive(Debug)]
struct Partial {
    first_seen: Instant,
    envelope: Option<Envelope>,
    meta: BytesMut,
    last: Option<u16>,
    chunks: BTreeMap<u16, BytesMut>,
    bytes: usize,
    payload_len: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct SourceUsage {
    bytes: usize,
    partials: usize,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Messages completed.
    pub completed: u64,
    /// Duplicate chunks ignored.
    pub duplicates: u64,
    /// Incomplete messages evicted by timeout.
    pub evicted: u64,
    /// Chunks refused (limits or inconsistent chunking).
    pub refused: u64,
}

/// Reassembles chunked messages under [`ReassemblyLimits`].
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: HashMap<(u64, u64), Partial>,
    sources: HashMap<u64, SourceUsage>,
    total_bytes: usize,
    /// `(first_seen, key)` in arrival order; entries of completed messages are skipped lazily.
    expiry: VecDeque<(Instant, (u64, u64))>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            partials: HashMap::new(),
            sources: HashMap::new(),
            total_bytes: 0,
            expiry: VecDeque::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// Bytes held across all incomplete messages.
    pub fn held_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes held for one source.
    pub fn held_bytes_of(&self, src_node: u64) -> usize {
        self.sources.get(&src_node).map_or(0, |u| u.bytes)
    }

    /// Incomplete messages held.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Counters.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Takes one chunk frame. Errors refuse the chunk and drop its partial message.
    pub fn handle_chunk(
        &mut self,
        frame: Frame<BytesMut>,
        now: Instant,
    ) -> Result<ChunkOutcome, ChunkError> {
        let r = self.insert(frame, now);
        if r.is_err() {
            self.stats.refused += 1;
        }
        r
    }

    fn insert(&mut self, frame: Frame<BytesMut>, now: Instant) -> Result<ChunkOutcome, ChunkError> {
        if !frame.flags().contains(Flags::CHUNK) {
            return Err(ChunkError::NotAChunk);
        }
        let env = frame.envelope();
        let key = (env.src_node, env.msg_id);
        let index = env.chunk_index;
        let is_last = env.flags.contains(Flags::LAST_CHUNK);
        let frame_len = frame.len();

        if let Some(p) = self.partials.get(&key) {
            if p.chunks.contains_key(&index) {
                self.stats.duplicates += 1;
                return Ok(ChunkOutcome::Duplicate);
            }
            let check = Self::check_consistency(p, &env, is_last);
            if let Err(e) = check {
                self.drop_partial(key);
                return Err(e);
            }
        } else {
            let usage = self.sources.get(&env.src_node).copied().unwrap_or_default();
            if usage.partials >= self.limits.source_partials_max {
                return Err(ChunkError::TooManyPending {
                    src_node: env.src_node,
                    count: usage.partials,
                });
            }
            if self.partials.len() >= self.limits.partials_max {
                return Err(ChunkError::TotalOverBudget {
                    would_hold: self.total_bytes + frame_len,
                    limit: self.limits.total_bytes_max,
                });
            }
        }
        // Budgets, checked before the chunk is kept.
        let src_bytes = self.held_bytes_of(env.src_node) + frame_len;
        if src_bytes > self.limits.source_bytes_max {
            self.drop_partial(key);
            return Err(ChunkError::SourceOverBudget {
                src_node: env.src_node,
                would_hold: src_bytes,
                limit: self.limits.source_bytes_max,
            });
        }
        if self.total_bytes + frame_len > self.limits.total_bytes_max {
            let would_hold = self.total_bytes + frame_len;
            self.drop_partial(key);
            return Err(ChunkError::TotalOverBudget {
                would_hold,
                limit: self.limits.total_bytes_max,
            });
        }
        let payload_len = frame_len - HEADER_LEN - frame.meta_bytes().len();
        let held_payload = self.partials.get(&key).map_or(0, |p| p.payload_len);
        if held_payload + payload_len > self.limits.message_len_max {
            self.drop_partial(key);
            return Err(ChunkError::MessageTooLarge {
                src_node: env.src_node,
                msg_id: env.msg_id,
                max: self.limits.message_len_max,
            });
        }

        let (_, meta, payload) = frame.into_parts();
        let new = !self.partials.contains_key(&key);
        let p = self.partials.entry(key).or_insert_with(|| Partial {
            first_seen: now,
            envelope: None,
            meta: BytesMut::new(),
            last: None,
            chunks: BTreeMap::new(),
            bytes: 0,
            payload_len: 0,
        });
        if index == 0 {
            p.envelope = Some(env);
            p.meta = meta;
        }
        if is_last {
            p.last = Some(index);
        }
        p.chunks.insert(index, payload);
        p.bytes += frame_len;
        p.payload_len += payload_len;
        let complete = p.last.is_some_and(|l| p.chunks.len() == usize::from(l) + 1);
        let usage = self.sources.entry(env.src_node).or_default();
        usage.bytes += frame_len;
        if new {
            usage.partials += 1;
            self.expiry.push_back((now, key));
        }
        self.total_bytes += frame_len;

        if !complete {
            return Ok(ChunkOutcome::Incomplete);
        }
        let p = self.remove_partial(key);
        self.stats.completed += 1;
        // Chunk 0 is present because all indices 0..=last are.
        let envelope = p.envelope.unwrap_or(env);
        Ok(ChunkOutcome::Complete(Message {
            envelope,
            meta: p.meta,
            parts: p.chunks.into_values().collect(),
        }))
    }

    fn check_consistency(p: &Partial, env: &Envelope, is_last: bool) -> Result<(), ChunkError> {
        let index = env.chunk_index;
        if let Some(last) = p.last {
            if is_last && index != last {
                return Err(ChunkError::ConflictingLast {
                    src_node: env.src_node,
                    msg_id: env.msg_id,
                    first: last,
                    second: index,
                });
            }
            if index > last {
                return Err(ChunkError::IndexBeyondLast {
                    src_node: env.src_node,
                    msg_id: env.msg_id,
                    index,
                    last,
                });
            }
        }
        if is_last
            && let Some((&max_held, _)) = p.chunks.last_key_value()
            && max_held > index
        {
            return Err(ChunkError::IndexBeyondLast {
                src_node: env.src_node,
                msg_id: env.msg_id,
                index: max_held,
                last: index,
            });
        }
        Ok(())
    }

    fn remove_partial(&mut self, key: (u64, u64)) -> Partial {
        let p = self
            .partials
            .remove(&key)
            .unwrap_or_else(|| unreachable!("caller checked the partial exists"));
        self.release(key.0, &p);
        p
    }

    fn drop_partial(&mut self, key: (u64, u64)) {
        if let Some(p) = self.partials.remove(&key) {
            self.release(key.0, &p);
        }
    }

    fn release(&mut self, src: u64, p: &Partial) {
        self.total_bytes -= p.bytes;
        if let Some(u) = self.sources.get_mut(&src) {
            u.bytes -= p.bytes;
            u.partials -= 1;
            if u.partials == 0 {
                debug_assert_eq!(u.bytes, 0);
                self.sources.remove(&src);
            }
        }
    }

    /// When [`Reassembler::handle_timeout`] next has something to evict.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.skip_settled();
        self.expiry.front().map(|(t, _)| *t + self.limits.timeout)
    }

    fn skip_settled(&mut self) {
        while let Some((t, key)) = self.expiry.front() {
            match self.partials.get(key) {
                Some(p) if p.first_seen == *t => break,
                _ => {
                    self.expiry.pop_front();
                }
            }
        }
    }

    /// Evicts every incomplete message whose first chunk arrived `timeout` or longer before
    /// `now`. Returns how many were evicted.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut evicted = 0;
        loop {
            self.skip_settled();
            match self.expiry.front() {
                Some((t, key)) if now.saturating_duration_since(*t) >= self.limits.timeout => {
                    let key = *key;
                    self.expiry.pop_front();
                    self.drop_partial(key);
                    evicted += 1;
                }
                _ => break,
            }
        }
        self.stats.evicted += evicted as u64;
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::chunk_message;
    use crate::kind::FrameKind;
    use crate::limits::{Limits, MIN_FRAME_LEN};
    use crate::meta::{MetaLimits, Metadata};
    use bytes::Bytes;

    fn pattern(i: usize) -> u8 {
        u8::try_from(i % 251).unwrap()
    }

    fn limits() -> Limits {
        Limits::new(MIN_FRAME_LEN, 1024).unwrap()
    }

    fn chunks(src: u64, msg_id: u64, len: usize) -> Vec<Frame<BytesMut>> {
        let mut env = Envelope::new(FrameKind::Data);
        env.src_node = src;
        env.msg_id = msg_id;
        let payload: Bytes = (0..len).map(pattern).collect::<Vec<_>>().into();
        chunk_message(
            &env,
            &Metadata::default(),
            &MetaLimits::default(),
            payload,
            &limits(),
        )
        .unwrap()
        .map(|f| Frame::new_checked(BytesMut::from(&f.to_vec()[..]), &limits()).unwrap())
        .collect()
    }

    #[test]
    fn out_of_order_with_duplicates() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut cs = chunks(1, 10, 30_000);
        let n = cs.len();
        cs.reverse();
        let dup = cs[1].clone();
        let mut done = None;
        for (i, c) in cs.into_iter().enumerate() {
            match r.handle_chunk(c, now).unwrap() {
                ChunkOutcome::Complete(m) => {
                    assert_eq!(i, n - 1);
                    done = Some(m);
                }
                ChunkOutcome::Incomplete => {}
                ChunkOutcome::Duplicate => panic!("no duplicates yet"),
            }
            if i == 2 {
                assert_eq!(
                    r.handle_chunk(dup.clone(), now).unwrap(),
                    ChunkOutcome::Duplicate
                );
            }
        }
        let m = done.expect("complete");
        let expect: Vec<u8> = (0..30_000).map(pattern).collect();
        assert_eq!(m.to_contiguous(), expect);
        assert_eq!(m.envelope.chunk_index, 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.partial_count(), 0);
        assert_eq!(r.stats().duplicates, 1);
    }

    #[test]
    fn source_budget_refuses_and_releases() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits {
            source_bytes_max: 10_000,
            ..ReassemblyLimits::default()
        });
        let cs = chunks(7, 1, 40_000);
        let mut err = None;
        for c in cs {
            if let Err(e) = r.handle_chunk(c, now) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(
            err,
            Some(ChunkError::SourceOverBudget {
                src_node: 7,
                limit: 10_000,
                ..
            })
        ));
        assert_eq!(r.held_bytes_of(7), 0, "the partial is dropped");
        // Another source is unaffected.
        let other = chunks(8, 1, 5_000);
        let mut complete = false;
        for c in other {
            complete |= matches!(r.handle_chunk(c, now).unwrap(), ChunkOutcome::Complete(_));
        }
        assert!(complete);
    }

    #[test]
    fn incomplete_messages_are_evicted_after_the_timeout() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut cs = chunks(1, 1, 20_000);
        cs.pop();
        for c in cs {
            r.handle_chunk(c, t0).unwrap();
        }
        assert!(r.held_bytes() > 0);
        let deadline = r.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(30));
        assert_eq!(
            r.handle_timeout(deadline.checked_sub(Duration::from_millis(1)).unwrap()),
            0
        );
        assert_eq!(r.handle_timeout(deadline), 1);
        assert_eq!(r.held_bytes(), 0);
        assert!(r.poll_timeout().is_none());
    }

    #[test]
    fn conflicting_last_chunk_is_an_error() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let cs = chunks(1, 1, 20_000);
        let n = cs.len();
        let last = cs[n - 1].clone();
        r.handle_chunk(last, now).unwrap();
        // A chunk beyond the announced last.
        let mut env = cs[0].envelope();
        env.chunk_index = u16::try_from(n).unwrap();
        env.flags = Flags::CHUNK;
        let f = crate::encode::encode_frame(&env, &[], Bytes::from_static(b"x"), &limits())
            .unwrap()
            .to_vec();
        let f = Frame::new_checked(BytesMut::from(&f[..]), &limits()).unwrap();
        assert!(matches!(
            r.handle_chunk(f, now),
            Err(ChunkError::IndexBeyondLast { .. })
        ));
        assert_eq!(r.partial_count(), 0);
    }

    #[test]
    fn unchunked_frames_are_refused() {
        let f = crate::encode::encode_frame(
            &Envelope::new(FrameKind::Data),
            &[],
            Bytes::from_static(b"x"),
            &limits(),
        )
        .unwrap()
        .to_vec();
        let f = Frame::new_checked(BytesMut::from(&f[..]), &limits()).unwrap();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(
            r.handle_chunk(f, Instant::now()),
            Err(ChunkError::NotAChunk)
        );
    }
}
