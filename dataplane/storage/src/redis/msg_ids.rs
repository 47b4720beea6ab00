//! msg_id blocks of the `redis` backend, without I/O: ids come only from blocks Redis has
//! confirmed, so no id is handed out twice, across restarts and takeovers.
//!
//! The core's counter `mesh:{N:C}:msg_ids` holds how many ids of partition `C` were ever
//! reserved. A reservation is `INCRBY msg_ids block_len`; its reply `total` names the block
//! `partition_first(C) + total - block_len .. partition_first(C) + total`, which no other
//! reservation (of this instance, an earlier one, or a replacement node) can get. A reservation
//! that was executed but whose reply was lost (the connection dropped) is sent again and skips a
//! block: ids are wasted, never repeated. The next block is asked for when fewer than half a
//! block is left, so it is usually confirmed before the current one runs out.

use mesh_wal::msg_id::{partition_end, partition_first};

/// The ids of one core: the current block, at most one confirmed spare, at most one reservation
/// in flight.
#[derive(Debug)]
pub(super) struct MsgIdBlocks {
    partition: u8,
    block_len: u64,
    /// The current block is `next..end`.
    next: u64,
    end: u64,
    /// A confirmed block used once the current one runs out.
    spare: Option<(u64, u64)>,
    /// The ticket of the reservation in flight.
    pending: Option<u64>,
    /// The partition's ids are used up.
    exhausted: bool,
}

impl MsgIdBlocks {
    /// No id yet: the first reservation is asked for at once.
    pub(super) fn new(partition: u8, block_len: u64) -> Self {
        let first = partition_first(partition);
        Self {
            partition,
            block_len,
            next: first,
            end: first,
            spare: None,
            pending: None,
            exhausted: false,
        }
    }

    /// Ids that can be handed out without waiting.
    pub(super) fn available(&self) -> u64 {
        (self.end - self.next) + self.spare.map_or(0, |(start, end)| end - start)
    }

    /// The next id, if a confirmed block holds one.
    pub(super) fn allocate(&mut self) -> Option<u64> {
        if self.next == self.end {
            let (start, end) = self.spare.take()?;
            self.next = start;
            self.end = end;
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }

    /// Whether a reservation should be sent now (none in flight, no spare, under half a block
    /// left, ids not used up).
    pub(super) fn wants_reservation(&self) -> bool {
        self.pending.is_none()
            && self.spare.is_none()
            && !self.exhausted
            && self.available() <= self.block_len / 2
    }

    /// The reservation with ticket `seq` was queued.
    pub(super) fn handle_requested(&mut self, seq: u64) {
        self.pending = Some(seq);
    }

    /// The ticket of the reservation in flight, if any.
    pub(super) fn pending(&self) -> Option<u64> {
        self.pending
    }

    /// Whether the partition's ids are used up.
    pub(super) fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// The ids reserved per block.
    pub(super) fn block_len(&self) -> u64 {
        self.block_len
    }

    /// Redis answered the reservation: `total` ids of the partition are reserved now, the last
    /// `block_len` of them for this core.
    pub(super) fn handle_reserved(&mut self, total: u64) {
        self.pending = None;
        let first = partition_first(self.partition);
        let last_end = partition_end(self.partition);
        let end = first
            .checked_add(total)
            .map_or(last_end, |end| end.min(last_end));
        let start = first.saturating_add(total.saturating_sub(self.block_len));
        if start >= end {
            self.exhausted = true;
            return;
        }
        if self.next == self.end {
            self.next = start;
            self.end = end;
        } else {
            self.spare = Some((start, end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_only_from_confirmed_blocks() {
        let first = partition_first(2);
        let mut ids = MsgIdBlocks::new(2, 4);
        assert_eq!(ids.allocate(), None);
        assert!(ids.wants_reservation());
        ids.handle_requested(1);
        assert!(!ids.wants_reservation());
        ids.handle_reserved(4);
        assert_eq!(ids.allocate(), Some(first));
        assert_eq!(ids.allocate(), Some(first + 1));
        assert!(ids.wants_reservation(), "half a block left");
        ids.handle_requested(2);
        // Another instance reserved a block in between: this one skips it.
        ids.handle_reserved(12);
        assert_eq!(ids.available(), 6);
        assert!(!ids.wants_reservation(), "a spare is held");
        let rest: Vec<u64> = std::iter::from_fn(|| ids.allocate()).collect();
        assert_eq!(
            rest,
            [
                first + 2,
                first + 3,
                first + 8,
                first + 9,
                first + 10,
                first + 11
            ]
        );
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut ids = MsgIdBlocks::new(0, 4);
        ids.handle_requested(1);
        ids.handle_reserved(u64::MAX);
        assert!(ids.exhausted());
        assert_eq!(ids.allocate(), None);
        assert!(!ids.wants_reservation());
        let mut ids = MsgIdBlocks::new(0, 4);
        // The last usable ids of the partition: the block is clipped to them.
        let span = partition_end(0) - partition_first(0);
        ids.handle_reserved(span + 2);
        assert_eq!(ids.allocate(), Some(partition_end(0) - 2));
        assert_eq!(ids.allocate(), Some(partition_end(0) - 1));
        assert_eq!(ids.allocate(), None);
    }
}
