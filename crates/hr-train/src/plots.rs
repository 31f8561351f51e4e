//! PNG plots of a run, redrawn at every validation and at its end: `RUN/plots/loss.png` (training loss per step) and
//! `RUN/plots/val.png` (validation mAP@10 and R@1/5/10 per step), read back from
//! `metrics.jsonl` / `eval.jsonl`.
//!
//! Text needs a TrueType font: DejaVu Sans (or Liberation Sans) from the system font folders,
//! or the file named by `HR_PLOT_FONT`. Without one the plots are skipped with a warning; a run
//! never fails because of a plot.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Result, TrainError};

/// Font files tried in order after `HR_PLOT_FONT`.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font as plotters' "sans-serif" (once per process); false when none
/// could be loaded.
pub fn register_font() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let env = std::env::var_os("HR_PLOT_FONT").map(PathBuf::from);
        let paths = env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for p in paths {
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

/// One named series of (step, value) points.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in step order.
    pub points: Vec<(f64, f64)>,
}

/// Writes the run's plots; returns their paths (empty when there is nothing to plot or no font).
pub fn write_run_plots(run: &Path) -> Result<Vec<PathBuf>> {
    if !register_font() {
        tracing::warn!("no TrueType font found (set HR_PLOT_FONT); plots skipped");
        return Ok(Vec::new());
    }
    let dir = run.join("plots");
    std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
    let mut out = Vec::new();
    let loss = read_series(&run.join("metrics.jsonl"), &["loss"])?;
    if !loss[0].points.is_empty() {
        let p = dir.join("loss.png");
        line_chart(&p, "Training loss", "loss", &loss)?;
        out.push(p);
    }
    let val = read_series(&run.join("eval.jsonl"), &["mAP@10", "R@1", "R@5", "R@10"])?;
    if !val[0].points.is_empty() {
        let p = dir.join("val.png");
        line_chart(&p, "Validation (text to audio)", "metric", &val)?;
        out.push(p);
    }
    Ok(out)
}

/// The `keys` of every JSON line of `path` against its `step` (lines without a finite value
/// are left out, e.g. skipped steps).
fn read_series(path: &Path, keys: &[&str]) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    let mut series: Vec<Series> = keys
        .iter()
        .map(|k| Series {
            name: k.to_string(),
            points: Vec::new(),
        })
        .collect();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainError::format(path.to_path_buf(), format!("not a JSON line: {e}")))?;
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        for s in &mut series {
            if let Some(y) = v[s.name.as_str()].as_f64().filter(|y| y.is_finite()) {
                s.points.push((step, y));
            }
        }
    }
    Ok(series)
}

/// A line chart of `series` with a legend, written to `path` as PNG.
pub fn line_chart(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    draw_lines(path, title, y_desc, series)
        .map_err(|msg| TrainError::format(path.to_path_buf(), format!("plotting: {msg}")))
}

fn draw_lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
) -> std::result::Result<(), String> {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = bounds(pts().map(|p| p.0));
    let (y0, y1) = bounds(pts().map(|p| p.1));
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Range of the values with a 5% margin (a unit range around a single value).
fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    match hi > lo {
        true => (lo - pad, hi + pad),
        false => (lo - 0.5, hi + 0.5),
    }
}
