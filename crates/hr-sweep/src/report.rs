//! The report: one row per (configuration without the seed axis, evaluation set), in the paper's
//! layout: mean and standard deviation over seeds, delta to the matching baseline, and the
//! paper's own number beside ours. Markdown, CSV and a PNG bar chart.

use std::path::PathBuf;

use crate::error::{Result, SweepError};
use crate::jobs;
use crate::plan::{Plan, Run};
use crate::spec::label;
use hr_core::write_atomic;

/// Mean and sample standard deviation of a metric over seeds (percent).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one seed).
    pub std: f64,
}

/// One report row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// (axis, label) of every axis except the seed axis.
    pub labels: Vec<(String, String)>,
    /// Evaluation set.
    pub eval: String,
    /// Seeds with results / seeds planned.
    pub seeds: (usize, usize),
    /// mAP@10, R@1, R@5, R@10 of the final checkpoints (None without results).
    pub metrics: Option<[Stat; 4]>,
    /// mAP@10 of the best-validation checkpoints (None when no run validated).
    pub best_map10: Option<Stat>,
    /// mAP@10 minus the matching baseline's.
    pub delta: Option<f64>,
    /// The paper's mAP@10.
    pub paper: Option<f64>,
    /// The paper's delta to its baseline.
    pub paper_delta: Option<f64>,
    /// Whether this row is a baseline.
    pub is_baseline: bool,
}

/// Mean and sample standard deviation.
pub fn stat(xs: &[f64]) -> Stat {
    if xs.is_empty() {
        return Stat::default();
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Stat {
        mean,
        std: var.sqrt(),
    }
}

fn group_labels(plan: &Plan, run: &Run) -> Vec<(String, String)> {
    let seed = &plan.spec.sweep.seed_axis;
    run.labels
        .iter()
        .filter(|(a, _)| a != seed)
        .cloned()
        .collect()
}

/// The rows of the plan (whether or not results exist yet), in plan order.
pub fn rows(plan: &Plan) -> Vec<Row> {
    let mut rows: Vec<(Row, Vec<[f64; 4]>, Vec<f64>)> = Vec::new();
    for run in &plan.runs {
        let labels = group_labels(plan, run);
        for e in &run.evals {
            let f = jobs::eval_file(run, &e.name);
            let m = f.map(|f| [f.last.map10, f.last.r1, f.last.r5, f.last.r10].map(|x| 100.0 * x));
            let best = f.and_then(|f| f.best).map(|b| 100.0 * b.map10);
            let idx = rows
                .iter()
                .position(|(r, _, _)| r.labels == labels && r.eval == e.name);
            let idx = idx.unwrap_or_else(|| {
                rows.push((
                    new_row(plan, labels.clone(), &e.name),
                    Vec::new(),
                    Vec::new(),
                ));
                rows.len() - 1
            });
            let (row, vals, bests) = &mut rows[idx];
            row.seeds.1 += 1;
            vals.extend(m);
            bests.extend(best);
        }
    }
    let mut out: Vec<Row> = rows
        .into_iter()
        .map(|(mut r, vals, bests)| {
            r.seeds.0 = vals.len();
            if !vals.is_empty() {
                r.metrics = Some(std::array::from_fn(|k| {
                    stat(&vals.iter().map(|v| v[k]).collect::<Vec<_>>())
                }));
            }
            r.best_map10 = (!bests.is_empty()).then(|| stat(&bests));
            r
        })
        .collect();
    fill_deltas(plan, &mut out);
    out
}

fn new_row(plan: &Plan, labels: Vec<(String, String)>, eval: &str) -> Row {
    let paper = plan
        .spec
        .paper
        .iter()
        .find(|p| {
            p.eval == eval
                && p.matches.len() == labels.len()
                && p.matches
                    .iter()
                    .all(|(a, v)| labels.iter().any(|(x, l)| x == a && *l == label(v)))
        })
        .map(|p| p.map10);
    let base = &plan.spec.sweep.baseline;
    let is_baseline = !base.is_empty()
        && base
            .iter()
            .all(|(a, v)| labels.iter().any(|(x, l)| x == a && *l == label(v)));
    Row {
        labels,
        eval: eval.into(),
        seeds: (0, 0),
        metrics: None,
        best_map10: None,
        delta: None,
        paper,
        paper_delta: None,
        is_baseline,
    }
}

/// The labels of a row's baseline: the baseline axes replaced by their baseline labels.
fn baseline_labels(plan: &Plan, labels: &[(String, String)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(a, l)| {
            let b = plan.spec.sweep.baseline.get(a).map(label);
            (a.clone(), b.unwrap_or_else(|| l.clone()))
        })
        .collect()
}

fn fill_deltas(plan: &Plan, rows: &mut [Row]) {
    if plan.spec.sweep.baseline.is_empty() {
        return;
    }
    let snapshot = rows.to_vec();
    for r in rows.iter_mut().filter(|r| !r.is_baseline) {
        let bl = baseline_labels(plan, &r.labels);
        let Some(b) = snapshot.iter().find(|b| b.labels == bl && b.eval == r.eval) else {
            continue;
        };
        if let (Some(m), Some(bm)) = (r.metrics, b.metrics) {
            r.delta = Some(m[0].mean - bm[0].mean);
        }
        if let (Some(p), Some(bp)) = (r.paper, b.paper) {
            r.paper_delta = Some(p - bp);
        }
    }
}

fn opt(x: Option<f64>, signed: bool) -> String {
    match x {
        Some(v) if signed => format!("{v:+.2}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    }
}

/// The Markdown table.
pub fn markdown(plan: &Plan, rows: &[Row]) -> String {
    let axes: Vec<String> = rows.first().map_or(Vec::new(), |r| {
        r.labels.iter().map(|(a, _)| a.clone()).collect()
    });
    let mut head: Vec<String> = vec!["#".into()];
    head.extend(axes.iter().cloned());
    let tail = [
        "eval",
        "seeds",
        "mAP@10",
        "best-val ckpt mAP@10",
        "Δ baseline",
        "paper mAP@10",
        "paper Δ",
        "R@1",
        "R@5",
        "R@10",
    ];
    head.extend(tail.iter().map(|s| s.to_string()));
    let mut out = format!(
        "# {}: text-to-audio retrieval on the {} split (percent; mean ± std over `{}`)\n\n\
         `mAP@10`, `Δ` and `R@k` score each run's final checkpoint (the paper's protocol); \
         `best-val ckpt` scores the checkpoint with the best validation mAP@10.\n\n",
        plan.spec.sweep.name, plan.spec.eval.split, plan.spec.sweep.seed_axis
    );
    out += &format!("| {} |\n", head.join(" | "));
    out += &format!("|{}\n", "---|".repeat(head.len()));
    for (i, r) in rows.iter().enumerate() {
        let mut cells: Vec<String> = vec![(i + 1).to_string()];
        cells.extend(r.labels.iter().map(|(_, l)| l.clone()));
        let m = |k: usize| {
            r.metrics
                .map_or("—".into(), |m| format!("{:.2}", m[k].mean))
        };
        let pm = |s: Stat| format!("{:.2} ± {:.2}", s.mean, s.std);
        let map = r.metrics.map_or("—".into(), |m| pm(m[0]));
        cells.extend([
            r.eval.clone(),
            format!("{}/{}", r.seeds.0, r.seeds.1),
            map,
            r.best_map10.map_or("—".into(), pm),
            if r.is_baseline {
                "(baseline)".into()
            } else {
                opt(r.delta, true)
            },
            opt(r.paper, false),
            if r.is_baseline {
                "(baseline)".into()
            } else {
                opt(r.paper_delta, true)
            },
            m(1),
            m(2),
            m(3),
        ]);
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// The CSV table (one column per statistic).
pub fn csv(rows: &[Row]) -> String {
    let axes: Vec<String> = rows.first().map_or(Vec::new(), |r| {
        r.labels.iter().map(|(a, _)| a.clone()).collect()
    });
    let mut head = axes.clone();
    head.extend(
        [
            "eval",
            "seeds_done",
            "seeds_planned",
            "map10_mean",
            "map10_std",
            "best_val_map10_mean",
            "best_val_map10_std",
            "delta_baseline",
            "paper_map10",
            "paper_delta",
            "r1_mean",
            "r1_std",
            "r5_mean",
            "r5_std",
            "r10_mean",
            "r10_std",
        ]
        .map(String::from),
    );
    let mut out = head.join(",") + "\n";
    let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
    for r in rows {
        let mut c: Vec<String> = r.labels.iter().map(|(_, l)| csv_field(l)).collect();
        c.push(csv_field(&r.eval));
        c.push(r.seeds.0.to_string());
        c.push(r.seeds.1.to_string());
        let m = r.metrics;
        c.push(f(m.map(|m| m[0].mean)));
        c.push(f(m.map(|m| m[0].std)));
        c.push(f(r.best_map10.map(|b| b.mean)));
        c.push(f(r.best_map10.map(|b| b.std)));
        c.push(f(r.delta));
        c.push(f(r.paper));
        c.push(f(r.paper_delta));
        for k in 1..4 {
            c.push(f(m.map(|m| m[k].mean)));
            c.push(f(m.map(|m| m[k].std)));
        }
        out += &(c.join(",") + "\n");
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Files written by [`write()`].
#[derive(Debug, Clone)]
pub struct Written {
    /// The Markdown table.
    pub markdown: PathBuf,
    /// The CSV table.
    pub csv: PathBuf,
    /// The chart, when a font was available.
    pub chart: Option<PathBuf>,
}

/// Writes `report.md`, `report.csv` and `report-map10.png` into the runs directory.
pub fn write(plan: &Plan, rows: &[Row]) -> Result<Written> {
    let dir = &plan.runs_dir;
    std::fs::create_dir_all(dir).map_err(SweepError::io(dir))?;
    let md = dir.join("report.md");
    write_atomic(&md, markdown(plan, rows).as_bytes())?;
    let cs = dir.join("report.csv");
    write_atomic(&cs, csv(rows).as_bytes())?;
    let png = dir.join("report-map10.png");
    let chart = match crate::chart::bar_chart(&png, &plan.spec.sweep.name, rows) {
        Ok(()) => Some(png),
        Err(e @ SweepError::Chart { .. }) => {
            tracing::warn!(error = %e, "no chart");
            None
        }
        Err(e) => return Err(e),
    };
    Ok(Written {
        markdown: md,
        csv: cs,
        chart,
    })
}
