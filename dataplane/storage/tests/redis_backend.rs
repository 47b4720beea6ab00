//! The `redis` backend against a real `redis-server` that each test starts on its own free
//! loopback port (and kills when done), on real glommio executors: round trip and durability,
//! takeover by a fresh instance, dedup and msg_ids across restarts, the server killed and
//! restarted mid-stream, the bounded queue, and error replies as typed errors.
//!
//! The server binary is `$MESH_REDIS_SERVER`, else `/usr/bin/redis-server`, else
//! `redis-server` on the `PATH`. A missing server fails the tests (CI installs it).

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_storage::error::FatalError;
use mesh_storage::{
    DurabilityMode, Inbound, MsgKey, RecoveredState, RedisConfig, RedisRefusal, RedisStorage,
    Storage, StorageError, Ticket,
};

/// A `redis-server` of one test: its own port and directory; killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// AOF on with `appendfsync always`: what was confirmed survives a kill.
    persistent: bool,
}

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MESH_REDIS_SERVER") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from("/usr/bin/redis-server");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("redis-server")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    fn start(persistent: bool) -> Self {
        let mut last_error = String::new();
        for _ in 0..10 {
            let mut server = Self {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                persistent,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Another process may have taken the port in between: try another.
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let binary = server_binary();
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().expect("utf-8 tempdir").to_owned();
        let logfile = self.dir.path().join("redis.log");
        let mut command = Command::new(&binary);
        command
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--dir", &dir, "--daemonize", "no"])
            .arg("--logfile")
            .arg(&logfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found ({}): the redis backend tests need a real Redis \
                 server. Install it (`apt-get install redis-server`) or point \
                 MESH_REDIS_SERVER at the binary; CI installs it.",
                binary.display()
            ),
            Err(error) => panic!("cannot start {}: {error}", binary.display()),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&logfile).unwrap_or_default();
                return Err(format!(
                    "redis-server exited ({status}) on port {port}:\n{log}"
                ));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("redis-server on port {port} never answered PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `+PONG` (not `-LOADING`) right now.
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server dies as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (the AOF is reloaded when on).
    fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait()
            .expect("redis-server restarts on its port");
    }

    /// A blocking client for looking at or tampering with the data.
    fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("test connection to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(url: &str, node_id: u64, core: u8) -> RedisConfig {
    let mut config = RedisConfig::new(url, node_id, core)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .with_msg_id_block_len(64);
    config.open_timeout = Duration::from_secs(10);
    config.io_timeout = Duration::from_secs(2);
    config
}

fn frame(n: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|index| (n * 31 + index).to_le_bytes()[0])
        .collect()
}

fn out_key(msg_id: u64) -> MsgKey {
    MsgKey {
        src_node: 7,
        msg_id,
    }
}

fn in_key(src_node: u64, msg_id: u64) -> MsgKey {
    MsgKey { src_node, msg_id }
}

/// `future`, or a panic naming `what` after `secs` seconds.
async fn within<T>(secs: u64, what: &str, future: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(Duration::from_secs(secs)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out after {secs} s: {what}"))
}

/// A msg_id, waiting for a reservation when none is confirmed yet.
async fn allocate(storage: &RedisStorage) -> u64 {
    loop {
        match storage.allocate_msg_id() {
            Ok(id) => return id,
            Err(StorageError::Busy {
                retry_after: Some(ticket),
                ..
            }) => storage.wait_durable(ticket).await.unwrap(),
            Err(StorageError::Busy { .. }) => storage.wait_progress().await.unwrap(),
            Err(error) => panic!("allocate_msg_id: {error}"),
        }
    }
}

fn keys_and_frames(messages: Vec<mesh_storage::StoredMessage>) -> Vec<(MsgKey, Vec<u8>)> {
    messages
        .into_iter()
        .map(|message| (message.key, message.frame))
        .collect()
}

#[test]
fn round_trip_and_durability() {
    let server = RedisServer::start(false);
    let url = server.url();
    let (expected_out, expected_in) = common::run(move || async move {
        let mut config = config(&url, 7, 0);
        // Small transactions: many of them, none over the bounds.
        config.pipeline_writes_max = 8;
        config.pipeline_bytes_max = 1000;
        let storage = RedisStorage::open(config).await.unwrap();
        assert_eq!(storage.take_recovered(), RecoveredState::default());
        assert_eq!(storage.mode(), DurabilityMode::Batch);
        let mut expected_out = 0;
        let mut previous = Ticket(0);
        let mut last = Ticket(0);
        for n in 0..50_u64 {
            let id = allocate(&storage).await;
            assert_eq!(id >> 56, 0, "core 0's partition");
            last = storage
                .append_outbound(out_key(id), &frame(n, 100))
                .unwrap();
            assert!(last > previous, "tickets increase");
            previous = last;
            if n % 5 == 0 {
                last = storage.mark_settled(out_key(id)).unwrap();
            } else {
                expected_out += 1;
            }
        }
        let mut expected_in = 0;
        for n in 1..=30_u64 {
            let Inbound::New(ticket) = storage.append_inbound(in_key(9, n), b"in").unwrap() else {
                panic!("first arrival of {n} reported duplicate");
            };
            last = ticket;
            assert!(matches!(
                storage.append_inbound(in_key(9, n), b"in").unwrap(),
                Inbound::Duplicate(ticket) if ticket >= last
            ));
            assert!(storage.is_duplicate(in_key(9, n)));
            if n % 2 == 0 {
                last = storage.mark_acked(in_key(9, n)).unwrap();
            } else {
                expected_in += 1;
            }
        }
        assert!(!storage.is_duplicate(in_key(9, 31)));
        within(10, "durability", storage.wait_durable(last))
            .await
            .unwrap();
        assert!(storage.durable() >= last);
        let stats = storage.stats();
        assert!(stats.connected);
        assert_eq!(stats.connection_errors, 0);
        assert!(stats.writes_confirmed >= 50 + 30, "{stats:?}");
        assert!(
            stats.transactions >= stats.writes_confirmed / 8,
            "{stats:?}"
        );
        within(10, "close", storage.close()).await.unwrap();
        (expected_out, expected_in)
    });
    // What the server holds is exactly what is owed.
    let mut client = server.client();
    let prefix = RedisConfig::key_prefix(7, 0);
    let out: usize = redis::cmd("HLEN")
        .arg(format!("{prefix}out"))
        .query(&mut client)
        .unwrap();
    let inbound: usize = redis::cmd("HLEN")
        .arg(format!("{prefix}in"))
        .query(&mut client)
        .unwrap();
    assert_eq!((out, inbound), (expected_out, expected_in));
}

#[test]
fn takeover_recovers_exactly_the_unsettled_in_order() {
    let server = RedisServer::start(false);
    let url = server.url();
    let first = url.clone();
    let (expected_out, expected_in) = common::run(move || async move {
        let storage = RedisStorage::open(config(&first, 7, 2)).await.unwrap();
        // Neighbours on the same server: another core, another node.
        let other_core = RedisStorage::open(config(&first, 7, 3)).await.unwrap();
        let other_node = RedisStorage::open(config(&first, 8, 2)).await.unwrap();
        let mut expected_out = Vec::new();
        let mut expected_in = Vec::new();
        let mut last = Ticket(0);
        for n in 0..120_u64 {
            let id = allocate(&storage).await;
            let body = frame(n, 10 + usize::try_from(n % 40).unwrap());
            last = storage.append_outbound(out_key(id), &body).unwrap();
            if n % 3 == 0 {
                last = storage.mark_settled(out_key(id)).unwrap();
            } else {
                expected_out.push((out_key(id), body));
            }
            if n % 4 == 0 {
                let body = frame(n + 1000, 32);
                let key = in_key(20 + n % 3, n + 1);
                assert!(matches!(
                    storage.append_inbound(key, &body).unwrap(),
                    Inbound::New(_)
                ));
                if n % 8 == 0 {
                    last = storage.mark_acked(key).unwrap();
                } else {
                    expected_in.push((key, body));
                }
            }
            if n % 10 == 0 {
                // Spread the writes over many transactions.
                storage.wait_durable(last).await.unwrap();
            }
        }
        let neighbour = other_core.append_outbound(out_key(1), b"core 3").unwrap();
        let stranger = other_node.append_inbound(in_key(1, 1), b"node 8").unwrap();
        within(10, "durability", storage.wait_durable(last))
            .await
            .unwrap();
        other_core.wait_durable(neighbour).await.unwrap();
        other_node.wait_durable(stranger.ticket()).await.unwrap();
        // A crash: no close.
        drop(storage);
        (expected_out, expected_in)
    });

    let second = url.clone();
    common::run(move || async move {
        let storage = RedisStorage::open(config(&second, 7, 2)).await.unwrap();
        let recovered = storage.take_recovered();
        assert!(recovered.truncated.is_none());
        assert_eq!(keys_and_frames(recovered.outbound), expected_out);
        assert_eq!(keys_and_frames(recovered.inbound), expected_in);
        assert_eq!(storage.take_recovered(), RecoveredState::default());
        // The replacement finishes the work.
        let mut last = storage.durable();
        for (key, _) in &expected_out {
            last = storage.mark_settled(*key).unwrap();
        }
        for (key, _) in &expected_in {
            last = storage.mark_acked(*key).unwrap();
        }
        storage.wait_durable(last).await.unwrap();
        storage.close().await.unwrap();
    });

    common::run(move || async move {
        let storage = RedisStorage::open(config(&url, 7, 2)).await.unwrap();
        assert_eq!(storage.take_recovered(), RecoveredState::default());
        let neighbour = RedisStorage::open(config(&url, 7, 3)).await.unwrap();
        let recovered = neighbour.take_recovered();
        assert_eq!(recovered.outbound.len(), 1);
        assert_eq!(recovered.outbound[0].frame, b"core 3");
        assert!(recovered.inbound.is_empty());
        storage.close().await.unwrap();
        neighbour.close().await.unwrap();
    });
}

#[test]
fn dedup_survives_restart() {
    let server = RedisServer::start(false);
    let url = server.url();
    let dedup_config = move |url: &str| {
        let mut config = config(url, 30, 1);
        config.dedup_checkpoint_min = 100;
        config
    };
    let first = url.clone();
    common::run(move || async move {
        let storage = RedisStorage::open(dedup_config(&first)).await.unwrap();
        let mut last = Ticket(0);
        // Three sources, two msg_id partitions of one of them; 1500 ids from source 11 push
        // its first ids below the 1024-id window.
        let partition1 = 1u64 << 56;
        for n in 1..=1500_u64 {
            for key in [
                in_key(11, n),
                in_key(12, n % 300 + 1),
                in_key(11, partition1 + n % 50),
            ] {
                match storage.append_inbound(key, b"x").unwrap() {
                    Inbound::New(ticket) => last = storage.mark_acked(key).unwrap().max(ticket),
                    Inbound::Duplicate(_) => {}
                }
            }
            if n % 64 == 0 {
                storage.wait_durable(last).await.unwrap();
            }
        }
        within(10, "durability", storage.wait_durable(last))
            .await
            .unwrap();
        drop(storage);
    });
    // The seen log is bounded by the checkpoints.
    let mut client = server.client();
    let prefix = RedisConfig::key_prefix(30, 1);
    let seen: usize = redis::cmd("HLEN")
        .arg(format!("{prefix}seen"))
        .query(&mut client)
        .unwrap();
    let checkpoint: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}dedup"))
        .query(&mut client)
        .unwrap();
    assert!(checkpoint, "a dedup checkpoint was written");
    assert!(
        seen < 100 + 3 * 64,
        "seen keys since the checkpoint: {seen}"
    );

    let second = url.clone();
    common::run(move || async move {
        let storage = RedisStorage::open(dedup_config(&second)).await.unwrap();
        assert_eq!(storage.take_recovered(), RecoveredState::default());
        let partition1 = 1u64 << 56;
        for n in 1..=1500_u64 {
            assert!(
                storage.is_duplicate(in_key(11, n)),
                "source 11 id {n} forgotten"
            );
        }
        for n in 1..=300_u64 {
            assert!(storage.is_duplicate(in_key(12, n)));
        }
        for n in 0..50_u64 {
            assert!(storage.is_duplicate(in_key(11, partition1 + n)));
        }
        assert!(matches!(
            storage.append_inbound(in_key(11, 7), b"again").unwrap(),
            Inbound::Duplicate(_)
        ));
        assert!(matches!(
            storage.append_inbound(in_key(12, 300), b"again").unwrap(),
            Inbound::Duplicate(_)
        ));
        let Inbound::New(ticket) = storage.append_inbound(in_key(11, 1501), b"new").unwrap() else {
            panic!("a new id reported duplicate");
        };
        assert!(matches!(
            storage
                .append_inbound(in_key(13, 5), b"new source")
                .unwrap(),
            Inbound::New(_)
        ));
        storage.wait_durable(ticket).await.unwrap();
        storage.close().await.unwrap();
    });

    common::run(move || async move {
        let storage = RedisStorage::open(dedup_config(&url)).await.unwrap();
        let recovered = storage.take_recovered();
        let keys: Vec<MsgKey> = recovered
            .inbound
            .iter()
            .map(|message| message.key)
            .collect();
        assert_eq!(keys, [in_key(11, 1501), in_key(13, 5)], "unacked, in order");
        assert!(storage.is_duplicate(in_key(11, 1501)));
        assert!(storage.is_duplicate(in_key(13, 5)));
        assert!(storage.is_duplicate(in_key(12, 1)));
        storage.close().await.unwrap();
    });
}

#[test]
fn msg_ids_unique_across_restarts() {
    let server = RedisServer::start(false);
    let url = server.url();
    let mut all = Vec::new();
    for round in 0..4 {
        let url = url.clone();
        let ids = common::run(move || async move {
            let mut config = config(&url, 40, 5);
            config.msg_id_block_len = 16;
            let storage = RedisStorage::open(config.clone()).await.unwrap();
            // A second instance of the same core at the same time (a node that did not die):
            // the server's counter still keeps their ids apart.
            let twin = RedisStorage::open(config).await.unwrap();
            assert!(threads_named("mesh-redis-c5") >= 2, "one I/O thread each");
            let mut ids = Vec::new();
            for _ in 0..40 {
                ids.push(allocate(&storage).await);
                ids.push(allocate(&twin).await);
            }
            if round % 2 == 0 {
                storage.close().await.unwrap();
                twin.close().await.unwrap();
            }
            ids
        });
        all.extend(ids);
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a msg_id was handed out twice");
    assert!(
        all.iter().all(|id| id >> 56 == 5),
        "ids of core 5's partition"
    );
    // Closed or dropped, every storage's I/O thread has ended (no other test uses core 5).
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_named("mesh-redis-c5") > 0 {
        assert!(
            Instant::now() < deadline,
            "an I/O thread outlived its storage"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| {
        tasks
            .filter_map(Result::ok)
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
            .count()
    })
}

#[test]
fn redis_killed_and_restarted_mid_stream() {
    let mut server = RedisServer::start(true);
    let url = server.url();
    let (server, expected_out, expected_in) = common::run(move || async move {
        let storage = RedisStorage::open(config(&url, 50, 0)).await.unwrap();
        let mut expected_out = Vec::new();
        let mut last = Ticket(0);
        for n in 0..20_u64 {
            let body = frame(n, 64);
            last = storage.append_outbound(out_key(n + 1), &body).unwrap();
            expected_out.push((out_key(n + 1), body));
        }
        storage.wait_durable(last).await.unwrap();
        let before_kill = storage.durable();

        server.kill();
        let mut first_while_down = None;
        for n in 20..50_u64 {
            let body = frame(n, 64);
            last = storage.append_outbound(out_key(n + 1), &body).unwrap();
            first_while_down.get_or_insert(last);
            expected_out.push((out_key(n + 1), body));
        }
        for n in 0..5_u64 {
            last = storage.mark_settled(out_key(n + 1)).unwrap();
            expected_out.retain(|(key, _)| *key != out_key(n + 1));
        }
        let mut expected_in = Vec::new();
        for n in 1..=10_u64 {
            let body = frame(n + 500, 16);
            let Inbound::New(ticket) = storage.append_inbound(in_key(3, n), &body).unwrap() else {
                panic!("first arrival reported duplicate");
            };
            last = ticket;
            expected_in.push((in_key(3, n), body));
        }
        let first_while_down = first_while_down.unwrap();
        // Nothing is durable while the server is down, however long it stays down.
        for _ in 0..10 {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert!(storage.durable() < first_while_down);
            assert_eq!(storage.durable(), before_kill);
        }
        let stats = storage.stats();
        assert!(stats.connection_errors > 0, "{stats:?}");
        assert!(!stats.connected);
        assert!(stats.writes_pending >= 45);

        server.restart();
        within(
            30,
            "durability after the restart",
            storage.wait_durable(last),
        )
        .await
        .unwrap();
        let stats = storage.stats();
        assert!(stats.connects >= 2, "{stats:?}");
        assert!(stats.writes_resent > 0, "{stats:?}");
        assert_eq!(stats.writes_pending, 0);
        drop(storage);
        (server, expected_out, expected_in)
    });

    // The server crashes again: with `appendfsync always`, all that was confirmed survives,
    // and a replacement node finds it.
    let mut server = server;
    server.restart();
    let url = server.url();
    common::run(move || async move {
        let storage = RedisStorage::open(config(&url, 50, 0)).await.unwrap();
        let recovered = storage.take_recovered();
        assert_eq!(keys_and_frames(recovered.outbound), expected_out);
        assert_eq!(keys_and_frames(recovered.inbound), expected_in);
        for n in 1..=10_u64 {
            assert!(storage.is_duplicate(in_key(3, n)));
        }
        storage.close().await.unwrap();
    });
    drop(server);
}

#[test]
fn bounded_queue_yields_busy() {
    let mut server = RedisServer::start(false);
    let url = server.url();
    common::run(move || async move {
        let config = config(&url, 60, 0).with_queue_limits(8, 2 << 20);
        let storage = RedisStorage::open(config).await.unwrap();
        server.kill();
        let mut accepted = Vec::new();
        let busy = loop {
            match storage.append_outbound(out_key(accepted.len() as u64 + 1), b"queued") {
                Ok(ticket) => accepted.push(ticket),
                Err(error) => break error,
            }
            assert!(accepted.len() <= 8, "the queue bound was not enforced");
        };
        assert_eq!(accepted.len(), 8);
        let StorageError::Busy {
            reason: mesh_storage::BusyReason::WritesPending,
            retry_after: Some(retry_after),
        } = busy
        else {
            panic!("expected Busy(WritesPending), got {busy:?}");
        };
        assert_eq!(retry_after, accepted[0]);
        assert!(matches!(
            storage.mark_settled(out_key(1)),
            Err(StorageError::Busy { .. })
        ));
        let stats = storage.stats();
        assert_eq!(stats.writes_pending, 8);
        assert_eq!(stats.busy_refusals, 2);
        assert!(storage.durable() < accepted[0]);

        server.restart();
        within(
            30,
            "room after the restart",
            storage.wait_durable(retry_after),
        )
        .await
        .unwrap();
        let ticket = storage.append_outbound(out_key(100), b"after").unwrap();
        within(10, "durability", storage.wait_durable(ticket))
            .await
            .unwrap();
        storage.close().await.unwrap();
        drop(server);
    });
}

#[test]
fn error_replies_are_typed_errors() {
    let server = RedisServer::start(false);
    let url = server.url();
    // Someone else's value where this node's inbound hash belongs: open refuses to start.
    let mut client = server.client();
    let () = redis::cmd("SET")
        .arg(format!("{}in", RedisConfig::key_prefix(71, 0)))
        .arg("not a hash")
        .query(&mut client)
        .unwrap();
    let first = url.clone();
    common::run(move || async move {
        match RedisStorage::open(config(&first, 71, 0)).await {
            Err(StorageError::Redis { op: "load", detail }) => {
                assert!(detail.contains("WRONGTYPE"), "{detail}");
            }
            other => panic!("expected a load error, got {other:?}"),
        }
    });

    common::run(move || async move {
        let storage = RedisStorage::open(config(&url, 72, 0)).await.unwrap();
        // The same at run time: the write can never be confirmed, the log fails.
        let mut client = redis::Client::open(url.as_str())
            .and_then(|client| client.get_connection())
            .unwrap();
        let () = redis::cmd("SET")
            .arg(format!("{}out", RedisConfig::key_prefix(72, 0)))
            .arg("not a hash")
            .query(&mut client)
            .unwrap();
        let ticket = storage.append_outbound(out_key(1), b"refused").unwrap();
        let error = within(10, "the refusal", storage.wait_durable(ticket))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Fatal(FatalError::Redis(RedisRefusal::WrongType))
            ),
            "{error:?}"
        );
        assert!(storage.durable() < ticket);
        assert!(
            storage
                .append_outbound(out_key(2), b"after")
                .unwrap_err()
                .is_fatal()
        );
        assert!(storage.allocate_msg_id().unwrap_err().is_fatal());
        assert!(storage.close().await.unwrap_err().is_fatal());
    });
}

#[test]
fn unreachable_server_fails_open_with_a_clear_error() {
    let port = free_port();
    common::run(move || async move {
        let mut config = config(&format!("redis://127.0.0.1:{port}"), 80, 0);
        config.open_timeout = Duration::from_millis(300);
        match RedisStorage::open(config).await {
            Err(StorageError::Redis {
                op: "connect",
                detail,
            }) => {
                assert!(detail.contains(&port.to_string()), "{detail}");
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        let bad = RedisConfig::new("http://127.0.0.1:1", 80, 0);
        assert!(matches!(
            RedisStorage::open(bad).await,
            Err(StorageError::Config(_))
        ));
    });
}
