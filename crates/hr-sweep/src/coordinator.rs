//! What every backend shares: opening the ledger for a launch (refusing a changed sweep),
//! preparing run directories, and the status table.

use std::path::Path;

use crate::error::{Result, SweepError};
use crate::jobs;
use crate::ledger::{Event, JobKind, JobState, Ledger, LedgerState};
use crate::plan::Plan;

/// Opens the ledger for a launch: checks datasets, refuses a sweep whose runs changed since the
/// last launch (unless `accept_changes`), records the launch, generates synthetic datasets once
/// and writes every `RUN/job.toml`.
pub fn prepare_launch(plan: &Plan, backend: &str, accept_changes: bool) -> Result<Ledger> {
    plan.check_data()?;
    let mut ledger = Ledger::open(&plan.runs_dir)?;
    if !accept_changes {
        check_unchanged(plan, &ledger.state)?;
    }
    ledger.append(Event::Sweep {
        file: plan.file.display().to_string(),
        plan_hash: plan.hash.clone(),
        runs: plan.runs.iter().map(|r| r.id.clone()).collect(),
        backend: backend.into(),
    })?;
    jobs::ensure_synthetic(plan)?;
    jobs::write_job_configs(plan)?;
    Ok(ledger)
}

/// Fails with a clear message when the plan differs from the one last launched into this
/// runs directory (the hash covers every resolved run config and evaluation).
pub fn check_unchanged(plan: &Plan, state: &LedgerState) -> Result<()> {
    let Some((hash, file, ids)) = &state.last_plan else {
        return Ok(());
    };
    if *hash == plan.hash {
        return Ok(());
    }
    let added: Vec<String> = plan
        .runs
        .iter()
        .filter(|r| !ids.contains(&r.id))
        .map(|r| format!("[{}]", r.name()))
        .collect();
    let removed = ids.iter().filter(|id| plan.run(id).is_none()).count();
    let msg = format!(
        "the sweep changed since it was launched into {dir}: plan hash {hash} (from {file}) is now \
         {now} (from {cur}); {na} run(s) added or changed{list}, {removed} run(s) removed or changed. \
         Restore the sweep file (and its base config), launch into another --runs-dir, or pass \
         --accept-changes to keep the finished runs and add the new ones.",
        dir = plan.runs_dir.display(),
        now = plan.hash,
        cur = plan.file.display(),
        na = added.len(),
        list = if added.is_empty() {
            String::new()
        } else {
            format!(" {}", added.iter().take(5).cloned().collect::<Vec<_>>().join(" "))
        },
    );
    Err(SweepError::Changed(msg))
}

/// Forgets the jobs of every failed run so the launch starts them again; returns how many.
pub fn retry_failed(plan: &Plan, ledger: &mut Ledger) -> Result<usize> {
    let mut n = 0;
    for r in &plan.runs {
        let failed = [JobKind::Train, JobKind::Eval]
            .iter()
            .any(|&j| ledger.state.job(&r.id, j).map(|x| x.state) == Some(JobState::Failed));
        if failed {
            tracing::info!(run = %r.name(), "retrying a failed run");
            ledger.append(Event::Retry { run: r.id.clone() })?;
            n += 1;
        }
    }
    Ok(n)
}

/// One line of the status table.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// Run id.
    pub id: String,
    /// Run name (axis labels).
    pub name: String,
    /// Overall state: the training state, or the evaluation's once training is done.
    pub state: String,
    /// Training attempts.
    pub attempts: u32,
    /// Failure reason, when failed.
    pub reason: Option<String>,
    /// The last training step the run logged (`step N, loss L, R items/s`), while its training
    /// is not done.
    pub progress: Option<String>,
}

/// The last line of `RUN/metrics.jsonl` as `step N, loss L, R items/s` (None without one).
pub fn last_step(run_dir: &std::path::Path) -> Option<String> {
    let line = crate::fsutil::tail(&run_dir.join("metrics.jsonl"), 1);
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let step = v["step"].as_u64()?;
    let loss = v["loss"]
        .as_f64()
        .map_or("n/a".into(), |l| format!("{l:.4}"));
    let ips = v["items_per_s"].as_f64().unwrap_or(0.0);
    Some(format!("step {step}, loss {loss}, {ips:.1} items/s"))
}

/// The state of every planned run.
pub fn status_rows(plan: &Plan, state: &LedgerState) -> Vec<StatusRow> {
    plan.runs
        .iter()
        .map(|r| {
            let t = state.job(&r.id, JobKind::Train);
            let e = state.job(&r.id, JobKind::Eval);
            let (st, reason) = match (t, e) {
                (None, _) => ("missing".to_string(), None),
                (Some(t), _) if t.state != JobState::Done => {
                    (format!("train {}", t.state.as_str()), t.reason.clone())
                }
                (Some(_), None) => ("train done, eval missing".to_string(), None),
                (Some(_), Some(e)) if e.state == JobState::Done => ("done".to_string(), None),
                (Some(_), Some(e)) => (format!("eval {}", e.state.as_str()), e.reason.clone()),
            };
            let training = t.is_some_and(|t| t.state != JobState::Done);
            StatusRow {
                id: r.id.clone(),
                name: r.name(),
                state: st,
                attempts: t.map_or(0, |t| t.attempt),
                reason,
                progress: training.then(|| last_step(&r.dir)).flatten(),
            }
        })
        .collect()
}

/// Formats the status table (and failure reasons below it).
pub fn format_status(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    out += &format!(
        "{:<16}  {:<w$}  {:<26}  {:<8}  last step\n",
        "id", "run", "state", "attempts"
    );
    for r in rows {
        let progress = r.progress.as_deref().unwrap_or("");
        let line = format!(
            "{:<16}  {:<w$}  {:<26}  {:<8}  {progress}",
            r.id, r.name, r.state, r.attempts
        );
        out += line.trim_end();
        out += "\n";
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in rows {
        match counts.iter_mut().find(|(s, _)| *s == r.state) {
            Some(c) => c.1 += 1,
            None => counts.push((r.state.clone(), 1)),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    out += &format!("\n{} runs: {}\n", rows.len(), summary.join(", "));
    for r in rows.iter().filter(|r| r.reason.is_some()) {
        let reason = r.reason.as_deref().unwrap_or_default();
        out += &format!("\n[{}] {}: {reason}\n", r.id, r.name);
    }
    out
}

/// Whether the runs directory has a ledger.
pub fn has_ledger(runs_dir: &Path) -> bool {
    runs_dir.join(crate::ledger::LEDGER_FILE).is_file()
}
