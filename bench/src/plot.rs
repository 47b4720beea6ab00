//! The figures, as SVG (plotters' SVG backend only: no system fonts needed).
//!
//! `throughput.svg`: MB/s and msgs/s against payload size, a line per system (log-log).
//! `latency.svg`: a panel per payload size, p50 / p99 / p99.9 / max for each system (log µs).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::{si, size_label};
use crate::results::Results;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

fn colour(system: &str, i: usize) -> RGBColor {
    match system {
        "mesh-pair" => RGBColor(31, 119, 180),
        "nats" => RGBColor(44, 160, 44),
        "tcp" => RGBColor(90, 90, 90),
        s if s.starts_with("mesh") => RGBColor(214, 39, 40),
        _ => [RGBColor(148, 103, 189), RGBColor(255, 127, 14)][i % 2],
    }
}

/// Bounds of a log axis holding `values` (positive), with a margin.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 1.0..10.0;
    }
    (lo / 1.5)..(hi * 1.5)
}

/// Writes `throughput.svg` and `latency.svg` into `dir`; returns their paths.
pub fn write_svgs(r: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let t = dir.join("throughput.svg");
    throughput(r, &SVGBackend::new(&t, (1200, 500)).into_drawing_area())?;
    let l = dir.join("latency.svg");
    let panels = u32::try_from(r.config.payloads.len().max(1))?;
    latency(
        r,
        &SVGBackend::new(&l, (360 * panels, 460)).into_drawing_area(),
    )?;
    Ok(vec![t, l])
}

#[allow(clippy::cast_precision_loss)] // payload sizes as f64 axis values
fn throughput<DB: DrawingBackend>(
    r: &Results,
    root: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);
    let xs = r.config.payloads.iter().map(|l| *l as f64);
    let x_range = log_range(xs);
    for (area, mbps) in [(&left, true), (&right, false)] {
        let value = |t: &crate::run::ThroughputResult| if mbps { t.mb_per_s } else { t.msgs_per_s };
        let y_range = log_range(r.throughput.iter().map(value));
        let title = if mbps {
            "Throughput at saturation: payload MB/s"
        } else {
            "Throughput at saturation: messages/s"
        };
        let mut ch = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone().log_scale(), y_range.log_scale())
            .map_err(err)?;
        ch.configure_mesh()
            .x_desc("payload size")
            .y_desc(if mbps { "MB/s (log)" } else { "msgs/s (log)" })
            .y_label_formatter(&|y| si(*y))
            .x_label_formatter(&|x| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let len = x.round() as usize;
                size_label(len)
            })
            .draw()
            .map_err(err)?;
        for (i, s) in r.config.systems.iter().enumerate() {
            let c = colour(s, i);
            let pts: Vec<(f64, f64)> = r
                .throughput
                .iter()
                .filter(|t| &t.system == s && value(t) > 0.0)
                .map(|t| (t.payload_len as f64, value(t)))
                .collect();
            ch.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

const PERCENTILES: [&str; 4] = ["p50", "p99", "p99.9", "max"];

#[allow(clippy::cast_precision_loss)]
fn latency<DB: DrawingBackend>(
    r: &Results,
    root: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, r.config.payloads.len().max(1)));
    let y_range = log_range(r.latency.iter().flat_map(|l| {
        let x = &l.latency;
        [x.p50_us, x.max_us]
    }));
    for (area, &len) in panels.iter().zip(&r.config.payloads) {
        let rate = r
            .latency
            .iter()
            .find(|l| l.payload_len == len)
            .map_or(0, |l| l.rate_per_s);
        let mut ch = ChartBuilder::on(area)
            .caption(
                format!("{} at {rate}/s", size_label(len)),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3f64..3.3, y_range.clone().log_scale())
            .map_err(err)?;
        ch.configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.05 && (0.0..=3.0).contains(&i) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let i = i as usize;
                    PERCENTILES[i].to_owned()
                } else {
                    String::new()
                }
            })
            .y_desc("latency, µs (log)")
            .y_label_formatter(&|y| si(*y))
            .draw()
            .map_err(err)?;
        for (i, s) in r.config.systems.iter().enumerate() {
            let Some(l) = r
                .latency
                .iter()
                .find(|l| &l.system == s && l.payload_len == len)
            else {
                continue;
            };
            let c = colour(s, i);
            let x = &l.latency;
            let pts: Vec<(f64, f64)> = [x.p50_us, x.p99_us, x.p999_us, x.max_us]
                .into_iter()
                .enumerate()
                .filter(|(_, v)| *v > 0.0)
                .map(|(k, v)| (k as f64, v))
                .collect();
            ch.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;

    #[test]
    fn writes_both_svgs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_svgs(&sample(), dir.path()).unwrap();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.starts_with("<svg"), "{}", p.display());
            assert!(text.contains("mesh-pair") || text.contains("nats"));
        }
    }
}
