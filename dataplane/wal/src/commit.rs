//! Group commit: decides when the shell syncs, and when an appended record is durable.
//!
//! The contract is quinn-proto's: inputs are `handle_*` calls that carry the current time,
//! outputs are `poll_*` calls the shell drains after every input.
//!
//! | input | meaning |
//! |---|---|
//! | [`GroupCommit::handle_append`] | a record was written into the mapping ([`crate::writer::Appended`]) |
//! | [`GroupCommit::handle_seal`] | a segment was sealed by a roll (its END record) |
//! | [`GroupCommit::handle_timeout`] | the timer from `poll_timeout` fired |
//! | [`GroupCommit::handle_sync_done`] | an `fdatasync` the machine asked for completed |
//! | [`GroupCommit::handle_sync_failed`] | it failed: the machine is dead, the node stops |
//!
//! | output | meaning |
//! |---|---|
//! | [`GroupCommit::poll_action`] | [`Action::Sync`]: fdatasync this segment, covering up to this offset |
//! | [`GroupCommit::poll_durable`] | every record up to this seq is durable: answer PERSISTED |
//! | [`GroupCommit::poll_timeout`] | when to call `handle_timeout` |
//!
//! # Groups and modes
//!
//! Appends accumulate in a *group*: consecutive appends to one segment not yet being synced.
//! A group becomes *ready* when
//! - [`Durability::Always`]: at once (a sync starts as soon as none is in flight, so every
//!   append is synced before it is reported durable; appends that arrive during a sync share
//!   the next one);
//! - [`Durability::Batch`] (default): its bytes reach `group_bytes_max`, or `sync_deadline_us`
//!   has passed since its first append, or its segment was sealed / a later segment started;
//! - [`Durability::None`]: never; appends are durable when appended and no sync is asked for.
//!
//! **At most one sync is in flight, overall** (not per segment): durability is reported in seq
//! order, and with one sync at a time "sync N done" means every seq up to N's last is durable,
//! without bookkeeping across files. Appends during an in-flight sync go to the next group,
//! which keeps growing until the sync completes: under load, groups grow to match the sync
//! latency. Groups of several segments queue (a roll during a sync); at most
//! `groups_pending_max` of them: the shell checks [`GroupCommit::can_roll`] before rolling.
//!
//! # Failure
//!
//! An fsync error is never retried and never ignored (after a failed fsync the kernel may have
//! dropped the dirty pages; a retry that "succeeds" proves nothing). [`GroupCommit::handle_sync_failed`]
//! moves the machine to a fatal state: every later input returns [`CommitError::Failed`], no
//! seq is reported durable any more, and the node stops.

use std::collections::VecDeque;

use crate::error::ConfigError;
use crate::writer::Appended;

/// Hard cap on `groups_pending_max` (recovery skips [`crate::recovery::SEGMENT_ID_RESTART_GAP`]
/// ids, far more than this many unsynced segments).
pub const GROUPS_PENDING_MAX: usize = 1024;
/// Default size at which a batch group is synced: 1 MiB.
pub const GROUP_BYTES_MAX_DEFAULT: u64 = 1 << 20;
/// Default deadline of a batch group: 200 µs.
pub const SYNC_DEADLINE_US_DEFAULT: u64 = 200;
/// Longest deadline accepted: 1 s.
pub const SYNC_DEADLINE_US_MAX: u64 = 1_000_000;

/// A point on the shell's monotonic clock, in microseconds from an origin the shell chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The instant `micros` µs after the shell's origin.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the shell's origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `micros` µs later, saturating.
    #[must_use]
    pub const fn add_micros(self, micros: u64) -> Self {
        Self(self.0.saturating_add(micros))
    }
}

/// When appends are durable. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append is synced before it is reported durable; syncs start at once.
    Always,
    /// Appends are grouped by size and deadline, then synced (default).
    #[default]
    Batch,
    /// Appends are reported durable at once; nothing is synced.
    None,
}

/// Configuration of a [`GroupCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitConfig {
    /// The durability mode.
    pub durability: Durability,
    /// A batch group is synced once it holds this many bytes (1..=1 GiB).
    pub group_bytes_max: u64,
    /// A batch group is synced this long after its first append (0..=1 s).
    pub sync_deadline_us: u64,
    /// Most groups waiting for a sync (1..=[`GROUPS_PENDING_MAX`]); each roll during a sync
    /// adds one.
    pub groups_pending_max: usize,
}

impl Default for CommitConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Batch,
            group_bytes_max: GROUP_BYTES_MAX_DEFAULT,
            sync_deadline_us: SYNC_DEADLINE_US_DEFAULT,
            groups_pending_max: 16,
        }
    }
}

impl CommitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range("commit.group_bytes_max", self.group_bytes_max, 1, 1 << 30)?;
        ConfigError::check_range(
            "commit.sync_deadline_us",
            self.sync_deadline_us,
            0,
            SYNC_DEADLINE_US_MAX,
        )?;
        ConfigError::check_range(
            "commit.groups_pending_max",
            u64::try_from(self.groups_pending_max).unwrap_or(u64::MAX),
            1,
            GROUPS_PENDING_MAX as u64,
        )
    }
}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `fdatasync` the file of `segment_id` (the whole file; `up_to_offset` is what must be
    /// covered, for a shell that can sync a range), then call
    /// [`GroupCommit::handle_sync_done`] or [`GroupCommit::handle_sync_failed`] with `sync_id`.
    Sync {
        /// Identifies this sync in the completion.
        sync_id: u64,
        /// The segment whose file to sync.
        segment_id: u64,
        /// Everything before this offset must be on stable storage.
        up_to_offset: usize,
    },
}

/// Why the commit machine refused an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A sync failed: the machine is dead and the node must stop.
    #[error(
        "fdatasync {sync_id} of segment {segment_id} failed (errno {errno}): the WAL is stopped"
    )]
    Failed {
        /// The sync that failed.
        sync_id: u64,
        /// Its segment.
        segment_id: u64,
        /// The OS error code.
        errno: i32,
    },
    /// A completion for a sync that is not in flight.
    #[error("sync {got} completed, but the sync in flight is {expected:?}")]
    UnexpectedSyncId {
        /// The sync in flight, if any.
        expected: Option<u64>,
        /// The id reported.
        got: u64,
    },
    /// Appends must arrive in seq order, one by one.
    #[error("append of seq {got}, expected {expected}")]
    SeqNotNext {
        /// The next seq.
        expected: u64,
        /// The seq reported.
        got: u64,
    },
    /// An append to a segment older than the current one, or before the last append's end.
    #[error(
        "append to segment {segment_id} at offset {offset}, but the log is at segment {current_segment_id} offset {current_offset}"
    )]
    PositionRegressed {
        /// The segment reported.
        segment_id: u64,
        /// The offset reported.
        offset: usize,
        /// The current segment.
        current_segment_id: u64,
        /// The end of the last append there.
        current_offset: usize,
    },
    /// Too many groups wait for a sync; the shell should not have rolled
    /// ([`GroupCommit::can_roll`]).
    #[error("{limit} groups already wait for a sync")]
    GroupsPendingFull {
        /// `groups_pending_max`.
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    segment_id: u64,
    last_seq: u64,
    end_offset: usize,
    bytes: u64,
    opened_at: Instant,
    ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    sync_id: u64,
    segment_id: u64,
    up_to_offset: usize,
    last_seq: u64,
}

/// The group-commit state machine of one log.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    config: CommitConfig,
    /// Groups not yet syncing, oldest first; only the last one takes appends.
    groups: VecDeque<Group>,
    in_flight: Option<InFlight>,
    next_sync_id: u64,
    /// The seq the next append must carry.
    next_seq: u64,
    /// The position of the last append (segment, end offset).
    position: (u64, usize),
    durable_seq: u64,
    reported_seq: u64,
    synced_seq: u64,
    failed: Option<CommitError>,
    now: Instant,
}

impl GroupCommit {
    /// A machine for a log whose next record is `next_seq`; everything before it is durable
    /// (recovered from disk, and synced by the shell at start-up).
    pub fn new(config: CommitConfig, next_seq: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let next_seq = next_seq.max(1);
        Ok(Self {
            config,
            groups: VecDeque::with_capacity(config.groups_pending_max),
            in_flight: None,
            next_sync_id: 1,
            next_seq,
            position: (0, 0),
            durable_seq: next_seq - 1,
            reported_seq: next_seq - 1,
            synced_seq: next_seq - 1,
            failed: None,
            now: Instant::default(),
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &CommitConfig {
        &self.config
    }

    /// Highest seq reported durable (or to be reported by the next `poll_durable`).
    pub const fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Highest seq covered by a completed sync: what the writer stores as `sync_lag`.
    pub const fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// Whether a sync failed: the machine accepts nothing any more.
    pub const fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Groups waiting for a sync.
    pub fn pending_groups(&self) -> usize {
        self.groups.len()
    }

    /// Whether a roll now (which may start a new group) stays within `groups_pending_max`.
    pub fn can_roll(&self) -> bool {
        self.groups.len() < self.config.groups_pending_max
    }

    fn check_alive(&self) -> Result<(), CommitError> {
        match self.failed {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    fn advance_clock(&mut self, now: Instant) {
        // A clock that steps back is treated as standing still.
        self.now = self.now.max(now);
    }

    /// A record was written into the mapping at `appended`.
    pub fn handle_append(&mut self, appended: &Appended, now: Instant) -> Result<(), CommitError> {
        self.check_alive()?;
        if appended.seq != self.next_seq {
            return Err(CommitError::SeqNotNext {
                expected: self.next_seq,
                got: appended.seq,
            });
        }
        let (current_segment_id, current_offset) = self.position;
        if (appended.segment_id, appended.offset) < (current_segment_id, current_offset)
            || appended.end_offset <= appended.offset
        {
            return Err(CommitError::PositionRegressed {
                segment_id: appended.segment_id,
                offset: appended.offset,
                current_segment_id,
                current_offset,
            });
        }
        self.advance_clock(now);
        let bytes = u64::try_from(appended.end_offset - appended.offset).unwrap_or(u64::MAX);
        if self.config.durability == Durability::None {
            self.commit_position(appended);
            self.durable_seq = appended.seq;
            return Ok(());
        }
        match self.groups.back_mut() {
            Some(group) if group.segment_id == appended.segment_id => {
                group.last_seq = appended.seq;
                group.end_offset = appended.end_offset;
                group.bytes = group.bytes.saturating_add(bytes);
            }
            _ => {
                if self.groups.len() >= self.config.groups_pending_max {
                    return Err(CommitError::GroupsPendingFull {
                        limit: self.config.groups_pending_max,
                    });
                }
                self.groups.push_back(Group {
                    segment_id: appended.segment_id,
                    last_seq: appended.seq,
                    end_offset: appended.end_offset,
                    bytes,
                    opened_at: self.now,
                    ready: false,
                });
            }
        }
        self.commit_position(appended);
        self.mark_ready();
        Ok(())
    }

    fn commit_position(&mut self, appended: &Appended) {
        self.next_seq = appended.seq + 1;
        self.position = (appended.segment_id, appended.end_offset);
    }

    /// A roll sealed `segment_id` with an END record ending at `end_offset`: its group (if it
    /// is still waiting) covers the END too, and is synced without waiting for more.
    pub fn handle_seal(
        &mut self,
        segment_id: u64,
        end_offset: usize,
        now: Instant,
    ) -> Result<(), CommitError> {
        self.check_alive()?;
        self.advance_clock(now);
        if let Some(group) = self.groups.back_mut()
            && group.segment_id == segment_id
        {
            group.end_offset = group.end_offset.max(end_offset);
            group.ready = true;
        }
        if self.position.0 == segment_id {
            self.position.1 = self.position.1.max(end_offset);
        }
        Ok(())
    }

    /// The timer from [`GroupCommit::poll_timeout`] fired (or any time: it is idempotent).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed.is_none() {
            self.advance_clock(now);
            self.mark_ready();
        }
    }

    /// Marks the groups whose size, deadline or successor says they should be synced.
    fn mark_ready(&mut self) {
        let last = self.groups.len().saturating_sub(1);
        let config = self.config;
        let now = self.now;
        for (index, group) in self.groups.iter_mut().enumerate() {
            let due = match config.durability {
                Durability::Always => true,
                Durability::Batch => {
                    index < last
                        || group.bytes >= config.group_bytes_max
                        || now >= group.opened_at.add_micros(config.sync_deadline_us)
                }
                Durability::None => false,
            };
            group.ready |= due;
        }
    }

    /// The sync `sync_id` completed: its records are durable.
    ///
    /// # Panics
    ///
    /// Only on a broken internal invariant (a sync covering nothing new).
    pub fn handle_sync_done(&mut self, sync_id: u64, now: Instant) -> Result<(), CommitError> {
        self.check_alive()?;
        let Some(in_flight) = self
            .in_flight
            .filter(|in_flight| in_flight.sync_id == sync_id)
        else {
            return Err(CommitError::UnexpectedSyncId {
                expected: self.in_flight.map(|in_flight| in_flight.sync_id),
                got: sync_id,
            });
        };
        assert!(
            in_flight.last_seq > self.durable_seq,
            "syncs complete in seq order"
        );
        self.in_flight = None;
        self.durable_seq = in_flight.last_seq;
        self.synced_seq = in_flight.last_seq;
        self.advance_clock(now);
        self.mark_ready();
        Ok(())
    }

    /// The sync `sync_id` failed with `errno`. The machine is dead from now on; the returned
    /// error is the one the node stops with.
    pub fn handle_sync_failed(&mut self, sync_id: u64, errno: i32) -> CommitError {
        if let Some(failed) = self.failed {
            return failed;
        }
        let segment_id = self
            .in_flight
            .filter(|in_flight| in_flight.sync_id == sync_id)
            .map_or(0, |in_flight| in_flight.segment_id);
        let failed = CommitError::Failed {
            sync_id,
            segment_id,
            errno,
        };
        self.failed = Some(failed);
        self.in_flight = None;
        self.groups.clear();
        failed
    }

    /// The next thing the shell must do, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.failed.is_some() || self.in_flight.is_some() {
            return None;
        }
        let group = self.groups.front().filter(|group| group.ready)?;
        let in_flight = InFlight {
            sync_id: self.next_sync_id,
            segment_id: group.segment_id,
            up_to_offset: group.end_offset,
            last_seq: group.last_seq,
        };
        self.groups.pop_front();
        self.next_sync_id += 1;
        self.in_flight = Some(in_flight);
        Some(Action::Sync {
            sync_id: in_flight.sync_id,
            segment_id: in_flight.segment_id,
            up_to_offset: in_flight.up_to_offset,
        })
    }

    /// The highest seq now durable, if it moved since the last call.
    #[must_use]
    pub fn poll_durable(&mut self) -> Option<u64> {
        if self.failed.is_some() || self.durable_seq <= self.reported_seq {
            return None;
        }
        self.reported_seq = self.durable_seq;
        Some(self.durable_seq)
    }

    /// When to call [`GroupCommit::handle_timeout`]: the deadline of the group waiting for
    /// one, when no sync is in flight (a sync's completion re-checks deadlines anyway).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some()
            || self.in_flight.is_some()
            || self.config.durability != Durability::Batch
        {
            return None;
        }
        let group = self.groups.front().filter(|group| !group.ready)?;
        Some(group.opened_at.add_micros(self.config.sync_deadline_us))
    }
}

#[cfg(test)]
mod tests;
