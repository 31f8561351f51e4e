//! The embedded-default demo: the same config trained as a content-based baseline (fusion
//! `none`) and as hybrids (`late`, `mid`), each evaluated on the test split, in one table.

use std::path::PathBuf;
use std::time::Instant;

use hr_models::fusion::FusionKind;
use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::eval_job::{evaluate_checkpoint, load};
use crate::metrics::RetrievalMetrics;
use crate::trainer::{ensure_dataset, train, Outcome, Resume, TrainControl};

/// One trained and evaluated variant.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    /// Fusion of this variant.
    pub fusion: FusionKind,
    /// Test metrics of the final weights.
    pub test: RetrievalMetrics,
    /// Last validation metrics.
    pub val: Option<RetrievalMetrics>,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Final checkpoint.
    pub checkpoint: PathBuf,
    /// Training + evaluation wall time in seconds.
    pub seconds: f64,
}

/// Name of a fusion kind.
pub fn fusion_name(f: FusionKind) -> &'static str {
    match f {
        FusionKind::None => "none",
        FusionKind::Late => "late",
        FusionKind::Mid => "mid",
    }
}

/// Trains and evaluates every variant under `base.run.dir/<fusion>`; `None` if preempted.
pub fn run_demo(
    base: &TrainConfig,
    variants: &[FusionKind],
    ctl: &TrainControl,
) -> Result<Option<Vec<DemoRow>>> {
    ensure_dataset(base)?;
    let mut rows = Vec::new();
    for &f in variants {
        let t0 = Instant::now();
        let mut cfg = base.clone();
        cfg.model.fusion = f;
        cfg.run.dir = base.run.dir.join(fusion_name(f));
        tracing::info!(fusion = fusion_name(f), dir = %cfg.run.dir.display(), "demo: training");
        let s = train(&cfg, &Resume::Auto, ctl)?;
        if s.outcome == Outcome::Preempted {
            return Ok(None);
        }
        let mut ck = load(&cfg.run.dir)?;
        let (r, _) = evaluate_checkpoint(&mut ck, None, "test", cfg.eval.batch_size)?;
        rows.push(DemoRow {
            fusion: f,
            test: r.metrics,
            val: s.last_val.map(|v| v.1),
            run_dir: cfg.run.dir.clone(),
            checkpoint: ck.dir,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(Some(rows))
}

/// A Markdown table: test mAP@10, R@1/5/10 and the mAP@10 delta to the first row (the baseline).
pub fn format_table(rows: &[DemoRow]) -> String {
    let base = rows.first().map_or(0.0, |r| r.test.map10);
    let mut s = String::from("| model | mAP@10 | R@1 | R@5 | R@10 | delta mAP@10 | time (s) |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let name = match r.fusion {
            FusionKind::None => "tiny, no fusion (baseline)".to_string(),
            f => format!("tiny, {} fusion", fusion_name(f)),
        };
        s.push_str(&format!(
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:+.4} | {:.0} |\n",
            r.test.map10,
            r.test.r1,
            r.test.r5,
            r.test.r10,
            r.test.map10 - base,
            r.seconds
        ));
    }
    s
}
