//! `hr-train`: train a retrieval model from a TOML config, or run the baseline-vs-hybrid demo.
//!
//! Exit codes: 0 done; 1 error; 75 ([`hr_train::EXIT_REQUEUE`]) stopped by SIGTERM / SIGUSR1
//! after writing a checkpoint (the Slurm scripts requeue on it; resume with `--resume auto`).
//!
//! Data parallel: under `srun` (Slurm variables) or torchrun-style variables (`RANK`,
//! `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) every process is one rank; `--nproc-per-node N`
//! spawns and supervises N ranks on this machine; `--world-size N` checks the discovered world.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hr_models::fusion::FusionKind;
use hr_train::demo::{format_table, run_demo};
use hr_train::dist::Dist;
use hr_train::{train_dist, Outcome, Resume, TrainConfig, TrainControl, EXIT_REQUEUE};

#[derive(Parser)]
#[command(
    name = "hr-train",
    version,
    about = "Train a hybrid audio retrieval model"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Training config (TOML); every key has a default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set optim.epochs=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device (`cpu`, `cuda`, `cuda:N`); same as `--set run.device=...`.
    #[arg(long)]
    device: Option<String>,
    /// `auto` (newest committed checkpoint of the run directory) or a checkpoint directory.
    #[arg(long)]
    resume: Option<String>,
    /// Start from another run's weights (a checkpoint directory, or a run directory: its
    /// newest checkpoint) with a fresh optimizer at step 0; same as `--set model.init_from=...`.
    #[arg(long, value_name = "CHECKPOINT")]
    init_from: Option<PathBuf>,
    /// Spawn and supervise this many ranks on this machine (CPU data parallel, or one per GPU).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// Expected number of ranks: an error unless the discovered world (Slurm, torchrun-style
    /// variables or the local launcher) has exactly this size.
    #[arg(long, value_name = "N")]
    world_size: Option<usize>,
    /// On-disk cache of compiled CUDA kernels (default `HR_KERNEL_CACHE`, else
    /// `~/.cache/hybrid-retrieval/kernels`).
    #[arg(long, global = true, value_name = "DIR")]
    kernel_cache: Option<PathBuf>,
    /// Logging.
    #[command(flatten)]
    log: hr_core::cli::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Baseline (fusion none) vs late and mid hybrids on the synthetic data; prints a table.
    Demo {
        /// Base config of every variant (default: `configs/experiments/demo.toml` of the working
        /// directory when there is one, else the copy built into the binary).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Variants; the first is the baseline of the delta column.
        #[arg(long, value_delimiter = ',', default_value = "none,late,mid")]
        variants: Vec<String>,
        /// Exit non-zero unless every hybrid beats the baseline on test mAP@10 (CI).
        #[arg(long)]
        require_hybrid_wins: bool,
    },
    /// Convert published pretrained weights to the safetensors files the config points at.
    ImportWeights {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// CUDA kernels: `--precompile` compiles every kernel family for a GPU into the cache
    /// (e.g. once per node before a job array, so ranks do not compile at start).
    Kernels {
        /// Compile every kernel family now.
        #[arg(long)]
        precompile: bool,
        /// The GPU to compile for (its compute capability): `cuda` or `cuda:N`, as everywhere.
        #[arg(long, default_value = "cuda")]
        device: String,
    },
}

#[derive(Subcommand)]
enum ImportWhat {
    /// An EfficientAT checkpoint (`torch.save(state_dict)`, e.g. `mn40_as_ext_mAP_487.pt`) to
    /// safetensors with the same key names (for `model.audio_init`); no Python needed.
    Efficientat {
        /// The `.pt` file.
        src: PathBuf,
        /// The safetensors file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    // Reuse freed host memory instead of mapping large buffers afresh every step.
    hr_tensor::cpu::keep_freed_memory();
    let cli = Cli::parse();
    cli.log.init();
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn control() -> Result<TrainControl> {
    let ctl = TrainControl {
        progress: true,
        ..TrainControl::default()
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        signal_hook::flag::register(sig, Arc::clone(&ctl.stop))
            .context("installing signal handlers")?;
    }
    Ok(ctl)
}

fn load_config(path: Option<&PathBuf>, set: &[String]) -> Result<TrainConfig> {
    Ok(match path {
        Some(p) => TrainConfig::from_file(p, set)?,
        None => TrainConfig::from_toml_str("", set)?,
    })
}

fn real_main(cli: Cli) -> Result<i32> {
    if let Some(dir) = &cli.kernel_cache {
        hr_tensor::cuda::set_kernel_cache_dir(dir);
    }
    if let Some(Cmd::Kernels { precompile, device }) = &cli.cmd {
        return kernels(*precompile, device);
    }
    if let Some(Cmd::ImportWeights {
        what: ImportWhat::Efficientat { src, out },
    }) = &cli.cmd
    {
        let s = hr_train::import::import_efficientat(src, out)
            .with_context(|| format!("importing {}", src.display()))?;
        println!(
            "{}: {} tensors ({} values) in the {} layout{}, written to {}",
            src.display(),
            s.tensors,
            s.values,
            s.model,
            if s.has_head {
                " (with its classifier head, which the retriever ignores)"
            } else {
                ""
            },
            out.display()
        );
        return Ok(0);
    }
    if let Some(n) = cli.nproc_per_node {
        return launch(n);
    }
    let ctl = control()?;
    if let Some(Cmd::Demo {
        config,
        set,
        variants,
        require_hybrid_wins,
    }) = &cli.cmd
    {
        return demo(config.as_ref(), set, variants, *require_hybrid_wins, &ctl);
    }
    let mut set = cli.set.clone();
    if let Some(d) = &cli.device {
        set.push(format!("run.device=\"{d}\""));
    }
    if let Some(p) = &cli.init_from {
        set.push(format!("model.init_from={:?}", p.display().to_string()));
    }
    let cfg = load_config(cli.config.as_ref(), &set)?;
    let resume = cli.resume.as_deref().map_or(Resume::Fresh, Resume::parse);
    let timeout = std::time::Duration::from_secs_f64(cfg.run.dist_timeout_s);
    let mut dist =
        Dist::from_env(&cfg.run.dir, timeout, &cfg.run.device).context("joining the job")?;
    if let Some(n) = cli.world_size {
        if n != dist.world_size() {
            bail!(
                "--world-size {n}, but the environment describes {} rank(s) ({:?})",
                dist.world_size(),
                dist.world.source
            );
        }
    }
    let rank = dist.rank();
    // Every line this rank logs from here on carries `rank{rank=N}` (a field in JSON logs).
    let _rank_span = tracing::info_span!("rank", rank).entered();
    let s = train_dist(&cfg, &resume, &ctl, &mut dist).with_context(|| format!("rank {rank}"))?;
    if !dist.is_main() {
        return Ok(exit_code(s.outcome));
    }
    if let Some((step, m)) = s.last_val {
        println!(
            "step {step}: val mAP@10 {:.4} R@1 {:.4} R@5 {:.4} R@10 {:.4}",
            m.map10, m.r1, m.r5, m.r10
        );
    }
    if let Some(c) = &s.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    Ok(exit_code(s.outcome))
}

/// `hr-train kernels --precompile [--device cuda:N]`.
fn kernels(precompile: bool, device: &str) -> Result<i32> {
    let device = match hr_train::config::parse_device(device)? {
        hr_train::config::DeviceSpec::Cuda(n) => n,
        hr_train::config::DeviceSpec::Cpu => {
            bail!("--device cpu: kernels are compiled for a GPU (cuda or cuda:N)")
        }
    };
    if !precompile {
        bail!("nothing to do: pass --precompile");
    }
    let lines = hr_tensor::cuda::precompile_all(device)
        .with_context(|| format!("precompiling the CUDA kernels for cuda:{device}"))?;
    for l in lines {
        println!("{l}");
    }
    println!("cache: {}", hr_tensor::cuda::kernel_cache_dir().display());
    Ok(0)
}

fn exit_code(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Preempted => EXIT_REQUEUE,
        Outcome::Finished => 0,
    }
}

/// `--nproc-per-node N`: runs this program N times as ranks 0..N of one job and returns rank
/// 0's exit code; a failing rank stops the others and is named.
fn launch(n: usize) -> Result<i32> {
    if n == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the hr-train executable")?;
    let args = args_without_launcher(std::env::args_os().skip(1));
    // SIGTERM / SIGUSR1 to the launcher reach every rank (preemption checkpoint, exit 75).
    let opts = hr_dist::LaunchOptions {
        forward_stop: Some(control()?.stop),
        ..hr_dist::LaunchOptions::default()
    };
    let status = hr_dist::launch_local_with(n, &exe, &args, &[], &opts)?;
    Ok(status.code().unwrap_or(1))
}

/// The command line minus `--nproc-per-node N` / `--nproc-per-node=N`.
fn args_without_launcher(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
        } else if a == "--nproc-per-node" {
            skip_value = true;
        } else if !a.to_string_lossy().starts_with("--nproc-per-node=") {
            out.push(a);
        }
    }
    out
}

fn parse_fusion(s: &str) -> Result<FusionKind> {
    Ok(match s {
        "none" => FusionKind::None,
        "late" => FusionKind::Late,
        "mid" => FusionKind::Mid,
        _ => bail!("unknown fusion {s:?} (none, late, mid)"),
    })
}

/// The demo's config as the repository ships it (used outside a checkout).
const EMBEDDED_DEMO_TOML: &str = include_str!("../../../../configs/experiments/demo.toml");

/// The demo's base config: `--config`, else the checkout's file, else the embedded copy.
fn demo_config(config: Option<&PathBuf>, set: &[String]) -> Result<TrainConfig> {
    let local = PathBuf::from("configs/experiments/demo.toml");
    match config {
        Some(p) => load_config(Some(p), set),
        None if local.is_file() => load_config(Some(&local), set),
        None => Ok(TrainConfig::from_toml_str(EMBEDDED_DEMO_TOML, set)?),
    }
}

fn demo(
    config: Option<&PathBuf>,
    set: &[String],
    variants: &[String],
    require: bool,
    ctl: &TrainControl,
) -> Result<i32> {
    let t0 = std::time::Instant::now();
    let cfg = demo_config(config, set)?;
    let fusions = variants
        .iter()
        .map(|v| parse_fusion(v))
        .collect::<Result<Vec<_>>>()?;
    let Some(rows) = run_demo(&cfg, &fusions, ctl)? else {
        return Ok(EXIT_REQUEUE);
    };
    let table = format_table(&rows);
    println!(
        "\nTest split of {} (final weights):\n\n{table}",
        cfg.data.root
    );
    for r in &rows {
        println!(
            "{}: run {} checkpoint {} plots {}",
            hr_train::demo::fusion_name(r.fusion),
            r.run_dir.display(),
            r.checkpoint.display(),
            r.run_dir.join("plots").display()
        );
    }
    println!("total wall time: {:.0} s", t0.elapsed().as_secs_f64());
    let out = cfg.run.dir.join("demo.md");
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(
        cfg.run.dir.join("demo.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    let base = rows.first().map_or(0.0, |r| r.test.map10);
    let losers: Vec<_> = rows
        .iter()
        .skip(1)
        .filter(|r| r.test.map10 <= base)
        .collect();
    if !losers.is_empty() {
        println!(
            "WARNING: {} hybrid variant(s) do not beat the baseline on test mAP@10",
            losers.len()
        );
        if require {
            return Ok(2);
        }
    }
    Ok(0)
}
