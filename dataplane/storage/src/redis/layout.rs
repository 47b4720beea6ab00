//! The Redis key layout of one core's state and the byte encoding of its values, without I/O:
//! the names the I/O thread writes to, and the decoding (and checking) of a start-up load.
//!
//! The layout (key names, the byte format of fields and values, how the dedup state is kept)
//! is documented in the `redis` module's doc, the public one; this module is its code.

use mesh_wal::dedup::{DedupConfig, DedupError};
use mesh_wal::{DedupWindow, MsgKey};

use crate::StoredMessage;
use crate::error::StorageError;

/// Length of an encoded message key.
pub(super) const FIELD_LEN: usize = 16;
/// Length of the seq in front of a message value.
pub(super) const SEQ_LEN: usize = 8;

/// The prefix of every key of `node_id`'s core `core`.
pub(super) fn prefix(node_id: u64, core: u8) -> String {
    format!("mesh:{{{node_id}:{core}}}:")
}

/// The names of one core's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    pub(super) outbound: String,
    pub(super) inbound: String,
    pub(super) dedup: String,
    pub(super) seen: String,
    pub(super) msg_ids: String,
}

impl Keys {
    pub(super) fn new(node_id: u64, core: u8) -> Self {
        let prefix = prefix(node_id, core);
        Self {
            outbound: format!("{prefix}out"),
            inbound: format!("{prefix}in"),
            dedup: format!("{prefix}dedup"),
            seen: format!("{prefix}seen"),
            msg_ids: format!("{prefix}msg_ids"),
        }
    }
}

/// The hash field of `key`.
pub(super) fn encode_field(key: MsgKey) -> [u8; FIELD_LEN] {
    let mut field = [0; FIELD_LEN];
    field[..8].copy_from_slice(&key.src_node.to_be_bytes());
    field[8..].copy_from_slice(&key.msg_id.to_be_bytes());
    field
}

/// The key a hash field names, if it is one.
pub(super) fn decode_field(field: &[u8]) -> Option<MsgKey> {
    let field: &[u8; FIELD_LEN] = field.try_into().ok()?;
    let (src_node, msg_id) = field.split_at(8);
    Some(MsgKey {
        src_node: u64::from_be_bytes(src_node.try_into().ok()?),
        msg_id: u64::from_be_bytes(msg_id.try_into().ok()?),
    })
}

/// The stored value of a message appended as `seq`.
pub(super) fn encode_message(seq: u64, frame: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(SEQ_LEN + frame.len());
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(frame);
    value
}

/// The seq and frame of a stored message value, if it is one.
pub(super) fn decode_message(value: &[u8]) -> Option<(u64, &[u8])> {
    let (seq, frame) = value.split_at_checked(SEQ_LEN)?;
    Some((u64::from_be_bytes(seq.try_into().ok()?), frame))
}

/// The field/value pairs of one hash.
pub(super) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What a start-up load read, as bytes.
#[derive(Debug, Default)]
pub(super) struct RawState {
    pub(super) outbound: Pairs,
    pub(super) inbound: Pairs,
    pub(super) seen: Vec<Vec<u8>>,
    pub(super) dedup: Option<Vec<u8>>,
}

/// The decoded state of one core.
#[derive(Debug)]
pub(super) struct LoadedState {
    /// Unsettled outbound messages, in append order.
    pub(super) outbound: Vec<StoredMessage>,
    /// Unacked inbound messages, in append order.
    pub(super) inbound: Vec<StoredMessage>,
    /// The dedup checkpoint with `seen` replayed.
    pub(super) dedup: DedupWindow,
    /// Keys in `seen` (recorded since the checkpoint).
    pub(super) seen_since_checkpoint: usize,
    /// The largest append seq found (0 if none): new appends continue above it.
    pub(super) last_seq: u64,
}

fn corrupt(key: &str, what: &str) -> StorageError {
    StorageError::Redis {
        op: "decode",
        detail: format!("{key}: {what}"),
    }
}

/// Decodes and checks a load; any value that does not decode is an error naming its key.
pub(super) fn decode(
    raw: RawState,
    keys: &Keys,
    dedup_config: DedupConfig,
) -> Result<LoadedState, StorageError> {
    let (outbound, last_out) = decode_messages(&keys.outbound, raw.outbound)?;
    let (inbound, last_in) = decode_messages(&keys.inbound, raw.inbound)?;
    let mut dedup = match &raw.dedup {
        Some(snapshot) => DedupWindow::from_snapshot(dedup_config, snapshot)
            .map_err(|error| corrupt(&keys.dedup, &format!("dedup checkpoint: {error}")))?,
        None => DedupWindow::new(dedup_config)
            .map_err(|error| StorageError::Config(error.to_string()))?,
    };
    let seen_since_checkpoint = raw.seen.len();
    let seen_keys = raw
        .seen
        .iter()
        .map(|field| {
            decode_field(field).ok_or_else(|| {
                corrupt(
                    &keys.seen,
                    &format!("field of {} bytes, expected {FIELD_LEN}", field.len()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Unacked inbound messages are recorded already (their `seen` entry or the checkpoint);
    // replaying them too keeps "a stored inbound message is a duplicate" true whatever happened.
    for key in seen_keys
        .iter()
        .chain(inbound.iter().map(|message| &message.key))
    {
        if let Err(DedupError::SourcesFull { limit }) =
            dedup.check_and_insert(key.src_node, key.msg_id)
        {
            return Err(StorageError::Config(format!(
                "the dedup state in Redis ({}) tracks more than dedup.sources_max = {limit} \
                 sources",
                keys.seen
            )));
        }
    }
    Ok(LoadedState {
        outbound,
        inbound,
        dedup,
        seen_since_checkpoint,
        last_seq: last_out.max(last_in),
    })
}

/// The messages of one hash in append order, and the largest seq among them.
fn decode_messages(key: &str, pairs: Pairs) -> Result<(Vec<StoredMessage>, u64), StorageError> {
    let mut messages = Vec::with_capacity(pairs.len());
    for (field, value) in pairs {
        let msg_key = decode_field(&field).ok_or_else(|| {
            corrupt(
                key,
                &format!("field of {} bytes, expected {FIELD_LEN}", field.len()),
            )
        })?;
        let (seq, frame) = decode_message(&value).ok_or_else(|| {
            corrupt(
                key,
                &format!(
                    "value of {:?} is {} bytes, shorter than its {SEQ_LEN}-byte seq",
                    msg_key,
                    value.len()
                ),
            )
        })?;
        messages.push((
            seq,
            StoredMessage {
                key: msg_key,
                frame: frame.to_vec(),
            },
        ));
    }
    messages.sort_unstable_by_key(|(seq, message)| (*seq, message.key));
    let last = messages.last().map_or(0, |(seq, _)| *seq);
    Ok((
        messages.into_iter().map(|(_, message)| message).collect(),
        last,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src_node: u64, msg_id: u64) -> MsgKey {
        MsgKey { src_node, msg_id }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new(42, 3);
        assert_eq!(keys.outbound, "mesh:{42:3}:out");
        assert_eq!(keys.msg_ids, "mesh:{42:3}:msg_ids");
        assert_ne!(Keys::new(42, 3), Keys::new(42, 4));
        assert_ne!(Keys::new(4, 23), Keys::new(42, 3));
    }

    #[test]
    fn fields_and_values_round_trip() {
        let message = key(u64::MAX - 1, 7 << 56 | 0x63);
        let field = encode_field(message);
        assert_eq!(decode_field(&field), Some(message));
        assert_eq!(decode_field(&field[..15]), None);
        let value = encode_message(5, b"frame");
        assert_eq!(&value[..8], &5u64.to_be_bytes());
        assert_eq!(decode_message(&value), Some((5, &b"frame"[..])));
        assert_eq!(decode_message(&value[..7]), None);
        assert_eq!(decode_message(&encode_message(1, b"")), Some((1, &b""[..])));
    }

    #[test]
    fn decode_orders_by_seq_and_replays_dedup() {
        let keys = Keys::new(1, 0);
        let mut checkpoint = DedupWindow::new(DedupConfig::default()).unwrap();
        checkpoint.check_and_insert(9, 1).unwrap();
        let mut snapshot = Vec::new();
        checkpoint.encode_snapshot(&mut snapshot);
        let raw = RawState {
            outbound: vec![
                (encode_field(key(1, 3)).to_vec(), encode_message(30, b"c")),
                (encode_field(key(1, 1)).to_vec(), encode_message(10, b"a")),
            ],
            inbound: vec![(encode_field(key(9, 2)).to_vec(), encode_message(20, b"b"))],
            seen: vec![
                encode_field(key(9, 2)).to_vec(),
                encode_field(key(8, 5)).to_vec(),
            ],
            dedup: Some(snapshot),
        };
        let loaded = decode(raw, &keys, DedupConfig::default()).unwrap();
        let outbound: Vec<MsgKey> = loaded.outbound.iter().map(|message| message.key).collect();
        assert_eq!(outbound, [key(1, 1), key(1, 3)]);
        assert_eq!(loaded.outbound[1].frame, b"c");
        assert_eq!(loaded.inbound[0].key, key(9, 2));
        assert_eq!(loaded.last_seq, 30);
        assert_eq!(loaded.seen_since_checkpoint, 2);
        for seen in [key(9, 1), key(9, 2), key(8, 5)] {
            assert_ne!(
                loaded.dedup.check(seen.src_node, seen.msg_id),
                mesh_wal::Verdict::New
            );
        }
        assert_eq!(loaded.dedup.check(9, 3), mesh_wal::Verdict::New);
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let keys = Keys::new(1, 0);
        let raw = RawState {
            outbound: vec![(vec![1, 2, 3], encode_message(1, b"x"))],
            ..RawState::default()
        };
        let error = decode(raw, &keys, DedupConfig::default()).unwrap_err();
        assert!(error.to_string().contains("mesh:{1:0}:out"), "{error}");
        let raw = RawState {
            inbound: vec![(encode_field(key(1, 1)).to_vec(), vec![0; 3])],
            ..RawState::default()
        };
        assert!(matches!(
            decode(raw, &keys, DedupConfig::default()),
            Err(StorageError::Redis { op: "decode", .. })
        ));
        let raw = RawState {
            dedup: Some(b"not a snapshot".to_vec()),
            ..RawState::default()
        };
        assert!(decode(raw, &keys, DedupConfig::default()).is_err());
    }
}
