//! The HELLO body: what each side announces when a session opens.
//!
//! A HELLO frame (`FrameKind::Hello`, no metadata, TTL 1) carries as its payload one
//! definite-length CBOR map with unsigned-integer keys:
//!
//! | key | field | CBOR type | constraint |
//! |---|---|---|---|
//! | 1 | version_min | uint | 1 ≤ version_min ≤ version_max ≤ 65535 |
//! | 2 | version_max | uint | |
//! | 3 | node_id | uint | non-zero |
//! | 4 | domain_id | uint | ≤ u32::MAX |
//! | 5 | role | uint | 0 = node, 1 = client |
//! | 6 | capabilities | uint | u64 bitset, see [`Capabilities`]; unknown bits allowed |
//! | 7 | max_frame_len | uint | 4,144 ..= 16 MiB |
//! | 8 | max_meta_len | uint | ≤ min(65,535, max_frame_len − 1,072) |
//! | 9 | keepalive_interval_ms | uint | 100 ..= 600,000 |
//! | 10 | nonce | bytes | exactly 32 bytes from the sender's CSPRNG |
//! | 11 | signature | bytes | optional; 1 ..= 8,192 bytes; if present, the **last** entry |
//!
//! Keys 1–10 are required, each at most once. Any other key is an unknown field of a newer
//! protocol version: it is skipped (its value must be a uint, bool, or a definite byte or text
//! string of at most 1 KiB; at most 16 such fields) so that a newer peer can still negotiate
//! down. Indefinite-length items and trailing bytes are refused; the whole body is at most
//! [`MAX_HELLO_LEN`] bytes, and every length is checked before anything is allocated.
//!
//! **What the signature covers.** The *signed fields* are the exact bytes of the map's entries
//! before the signature entry (everything after the map header, up to the signature's key).
//! A verifier takes those bytes as received, never a re-encoding, so unknown fields of a newer
//! version are covered too. The transcript built from them is defined in [`crate::auth`].

use mesh_wire::{Limits, LimitsError};
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// The session protocol version this build speaks. Independent of the frame header's wire
/// version: the framing stays at 1 while session semantics (HELLO fields, RESUME) may evolve.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest HELLO body accepted or produced, in bytes (a frame of 16 KiB minus its header).
pub const MAX_HELLO_LEN: usize = 16 * 1024 - mesh_wire::HEADER_LEN;
/// Largest signature accepted or produced (an ML-DSA-65 signature is 3,309 bytes).
pub const MAX_SIGNATURE_LEN: usize = 8 * 1024;
/// Length of the HELLO nonce.
pub const NONCE_LEN: usize = 32;
/// Most unknown fields a HELLO may carry.
pub const MAX_UNKNOWN_FIELDS: usize = 16;
/// Longest value of an unknown field.
pub const MAX_UNKNOWN_FIELD_LEN: usize = 1024;
/// Smallest keepalive interval a node may announce.
pub const MIN_KEEPALIVE_INTERVAL_MS: u32 = 100;
/// Largest keepalive interval a node may announce (10 minutes).
pub const MAX_KEEPALIVE_INTERVAL_MS: u32 = 600_000;

const KEY_VERSION_MIN: u64 = 1;
const KEY_VERSION_MAX: u64 = 2;
const KEY_NODE_ID: u64 = 3;
const KEY_DOMAIN_ID: u64 = 4;
const KEY_ROLE: u64 = 5;
const KEY_CAPABILITIES: u64 = 6;
const KEY_MAX_FRAME_LEN: u64 = 7;
const KEY_MAX_META_LEN: u64 = 8;
const KEY_KEEPALIVE: u64 = 9;
const KEY_NONCE: u64 = 10;
const KEY_SIGNATURE: u64 = 11;
/// Number of required fields (keys 1–10).
const REQUIRED_FIELDS: u64 = 10;
/// Most map entries: required fields, unknown fields, signature.
const MAX_ENTRIES: u64 = REQUIRED_FIELDS + MAX_UNKNOWN_FIELDS as u64 + 1;

/// Why a HELLO body is refused. Every variant names the limit and the value that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The body is longer than [`MAX_HELLO_LEN`].
    #[error("HELLO of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Body length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not well-formed CBOR of the expected shape.
    #[error("malformed HELLO at byte {position}: expected {what}")]
    Malformed {
        /// Byte offset in the body.
        position: usize,
        /// What was expected there.
        what: &'static str,
    },
    /// An indefinite-length item (its size is not known before allocating).
    #[error("indefinite-length CBOR item at byte {position} of the HELLO")]
    IndefiniteLength {
        /// Byte offset.
        position: usize,
    },
    /// The map announces more entries than a HELLO may have.
    #[error("HELLO map of {count} entries exceeds the limit of {max}")]
    TooManyEntries {
        /// Entries announced.
        count: u64,
        /// Limit.
        max: u64,
    },
    /// More unknown fields than [`MAX_UNKNOWN_FIELDS`].
    #[error("HELLO carries more than {max} unknown fields")]
    TooManyUnknownFields {
        /// Limit.
        max: usize,
    },
    /// A key appears twice.
    #[error("duplicate HELLO key {key}")]
    DuplicateKey {
        /// The key.
        key: u64,
    },
    /// A required field is absent.
    #[error("HELLO lacks required field {field} (key {key})")]
    MissingField {
        /// Field name.
        field: &'static str,
        /// Its key.
        key: u64,
    },
    /// A byte or text field is longer than allowed.
    #[error("HELLO field {field} of {len} bytes exceeds the limit of {max}")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// An integer field is outside its range.
    #[error("HELLO field {field} = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// `version_min > version_max`.
    #[error("HELLO version range {min}..={max} is empty")]
    EmptyVersionRange {
        /// version_min.
        min: u16,
        /// version_max.
        max: u16,
    },
    /// The nonce is not [`NONCE_LEN`] bytes.
    #[error("HELLO nonce of {len} bytes, expected {expected}")]
    NonceLength {
        /// Length found.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A signature entry is present but empty (absent is the way to send none).
    #[error("HELLO carries an empty signature")]
    EmptySignature,
    /// The signature entry is not the last entry of the map.
    #[error("HELLO signature at entry {index} of {entries}; it must be the last")]
    SignatureNotLast {
        /// Its index.
        index: u64,
        /// Entries in the map.
        entries: u64,
    },
    /// The frame and metadata lengths do not form valid [`Limits`].
    #[error("HELLO limits: {0}")]
    Limits(#[from] LimitsError),
    /// Bytes remain after the map.
    #[error("{count} trailing bytes after the HELLO map")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A non-empty range of session protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: u16,
    max: u16,
}

impl VersionRange {
    /// The versions this build speaks: exactly [`PROTOCOL_VERSION`].
    pub const CURRENT: VersionRange = VersionRange {
        min: PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// The range `min..=max`; refused when empty or when it includes the invalid version 0.
    pub fn new(min: u16, max: u16) -> Result<Self, HelloError> {
        if min == 0 {
            return Err(HelloError::OutOfRange {
                field: "version_min",
                value: 0,
                min: 1,
                max: u64::from(u16::MAX),
            });
        }
        if min > max {
            return Err(HelloError::EmptyVersionRange { min, max });
        }
        Ok(Self { min, max })
    }

    /// Lowest version.
    pub fn min(self) -> u16 {
        self.min
    }

    /// Highest version.
    pub fn max(self) -> u16 {
        self.max
    }

    /// The highest version both ranges contain, if any. Symmetric, so both ends agree.
    pub fn negotiate(self, peer: VersionRange) -> Option<u16> {
        let hi = self.max.min(peer.max);
        (hi >= self.min.max(peer.min)).then_some(hi)
    }
}

impl Default for VersionRange {
    fn default() -> Self {
        Self::CURRENT
    }
}

/// What kind of party a session's end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A mesh node: forwards, floods link state, stores.
    Node,
    /// A local application attached over the wire protocol instead of gRPC. It sends and
    /// receives for its own node id and forwards nothing.
    Client,
}

impl Role {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Role::Node => 0,
            Role::Client => 1,
        }
    }

    /// Decodes a wire value.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(Role::Node),
            1 => Some(Role::Client),
            _ => None,
        }
    }
}

/// Optional protocol features, as a bitset. A session uses the intersection of both sides'
/// sets; bits this build does not know are carried and intersected like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u64);

impl Capabilities {
    /// No capability.
    pub const EMPTY: Capabilities = Capabilities(0);
    /// Sends and reassembles chunked messages (CHUNK / LAST_CHUNK).
    pub const CHUNKING: Capabilities = Capabilities(1 << 0);
    /// Forwards and terminates end-to-end encrypted payloads (flag E2E_ENC).
    pub const E2E_ENC: Capabilities = Capabilities(1 << 1);
    /// Accepts compressed payloads (flag COMPRESSED).
    pub const COMPRESSION: Capabilities = Capabilities(1 << 2);
    /// Understands RESUME after a reconnect.
    pub const RESUME: Capabilities = Capabilities(1 << 3);
    /// Uses CREDIT frames for per-session flow control.
    pub const CREDIT: Capabilities = Capabilities(1 << 4);
    /// A client asks its node for the messages addressed to the node (a native subscriber);
    /// a node offers it when it delivers to native clients.
    pub const SUBSCRIBE: Capabilities = Capabilities(1 << 5);

    /// A set from raw bits (every bit pattern is valid).
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether every capability of `other` is in `self`.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capabilities in both sets: what a session may use.
    #[must_use]
    pub fn intersection(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        Capabilities(self.0 | rhs.0)
    }
}

/// The fields a node announces in its HELLO (the signature travels beside them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Session protocol versions the sender speaks.
    pub versions: VersionRange,
    /// The sender's node id (non-zero).
    pub node_id: u64,
    /// The sender's domain.
    pub domain_id: u32,
    /// Node or client.
    pub role: Role,
    /// Features the sender offers.
    pub capabilities: Capabilities,
    /// Largest frame and metadata the sender accepts.
    pub limits: Limits,
    /// How often the sender wants a sign of life when the session is idle, in milliseconds.
    pub keepalive_interval_ms: u32,
    /// 32 fresh random bytes: makes every HELLO, and so every signed transcript, unique.
    pub nonce: [u8; NONCE_LEN],
}

/// A HELLO as received: its fields, its signature (empty when absent) and the exact bytes the
/// signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedHello {
    /// The validated fields.
    pub hello: Hello,
    /// The signature, empty when the sender sent none.
    pub signature: Vec<u8>,
    signed_fields: Vec<u8>,
}

impl DecodedHello {
    /// The signed fields as received (see the module docs): the `hello_fields` of a
    /// [`crate::Transcript`].
    pub fn signed_fields(&self) -> &[u8] {
        &self.signed_fields
    }
}

type EncodeResult = Result<(), minicbor::encode::Error<core::convert::Infallible>>;

impl Hello {
    /// Checks the invariants the wire format guarantees (non-zero node id, valid limits,
    /// keepalive interval within bounds). [`Hello::decode`] only returns valid values.
    pub fn validate(&self) -> Result<(), HelloError> {
        if self.node_id == 0 {
            return Err(out_of_range("node_id", 0, 1, u64::MAX));
        }
        Limits::new(self.limits.max_frame_len, self.limits.max_meta_len)?;
        check_keepalive(self.keepalive_interval_ms)?;
        Ok(())
    }

    /// The signed fields: the CBOR encoding of entries 1–10, without the map header. These
    /// are the bytes [`Hello::encode`] puts between the map header and the signature.
    pub fn signed_fields(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let r = self.write_fields(&mut Encoder::new(&mut out));
        debug_assert!(r.is_ok(), "CBOR encoding into a Vec cannot fail");
        out
    }

    fn write_fields(&self, e: &mut Encoder<&mut Vec<u8>>) -> EncodeResult {
        e.u64(KEY_VERSION_MIN)?.u16(self.versions.min)?;
        e.u64(KEY_VERSION_MAX)?.u16(self.versions.max)?;
        e.u64(KEY_NODE_ID)?.u64(self.node_id)?;
        e.u64(KEY_DOMAIN_ID)?.u32(self.domain_id)?;
        e.u64(KEY_ROLE)?.u8(self.role.code())?;
        e.u64(KEY_CAPABILITIES)?.u64(self.capabilities.bits())?;
        e.u64(KEY_MAX_FRAME_LEN)?.u32(self.limits.max_frame_len)?;
        e.u64(KEY_MAX_META_LEN)?.u32(self.limits.max_meta_len)?;
        e.u64(KEY_KEEPALIVE)?.u32(self.keepalive_interval_ms)?;
        e.u64(KEY_NONCE)?.bytes(&self.nonce)?;
        Ok(())
    }

    /// Encodes the HELLO body with `signature` (empty: no signature entry).
    ///
    /// Errors: the fields are invalid ([`Hello::validate`]), or the signature is longer than
    /// [`MAX_SIGNATURE_LEN`].
    pub fn encode(&self, signature: &[u8]) -> Result<Vec<u8>, HelloError> {
        self.validate()?;
        check_len("signature", signature.len(), MAX_SIGNATURE_LEN)?;
        let mut out = Vec::with_capacity(160 + signature.len());
        let mut e = Encoder::new(&mut out);
        let entries = if signature.is_empty() {
            REQUIRED_FIELDS
        } else {
            REQUIRED_FIELDS + 1
        };
        let r: EncodeResult = (|| {
            e.map(entries)?;
            self.write_fields(&mut e)?;
            if !signature.is_empty() {
                e.u64(KEY_SIGNATURE)?.bytes(signature)?;
            }
            Ok(())
        })();
        debug_assert!(r.is_ok(), "CBOR encoding into a Vec cannot fail");
        // Fields are bounded (< 200 bytes) and the signature by MAX_SIGNATURE_LEN.
        debug_assert!(out.len() <= MAX_HELLO_LEN);
        Ok(out)
    }

    /// Decodes and validates a HELLO body. Never panics; allocates only after the length of
    /// what it allocates for has been checked.
    pub fn decode(bytes: &[u8]) -> Result<DecodedHello, HelloError> {
        if bytes.len() > MAX_HELLO_LEN {
            return Err(HelloError::TooLong {
                len: bytes.len(),
                max: MAX_HELLO_LEN,
            });
        }
        let mut d = Decoder::new(bytes);
        let entries = definite_map(&mut d)?;
        if entries > MAX_ENTRIES {
            return Err(HelloError::TooManyEntries {
                count: entries,
                max: MAX_ENTRIES,
            });
        }
        let fields_start = d.position();
        let mut fields_end = None;
        let mut f = Fields::default();
        let mut seen: u16 = 0; // bit k: key k (1..=11) seen
        let mut unknown_keys = [0u64; MAX_UNKNOWN_FIELDS];
        let mut unknown = 0usize;
        for index in 0..entries {
            let key_position = d.position();
            let key = uint(&mut d, "uint key")?;
            if (KEY_VERSION_MIN..=KEY_SIGNATURE).contains(&key) {
                let bit = 1u16 << key;
                if seen & bit != 0 {
                    return Err(HelloError::DuplicateKey { key });
                }
                seen |= bit;
            }
            match key {
                KEY_VERSION_MIN => f.version_min = Some(bounded(&mut d, "version_min", 1, 0xFFFF)?),
                KEY_VERSION_MAX => f.version_max = Some(bounded(&mut d, "version_max", 1, 0xFFFF)?),
                KEY_NODE_ID => f.node_id = Some(bounded(&mut d, "node_id", 1, u64::MAX)?),
                KEY_DOMAIN_ID => {
                    f.domain_id = Some(bounded(&mut d, "domain_id", 0, u64::from(u32::MAX))?);
                }
                KEY_ROLE => {
                    let v = bounded(&mut d, "role", 0, 1)?;
                    f.role = Role::from_code(v);
                }
                KEY_CAPABILITIES => f.capabilities = Some(uint(&mut d, "uint capabilities")?),
                KEY_MAX_FRAME_LEN => {
                    f.max_frame_len =
                        Some(bounded(&mut d, "max_frame_len", 0, u64::from(u32::MAX))?);
                }
                KEY_MAX_META_LEN => {
                    f.max_meta_len = Some(bounded(&mut d, "max_meta_len", 0, u64::from(u32::MAX))?);
                }
                KEY_KEEPALIVE => {
                    f.keepalive_interval_ms = Some(bounded(
                        &mut d,
                        "keepalive_interval_ms",
                        u64::from(MIN_KEEPALIVE_INTERVAL_MS),
                        u64::from(MAX_KEEPALIVE_INTERVAL_MS),
                    )?);
                }
                KEY_NONCE => {
                    let n = byte_string(&mut d, "nonce", NONCE_LEN)?;
                    let nonce: [u8; NONCE_LEN] =
                        n.try_into().map_err(|_| HelloError::NonceLength {
                            len: n.len(),
                            expected: NONCE_LEN,
                        })?;
                    f.nonce = Some(nonce);
                }
                KEY_SIGNATURE => {
                    if index + 1 != entries {
                        return Err(HelloError::SignatureNotLast { index, entries });
                    }
                    let s = byte_string(&mut d, "signature", MAX_SIGNATURE_LEN)?;
                    if s.is_empty() {
                        return Err(HelloError::EmptySignature);
                    }
                    fields_end = Some(key_position);
                    f.signature = s.to_vec();
                }
                other => {
                    if unknown_keys[..unknown].contains(&other) {
                        return Err(HelloError::DuplicateKey { key: other });
                    }
                    if unknown == MAX_UNKNOWN_FIELDS {
                        return Err(HelloError::TooManyUnknownFields {
                            max: MAX_UNKNOWN_FIELDS,
                        });
                    }
                    unknown_keys[unknown] = other;
                    unknown += 1;
                    skip_unknown(&mut d)?;
                }
            }
        }
        let end = d.position();
        if end != bytes.len() {
            return Err(HelloError::TrailingBytes {
                count: bytes.len() - end,
            });
        }
        let fields_end = fields_end.unwrap_or(end);
        let hello = f.finish()?;
        Ok(DecodedHello {
            hello,
            signature: f.signature,
            signed_fields: bytes[fields_start..fields_end].to_vec(),
        })
    }
}

/// Fields as they are collected, before the required ones are known to be present.
#[derive(Default)]
struct Fields {
    version_min: Option<u64>,
    version_max: Option<u64>,
    node_id: Option<u64>,
    domain_id: Option<u64>,
    role: Option<Role>,
    capabilities: Option<u64>,
    max_frame_len: Option<u64>,
    max_meta_len: Option<u64>,
    keepalive_interval_ms: Option<u64>,
    nonce: Option<[u8; NONCE_LEN]>,
    signature: Vec<u8>,
}

impl Fields {
    fn finish(&self) -> Result<Hello, HelloError> {
        fn req<T: Copy>(v: Option<T>, field: &'static str, key: u64) -> Result<T, HelloError> {
            v.ok_or(HelloError::MissingField { field, key })
        }
        // The bounded() reads above guarantee every narrowing below; `map_err` keeps the
        // code panic-free regardless.
        let narrow = |field: &'static str, v: u64, max: u64| out_of_range(field, v, 0, max);
        let vmin = req(self.version_min, "version_min", KEY_VERSION_MIN)?;
        let vmax = req(self.version_max, "version_max", KEY_VERSION_MAX)?;
        let versions = VersionRange::new(
            u16::try_from(vmin).map_err(|_| narrow("version_min", vmin, 0xFFFF))?,
            u16::try_from(vmax).map_err(|_| narrow("version_max", vmax, 0xFFFF))?,
        )?;
        let domain_id = req(self.domain_id, "domain_id", KEY_DOMAIN_ID)?;
        let frame = req(self.max_frame_len, "max_frame_len", KEY_MAX_FRAME_LEN)?;
        let meta = req(self.max_meta_len, "max_meta_len", KEY_MAX_META_LEN)?;
        let keepalive = req(
            self.keepalive_interval_ms,
            "keepalive_interval_ms",
            KEY_KEEPALIVE,
        )?;
        let u32_max = u64::from(u32::MAX);
        let hello = Hello {
            versions,
            node_id: req(self.node_id, "node_id", KEY_NODE_ID)?,
            domain_id: u32::try_from(domain_id)
                .map_err(|_| narrow("domain_id", domain_id, u32_max))?,
            role: req(self.role, "role", KEY_ROLE)?,
            capabilities: Capabilities(req(self.capabilities, "capabilities", KEY_CAPABILITIES)?),
            limits: Limits::new(
                u32::try_from(frame).map_err(|_| narrow("max_frame_len", frame, u32_max))?,
                u32::try_from(meta).map_err(|_| narrow("max_meta_len", meta, u32_max))?,
            )?,
            keepalive_interval_ms: u32::try_from(keepalive)
                .map_err(|_| narrow("keepalive_interval_ms", keepalive, u32_max))?,
            nonce: req(self.nonce, "nonce", KEY_NONCE)?,
        };
        Ok(hello)
    }
}

fn out_of_range(field: &'static str, value: u64, min: u64, max: u64) -> HelloError {
    HelloError::OutOfRange {
        field,
        value,
        min,
        max,
    }
}

fn check_keepalive(ms: u32) -> Result<(), HelloError> {
    if (MIN_KEEPALIVE_INTERVAL_MS..=MAX_KEEPALIVE_INTERVAL_MS).contains(&ms) {
        Ok(())
    } else {
        Err(out_of_range(
            "keepalive_interval_ms",
            u64::from(ms),
            u64::from(MIN_KEEPALIVE_INTERVAL_MS),
            u64::from(MAX_KEEPALIVE_INTERVAL_MS),
        ))
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), HelloError> {
    if len > max {
        Err(HelloError::FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

fn definite_map(d: &mut Decoder<'_>) -> Result<u64, HelloError> {
    let position = d.position();
    let what = "definite-length map";
    match d.datatype() {
        Ok(Type::Map) => d
            .map()
            .ok()
            .flatten()
            .ok_or(HelloError::Malformed { position, what }),
        Ok(Type::MapIndef) => Err(HelloError::IndefiniteLength { position }),
        _ => Err(HelloError::Malformed { position, what }),
    }
}

fn uint(d: &mut Decoder<'_>, what: &'static str) -> Result<u64, HelloError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::U8 | Type::U16 | Type::U32 | Type::U64) => d
            .u64()
            .map_err(|_| HelloError::Malformed { position, what }),
        _ => Err(HelloError::Malformed { position, what }),
    }
}

fn bounded(
    d: &mut Decoder<'_>,
    field: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, HelloError> {
    let v = uint(d, field)?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(out_of_range(field, v, min, max))
    }
}

/// A definite byte string, its length checked against `max` before the caller copies it
/// (minicbor borrows from the input, so nothing is allocated here).
fn byte_string<'b>(
    d: &mut Decoder<'b>,
    field: &'static str,
    max: usize,
) -> Result<&'b [u8], HelloError> {
    let position = d.position();
    match d.datatype() {
        Ok(Type::Bytes) => {}
        Ok(Type::BytesIndef) => return Err(HelloError::IndefiniteLength { position }),
        _ => {
            return Err(HelloError::Malformed {
                position,
                what: "byte string",
            });
        }
    }
    let b = d.bytes().map_err(|_| HelloError::Malformed {
        position,
        what: "byte string within the HELLO",
    })?;
    check_len(field, b.len(), max)?;
    Ok(b)
}

/// Skips the value of an unknown field: a uint, a bool, or a definite byte or text string of
/// at most [`MAX_UNKNOWN_FIELD_LEN`] bytes. Nested items are refused, so skipping is O(1)
/// work per field and cannot recurse.
fn skip_unknown(d: &mut Decoder<'_>) -> Result<(), HelloError> {
    let position = d.position();
    let malformed = HelloError::Malformed {
        position,
        what: "uint, bool, byte or text string as unknown field value",
    };
    match d.datatype() {
        Ok(Type::U8 | Type::U16 | Type::U32 | Type::U64) => {
            d.u64().map(drop).map_err(|_| malformed)
        }
        Ok(Type::Bool) => d.bool().map(drop).map_err(|_| malformed),
        Ok(Type::Bytes) => {
            let b = d.bytes().map_err(|_| malformed)?;
            check_len("unknown field", b.len(), MAX_UNKNOWN_FIELD_LEN)
        }
        Ok(Type::String) => {
            let s = d.str().map_err(|_| malformed)?;
            check_len("unknown field", s.len(), MAX_UNKNOWN_FIELD_LEN)
        }
        Ok(Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef) => {
            Err(HelloError::IndefiniteLength { position })
        }
        _ => Err(malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Hello {
        Hello {
            versions: VersionRange::CURRENT,
            node_id: 0x0102_0304_0506_0708,
            domain_id: 7,
            role: Role::Node,
            capabilities: Capabilities::CHUNKING | Capabilities::RESUME,
            limits: Limits::default(),
            keepalive_interval_ms: 5_000,
            nonce: [0xAB; NONCE_LEN],
        }
    }

    #[test]
    fn round_trip_with_and_without_signature() {
        let h = sample();
        let plain = h.encode(&[]).unwrap();
        let d = Hello::decode(&plain).unwrap();
        assert_eq!(d.hello, h);
        assert!(d.signature.is_empty());
        assert_eq!(d.signed_fields(), &h.signed_fields()[..]);
        assert_eq!(&plain[1..], d.signed_fields());

        let sig = vec![0x5A; 3309];
        let signed = h.encode(&sig).unwrap();
        let d = Hello::decode(&signed).unwrap();
        assert_eq!(d.hello, h);
        assert_eq!(d.signature, sig);
        assert_eq!(d.signed_fields(), &h.signed_fields()[..]);
        // A signed HELLO with an ML-DSA-65 signature fits a minimum-size frame.
        assert!(signed.len() + mesh_wire::HEADER_LEN <= mesh_wire::limits::MIN_FRAME_LEN as usize);
    }

    #[test]
    fn exact_prefix_bytes() {
        let b = sample().encode(&[]).unwrap();
        // map(10), key 1, uint 1, key 2, uint 1, key 3, uint64 0x0102030405060708
        assert_eq!(
            &b[..14],
            &[
                0xAA, 0x01, 0x01, 0x02, 0x01, 0x03, 0x1B, 1, 2, 3, 4, 5, 6, 7
            ]
        );
    }

    /// Builds a map from raw entries (each a pre-encoded key + value).
    fn map(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(&mut out).map(entries.len() as u64).unwrap();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    fn entry_uint(key: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(&mut out).u64(key).unwrap().u64(v).unwrap();
        out
    }

    fn entry_bytes(key: u64, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(&mut out).u64(key).unwrap().bytes(v).unwrap();
        out
    }

    fn valid_entries() -> Vec<Vec<u8>> {
        vec![
            entry_uint(1, 1),
            entry_uint(2, 1),
            entry_uint(3, 9),
            entry_uint(4, 0),
            entry_uint(5, 1),
            entry_uint(6, 0),
            entry_uint(7, u64::from(mesh_wire::DEFAULT_MAX_FRAME_LEN)),
            entry_uint(8, 1024),
            entry_uint(9, 1000),
            entry_bytes(10, &[1; 32]),
        ]
    }

    #[test]
    fn hand_built_map_decodes() {
        let d = Hello::decode(&map(&valid_entries())).unwrap();
        assert_eq!(d.hello.node_id, 9);
        assert_eq!(d.hello.role, Role::Client);
        assert_eq!(d.hello.keepalive_interval_ms, 1000);
    }

    #[test]
    fn unknown_fields_are_skipped_and_signed() {
        let mut e = valid_entries();
        e.push(entry_bytes(300, b"future"));
        e.push(entry_uint(12, 5));
        e.push(entry_bytes(11, &[7; 100]));
        let bytes = map(&e);
        let d = Hello::decode(&bytes).unwrap();
        assert_eq!(d.signature, vec![7; 100]);
        let unknown_len = e[10].len() + e[11].len();
        let fields: usize = e[..10].iter().map(Vec::len).sum::<usize>() + unknown_len;
        assert_eq!(d.signed_fields(), &bytes[1..=fields]);
    }

    #[test]
    fn refusals_are_typed() {
        let base = valid_entries();
        let with = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
            let mut e = base.clone();
            f(&mut e);
            Hello::decode(&map(&e)).unwrap_err()
        };
        assert_eq!(
            with(&|e| {
                e.remove(2);
            }),
            HelloError::MissingField {
                field: "node_id",
                key: 3
            }
        );
        assert_eq!(
            with(&|e| e[2] = entry_uint(3, 0)),
            out_of_range("node_id", 0, 1, u64::MAX)
        );
        assert_eq!(
            with(&|e| e.push(entry_uint(3, 5))),
            HelloError::DuplicateKey { key: 3 }
        );
        assert_eq!(
            with(&|e| e[4] = entry_uint(5, 2)),
            out_of_range("role", 2, 0, 1)
        );
        assert_eq!(
            with(&|e| e[9] = entry_bytes(10, &[0; 31])),
            HelloError::NonceLength {
                len: 31,
                expected: 32
            }
        );
        assert_eq!(
            with(&|e| e[9] = entry_bytes(10, &[0; 33])),
            HelloError::FieldTooLong {
                field: "nonce",
                len: 33,
                max: 32
            }
        );
        assert_eq!(
            with(&|e| e[0] = entry_uint(1, 3)),
            HelloError::EmptyVersionRange { min: 3, max: 1 }
        );
        assert_eq!(
            with(&|e| e[8] = entry_uint(9, 10)),
            out_of_range("keepalive_interval_ms", 10, 100, 600_000)
        );
        assert!(matches!(
            with(&|e| e[6] = entry_uint(7, 100)),
            HelloError::Limits(LimitsError::FrameLenOutOfRange { value: 100, .. })
        ));
        assert_eq!(
            with(&|e| e.insert(0, entry_bytes(11, &[1; 10]))),
            HelloError::SignatureNotLast {
                index: 0,
                entries: 11
            }
        );
        assert_eq!(
            with(&|e| e.push(entry_bytes(11, &[]))),
            HelloError::EmptySignature
        );
        assert_eq!(
            with(&|e| e.push(entry_bytes(11, &vec![0; MAX_SIGNATURE_LEN + 1]))),
            HelloError::FieldTooLong {
                field: "signature",
                len: MAX_SIGNATURE_LEN + 1,
                max: MAX_SIGNATURE_LEN
            }
        );
        assert_eq!(
            with(&|e| e.push(entry_bytes(99, &[0; MAX_UNKNOWN_FIELD_LEN + 1]))),
            HelloError::FieldTooLong {
                field: "unknown field",
                len: MAX_UNKNOWN_FIELD_LEN + 1,
                max: MAX_UNKNOWN_FIELD_LEN
            }
        );
        assert_eq!(
            with(&|e| {
                for k in 0..=MAX_UNKNOWN_FIELDS as u64 {
                    e.push(entry_uint(100 + k, 0));
                }
            }),
            HelloError::TooManyUnknownFields {
                max: MAX_UNKNOWN_FIELDS
            }
        );
    }

    #[test]
    fn structural_refusals() {
        assert!(matches!(
            Hello::decode(&[]),
            Err(HelloError::Malformed { position: 0, .. })
        ));
        assert_eq!(
            Hello::decode(&[0xBF, 0xFF]),
            Err(HelloError::IndefiniteLength { position: 0 })
        );
        // A map claiming 2^32 entries is refused before any per-entry work.
        assert_eq!(
            Hello::decode(&[0xBA, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(HelloError::TooManyEntries {
                count: u64::from(u32::MAX),
                max: MAX_ENTRIES
            })
        );
        // A nonce claiming 4 GiB in a short input.
        assert!(matches!(
            Hello::decode(&[0xA1, 0x0A, 0x5A, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
            Err(HelloError::Malformed { .. })
        ));
        let mut b = sample().encode(&[]).unwrap();
        b.push(0);
        assert_eq!(
            Hello::decode(&b),
            Err(HelloError::TrailingBytes { count: 1 })
        );
        let big = vec![0u8; MAX_HELLO_LEN + 1];
        assert_eq!(
            Hello::decode(&big),
            Err(HelloError::TooLong {
                len: MAX_HELLO_LEN + 1,
                max: MAX_HELLO_LEN
            })
        );
        // Nested unknown values are refused.
        let mut e = valid_entries();
        e.push(vec![0x18, 0x20, 0x81, 0x00]); // key 32: [0]
        assert!(matches!(
            Hello::decode(&map(&e)),
            Err(HelloError::Malformed { .. })
        ));
    }

    #[test]
    fn encode_refuses_invalid_fields() {
        let mut h = sample();
        assert!(matches!(
            h.encode(&vec![0; MAX_SIGNATURE_LEN + 1]),
            Err(HelloError::FieldTooLong { .. })
        ));
        h.node_id = 0;
        assert!(h.encode(&[]).is_err());
        let mut h = sample();
        h.keepalive_interval_ms = 0;
        assert!(h.encode(&[]).is_err());
    }

    #[test]
    fn version_negotiation_picks_the_highest_common() {
        let a = VersionRange::new(1, 3).unwrap();
        let b = VersionRange::new(2, 5).unwrap();
        assert_eq!(a.negotiate(b), Some(3));
        assert_eq!(b.negotiate(a), Some(3));
        let c = VersionRange::new(4, 4).unwrap();
        assert_eq!(a.negotiate(c), None);
        assert_eq!(c.negotiate(a), None);
        assert!(VersionRange::new(0, 1).is_err());
        assert_eq!(
            VersionRange::new(2, 1),
            Err(HelloError::EmptyVersionRange { min: 2, max: 1 })
        );
    }

    #[test]
    fn capabilities_intersect() {
        let a = Capabilities::CHUNKING | Capabilities::E2E_ENC | Capabilities::from_bits(1 << 40);
        let b = Capabilities::CHUNKING | Capabilities::from_bits(1 << 40);
        let i = a.intersection(b);
        assert!(i.contains(Capabilities::CHUNKING));
        assert!(!i.contains(Capabilities::E2E_ENC));
        assert_eq!(i.bits(), 1 | (1 << 40));
    }

    fn arb_hello() -> impl Strategy<Value = Hello> {
        (
            (1u16..=u16::MAX, any::<u16>()),
            1u64..,
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
            mesh_wire::limits::MIN_FRAME_LEN..=mesh_wire::MAX_FRAME_LEN_HARD_CAP,
            0u32..=u32::from(u16::MAX),
            MIN_KEEPALIVE_INTERVAL_MS..=MAX_KEEPALIVE_INTERVAL_MS,
            any::<[u8; 32]>(),
        )
            .prop_map(
                |((lo, span), node_id, domain_id, client, caps, frame, meta, ka, nonce)| {
                    let hi = lo.saturating_add(span % 8);
                    let meta_cap = u32::from(u16::MAX).min(frame - 48 - 1024);
                    Hello {
                        versions: VersionRange::new(lo, hi).unwrap(),
                        node_id,
                        domain_id,
                        role: if client { Role::Client } else { Role::Node },
                        capabilities: Capabilities::from_bits(caps),
                        limits: Limits::new(frame, meta.min(meta_cap)).unwrap(),
                        keepalive_interval_ms: ka,
                        nonce,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(h in arb_hello(), sig in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let bytes = h.encode(&sig).unwrap();
            let d = Hello::decode(&bytes).unwrap();
            prop_assert_eq!(&d.hello, &h);
            prop_assert_eq!(&d.signature, &sig);
            prop_assert_eq!(d.signed_fields(), &h.signed_fields()[..]);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Hello::decode(&bytes);
        }

        #[test]
        fn prop_mutated_hello_never_panics(
            h in arb_hello(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = h.encode(&[3; 64]).unwrap();
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = Hello::decode(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = Hello::decode(&bytes);
        }
    }
}
