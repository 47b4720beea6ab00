//! The flooding protocol's messages and their encoding (the bodies of LSA / LSA_ACK frames).
//!
//! | type | message        | frame kind | body after the 4-byte prefix                  |
//! |------|----------------|------------|-----------------------------------------------|
//! | 1    | [`Message::Update`]     | LSA        | `count` LSAs, each self-delimited ([`crate::lsa`]) |
//! | 2    | [`Message::Ack`]        | LSA_ACK    | `count` 22-byte [`LsaHeader`]s               |
//! | 3    | [`Message::DbSummary`]  | LSA_ACK    | `count` 22-byte [`LsaHeader`]s               |
//! | 4    | [`Message::SummaryAck`] | LSA_ACK    | nothing (`count` = 0)                         |
//!
//! Prefix: `type u8`, `reserved u8 = 0`, `count u16` (big-endian). Counts are checked against
//! [`MAX_LSAS_PER_UPDATE`] / [`MAX_HEADERS_PER_MESSAGE`] and against the bytes left before
//! anything is allocated, and a whole message is at most [`MAX_MESSAGE_LEN`] bytes, which keeps
//! it inside the default 1 MiB frame. The data plane never looks inside: it carries the bytes
//! and tells the routing core which neighbour they came from.

use crate::lsa::{CodecError, LSA_HEADER_LEN, Lsa, LsaHeader, LsaInstance, Reader};

/// Largest encoded message, in bytes: the default 1 MiB frame minus room for header and slack.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024 - 1024;
/// Most LSAs in one update.
pub const MAX_LSAS_PER_UPDATE: usize = 4096;
/// Most headers in one acknowledgement or database summary (so a summary fits one message).
pub const MAX_HEADERS_PER_MESSAGE: usize = 32_768;
/// Bytes of the message prefix.
pub const MESSAGE_PREFIX_LEN: usize = 4;

const TYPE_UPDATE: u8 = 1;
const TYPE_ACK: u8 = 2;
const TYPE_DB_SUMMARY: u8 = 3;
const TYPE_SUMMARY_ACK: u8 = 4;

/// Which data-plane frame kind carries a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameKind {
    /// An `LSA` frame.
    Lsa,
    /// An `LSA_ACK` frame.
    LsaAck,
}

/// One flooding-protocol message between two neighbours.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// LSAs to install (and acknowledge).
    Update(Vec<LsaInstance>),
    /// Acknowledges the LSA instances named.
    Ack(Vec<LsaHeader>),
    /// Sent when an adjacency comes up: every LSA the sender holds in the scope it shares with
    /// the receiver. The receiver answers with the LSAs the sender lacks or holds older, and a
    /// [`Message::SummaryAck`].
    DbSummary(Vec<LsaHeader>),
    /// The receiver processed the sender's [`Message::DbSummary`]; stops its retransmission.
    SummaryAck,
}

impl Message {
    /// The frame kind the data plane should use for this message.
    #[must_use]
    pub const fn frame_kind(&self) -> FrameKind {
        match self {
            Message::Update(_) => FrameKind::Lsa,
            Message::Ack(_) | Message::DbSummary(_) | Message::SummaryAck => FrameKind::LsaAck,
        }
    }

    /// Bytes the encoding takes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        MESSAGE_PREFIX_LEN
            + match self {
                Message::Update(lsas) => lsas.iter().map(|i| i.lsa.encoded_len()).sum(),
                Message::Ack(h) | Message::DbSummary(h) => h.len() * LSA_HEADER_LEN,
                Message::SummaryAck => 0,
            }
    }

    /// Appends the encoding to `out`. Fails, leaving `out` untouched, when a count or the total
    /// size is over its limit (messages built by [`crate::flood`] never are).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let (ty, count, limit) = match self {
            Message::Update(l) => (TYPE_UPDATE, l.len(), MAX_LSAS_PER_UPDATE),
            Message::Ack(h) => (TYPE_ACK, h.len(), MAX_HEADERS_PER_MESSAGE),
            Message::DbSummary(h) => (TYPE_DB_SUMMARY, h.len(), MAX_HEADERS_PER_MESSAGE),
            Message::SummaryAck => (TYPE_SUMMARY_ACK, 0, 0),
        };
        if count > limit {
            return Err(CodecError::TooMany {
                field: "message items",
                limit,
                count,
            });
        }
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(CodecError::BadLength {
                field: "message",
                len,
                min: MESSAGE_PREFIX_LEN,
                max: MAX_MESSAGE_LEN,
            });
        }
        let count = u16::try_from(count).map_err(|_| CodecError::TooMany {
            field: "message items",
            limit,
            count,
        })?;
        out.reserve(len);
        out.push(ty);
        out.push(0);
        out.extend_from_slice(&count.to_be_bytes());
        match self {
            Message::Update(lsas) => {
                for i in lsas {
                    i.lsa.encode(i.age_s, out);
                }
            }
            Message::Ack(h) | Message::DbSummary(h) => {
                for x in h {
                    x.encode(out);
                }
            }
            Message::SummaryAck => {}
        }
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes one whole message. Never panics; every failure is a [`CodecError`].
    pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(CodecError::BadLength {
                field: "message",
                len: bytes.len(),
                min: MESSAGE_PREFIX_LEN,
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let ty = r.u8()?;
        let reserved = r.u8()?;
        if reserved != 0 {
            return Err(CodecError::UnknownFlags { flags: reserved });
        }
        let count = usize::from(r.u16()?);
        let msg = match ty {
            TYPE_UPDATE => {
                r.check_count(
                    "update LSAs",
                    count,
                    MAX_LSAS_PER_UPDATE,
                    crate::lsa::FIXED_LEN,
                )?;
                let mut lsas = Vec::with_capacity(count);
                for _ in 0..count {
                    lsas.push(Lsa::decode_from(&mut r)?);
                }
                Message::Update(lsas)
            }
            TYPE_ACK | TYPE_DB_SUMMARY => {
                r.check_count("headers", count, MAX_HEADERS_PER_MESSAGE, LSA_HEADER_LEN)?;
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    headers.push(LsaHeader::decode_from(&mut r)?);
                }
                if ty == TYPE_ACK {
                    Message::Ack(headers)
                } else {
                    Message::DbSummary(headers)
                }
            }
            TYPE_SUMMARY_ACK => {
                r.check_count("summary ack items", count, 0, 0)?;
                Message::SummaryAck
            }
            value => return Err(CodecError::UnknownMessageType { value }),
        };
        r.finish("message")?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DomainId, SeqNo};
    use crate::lsa::tests::{arb_lsa, n};
    use proptest::prelude::*;

    fn header(origin: u64) -> LsaHeader {
        LsaHeader {
            origin: n(origin),
            domain: DomainId(3),
            seq: SeqNo(9),
            checksum: 0xdead_beef,
            age_s: 4,
        }
    }

    #[test]
    fn kinds_and_empty_messages() {
        assert_eq!(Message::Update(vec![]).frame_kind(), FrameKind::Lsa);
        assert_eq!(Message::SummaryAck.frame_kind(), FrameKind::LsaAck);
        for m in [
            Message::SummaryAck,
            Message::Ack(vec![]),
            Message::DbSummary(vec![header(1), header(2)]),
        ] {
            let b = m.to_bytes().unwrap();
            assert_eq!(b.len(), m.encoded_len());
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn typed_errors() {
        assert_eq!(
            Message::decode(&[9, 0, 0, 0]),
            Err(CodecError::UnknownMessageType { value: 9 })
        );
        assert_eq!(
            Message::decode(&[2, 1, 0, 0]),
            Err(CodecError::UnknownFlags { flags: 1 })
        );
        assert!(matches!(
            Message::decode(&[2, 0, 0xff, 0xff]),
            Err(CodecError::TooMany { .. })
        ));
        assert!(matches!(
            Message::decode(&[2, 0, 0, 2]),
            Err(CodecError::Truncated { needed: 44, .. })
        ));
        assert!(matches!(
            Message::decode(&[4, 0, 0, 1]),
            Err(CodecError::TooMany { .. })
        ));
        assert!(matches!(
            Message::decode(&[4, 0, 0, 0, 0]),
            Err(CodecError::TrailingBytes { .. })
        ));
        let too_many = Message::Ack(vec![header(1); MAX_HEADERS_PER_MESSAGE + 1]);
        assert!(too_many.to_bytes().is_err());
    }

    proptest! {
        #[test]
        fn update_round_trip(lsas in proptest::collection::vec((arb_lsa(), any::<u16>()), 0..5)) {
            let m = Message::Update(
                lsas.into_iter().map(|(lsa, age_s)| LsaInstance { age_s, lsa }).collect(),
            );
            let b = m.to_bytes().unwrap();
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(Message::decode(&b).unwrap(), m);
        }

        #[test]
        fn decode_random_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decode_prefixed_random_never_panics(
            ty in 1u8..=4,
            count in any::<u16>(),
            rest in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut b = vec![ty, 0];
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(&rest);
            let _ = Message::decode(&b);
        }
    }
}
