//! Test helper for `tests/crash.rs`: opens a `file` log in `batch` mode, reports what it
//! recovered, then appends outbound messages forever and reports each one as it becomes
//! durable, until it is killed.
//!
//! Usage: `wal-crash-writer <dir>`. Output, one line each, flushed:
//! - `R <msg_id> ok|bad`: an unsettled message recovered at start (`bad`: frame altered);
//! - `READY <count>`: recovery done;
//! - `I <msg_id>`: allocated, about to be appended;
//! - `A <msg_id>`: appended (not yet durable);
//! - `D <msg_id>`: durable (PERSISTED could be answered);
//! - `T <msg_id>`: its settlement (DELIVERED heard) is appended (not yet durable);
//! - `S <msg_id>`: its settlement is durable.
//!
//! Recovered messages with `msg_id % 4 != 0` are settled at start; new ones, every other one
//! once durable. A frame's bytes are a function of its msg_id, so recovery can check them.

use std::io::Write;
use std::rc::Rc;

use mesh_storage::{FileConfig, FileStorage, MsgKey, Storage, StorageError, Ticket};

const SRC_NODE: u64 = 1;

/// The frame of message `msg_id`: 16..=295 bytes, each a function of the id and its position.
fn frame_of(msg_id: u64) -> Vec<u8> {
    let len = 16 + usize::try_from(msg_id % 280).unwrap_or(0);
    (0..len)
        .map(|index| {
            let value = msg_id.wrapping_mul(31).wrapping_add(index as u64);
            value.to_le_bytes()[0]
        })
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the test is gone: nothing left to report to.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn key(msg_id: u64) -> MsgKey {
    MsgKey {
        src_node: SRC_NODE,
        msg_id,
    }
}

/// Retries `op` through back-pressure.
async fn retry<T>(
    storage: &FileStorage,
    mut op: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    loop {
        match op() {
            Err(StorageError::Busy { retry_after, .. }) => match retry_after {
                Some(ticket) if storage.durable() < ticket => {
                    storage.wait_durable(ticket).await?;
                }
                _ => storage.wait_progress().await?,
            },
            other => return other,
        }
    }
}

async fn run(dir: String) -> Result<(), StorageError> {
    let config = FileConfig::new(dir, 0)
        .with_segment_len(1 << 20)
        .with_segments(8);
    let storage = Rc::new(FileStorage::open(config).await?);
    let recovered = storage.take_recovered();
    for message in &recovered.outbound {
        let ok = message.key.src_node == SRC_NODE && message.frame == frame_of(message.key.msg_id);
        say(&format!(
            "R {} {}",
            message.key.msg_id,
            if ok { "ok" } else { "bad" }
        ));
    }
    say(&format!("READY {}", recovered.outbound.len()));
    let mut settled = Vec::new();
    for message in &recovered.outbound {
        if message.key.msg_id % 4 != 0 {
            let ticket = retry(&storage, || storage.mark_settled(message.key)).await?;
            say(&format!("T {}", message.key.msg_id));
            settled.push((message.key.msg_id, ticket));
        }
    }
    if let Some(&(_, last)) = settled.last() {
        storage.wait_durable(last).await?;
    }
    for (msg_id, _) in settled {
        say(&format!("S {msg_id}"));
    }
    let mut round: u64 = 0;
    loop {
        round += 1;
        let batch = 1 + round % 16;
        let mut pending: Vec<(u64, Ticket)> = Vec::new();
        for _ in 0..batch {
            let msg_id = retry(&storage, || storage.allocate_msg_id()).await?;
            say(&format!("I {msg_id}"));
            let frame = frame_of(msg_id);
            let ticket = retry(&storage, || storage.append_outbound(key(msg_id), &frame)).await?;
            say(&format!("A {msg_id}"));
            pending.push((msg_id, ticket));
        }
        let mut settles = Vec::new();
        for (msg_id, ticket) in pending {
            storage.wait_durable(ticket).await?;
            say(&format!("D {msg_id}"));
            if msg_id % 2 == 0 {
                let settle = retry(&storage, || storage.mark_settled(key(msg_id))).await?;
                say(&format!("T {msg_id}"));
                settles.push((msg_id, settle));
            }
        }
        for (msg_id, ticket) in settles {
            storage.wait_durable(ticket).await?;
            say(&format!("S {msg_id}"));
        }
    }
}

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: wal-crash-writer <dir>");
        std::process::exit(2);
    };
    let handle = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || run(dir))
    {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("wal-crash-writer: executor: {error}");
            std::process::exit(1);
        }
    };
    match handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            say(&format!("ERROR {error}"));
            eprintln!("wal-crash-writer: {error}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("wal-crash-writer: executor thread panicked");
            std::process::exit(1);
        }
    }
}
