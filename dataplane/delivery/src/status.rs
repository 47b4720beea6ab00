//! The status ladder of a message (SPEC §4, `mesh.proto`'s `MessageStatus`).

use std::time::Instant;

/// Where a message is. The order of the first six is the ladder a message climbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Accepted from the application, not yet durable.
    Accepted,
    /// Durable at the origin.
    Persisted,
    /// Sent toward the destination at least once.
    Forwarded,
    /// Stored at the destination.
    Delivered,
    /// Delivered and the origin asked for an application ack, which has not come yet.
    WaitingForClientAck,
    /// The destination application accepted it (final).
    AckSuccess,
    /// The destination application rejected it (final).
    AckFailure,
    /// The destination node is not known anywhere (final).
    Undeliverable,
    /// The destination is known but unreachable now; kept and retried.
    PendingNode,
    /// Failed for good (final); see the reason.
    Failed,
}

impl MessageStatus {
    /// The `mesh.v1.MessageStatus` number (what gRPC answers and native-client receipts carry).
    pub fn code(self) -> u16 {
        match self {
            MessageStatus::Accepted => 1,
            MessageStatus::Persisted => 2,
            MessageStatus::Forwarded => 3,
            MessageStatus::Delivered => 4,
            MessageStatus::WaitingForClientAck => 5,
            MessageStatus::AckSuccess => 6,
            MessageStatus::AckFailure => 7,
            MessageStatus::Undeliverable => 8,
            MessageStatus::PendingNode => 9,
            MessageStatus::Failed => 11,
        }
    }

    /// Whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageStatus::AckSuccess
                | MessageStatus::AckFailure
                | MessageStatus::Undeliverable
                | MessageStatus::Failed
        )
    }
}

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// Its hop limit ran out on the way.
    TtlExpired,
    /// Its deadline passed before it was delivered.
    Expired,
    /// Policy denies its destination.
    RejectedByPolicy,
    /// It is larger than the destination accepts.
    TooLarge,
    /// It was retransmitted the maximum number of times.
    RetriesExhausted,
}

impl FailReason {
    /// The `mesh.v1.FailureReason` number. Running out of attempts is the proto's EXPIRED (given
    /// up after staying pending too long).
    pub fn code(self) -> u16 {
        match self {
            FailReason::TtlExpired => 1,
            FailReason::Expired | FailReason::RetriesExhausted => 2,
            FailReason::RejectedByPolicy => 3,
            FailReason::TooLarge => 4,
        }
    }

    /// In words, for status messages.
    pub fn describe(self) -> &'static str {
        match self {
            FailReason::TtlExpired => "the hop limit ran out on the way",
            FailReason::Expired => "not delivered before its deadline",
            FailReason::RejectedByPolicy => "a policy denies the destination",
            FailReason::TooLarge => "larger than the destination or the store accepts",
            FailReason::RetriesExhausted => "given up after the most transmissions allowed",
        }
    }
}

/// A message's status and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusEntry {
    /// The status.
    pub status: MessageStatus,
    /// For `Failed`: why.
    pub reason: Option<FailReason>,
    /// When the status last changed.
    pub changed_at: Instant,
}
