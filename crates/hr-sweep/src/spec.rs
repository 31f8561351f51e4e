//! The sweep file (TOML): a base experiment config, axes, inclusion/exclusion rules, evaluation
//! sets and the paper's reference numbers. See `configs/sweeps/README.md` for the format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use crate::error::{Result, SweepError};

/// A parsed sweep file (not yet expanded).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// `[sweep]`: name, base file, runs directory, baseline.
    pub sweep: SweepSection,
    /// `[base]`: config keys applied on top of the base file (same schema as `hr-train` configs).
    #[serde(default)]
    pub base: Table,
    /// `[[axes]]`, in order (the order of run names and of report columns).
    #[serde(default)]
    pub axes: Vec<AxisSpec>,
    /// `[[include]]`: when present, a run must match at least one.
    #[serde(default)]
    pub include: Vec<Rule>,
    /// `[[exclude]]`: a run matching any is dropped.
    #[serde(default)]
    pub exclude: Vec<Rule>,
    /// `[eval]`: test split and named evaluation datasets.
    #[serde(default)]
    pub eval: EvalSpec,
    /// `[[paper]]`: the paper's numbers, shown beside ours in the report.
    #[serde(default)]
    pub paper: Vec<PaperEntry>,
    /// `[slurm]`: resources of the Slurm backend.
    #[serde(default)]
    pub slurm: SlurmSpec,
    /// `[paths]`: named paths (datasets, pretrained weights) that string values anywhere else
    /// use as `{paths.NAME}`; a user edits them once per cluster.
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
}

/// `[slurm]`: what the sbatch templates are rendered with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSpec {
    /// Partition.
    pub partition: String,
    /// Account (`--account`), if any.
    pub account: Option<String>,
    /// Nodes per training run.
    pub nodes: u32,
    /// GPUs per node = tasks per node (one task per GPU).
    pub gpus_per_node: u32,
    /// CPU cores per task.
    pub cpus_per_task: u32,
    /// Memory per node (`--mem`), if set.
    pub mem: Option<String>,
    /// Time limit of a training job.
    pub time: String,
    /// Time limit of an evaluation job.
    pub eval_time: String,
    /// Array tasks running at once (`--array=...%N`).
    pub array_limit: u32,
    /// Directory holding hr-train / hr-eval on the cluster (default: the local bin dir).
    pub bin_dir: Option<String>,
    /// Shell lines run before `srun` (module loads, `export HR_LAUNCH="apptainer exec --nv IMAGE"`).
    pub setup: String,
    /// Extra `#SBATCH` options, one per entry (e.g. `--qos=high`).
    pub extra: Vec<String>,
}

impl Default for SlurmSpec {
    fn default() -> Self {
        SlurmSpec {
            partition: "gpu".into(),
            account: None,
            nodes: 1,
            gpus_per_node: 1,
            cpus_per_task: 8,
            mem: None,
            time: "24:00:00".into(),
            eval_time: "01:00:00".into(),
            array_limit: 8,
            bin_dir: None,
            setup: String::new(),
            extra: Vec::new(),
        }
    }
}

/// `[sweep]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Sweep name (report titles, Slurm job names).
    pub name: String,
    /// Base experiment config, relative to the sweep file (optional: the trainer's defaults).
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// Directory of the run directories, the ledger and the report (relative to the working directory).
    pub runs_dir: PathBuf,
    /// The axis aggregated over in the report (mean and standard deviation).
    #[serde(default = "default_seed_axis")]
    pub seed_axis: String,
    /// Axis labels that make a row the baseline of the rows differing only in these axes.
    #[serde(default)]
    pub baseline: BTreeMap<String, Value>,
    /// Attempts per training run before it counts as failed (preemptions count too).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_seed_axis() -> String {
    "seed".into()
}

fn default_attempts() -> u32 {
    3
}

/// One axis: labelled values, each setting one config key or a table of keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisSpec {
    /// Axis name (used by rules, the baseline and the report).
    pub name: String,
    /// The dotted config key a value is written to (when the value has no `set` entry).
    #[serde(default)]
    pub key: Option<String>,
    /// The values (strings or numbers); their text form is the label.
    pub values: Vec<Value>,
    /// Per label: config keys to set instead of `key` (dotted keys or nested tables).
    #[serde(default)]
    pub set: BTreeMap<String, Table>,
    /// Per label: evaluation sets (names in `[eval.sets]`) a run with this value is tested on.
    #[serde(default)]
    pub eval_on: BTreeMap<String, Vec<String>>,
}

/// A rule: axis name -> a label or a list of labels; matches when every listed axis matches.
pub type Rule = BTreeMap<String, Value>;

/// `[eval]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// The split every evaluation runs on.
    #[serde(default = "default_split")]
    pub split: String,
    /// Named evaluation datasets (name -> dataset root).
    #[serde(default)]
    pub sets: BTreeMap<String, String>,
    /// Where hr-eval runs: `cpu` (default), `cuda` or `cuda:N`; on Slurm `cuda` also asks for
    /// one GPU.
    #[serde(default = "default_device")]
    pub device: String,
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec {
            split: default_split(),
            sets: BTreeMap::new(),
            device: default_device(),
        }
    }
}

impl EvalSpec {
    /// Whether the evaluations run on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.device.starts_with("cuda")
    }
}

fn default_split() -> String {
    "test".into()
}

fn default_device() -> String {
    "cpu".into()
}

/// One number of the paper's table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperEntry {
    /// Axis labels of the row (every axis except the seed axis).
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, Value>,
    /// The evaluation set.
    pub eval: String,
    /// mAP@10 in percent.
    pub map10: f64,
}

/// Replaces every `{paths.NAME}` in the string values of `t` (outside `[paths]`) by the
/// `[paths]` entry NAME; an unknown name is an error naming it.
fn substitute_paths(t: &mut Table) -> std::result::Result<(), String> {
    let paths: BTreeMap<String, String> = match t.get("paths") {
        None => return Ok(()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|_| "[paths] must map names to strings".to_string())?,
    };
    for (k, v) in t.iter_mut().filter(|(k, _)| k.as_str() != "paths") {
        substitute_value(v, &paths).map_err(|e| format!("{e} (in `{k}`)"))?;
    }
    Ok(())
}

fn substitute_value(
    v: &mut Value,
    paths: &BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    match v {
        Value::String(s) => {
            let mut from = 0;
            while let Some(start) = s[from..].find("{paths.").map(|i| from + i) {
                let end = s[start..]
                    .find('}')
                    .map(|e| start + e)
                    .ok_or_else(|| format!("unclosed `{{paths.` in {s:?}"))?;
                let name = &s[start + "{paths.".len()..end];
                let p = paths.get(name).ok_or_else(|| {
                    let known: Vec<&String> = paths.keys().collect();
                    format!("`{{paths.{name}}}` is not in [paths] (known: {known:?})")
                })?;
                s.replace_range(start..=end, p);
                from = start + p.len();
            }
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| substitute_value(x, paths))?,
        Value::Table(t) => t
            .iter_mut()
            .try_for_each(|(_, x)| substitute_value(x, paths))?,
        _ => {}
    }
    Ok(())
}

/// The text label of an axis value (`"late"` -> `late`, `1` -> `1`).
pub fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The labels a rule entry accepts (a label or a list of labels).
pub fn rule_labels(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(label).collect(),
        other => vec![label(other)],
    }
}

impl SweepSpec {
    /// Reads and checks a sweep file.
    pub fn from_file(path: &Path) -> Result<SweepSpec> {
        let text = std::fs::read_to_string(path).map_err(SweepError::io(path))?;
        let mut table: Table = toml::from_str(&text)
            .map_err(|e| SweepError::spec(path, e.message().trim().to_string()))?;
        substitute_paths(&mut table).map_err(|w| SweepError::spec(path, w))?;
        let spec: SweepSpec = Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SweepError::spec(path, e.message().trim().to_string()))?;
        spec.check(path)?;
        Ok(spec)
    }

    /// The labels of an axis, if it exists.
    pub fn axis_labels(&self, name: &str) -> Option<Vec<String>> {
        let axis = self.axes.iter().find(|a| a.name == name)?;
        Some(axis.values.iter().map(label).collect())
    }

    /// Structural checks: unique axes and labels, rules, baseline and paper entries naming
    /// existing axes and labels, evaluation sets that exist.
    fn check(&self, file: &Path) -> Result<()> {
        let err = |w: String| Err(SweepError::spec(file, w));
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.axes {
            if !seen.insert(a.name.as_str()) {
                return err(format!("axis {:?} is defined twice", a.name));
            }
            self.check_axis(file, a)?;
        }
        if !self.axes.is_empty() && self.axis_labels(&self.sweep.seed_axis).is_none() {
            let m = format!("seed_axis {:?} is not an axis", self.sweep.seed_axis);
            return err(m);
        }
        for (what, rules) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, r) in rules.iter().enumerate() {
                self.check_rule(file, &format!("[[{what}]] #{}", i + 1), r)?;
            }
        }
        self.check_rule(file, "[sweep] baseline", &self.sweep.baseline)?;
        for (i, p) in self.paper.iter().enumerate() {
            self.check_rule(file, &format!("[[paper]] #{}", i + 1), &p.matches)?;
            if !self.eval_names().contains(&p.eval) {
                return err(format!(
                    "[[paper]] #{}: unknown eval set {:?}",
                    i + 1,
                    p.eval
                ));
            }
        }
        if self.sweep.max_attempts == 0 {
            return err("[sweep] max_attempts must be at least 1".into());
        }
        let d = self.eval.device.as_str();
        let cuda_n = d
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !(d == "cpu" || d == "cuda" || cuda_n) {
            return err(format!("[eval] device {d:?}: expected cpu, cuda or cuda:N"));
        }
        Ok(())
    }

    fn check_axis(&self, file: &Path, a: &AxisSpec) -> Result<()> {
        let err = |w: String| Err(SweepError::spec(file, w));
        if a.values.is_empty() {
            return err(format!("axis {:?} has no values", a.name));
        }
        let labels: Vec<String> = a.values.iter().map(label).collect();
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return err(format!("axis {:?}: value {l:?} is listed twice", a.name));
            }
            if a.key.is_none() && !a.set.contains_key(l) {
                let m = format!(
                    "axis {:?}: value {l:?} has neither `key` nor `set.{l}`",
                    a.name
                );
                return err(m);
            }
        }
        for l in a.set.keys().chain(a.eval_on.keys()) {
            if !labels.contains(l) {
                let m = format!(
                    "axis {:?}: unknown axis value {l:?} in set/eval_on (values: {labels:?})",
                    a.name
                );
                return err(m);
            }
        }
        for sets in a.eval_on.values() {
            for s in sets {
                if !self.eval.sets.contains_key(s) {
                    return err(format!("axis {:?}: unknown eval set {s:?}", a.name));
                }
            }
        }
        Ok(())
    }

    /// Checks that a rule names existing axes and labels.
    fn check_rule(&self, file: &Path, what: &str, rule: &Rule) -> Result<()> {
        for (axis, v) in rule {
            let Some(labels) = self.axis_labels(axis) else {
                let names: Vec<&str> = self.axes.iter().map(|a| a.name.as_str()).collect();
                let m = format!("{what}: unknown axis {axis:?} (axes: {names:?})");
                return Err(SweepError::spec(file, m));
            };
            for l in rule_labels(v) {
                if !labels.contains(&l) {
                    let m = format!(
                        "{what}: unknown axis value {l:?} for axis {axis:?} (values: {labels:?})"
                    );
                    return Err(SweepError::spec(file, m));
                }
            }
        }
        Ok(())
    }

    /// Every evaluation set name (the named sets plus `self`, a run's own dataset).
    pub fn eval_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.eval.sets.keys().cloned().collect();
        v.push(SELF_EVAL.into());
        v
    }
}

/// The evaluation set name of a run's own dataset (when no axis names one).
pub const SELF_EVAL: &str = "self";

/// Flattens a table of overrides into (dotted key, value) pairs; keys may be dotted strings
/// or nested tables.
pub fn flatten(t: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(sub) => flatten(sub, &key, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// Sets a dotted key in a TOML table, creating intermediate tables; fails when a segment is a value.
pub fn set_dotted(t: &mut Table, key: &str, v: Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("config key `{key}`: empty key segment"));
    }
    let mut cur = t;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let e = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = e.as_table_mut().ok_or_else(|| {
            format!(
                "config key `{}` is a value, not a table",
                parts[..=i].join(".")
            )
        })?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), v);
    Ok(())
}
