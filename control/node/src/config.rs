//! Node configuration: command-line flags (SPEC §7) and a TOML file with the same keys.
//!
//! Precedence: a flag given on the command line wins over the file, which wins over the
//! embedded defaults. Every value is checked before anything starts, and a bad one is an error
//! that names the key and says what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use mesh_engine::{DeliveryMode, DurabilityMode, StorageSpec};
use serde::Deserialize;

/// How executors are placed on CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementArg {
    /// One executor per CPU, pinned (production: one node per machine).
    Pinned,
    /// Executors float (several nodes on one machine, tests).
    Unbound,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `mesh` (running a node). All optional here; [`NodeConfig::resolve`] applies the
/// file and the defaults and checks the result.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeArgs {
    /// This node's id (non-zero).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// This node's domain.
    #[arg(long)]
    pub domain: Option<u32>,
    /// Address to listen on for peers.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A peer to connect to (repeatable).
    #[arg(long = "connect")]
    #[serde(default)]
    pub connect: Vec<SocketAddr>,
    /// Number of data-plane cores.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Executor placement: pinned to CPUs, or unbound (several nodes on one machine).
    #[arg(long, value_enum)]
    pub placement: Option<PlacementArg>,
    /// Speak TLS 1.3 (X25519MLKEM768) with mutual authentication and ML-DSA HELLO signatures.
    #[arg(long)]
    #[serde(default)]
    pub tls: bool,
    /// Refuse peers that do not use TLS.
    #[arg(long)]
    #[serde(default)]
    pub require_tls: bool,
    /// This node's certificate (PEM), issued by the mesh CA.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The private key of `--cert` (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The mesh CA certificate (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This node's ML-DSA-65 private key (PKCS#8 PEM).
    #[arg(long)]
    pub pq_key: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Keepalive interval in milliseconds (a peer is dead after three silent intervals).
    #[arg(long)]
    pub keepalive_ms: Option<u64>,
    /// MiB a native client may leave unread (receipts, deliveries) before the node closes its
    /// session (default 128).
    #[arg(long)]
    pub client_unread_max_mib: Option<usize>,
    /// Serve the gRPC API (SPEC §4) for applications and operators.
    #[arg(long)]
    #[serde(default)]
    pub enable_grpc: bool,
    /// Address of the gRPC API (with `--enable-grpc`; default 127.0.0.1:50051).
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// TLS on the gRPC API: the server certificate chain (PEM), with `--grpc-tls-key`.
    #[arg(long)]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The gRPC API's private key (PEM).
    #[arg(long)]
    pub grpc_tls_key: Option<PathBuf>,
    /// Require gRPC clients to present a certificate signed by this CA (PEM); without it any
    /// client may connect (over TLS when `--grpc-tls-cert` is set).
    #[arg(long)]
    pub grpc_client_ca: Option<PathBuf>,
    /// Directory for this node's data (the WAL): default `mesh-data/node-<id>`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where messages and dedup state are kept: `file` (the WAL, default), `memory` (nothing
    /// survives a restart) or `redis://[user:password@]host:port[/db]` (a Redis server; a
    /// replacement node with the same id takes over the state).
    #[arg(long)]
    pub storage: Option<String>,
    /// When a message counts as persisted: `always`, `batch` (default) or `none`.
    #[arg(long)]
    pub durability: Option<String>,
    /// Size of one WAL segment file in MiB (default 64).
    #[arg(long)]
    pub wal_segment_mib: Option<usize>,
    /// WAL segment files per core (default 16).
    #[arg(long)]
    pub wal_segments: Option<usize>,
    /// How DATA is delivered: `exactly-once` (the default: persisted, deduplicated, DELIVERED
    /// to the origin, retransmitted until then; SPEC §5) or `raw` (forwarded and handed over at
    /// most once, nothing stored: for benchmarks of the forwarding path).
    #[arg(long)]
    pub delivery: Option<String>,
}

/// TLS on the gRPC API (rustls, aws-lc provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTls {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// A complete, checked node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node id.
    pub node_id: u64,
    /// Domain.
    pub domain: u32,
    /// Listen address.
    pub listen: SocketAddr,
    /// Peers to dial.
    pub connect: Vec<SocketAddr>,
    /// Cores.
    pub cores: usize,
    /// Placement.
    pub placement: PlacementArg,
    /// TLS files, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Refuse plain peers.
    pub require_tls: bool,
    /// Metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Keepalive interval.
    pub keepalive_ms: u64,
    /// Bytes a native client may leave unread before its session is closed.
    pub client_unread_max: usize,
    /// Where the gRPC API listens; `None` when it is off.
    pub grpc_listen: Option<SocketAddr>,
    /// TLS on the gRPC API, if on.
    pub grpc_tls: Option<GrpcTls>,
    /// Where messages and dedup state are kept.
    pub storage: StorageSpec,
    /// When a message counts as persisted.
    pub durability: DurabilityMode,
    /// How DATA is delivered.
    pub delivery: DeliveryMode,
}

/// The files TLS needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Node certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Mesh CA certificate.
    pub ca: PathBuf,
    /// ML-DSA-65 key.
    pub pq_key: PathBuf,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said (names the key).
        message: String,
    },
    /// A value is out of range or missing.
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Embedded defaults: node 1 in domain 1 on 127.0.0.1:7001, one unbound core, plain TCP.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

/// Where the gRPC API listens when `--enable-grpc` names no `--grpc-listen` (the seed's port).
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";

impl NodeArgs {
    /// Reads a TOML file with the same keys as the flags (kebab-case).
    pub fn from_file(path: &Path) -> Result<NodeArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// `self` with every unset field taken from `file`.
    #[must_use]
    pub fn over(self, file: NodeArgs) -> NodeArgs {
        NodeArgs {
            node_id: self.node_id.or(file.node_id),
            domain: self.domain.or(file.domain),
            listen: self.listen.or(file.listen),
            connect: if self.connect.is_empty() {
                file.connect
            } else {
                self.connect
            },
            cores: self.cores.or(file.cores),
            placement: self.placement.or(file.placement),
            tls: self.tls || file.tls,
            require_tls: self.require_tls || file.require_tls,
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
            ca: self.ca.or(file.ca),
            pq_key: self.pq_key.or(file.pq_key),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_format: self.log_format.or(file.log_format),
            keepalive_ms: self.keepalive_ms.or(file.keepalive_ms),
            client_unread_max_mib: self.client_unread_max_mib.or(file.client_unread_max_mib),
            enable_grpc: self.enable_grpc || file.enable_grpc,
            grpc_listen: self.grpc_listen.or(file.grpc_listen),
            grpc_tls_cert: self.grpc_tls_cert.or(file.grpc_tls_cert),
            grpc_tls_key: self.grpc_tls_key.or(file.grpc_tls_key),
            grpc_client_ca: self.grpc_client_ca.or(file.grpc_client_ca),
            data_dir: self.data_dir.or(file.data_dir),
            storage: self.storage.or(file.storage),
            durability: self.durability.or(file.durability),
            wal_segment_mib: self.wal_segment_mib.or(file.wal_segment_mib),
            wal_segments: self.wal_segments.or(file.wal_segments),
            delivery: self.delivery.or(file.delivery),
        }
    }
}

impl NodeConfig {
    /// Applies defaults and checks every value.
    pub fn resolve(args: NodeArgs) -> Result<NodeConfig, ConfigError> {
        let node_id = args.node_id.unwrap_or(1);
        if node_id == 0 {
            return Err(ConfigError::Invalid {
                key: "node-id",
                message: "must be a non-zero 64-bit integer".into(),
            });
        }
        let durability =
            match args.durability.as_deref() {
                None => DurabilityMode::Batch,
                Some(d) => d.parse().map_err(|e: mesh_storage::ParseDurabilityError| {
                    ConfigError::Invalid {
                        key: "durability",
                        message: e.to_string(),
                    }
                })?,
            };
        let storage = resolve_storage(&args, node_id)?;
        let delivery = match args.delivery.as_deref().unwrap_or("exactly-once") {
            "raw" => DeliveryMode::Raw,
            "exactly-once" => DeliveryMode::ExactlyOnce,
            other => {
                return Err(ConfigError::Invalid {
                    key: "delivery",
                    message: format!("`{other}` is not one of raw, exactly-once"),
                });
            }
        };
        let cores = args.cores.unwrap_or(1);
        let online = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let placement = args.placement.unwrap_or(PlacementArg::Unbound);
        if cores == 0 || cores > 256 {
            return Err(ConfigError::Invalid {
                key: "cores",
                message: format!("{cores} is outside 1..=256"),
            });
        }
        if placement == PlacementArg::Pinned && cores > online {
            return Err(ConfigError::Invalid {
                key: "cores",
                message: format!(
                    "{cores} pinned cores requested but this machine has {online} CPUs; use fewer cores or --placement unbound"
                ),
            });
        }
        let tls = if args.tls {
            let need = |key: &'static str, v: Option<PathBuf>| {
                v.ok_or(ConfigError::Invalid {
                    key,
                    message: "required with --tls (make them with `mesh certs`)".into(),
                })
            };
            Some(TlsFiles {
                cert: need("cert", args.cert)?,
                key: need("key", args.key)?,
                ca: need("ca", args.ca)?,
                pq_key: need("pq-key", args.pq_key)?,
            })
        } else {
            None
        };
        if args.require_tls && tls.is_none() {
            return Err(ConfigError::Invalid {
                key: "require-tls",
                message: "needs --tls: a node that refuses plain peers must speak TLS itself"
                    .into(),
            });
        }
        let keepalive_ms = args.keepalive_ms.unwrap_or(300);
        if !(100..=600_000).contains(&keepalive_ms) {
            return Err(ConfigError::Invalid {
                key: "keepalive-ms",
                message: format!("{keepalive_ms} is outside 100..=600000"),
            });
        }
        let client_unread_max_mib = args.client_unread_max_mib.unwrap_or(128);
        if !(1..=4096).contains(&client_unread_max_mib) {
            return Err(ConfigError::Invalid {
                key: "client-unread-max-mib",
                message: format!("{client_unread_max_mib} is outside 1..=4096"),
            });
        }
        let grpc_listen = match (args.enable_grpc, args.grpc_listen) {
            (true, addr) => Some(addr.unwrap_or_else(|| {
                DEFAULT_GRPC_LISTEN
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            })),
            (false, None) => None,
            (false, Some(addr)) => {
                return Err(ConfigError::Invalid {
                    key: "grpc-listen",
                    message: format!(
                        "{addr} given but the gRPC API is off; add --enable-grpc (enable-grpc = true)"
                    ),
                });
            }
        };
        let grpc_tls = match (
            &args.grpc_tls_cert,
            &args.grpc_tls_key,
            &args.grpc_client_ca,
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), ca) => {
                if grpc_listen.is_none() {
                    return Err(ConfigError::Invalid {
                        key: "grpc-tls-cert",
                        message: "given but the gRPC API is off; add --enable-grpc".into(),
                    });
                }
                Some(GrpcTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: ca.clone(),
                })
            }
            (None, _, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "grpc-client-ca",
                    message: "client certificates need TLS: add --grpc-tls-cert and --grpc-tls-key"
                        .into(),
                });
            }
            (Some(_), None, _) => {
                return Err(ConfigError::Invalid {
                    key: "grpc-tls-key",
                    message: "--grpc-tls-cert needs its private key".into(),
                });
            }
            (None, Some(_), _) => {
                return Err(ConfigError::Invalid {
                    key: "grpc-tls-cert",
                    message: "--grpc-tls-key needs its certificate".into(),
                });
            }
        };
        Ok(NodeConfig {
            node_id,
            domain: args.domain.unwrap_or(1),
            listen: args
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!())),
            connect: args.connect,
            cores,
            placement,
            tls,
            require_tls: args.require_tls,
            metrics_listen: args.metrics_listen,
            log_format: args.log_format.unwrap_or_default(),
            keepalive_ms,
            client_unread_max: client_unread_max_mib << 20,
            grpc_listen,
            grpc_tls,
            storage,
            durability,
            delivery,
        })
    }
}

/// The storage keys: `storage`, `data-dir`, `wal-segment-mib`, `wal-segments`.
fn resolve_storage(args: &NodeArgs, node_id: u64) -> Result<StorageSpec, ConfigError> {
    if let Some(url) = args.storage.as_deref()
        && (url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        // Checked here so that a typo is a configuration error, not a failed start.
        mesh_storage::RedisConfig::check_url(url).map_err(|message| ConfigError::Invalid {
            key: "storage",
            message,
        })?;
        return Ok(StorageSpec::Redis {
            url: url.to_owned(),
        });
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("mesh-data/node-{node_id}")));
    match args.storage.as_deref().unwrap_or("file") {
        "memory" => Ok(StorageSpec::Memory),
        "file" => {
            let mib = args.wal_segment_mib.unwrap_or(64);
            if !(1..=1024).contains(&mib) {
                return Err(ConfigError::Invalid {
                    key: "wal-segment-mib",
                    message: format!("{mib} is outside 1..=1024"),
                });
            }
            let segments = args.wal_segments.unwrap_or(16);
            if !(4..=4096).contains(&segments) {
                return Err(ConfigError::Invalid {
                    key: "wal-segments",
                    message: format!("{segments} is outside 4..=4096"),
                });
            }
            Ok(StorageSpec::File {
                dir: dir.join("wal"),
                segment_len: mib << 20,
                segments,
            })
        }
        other => Err(ConfigError::Invalid {
            key: "storage",
            message: format!("`{other}` is not one of file, memory, redis://host:port"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: NodeArgs = toml::from_str(
            "node-id = 7\ndomain = 3\nconnect = [\"127.0.0.1:9000\"]\nkeepalive-ms = 1000\n",
        )
        .unwrap();
        let flags = NodeArgs {
            node_id: Some(9),
            ..NodeArgs::default()
        };
        let c = NodeConfig::resolve(flags.over(file)).unwrap();
        assert_eq!(c.node_id, 9);
        assert_eq!(c.domain, 3);
        assert_eq!(c.connect, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(c.keepalive_ms, 1000);
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = NodeConfig::resolve(NodeArgs {
            node_id: Some(0),
            ..NodeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("node-id:"), "{e}");
        let e = NodeConfig::resolve(NodeArgs {
            tls: true,
            ..NodeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("cert:"), "{e}");
        let e = toml::from_str::<NodeArgs>("nodeid = 1").unwrap_err();
        assert!(e.to_string().contains("nodeid"), "{e}");
    }

    #[test]
    fn storage_is_a_file_memory_or_a_redis_url() {
        let with = |storage: &str| {
            NodeConfig::resolve(NodeArgs {
                storage: Some(storage.into()),
                ..NodeArgs::default()
            })
        };
        assert!(matches!(
            NodeConfig::resolve(NodeArgs::default()).unwrap().storage,
            StorageSpec::File { .. }
        ));
        assert!(matches!(
            with("memory").unwrap().storage,
            StorageSpec::Memory
        ));
        let c = with("redis://user:pw@10.0.0.5:6380/2").unwrap();
        assert!(
            matches!(&c.storage, StorageSpec::Redis { url } if url == "redis://user:pw@10.0.0.5:6380/2")
        );
        let e = with("redis://user:secret@host:notaport")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("storage:"), "{e}");
        assert!(!e.contains("secret"), "the password is not shown: {e}");
        let e = with("disk").unwrap_err().to_string();
        assert!(e.contains("file, memory, redis://"), "{e}");
    }

    #[test]
    fn grpc_is_off_by_default_and_listens_on_the_seed_port_when_enabled() {
        let c = NodeConfig::resolve(NodeArgs::default()).unwrap();
        assert_eq!(c.grpc_listen, None);
        let c = NodeConfig::resolve(NodeArgs {
            enable_grpc: true,
            ..NodeArgs::default()
        })
        .unwrap();
        assert_eq!(c.grpc_listen, Some(DEFAULT_GRPC_LISTEN.parse().unwrap()));
    }

    #[test]
    fn grpc_keys_come_from_the_file_and_flags_win() {
        let file: NodeArgs =
            toml::from_str("enable-grpc = true\ngrpc-listen = \"127.0.0.1:6000\"\n").unwrap();
        let c = NodeConfig::resolve(NodeArgs::default().over(file.clone())).unwrap();
        assert_eq!(c.grpc_listen, Some("127.0.0.1:6000".parse().unwrap()));
        let flags = NodeArgs {
            grpc_listen: Some("0.0.0.0:6001".parse().unwrap()),
            ..NodeArgs::default()
        };
        let c = NodeConfig::resolve(flags.over(file)).unwrap();
        assert_eq!(c.grpc_listen, Some("0.0.0.0:6001".parse().unwrap()));
    }

    #[test]
    fn grpc_listen_without_enable_grpc_is_an_error_naming_the_key() {
        let e = NodeConfig::resolve(NodeArgs {
            grpc_listen: Some("127.0.0.1:6000".parse().unwrap()),
            ..NodeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("grpc-listen:"), "{e}");
        assert!(e.to_string().contains("--enable-grpc"), "{e}");
    }
}
