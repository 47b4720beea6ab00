//! Running a node: start the data plane, then the control thread, until SIGTERM / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_engine::{EngineConfig, Placement, RouteSnapshot, StaticRoutes, TlsContext};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{NodeConfig, PlacementArg, TlsFiles};
use crate::control::{self, ControlMetrics};
use crate::metrics;

/// Runs the node described by `cfg` until it is told to stop.
pub fn run(cfg: &NodeConfig) -> anyhow::Result<()> {
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
            // Bind now so a bad address is a start-up error, then serve in the background.
            let probe = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics-listen {addr}"))?;
            drop(probe);
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, node_id, listener_engine, cm).await {
                    warn!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        let ctl = tokio::spawn(control::run(
            engine.clone(),
            node_id,
            domain,
            control_metrics.clone(),
            stop_rx,
        ));
        wait_for_signal().await;
        info!("stopping: draining sessions");
        let _ = stop_tx.send(true);
        let _ = ctl.await;
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
