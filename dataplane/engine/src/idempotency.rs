//! Idempotency keys (SPEC §4, `SendRequest.idempotency_key`; wire metadata key 13): a retried
//! send with a key the node already took is answered with the first send's msg_id and never
//! sent twice.
//!
//! One table per node, shared by its cores: a client that reconnects after a lost answer may
//! land on another core. A key is claimed atomically when its message gets its msg_id (before
//! the append, so two cores racing on one key cannot both send), released if the append is
//! refused, and kept as long as the message is tracked and for the next 100,000 finished keyed
//! messages of its core after that (as long as their statuses are kept). Keys live in
//! the stored frame's metadata, so recovery claims them again: a key survives a restart as long
//! as its message does. Only the accept path of keyed messages takes the lock; forwarding never
//! does.

use std::collections::HashMap;
use std::sync::Mutex;

/// The node's idempotency keys (module docs).
#[derive(Debug, Default)]
pub(crate) struct IdempotencyKeys {
    keys: Mutex<HashMap<Box<[u8]>, u64>>,
}

impl IdempotencyKeys {
    /// Claims `key` for `msg_id`; `Err(first)` when another message holds it.
    pub(crate) fn claim(&self, key: &[u8], msg_id: u64) -> Result<(), u64> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&first) = keys.get(key) {
            return Err(first);
        }
        keys.insert(key.into(), msg_id);
        Ok(())
    }

    /// Gives `key` up, if `msg_id` holds it.
    pub(crate) fn release(&self, key: &[u8], msg_id: u64) {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.get(key) == Some(&msg_id) {
            keys.remove(key);
        }
    }

    /// Keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claim_wins_until_released_by_its_holder() {
        let t = IdempotencyKeys::default();
        assert_eq!(t.claim(b"k", 7), Ok(()));
        assert_eq!(t.claim(b"k", 9), Err(7));
        assert_eq!(t.claim(b"other", 9), Ok(()));
        // Only the holder releases it.
        t.release(b"k", 9);
        assert_eq!(t.claim(b"k", 10), Err(7));
        t.release(b"k", 7);
        assert_eq!(t.claim(b"k", 10), Ok(()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn racing_cores_get_one_winner() {
        let t = std::sync::Arc::new(IdempotencyKeys::default());
        let winners: usize = (0..4u64)
            .map(|core| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000u64)
                        .filter(|n| t.claim(&n.to_be_bytes(), core * 1000 + n).is_ok())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(winners, 1000, "each key claimed exactly once");
    }
}
