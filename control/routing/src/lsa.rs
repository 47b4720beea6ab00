//! Link-state advertisements: the value, its canonical binary encoding, and the decoder.
//!
//! An [`Lsa`] is what one origin says about itself in one domain's flooding scope:
//!
//! - a **node LSA** (in the origin's own domain): its links (neighbour, cost, state) to every
//!   neighbour, including neighbours in other domains;
//! - a **summary LSA** (originated by a border node into a *neighbouring* domain, see
//!   [`crate::interdomain`]): its links to that domain's nodes, plus a [`Summary`]: the border's
//!   home domain, the other domains reachable through it with their domain-level cost and
//!   domain path, and member sets of those domains as sorted node-id ranges, so that a Send
//!   without `dst_domain` can resolve its domain.
//!
//! An `Lsa` is immutable and cheap to clone (one `Arc`): the LSDBs of every node of a simulated
//! domain can share one copy of each advertisement. The age is *not* part of the value, since
//! it changes on every hop and every second; it travels beside it in an [`LsaInstance`].
//!
//! Construction and decoding validate the same rules (parse, don't validate): node ids
//! non-zero, link costs `>= 1` (the SPF and the loop-freedom argument of the domain routes need
//! strictly positive costs), no link to self, every list sorted and free of duplicates so that
//! equal content has equal bytes and an equal checksum, domain paths simple and ending at their
//! domain, and every count under the limits below. Decoding checks each count against its
//! limit and against the bytes that remain *before* allocating, never panics on any input, and
//! rejects trailing bytes.
//!
//! # Encoding (version 1, all integers big-endian)
//!
//! ```text
//! off  size  field
//!   0     4  total_len     bytes of this LSA including this field, 30 ..= MAX_LSA_LEN
//!   4     4  checksum      FNV-1a-32 of bytes [10, total_len) (everything but len, checksum, age)
//!   8     2  age_s         seconds since origination; >= MAX_AGE_S means "flushed"
//!  10     1  version       1
//!  11     1  flags         bit 0: SUMMARY (a summary part follows the links); others zero
//!  12     8  origin        non-zero node id
//!  20     4  domain        flooding scope (the domain whose LSDB holds this LSA)
//!  24     4  seq           sequence number, RFC 1982 serial arithmetic
//!  28     2  link_count    <= MAX_LINKS_PER_LSA
//!  30  13*n  links         neighbor u64, cost u32 (>= 1), state u8 (1 up, 2 down);
//!                          strictly increasing by neighbor
//! if SUMMARY:
//!          4  home_domain  the border's own domain, != domain
//!          2  reach_count  <= MAX_REACH_PER_LSA, entries strictly increasing by domain:
//!                            domain u32, cost u32, path_len u8 (1 ..= MAX_DOMAIN_PATH_LEN),
//!                            path_len x domain u32 (domains entered after home_domain, the
//!                            last one is `domain`; no repeats, never home_domain)
//!          2  member_count <= MAX_MEMBER_DOMAINS_PER_LSA, entries strictly increasing by domain:
//!                            domain u32, range_count u16,
//!                            range_count x (first u64, last u64), first <= last, ranges
//!                            strictly increasing and disjoint; total ranges <= MAX_RANGES_PER_LSA
//! ```
//!
//! The LSA *header* used by acknowledgements and database summaries ([`LsaHeader`]) is 22
//! bytes: origin u64, domain u32, seq u32, checksum u32, age_s u16.

use std::sync::Arc;

use crate::hash::fnv1a32;
use crate::ids::{DomainId, NodeId, SeqNo};

/// Encoding format version this crate reads and writes.
pub const LSA_FORMAT_VERSION: u8 = 1;
/// Most links one LSA may carry.
pub const MAX_LINKS_PER_LSA: usize = 1024;
/// Most reachable-domain entries one summary may carry (the mesh has ~1,000 domains).
pub const MAX_REACH_PER_LSA: usize = 8192;
/// Longest domain path of one reach entry.
pub const MAX_DOMAIN_PATH_LEN: usize = 32;
/// Most domains whose member sets one summary may carry.
pub const MAX_MEMBER_DOMAINS_PER_LSA: usize = 8192;
/// Most node-id ranges one summary may carry, over all its domains.
pub const MAX_RANGES_PER_LSA: usize = 32_768;
/// Largest encoded LSA, in bytes (half the default 1 MiB frame, so one always fits a message).
pub const MAX_LSA_LEN: usize = 512 * 1024;
/// Age (seconds) at which an LSA is dead: purged when it gets there by ageing, and a flush
/// (withdrawal) when it arrives carrying it. The same in every node, like OSPF's MaxAge.
pub const MAX_AGE_S: u16 = 3600;

/// Bytes before the first link.
pub(crate) const FIXED_LEN: usize = 30;
/// Bytes of one encoded link.
const LINK_LEN: usize = 13;
/// Bytes of one encoded [`LsaHeader`].
pub const LSA_HEADER_LEN: usize = 22;
const FLAG_SUMMARY: u8 = 0x01;
/// Offset of the first byte covered by the checksum.
const CHECKSUM_FROM: usize = 10;

/// Why an LSA (or a flooding message) could not be built or decoded. Every variant from
/// decoding names the field and carries the limit and the value that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before a field.
    #[error("input truncated: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes that remained.
        available: usize,
    },
    /// A length field is outside its bounds.
    #[error("{field} length {len} is outside {min}..={max}")]
    BadLength {
        /// Which length.
        field: &'static str,
        /// The length found.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// Bytes were left after a complete value.
    #[error("{count} trailing bytes after the encoded {field}")]
    TrailingBytes {
        /// What was decoded.
        field: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// The format version is not one this crate speaks.
    #[error("unsupported LSA format version {version} (supported: {supported})")]
    UnsupportedVersion {
        /// Version found.
        version: u8,
        /// Version supported.
        supported: u8,
    },
    /// Reserved flag bits are set.
    #[error("unknown LSA flag bits {flags:#04x}")]
    UnknownFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A node id field is zero.
    #[error("{field} is zero, which is not a valid node id")]
    ZeroNodeId {
        /// Which field.
        field: &'static str,
    },
    /// A list is longer than its limit.
    #[error("too many {field}: {count} exceeds the limit of {limit}")]
    TooMany {
        /// Which list.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// The count found.
        count: usize,
    },
    /// A link cost is zero.
    #[error("link to {neighbor} has cost 0; link costs are 1..=4294967295")]
    ZeroCost {
        /// The link's neighbour.
        neighbor: u64,
    },
    /// A link state byte is unknown.
    #[error("link state byte {value} is neither up (1) nor down (2)")]
    BadLinkState {
        /// The byte found.
        value: u8,
    },
    /// An LSA lists a link from its origin to itself.
    #[error("LSA of {origin} lists a link to itself")]
    SelfLink {
        /// The origin.
        origin: u64,
    },
    /// A list is not strictly increasing (unsorted or duplicated).
    #[error("{field} not strictly increasing at {value}")]
    NotCanonical {
        /// Which list.
        field: &'static str,
        /// The first out-of-order or repeated key.
        value: u64,
    },
    /// A reach entry's domain path is malformed.
    #[error("domain path for domain {domain} is invalid: {reason}")]
    BadPath {
        /// The entry's domain.
        domain: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A summary names its flooding scope as its home domain, or advertises a route to home.
    #[error("summary home domain {home} conflicts with {field}")]
    BadHome {
        /// The home domain.
        home: u32,
        /// What it conflicts with.
        field: &'static str,
    },
    /// A node range is reversed.
    #[error("node range {first}..={last} is reversed")]
    BadRange {
        /// First id.
        first: u64,
        /// Last id.
        last: u64,
    },
    /// The content does not match its checksum.
    #[error("LSA checksum mismatch: carried {carried:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum in the bytes.
        carried: u32,
        /// Checksum of the content.
        computed: u32,
    },
    /// The LSA would encode to more than [`MAX_LSA_LEN`] bytes.
    #[error("encoded LSA would be {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A flooding message type byte is unknown.
    #[error("unknown flooding message type {value}")]
    UnknownMessageType {
        /// The byte found.
        value: u8,
    },
}

/// Whether a link is usable. SPF uses only links that are `Up` in both directions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LinkState {
    /// The adjacency is up.
    Up,
    /// The adjacency is administratively or operationally down; advertised for visibility
    /// (GetTopology) but never used for forwarding.
    Down,
}

impl LinkState {
    const fn to_byte(self) -> u8 {
        match self {
            LinkState::Up => 1,
            LinkState::Down => 2,
        }
    }

    const fn from_byte(value: u8) -> Result<LinkState, CodecError> {
        match value {
            1 => Ok(LinkState::Up),
            2 => Ok(LinkState::Down),
            _ => Err(CodecError::BadLinkState { value }),
        }
    }
}

/// One advertised adjacency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Link {
    /// The neighbour at the other end.
    pub neighbor: NodeId,
    /// Cost of sending from the origin to `neighbor`, `>= 1`.
    pub cost: u32,
    /// Whether the link is usable.
    pub state: LinkState,
}

impl Link {
    /// An `Up` link to `neighbor` with `cost`.
    #[must_use]
    pub const fn up(neighbor: NodeId, cost: u32) -> Link {
        Link {
            neighbor,
            cost,
            state: LinkState::Up,
        }
    }
}

/// An inclusive range of node ids, `first <= last`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NodeRange {
    first: NodeId,
    last: NodeId,
}

impl NodeRange {
    /// The range `first ..= last`, or `None` when reversed.
    #[must_use]
    pub fn new(first: NodeId, last: NodeId) -> Option<NodeRange> {
        (first <= last).then_some(NodeRange { first, last })
    }

    /// `first ..= last` for callers that have established `first <= last`.
    pub(crate) fn span(first: NodeId, last: NodeId) -> NodeRange {
        debug_assert!(first <= last);
        NodeRange { first, last }
    }

    /// The range holding just `id`.
    #[must_use]
    pub const fn single(id: NodeId) -> NodeRange {
        NodeRange {
            first: id,
            last: id,
        }
    }

    /// First id in the range.
    #[must_use]
    pub const fn first(self) -> NodeId {
        self.first
    }

    /// Last id in the range (inclusive).
    #[must_use]
    pub const fn last(self) -> NodeId {
        self.last
    }

    /// Whether `id` lies in the range.
    #[must_use]
    pub fn contains(self, id: NodeId) -> bool {
        self.first <= id && id <= self.last
    }
}

/// A domain reachable through a border, with its domain-level cost and path.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DomainReach {
    /// The reachable domain.
    pub domain: DomainId,
    /// Domain-level cost from the advertising border's home domain to `domain` (sum of
    /// inter-domain edge weights, see [`crate::interdomain`]).
    pub cost: u32,
    /// Domains entered after leaving the home domain, in order; the last is `domain`.
    pub path: Box<[DomainId]>,
}

/// The member set of one domain, as sorted disjoint node-id ranges.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DomainMembers {
    domain: DomainId,
    ranges: Box<[NodeRange]>,
}

impl DomainMembers {
    /// Members of `domain`; `ranges` are sorted here and must be disjoint.
    pub fn new(domain: DomainId, mut ranges: Vec<NodeRange>) -> Result<DomainMembers, CodecError> {
        ranges.sort_unstable_by_key(|r| r.first);
        check_ranges(&ranges)?;
        Ok(DomainMembers {
            domain,
            ranges: ranges.into_boxed_slice(),
        })
    }

    /// The domain.
    #[must_use]
    pub const fn domain(&self) -> DomainId {
        self.domain
    }

    /// Its ranges, sorted and disjoint.
    #[must_use]
    pub fn ranges(&self) -> &[NodeRange] {
        &self.ranges
    }
}

/// The summary part of a border's LSA in a neighbouring domain.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Summary {
    home_domain: DomainId,
    reach: Box<[DomainReach]>,
    members: Box<[DomainMembers]>,
}

impl Summary {
    /// A summary for a border whose own domain is `home_domain`. Entries are sorted here; the
    /// rules of the module docs are checked.
    pub fn new(
        home_domain: DomainId,
        mut reach: Vec<DomainReach>,
        mut members: Vec<DomainMembers>,
    ) -> Result<Summary, CodecError> {
        reach.sort_unstable_by_key(|r| r.domain);
        members.sort_unstable_by_key(DomainMembers::domain);
        check_summary(home_domain, &reach, &members)?;
        Ok(Summary {
            home_domain,
            reach: reach.into_boxed_slice(),
            members: members.into_boxed_slice(),
        })
    }

    /// The border's own domain (reachable at domain-level cost 0 through it).
    #[must_use]
    pub const fn home_domain(&self) -> DomainId {
        self.home_domain
    }

    /// Other reachable domains, sorted by domain.
    #[must_use]
    pub fn reach(&self) -> &[DomainReach] {
        &self.reach
    }

    /// Member sets, sorted by domain.
    #[must_use]
    pub fn members(&self) -> &[DomainMembers] {
        &self.members
    }

    /// Member ranges of `domain`, if this summary carries them.
    #[must_use]
    pub fn members_of(&self, domain: DomainId) -> Option<&[NodeRange]> {
        self.members
            .binary_search_by_key(&domain, DomainMembers::domain)
            .ok()
            .map(|i| self.members[i].ranges())
    }

    fn encoded_len(&self) -> usize {
        let reach: usize = self.reach.iter().map(|r| 9 + 4 * r.path.len()).sum();
        let members: usize = self.members.iter().map(|m| 6 + 16 * m.ranges.len()).sum();
        4 + 2 + reach + 2 + members
    }
}

#[derive(PartialEq, Eq, Hash, Debug)]
struct LsaData {
    origin: NodeId,
    domain: DomainId,
    seq: SeqNo,
    checksum: u32,
    encoded_len: u32,
    links: Box<[Link]>,
    summary: Option<Summary>,
}

/// An immutable link-state advertisement (without its age). Cloning shares the content.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Lsa(Arc<LsaData>);

/// An LSA together with its age, as it travels in an update.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LsaInstance {
    /// Seconds since origination when sent; `>= MAX_AGE_S` means the LSA is being flushed.
    pub age_s: u16,
    /// The advertisement.
    pub lsa: Lsa,
}

impl LsaInstance {
    /// Whether this instance is a flush (its age has reached [`MAX_AGE_S`]).
    #[must_use]
    pub const fn is_max_age(&self) -> bool {
        self.age_s >= MAX_AGE_S
    }

    /// Its header (what acknowledgements and database summaries carry).
    #[must_use]
    pub fn header(&self) -> LsaHeader {
        self.lsa.header(self.age_s)
    }
}

/// What identifies one instance of an LSA: acknowledgements and database summaries carry these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LsaHeader {
    /// The origin.
    pub origin: NodeId,
    /// The flooding scope.
    pub domain: DomainId,
    /// The sequence number.
    pub seq: SeqNo,
    /// The content checksum (tie-breaker between equal sequence numbers).
    pub checksum: u32,
    /// Age in seconds at the time the header was written.
    pub age_s: u16,
}

impl LsaHeader {
    /// Whether the instance named is a flush.
    #[must_use]
    pub const fn is_max_age(&self) -> bool {
        self.age_s >= MAX_AGE_S
    }

    /// Appends the 22-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.origin.get().to_be_bytes());
        out.extend_from_slice(&self.domain.0.to_be_bytes());
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.checksum.to_be_bytes());
        out.extend_from_slice(&self.age_s.to_be_bytes());
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<LsaHeader, CodecError> {
        let origin = NodeId::new(r.u64()?).ok_or(CodecError::ZeroNodeId {
            field: "header origin",
        })?;
        Ok(LsaHeader {
            origin,
            domain: DomainId(r.u32()?),
            seq: SeqNo(r.u32()?),
            checksum: r.u32()?,
            age_s: r.u16()?,
        })
    }
}

impl Lsa {
    /// Builds an LSA. `links` are sorted here; a `summary` makes it a summary LSA, whose home
    /// domain must differ from `domain`. Fails on any rule of the module docs, including an
    /// encoded size over [`MAX_LSA_LEN`].
    pub fn new(
        origin: NodeId,
        domain: DomainId,
        seq: SeqNo,
        mut links: Vec<Link>,
        summary: Option<Summary>,
    ) -> Result<Lsa, CodecError> {
        links.sort_unstable_by_key(|l| l.neighbor);
        check_links(origin, &links)?;
        if let Some(s) = &summary
            && s.home_domain == domain
        {
            return Err(CodecError::BadHome {
                home: s.home_domain.0,
                field: "flooding scope",
            });
        }
        let encoded_len =
            FIXED_LEN + LINK_LEN * links.len() + summary.as_ref().map_or(0, Summary::encoded_len);
        if encoded_len > MAX_LSA_LEN {
            return Err(CodecError::TooLarge {
                len: encoded_len,
                max: MAX_LSA_LEN,
            });
        }
        Ok(Lsa::seal(LsaData {
            origin,
            domain,
            seq,
            checksum: 0,
            encoded_len: u32::try_from(encoded_len).map_err(|_| CodecError::TooLarge {
                len: encoded_len,
                max: MAX_LSA_LEN,
            })?,
            links: links.into_boxed_slice(),
            summary,
        }))
    }

    /// Computes the checksum of validated content.
    fn seal(mut data: LsaData) -> Lsa {
        let mut buf = Vec::with_capacity(data.encoded_len as usize);
        encode_data(&data, 0, &mut buf);
        debug_assert_eq!(buf.len(), data.encoded_len as usize, "length prediction");
        data.checksum = fnv1a32(&[&buf[CHECKSUM_FROM..]]);
        Lsa(Arc::new(data))
    }

    /// The same content under another sequence number (re-origination, refresh).
    #[must_use]
    pub fn with_seq(&self, seq: SeqNo) -> Lsa {
        let d = &self.0;
        Lsa::seal(LsaData {
            origin: d.origin,
            domain: d.domain,
            seq,
            checksum: 0,
            encoded_len: d.encoded_len,
            links: d.links.clone(),
            summary: d.summary.clone(),
        })
    }

    /// The originating node.
    #[must_use]
    pub fn origin(&self) -> NodeId {
        self.0.origin
    }

    /// The flooding scope: the domain whose LSDB holds this LSA.
    #[must_use]
    pub fn domain(&self) -> DomainId {
        self.0.domain
    }

    /// The origin's own domain: `domain()` for a node LSA, the summary's home for a summary LSA.
    #[must_use]
    pub fn home_domain(&self) -> DomainId {
        self.0
            .summary
            .as_ref()
            .map_or(self.0.domain, Summary::home_domain)
    }

    /// The sequence number.
    #[must_use]
    pub fn seq(&self) -> SeqNo {
        self.0.seq
    }

    /// The content checksum (FNV-1a-32 of the encoding, age excluded).
    #[must_use]
    pub fn checksum(&self) -> u32 {
        self.0.checksum
    }

    /// Links, sorted by neighbour.
    #[must_use]
    pub fn links(&self) -> &[Link] {
        &self.0.links
    }

    /// The link to `neighbor`, if advertised.
    #[must_use]
    pub fn link_to(&self, neighbor: NodeId) -> Option<&Link> {
        let links = &self.0.links;
        links
            .binary_search_by_key(&neighbor, |l| l.neighbor)
            .ok()
            .map(|i| &links[i])
    }

    /// The summary part, present exactly for summary LSAs.
    #[must_use]
    pub fn summary(&self) -> Option<&Summary> {
        self.0.summary.as_ref()
    }

    /// Whether this is a summary LSA (a foreign border's, in this scope).
    #[must_use]
    pub fn is_summary(&self) -> bool {
        self.0.summary.is_some()
    }

    /// Bytes of the encoding.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.0.encoded_len as usize
    }

    /// Whether two LSAs say the same thing (links and summary), whatever their numbers.
    #[must_use]
    pub fn same_content(&self, other: &Lsa) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.links == other.0.links && self.0.summary == other.0.summary)
    }

    /// Whether both handles share one allocation (a cheap identity test).
    #[must_use]
    pub fn ptr_eq(&self, other: &Lsa) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// This LSA's header at `age_s`.
    #[must_use]
    pub fn header(&self, age_s: u16) -> LsaHeader {
        LsaHeader {
            origin: self.0.origin,
            domain: self.0.domain,
            seq: self.0.seq,
            checksum: self.0.checksum,
            age_s,
        }
    }

    /// Appends the encoding with `age_s` to `out` (exactly [`Lsa::encoded_len`] bytes).
    pub fn encode(&self, age_s: u16, out: &mut Vec<u8>) {
        let start = out.len();
        encode_data(&self.0, age_s, out);
        let checksum = self.0.checksum.to_be_bytes();
        out[start + 4..start + 8].copy_from_slice(&checksum);
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Decodes exactly one LSA (no trailing bytes) and its age.
    pub fn decode(bytes: &[u8]) -> Result<LsaInstance, CodecError> {
        let mut r = Reader::new(bytes);
        let inst = Lsa::decode_from(&mut r)?;
        r.finish("LSA")?;
        Ok(inst)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<LsaInstance, CodecError> {
        let total = r.u32()? as usize;
        if !(FIXED_LEN..=MAX_LSA_LEN).contains(&total) {
            return Err(CodecError::BadLength {
                field: "LSA",
                len: total,
                min: FIXED_LEN,
                max: MAX_LSA_LEN,
            });
        }
        // `total` counts its own 4 bytes, already consumed.
        let body = r.take(total - 4)?;
        let computed = fnv1a32(&[&body[CHECKSUM_FROM - 4..]]);
        let mut r = Reader::new(body);
        let carried = r.u32()?;
        if carried != computed {
            return Err(CodecError::ChecksumMismatch { carried, computed });
        }
        let age_s = r.u16()?;
        let version = r.u8()?;
        if version != LSA_FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion {
                version,
                supported: LSA_FORMAT_VERSION,
            });
        }
        let flags = r.u8()?;
        if flags & !FLAG_SUMMARY != 0 {
            return Err(CodecError::UnknownFlags { flags });
        }
        let origin = NodeId::new(r.u64()?).ok_or(CodecError::ZeroNodeId { field: "origin" })?;
        let domain = DomainId(r.u32()?);
        let seq = SeqNo(r.u32()?);
        let links = decode_links(&mut r)?;
        check_links(origin, &links)?;
        let summary = if flags & FLAG_SUMMARY == 0 {
            None
        } else {
            let s = decode_summary(&mut r)?;
            if s.home_domain == domain {
                return Err(CodecError::BadHome {
                    home: s.home_domain.0,
                    field: "flooding scope",
                });
            }
            Some(s)
        };
        r.finish("LSA")?;
        let lsa = Lsa(Arc::new(LsaData {
            origin,
            domain,
            seq,
            checksum: computed,
            encoded_len: u32::try_from(total).map_err(|_| CodecError::TooLarge {
                len: total,
                max: MAX_LSA_LEN,
            })?,
            links,
            summary,
        }));
        Ok(LsaInstance { age_s, lsa })
    }
}

fn encode_data(d: &LsaData, age_s: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&d.encoded_len.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // checksum, patched by the caller
    out.extend_from_slice(&age_s.to_be_bytes());
    out.push(LSA_FORMAT_VERSION);
    out.push(if d.summary.is_some() { FLAG_SUMMARY } else { 0 });
    out.extend_from_slice(&d.origin.get().to_be_bytes());
    out.extend_from_slice(&d.domain.0.to_be_bytes());
    out.extend_from_slice(&d.seq.0.to_be_bytes());
    out.extend_from_slice(&len_u16(d.links.len()).to_be_bytes());
    for l in &d.links {
        out.extend_from_slice(&l.neighbor.get().to_be_bytes());
        out.extend_from_slice(&l.cost.to_be_bytes());
        out.push(l.state.to_byte());
    }
    if let Some(s) = &d.summary {
        out.extend_from_slice(&s.home_domain.0.to_be_bytes());
        out.extend_from_slice(&len_u16(s.reach.len()).to_be_bytes());
        for e in &s.reach {
            out.extend_from_slice(&e.domain.0.to_be_bytes());
            out.extend_from_slice(&e.cost.to_be_bytes());
            out.push(u8::try_from(e.path.len()).expect("path length validated <= 32"));
            for p in &e.path {
                out.extend_from_slice(&p.0.to_be_bytes());
            }
        }
        out.extend_from_slice(&len_u16(s.members.len()).to_be_bytes());
        for m in &s.members {
            out.extend_from_slice(&m.domain.0.to_be_bytes());
            out.extend_from_slice(&len_u16(m.ranges.len()).to_be_bytes());
            for r in &m.ranges {
                out.extend_from_slice(&r.first.get().to_be_bytes());
                out.extend_from_slice(&r.last.get().to_be_bytes());
            }
        }
    }
}

/// A count that the validators bounded well below `u16::MAX`.
fn len_u16(n: usize) -> u16 {
    u16::try_from(n).expect("list lengths are validated below u16::MAX")
}

fn check_links(origin: NodeId, links: &[Link]) -> Result<(), CodecError> {
    if links.len() > MAX_LINKS_PER_LSA {
        return Err(CodecError::TooMany {
            field: "links",
            limit: MAX_LINKS_PER_LSA,
            count: links.len(),
        });
    }
    let mut prev: Option<NodeId> = None;
    for l in links {
        if l.neighbor == origin {
            return Err(CodecError::SelfLink {
                origin: origin.get(),
            });
        }
        if l.cost == 0 {
            return Err(CodecError::ZeroCost {
                neighbor: l.neighbor.get(),
            });
        }
        if prev.is_some_and(|p| p >= l.neighbor) {
            return Err(CodecError::NotCanonical {
                field: "links",
                value: l.neighbor.get(),
            });
        }
        prev = Some(l.neighbor);
    }
    Ok(())
}

fn check_ranges(ranges: &[NodeRange]) -> Result<(), CodecError> {
    let mut prev: Option<NodeId> = None;
    for r in ranges {
        if r.first > r.last {
            return Err(CodecError::BadRange {
                first: r.first.get(),
                last: r.last.get(),
            });
        }
        if prev.is_some_and(|p| p >= r.first) {
            return Err(CodecError::NotCanonical {
                field: "member ranges",
                value: r.first.get(),
            });
        }
        prev = Some(r.last);
    }
    Ok(())
}

fn check_path(home: DomainId, e: &DomainReach) -> Result<(), CodecError> {
    let bad = |reason| {
        Err(CodecError::BadPath {
            domain: e.domain.0,
            reason,
        })
    };
    if e.path.is_empty() || e.path.len() > MAX_DOMAIN_PATH_LEN {
        return bad("length outside 1..=32");
    }
    if e.path.last() != Some(&e.domain) {
        return bad("does not end at its domain");
    }
    for (i, d) in e.path.iter().enumerate() {
        if *d == home {
            return bad("passes through the home domain");
        }
        if e.path[..i].contains(d) {
            return bad("repeats a domain");
        }
    }
    Ok(())
}

fn check_summary(
    home: DomainId,
    reach: &[DomainReach],
    members: &[DomainMembers],
) -> Result<(), CodecError> {
    if reach.len() > MAX_REACH_PER_LSA {
        return Err(CodecError::TooMany {
            field: "reach entries",
            limit: MAX_REACH_PER_LSA,
            count: reach.len(),
        });
    }
    if members.len() > MAX_MEMBER_DOMAINS_PER_LSA {
        return Err(CodecError::TooMany {
            field: "member domains",
            limit: MAX_MEMBER_DOMAINS_PER_LSA,
            count: members.len(),
        });
    }
    let mut prev: Option<DomainId> = None;
    for e in reach {
        if e.domain == home {
            return Err(CodecError::BadHome {
                home: home.0,
                field: "a reach entry",
            });
        }
        if prev.is_some_and(|p| p >= e.domain) {
            return Err(CodecError::NotCanonical {
                field: "reach entries",
                value: u64::from(e.domain.0),
            });
        }
        prev = Some(e.domain);
        check_path(home, e)?;
    }
    let mut prev: Option<DomainId> = None;
    let mut total = 0usize;
    for m in members {
        if prev.is_some_and(|p| p >= m.domain) {
            return Err(CodecError::NotCanonical {
                field: "member domains",
                value: u64::from(m.domain.0),
            });
        }
        prev = Some(m.domain);
        total += m.ranges.len();
        if total > MAX_RANGES_PER_LSA {
            return Err(CodecError::TooMany {
                field: "member ranges",
                limit: MAX_RANGES_PER_LSA,
                count: total,
            });
        }
        check_ranges(&m.ranges)?;
    }
    Ok(())
}

fn decode_links(r: &mut Reader<'_>) -> Result<Box<[Link]>, CodecError> {
    let count = usize::from(r.u16()?);
    r.check_count("links", count, MAX_LINKS_PER_LSA, LINK_LEN)?;
    let mut links = Vec::with_capacity(count);
    for _ in 0..count {
        let neighbor = NodeId::new(r.u64()?).ok_or(CodecError::ZeroNodeId {
            field: "link neighbor",
        })?;
        let cost = r.u32()?;
        let state = LinkState::from_byte(r.u8()?)?;
        links.push(Link {
            neighbor,
            cost,
            state,
        });
    }
    Ok(links.into_boxed_slice())
}

fn decode_summary(r: &mut Reader<'_>) -> Result<Summary, CodecError> {
    let home_domain = DomainId(r.u32()?);
    let count = usize::from(r.u16()?);
    r.check_count("reach entries", count, MAX_REACH_PER_LSA, 9)?;
    let mut reach = Vec::with_capacity(count);
    for _ in 0..count {
        let domain = DomainId(r.u32()?);
        let cost = r.u32()?;
        let path_len = usize::from(r.u8()?);
        r.check_count("domain path", path_len, MAX_DOMAIN_PATH_LEN, 4)?;
        let mut path = Vec::with_capacity(path_len);
        for _ in 0..path_len {
            path.push(DomainId(r.u32()?));
        }
        reach.push(DomainReach {
            domain,
            cost,
            path: path.into_boxed_slice(),
        });
    }
    let count = usize::from(r.u16()?);
    r.check_count("member domains", count, MAX_MEMBER_DOMAINS_PER_LSA, 6)?;
    let mut members = Vec::with_capacity(count);
    let mut total_ranges = 0usize;
    for _ in 0..count {
        let domain = DomainId(r.u32()?);
        let n = usize::from(r.u16()?);
        total_ranges += n;
        if total_ranges > MAX_RANGES_PER_LSA {
            return Err(CodecError::TooMany {
                field: "member ranges",
                limit: MAX_RANGES_PER_LSA,
                count: total_ranges,
            });
        }
        r.check_count("member ranges", n, MAX_RANGES_PER_LSA, 16)?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            let first = NodeId::new(r.u64()?).ok_or(CodecError::ZeroNodeId {
                field: "range first",
            })?;
            let last = NodeId::new(r.u64()?).ok_or(CodecError::ZeroNodeId {
                field: "range last",
            })?;
            ranges.push(NodeRange { first, last });
        }
        members.push(DomainMembers {
            domain,
            ranges: ranges.into_boxed_slice(),
        });
    }
    check_summary(home_domain, &reach, &members)?;
    Ok(Summary {
        home_domain,
        reach: reach.into_boxed_slice(),
        members: members.into_boxed_slice(),
    })
}

/// A bounds-checked big-endian cursor: every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let available = self.remaining();
        if n > available {
            return Err(CodecError::Truncated {
                needed: n,
                available,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Checks a count against its limit and against the bytes left (at `min_item_len` each)
    /// before the caller allocates room for it.
    pub(crate) fn check_count(
        &self,
        field: &'static str,
        count: usize,
        limit: usize,
        min_item_len: usize,
    ) -> Result<(), CodecError> {
        if count > limit {
            return Err(CodecError::TooMany {
                field,
                limit,
                count,
            });
        }
        let needed = count * min_item_len;
        if needed > self.remaining() {
            return Err(CodecError::Truncated {
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    pub(crate) fn finish(&self, field: &'static str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { field, count }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn n(raw: u64) -> NodeId {
        NodeId::new(raw).expect("test ids are non-zero")
    }

    fn sample_summary() -> Summary {
        Summary::new(
            DomainId(1),
            vec![
                DomainReach {
                    domain: DomainId(3),
                    cost: 20,
                    path: vec![DomainId(2), DomainId(3)].into(),
                },
                DomainReach {
                    domain: DomainId(2),
                    cost: 10,
                    path: vec![DomainId(2)].into(),
                },
            ],
            vec![
                DomainMembers::new(DomainId(1), vec![NodeRange::new(n(100), n(199)).unwrap()])
                    .unwrap(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn node_lsa_round_trip_and_layout() {
        let lsa = Lsa::new(
            n(7),
            DomainId(1),
            SeqNo(3),
            vec![Link::up(n(9), 5), Link::up(n(8), 1)],
            None,
        )
        .unwrap();
        assert_eq!(lsa.links()[0].neighbor, n(8), "links are sorted");
        let mut buf = Vec::new();
        lsa.encode(12, &mut buf);
        assert_eq!(buf.len(), FIXED_LEN + 2 * LINK_LEN);
        assert_eq!(&buf[0..4], &u32::try_from(buf.len()).unwrap().to_be_bytes());
        assert_eq!(&buf[8..10], &12u16.to_be_bytes());
        assert_eq!(buf[10], LSA_FORMAT_VERSION);
        assert_eq!(buf[11], 0);
        assert_eq!(&buf[12..20], &7u64.to_be_bytes());
        let inst = Lsa::decode(&buf).unwrap();
        assert_eq!(inst.age_s, 12);
        assert_eq!(inst.lsa, lsa);
        assert!(lsa.link_to(n(9)).is_some());
        assert!(lsa.link_to(n(10)).is_none());
    }

    #[test]
    fn age_is_outside_the_checksum() {
        let lsa = Lsa::new(n(7), DomainId(1), SeqNo(3), vec![Link::up(n(9), 5)], None).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        lsa.encode(0, &mut a);
        lsa.encode(MAX_AGE_S, &mut b);
        assert_eq!(&a[4..8], &b[4..8]);
        assert!(Lsa::decode(&b).unwrap().is_max_age());
    }

    #[test]
    fn summary_lsa_round_trip() {
        let lsa = Lsa::new(
            n(7),
            DomainId(2),
            SeqNo(1),
            vec![Link::up(n(20), 3)],
            Some(sample_summary()),
        )
        .unwrap();
        assert_eq!(lsa.home_domain(), DomainId(1));
        assert_eq!(lsa.summary().unwrap().reach()[0].domain, DomainId(2));
        let mut buf = Vec::new();
        lsa.encode(1, &mut buf);
        assert_eq!(buf.len(), lsa.encoded_len());
        assert_eq!(Lsa::decode(&buf).unwrap().lsa, lsa);
    }

    #[test]
    fn construction_rejects_bad_content() {
        let err = |links: Vec<Link>| Lsa::new(n(1), DomainId(0), SeqNo(1), links, None);
        assert_eq!(
            err(vec![Link::up(n(1), 1)]),
            Err(CodecError::SelfLink { origin: 1 })
        );
        assert_eq!(
            err(vec![Link::up(n(2), 0)]),
            Err(CodecError::ZeroCost { neighbor: 2 })
        );
        assert!(matches!(
            err(vec![Link::up(n(2), 1), Link::up(n(2), 3)]),
            Err(CodecError::NotCanonical { .. })
        ));
        let many = (2..=2 + MAX_LINKS_PER_LSA as u64)
            .map(|i| Link::up(n(i), 1))
            .collect();
        assert_eq!(
            err(many),
            Err(CodecError::TooMany {
                field: "links",
                limit: MAX_LINKS_PER_LSA,
                count: MAX_LINKS_PER_LSA + 1
            })
        );
        // A summary whose home is the scope.
        assert!(matches!(
            Lsa::new(n(1), DomainId(1), SeqNo(1), vec![], Some(sample_summary())),
            Err(CodecError::BadHome { .. })
        ));
        // Paths: must end at their domain, avoid home, not repeat.
        let reach = |path: Vec<u32>| {
            Summary::new(
                DomainId(1),
                vec![DomainReach {
                    domain: DomainId(3),
                    cost: 1,
                    path: path.into_iter().map(DomainId).collect(),
                }],
                vec![],
            )
        };
        assert!(reach(vec![2, 3]).is_ok());
        assert!(matches!(reach(vec![]), Err(CodecError::BadPath { .. })));
        assert!(matches!(reach(vec![3, 2]), Err(CodecError::BadPath { .. })));
        assert!(matches!(reach(vec![1, 3]), Err(CodecError::BadPath { .. })));
        assert!(matches!(
            reach(vec![2, 2, 3]),
            Err(CodecError::BadPath { .. })
        ));
        assert!(matches!(
            DomainMembers::new(
                DomainId(1),
                vec![
                    NodeRange::new(n(1), n(5)).unwrap(),
                    NodeRange::new(n(5), n(9)).unwrap()
                ]
            ),
            Err(CodecError::NotCanonical { .. })
        ));
        assert!(NodeRange::new(n(5), n(4)).is_none());
    }

    #[test]
    fn decode_rejects_with_typed_errors() {
        let lsa = Lsa::new(n(7), DomainId(1), SeqNo(3), vec![Link::up(n(9), 5)], None).unwrap();
        let mut good = Vec::new();
        lsa.encode(0, &mut good);

        let mut bad = good.clone();
        bad[14] ^= 0xff;
        assert!(matches!(
            Lsa::decode(&bad),
            Err(CodecError::ChecksumMismatch { .. })
        ));

        assert!(matches!(
            Lsa::decode(&good[..good.len() - 1]),
            Err(CodecError::Truncated { .. })
        ));

        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Lsa::decode(&long),
            Err(CodecError::TrailingBytes {
                field: "LSA",
                count: 1
            })
        );

        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Lsa::decode(&huge),
            Err(CodecError::BadLength { field: "LSA", .. })
        ));
    }

    /// Re-encodes `buf` with a fixed-up checksum, so tests can reach the validators behind it.
    fn fix_checksum(buf: &mut [u8]) {
        let c = fnv1a32(&[&buf[CHECKSUM_FROM..]]);
        buf[4..8].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn decode_checks_counts_before_allocating() {
        let lsa = Lsa::new(n(7), DomainId(1), SeqNo(3), vec![], None).unwrap();
        let mut buf = Vec::new();
        lsa.encode(0, &mut buf);
        // Claim 1000 links in a 30-byte LSA: refused as truncated, nothing allocated for them.
        buf[28..30].copy_from_slice(&1000u16.to_be_bytes());
        fix_checksum(&mut buf);
        assert_eq!(
            Lsa::decode(&buf),
            Err(CodecError::Truncated {
                needed: 1000 * LINK_LEN,
                available: 0
            })
        );
        buf[28..30].copy_from_slice(&u16::MAX.to_be_bytes());
        fix_checksum(&mut buf);
        assert!(matches!(
            Lsa::decode(&buf),
            Err(CodecError::TooMany { field: "links", .. })
        ));
        buf[28..30].copy_from_slice(&0u16.to_be_bytes());
        buf[11] = 0x80;
        fix_checksum(&mut buf);
        assert_eq!(
            Lsa::decode(&buf),
            Err(CodecError::UnknownFlags { flags: 0x80 })
        );
    }

    pub(crate) fn arb_node() -> impl Strategy<Value = NodeId> {
        (1u64..=40).prop_map(n)
    }

    fn arb_summary(home: u32) -> impl Strategy<Value = Summary> {
        let reach = proptest::collection::btree_map(
            (0u32..30).prop_filter("not home", move |d| *d != home),
            (1u32..1000, proptest::collection::vec(0u32..30, 0..4)),
            0..6,
        );
        let members = proptest::collection::btree_map(
            0u32..30,
            proptest::collection::btree_set(1u64..500, 1..8),
            0..5,
        );
        (reach, members).prop_map(move |(reach, members)| {
            let reach = reach
                .into_iter()
                .map(|(d, (cost, via))| {
                    let mut path: Vec<DomainId> = Vec::new();
                    for v in via {
                        if v != home && v != d && !path.contains(&DomainId(v)) {
                            path.push(DomainId(v));
                        }
                    }
                    path.push(DomainId(d));
                    DomainReach {
                        domain: DomainId(d),
                        cost,
                        path: path.into(),
                    }
                })
                .collect();
            let members = members
                .into_iter()
                .map(|(d, ids)| {
                    let ranges = ids.into_iter().map(|i| NodeRange::single(n(i))).collect();
                    DomainMembers::new(DomainId(d), ranges).unwrap()
                })
                .collect();
            Summary::new(DomainId(home), reach, members).unwrap()
        })
    }

    pub(crate) fn arb_lsa() -> impl Strategy<Value = Lsa> {
        (
            arb_node(),
            0u32..4,
            any::<u32>(),
            proptest::collection::btree_map(arb_node(), (1u32..100, any::<bool>()), 0..8),
            proptest::option::of(arb_summary(9)),
        )
            .prop_map(|(origin, domain, seq, links, summary)| {
                let links = links
                    .into_iter()
                    .filter(|(nb, _)| *nb != origin)
                    .map(|(neighbor, (cost, up))| Link {
                        neighbor,
                        cost,
                        state: if up { LinkState::Up } else { LinkState::Down },
                    })
                    .collect();
                Lsa::new(origin, DomainId(domain), SeqNo(seq), links, summary).unwrap()
            })
    }

    proptest! {
        #[test]
        fn round_trip(lsa in arb_lsa(), age in any::<u16>()) {
            let mut buf = Vec::new();
            lsa.encode(age, &mut buf);
            prop_assert_eq!(buf.len(), lsa.encoded_len());
            let inst = Lsa::decode(&buf).unwrap();
            prop_assert_eq!(inst.age_s, age);
            prop_assert_eq!(inst.lsa.checksum(), lsa.checksum());
            prop_assert_eq!(&inst.lsa, &lsa);
            // Re-encoding is byte-identical (canonical form).
            let mut again = Vec::new();
            inst.lsa.encode(age, &mut again);
            prop_assert_eq!(again, buf);
        }

        #[test]
        fn decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Lsa::decode(&bytes);
        }

        #[test]
        fn decode_mutated_never_panics(
            lsa in arb_lsa(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            fix in any::<bool>(),
        ) {
            let mut buf = Vec::new();
            lsa.encode(0, &mut buf);
            for (at, v) in edits {
                let i = at % buf.len();
                buf[i] = v;
            }
            if fix && buf.len() > CHECKSUM_FROM {
                fix_checksum(&mut buf);
            }
            if let Ok(inst) = Lsa::decode(&buf) {
                // Whatever decodes re-encodes to the same bytes.
                let mut again = Vec::new();
                inst.lsa.encode(inst.age_s, &mut again);
                prop_assert_eq!(again, buf);
            }
        }
    }
}
