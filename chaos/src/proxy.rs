//! The delay proxy: a TCP relay that holds every byte for a settable delay in each direction,
//! so one peer of a link looks slow to the other. The kernel here has no netem (`tc netem`
//! fails), so the delay is ours, in user space.
//!
//! Each direction of each connection is a delay line: a reader thread stamps every chunk it
//! reads with `now + delay` and queues it (bounded: a full queue stops the reads, and TCP's
//! flow control pushes back to the sender); a writer thread writes each chunk once its time has
//! come, in order. A lowered delay takes effect for the bytes read after the change, and never
//! reorders bytes. An end-of-stream is relayed as a half close; an error closes both sides.
//!
//! [`DelayProxy::start`] binds where the calling thread's network namespace is, and every
//! thread it starts inherits that namespace, so a proxy started by a thread inside a node's
//! namespace relays inside it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Bytes one read takes at most.
const CHUNK_LEN: usize = 64 << 10;
/// Chunks queued per direction before reads stop (at most 16 MiB in flight per direction).
const QUEUE_CHUNKS: usize = 256;
/// How often blocked threads look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running proxy. Stops (and closes every relayed connection) when dropped.
#[derive(Debug)]
pub struct DelayProxy {
    listen: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on `listen` and relays each connection to `upstream`, with no delay yet.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<DelayProxy> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("proxy: bind {listen}"))?;
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let delay_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (delay_us, stop) = (delay_us.clone(), stop.clone());
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&listener, upstream, &delay_us, &stop))?
        };
        Ok(DelayProxy {
            listen,
            delay_us,
            stop,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Sets the one-way delay for bytes read from now on (both directions).
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    delay_us: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) {
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let (delay_us, stop) = (delay_us.clone(), stop.clone());
                let spawned = std::thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || relay(client, upstream, &delay_us, &stop));
                if let Ok(t) = spawned {
                    relays.push(t);
                }
                relays.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                eprintln!("mesh-chaos proxy: accept: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
    for t in relays {
        let _ = t.join();
    }
}

/// Relays one connection until both directions end or the proxy stops.
#[allow(clippy::needless_pass_by_value)] // the connection is this thread's: it ends here
fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    delay_us: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        // The node is down: the dialer sees the connection close and tries again later.
        return;
    };
    let streams = (|| {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        Ok::<_, std::io::Error>([
            (client.try_clone()?, server.try_clone()?),
            (server.try_clone()?, client.try_clone()?),
        ])
    })();
    let Ok(directions) = streams else { return };
    let mut threads = Vec::new();
    for (from, to) in directions {
        let (tx, rx) = sync_channel::<Chunk>(QUEUE_CHUNKS);
        let (d, s) = (delay_us.clone(), stop.clone());
        threads.push(std::thread::spawn(move || read_side(from, &tx, &d, &s)));
        // An aborted direction shuts its destination down both ways, so the other direction's
        // reader sees the end too.
        let s = stop.clone();
        threads.push(std::thread::spawn(move || write_side(&rx, to, &s)));
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// What goes down a delay line.
enum Chunk {
    /// Bytes, due at the instant.
    Data(Instant, Vec<u8>),
    /// The sender half-closed (due at the instant).
    End(Instant),
    /// The read failed: close both ways.
    Abort,
}

fn read_side(mut from: TcpStream, tx: &SyncSender<Chunk>, delay_us: &AtomicU64, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(POLL_INTERVAL));
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = tx.send(Chunk::Abort);
            return;
        }
        let due = || Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
        let chunk = match from.read(&mut buf) {
            Ok(0) => Chunk::End(due()),
            Ok(n) => Chunk::Data(due(), buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => Chunk::Abort,
        };
        let last = !matches!(chunk, Chunk::Data(..));
        if tx.send(chunk).is_err() || last {
            return;
        }
    }
}

fn write_side(rx: &Receiver<Chunk>, mut to: TcpStream, stop: &AtomicBool) {
    loop {
        let chunk = match rx.recv_timeout(POLL_INTERVAL) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Relaxed) {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let due = match &chunk {
            Chunk::Data(due, _) | Chunk::End(due) => *due,
            Chunk::Abort => Instant::now(),
        };
        while Instant::now() < due {
            if stop.load(Ordering::Relaxed) {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            std::thread::sleep((due - Instant::now()).min(POLL_INTERVAL));
        }
        match chunk {
            Chunk::Data(_, bytes) => {
                if to.write_all(&bytes).is_err() {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Chunk::End(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Chunk::Abort => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                    let _ = s.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    #[test]
    fn bytes_pass_both_ways_intact_and_in_order() {
        let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap();
        proxy.set_delay(Duration::from_millis(5));
        let mut c = TcpStream::connect(proxy.local_addr()).unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut c = c.try_clone().unwrap();
            let sent = sent.clone();
            std::thread::spawn(move || {
                for part in sent.chunks(7_001) {
                    c.write_all(part).unwrap();
                }
                c.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(
            back, sent,
            "the echo came back whole, through the proxy twice"
        );
    }

    #[test]
    fn the_delay_applies_to_each_direction() {
        let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap();
        proxy.set_delay(Duration::from_millis(150));
        let mut c = TcpStream::connect(proxy.local_addr()).unwrap();
        let t0 = Instant::now();
        c.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        // A lower bound only (a loaded machine may add more): both legs were held.
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(&back, b"ping");
        proxy.set_delay(Duration::ZERO);
        drop(proxy);
    }
}
