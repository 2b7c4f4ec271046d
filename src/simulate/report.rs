//! What a run shows: the per-policy summary, the table, `summary.json`, the per-minute
//! CSV and the plots (load, replicas, p95 against the objective), each as SVG and PNG.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::engine::{Minute, Run};
use super::SimulateError;

/// One policy's figures (the `policies[]` entries of `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    /// Fraction of minutes with p95 within the objective.
    pub slo_attainment: f64,
    pub replica_hours: f64,
    pub avg_replicas: f64,
    pub max_replicas: u32,
    pub scale_events: u32,
    /// The longest run of minutes out of the objective, in seconds: how long the
    /// worst spike took to recover from.
    pub worst_recovery_s: u64,
    pub error_rate: f64,
    pub requests: u64,
    pub fallbacks: u32,
    /// The recommended policy (README, "Choosing a signal"; docs/simulation-results.md).
    pub recommended: bool,
    /// A lower bound (`oracle`), not a policy one could run.
    pub bound: bool,
    /// Replica-hours ÷ the `oracle` bound's, when the run compared one.
    pub oracle_ratio: Option<f64>,
}

impl Summary {
    pub fn of(run: &Run) -> Summary {
        let minutes = run.minutes.len().max(1) as f64;
        let within = run.minutes.iter().filter(|m| m.within).count() as f64;
        let mut worst = 0u64;
        let mut streak = 0u64;
        for m in &run.minutes {
            streak = if m.within { 0 } else { streak + 1 };
            worst = worst.max(streak);
        }
        let seconds: f64 = run.minutes.len() as f64 * 60.0;
        Summary {
            name: run.policy.clone(),
            slo_attainment: within / minutes,
            replica_hours: run.replica_seconds / 3600.0,
            avg_replicas: if seconds > 0.0 {
                run.replica_seconds / seconds
            } else {
                0.0
            },
            max_replicas: run.max_replicas,
            scale_events: run.scale_events,
            worst_recovery_s: worst * 60,
            error_rate: if run.requests == 0 {
                0.0
            } else {
                run.errors as f64 / run.requests as f64
            },
            requests: run.requests,
            fallbacks: run.fallbacks,
            recommended: run.recommended,
            bound: run.bound,
            oracle_ratio: None,
        }
    }

    /// The summaries of `runs`, each with its replica-hours as a ratio to the `oracle`
    /// bound's when one of them is the bound.
    pub fn all(runs: &[Run]) -> Vec<Summary> {
        let mut rows: Vec<Summary> = runs.iter().map(Summary::of).collect();
        let bound = rows
            .iter()
            .find(|s| s.bound)
            .map(|s| s.replica_hours)
            .filter(|h| *h > 0.0);
        if let Some(bound) = bound {
            for s in &mut rows {
                s.oracle_ratio = Some(s.replica_hours / bound);
            }
        }
        rows
    }
}

/// The summary table printed without `--out` (and beside it).
pub fn table(scenario: &str, objective_s: f64, rows: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {scenario}, p95 objective {:.0}ms\n",
        objective_s * 1000.0
    );
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>13} {:>8} {:>8} {:>6} {:>7} {:>10} {:>8}",
        "policy",
        "attainment",
        "replica-hours",
        "× oracle",
        "avg pods",
        "max",
        "events",
        "recovery",
        "errors"
    );
    for s in rows {
        let name = match (s.recommended, s.bound) {
            (true, _) => format!("{} (recommended)", s.name),
            (_, true) => format!("{} (bound)", s.name),
            _ => s.name.clone(),
        };
        let ratio = s
            .oracle_ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<26} {:>9.1}% {:>13.1} {:>8} {:>8.2} {:>6} {:>7} {:>9}s {:>7.2}%",
            name,
            s.slo_attainment * 100.0,
            s.replica_hours,
            ratio,
            s.avg_replicas,
            s.max_replicas,
            s.scale_events,
            s.worst_recovery_s,
            s.error_rate * 100.0
        );
    }
    out
}

#[derive(Serialize)]
struct SummaryFile<'a> {
    scenario: &'a str,
    objective_s: f64,
    policies: &'a [Summary],
}

/// Writes `summary.json`, `timeseries.csv` and the plots (SVG and PNG) into `dir`.
pub fn write(
    dir: &Path,
    scenario: &str,
    objective_s: f64,
    runs: &[Run],
    rows: &[Summary],
) -> Result<(), SimulateError> {
    let io = |path: &Path, e: std::io::Error| SimulateError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let json = serde_json::to_string_pretty(&SummaryFile {
        scenario,
        objective_s,
        policies: rows,
    })
    .map_err(|e| io(dir, std::io::Error::other(e)))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, json + "\n").map_err(|e| io(&path, e))?;

    let mut csv =
        String::from("policy,minute,rps,replicas,ready,cpu_percent,p95_ms,error_rate,within\n");
    for run in runs {
        for (i, m) in run.minutes.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{},{},{:.2},{:.2},{:.2},{:.1},{},{:.5},{}",
                run.policy,
                i,
                m.rps,
                m.replicas,
                m.ready,
                m.cpu_percent,
                m.p95_s
                    .map(|p| format!("{:.1}", p * 1000.0))
                    .unwrap_or_default(),
                m.error_rate,
                m.within
            );
        }
    }
    let path = dir.join("timeseries.csv");
    std::fs::write(&path, csv).map_err(|e| io(&path, e))?;

    plots(dir, scenario, objective_s, runs)
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The font of the plots' text, embedded so PNG plots need no font on the machine
/// (`fonts/README.md`: Roboto, Apache License 2.0).
const FONT: &[u8] = include_bytes!("fonts/Roboto-Regular.ttf");

/// Registers [`FONT`] as plotters' `sans-serif` once per process.
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font does not parse".to_string())
        })
        .clone()
}

/// One line chart, as `NAME.svg` and `NAME.png` in `dir`: x in hours, one series per
/// (label, points).
fn chart(
    dir: &Path,
    name: &str,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    objective: Option<f64>,
) -> Result<(), SimulateError> {
    let svg = dir.join(format!("{name}.svg"));
    let png = dir.join(format!("{name}.png"));
    let err = |path: &Path, e: String| SimulateError::Plot {
        path: path.display().to_string(),
        detail: e,
    };
    register_font().map_err(|e| err(&svg, e))?;
    let size = (960, 380);
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        y_desc,
        series,
        objective,
    )
    .map_err(|e| err(&svg, e))?;
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        y_desc,
        series,
        objective,
    )
    .map_err(|e| err(&png, e))
}

/// Draws one chart on any plotters backend.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    objective: Option<f64>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.last().map(|(x, _)| *x))
        .fold(1.0 / 60.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .chain(objective.map(|o| o * 1.5))
        .fold(1.0, f64::max)
        * 1.05;
    // Timeouts would flatten everything else: latency charts stop at 4× the objective.
    let y_max = objective.map_or(y_max, |o| y_max.min(o * 4.0));
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("hours")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    if let Some(o) = objective {
        c.draw_series(LineSeries::new(
            vec![(0.0, o), (x_max, o)],
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("objective")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(points.iter().copied(), color))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// One line per policy: each minute's `value`, at its hour (minutes without one left out).
type Lines = Vec<(String, Vec<(f64, f64)>)>;

fn per_policy(runs: &[Run], value: impl Fn(&Minute) -> Option<f64>) -> Lines {
    runs.iter()
        .map(|r| {
            let points = r.minutes.iter().enumerate();
            let points = points.filter_map(|(i, m)| value(m).map(|v| ((i as f64 + 1.0) / 60.0, v)));
            (r.policy.clone(), points.collect())
        })
        .collect()
}

fn plots(dir: &Path, scenario: &str, objective_s: f64, runs: &[Run]) -> Result<(), SimulateError> {
    if let Some(first) = runs.first() {
        let mut load = per_policy(std::slice::from_ref(first), |m| Some(m.rps));
        load[0].0 = "requests/s".to_string();
        chart(
            dir,
            "load",
            &format!("{scenario}: load"),
            "requests/s",
            &load,
            None,
        )?;
    }
    let replicas = per_policy(runs, |m| Some(m.replicas));
    chart(
        dir,
        "replicas",
        &format!("{scenario}: pods"),
        "pods",
        &replicas,
        None,
    )?;
    let p95 = per_policy(runs, |m| m.p95_s.map(|p| p * 1000.0));
    chart(
        dir,
        "p95",
        &format!("{scenario}: p95 per minute against the objective"),
        "p95 ms",
        &p95,
        Some(objective_s * 1000.0),
    )
}
