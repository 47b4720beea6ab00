//! The figure a reader wants to look at, as SVG (plotters' SVG backend only: no system fonts).
//!
//! Left: LSA transmissions caused by one intra-domain link failure and one node failure, per
//! sampled domain and per LSA the change re-originated, against the domain's size, with the
//! bound (2 × the domain's links) — the cost of a change follows its domain, not the mesh. Right: the distribution (CDF) of the route computation time per node, in the run
//! and re-timed, against the 5 ms target.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, SPF_TARGET_NS};

/// `x` with thousands separators.
fn thousands(x: u64) -> String {
    let digits = x.to_string();
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// A CDF of `ns` (milliseconds, fraction), at most ~2,000 points.
#[allow(clippy::cast_precision_loss)]
fn cdf(ns: impl Iterator<Item = u64>) -> Vec<(f64, f64)> {
    let mut v: Vec<u64> = ns.filter(|x| *x > 0).collect();
    v.sort_unstable();
    let n = v.len();
    let step = (n / 2000).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|k| (v[k] as f64 / 1e6, (k + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = v.last() {
        out.push((last as f64 / 1e6, 1.0));
    }
    out
}

/// Writes the SVG to `path`.
#[allow(clippy::cast_precision_loss)]
pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1280, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(640);
    let o = &report.out;

    // Transmissions per LSA the change made its domain's routers re-originate (2 for a link,
    // the victim's degree for a node): each crosses each link of the domain at most once each
    // way, so the cost per LSA is bounded by 2 x the domain's links — its size, not the mesh's.
    let per_lsa = |p: &crate::figures::Phase| p.traffic.lsas() as f64 / p.originated.max(1) as f64;
    let link: Vec<(f64, f64)> = o
        .domains
        .iter()
        .filter_map(|d| {
            d.link_failure
                .map(|x| (f64::from(d.size), per_lsa(&x.phase)))
        })
        .collect();
    let node: Vec<(f64, f64)> = o
        .domains
        .iter()
        .filter_map(|d| {
            d.node_failure
                .map(|x| (f64::from(d.size), per_lsa(&x.phase)))
        })
        .collect();
    let bound: Vec<(f64, f64)> = o
        .domains
        .iter()
        .filter(|d| d.link_failure.is_some() || d.node_failure.is_some())
        .map(|d| (f64::from(d.size), 2.0 * f64::from(d.links)))
        .collect();
    let xmax = o
        .domains
        .iter()
        .map(|d| f64::from(d.size))
        .fold(1.0, f64::max)
        * 1.15;
    let ymax = link
        .iter()
        .chain(&node)
        .chain(&bound)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.3;
    let title = format!(
        "Cost of a change vs its domain's size (mesh of {} nodes)",
        thousands(report.topo.nodes)
    );
    let mut ch = ChartBuilder::on(&left)
        .caption(title, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    ch.configure_mesh()
        .x_desc("nodes in the domain where the change happened")
        .y_desc("LSA transmissions per re-originated LSA")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    ch.draw_series(
        bound
            .iter()
            .map(|&p| Cross::new(p, 4, BLACK.stroke_width(1))),
    )
    .map_err(err)?
    .label("bound: 2 x the domain's links")
    .legend(|(x, y)| Cross::new((x, y), 4, BLACK.stroke_width(1)));
    ch.draw_series(link.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(err)?
        .label("one intra-domain link fails (2 LSAs)")
        .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
    ch.draw_series(
        node.iter()
            .map(|&p| TriangleMarker::new(p, 5, RED.filled())),
    )
    .map_err(err)?
    .label("one node fails (1 LSA per neighbour)")
    .legend(|(x, y)| TriangleMarker::new((x, y), 5, RED.filled()));
    ch.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (0.0, 0.0)],
        WHITE,
    )))
    .map_err(err)?
    .label(format!(
        "transmissions in other domains: {}",
        report.figures.link_failure.foreign.messages + report.figures.node_failure.foreign.messages
    ))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x, y)], WHITE));
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let run = cdf(o.nodes.iter().map(|n| n.spf_ns));
    let best = cdf(o.nodes.iter().map(|n| n.spf_best_ns));
    let target = SPF_TARGET_NS as f64 / 1e6;
    let lo = run
        .iter()
        .chain(&best)
        .map(|p| p.0)
        .fold(f64::MAX, f64::min)
        .min(target)
        * 0.8;
    let hi = run
        .iter()
        .chain(&best)
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(target)
        * 1.25;
    let lo = if lo.is_finite() && lo > 0.0 { lo } else { 0.01 };
    let mut ch = ChartBuilder::on(&right)
        .caption(
            "Route computation per node (SPF + tables)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(err)?;
    ch.configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("fraction of nodes")
        .x_label_formatter(&|v| format!("{v}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(err)?;
    ch.draw_series(LineSeries::new(run, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("as timed in the run (all nodes)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    ch.draw_series(LineSeries::new(best, GREEN.stroke_width(2)))
        .map_err(err)?
        .label("re-timed, best of 3 (every 100th node)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    ch.draw_series(LineSeries::new(
        vec![(target, 0.0), (target, 1.0)],
        RED.stroke_width(1),
    ))
    .map_err(err)?
    .label("target: 5 ms")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    ch.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
