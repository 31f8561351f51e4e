//! PNG bar chart of mAP@10 per report row: ours (mean, with the seed standard deviation as an
//! error bar) beside the paper's number. Text uses the font of hr-train's plots (`HR_PLOT_FONT`,
//! else a system DejaVu / Liberation Sans).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, SweepError};
use crate::report::Row;

fn chart_err(path: &Path, e: impl std::fmt::Display) -> SweepError {
    SweepError::Chart {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Draws the chart (rows numbered as in the Markdown table).
pub fn bar_chart(path: &Path, title: &str, rows: &[Row]) -> Result<()> {
    if !hr_train::plots::register_font() {
        return Err(chart_err(
            path,
            "no TrueType font found (set HR_PLOT_FONT to a .ttf file)",
        ));
    }
    let ymax = rows
        .iter()
        .flat_map(|r| {
            let ours = r.metrics.map(|m| m[0].mean + m[0].std);
            ours.into_iter().chain(r.paper)
        })
        .fold(1.0f64, f64::max)
        * 1.3;
    let width = (140 + 60 * rows.len()).clamp(480, 2400) as u32;
    let tmp = path.with_extension("png.tmp.png");
    draw(&tmp, title, rows, ymax, width).map_err(|e| chart_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(SweepError::io(path))
}

fn draw(
    path: &Path,
    title: &str,
    rows: &[Row],
    ymax: f64,
    width: u32,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = rows.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: mAP@10 (%) per row"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..n, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("row of report.md (number above the bars)")
        .y_desc("mAP@10 (%)")
        .draw()?;
    let ours = BLUE.mix(0.7).filled();
    let means = rows.iter().map(|r| r.metrics.map(|m| m[0].mean));
    chart
        .draw_series(bars(means, (0.1, 0.48), ours))?
        .label("ours (mean over seeds)")
        .legend(legend_box(ours));
    let error_bars = rows.iter().enumerate().filter_map(|(i, r)| {
        let m = r.metrics?[0];
        let x = i as f64 + 0.29;
        Some(ErrorBar::new_vertical(
            x,
            m.mean - m.std,
            m.mean,
            m.mean + m.std,
            BLACK.filled(),
            6,
        ))
    });
    chart.draw_series(error_bars)?;
    let paper = RED.mix(0.5).filled();
    chart
        .draw_series(bars(rows.iter().map(|r| r.paper), (0.52, 0.9), paper))?
        .label("paper")
        .legend(legend_box(paper));
    let tags = rows.iter().enumerate().map(|(i, r)| {
        let top = r
            .metrics
            .map_or(0.0, |m| m[0].mean + m[0].std)
            .max(r.paper.unwrap_or(0.0));
        Text::new(
            format!("{}", i + 1),
            (i as f64 + 0.42, top + ymax * 0.05),
            ("sans-serif", 14),
        )
    });
    chart.draw_series(tags)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One bar per row with a height, from `lo` to `hi` across the row's unit slot.
fn bars(
    heights: impl Iterator<Item = Option<f64>>,
    (lo, hi): (f64, f64),
    style: ShapeStyle,
) -> Vec<Rectangle<(f64, f64)>> {
    heights
        .enumerate()
        .filter_map(|(i, h)| {
            Some(Rectangle::new(
                [(i as f64 + lo, 0.0), (i as f64 + hi, h?)],
                style,
            ))
        })
        .collect()
}

/// The legend swatch of a bar series.
fn legend_box(style: ShapeStyle) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], style)
}
