//! Exactly-once delivery between an origin node and a destination node (SPEC §5), as sans-IO
//! state machines.
//!
//! - [`outbox::Outbox`] (origin): every message accepted here climbs the status ladder of
//!   SPEC §4 — ACCEPTED → PERSISTED → FORWARDED → DELIVERED → WAITING_FOR_CLIENT_ACK →
//!   ACK_SUCCESS | ACK_FAILURE, or PENDING_NODE / FAILED — and is retransmitted with
//!   exponential backoff until the destination's DELIVERED arrives, and at once when routes
//!   change or a peer comes back.
//! - [`inbox::Inbox`] (destination): deduplicates by (src_node, msg_id) with `mesh-wal`'s
//!   window, answers DELIVERED only once the message is persisted (and again for every
//!   retransmission, since the origin may have missed it), hands each message to a subscriber
//!   until the application acks it (redelivering after a timeout), and turns the application's
//!   ack into an ACK for the origin.
//!
//! Persistence is the caller's: the machines say when a record must be made durable and wait
//! for `handle_persisted`. Time is an argument; nothing here does I/O. The status table is
//! bounded: final statuses are kept for the most recent [`outbox::OutboxConfig::status_kept`]
//! messages.

#![forbid(unsafe_code)]

pub mod inbox;
pub mod outbox;
pub mod status;

pub use inbox::{Inbox, InboxConfig, InboxError, InboxTransmit, Offer, Verdict};
pub use outbox::{Outbox, OutboxConfig, OutboxError, OutboxEvent, Retransmit};
pub use status::{FailReason, MessageStatus, StatusEntry};
