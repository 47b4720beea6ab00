//! Engine configuration: what the node binary hands the data plane at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_wire::Limits;

use crate::delivery::DeliveryConfig;
use crate::queue::QueueLimits;

pub use mesh_storage::DurabilityMode;

/// Where each core keeps its messages and dedup state (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageSpec {
    /// In memory: nothing survives the process (tests, ephemeral nodes).
    #[default]
    Memory,
    /// The write-ahead log: preallocated segment files under `dir`, one log per core.
    File {
        /// The node's WAL directory.
        dir: PathBuf,
        /// Length of one segment file (a multiple of 4096).
        segment_len: usize,
        /// Segment files per core.
        segments: usize,
    },
    /// A Redis server (`redis://[user:password@]host:port[/db]`): messages, dedup state and
    /// msg_id blocks under keys of this node id and core, so a replacement node with the same
    /// id takes over a failed node's state.
    Redis {
        /// The server's URL.
        url: String,
    },
}

/// How executors are placed on CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Executor `i` is pinned to CPU `first_cpu + i` (production: one node per machine).
    Pinned {
        /// First CPU to use.
        first_cpu: usize,
    },
    /// Executors float over all CPUs (several nodes on one machine, tests, CI).
    #[default]
    Unbound,
}

/// Data-plane configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id (non-zero).
    pub node_id: u64,
    /// This node's domain.
    pub domain_id: u32,
    /// Address every core listens on (SO_REUSEPORT spreads accepted connections).
    pub listen: SocketAddr,
    /// Peers to dial and keep connected.
    pub connect: Vec<SocketAddr>,
    /// Number of executors (cores).
    pub cores: usize,
    /// Executor placement.
    pub placement: Placement,
    /// Frame limits this node offers in HELLO.
    pub limits: Limits,
    /// Bounds of each peer's outbound queue.
    pub queue: QueueLimits,
    /// TLS for peer links; `None`: plain TCP.
    pub tls: Option<crate::tls::TlsContext>,
    /// Refuse peers that do not use TLS.
    pub require_tls: bool,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Keepalive interval offered in HELLO.
    pub keepalive_interval: Duration,
    /// Most sessions (all states) this node holds.
    pub max_sessions: usize,
    /// Most sessions still handshaking.
    pub max_half_open: usize,
    /// Memory glommio registers for io_uring buffers, per executor (at least 512 KiB; the
    /// memlock limit is shared by all executors of the process).
    pub io_memory: usize,
    /// Capacity of each core's inbox and of the events mailbox to the control thread.
    pub mailbox_capacity: usize,
    /// Where messages and dedup state are kept.
    pub storage: StorageSpec,
    /// When an append counts as durable.
    pub durability: DurabilityMode,
    /// Exactly-once delivery settings.
    pub delivery: DeliveryConfig,
    /// Most bytes of retired read buffers each core's pool keeps for reuse (counting buffers
    /// whose frames are still queued; all of it is idle once traffic stops). The default
    /// matches one peer queue's byte bound, so a core forwarding into a full queue recycles
    /// every read chunk.
    pub buffer_pool_bytes: usize,
    /// Bytes a native client may leave unread in its queue (receipts, deliveries) before the
    /// node closes its session with FLOW_CONTROL_VIOLATION. Receipts are queued past the
    /// queue's bounds (they must not wait behind data), so a client that sends and never reads
    /// would otherwise grow the node's memory without end.
    pub client_unread_max: usize,
}

impl EngineConfig {
    /// Defaults for a node: one unbound core, 1 MiB frames, 2 s handshake deadline.
    pub fn new(node_id: u64, domain_id: u32, listen: SocketAddr) -> Self {
        Self {
            node_id,
            domain_id,
            listen,
            connect: Vec::new(),
            cores: 1,
            placement: Placement::Unbound,
            limits: Limits::default(),
            queue: QueueLimits::default(),
            tls: None,
            require_tls: false,
            handshake_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(300),
            max_sessions: 1024,
            max_half_open: 256,
            io_memory: 512 << 10,
            mailbox_capacity: 65_536,
            buffer_pool_bytes: 64 << 20,
            client_unread_max: 128 << 20,
            storage: StorageSpec::Memory,
            durability: DurabilityMode::Batch,
            delivery: DeliveryConfig::default(),
        }
    }
}
