//! The report's pictures, as SVG beside `report.md` (drawn with `plotters`):
//!
//! - `convergence.svg`: sidecars existing over time in the first round, for the operator and
//!   both floors (phased and ideal), each from its first main-Pod create;
//! - `latency-cdf.svg`: the distribution of Pod → sidecar latencies of the burst, for the
//!   operator and the ideal floor.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::report::Report;

/// File names, relative to the report.
pub const CONVERGENCE_SVG: &str = "convergence.svg";
/// See the module doc.
pub const LATENCY_SVG: &str = "latency-cdf.svg";

/// One line of a picture: its name, colour and points.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Writes the pictures of `report`'s first round into `dir`; returns the files written
/// (none without a round).
pub fn write_pictures(report: &Report, dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    let (Some(floor), Some(op)) = (report.floor_rounds.first(), report.operator_rounds.first())
    else {
        return Ok(Vec::new());
    };
    let count = |times: &[f64]| -> Vec<(f64, f64)> {
        let mut pts = vec![(0.0, 0.0)];
        pts.extend(times.iter().enumerate().map(|(i, t)| (*t, (i + 1) as f64)));
        pts
    };
    let convergence = [
        Series {
            name: "operator",
            color: RED,
            points: count(&op.convergence.curves.sidecars_s),
        },
        Series {
            name: "phased floor",
            color: BLUE,
            points: count(&floor.curves.sidecars_s),
        },
        Series {
            name: "ideal floor",
            color: GREEN,
            points: count(&floor.curves.ideal_sidecars_s),
        },
    ];
    draw(
        &dir.join(CONVERGENCE_SVG),
        &format!("Sidecars existing over time, N = {}", report.n),
        ("seconds since the first main-Pod create", "sidecars"),
        &convergence,
    )?;
    let cdf = |samples: &[f64]| -> Vec<(f64, f64)> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        sorted
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
            .collect()
    };
    let latency = [
        Series {
            name: "operator",
            color: RED,
            points: cdf(&op.convergence.curves.latencies_ms),
        },
        Series {
            name: "ideal floor",
            color: GREEN,
            points: cdf(&floor.curves.latencies_ms),
        },
    ];
    draw(
        &dir.join(LATENCY_SVG),
        &format!("Pod → sidecar latency, burst of N = {}", report.n),
        ("milliseconds", "fraction of Pods"),
        &latency,
    )?;
    Ok(vec![CONVERGENCE_SVG, LATENCY_SVG])
}

/// One line chart with a legend.
fn draw(path: &Path, title: &str, axes: (&str, &str), series: &[Series]) -> anyhow::Result<()> {
    let max = |f: fn(&(f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(f))
            .fold(0.0_f64, f64::max)
    };
    let (x_max, y_max) = (max(|p| p.0).max(1e-3) * 1.05, max(|p| p.1).max(1e-3) * 1.05);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .draw()
        .map_err(|e| fail(&e))?;
    for s in series.iter().filter(|s| s.points.len() > 1) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    drop(chart);
    std::fs::metadata(path).with_context(|| format!("{} was not written", path.display()))?;
    Ok(())
}
