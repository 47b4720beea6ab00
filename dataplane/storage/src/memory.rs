//! The `memory` backend: the semantics of [`crate::Storage`] with nothing on disk, for tests
//! and ephemeral nodes.
//!
//! **Nothing survives the process.** A restarted node starts empty: unsettled messages are
//! lost, the dedup state is gone (a retransmitted message may be delivered twice), and msg_ids
//! start again at the partition's first id. Within one process everything else holds: dedup by
//! (src_node, msg_id) through the same [`DedupWindow`] as the WAL, unsettled messages kept until
//! settled or acked, msg_ids never repeated. Every append is durable at once, whatever the
//! configured [`DurabilityMode`] (there is nothing to sync); the mode is only reported.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mesh_wal::dedup::{DedupConfig, DedupWindow};
use mesh_wal::msg_id::{partition_end, partition_first};
use mesh_wal::{MsgKey, Verdict};

use crate::durable::{Ticket, WaitDurable, WaitProgress, Watermark};
use crate::error::{BusyReason, StorageError};
use crate::{DurabilityMode, Inbound, RecoveredState, Storage};

/// Bounds of a [`MemoryStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The core: its msg_id partition.
    pub core: u8,
    /// The mode reported by [`Storage::mode`] (appends are durable at once in every mode).
    pub mode: DurabilityMode,
    /// Most unsettled outbound + unacked inbound messages held.
    pub entries_max: usize,
    /// Dedup window bounds.
    pub dedup: DedupConfig,
}

impl MemoryConfig {
    /// Defaults for core `core`.
    pub fn new(core: u8) -> Self {
        Self {
            core,
            mode: DurabilityMode::default(),
            entries_max: 65_536,
            dedup: DedupConfig::default(),
        }
    }
}

#[derive(Debug)]
struct State {
    config: MemoryConfig,
    next_seq: u64,
    next_msg_id: u64,
    outbound: HashMap<MsgKey, (u64, Vec<u8>)>,
    inbound: HashMap<MsgKey, (u64, Vec<u8>)>,
    dedup: DedupWindow,
}

impl State {
    fn next_ticket(&mut self) -> Ticket {
        let ticket = Ticket(self.next_seq);
        self.next_seq += 1;
        ticket
    }

    fn check_room(&self) -> Result<(), StorageError> {
        if self.outbound.len() + self.inbound.len() >= self.config.entries_max {
            return Err(StorageError::Busy {
                reason: BusyReason::TooManyUnsettled,
                retry_after: None,
            });
        }
        Ok(())
    }
}

/// The in-memory backend of one core. See the module doc for what it does not keep.
#[derive(Debug)]
pub struct MemoryStorage {
    state: RefCell<State>,
    watermark: Rc<Watermark>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new(config: MemoryConfig) -> Result<Self, StorageError> {
        let dedup = DedupWindow::new(config.dedup)
            .map_err(|error| StorageError::Config(error.to_string()))?;
        Ok(Self {
            state: RefCell::new(State {
                config,
                next_seq: 1,
                next_msg_id: partition_first(config.core),
                outbound: HashMap::new(),
                inbound: HashMap::new(),
                dedup,
            }),
            watermark: Watermark::new(0),
        })
    }

    fn durable_now(&self, ticket: Ticket) -> Ticket {
        self.watermark.advance(ticket.0);
        ticket
    }
}

impl Storage for MemoryStorage {
    fn mode(&self) -> DurabilityMode {
        self.state.borrow().config.mode
    }

    fn append_outbound(&self, key: MsgKey, frame: &[u8]) -> Result<Ticket, StorageError> {
        let mut state = self.state.borrow_mut();
        if !state.outbound.contains_key(&key) {
            state.check_room()?;
        }
        let ticket = state.next_ticket();
        state.outbound.insert(key, (ticket.0, frame.to_vec()));
        drop(state);
        Ok(self.durable_now(ticket))
    }

    fn mark_settled(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.state.borrow_mut();
        state.outbound.remove(&key);
        let ticket = state.next_ticket();
        drop(state);
        Ok(self.durable_now(ticket))
    }

    fn append_inbound(&self, key: MsgKey, frame: &[u8]) -> Result<Inbound, StorageError> {
        let mut state = self.state.borrow_mut();
        if state.dedup.check(key.src_node, key.msg_id) != Verdict::New {
            let ticket = Ticket(state.next_seq - 1);
            return Ok(Inbound::Duplicate(ticket));
        }
        state.check_room()?;
        state
            .dedup
            .check_and_insert(key.src_node, key.msg_id)
            .map_err(|_| StorageError::Busy {
                reason: BusyReason::TooManySources,
                retry_after: None,
            })?;
        let ticket = state.next_ticket();
        state.inbound.insert(key, (ticket.0, frame.to_vec()));
        drop(state);
        Ok(Inbound::New(self.durable_now(ticket)))
    }

    fn mark_acked(&self, key: MsgKey) -> Result<Ticket, StorageError> {
        let mut state = self.state.borrow_mut();
        state.inbound.remove(&key);
        let ticket = state.next_ticket();
        drop(state);
        Ok(self.durable_now(ticket))
    }

    fn allocate_msg_id(&self) -> Result<u64, StorageError> {
        let mut state = self.state.borrow_mut();
        let id = state.next_msg_id;
        if id >= partition_end(state.config.core) {
            return Err(StorageError::Config(format!(
                "msg_id space of partition {} exhausted",
                state.config.core
            )));
        }
        state.next_msg_id += 1;
        Ok(id)
    }

    fn durable(&self) -> Ticket {
        Ticket(self.watermark.durable())
    }

    fn wait_durable(&self, ticket: Ticket) -> WaitDurable {
        WaitDurable::new(self.watermark.clone(), ticket)
    }

    fn wait_progress(&self) -> WaitProgress {
        WaitProgress::new(self.watermark.clone())
    }

    fn is_duplicate(&self, key: MsgKey) -> bool {
        self.state.borrow().dedup.check(key.src_node, key.msg_id) != Verdict::New
    }

    fn take_recovered(&self) -> RecoveredState {
        RecoveredState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(msg_id: u64) -> MsgKey {
        MsgKey {
            src_node: 7,
            msg_id,
        }
    }

    #[test]
    fn dedup_settle_and_ids() {
        let storage = MemoryStorage::new(MemoryConfig::new(3)).unwrap();
        let first = storage.allocate_msg_id().unwrap();
        let second = storage.allocate_msg_id().unwrap();
        assert!(second > first);
        assert_eq!(first >> 56, 3);
        let ticket = storage.append_outbound(key(first), b"hello").unwrap();
        assert!(storage.durable() >= ticket);
        storage.mark_settled(key(first)).unwrap();
        let inbound = storage.append_inbound(key(1), b"in").unwrap();
        assert!(matches!(inbound, Inbound::New(_)));
        assert!(matches!(
            storage.append_inbound(key(1), b"in").unwrap(),
            Inbound::Duplicate(_)
        ));
        assert!(storage.is_duplicate(key(1)));
        storage.mark_acked(key(1)).unwrap();
        assert_eq!(storage.take_recovered(), RecoveredState::default());
    }
}
