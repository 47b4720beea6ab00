//! Running a node: start the data plane, then the control thread, until SIGTERM / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_engine::{EngineConfig, Placement, RouteSnapshot, StaticRoutes};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{NodeConfig, PlacementArg};
use crate::control::{self, ControlMetrics};
use crate::metrics;

/// Runs the node described by `cfg` until it is told to stop.
pub fn run(cfg: &NodeConfig) -> anyhow::Result<()> {
    if cfg.tls.is_some() {
        anyhow::bail!(
            "--tls: the data plane's TLS transport is not wired into this build yet; run without --tls"
        );
    }
    warn!(
        "TLS is off: this node speaks plain TCP to its peers (start it with --tls to encrypt and authenticate)"
    );
    let mut ecfg = EngineConfig::new(cfg.node_id, cfg.domain, cfg.listen);
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
