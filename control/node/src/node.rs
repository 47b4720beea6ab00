//! Running a node: start the data plane, then the control thread (link-state routing, the
//! gRPC API when enabled, metrics), until SIGTERM / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_engine::{EngineConfig, Placement, RouteSnapshot, StaticRoutes, TlsContext};
use mesh_routing::{DomainId, NodeId};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{NodeConfig, PlacementArg, TlsFiles};
use crate::control::{self, ControlMetrics};
use crate::grpc::{self, GrpcMetrics, MeshControlService, MeshDataService};
use crate::metrics;

/// How long shutdown waits for gRPC calls in progress.
const GRPC_DRAIN: Duration = Duration::from_secs(5);

/// Runs the node described by `cfg` until it is told to stop.
pub fn run(cfg: &NodeConfig) -> anyhow::Result<()> {
    // Bind before anything starts, so a taken or bad address is a plain start-up error.
    let grpc_listener = cfg
        .grpc_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("grpc-listen {addr}: cannot listen for the gRPC API"))
        })
        .transpose()?;
    let tls = if let Some(files) = &cfg.tls {
        Some(load_tls(cfg.node_id, files)?)
    } else {
        warn!(
            "TLS is off: this node speaks plain TCP to its peers (start it with --tls to encrypt and authenticate)"
        );
        None
    };
    let mut ecfg = EngineConfig::new(cfg.node_id, cfg.domain, cfg.listen);
    ecfg.tls = tls;
    ecfg.connect.clone_from(&cfg.connect);
    ecfg.cores = cfg.cores;
    ecfg.placement = match cfg.placement {
        PlacementArg::Pinned => Placement::Pinned { first_cpu: 0 },
        PlacementArg::Unbound => Placement::Unbound,
    };
    ecfg.require_tls = cfg.require_tls;
    ecfg.keepalive_interval = Duration::from_millis(cfg.keepalive_ms);
    ecfg.client_unread_max = cfg.client_unread_max;
    ecfg.storage = cfg.storage.clone();
    ecfg.durability = cfg.durability;
    ecfg.delivery.mode = cfg.delivery;
    let delivery_mode = cfg.delivery;
    match &cfg.storage {
        mesh_engine::StorageSpec::File { dir, .. } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            info!(dir = %dir.display(), durability = %cfg.durability, "write-ahead log");
        }
        mesh_engine::StorageSpec::Redis { url } => {
            let shown = url.rfind('@').map_or(url.as_str(), |at| &url[at + 1..]);
            info!(server = shown, durability = %cfg.durability, "storage in Redis");
        }
        mesh_engine::StorageSpec::Memory => {
            warn!("storage is in memory: messages and dedup state do not survive a restart");
        }
    }
    let routes: RouteSnapshot = Arc::new(StaticRoutes::new(cfg.domain, 0));
    let engine = Arc::new(mesh_engine::start(ecfg, &routes).context("starting the data plane")?);
    info!(
        node = cfg.node_id,
        domain = cfg.domain,
        listen = %engine.local_addr(),
        cores = engine.cores(),
        "node started"
    );
    let control_metrics = Arc::new(ControlMetrics::default());
    let grpc_metrics = Arc::new(GrpcMetrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("mesh-control")
        .build()
        .context("starting the control runtime")?;
    let metrics_listen = cfg.metrics_listen;
    let (node_id, domain) = (cfg.node_id, cfg.domain);
    let result: anyhow::Result<()> = rt.block_on(async {
        if let Some(addr) = metrics_listen {
            let listener_engine = engine.clone();
            let cm = control_metrics.clone();
            let gm = grpc_metrics.clone();
            // Bind now so a bad address is a start-up error, then serve in the background.
            let probe = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics-listen {addr}"))?;
            drop(probe);
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, node_id, listener_engine, cm, gm).await {
                    warn!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        let (control_handle, requests) = control::requests::channel();
        let grpc_server = match grpc_listener {
            Some(listener) => {
                let node = NodeId::new(node_id).context("node id 0 cannot serve gRPC")?;
                let service = MeshControlService::new(
                    node,
                    DomainId(domain),
                    control_handle,
                    grpc_metrics.clone(),
                );
                let data =
                    MeshDataService::new(engine.clone(), delivery_mode, grpc_metrics.clone());
                let tls = cfg.grpc_tls.as_ref().map(load_grpc_tls).transpose()?;
                Some(start_grpc(listener, service, data, tls, stop_rx.clone())?)
            }
            None => None,
        };
        let ctl = tokio::spawn(control::run(
            engine.clone(),
            node_id,
            domain,
            control_metrics.clone(),
            requests,
            stop_rx,
        ));
        wait_for_signal().await;
        info!("stopping: draining sessions");
        let _ = stop_tx.send(true);
        let _ = ctl.await;
        if let Some(server) = grpc_server
            && tokio::time::timeout(GRPC_DRAIN, server).await.is_err()
        {
            warn!("gRPC calls still running after {GRPC_DRAIN:?}; stopping without them");
        }
        Ok(())
    });
    drop(rt);
    result?;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown();
    } else {
        warn!("data plane still referenced at shutdown; exiting without joining it");
    }
    info!("node stopped");
    Ok(())
}

/// Serves the gRPC API on `listener` (bound by the caller) until `stop` turns true.
fn start_grpc(
    listener: std::net::TcpListener,
    service: MeshControlService,
    data: MeshDataService,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    listener
        .set_nonblocking(true)
        .context("grpc-listen: preparing the socket")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("grpc-listen: preparing the socket")?;
    if let Some(t) = &tls {
        // Parse the certificate and key now: a bad file is a start-up error.
        tonic::transport::Server::builder()
            .tls_config(t.clone())
            .context("--grpc-tls-cert / --grpc-tls-key: not a usable certificate and key")?;
    }
    info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        "gRPC API listening (MeshControl, MeshData)"
    );
    let shutdown = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    Ok(tokio::spawn(async move {
        if let Err(e) = grpc::serve(listener, grpc::routes(service, data), tls, shutdown).await {
            warn!(error = %e, "gRPC API stopped");
        }
    }))
}

/// Reads the gRPC API's certificate, key and (optional) client CA.
fn load_grpc_tls(t: &crate::config::GrpcTls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let cert = read(&t.cert, "--grpc-tls-cert")?;
    let key = read(&t.key, "--grpc-tls-key")?;
    let mut tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    if let Some(ca) = &t.client_ca {
        let ca = read(ca, "--grpc-client-ca")?;
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    Ok(tls)
}

/// Loads this node's certificate, keys and the mesh CA, and checks the certificate names this
/// node.
fn load_tls(node_id: u64, files: &TlsFiles) -> anyhow::Result<TlsContext> {
    let identity = mesh_tls::load_node_identity(&files.cert, &files.key, &files.pq_key)
        .context("loading --cert / --key / --pq-key")?;
    if identity.node_id().get() != node_id {
        anyhow::bail!(
            "--cert names node {} but this is node {node_id}: the certificate's node id must match --node-id",
            identity.node_id()
        );
    }
    let ca = mesh_tls::load_ca_certificate(&files.ca).context("loading --ca")?;
    let config =
        mesh_tls::MeshTlsConfig::new(&identity, &ca).context("building the TLS configuration")?;
    info!(
        node = node_id,
        "TLS 1.3 on (X25519MLKEM768, mutual authentication, ML-DSA-65 HELLO signatures)"
    );
    Ok(TlsContext {
        config,
        identity: Arc::new(identity),
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
    }
}
