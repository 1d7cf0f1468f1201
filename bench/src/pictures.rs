//! The report's pictures, as SVG beside `report.md` (drawn with `plotters`):
//!
//! - `convergence.svg`: sidecars existing over time in the first round, for the operator and
//!   both floors (phased and ideal), each from its first main-Pod create;
//! - `latency-cdf.svg`: the distribution of Pod → sidecar latencies of the burst, for the
//!   operator and the ideal floor (and the peer of `make bench-peers`);
//! - `churn-latency-cdf.svg`: the same distribution in each steady-churn run.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::report::Report;

/// File names, relative to the report.
pub const CONVERGENCE_SVG: &str = "convergence.svg";
/// See the module doc.
pub const LATENCY_SVG: &str = "latency-cdf.svg";
/// See the module doc.
pub const CHURN_SVG: &str = "churn-latency-cdf.svg";

/// Colours of the churn runs, in order.
const PALETTE: [RGBColor; 6] = [
    RED,
    BLUE,
    RGBColor(0, 150, 0),
    RGBColor(230, 140, 0),
    RGBColor(140, 0, 170),
    RGBColor(0, 160, 170),
];

/// One line of a picture: its name, colour and points.
struct Series {
    name: String,
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
    let mut convergence = vec![
        Series {
            name: "operator".into(),
            color: RED,
            points: count(&op.convergence.curves.sidecars_s),
        },
        Series {
            name: "phased floor".into(),
            color: BLUE,
            points: count(&floor.curves.sidecars_s),
        },
        Series {
            name: "ideal floor".into(),
            color: GREEN,
            points: count(&floor.curves.ideal_sidecars_s),
        },
    ];
    if let Some(peer) = report.peers.as_ref().and_then(|p| p.rounds.first()) {
        convergence.push(Series {
            name: "Kyverno (generate)".into(),
            color: RGBColor(230, 140, 0),
            points: count(&peer.sidecars_s),
        });
    }
    draw(
        &dir.join(CONVERGENCE_SVG),
        &format!("Sidecars existing over time, N = {}", report.n),
        ("seconds since the first main-Pod create", "sidecars"),
        &convergence,
    )?;
    let mut latency = vec![
        Series {
            name: "operator".into(),
            color: RED,
            points: cdf(&op.convergence.curves.latencies_ms),
        },
        Series {
            name: "ideal floor".into(),
            color: GREEN,
            points: cdf(&floor.curves.latencies_ms),
        },
    ];
    // `make bench-peers`: the peer's first round beside them.
    if let Some(peer) = report.peers.as_ref().and_then(|p| p.rounds.first()) {
        latency.push(Series {
            name: "Kyverno (generate)".into(),
            color: BLUE,
            points: cdf(&peer.latencies_ms),
        });
    }
    draw(
        &dir.join(LATENCY_SVG),
        &format!("Pod → sidecar latency, burst of N = {}", report.n),
        ("milliseconds", "fraction of Pods"),
        &latency,
    )?;
    let mut files = vec![CONVERGENCE_SVG, LATENCY_SVG];
    if let Some(c) = report.churn.as_ref().filter(|c| !c.runs.is_empty()) {
        let runs: Vec<Series> = c
            .runs
            .iter()
            .zip(PALETTE.iter().cycle())
            .map(|(r, color)| Series {
                name: format!(
                    "operator, {} {} Pods/s{}",
                    r.placement,
                    r.rate,
                    if r.pod_events { "" } else { ", no events" }
                ),
                color: *color,
                points: cdf(&r.samples_ms),
            })
            .collect();
        draw(
            &dir.join(CHURN_SVG),
            "Pod → sidecar latency, steady churn",
            ("milliseconds", "fraction of Pods"),
            &runs,
        )?;
        files.push(CHURN_SVG);
    }
    Ok(files)
}

/// The empirical distribution of `samples`: (value, fraction at or below it).
fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().map(|x| x.max(0.0)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len().max(1) as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
        .collect()
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
            .label(s.name.as_str())
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
