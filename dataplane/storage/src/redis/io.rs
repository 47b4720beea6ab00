//! The I/O thread of one [`super::RedisStorage`]: the only place that talks to Redis.
//!
//! The thread owns the blocking connection (the sync client of the `redis` crate, with connect,
//! read and write timeouts) and a queue of writes in ticket order. It loops:
//!
//! 1. take in what the core's driver task sent (a batch of writes, or `Close`); when idle,
//!    block on the channel;
//! 2. send the front of the queue as one `MULTI` … `EXEC` transaction (at most
//!    `pipeline_writes_max` writes; a msg_id reservation, `INCRBY`, goes alone) and, once Redis
//!    answered, drop those writes from the queue and report [`FromIo::Confirmed`] up to the last
//!    ticket: the only message that lets the core advance its durable watermark;
//! 3. on a connection problem (refused, reset, timeout, EOF) or a transient error reply (`OOM`,
//!    `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY`, `MISCONF`): keep
//!    the queue, log, count, wait a jittered exponential backoff (still taking in batches), then
//!    reconnect if needed and send the same writes again. Every write is idempotent when
//!    replayed in order (`HSET`, `HDEL`, `SET`, `DEL`), so a transaction that was executed but
//!    whose answer was lost is harmless to resend; `INCRBY` is not, and a lost answer only
//!    skips a block of msg_ids;
//! 4. on any other error reply: report [`FromIo::Failed`] and stop. The write will never be
//!    confirmed; the core fails its log.
//!
//! Every report is followed by a wake of the driver task's [`AtomicWaker`] (a glommio waker may
//! be woken from another thread). The thread ends when the storage is dropped (`Stop`, or the
//! channel disconnects: queued writes are abandoned, as in a crash; a request in flight is
//! finished first) or, after `Close`, once the queue is empty.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redis::{Connection, ErrorKind, RedisError, Value};
use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use mesh_wal::MsgKey;
use mesh_wal::dedup::DedupConfig;

use super::backoff::Backoff;
use super::layout::{self, Keys, LoadedState, Pairs, RawState};
use crate::error::{RedisRefusal, StorageError};

/// One write of the log, with the data the I/O thread needs to send it.
#[derive(Debug)]
pub(super) enum Write {
    /// `HSET out key value`.
    Outbound { key: MsgKey, value: Vec<u8> },
    /// `HDEL out key`.
    Settle { key: MsgKey },
    /// `HSET in key value`, `HSET seen key ""`.
    Inbound { key: MsgKey, value: Vec<u8> },
    /// `HDEL in key`.
    Ack { key: MsgKey },
    /// `SET dedup snapshot`, `DEL seen`.
    Checkpoint { snapshot: Vec<u8> },
    /// `INCRBY msg_ids block_len`, alone; its answer is reported.
    Reserve { block_len: u64 },
}

impl Write {
    /// Payload bytes held for this write (what the queue bound counts).
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Outbound { value, .. } | Self::Inbound { value, .. } => value.len(),
            Self::Checkpoint { snapshot } => snapshot.len(),
            Self::Settle { .. } | Self::Ack { .. } | Self::Reserve { .. } => 0,
        }
    }
}

/// A write and its ticket.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) write: Write,
}

/// From the core to the thread.
#[derive(Debug)]
pub(super) enum ToIo {
    /// Writes in ticket order, after the ones sent before.
    Writes(Vec<Queued>),
    /// Confirm everything queued, report [`FromIo::Closed`], end.
    Close,
    /// The storage was dropped: end now, abandoning what is queued.
    Stop,
}

/// From the thread to the core.
#[derive(Debug)]
pub(super) enum FromIo {
    /// The start-up load (first message, exactly once).
    Loaded(Box<Result<LoadedState, StorageError>>),
    /// Redis confirmed every write up to ticket `up_to`: `writes` writes holding `bytes`.
    Confirmed {
        up_to: u64,
        writes: usize,
        bytes: usize,
        /// The answer of the msg_id reservation among them: ids reserved in total.
        reserved_total: Option<u64>,
    },
    /// Redis refused a write for good; the thread has stopped.
    Failed(RedisRefusal),
    /// Everything was confirmed after `Close`; the thread has stopped.
    Closed,
}

/// Counters of the thread, read by [`super::RedisStorage::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicBool,
    pub(super) connects: AtomicU64,
    pub(super) connection_errors: AtomicU64,
    pub(super) server_errors: AtomicU64,
    pub(super) transactions: AtomicU64,
    pub(super) writes_confirmed: AtomicU64,
    pub(super) writes_resent: AtomicU64,
}

fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(u64::try_from(by).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// What the thread needs to know, fixed at start.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) keys: Keys,
    pub(super) dedup: DedupConfig,
    pub(super) node_id: u64,
    pub(super) core: u8,
    pub(super) connect_timeout: Duration,
    pub(super) io_timeout: Duration,
    pub(super) open_timeout: Duration,
    pub(super) pipeline_writes_max: usize,
    pub(super) pipeline_bytes_max: usize,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) jitter_seed: u64,
}

/// The thread's ends of the channels and the state it shares with the core.
#[derive(Debug)]
pub(super) struct Endpoints {
    pub(super) to_io: Receiver<ToIo>,
    pub(super) from_io: Sender<FromIo>,
    pub(super) waker: Arc<AtomicWaker>,
    pub(super) counters: Arc<Counters>,
}

/// Starts the thread: it loads the core's state first and reports [`FromIo::Loaded`].
pub(super) fn spawn(
    client: ::redis::Client,
    settings: Settings,
    endpoints: Endpoints,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("mesh-redis-c{}", settings.core);
    let addr = client.get_connection_info().addr().to_string();
    let backoff = Backoff::new(
        settings.backoff_min,
        settings.backoff_max,
        settings.jitter_seed,
    );
    let thread = IoThread {
        client,
        addr,
        settings,
        endpoints,
        connection: None,
        queue: VecDeque::new(),
        closing: false,
        stopped: false,
        backoff,
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || thread.run())
}

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Keep the writes, wait, send them again (over a new connection if `reconnect`).
    Retry { reconnect: bool },
    /// Never retried: the log fails.
    Refused(RedisRefusal),
}

/// Error codes of replies that may succeed if sent again later.
const TRANSIENT_CODES: [&str; 8] = [
    "OOM",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "MISCONF",
];

/// Sorts a failed request into retry or refusal.
fn classify(error: &RedisError) -> Failure {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.kind() == ErrorKind::Parse
    {
        return Failure::Retry { reconnect: true };
    }
    if error.kind() == ErrorKind::AuthenticationFailed {
        return Failure::Refused(RedisRefusal::NoPermission);
    }
    let mut codes: Vec<String> = error.code().map(str::to_owned).into_iter().collect();
    if let Some(errors) = error.clone().into_server_errors() {
        codes.extend(errors.iter().map(|(_, error)| error.code().to_owned()));
    }
    let has = |wanted: &[&str]| codes.iter().any(|code| wanted.contains(&code.as_str()));
    if has(&TRANSIENT_CODES) {
        Failure::Retry { reconnect: false }
    } else if has(&["WRONGTYPE"]) {
        Failure::Refused(RedisRefusal::WrongType)
    } else if has(&["NOPERM", "NOAUTH", "WRONGPASS"]) {
        Failure::Refused(RedisRefusal::NoPermission)
    } else if error.kind() == ErrorKind::UnexpectedReturnType {
        Failure::Refused(RedisRefusal::UnexpectedReply)
    } else {
        Failure::Refused(RedisRefusal::Rejected)
    }
}

/// A failed request: the client's error, or a reply of the wrong shape.
#[derive(Debug)]
enum RequestError {
    Redis(RedisError),
    Unexpected(&'static str),
}

impl From<RedisError> for RequestError {
    fn from(error: RedisError) -> Self {
        Self::Redis(error)
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(error) => error.fmt(f),
            Self::Unexpected(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl RequestError {
    fn failure(&self) -> Failure {
        match self {
            Self::Redis(error) => classify(error),
            Self::Unexpected(_) => Failure::Refused(RedisRefusal::UnexpectedReply),
        }
    }
}

struct IoThread {
    client: ::redis::Client,
    /// `host:port` of the server, for the logs (no credentials).
    addr: String,
    settings: Settings,
    endpoints: Endpoints,
    connection: Option<Connection>,
    /// Writes not confirmed yet, in ticket order.
    queue: VecDeque<Queued>,
    closing: bool,
    /// `Stop` arrived or the channel disconnected.
    stopped: bool,
    backoff: Backoff,
}

impl IoThread {
    fn run(mut self) {
        let loaded = self.load();
        let ok = loaded.is_ok();
        self.report(FromIo::Loaded(Box::new(loaded)));
        if !ok {
            return;
        }
        loop {
            if !self.take_in() {
                tracing::debug!(
                    redis = %self.addr,
                    abandoned_writes = self.queue.len(),
                    "Redis I/O thread stops: storage dropped"
                );
                return;
            }
            if self.queue.is_empty() {
                if self.closing {
                    self.report(FromIo::Closed);
                    return;
                }
                continue;
            }
            let reservation = self.queue.front().and_then(|front| match front.write {
                Write::Reserve { block_len } => Some((front.seq, block_len)),
                _ => None,
            });
            let sent = match reservation {
                Some((seq, block_len)) => self.reserve(seq, block_len),
                None => self.send_transaction(),
            };
            match sent {
                Ok(()) => {
                    if self.backoff.attempts() > 0 {
                        tracing::info!(
                            redis = %self.addr,
                            node_id = self.settings.node_id,
                            core = self.settings.core,
                            failed_attempts = self.backoff.attempts(),
                            queued_writes = self.queue.len(),
                            "Redis answers again; queued writes are being confirmed"
                        );
                    }
                    self.backoff.reset();
                }
                Err((error, writes)) => match error.failure() {
                    Failure::Retry { reconnect } => {
                        if !self.retry_later(&error, reconnect, writes) {
                            return;
                        }
                    }
                    Failure::Refused(refusal) => {
                        tracing::error!(
                            redis = %self.addr,
                            node_id = self.settings.node_id,
                            core = self.settings.core,
                            %error,
                            %refusal,
                            unconfirmed_writes = self.queue.len(),
                            "Redis refused a write for good; the storage of this core has failed"
                        );
                        self.report(FromIo::Failed(refusal));
                        return;
                    }
                },
            }
        }
    }

    /// Sends `message` to the core and wakes its driver task. A core that is gone is ignored.
    fn report(&self, message: FromIo) {
        if self.endpoints.from_io.send(message).is_ok() {
            self.endpoints.waker.wake();
        }
    }

    fn accept(&mut self, message: ToIo) {
        match message {
            ToIo::Writes(writes) => self.queue.extend(writes),
            ToIo::Close => self.closing = true,
            ToIo::Stop => self.stopped = true,
        }
    }

    /// Takes in what the core sent; blocks while there is nothing to do. `false`: the storage
    /// was dropped.
    fn take_in(&mut self) -> bool {
        if self.queue.is_empty() && !self.closing && !self.stopped {
            match self.endpoints.to_io.recv() {
                Ok(message) => self.accept(message),
                Err(_) => self.stopped = true,
            }
        }
        while !self.stopped {
            match self.endpoints.to_io.try_recv() {
                Ok(message) => self.accept(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.stopped = true,
            }
        }
        !self.stopped
    }

    /// Waits `delay`, taking in batches meanwhile. `false`: the storage was dropped.
    fn pause(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        while !self.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.endpoints.to_io.recv_timeout(left) {
                Ok(message) => self.accept(message),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => self.stopped = true,
            }
        }
        false
    }

    /// Logs and counts a retryable failure of a request carrying `writes` writes, then waits
    /// the backoff. `false`: the storage was dropped meanwhile.
    fn retry_later(&mut self, error: &RequestError, reconnect: bool, writes: usize) -> bool {
        let counters = &self.endpoints.counters;
        if reconnect {
            self.connection = None;
            counters.connected.store(false, Ordering::Relaxed);
            bump(&counters.connection_errors, 1);
        } else {
            bump(&counters.server_errors, 1);
        }
        bump(&counters.writes_resent, writes);
        let delay = self.backoff.next_delay();
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let attempt = self.backoff.attempts();
        let queued_writes = self.queue.len();
        let (node_id, core) = (self.settings.node_id, self.settings.core);
        if attempt == 1 {
            tracing::error!(
                redis = %self.addr, node_id, core, %error, reconnect, queued_writes, retry_in_ms,
                "Redis request failed; queued writes are kept (not durable) and sent again"
            );
        } else {
            tracing::warn!(
                redis = %self.addr, node_id, core, %error, reconnect, queued_writes, retry_in_ms,
                attempt, "Redis still failing; retrying"
            );
        }
        self.pause(delay)
    }

    /// The open connection, or a new one.
    fn connection(&mut self) -> Result<&mut Connection, RedisError> {
        let connection = if let Some(connection) = self.connection.take() {
            connection
        } else {
            let connection = self
                .client
                .get_connection_with_timeout(self.settings.connect_timeout)?;
            connection.set_read_timeout(Some(self.settings.io_timeout))?;
            connection.set_write_timeout(Some(self.settings.io_timeout))?;
            let counters = &self.endpoints.counters;
            bump(&counters.connects, 1);
            counters.connected.store(true, Ordering::Relaxed);
            tracing::debug!(redis = %self.addr, "connected to Redis");
            connection
        };
        Ok(self.connection.insert(connection))
    }

    /// Reads the core's state (one transaction), retrying connection problems until
    /// `open_timeout` has passed.
    fn load(&mut self) -> Result<LoadedState, StorageError> {
        let deadline = Instant::now() + self.settings.open_timeout;
        loop {
            let error = match self.try_load() {
                Ok(raw) => {
                    self.backoff.reset();
                    return layout::decode(raw, &self.settings.keys, self.settings.dedup);
                }
                Err(error) => error,
            };
            let reconnect = match error.failure() {
                Failure::Refused(_) => {
                    return Err(StorageError::Redis {
                        op: "load",
                        detail: format!("{}: {error}", self.addr),
                    });
                }
                Failure::Retry { reconnect } => reconnect,
            };
            if reconnect {
                self.connection = None;
                bump(&self.endpoints.counters.connection_errors, 1);
            } else {
                bump(&self.endpoints.counters.server_errors, 1);
            }
            let delay = self.backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(StorageError::Redis {
                    op: "connect",
                    detail: format!(
                        "{} did not answer within open_timeout {:?}: {error}",
                        self.addr, self.settings.open_timeout
                    ),
                });
            }
            tracing::warn!(
                redis = %self.addr,
                node_id = self.settings.node_id,
                core = self.settings.core,
                %error,
                attempt = self.backoff.attempts(),
                "cannot load this core's state from Redis yet; retrying"
            );
            if !self.pause(delay) {
                return Err(StorageError::Redis {
                    op: "load",
                    detail: "the storage was dropped while opening".to_owned(),
                });
            }
        }
    }

    fn try_load(&mut self) -> Result<RawState, RequestError> {
        let keys = &self.settings.keys;
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(&keys.outbound)
            .cmd("HGETALL")
            .arg(&keys.inbound)
            .cmd("HKEYS")
            .arg(&keys.seen)
            .cmd("GET")
            .arg(&keys.dedup);
        let reply: Value = pipe.query(self.connection()?)?;
        let Value::Array(items) = reply else {
            return Err(RequestError::Unexpected("EXEC of the load is not an array"));
        };
        let Ok([outbound, inbound, seen, dedup]) = <[Value; 4]>::try_from(items) else {
            return Err(RequestError::Unexpected(
                "EXEC of the load has not 4 replies",
            ));
        };
        Ok(RawState {
            outbound: pairs(outbound)?,
            inbound: pairs(inbound)?,
            seen: bulk_strings(seen)?,
            dedup: optional_bulk_string(dedup)?,
        })
    }

    /// Sends the writes at the front of the queue (up to a reservation, at most
    /// `pipeline_writes_max` writes and, past the first, `pipeline_bytes_max` bytes) as one
    /// transaction.
    /// On failure, the error and how many writes it carried.
    fn send_transaction(&mut self) -> Result<(), (RequestError, usize)> {
        let keys = &self.settings.keys;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let (mut writes, mut commands, mut bytes, mut up_to) = (0, 0, 0, 0);
        for queued in self.queue.iter().take(self.settings.pipeline_writes_max) {
            let write_bytes = queued.write.bytes();
            if writes > 0 && bytes + write_bytes > self.settings.pipeline_bytes_max {
                break;
            }
            let added = add_commands(&mut pipe, keys, &queued.write);
            if added == 0 {
                break;
            }
            commands += added;
            writes += 1;
            bytes += write_bytes;
            up_to = queued.seq;
        }
        if writes == 0 {
            return Ok(());
        }
        let reply: Value = match self.connection() {
            Ok(connection) => pipe.query(connection),
            Err(error) => Err(error),
        }
        .map_err(|error| (error.into(), writes))?;
        match reply {
            Value::Array(replies) if replies.len() == commands => {}
            _ => {
                return Err((
                    RequestError::Unexpected("EXEC did not answer every command"),
                    writes,
                ));
            }
        }
        self.queue.drain(..writes);
        let counters = &self.endpoints.counters;
        bump(&counters.transactions, 1);
        bump(&counters.writes_confirmed, writes);
        self.report(FromIo::Confirmed {
            up_to,
            writes,
            bytes,
            reserved_total: None,
        });
        Ok(())
    }

    /// Reserves a msg_id block (`INCRBY`) and reports Redis's answer.
    fn reserve(&mut self, seq: u64, block_len: u64) -> Result<(), (RequestError, usize)> {
        let mut command = ::redis::cmd("INCRBY");
        command.arg(&self.settings.keys.msg_ids).arg(block_len);
        let reply: Value = match self.connection() {
            Ok(connection) => command.query(connection),
            Err(error) => Err(error),
        }
        .map_err(|error| (error.into(), 1))?;
        let total = match reply {
            Value::Int(total) => u64::try_from(total).ok(),
            _ => None,
        };
        let Some(total) = total else {
            return Err((
                RequestError::Unexpected("INCRBY did not answer a non-negative integer"),
                1,
            ));
        };
        self.queue.pop_front();
        let counters = &self.endpoints.counters;
        bump(&counters.transactions, 1);
        bump(&counters.writes_confirmed, 1);
        self.report(FromIo::Confirmed {
            up_to: seq,
            writes: 1,
            bytes: 0,
            reserved_total: Some(total),
        });
        Ok(())
    }
}

/// Adds the commands of `write` to a transaction; returns how many (0: not part of one).
fn add_commands(pipe: &mut ::redis::Pipeline, keys: &Keys, write: &Write) -> usize {
    match write {
        Write::Outbound { key, value } => {
            pipe.cmd("HSET")
                .arg(&keys.outbound)
                .arg(&layout::encode_field(*key)[..])
                .arg(&value[..]);
            1
        }
        Write::Settle { key } => {
            pipe.cmd("HDEL")
                .arg(&keys.outbound)
                .arg(&layout::encode_field(*key)[..]);
            1
        }
        Write::Inbound { key, value } => {
            let field = layout::encode_field(*key);
            pipe.cmd("HSET")
                .arg(&keys.inbound)
                .arg(&field[..])
                .arg(&value[..])
                .cmd("HSET")
                .arg(&keys.seen)
                .arg(&field[..])
                .arg(&b""[..]);
            2
        }
        Write::Ack { key } => {
            pipe.cmd("HDEL")
                .arg(&keys.inbound)
                .arg(&layout::encode_field(*key)[..]);
            1
        }
        Write::Checkpoint { snapshot } => {
            pipe.cmd("SET")
                .arg(&keys.dedup)
                .arg(&snapshot[..])
                .cmd("DEL")
                .arg(&keys.seen);
            2
        }
        Write::Reserve { .. } => 0,
    }
}

fn bulk_string(value: Value) -> Result<Vec<u8>, RequestError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        _ => Err(RequestError::Unexpected(
            "a hash field or value is not a string",
        )),
    }
}

/// The field/value pairs of an `HGETALL` reply (a flat array in RESP2, a map in RESP3).
fn pairs(value: Value) -> Result<Pairs, RequestError> {
    match value {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(RequestError::Unexpected("HGETALL answered an odd count"));
            }
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                pairs.push((bulk_string(field)?, bulk_string(value)?));
            }
            Ok(pairs)
        }
        Value::Map(entries) => entries
            .into_iter()
            .map(|(field, value)| Ok((bulk_string(field)?, bulk_string(value)?)))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        _ => Err(RequestError::Unexpected("HGETALL did not answer an array")),
    }
}

/// The strings of an `HKEYS` reply.
fn bulk_strings(value: Value) -> Result<Vec<Vec<u8>>, RequestError> {
    match value {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(bulk_string).collect(),
        Value::Nil => Ok(Vec::new()),
        _ => Err(RequestError::Unexpected("HKEYS did not answer an array")),
    }
}

/// The value of a `GET` reply, `None` for a missing key.
fn optional_bulk_string(value: Value) -> Result<Option<Vec<u8>>, RequestError> {
    match value {
        Value::Nil => Ok(None),
        other => bulk_string(other).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_retry_and_refusal() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert_eq!(classify(&io), Failure::Retry { reconnect: true });
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(classify(&refused), Failure::Retry { reconnect: true });
        let oom = ::redis::make_extension_error("OOM".to_owned(), Some("used memory".to_owned()));
        assert_eq!(classify(&oom), Failure::Retry { reconnect: false });
        let wrong =
            ::redis::make_extension_error("WRONGTYPE".to_owned(), Some("wrong kind".to_owned()));
        assert_eq!(classify(&wrong), Failure::Refused(RedisRefusal::WrongType));
        let noperm = ::redis::make_extension_error("NOPERM".to_owned(), None);
        assert_eq!(
            classify(&noperm),
            Failure::Refused(RedisRefusal::NoPermission)
        );
        let other = ::redis::make_extension_error("ERR".to_owned(), Some("syntax".to_owned()));
        assert_eq!(classify(&other), Failure::Refused(RedisRefusal::Rejected));
        let shape: RedisError = (ErrorKind::UnexpectedReturnType, "shape").into();
        assert_eq!(
            classify(&shape),
            Failure::Refused(RedisRefusal::UnexpectedReply)
        );
    }

    #[test]
    fn replies_are_parsed_without_panics() {
        let flat = Value::Array(vec![
            Value::BulkString(b"f".to_vec()),
            Value::BulkString(b"v".to_vec()),
        ]);
        assert_eq!(pairs(flat).unwrap(), [(b"f".to_vec(), b"v".to_vec())]);
        assert!(pairs(Value::Array(vec![Value::Nil])).is_err());
        assert!(pairs(Value::Int(3)).is_err());
        assert!(pairs(Value::Array(vec![Value::Int(1), Value::Int(2)])).is_err());
        assert_eq!(optional_bulk_string(Value::Nil).unwrap(), None);
        assert!(bulk_strings(Value::Okay).is_err());
    }
}
