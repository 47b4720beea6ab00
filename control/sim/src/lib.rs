//! `mesh-sim`: a deterministic, seeded simulator of the mesh control plane at a million nodes.
//!
//! It drives the real, unmodified sans-IO state machines of `mesh-routing` ([`mesh_routing::Router`]:
//! flooding, LSDB, SPF, domain routes) through a discrete-event network in one process — no
//! sockets, no clocks inside the routers, one seed for every random choice — and measures what
//! SPEC §9 claims: route-table entries per node, control-state memory per node, route
//! computation time, LSA transmissions per topology change and the time to re-converge.
//!
//! Modules, bottom-up:
//! - [`rng`]: seeded random streams;
//! - [`topology`]: the mesh (domains, links, costs, latencies) generated from the seed;
//! - [`engine`]: the discrete-event network that drives routers and counts transmissions;
//! - [`scenario`]: settings and what fails;
//! - [`live`]: every router of the mesh live at once (small meshes, and the reference);
//! - [`hier`]: the hierarchical mode that runs a million nodes domain by domain;
//! - [`figures`], [`report`], [`plot`]: measurements, checks, text, JSON and SVG.
//!
//! Same seed, same settings → the same figures, except wall-clock timings (route computation
//! time, run time), which are measured and never fed back into the simulation.

#![forbid(unsafe_code)]

pub mod engine;
pub mod figures;
pub mod hier;
pub mod live;
pub mod plot;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod topology;

use std::time::Instant;

pub use report::Report;
pub use scenario::{Mode, SimConfig};

/// Generates the mesh, runs the scenario in the configured mode, and derives the report.
pub fn run(cfg: &SimConfig) -> Result<Report, String> {
    cfg.validate()?;
    let started = Instant::now();
    let topo = topology::Topology::generate(&cfg.topology, cfg.seed)?;
    let generated = started.elapsed().as_secs_f64();
    if cfg.progress {
        eprintln!(
            "[mesh-sim] generated {} nodes in {} domains in {generated:.1} s",
            topo.node_count(),
            topo.domains.len()
        );
    }
    let started = Instant::now();
    let out = match cfg.mode {
        Mode::Live => live::run(cfg, &topo),
        Mode::Hierarchical => hier::run(cfg, &topo),
    };
    let ran = started.elapsed().as_secs_f64();
    Ok(Report::new(cfg, &topo, out, generated, ran))
}
