//! msg_id allocation: ids are never reused, across crashes and restarts.
//!
//! # Id space
//!
//! A node runs one log per core and cores share nothing, so each core allocates from its own
//! *partition*: the top 8 bits of a msg_id are the partition ([`PARTITION_SHIFT`]), the low 56
//! bits a counter (7.2e16 ids, 228 years at 10 M messages/s). The low value 0 of a partition is
//! never used, nor its all-ones value (so a reservation's exclusive end always fits in a `u64`).
//! The dedup window keys its state on (src_node, partition), see [`crate::dedup`].
//!
//! # Reservations
//!
//! Ids are handed out only from blocks that a `MSG_ID_RESERVATION` record has made durable:
//!
//! 1. [`MsgIdAllocator::poll_reservation`] asks for the next block when fewer than half a block
//!    of ids is left (so the next block is usually durable before the current one runs out);
//! 2. the shell appends the record and reports its seq with
//!    [`MsgIdAllocator::handle_reservation_appended`];
//! 3. once the commit machine reports that seq durable ([`MsgIdAllocator::handle_durable`]), the
//!    block's ids become available to [`MsgIdAllocator::allocate`].
//!
//! After a restart, [`MsgIdAllocator::recover`] resumes at the end of the last reserved block
//! found in the log: ids handed out before the crash lie below it, whether or not the messages
//! that used them survived. The segment tracker keeps the segment holding the latest reservation
//! alive. With durability `none` the reservation is "durable" when appended, so a crash may lose
//! it; that mode makes no promise across crashes.

use crate::error::ConfigError;

/// A msg_id's partition is its top 8 bits.
pub const PARTITION_SHIFT: u32 = 56;
/// Number of ids in one partition (the counter range).
pub const PARTITION_SPAN: u64 = 1 << PARTITION_SHIFT;
/// Default number of ids reserved per `MSG_ID_RESERVATION` record.
pub const BLOCK_LEN_DEFAULT: u64 = 65_536;
/// Largest block accepted.
pub const BLOCK_LEN_MAX: u64 = 1 << 32;

/// The partition of `msg_id`.
pub const fn partition_of(msg_id: u64) -> u8 {
    #[allow(clippy::cast_possible_truncation)] // shifted down to 8 bits
    let partition = (msg_id >> PARTITION_SHIFT) as u8;
    partition
}

/// The first usable id of `partition`.
pub const fn partition_first(partition: u8) -> u64 {
    ((partition as u64) << PARTITION_SHIFT) + 1
}

/// One past the last usable id of `partition` (its all-ones id is never used).
pub const fn partition_end(partition: u8) -> u64 {
    ((partition as u64) << PARTITION_SHIFT) + (PARTITION_SPAN - 1)
}

/// Why an input to the allocator was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgIdError {
    /// A reservation must name at least one id.
    #[error("empty reservation {start}..{end}")]
    Empty {
        /// First id.
        start: u64,
        /// One past the last id.
        end: u64,
    },
    /// A reservation lies in one partition and avoids its unused ids.
    #[error("reservation {start}..{end} is not inside one partition's usable range")]
    OutsidePartition {
        /// First id.
        start: u64,
        /// One past the last id.
        end: u64,
    },
    /// No durable reserved id is left: append the reservation from
    /// [`MsgIdAllocator::poll_reservation`] and wait until it is durable. Routine.
    #[error("no reserved msg_id available at {next}; a reservation is pending")]
    NoneReserved {
        /// The id that would be handed out next.
        next: u64,
    },
    /// The partition's id space is used up.
    #[error("msg_id space of partition {partition} exhausted")]
    Exhausted {
        /// The partition.
        partition: u8,
    },
    /// The reservation reported appended is not the one requested.
    #[error("appended reservation starts at {start}, expected the requested one at {expected}")]
    NotRequested {
        /// Start of the requested reservation (0 if none was requested).
        expected: u64,
        /// Start of the reported one.
        start: u64,
    },
    /// A recovered reservation end lies outside this allocator's partition.
    #[error("recovered reservation end {end} is outside partition {partition}")]
    RecoveredOutsidePartition {
        /// This allocator's partition.
        partition: u8,
        /// The recovered end.
        end: u64,
    },
}

/// A block of msg_ids `start..end`, all in one partition. Construction validates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reservation {
    start: u64,
    end: u64,
}

impl Reservation {
    /// The block `start..end` (end exclusive), refused unless non-empty and inside one
    /// partition's usable range.
    pub fn new(start: u64, end: u64) -> Result<Self, MsgIdError> {
        if start >= end {
            return Err(MsgIdError::Empty { start, end });
        }
        let partition = partition_of(start);
        if start < partition_first(partition) || end > partition_end(partition) {
            return Err(MsgIdError::OutsidePartition { start, end });
        }
        Ok(Self { start, end })
    }

    /// First id of the block.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// One past the last id of the block.
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// The partition the block lies in.
    pub const fn partition(&self) -> u8 {
        partition_of(self.start)
    }
}

/// Configuration of a [`MsgIdAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgIdConfig {
    /// This core's partition (usually the core index).
    pub partition: u8,
    /// Ids per reservation, 1..=[`BLOCK_LEN_MAX`]; default [`BLOCK_LEN_DEFAULT`].
    pub block_len: u64,
}

impl MsgIdConfig {
    /// Default configuration for `partition`.
    pub const fn new(partition: u8) -> Self {
        Self {
            partition,
            block_len: BLOCK_LEN_DEFAULT,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range("msg_id.block_len", self.block_len, 1, BLOCK_LEN_MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Handed to the shell by `poll_reservation`, not yet appended.
    Requested(Reservation),
    /// Appended as record `seq`, not yet durable.
    Appended(Reservation, u64),
}

/// Hands out msg_ids of one partition, only from durably reserved blocks.
#[derive(Debug, Clone)]
pub struct MsgIdAllocator {
    config: MsgIdConfig,
    /// The id `allocate` returns next.
    next: u64,
    /// Ids below this are covered by durable reservations.
    usable_end: u64,
    /// End of the last reservation requested (durable or not); the next starts here.
    reserved_end: u64,
    pending: Option<Pending>,
}

impl MsgIdAllocator {
    /// An allocator for a log that has never reserved an id.
    pub fn new(config: MsgIdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let first = partition_first(config.partition);
        Ok(Self {
            config,
            next: first,
            usable_end: first,
            reserved_end: first,
            pending: None,
        })
    }

    /// An allocator resuming after recovery at the end of the last reserved block
    /// (`last_reserved_end`, the largest `end` of the MSG_ID_RESERVATION records found), or at
    /// the partition's first id if the log holds none.
    pub fn recover(
        config: MsgIdConfig,
        last_reserved_end: Option<u64>,
    ) -> Result<Self, crate::Error> {
        let mut allocator = Self::new(config)?;
        if let Some(end) = last_reserved_end {
            let partition = config.partition;
            if end < partition_first(partition) || end > partition_end(partition) {
                return Err(MsgIdError::RecoveredOutsidePartition { partition, end }.into());
            }
            allocator.next = end;
            allocator.usable_end = end;
            allocator.reserved_end = end;
        }
        Ok(allocator)
    }

    /// The next msg_id, if a durable reservation covers it.
    pub fn allocate(&mut self) -> Result<u64, MsgIdError> {
        if self.next < self.usable_end {
            let id = self.next;
            self.next += 1;
            return Ok(id);
        }
        if self.pending.is_none() && self.reserved_end == partition_end(self.config.partition) {
            return Err(MsgIdError::Exhausted {
                partition: self.config.partition,
            });
        }
        Err(MsgIdError::NoneReserved { next: self.next })
    }

    /// Ids that can be handed out now without waiting.
    pub fn available(&self) -> u64 {
        self.usable_end - self.next
    }

    /// A reservation the shell must append as a MSG_ID_RESERVATION record now, if the ids left
    /// are fewer than half a block and none is appended and waiting for durability. Until the
    /// shell reports it appended, the same reservation is returned again (an append that could
    /// not happen, e.g. a full log, is simply retried later).
    #[must_use]
    pub fn poll_reservation(&mut self) -> Option<Reservation> {
        match self.pending {
            Some(Pending::Requested(requested)) => return Some(requested),
            Some(Pending::Appended(..)) => return None,
            None => {}
        }
        if self.available() > self.config.block_len / 2 {
            return None;
        }
        let end_max = partition_end(self.config.partition);
        if self.reserved_end >= end_max {
            return None;
        }
        let end = self
            .reserved_end
            .saturating_add(self.config.block_len)
            .min(end_max);
        let reservation = Reservation::new(self.reserved_end, end).ok()?;
        self.reserved_end = end;
        self.pending = Some(Pending::Requested(reservation));
        Some(reservation)
    }

    /// The shell appended the requested `reservation` as record `seq`.
    pub fn handle_reservation_appended(
        &mut self,
        reservation: Reservation,
        seq: u64,
    ) -> Result<(), MsgIdError> {
        match self.pending {
            Some(Pending::Requested(requested)) if requested == reservation => {
                self.pending = Some(Pending::Appended(reservation, seq));
                Ok(())
            }
            Some(Pending::Requested(requested) | Pending::Appended(requested, _)) => {
                Err(MsgIdError::NotRequested {
                    expected: requested.start(),
                    start: reservation.start(),
                })
            }
            None => Err(MsgIdError::NotRequested {
                expected: 0,
                start: reservation.start(),
            }),
        }
    }

    /// Every record up to `durable_seq` is durable: a reservation among them becomes usable.
    ///
    /// # Panics
    ///
    /// Only on a broken internal invariant (reservations not contiguous).
    pub fn handle_durable(&mut self, durable_seq: u64) {
        if let Some(Pending::Appended(reservation, seq)) = self.pending
            && seq <= durable_seq
        {
            assert_eq!(
                reservation.start(),
                self.usable_end,
                "reservations are contiguous"
            );
            self.usable_end = reservation.end();
            self.pending = None;
        }
    }

    /// The partition this allocator serves.
    pub const fn partition(&self) -> u8 {
        self.config.partition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(block_len: u64) -> MsgIdConfig {
        MsgIdConfig {
            partition: 3,
            block_len,
        }
    }

    #[test]
    fn reservation_validation() {
        assert_eq!(
            Reservation::new(5, 5),
            Err(MsgIdError::Empty { start: 5, end: 5 })
        );
        assert_eq!(
            Reservation::new(0, 5),
            Err(MsgIdError::OutsidePartition { start: 0, end: 5 })
        );
        let first = partition_first(1);
        assert!(Reservation::new(first, partition_end(1)).is_ok());
        assert!(Reservation::new(first, partition_end(1) + 1).is_err());
        assert!(Reservation::new(partition_first(255), u64::MAX).is_ok());
        assert_eq!(partition_of(partition_first(200)), 200);
    }

    #[test]
    fn ids_only_from_durable_reservations() {
        let mut ids = MsgIdAllocator::new(config(4)).unwrap();
        let first = partition_first(3);
        assert_eq!(
            ids.allocate(),
            Err(MsgIdError::NoneReserved { next: first })
        );
        let r1 = ids.poll_reservation().unwrap();
        assert_eq!((r1.start(), r1.end()), (first, first + 4));
        assert_eq!(ids.poll_reservation(), Some(r1), "the same until appended");
        ids.handle_reservation_appended(r1, 10).unwrap();
        assert_eq!(ids.poll_reservation(), None, "one reservation at a time");
        ids.handle_durable(9);
        assert!(ids.allocate().is_err(), "not durable yet");
        ids.handle_durable(10);
        assert_eq!(ids.allocate(), Ok(first));
        assert_eq!(ids.allocate(), Ok(first + 1));
        // Half a block left: ask for the next one, contiguous.
        let r2 = ids.poll_reservation().unwrap();
        assert_eq!((r2.start(), r2.end()), (first + 4, first + 8));
        assert_eq!(ids.allocate(), Ok(first + 2));
        assert_eq!(ids.allocate(), Ok(first + 3));
        assert!(ids.allocate().is_err());
        assert_eq!(
            ids.handle_reservation_appended(r1, 11),
            Err(MsgIdError::NotRequested {
                expected: r2.start(),
                start: r1.start()
            })
        );
        ids.handle_reservation_appended(r2, 12).unwrap();
        ids.handle_durable(20);
        assert_eq!(ids.allocate(), Ok(first + 4));
    }

    #[test]
    fn recover_resumes_after_last_block() {
        let end = partition_first(3) + 65_536;
        let mut ids = MsgIdAllocator::recover(config(16), Some(end)).unwrap();
        assert!(ids.allocate().is_err());
        let r = ids.poll_reservation().unwrap();
        assert_eq!(r.start(), end);
        ids.handle_reservation_appended(r, 1).unwrap();
        ids.handle_durable(1);
        assert_eq!(ids.allocate(), Ok(end));
        assert!(MsgIdAllocator::recover(config(16), Some(5)).is_err());
    }

    #[test]
    fn exhaustion_is_an_error() {
        let end = partition_end(3) - 2;
        let mut ids = MsgIdAllocator::recover(config(16), Some(end)).unwrap();
        let r = ids.poll_reservation().unwrap();
        assert_eq!(r.end(), partition_end(3));
        ids.handle_reservation_appended(r, 1).unwrap();
        ids.handle_durable(1);
        assert_eq!(ids.allocate(), Ok(end));
        assert_eq!(ids.allocate(), Ok(end + 1));
        assert_eq!(ids.poll_reservation(), None);
        assert_eq!(ids.allocate(), Err(MsgIdError::Exhausted { partition: 3 }));
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            MsgIdAllocator::new(config(0)).err(),
            Some(ConfigError::OutOfRange {
                field: "msg_id.block_len",
                value: 0,
                min: 1,
                max: BLOCK_LEN_MAX
            })
        );
    }
}
