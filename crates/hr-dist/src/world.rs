//! World discovery: who am I, how many ranks are there, and where is the rendezvous store.
//!
//! [`discover`] is a pure function of an environment map so it can be tested without touching
//! the process environment; [`discover_from_env`] applies it to `std::env::vars()`.
//!
//! Precedence: torchrun-style variables (`RANK` and `WORLD_SIZE`, also what [`crate::launch_local`]
//! sets) win over Slurm (`SLURM_PROCID` and `SLURM_NTASKS`), which wins over single-process.

use std::collections::HashMap;

use crate::error::{DistError, Result};

/// Port of the rendezvous store when `MASTER_PORT` is not set (plus `SLURM_JOB_ID % 10000` under Slurm).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Sets the rendezvous store's port explicitly, whatever the launcher (wins over the rules of
/// [`discover`]).
pub const PORT_OVERRIDE_VAR: &str = "HR_MASTER_PORT";

/// Where the world description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldSource {
    /// `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT` (torchrun, [`crate::launch_local`]).
    Torchrun,
    /// `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID`/`SLURM_JOB_NODELIST` (srun).
    Slurm,
    /// No distributed variables: one process.
    Single,
}

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldInfo {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this node (selects the GPU).
    pub local_rank: usize,
    /// Host of rank 0, where the rendezvous store listens.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// Which variables described the world.
    pub source: WorldSource,
}

impl WorldInfo {
    /// A single-process world (rank 0 of 1).
    pub fn single() -> Self {
        WorldInfo {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".to_string(),
            master_port: DEFAULT_MASTER_PORT,
            source: WorldSource::Single,
        }
    }
}

/// Discovers the world from the process environment (see [`discover`]).
pub fn discover_from_env() -> Result<WorldInfo> {
    discover(&std::env::vars().collect())
}

/// Discovers the world from an environment map; errors name the offending variable.
pub fn discover(env: &HashMap<String, String>) -> Result<WorldInfo> {
    let override_port = port(env, PORT_OVERRIDE_VAR)?;
    let world = if env.contains_key("RANK") || env.contains_key("WORLD_SIZE") {
        from_torchrun(env, override_port)?
    } else if env.contains_key("SLURM_PROCID") && env.contains_key("SLURM_NTASKS") {
        from_slurm(env, override_port)?
    } else {
        WorldInfo::single()
    };
    validate(&world)?;
    Ok(world)
}

/// The world of torchrun-style variables (`override_port` wins over their port).
fn from_torchrun(env: &HashMap<String, String>, override_port: Option<u16>) -> Result<WorldInfo> {
    let rank = required_usize(env, "RANK")?;
    let world_size = required_usize(env, "WORLD_SIZE")?;
    let local_rank = optional_usize(env, "LOCAL_RANK")?.unwrap_or(rank);
    let master_addr = match env.get("MASTER_ADDR") {
        Some(a) if !a.trim().is_empty() => a.trim().to_string(),
        Some(_) => return Err(DistError::env("MASTER_ADDR", "is empty")),
        None if world_size == 1 => "127.0.0.1".to_string(),
        None => {
            return Err(DistError::env(
                "MASTER_ADDR",
                "is not set (needed when WORLD_SIZE > 1)",
            ))
        }
    };
    Ok(WorldInfo {
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port: override_port.map_or_else(|| torchrun_port(env), Ok)?,
        source: WorldSource::Torchrun,
    })
}

/// The store port under torchrun-style variables. A real `torchrun` (its agent sets
/// `TORCHELASTIC_*` variables) already serves its own store on `MASTER_PORT`, so ours takes the
/// next port up (`MASTER_PORT - 1` for 65535); `launch_local` and hand-set variables use
/// `MASTER_PORT` itself.
fn torchrun_port(env: &HashMap<String, String>) -> Result<u16> {
    let Some(p) = port(env, "MASTER_PORT")? else {
        return Ok(DEFAULT_MASTER_PORT);
    };
    let under_torchrun = env.keys().any(|k| k.starts_with("TORCHELASTIC_"));
    Ok(match (under_torchrun, p) {
        (false, p) => p,
        (true, u16::MAX) => u16::MAX - 1,
        (true, p) => p + 1,
    })
}

/// The step id Slurm gives the batch script itself (`SLURM_BATCH_SCRIPT`).
const SLURM_BATCH_STEP: usize = 4_294_967_294;

/// Inside a Slurm job the world is the job step's tasks: a plain `hr-train` in the batch script
/// of an `--ntasks N` job is not a step of N tasks (no `SLURM_STEP_ID`, or the batch step's), and
/// would wait for peers that never start, so it stops at once with the `srun` line to use.
fn from_slurm(env: &HashMap<String, String>, override_port: Option<u16>) -> Result<WorldInfo> {
    let rank = required_usize(env, "SLURM_PROCID")?;
    let ntasks = required_usize(env, "SLURM_NTASKS")?;
    let in_step = optional_usize(env, "SLURM_STEP_ID")?.is_some_and(|s| s != SLURM_BATCH_STEP);
    if !in_step && ntasks > 1 {
        return Err(DistError::env(
            "SLURM_STEP_ID",
            format!(
                "is not set: this process runs in the batch script of a Slurm job with {ntasks} \
                 tasks, not as one of the {ntasks} tasks of a job step, so its peers would never \
                 start. Launch one process per task with `srun hr-train --world-size {ntasks} \
                 --config ...` (or run a single process in a job with --ntasks=1)"
            ),
        ));
    }
    let world_size = match in_step {
        true => optional_usize(env, "SLURM_STEP_NUM_TASKS")?.unwrap_or(ntasks),
        false => ntasks,
    };
    let local_rank = optional_usize(env, "SLURM_LOCALID")?.unwrap_or(0);
    let master_addr = slurm_master(env)?;
    let default_port = match optional_usize(env, "SLURM_JOB_ID")? {
        Some(id) => DEFAULT_MASTER_PORT + (id % 10_000) as u16,
        None => DEFAULT_MASTER_PORT,
    };
    let master_port = match override_port {
        Some(p) => p,
        None => port(env, "MASTER_PORT")?.unwrap_or(default_port),
    };
    Ok(WorldInfo {
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port,
        source: WorldSource::Slurm,
    })
}

/// `MASTER_ADDR` if set, else the first host of `SLURM_JOB_NODELIST` (or `SLURM_NODELIST`).
fn slurm_master(env: &HashMap<String, String>) -> Result<String> {
    if let Some(a) = env.get("MASTER_ADDR").filter(|a| !a.trim().is_empty()) {
        return Ok(a.trim().to_string());
    }
    for var in ["SLURM_JOB_NODELIST", "SLURM_NODELIST"] {
        if let Some(list) = env.get(var) {
            return first_host(list).map_err(|msg| DistError::env(var, msg));
        }
    }
    Err(DistError::env(
        "SLURM_JOB_NODELIST",
        "is not set (and neither SLURM_NODELIST nor MASTER_ADDR)",
    ))
}

fn validate(w: &WorldInfo) -> Result<()> {
    let (rank_var, size_var) = match w.source {
        WorldSource::Slurm => ("SLURM_PROCID", "SLURM_NTASKS"),
        _ => ("RANK", "WORLD_SIZE"),
    };
    if w.world_size == 0 {
        return Err(DistError::env(size_var, "must be at least 1"));
    }
    if w.rank >= w.world_size {
        return Err(DistError::env(
            rank_var,
            format!("rank {} is not below world size {}", w.rank, w.world_size),
        ));
    }
    Ok(())
}

fn required_usize(env: &HashMap<String, String>, var: &str) -> Result<usize> {
    optional_usize(env, var)?.ok_or_else(|| DistError::env(var, "is not set"))
}

fn optional_usize(env: &HashMap<String, String>, var: &str) -> Result<Option<usize>> {
    match env.get(var) {
        None => Ok(None),
        Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
            DistError::env(var, format!("expected a non-negative integer, got {v:?}"))
        }),
    }
}

/// The port in variable `var`, if set.
fn port(env: &HashMap<String, String>, var: &str) -> Result<Option<u16>> {
    match env.get(var) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(DistError::env(
                var,
                format!("expected a port 1..=65535, got {v:?}"),
            )),
        },
    }
}

/// First host of a Slurm hostlist such as `gpu[01-04,07],cpu3` (gives `gpu01`).
pub fn first_host(list: &str) -> std::result::Result<String, String> {
    let item = split_top_level(list)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("empty host list {list:?}"))?;
    let mut hosts = expand_item(&item, 1)?;
    hosts
        .pop()
        .ok_or_else(|| format!("empty host list {list:?}"))
}

/// Expands a Slurm hostlist (`gpu[01-04,07],cpu3`, `r[1-2]-n[01-02]`) into host names, in order.
///
/// At most `limit` hosts are returned, to bound memory on huge ranges.
pub fn expand_hostlist(list: &str, limit: usize) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        if out.len() >= limit {
            break;
        }
        out.extend(expand_item(&item, limit - out.len())?);
    }
    Ok(out)
}

/// Splits at commas that are not inside brackets.
fn split_top_level(list: &str) -> std::result::Result<Vec<String>, String> {
    let (mut items, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in list.trim().chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced brackets in host list {list:?}"));
        }
        if c == ',' && depth == 0 {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced brackets in host list {list:?}"));
    }
    items.push(cur);
    let items: Vec<String> = items.into_iter().map(|s| s.trim().to_string()).collect();
    if items.iter().any(|s| s.is_empty()) {
        return Err(format!("empty host name in host list {list:?}"));
    }
    Ok(items)
}

/// Expands one item with zero or more bracket groups (cartesian product, left to right).
fn expand_item(item: &str, limit: usize) -> std::result::Result<Vec<String>, String> {
    let Some(open) = item.find('[') else {
        return Ok(vec![item.to_string()]);
    };
    let close = item[open..]
        .find(']')
        .map(|i| i + open)
        .ok_or_else(|| format!("unclosed '[' in {item:?}"))?;
    let prefix = &item[..open];
    let rest = &item[close + 1..];
    let mut out = Vec::new();
    for value in expand_ranges(&item[open + 1..close], limit)? {
        for tail in expand_item(rest, limit - out.len())? {
            out.push(format!("{prefix}{value}{tail}"));
            if out.len() >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Expands `01-04,07` into `01 02 03 04 07`, keeping zero padding.
fn expand_ranges(spec: &str, limit: usize) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let width = lo.len();
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("bad range {part:?} in [{spec}]"))
        };
        let (a, b) = (parse(lo)?, parse(hi)?);
        if a > b {
            return Err(format!("descending range {part:?} in [{spec}]"));
        }
        for n in a..=b {
            if out.len() >= limit {
                return Ok(out);
            }
            out.push(format!("{n:0width$}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under a real torchrun (`TORCHELASTIC_*` set) its own store holds `MASTER_PORT`: ours
    /// takes the next port; `HR_MASTER_PORT` overrides every rule; `launch_local`-style
    /// variables keep `MASTER_PORT`.
    #[test]
    fn torchrun_store_port_is_left_to_torchrun() {
        let base = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "29400"),
        ];
        let mut env: HashMap<String, String> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(discover(&env).unwrap().master_port, 29400);
        env.insert("TORCHELASTIC_RUN_ID".into(), "job7".into());
        assert_eq!(discover(&env).unwrap().master_port, 29401);
        env.insert("MASTER_PORT".into(), "65535".into());
        assert_eq!(discover(&env).unwrap().master_port, 65534);
        env.insert(PORT_OVERRIDE_VAR.into(), "31000".into());
        assert_eq!(discover(&env).unwrap().master_port, 31000);
        env.insert(PORT_OVERRIDE_VAR.into(), "0".into());
        let e = discover(&env).unwrap_err().to_string();
        assert!(e.contains(PORT_OVERRIDE_VAR), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn single_when_nothing_set() {
        assert_eq!(discover(&env(&[])).unwrap(), WorldInfo::single());
    }

    #[test]
    fn torchrun_variables() {
        let w = discover(&env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "12345"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank), (3, 8, 1));
        assert_eq!((w.master_addr.as_str(), w.master_port), ("node7", 12345));
        assert_eq!(w.source, WorldSource::Torchrun);
    }

    #[test]
    fn slurm_variables_with_bracket_nodelist() {
        let w = discover(&env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[01-04,07],cpu3"),
            ("SLURM_JOB_ID", "123456"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank), (5, 8, 1));
        assert_eq!(w.master_addr, "gpu01");
        assert_eq!(w.master_port, DEFAULT_MASTER_PORT + 3456);
        assert_eq!(w.source, WorldSource::Slurm);
        let w = discover(&env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_JOB_NODELIST", "cpu3"),
            ("MASTER_PORT", "4000"),
        ]))
        .unwrap();
        assert_eq!((w.master_addr.as_str(), w.master_port), ("cpu3", 4000));
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK"),
            (&[("RANK", "0")], "WORLD_SIZE"),
            (
                &[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
                "RANK",
            ),
            (&[("RANK", "0"), ("WORLD_SIZE", "2")], "MASTER_ADDR"),
            (
                &[
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT",
            ),
            (
                &[
                    ("SLURM_PROCID", "0"),
                    ("SLURM_NTASKS", "2"),
                    ("SLURM_STEP_ID", "3"),
                ],
                "SLURM_JOB_NODELIST",
            ),
            (
                &[
                    ("SLURM_PROCID", "0"),
                    ("SLURM_NTASKS", "2"),
                    ("SLURM_STEP_ID", "3"),
                    ("SLURM_JOB_NODELIST", "a[1-"),
                ],
                "SLURM_JOB_NODELIST",
            ),
            (
                &[
                    ("SLURM_PROCID", "0"),
                    ("SLURM_NTASKS", "0"),
                    ("SLURM_NODELIST", "a"),
                ],
                "SLURM_NTASKS",
            ),
        ];
        for (vars, name) in cases {
            let err = discover(&env(vars)).unwrap_err().to_string();
            assert!(err.contains(name), "{vars:?}: {err}");
        }
    }

    /// A plain `hr-train` in the batch script of an `--ntasks 4` job (no step, or the batch
    /// step) stops at once naming the `srun` line; a step's size comes from the step.
    #[test]
    fn batch_script_of_a_multi_task_job_is_not_a_world() {
        let batch = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_NODELIST", "gpu01"),
        ];
        for step in [None, Some("4294967294")] {
            let mut vars = batch.to_vec();
            vars.extend(step.map(|s| ("SLURM_STEP_ID", s)));
            let err = discover(&env(&vars)).unwrap_err().to_string();
            assert!(
                err.contains("srun hr-train --world-size 4") && err.contains("SLURM_STEP_ID"),
                "{err}"
            );
        }
        let mut one = batch.to_vec();
        one[1] = ("SLURM_NTASKS", "1");
        assert_eq!(discover(&env(&one)).unwrap().world_size, 1);
        let mut step = batch.to_vec();
        step.extend([("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "2")]);
        assert_eq!(discover(&env(&step)).unwrap().world_size, 2);
    }

    #[test]
    fn hostlists() {
        assert_eq!(first_host("gpu[01-04,07],cpu3").unwrap(), "gpu01");
        assert_eq!(first_host("cpu3,gpu[1-2]").unwrap(), "cpu3");
        assert_eq!(first_host("r[2-3]-n[08-09]").unwrap(), "r2-n08");
        assert_eq!(
            expand_hostlist("gpu[01-04,07],cpu3", 100).unwrap(),
            ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu3"]
        );
        assert_eq!(
            expand_hostlist("r[1-2]-n[1,3]", 100).unwrap(),
            ["r1-n1", "r1-n3", "r2-n1", "r2-n3"]
        );
        assert_eq!(expand_hostlist("n[0-99999999]", 3).unwrap().len(), 3);
        assert!(first_host("").is_err());
        assert!(first_host("gpu[3-1]").is_err());
        assert!(first_host("gpu]1[").is_err());
    }
}
