//! CBOR metadata: the optional first `meta_len` bytes of a frame body.
//!
//! Metadata is one definite-length CBOR map with unsigned-integer keys (compact, and no string
//! comparison on the hot path). Keys below 256 are reserved for mesh and are a closed set in
//! this version; keys of 256 and above are extensions, kept as opaque byte strings and passed
//! through untouched.
//!
//! | key | name | CBOR type | meaning |
//! |---|---|---|---|
//! | 1 | corr_id | uint | application correlation id, echoed in `Received` |
//! | 2 | headers | map text → bytes | application headers (`SendRequest.headers`) |
//! | 3 | partition | uint | partition / ordering key of the message |
//! | 4 | topology_epoch | uint | sender's topology epoch |
//! | 5 | deadline_unix_ms | uint | the message expires after this time |
//! | 6 | message_len | uint | total length of a chunked message (on chunk 0) |
//! | 7 | reason | uint | CLOSE / NACK reason code |
//! | 8 | ack_success | bool | ACK: the application accepted (true) or rejected (false) |
//! | 9 | text | text | human-readable detail (ACK message, CLOSE detail) |
//! | 10 | e2e | bytes | end-to-end encryption parameters (flag E2E_ENC); opaque here |
//! | ≥ 256 | extensions | bytes | opaque, passed through |
//!
//! Decoding enforces [`MetaLimits`] on every count and length before it allocates, refuses
//! indefinite-length items, duplicate keys, unknown reserved keys and trailing bytes, and never
//! panics on any input.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::error::MetaError;

/// Limits on decoded metadata. The defaults bound one frame's metadata to well under 64 KiB of
/// memory whatever the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLimits {
    /// Largest encoded metadata, in bytes.
    pub max_len: usize,
    /// Most application headers.
    pub max_headers: usize,
    /// Longest header name, in bytes.
    pub max_header_name_len: usize,
    /// Longest header value, in bytes.
    pub max_header_value_len: usize,
    /// Most extension entries.
    pub max_extensions: usize,
    /// Longest text field or extension / e2e value, in bytes.
    pub max_field_len: usize,
}

impl Default for MetaLimits {
    fn default() -> Self {
        Self {
            max_len: crate::limits::DEFAULT_MAX_META_LEN as usize,
            max_headers: 64,
            max_header_name_len: 256,
            max_header_value_len: 4096,
            max_extensions: 16,
            max_field_len: 1024,
        }
    }
}

/// Decoded frame metadata. Every field is optional; an empty `Metadata` encodes to nothing and
/// a frame carrying it has `meta_len == 0` and no `HAS_META` flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Key 1: application correlation id.
    pub corr_id: Option<u64>,
    /// Key 2: application headers, in the order sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Key 3: partition / ordering key.
    pub partition: Option<u64>,
    /// Key 4: sender's topology epoch.
    pub topology_epoch: Option<u64>,
    /// Key 5: expiry, unix milliseconds.
    pub deadline_unix_ms: Option<u64>,
    /// Key 6: total length of a chunked message.
    pub message_len: Option<u64>,
    /// Key 7: CLOSE / NACK reason code.
    pub reason: Option<u16>,
    /// Key 8: ACK outcome.
    pub ack_success: Option<bool>,
    /// Key 9: human-readable detail.
    pub text: Option<String>,
    /// Key 10: end-to-end encryption parameters.
    pub e2e: Option<Vec<u8>>,
    /// Key 11: a message's status (`mesh.v1.MessageStatus` number), in a node's receipts to
    /// its native clients.
    pub status: Option<u16>,
    /// Key 12: the sequence number a native client gave a message, echoed in its receipts.
    pub client_seq: Option<u64>,
    /// Key 13: a sender's idempotency key (at most [`IDEMPOTENCY_KEY_MAX`] bytes): a retried
    /// send with the same key is answered with the first one's msg_id and not sent again.
    pub idempotency_key: Option<Vec<u8>>,
    /// Key 14: in a receipt, the message was not taken because its idempotency key matched an
    /// earlier one (whose msg_id the receipt carries).
    pub duplicate: Option<bool>,
    /// Keys ≥ 256: opaque extensions, in the order sent.
    pub extensions: Vec<(u64, Vec<u8>)>,
}

const KEY_CORR_ID: u64 = 1;
const KEY_HEADERS: u64 = 2;
const KEY_PARTITION: u64 = 3;
const KEY_TOPOLOGY_EPOCH: u64 = 4;
const KEY_DEADLINE: u64 = 5;
const KEY_MESSAGE_LEN: u64 = 6;
const KEY_REASON: u64 = 7;
const KEY_ACK_SUCCESS: u64 = 8;
const KEY_TEXT: u64 = 9;
const KEY_E2E: u64 = 10;
const KEY_STATUS: u64 = 11;
const KEY_CLIENT_SEQ: u64 = 12;
const KEY_IDEMPOTENCY_KEY: u64 = 13;
const KEY_DUPLICATE: u64 = 14;
/// Longest idempotency key (metadata key 13), in bytes.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// First key available to extensions.
pub const FIRST_EXTENSION_KEY: u64 = 256;

impl Metadata {
    /// Whether no field is set (encodes to zero bytes).
    pub fn is_empty(&self) -> bool {
        self.field_count() == 0
    }

    fn field_count(&self) -> u64 {
        let opts = [
            self.corr_id.is_some(),
            !self.headers.is_empty(),
            self.partition.is_some(),
            self.topology_epoch.is_some(),
            self.deadline_unix_ms.is_some(),
            self.message_len.is_some(),
            self.reason.is_some(),
            self.ack_success.is_some(),
            self.text.is_some(),
            self.e2e.is_some(),
            self.status.is_some(),
            self.client_seq.is_some(),
            self.idempotency_key.is_some(),
            self.duplicate.is_some(),
        ];
        opts.iter().filter(|b| **b).count() as u64 + self.extensions.len() as u64
    }

    /// Encodes into `out` (appending), checking the result against `limits.max_len` and each
    /// field against its limit. An empty `Metadata` appends nothing.
    pub fn encode_into(&self, out: &mut Vec<u8>, limits: &MetaLimits) -> Result<(), MetaError> {
        self.check_limits(limits)?;
        if self.is_empty() {
            return Ok(());
        }
        let start = out.len();
        let mut e = Encoder::new(&mut *out);
        // Writing into a Vec cannot fail, and no encoder call here produces a message error.
        let r: Result<(), minicbor::encode::Error<core::convert::Infallible>> = (|| {
            e.map(self.field_count())?;
            if let Some(c) = self.corr_id {
                e.u64(KEY_CORR_ID)?.u64(c)?;
            }
            if !self.headers.is_empty() {
                e.u64(KEY_HEADERS)?.map(self.headers.len() as u64)?;
                for (k, v) in &self.headers {
                    e.str(k)?.bytes(v)?;
                }
            }
            if let Some(v) = self.partition {
                e.u64(KEY_PARTITION)?.u64(v)?;
            }
            if let Some(v) = self.topology_epoch {
                e.u64(KEY_TOPOLOGY_EPOCH)?.u64(v)?;
            }
            if let Some(v) = self.deadline_unix_ms {
                e.u64(KEY_DEADLINE)?.u64(v)?;
            }
            if let Some(v) = self.message_len {
                e.u64(KEY_MESSAGE_LEN)?.u64(v)?;
            }
            if let Some(v) = self.reason {
                e.u64(KEY_REASON)?.u16(v)?;
            }
            if let Some(v) = self.ack_success {
                e.u64(KEY_ACK_SUCCESS)?.bool(v)?;
            }
            if let Some(t) = &self.text {
                e.u64(KEY_TEXT)?.str(t)?;
            }
            if let Some(b) = &self.e2e {
                e.u64(KEY_E2E)?.bytes(b)?;
            }
            if let Some(v) = self.status {
                e.u64(KEY_STATUS)?.u16(v)?;
            }
            if let Some(v) = self.client_seq {
                e.u64(KEY_CLIENT_SEQ)?.u64(v)?;
            }
            if let Some(b) = &self.idempotency_key {
                e.u64(KEY_IDEMPOTENCY_KEY)?.bytes(b)?;
            }
            if let Some(v) = self.duplicate {
                e.u64(KEY_DUPLICATE)?.bool(v)?;
            }
            for (k, v) in &self.extensions {
                e.u64(*k)?.bytes(v)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            unreachable!("CBOR encoding into a Vec failed: {e}");
        }
        let len = out.len() - start;
        if len > limits.max_len {
            out.truncate(start);
            return Err(MetaError::TooLong {
                len,
                max: limits.max_len,
            });
        }
        Ok(())
    }

    /// Encodes into a new vector.
    pub fn encode(&self, limits: &MetaLimits) -> Result<Vec<u8>, MetaError> {
        let mut v = Vec::new();
        self.encode_into(&mut v, limits)?;
        Ok(v)
    }

    fn check_limits(&self, l: &MetaLimits) -> Result<(), MetaError> {
        if self.headers.len() > l.max_headers {
            return Err(MetaError::TooManyHeaders {
                count: self.headers.len() as u64,
                max: l.max_headers,
            });
        }
        if self.extensions.len() > l.max_extensions {
            return Err(MetaError::TooManyExtensions {
                count: self.extensions.len() as u64,
                max: l.max_extensions,
            });
        }
        for (k, v) in &self.headers {
            check_len("header name", k.len(), l.max_header_name_len)?;
            check_len("header value", v.len(), l.max_header_value_len)?;
        }
        for (k, v) in &self.extensions {
            if *k < FIRST_EXTENSION_KEY {
                return Err(MetaError::UnknownKey { key: *k });
            }
            check_len("extension", v.len(), l.max_field_len)?;
        }
        if let Some(t) = &self.text {
            check_len("text", t.len(), l.max_field_len)?;
        }
        if let Some(b) = &self.e2e {
            check_len("e2e", b.len(), l.max_field_len)?;
        }
        if let Some(b) = &self.idempotency_key {
            check_len(
                "idempotency key",
                b.len(),
                IDEMPOTENCY_KEY_MAX.min(l.max_field_len),
            )?;
        }
        Ok(())
    }

    /// Decodes metadata bytes. An empty slice is empty metadata.
    pub fn decode(bytes: &[u8], limits: &MetaLimits) -> Result<Self, MetaError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        if bytes.len() > limits.max_len {
            return Err(MetaError::TooLong {
                len: bytes.len(),
                max: limits.max_len,
            });
        }
        let mut d = Decoder::new(bytes);
        let mut m = Metadata::default();
        let entries = definite_map(&mut d)?;
        // Every entry takes at least two bytes: a count beyond that is a lie, refused before
        // any per-entry work.
        let max_entries = KEY_DUPLICATE + limits.max_extensions as u64;
        if entries > max_entries {
            return Err(MetaError::TooManyExtensions {
                count: entries,
                max: limits.max_extensions,
            });
        }
        let mut seen: u16 = 0; // bit i: reserved key i seen
        for _ in 0..entries {
            let key = uint(&mut d, "uint key")?;
            if key < FIRST_EXTENSION_KEY {
                if !(KEY_CORR_ID..=KEY_DUPLICATE).contains(&key) {
                    return Err(MetaError::UnknownKey { key });
                }
                let bit = 1u16 << key;
                if seen & bit != 0 {
                    return Err(MetaError::DuplicateKey { key });
                }
                seen |= bit;
            }
            match key {
                KEY_CORR_ID => m.corr_id = Some(uint(&mut d, "uint corr_id")?),
                KEY_HEADERS => m.headers = headers(&mut d, limits)?,
                KEY_PARTITION => m.partition = Some(uint(&mut d, "uint partition")?),
                KEY_TOPOLOGY_EPOCH => m.topology_epoch = Some(uint(&mut d, "uint epoch")?),
                KEY_DEADLINE => m.deadline_unix_ms = Some(uint(&mut d, "uint deadline")?),
                KEY_MESSAGE_LEN => m.message_len = Some(uint(&mut d, "uint message_len")?),
                KEY_REASON => {
                    let pos = d.position();
                    let v = uint(&mut d, "uint reason")?;
                    m.reason = Some(u16::try_from(v).map_err(|_| MetaError::Malformed {
                        position: pos,
                        what: "reason code within u16",
                    })?);
                }
                KEY_ACK_SUCCESS => {
                    let pos = d.position();
                    m.ack_success = Some(d.bool().map_err(|_| MetaError::Malformed {
                        position: pos,
                        what: "bool ack_success",
                    })?);
                }
                KEY_TEXT => m.text = Some(text(&mut d, "text", limits.max_field_len)?),
                KEY_E2E => m.e2e = Some(byte_string(&mut d, "e2e", limits.max_field_len)?),
                KEY_STATUS => {
                    let pos = d.position();
                    let v = uint(&mut d, "uint status")?;
                    m.status = Some(u16::try_from(v).map_err(|_| MetaError::Malformed {
                        position: pos,
                        what: "status within u16",
                    })?);
                }
                KEY_CLIENT_SEQ => m.client_seq = Some(uint(&mut d, "uint client_seq")?),
                KEY_IDEMPOTENCY_KEY => {
                    m.idempotency_key = Some(byte_string(
                        &mut d,
                        "idempotency key",
                        IDEMPOTENCY_KEY_MAX.min(limits.max_field_len),
                    )?);
                }
                KEY_DUPLICATE => {
                    let pos = d.position();
                    m.duplicate = Some(d.bool().map_err(|_| MetaError::Malformed {
                        position: pos,
                        what: "bool duplicate",
                    })?);
                }
                ext => {
                    if m.extensions.len() >= limits.max_extensions {
                        return Err(MetaError::TooManyExtensions {
                            count: m.extensions.len() as u64 + 1,
                            max: limits.max_extensions,
                        });
                    }
                    if m.extensions.iter().any(|(k, _)| *k == ext) {
                        return Err(MetaError::DuplicateKey { key: ext });
                    }
                    let v = byte_string(&mut d, "extension", limits.max_field_len)?;
                    m.extensions.push((ext, v));
                }
            }
        }
        let rest = bytes.len() - d.position();
        if rest != 0 {
            return Err(MetaError::TrailingBytes { count: rest });
        }
        Ok(m)
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), MetaError> {
    if len > max {
        Err(MetaError::FieldTooLong {
            field,
            len: len as u64,
            max,
        })
    } else {
        Ok(())
    }
}

fn definite_map(d: &mut Decoder<'_>) -> Result<u64, MetaError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::Map) => d.map().ok().flatten().ok_or(MetaError::Malformed {
            position,
            what: "definite-length map",
        }),
        Ok(Type::MapIndef) => Err(MetaError::IndefiniteLength { position }),
        _ => Err(MetaError::Malformed {
            position,
            what: "definite-length map",
        }),
    }
}

fn uint(d: &mut Decoder<'_>, what: &'static str) -> Result<u64, MetaError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::U8 | Type::U16 | Type::U32 | Type::U64) => {
            d.u64().map_err(|_| MetaError::Malformed { position, what })
        }
        _ => Err(MetaError::Malformed { position, what }),
    }
}

fn text(d: &mut Decoder<'_>, field: &'static str, max: usize) -> Result<String, MetaError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::String) => {}
        Ok(Type::StringIndef) => return Err(MetaError::IndefiniteLength { position }),
        _ => {
            return Err(MetaError::Malformed {
                position,
                what: "text string",
            });
        }
    }
    // `str` borrows from the input: nothing is allocated until the length is checked.
    let s = d.str().map_err(|_| MetaError::Malformed {
        position,
        what: "valid UTF-8 text within the metadata",
    })?;
    check_len(field, s.len(), max)?;
    Ok(s.to_owned())
}

fn byte_string(d: &mut Decoder<'_>, field: &'static str, max: usize) -> Result<Vec<u8>, MetaError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::Bytes) => {}
        Ok(Type::BytesIndef) => return Err(MetaError::IndefiniteLength { position }),
        _ => {
            return Err(MetaError::Malformed {
                position,
                what: "byte string",
            });
        }
    }
    let b = d.bytes().map_err(|_| MetaError::Malformed {
        position,
        what: "byte string within the metadata",
    })?;
    check_len(field, b.len(), max)?;
    Ok(b.to_vec())
}

fn headers(d: &mut Decoder<'_>, l: &MetaLimits) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
    let count = definite_map(d)?;
    if count > l.max_headers as u64 {
        return Err(MetaError::TooManyHeaders {
            count,
            max: l.max_headers,
        });
    }
    // `count` is bounded by max_headers: this allocation is bounded too.
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        let k = text(d, "header name", l.max_header_name_len)?;
        let v = byte_string(d, "header value", l.max_header_value_len)?;
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Metadata {
        Metadata {
            corr_id: Some(17),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            partition: Some(3),
            topology_epoch: Some(99),
            deadline_unix_ms: Some(1_800_000_000_000),
            message_len: Some(5 << 20),
            reason: Some(13),
            ack_success: Some(false),
            text: Some("rejected by consumer".into()),
            e2e: Some(vec![1, 2, 3]),
            status: Some(2),
            client_seq: Some(77),
            idempotency_key: Some(b"order-42".to_vec()),
            duplicate: Some(true),
            extensions: vec![(300, vec![9, 9])],
        }
    }

    #[test]
    fn round_trip_every_field() {
        let l = MetaLimits::default();
        let m = full();
        let bytes = m.encode(&l).unwrap();
        assert_eq!(Metadata::decode(&bytes, &l).unwrap(), m);
    }

    #[test]
    fn empty_encodes_to_nothing() {
        let l = MetaLimits::default();
        assert!(Metadata::default().encode(&l).unwrap().is_empty());
        assert_eq!(Metadata::decode(&[], &l).unwrap(), Metadata::default());
    }

    #[test]
    fn exact_bytes_of_a_corr_id() {
        let m = Metadata {
            corr_id: Some(500),
            ..Metadata::default()
        };
        // map(1), key 1, uint16 500
        assert_eq!(
            m.encode(&MetaLimits::default()).unwrap(),
            vec![0xA1, 0x01, 0x19, 0x01, 0xF4]
        );
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let l = MetaLimits::default();
        // not a map
        assert!(matches!(
            Metadata::decode(&[0x01], &l),
            Err(MetaError::Malformed { position: 0, .. })
        ));
        // indefinite map
        assert_eq!(
            Metadata::decode(&[0xBF, 0xFF], &l),
            Err(MetaError::IndefiniteLength { position: 0 })
        );
        // unknown reserved key 15
        assert_eq!(
            Metadata::decode(&[0xA1, 0x0F, 0x00], &l),
            Err(MetaError::UnknownKey { key: 15 })
        );
        // an idempotency key over 128 bytes
        let mut long = vec![0xA1, 0x0D, 0x58, 129];
        long.extend_from_slice(&[b'k'; 129]);
        assert!(matches!(
            Metadata::decode(&long, &l),
            Err(MetaError::FieldTooLong { .. })
        ));
        // duplicate key 3
        assert_eq!(
            Metadata::decode(&[0xA2, 0x03, 0x00, 0x03, 0x01], &l),
            Err(MetaError::DuplicateKey { key: 3 })
        );
        // trailing byte
        assert_eq!(
            Metadata::decode(&[0xA1, 0x03, 0x00, 0x00], &l),
            Err(MetaError::TrailingBytes { count: 1 })
        );
        // a map claiming 2^32 entries is refused before any work
        assert!(matches!(
            Metadata::decode(&[0xBA, 0xFF, 0xFF, 0xFF, 0xFF], &l),
            Err(MetaError::TooManyExtensions { .. })
        ));
        // a text claiming 4 GiB in a 10-byte input
        assert!(matches!(
            Metadata::decode(&[0xA1, 0x09, 0x7A, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0], &l),
            Err(MetaError::FieldTooLong { .. } | MetaError::Malformed { .. })
        ));
        // reason over u16
        assert!(matches!(
            Metadata::decode(&[0xA1, 0x07, 0x1A, 0x00, 0x01, 0x00, 0x00], &l),
            Err(MetaError::Malformed { .. })
        ));
    }

    #[test]
    fn limits_are_enforced_on_encode_and_decode() {
        let tight = MetaLimits {
            max_headers: 1,
            ..MetaLimits::default()
        };
        let m = Metadata {
            headers: vec![("a".into(), vec![]), ("b".into(), vec![])],
            ..Metadata::default()
        };
        assert_eq!(
            m.encode(&tight),
            Err(MetaError::TooManyHeaders { count: 2, max: 1 })
        );
        let bytes = m.encode(&MetaLimits::default()).unwrap();
        assert_eq!(
            Metadata::decode(&bytes, &tight),
            Err(MetaError::TooManyHeaders { count: 2, max: 1 })
        );
        let short = MetaLimits {
            max_len: 4,
            ..MetaLimits::default()
        };
        assert!(matches!(
            full().encode(&short),
            Err(MetaError::TooLong { max: 4, .. })
        ));
    }
}
