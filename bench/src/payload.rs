//! What the harness puts at the front of every payload: the run it belongs to, a sequence
//! number and the send time, so the consumer counts losses and measures latency on the same
//! clock as the producer (both are in this process).

use std::time::Instant;

/// Bytes of the stamp at the front of every payload (the rest is filler).
pub const STAMP_LEN: usize = 20;

/// Sequence number of the probes sent before a run to see that the path is up.
pub const PROBE_SEQ: u64 = u64::MAX;

/// The front of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Run id: messages of another run (late probes, stragglers) are ignored.
    pub run: u32,
    /// 0, 1, 2… in send order ([`PROBE_SEQ`] for probes).
    pub seq: u64,
    /// Send time, nanoseconds on the [`Clock`].
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp into the first [`STAMP_LEN`] bytes of `buf` (which must hold them).
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.run.to_le_bytes());
        buf[4..12].copy_from_slice(&self.seq.to_le_bytes());
        buf[12..20].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads the stamp of a payload; `None` if it is too short to hold one.
    pub fn read(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..STAMP_LEN)?;
        Some(Stamp {
            run: u32::from_le_bytes(b[0..4].try_into().ok()?),
            seq: u64::from_le_bytes(b[4..12].try_into().ok()?),
            sent_ns: u64::from_le_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// One monotonic clock for producer and consumer: nanoseconds since it was made.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_short_payloads_have_none() {
        let s = Stamp {
            run: 7,
            seq: 123_456_789,
            sent_ns: u64::MAX - 3,
        };
        let mut buf = [0xAAu8; 64];
        s.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(Stamp::read(&buf[..STAMP_LEN - 1]), None);
        assert!(buf[STAMP_LEN..].iter().all(|b| *b == 0xAA));
    }
}
