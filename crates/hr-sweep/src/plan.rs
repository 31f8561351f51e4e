//! Expanding a sweep file into runs: the cartesian product of the axes, filtered by the rules,
//! each resolved into a validated `hr_train::TrainConfig` with a stable id (a hash of the resolved
//! config, independent of where the run directory lives). Pure functions of the sweep file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hr_train::TrainConfig;
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::error::{Result, SweepError};
use crate::spec::{flatten, label, rule_labels, set_dotted, Rule, SweepSpec, SELF_EVAL};

/// The placeholder `run.dir` while hashing, so ids do not depend on the runs directory.
const DIR_PLACEHOLDER: &str = "<sweep-run>";

/// One evaluation of a finished run: a named dataset root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalTarget {
    /// Name (a key of `[eval.sets]`, or `self`).
    pub name: String,
    /// Dataset root.
    pub root: String,
}

/// One training run of the sweep.
#[derive(Debug, Clone)]
pub struct Run {
    /// Stable id: 16 hex digits of the resolved config's hash (run directory excluded).
    pub id: String,
    /// Axis name -> label, in axis order.
    pub labels: Vec<(String, String)>,
    /// The run directory (`runs_dir/<labels>-<id8>`).
    pub dir: PathBuf,
    /// The resolved config (with `run.dir` = `dir`).
    pub config: TrainConfig,
    /// Evaluation targets after training.
    pub evals: Vec<EvalTarget>,
}

impl Run {
    /// Human-readable name: `axis=label` pairs.
    pub fn name(&self) -> String {
        let parts: Vec<String> = self
            .labels
            .iter()
            .map(|(a, l)| format!("{a}={l}"))
            .collect();
        parts.join(" ")
    }

    /// The label of an axis.
    pub fn label(&self, axis: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(a, _)| a == axis)
            .map(|(_, l)| l.as_str())
    }
}

/// The expanded sweep.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The sweep file.
    pub file: PathBuf,
    /// Its parsed content.
    pub spec: SweepSpec,
    /// Where run directories, the ledger and reports live.
    pub runs_dir: PathBuf,
    /// The runs, in axis order (first axis outermost).
    pub runs: Vec<Run>,
    /// Hash of every run id and evaluation: changes whenever the sweep's content changes.
    pub hash: String,
}

impl Plan {
    /// Reads a sweep file and expands it; `runs_dir` overrides `[sweep] runs_dir`.
    pub fn load(file: &Path, runs_dir: Option<&Path>) -> Result<Plan> {
        let spec = SweepSpec::from_file(file)?;
        let runs_dir = runs_dir.map_or_else(|| spec.sweep.runs_dir.clone(), Path::to_path_buf);
        let base = base_table(file, &spec)?;
        let mut runs = Vec::new();
        for combo in combinations(&spec) {
            if !selected(&spec, &combo) {
                continue;
            }
            runs.push(resolve_run(file, &spec, &base, &runs_dir, combo)?);
        }
        check_unique(file, &runs)?;
        check_synthetic_roots(file, &runs)?;
        let hash = plan_hash(&runs, &spec.eval.split);
        Ok(Plan {
            file: file.to_path_buf(),
            spec,
            runs_dir,
            runs,
            hash,
        })
    }

    /// The run with this id.
    pub fn run(&self, id: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.id == id)
    }

    /// Fails when a dataset root does not exist locally and is not generated synthetically
    /// (URLs are not checked).
    pub fn check_data(&self) -> Result<()> {
        let synthetic: Vec<&str> = self
            .runs
            .iter()
            .filter(|r| r.config.data.synthetic_clips > 0)
            .map(|r| r.config.data.root.as_str())
            .collect();
        let exists = |root: &str| {
            root.contains("://") && !root.starts_with("file://")
                || Path::new(root.trim_start_matches("file://"))
                    .join("manifest.json")
                    .is_file()
                || synthetic.contains(&root)
        };
        for r in &self.runs {
            if !exists(&r.config.data.root) {
                return Err(missing(r, "data.root", &r.config.data.root));
            }
            for e in &r.evals {
                if !exists(&e.root) {
                    return Err(missing(r, &format!("eval set {}", e.name), &e.root));
                }
            }
        }
        Ok(())
    }
}

fn missing(r: &Run, key: &str, root: &str) -> SweepError {
    SweepError::MissingData {
        run: r.name(),
        key: key.into(),
        root: root.into(),
    }
}

/// The base file (if any) with `[base]` applied, as a TOML table.
fn base_table(file: &Path, spec: &SweepSpec) -> Result<Table> {
    let mut t = match &spec.sweep.base {
        Some(b) => {
            let p = file.parent().unwrap_or(Path::new(".")).join(b);
            let text = std::fs::read_to_string(&p).map_err(SweepError::io(&p))?;
            text.parse::<Table>()
                .map_err(|e| SweepError::format(p.clone(), e.message().trim().to_string()))?
        }
        None => Table::new(),
    };
    let mut kv = Vec::new();
    flatten(&spec.base, "", &mut kv);
    for (k, v) in kv {
        set_dotted(&mut t, &k, v).map_err(|m| SweepError::spec(file, format!("[base]: {m}")))?;
    }
    Ok(t)
}

/// Every combination of axis values (indices), first axis outermost.
fn combinations(spec: &SweepSpec) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for axis in &spec.axes {
        let mut next = Vec::with_capacity(out.len() * axis.values.len());
        for prefix in &out {
            for i in 0..axis.values.len() {
                let mut c = prefix.clone();
                c.push(i);
                next.push(c);
            }
        }
        out = next;
    }
    out
}

fn labels_of(spec: &SweepSpec, combo: &[usize]) -> Vec<(String, String)> {
    spec.axes
        .iter()
        .zip(combo)
        .map(|(a, &i)| (a.name.clone(), label(&a.values[i])))
        .collect()
}

/// Whether a rule matches a run's labels.
pub fn rule_matches(rule: &Rule, labels: &[(String, String)]) -> bool {
    rule.iter().all(|(axis, v)| {
        labels
            .iter()
            .find(|(a, _)| a == axis)
            .is_some_and(|(_, l)| rule_labels(v).contains(l))
    })
}

fn selected(spec: &SweepSpec, combo: &[usize]) -> bool {
    let labels = labels_of(spec, combo);
    let included = spec.include.is_empty() || spec.include.iter().any(|r| rule_matches(r, &labels));
    included && !spec.exclude.iter().any(|r| rule_matches(r, &labels))
}

fn resolve_run(
    file: &Path,
    spec: &SweepSpec,
    base: &Table,
    runs_dir: &Path,
    combo: Vec<usize>,
) -> Result<Run> {
    let labels = labels_of(spec, &combo);
    let name = labels
        .iter()
        .map(|(a, l)| format!("{a}={l}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut t = base.clone();
    let mut evals: Vec<String> = Vec::new();
    for (axis, &i) in spec.axes.iter().zip(&combo) {
        let l = label(&axis.values[i]);
        let mut kv = Vec::new();
        match axis.set.get(&l) {
            Some(set) => flatten(set, "", &mut kv),
            None => kv.extend(axis.key.clone().map(|k| (k, axis.values[i].clone()))),
        }
        for (k, v) in kv {
            set_dotted(&mut t, &k, v).map_err(|m| {
                SweepError::spec(file, format!("axis {:?} value {l:?}: {m}", axis.name))
            })?;
        }
        for e in axis.eval_on.get(&l).into_iter().flatten() {
            if !evals.contains(e) {
                evals.push(e.clone());
            }
        }
    }
    set_dotted(&mut t, "run.dir", Value::String(DIR_PLACEHOLDER.into()))
        .map_err(|m| SweepError::spec(file, m))?;
    let rc = |e| SweepError::RunConfig {
        file: file.to_path_buf(),
        run: name.clone(),
        error: Box::new(e),
    };
    let mut config = TrainConfig::from_toml_str(&t.to_string(), &[]).map_err(rc)?;
    let id = config.hash().map_err(rc)?;
    let dir = runs_dir.join(format!("{}-{}", dir_name(&labels), &id[..8]));
    config.run.dir = dir.clone();
    let evals = eval_targets(spec, &config, evals);
    Ok(Run {
        id,
        labels,
        dir,
        config,
        evals,
    })
}

fn eval_targets(spec: &SweepSpec, cfg: &TrainConfig, names: Vec<String>) -> Vec<EvalTarget> {
    if names.is_empty() {
        return vec![EvalTarget {
            name: SELF_EVAL.into(),
            root: cfg.data.root.clone(),
        }];
    }
    names
        .into_iter()
        .filter_map(|n| {
            let root = spec.eval.sets.get(&n)?.clone();
            Some(EvalTarget { name: n, root })
        })
        .collect()
}

/// A file-system-safe directory name from the labels.
fn dir_name(labels: &[(String, String)]) -> String {
    let joined = labels
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("_");
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn check_unique(file: &Path, runs: &[Run]) -> Result<()> {
    let mut seen: BTreeMap<&str, &Run> = BTreeMap::new();
    for r in runs {
        if let Some(prev) = seen.insert(&r.id, r) {
            let m = format!(
                "runs [{}] and [{}] resolve to the same config (add an exclude rule)",
                prev.name(),
                r.name()
            );
            return Err(SweepError::spec(file, m));
        }
    }
    Ok(())
}

/// Runs sharing a synthetic dataset root must generate the same data.
fn check_synthetic_roots(file: &Path, runs: &[Run]) -> Result<()> {
    let mut roots: BTreeMap<&str, (&Run, (u64, u64))> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.config.data.synthetic_clips > 0) {
        let d = &r.config.data;
        let key = (d.synthetic_clips, d.synthetic_seed);
        if let Some((prev, k)) = roots.insert(&d.root, (r, key)) {
            if k != key {
                let m = format!(
                    "runs [{}] and [{}] generate different synthetic data into the same data.root {:?}",
                    prev.name(),
                    r.name(),
                    d.root
                );
                return Err(SweepError::spec(file, m));
            }
        }
    }
    Ok(())
}

/// Hash of the runs (ids and evaluations) and the test split.
fn plan_hash(runs: &[Run], split: &str) -> String {
    let mut h = Sha256::new();
    h.update(split.as_bytes());
    for r in runs {
        h.update(r.id.as_bytes());
        for e in &r.evals {
            h.update(format!("|{}={}", e.name, e.root).as_bytes());
        }
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}
