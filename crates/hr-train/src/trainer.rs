//! The training loop: loader (this rank's share of the global batch) -> HybridRetriever
//! (training mode, SpecAugment on) with the embeddings gathered over ranks -> NT-Xent of the
//! global batch -> backward -> gradients averaged over ranks -> Adam with the warm-up + cosine
//! schedule set every step; metrics, periodic validation, checkpoints and preemption at step
//! boundaries agreed by all ranks. Rank 0 writes the run directory; every rank validates (so no
//! rank idles past the collective timeout) and only rank 0 records the result.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hr_core::write_atomic;
use hr_data::text::TextTokenizer;
use hr_data::{Cursor, EvalSet};
use hr_models::retriever::{HybridRetriever, AUDIO_CNN_PREFIX};
use hr_models::NonFiniteValue;
use hr_nn::optim::{Adam, AdamConfig, ParamGroup};
use hr_nn::schedule::WarmupCosine;
use hr_nn::{LoadOptions, Mode, ParamStore};
use hr_tensor::{autocast, Device, Rng, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::checkpoint::{self, TrainState};
use crate::config::{
    group_prefixes, parse_device, DeviceSpec, NonFinitePolicy, Precision, TrainConfig,
};
pub use crate::data::{ensure_dataset, loader_config, open_eval_set, rank_loader_config};
use crate::data::{wait_for_dataset, Source};
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::evaluate::evaluate;
use crate::init;
use crate::metrics::RetrievalMetrics;
use crate::model::{build_model, model_toml, retriever_config, waveform_batch};
use crate::tensorboard::EventWriter;

/// Exit code of `hr-train` after a preemption checkpoint (SIGTERM / SIGUSR1): the Slurm
/// scripts and the sweep coordinator requeue the job on this code.
pub use hr_core::EXIT_REQUEUE;

/// The resolved model config inside a run directory (what `hr-eval` and a resume rebuild the
/// model from).
pub const MODEL_TOML: &str = "model.toml";

/// Where to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// A fresh run (existing checkpoints are left alone and overwritten step by step).
    Fresh,
    /// The newest committed checkpoint of the run directory, or fresh when there is none.
    Auto,
    /// A given checkpoint directory.
    Path(PathBuf),
}

impl Resume {
    /// Parses `auto` or a path.
    pub fn parse(s: &str) -> Resume {
        match s {
            "auto" => Resume::Auto,
            p => Resume::Path(PathBuf::from(p)),
        }
    }
}

/// Outside control of a run.
#[derive(Debug, Clone, Default)]
pub struct TrainControl {
    /// Set by a signal handler: checkpoint at the next step boundary and return `Preempted`.
    pub stop: Arc<AtomicBool>,
    /// Behave as if `stop` were set after this step (tests).
    pub stop_after_step: Option<u64>,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step ran.
    Finished,
    /// Stopped at a step boundary on request, after a checkpoint.
    Preempted,
}

/// Summary of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// How it ended.
    pub outcome: Outcome,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Steps done.
    pub step: u64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Losses of the steps run in this process.
    pub losses: Vec<f64>,
    /// The last validation (step, metrics).
    pub last_val: Option<(u64, RetrievalMetrics)>,
    /// Steps skipped because the loss was not finite.
    pub nonfinite_skipped: u64,
}

/// Runs (or resumes) the training described by `cfg` in this process alone.
pub fn train(cfg: &TrainConfig, resume: &Resume, ctl: &TrainControl) -> Result<TrainSummary> {
    train_dist(cfg, resume, ctl, &mut Dist::single())
}

/// Runs (or resumes) this rank's part of a data-parallel training. Every rank of `dist` must
/// call it with the same config; rank 0 generates a synthetic dataset when needed and writes
/// the run directory. Ends with a barrier, so no rank leaves while another still needs it.
pub fn train_dist(
    cfg: &TrainConfig,
    resume: &Resume,
    ctl: &TrainControl,
    dist: &mut Dist,
) -> Result<TrainSummary> {
    let device = train_device(cfg, dist)?;
    if !cfg.optim.global_batch.is_multiple_of(dist.world_size()) {
        return Err(TrainError::config(
            "optim.global_batch",
            format!(
                "{} is not divisible by the world size {}",
                cfg.optim.global_batch,
                dist.world_size()
            ),
        ));
    }
    match dist.is_main() {
        true => ensure_dataset(cfg)?,
        false => wait_for_dataset(cfg)?,
    }
    let summary = Session::open(cfg, resume, dist, device)?.run(ctl)?;
    dist.barrier()?;
    Ok(summary)
}

struct StepResult {
    loss: Option<f64>,
    items: usize,
    /// The data cursor after the step's batch.
    cursor_after: Cursor,
}

/// A batch whose waveforms are on their way to the model's device.
struct Staged {
    batch: hr_data::Batch,
    waveforms: hr_tensor::Upload,
}

/// The device of this rank: `cpu`, `cuda:N`, or `cuda` = the rank's local GPU
/// (`LOCAL_RANK` / `SLURM_LOCALID`, or the only visible one: [`crate::dist::local_gpu`]). Errors name `run.device`.
fn train_device(cfg: &TrainConfig, dist: &Dist) -> Result<Device> {
    match parse_device(&cfg.run.device)? {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            let ordinal = match cfg.run.device.as_str() {
                "cuda" => crate::dist::local_gpu(dist.world.local_rank),
                _ => n,
            };
            Device::cuda(ordinal).map_err(|e| TrainError::config("run.device", e.to_string()))
        }
    }
}

/// One run's state.
struct Session<'a> {
    cfg: &'a TrainConfig,
    dist: &'a mut Dist,
    run: PathBuf,
    model: HybridRetriever,
    ps: ParamStore,
    opt: Adam,
    scheds: Vec<WarmupCosine>,
    rng: Rng,
    step: u64,
    cursor: Cursor,
    eval: EvalSet,
    /// The text encoder's tokenizer (the loader tokenizes with it).
    tok: TextTokenizer,
    hash: String,
    nonfinite: u64,
    /// `metrics.jsonl` and `eval.jsonl` (rank 0 only).
    logs: Option<(File, File)>,
    /// The TensorBoard event file (rank 0 only).
    tb: Option<EventWriter>,
    last_ckpt: Option<(u64, PathBuf)>,
    last_val: Option<(u64, RetrievalMetrics)>,
    /// The best validation mAP@10 of the run so far (checkpointed).
    best_val: Option<f64>,
    losses: Vec<f64>,
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(TrainError::io(path))
}

impl<'a> Session<'a> {
    fn open(
        cfg: &'a TrainConfig,
        resume: &Resume,
        dist: &'a mut Dist,
        device: Device,
    ) -> Result<Session<'a>> {
        let run = cfg.run.dir.clone();
        std::fs::create_dir_all(&run).map_err(TrainError::io(&run))?;
        let lcfg = loader_config(cfg);
        let resume_dir = resume_checkpoint(&run, resume)?;
        // A resumed run uses what it recorded (the checkpoint holds the weights): no pretrained
        // file needs to be there any more. A fresh one resolves them from the config.
        let (tok, mcfg, fresh) = match resume_dir.is_some() && init::run_recorded(&run) {
            true => (
                init::run_tokenizer(&run, cfg, lcfg.max_tokens)?,
                hr_models::presets::from_toml_file(&run.join(MODEL_TOML))?,
                None,
            ),
            false => {
                let t = init::resolve_tokenizer(cfg, lcfg.max_tokens)?;
                (t.tok.clone(), retriever_config(cfg, &t.tok)?, Some(t))
            }
        };
        let eval_split = &cfg.eval.split;
        let (eval, _) = open_eval_set(&cfg.data.root, eval_split, &lcfg, tok.clone())?;
        let (model, mut ps) = build_model(&mcfg, cfg.run.seed)?;
        let weights = match fresh {
            Some(_) => init::load_pretrained(cfg, &model, &mut ps)?,
            None => Vec::new(),
        };
        let logs = match dist.is_main() {
            true => {
                let config_toml = cfg.to_toml()?;
                write_atomic(&run.join("config.toml"), config_toml.as_bytes())?;
                if let Some(t) = &fresh {
                    write_atomic(&run.join(MODEL_TOML), model_toml(&mcfg)?.as_bytes())?;
                    init::write_run_files(&run, t, weights)?;
                }
                let store = hr_data::Store::open(&cfg.data.root)?;
                let (_, manifest_sha) = hr_data::Manifest::load_with_sha256(&store)?;
                let start = init::StartRecord {
                    config_toml: &config_toml,
                    dataset: (&cfg.data.root, manifest_sha),
                    world_size: dist.world_size(),
                    device,
                    resumed: resume_dir.is_some(),
                };
                init::record_start(&run, &start)?;
                let metrics = append(&run.join("metrics.jsonl"))?;
                Some((metrics, append(&run.join("eval.jsonl"))?))
            }
            false => None,
        };
        let tb = match dist.is_main() {
            true => Some(EventWriter::create(&run)?),
            false => None,
        };
        ps.to_device(device)?;
        let (opt, scheds) = optimizer(cfg, &ps)?;
        let mut s = Session {
            cfg,
            dist,
            logs,
            tb,
            run,
            model,
            ps,
            opt,
            scheds,
            rng: Rng::new(cfg.run.seed ^ 0xD20F_0A7E),
            step: 0,
            cursor: Cursor::default(),
            eval,
            tok,
            hash: cfg.hash()?,
            nonfinite: 0,
            last_ckpt: None,
            last_val: None,
            best_val: None,
            losses: Vec::new(),
        };
        if let Some(dir) = resume_dir {
            s.resume(dir)?;
        }
        s.dist.broadcast_values(&mut s.ps)?;
        Ok(s)
    }

    fn resume(&mut self, dir: PathBuf) -> Result<()> {
        let st = checkpoint::read_state(&dir)?;
        self.ps
            .load_safetensors(&dir.join(checkpoint::MODEL_FILE), &LoadOptions::default())?;
        self.opt
            .load(&self.ps, &dir.join(checkpoint::OPTIMIZER_FILE))?;
        let main = self.dist.is_main();
        if main && st.config_hash != self.hash {
            tracing::warn!(
                saved = st.config_hash,
                now = self.hash,
                "resuming with a different config"
            );
        }
        if main && st.world_size != self.dist.world_size() {
            tracing::warn!(
                saved = st.world_size,
                now = self.dist.world_size(),
                "resuming with another world size (the data order is kept)"
            );
        }
        self.step = st.step;
        self.cursor = st.cursor;
        self.rng = Rng::new(st.rng_state);
        self.nonfinite = st.nonfinite_skipped;
        self.last_ckpt = Some((st.step, dir.clone()));
        if let Some(best) = checkpoint::best(&self.run)? {
            self.best_val = checkpoint::read_state(&best)?.val_map10;
        }
        if main {
            tracing::info!(step = st.step, checkpoint = %dir.display(), "resumed");
        }
        Ok(())
    }

    fn run(&mut self, ctl: &TrainControl) -> Result<TrainSummary> {
        let cfg = self.cfg;
        let lcfg = rank_loader_config(cfg, self.dist.world_size(), self.dist.rank());
        let loader = hr_data::open_loader(
            &cfg.data.root,
            "train",
            lcfg,
            self.tok.clone(),
            self.cursor,
            Some(cfg.optim.epochs),
        )?;
        let mut loader = Source::new(loader, cfg.data.replay_batches)?;
        let bpe = loader.batches_per_epoch();
        let mut total = cfg.optim.epochs * bpe;
        if cfg.run.max_steps > 0 {
            total = total.min(cfg.run.max_steps);
        }
        let eval_every = if cfg.eval.every_steps == 0 {
            bpe
        } else {
            cfg.eval.every_steps
        };
        let ckpt_every = if cfg.checkpoint.every_steps == 0 {
            eval_every
        } else {
            cfg.checkpoint.every_steps
        };
        let bar = progress_bar(ctl.progress && self.dist.is_main(), total, self.step);
        let mut next = self.stage(loader.next())?;
        while self.step < total {
            let Some(staged) = next.take() else { break };
            let t0 = Instant::now();
            // The next batch's upload is queued before this step's kernels: it overlaps them.
            if self.step + 1 < total {
                next = self.stage(loader.next())?;
            }
            let r = self.train_step(staged, bpe)?;
            let items = r.items * self.dist.world_size();
            let ips = items as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            self.cursor = r.cursor_after;
            self.log_step(&r, ips, bpe, loader.skipped(), &bar)?;
            if r.loss.is_none() && cfg.run.non_finite_loss == NonFinitePolicy::Stop {
                let checkpoint = self.checkpoint()?;
                return Err(TrainError::NonFiniteLoss {
                    step: self.step,
                    checkpoint,
                });
            }
            if self.step.is_multiple_of(eval_every) || self.step == total {
                self.validate(bpe)?;
            }
            // A new best validation is always checkpointed, so the best-validation weights
            // survive whatever the checkpoint cadence (retention keeps them).
            let new_best = self.take_new_best();
            if self.step.is_multiple_of(ckpt_every) || self.step == total || new_best {
                self.checkpoint()?;
            }
            let stop = ctl.stop.load(Ordering::SeqCst) || ctl.stop_after_step == Some(self.step);
            if self.dist.any(stop)? && self.step < total {
                let dir = self.checkpoint()?;
                bar.abandon_with_message("preempted");
                if self.dist.is_main() {
                    tracing::warn!(step = self.step, checkpoint = %dir.display(), "stopping on request after a checkpoint");
                }
                return Ok(self.summary(Outcome::Preempted));
            }
        }
        bar.finish();
        self.finish(bpe)?;
        Ok(self.summary(Outcome::Finished))
    }

    fn finish(&mut self, bpe: u64) -> Result<()> {
        if self.last_val.as_ref().is_none_or(|(s, _)| *s != self.step) {
            self.validate(bpe)?;
        }
        if self.last_ckpt.as_ref().is_none_or(|(s, _)| *s != self.step) {
            self.checkpoint()?;
        }
        if !self.dist.is_main() {
            return Ok(());
        }
        let plots = self.refresh_plots();
        let best = checkpoint::best(&self.run)?;
        let result = json!({
            "step": self.step,
            "val": self.last_val.as_ref().map(|v| v.1),
            "checkpoint": self.last_ckpt.as_ref().map(|c| c.1.display().to_string()),
            "best_checkpoint": best.map(|p| p.display().to_string()),
            "nonfinite_skipped": self.nonfinite,
            "plots": plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        write_atomic(&self.run.join("result.json"), result.to_string().as_bytes())?;
        Ok(())
    }

    fn summary(&self, outcome: Outcome) -> TrainSummary {
        TrainSummary {
            outcome,
            run_dir: self.run.clone(),
            step: self.step,
            checkpoint: self.last_ckpt.as_ref().map(|c| c.1.clone()),
            losses: self.losses.clone(),
            last_val: self.last_val,
            nonfinite_skipped: self.nonfinite,
        }
    }

    fn set_lr(&mut self, bpe: u64) {
        let e = self.step as f64 / bpe.max(1) as f64;
        for (g, s) in self.opt.groups.iter_mut().zip(&self.scheds) {
            g.lr = s.lr(e);
        }
    }

    /// A loader batch with its waveforms on their way to the model's device (see
    /// `data.upload_ahead`; `None` at the end of the data).
    fn stage(&self, batch: Option<hr_data::Result<hr_data::Batch>>) -> Result<Option<Staged>> {
        let Some(batch) = batch else { return Ok(None) };
        let batch = batch?;
        let host = Tensor::from_slice(&batch.waveforms, &[batch.batch_size, batch.samples])?;
        let waveforms = match self.cfg.data.upload_ahead {
            true => host.upload_ahead(self.model.device(&self.ps))?,
            false => host.upload_ahead(Device::Cpu)?,
        };
        Ok(Some(Staged { batch, waveforms }))
    }

    fn train_step(&mut self, staged: Staged, bpe: u64) -> Result<StepResult> {
        let Staged { batch, waveforms } = staged;
        let batch = &batch;
        self.set_lr(bpe);
        // Forward and backward run on this thread: the guards cover every GEMM and every CNN
        // activation of the step.
        let bf16 = self.cfg.run.precision == Precision::Bf16;
        let _autocast = (
            autocast::bf16_matmuls(bf16),
            autocast::bf16_activations(bf16),
        );
        let wb = waveform_batch(batch, waveforms.ready()?, self.cfg.model.missing_metadata)?;
        let mode = rank_mode(self.rng.next_u64(), self.dist.rank());
        self.step += 1;
        self.ps.zero_grad()?;
        let mut ex = self.dist.exchange();
        let fwd = self.model.forward(&mut self.ps, &wb, mode, &mut ex);
        let (out, cache) = match fwd {
            Ok(x) => x,
            // A non-finite loss is the global batch's, so every rank skips the same step.
            // Non-finite frames (debug builds) are this rank's alone: with several ranks they
            // end the job (the others stop, naming this rank); a single process skips the step.
            Err(hr_models::Error::NonFinite { what, .. })
                if what == NonFiniteValue::Loss || self.dist.world_size() == 1 =>
            {
                self.nonfinite += 1;
                tracing::warn!(step = self.step, total = self.nonfinite, %what, "non-finite, step skipped");
                return Ok(StepResult {
                    loss: None,
                    items: batch.batch_size,
                    cursor_after: batch.cursor_after,
                });
            }
            Err(e) => return Err(self.dist.explain(e)),
        };
        let loss = out.loss.scalar_f64()?;
        let mut ex = self.dist.exchange();
        let bwd = self
            .model
            .backward_deferring_cnn(&mut self.ps, &cache, 1.0, &mut ex);
        let cnn_backward = bwd.map_err(|e| self.dist.explain(e))?;
        // The text side's gradients are final: they are averaged while the CNN's backward runs.
        self.dist
            .average_gradients_overlapped(&mut self.ps, AUDIO_CNN_PREFIX, |ps| {
                cnn_backward.run(ps)?;
                Ok(())
            })?;
        self.opt.step(&mut self.ps)?;
        self.losses.push(loss);
        Ok(StepResult {
            loss: Some(loss),
            items: batch.batch_size,
            cursor_after: batch.cursor_after,
        })
    }

    fn log_step(
        &mut self,
        r: &StepResult,
        ips: f64,
        bpe: u64,
        bad_rows: u64,
        bar: &ProgressBar,
    ) -> Result<()> {
        let lrs: serde_json::Map<String, serde_json::Value> = self
            .opt
            .groups
            .iter()
            .map(|g| (g.name.clone(), json!(g.lr)))
            .collect();
        let epoch = self.step as f64 / bpe.max(1) as f64;
        let line = json!({
            "step": self.step, "epoch": epoch, "loss": r.loss, "lr": lrs,
            "items_per_s": ips, "nonfinite_skipped": self.nonfinite, "bad_rows": bad_rows,
        });
        let Some((metrics, _)) = &mut self.logs else {
            return Ok(());
        };
        writeln!(metrics, "{line}").map_err(TrainError::io(self.run.join("metrics.jsonl")))?;
        self.step_scalars(r.loss, ips)?;
        let lr = self.opt.groups.first().map_or(0.0, |g| g.lr);
        let loss = r.loss.unwrap_or(f64::NAN);
        if !bar.is_hidden() {
            bar.set_position(self.step);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {ips:.1} items/s"));
        } else if self.cfg.run.log_every <= 1 || self.step.is_multiple_of(self.cfg.run.log_every) {
            tracing::info!(
                step = self.step,
                epoch = format!("{epoch:.3}"),
                loss,
                lr,
                items_per_s = format!("{ips:.1}"),
                "train"
            );
        }
        Ok(())
    }

    fn validate(&mut self, bpe: u64) -> Result<()> {
        self.dist.broadcast_buffers(&mut self.ps)?;
        let r = match evaluate(
            &self.model,
            &mut self.ps,
            &self.eval,
            self.cfg.eval.batch_size,
            self.cfg.model.missing_metadata,
            self.dist.comm(),
        ) {
            Ok(r) => r,
            Err(e) if e.is_non_finite() => {
                if self.dist.is_main() {
                    tracing::warn!(
                        step = self.step,
                        "validation skipped: the model outputs are not finite"
                    );
                }
                let line =
                    json!({"step": self.step, "split": self.cfg.eval.split, "error": "non-finite"});
                return self.write_eval(&line);
            }
            Err(e) => return Err(e),
        };
        let m = r.metrics;
        let line = json!({
            "step": self.step, "epoch": self.step as f64 / bpe.max(1) as f64,
            "split": self.cfg.eval.split, "R@1": m.r1, "R@5": m.r5, "R@10": m.r10,
            "mAP@10": m.map10, "queries": m.queries,
        });
        self.write_eval(&line)?;
        if let Some(tb) = &mut self.tb {
            let v = [
                ("val/mAP@10", m.map10),
                ("val/R@1", m.r1),
                ("val/R@5", m.r5),
                ("val/R@10", m.r10),
            ];
            tb.scalars(self.step, &v)?;
        }
        self.last_val = Some((self.step, m));
        if self.dist.is_main() {
            tracing::info!(
                step = self.step,
                map10 = m.map10,
                r1 = m.r1,
                r5 = m.r5,
                r10 = m.r10,
                "validation"
            );
            self.refresh_plots();
        }
        Ok(())
    }

    /// Rank 0: redraws `RUN/plots/` from the logs so far (a plot never fails the run).
    fn refresh_plots(&self) -> Vec<PathBuf> {
        crate::plots::write_run_plots(&self.run).unwrap_or_else(|e| {
            tracing::warn!("plots not written: {e}");
            Vec::new()
        })
    }

    /// Rank 0: the step's loss (when finite), learning rate per group and items/s as
    /// TensorBoard scalars.
    fn step_scalars(&mut self, loss: Option<f64>, ips: f64) -> Result<()> {
        let Some(tb) = &mut self.tb else {
            return Ok(());
        };
        let mut v: Vec<(String, f64)> = vec![("train/items_per_s".into(), ips)];
        v.extend(loss.map(|l| ("train/loss".to_string(), l)));
        v.extend(
            self.opt
                .groups
                .iter()
                .map(|g| (format!("lr/{}", g.name), g.lr)),
        );
        let v: Vec<(&str, f64)> = v.iter().map(|(k, x)| (k.as_str(), *x)).collect();
        tb.scalars(self.step, &v)
    }

    /// Whether this step's validation beat every earlier one (then it becomes the best).
    fn take_new_best(&mut self) -> bool {
        let Some((step, m)) = self.last_val else {
            return false;
        };
        let better = step == self.step && self.best_val.is_none_or(|b| m.map10 > b);
        if better {
            self.best_val = Some(m.map10);
        }
        better
    }

    /// Appends a line to `eval.jsonl` (rank 0).
    fn write_eval(&mut self, line: &serde_json::Value) -> Result<()> {
        if let Some((_, evals)) = &mut self.logs {
            writeln!(evals, "{line}").map_err(TrainError::io(self.run.join("eval.jsonl")))?;
        }
        Ok(())
    }

    /// Rank 0 writes the checkpoint; every rank records where it is.
    fn checkpoint(&mut self) -> Result<PathBuf> {
        let val = self
            .last_val
            .as_ref()
            .filter(|(s, _)| *s == self.step)
            .map(|v| v.1.map10);
        let state = TrainState {
            step: self.step,
            epoch: self.cursor.epoch,
            cursor: self.cursor,
            rng_state: self.rng.state(),
            world_size: self.dist.world_size(),
            config_hash: self.hash.clone(),
            val_map10: val,
            nonfinite_skipped: self.nonfinite,
        };
        let dir = match self.dist.is_main() {
            true => {
                let dir = checkpoint::save(&self.run, &self.ps, &self.opt, &state)?;
                checkpoint::retain(&self.run, self.cfg.checkpoint.keep_last)?;
                dir
            }
            false => {
                checkpoint::checkpoints_dir(&self.run).join(checkpoint::step_dir_name(self.step))
            }
        };
        self.last_ckpt = Some((self.step, dir.clone()));
        Ok(dir)
    }
}

/// The checkpoint a run resumes from: none for a fresh start (or `auto` without one), else a
/// committed checkpoint directory.
fn resume_checkpoint(run: &Path, resume: &Resume) -> Result<Option<PathBuf>> {
    let dir = match resume {
        Resume::Fresh => return Ok(None),
        Resume::Auto => match checkpoint::latest_committed(run)? {
            Some(d) => d,
            None => return Ok(None),
        },
        Resume::Path(p) => p.clone(),
    };
    if !dir.join(checkpoint::COMMIT_FILE).is_file() {
        return Err(TrainError::format(
            dir,
            "checkpoint has no COMMIT marker (incomplete)",
        ));
    }
    Ok(Some(dir))
}

/// The training mode of a step: rank 0 uses the step's seed, other ranks a derived one, so
/// every rank draws its own dropout and SpecAugment masks.
fn rank_mode(seed: u64, rank: usize) -> Mode {
    let mode = Mode::Train { seed };
    match rank {
        0 => mode,
        r => mode.sub(0xD15_7000 + r as u64),
    }
}

/// Adam over the four groups of the config and one schedule per group.
fn optimizer(cfg: &TrainConfig, ps: &ParamStore) -> Result<(Adam, Vec<WarmupCosine>)> {
    let mut groups = Vec::new();
    let mut scheds = Vec::new();
    for (name, r) in cfg.lr_groups() {
        groups.push(ParamGroup::by_prefix(
            ps,
            name,
            group_prefixes(name),
            0.0,
            0.0,
        ));
        scheds.push(WarmupCosine {
            lr_max: r.max,
            lr_min: r.min,
            warmup_epochs: cfg.optim.warmup_epochs,
            rampdown_stop: cfg.optim.rampdown_stop,
        });
    }
    let opt = Adam::new(ps, AdamConfig::default(), groups)?;
    Ok((opt, scheds))
}

fn progress_bar(enabled: bool, total: u64, pos: u64) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(pos);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise} ETA {eta}] {msg}")
    {
        bar.set_style(style);
    }
    bar
}
