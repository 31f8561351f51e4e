//! Data parallelism in the trainer, on top of an hr-dist [`Communicator`]: the model's row
//! exchange (embeddings gathered so the loss sees the global batch), gradient averaging in
//! buckets, parameter broadcast from rank 0 and agreement on stopping.
//!
//! A world of one uses hr-dist's `LocalComm`, for which every collective is the identity, so
//! the single-process trainer runs the same code.

use std::path::Path;
use std::time::Duration;

use hr_dist::{Communicator, DistError, DistOptions, WorldInfo, DEFAULT_BUCKET_BYTES};
use hr_models::exchange::RowExchange;
use hr_nn::{ParamId, ParamStore};
use hr_tensor::{DType, Device, Tensor};

use crate::config::{parse_device, DeviceSpec};
use crate::error::{Result, TrainError};

/// The result type of the model's [`RowExchange`] calls.
type ModelResult<T> = hr_models::Result<T>;

/// This process's place in the job and its communicator.
pub struct Dist {
    /// Rank, world size and rendezvous address.
    pub world: WorldInfo,
    comm: Box<dyn Communicator>,
    /// The collective error behind the last failed model call (reported instead of the
    /// model's generic one).
    failure: Option<DistError>,
}

impl Dist {
    /// A world of one process.
    pub fn single() -> Dist {
        Dist::new(WorldInfo::single(), Box::new(hr_dist::LocalComm))
    }

    /// A rank of the world `world` connected through `comm` (e.g. a communicator made with
    /// `hr_dist::init`).
    pub fn new(world: WorldInfo, comm: Box<dyn Communicator>) -> Dist {
        Dist {
            world,
            comm,
            failure: None,
        }
    }

    /// Joins the job described by the environment (Slurm, torchrun-style variables or the
    /// local launcher; a world of one without them). `timeout` bounds every collective, so a
    /// dead or hung rank makes this one fail naming it. `device` is `run.device`: on `cuda`
    /// (this rank's local GPU) or `cuda:N` the collectives run on NCCL when it is available
    /// (else on the CPU ring, with a warning).
    pub fn from_env(run_dir: &Path, timeout: Duration, device: &str) -> Result<Dist> {
        let ordinal = match parse_device(device)? {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) if device == "cuda" => {
                Some(local_gpu(hr_dist::discover_from_env()?.local_rank))
            }
            DeviceSpec::Cuda(n) => Some(n),
        };
        let opts = DistOptions {
            timeout,
            run_dir: Some(run_dir.to_path_buf()),
            device: ordinal,
            ..DistOptions::default()
        };
        let (world, comm) = hr_dist::init_from_env(&opts)?;
        Ok(Dist::new(world, comm))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.world.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world.world_size
    }

    /// True on rank 0, which writes the run directory's shared files.
    pub fn is_main(&self) -> bool {
        self.world.rank == 0
    }

    /// Every rank takes rank 0's values (parameters and buffers).
    pub fn broadcast_values(&mut self, ps: &mut ParamStore) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let values: Vec<Tensor> = ps.iter().map(|(_, p)| p.value.clone()).collect();
        let values =
            hr_dist::broadcast_tensors(self.comm.as_mut(), &values, 0, DEFAULT_BUCKET_BYTES)?;
        for ((_, p), v) in ps.iter_mut().zip(values) {
            p.value = v;
        }
        Ok(())
    }

    /// Every rank takes rank 0's buffers (batch-norm running statistics, which each rank
    /// updates from its own batches), as PyTorch DDP broadcasts buffers from rank 0: then every
    /// rank's model is rank 0's, the one checkpoints hold.
    pub fn broadcast_buffers(&mut self, ps: &mut ParamStore) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let ids: Vec<ParamId> = ps
            .iter()
            .filter(|(_, p)| !p.trainable)
            .map(|(id, _)| id)
            .collect();
        let values: Vec<Tensor> = ids.iter().map(|&id| ps.value(id).clone()).collect();
        let values =
            hr_dist::broadcast_tensors(self.comm.as_mut(), &values, 0, DEFAULT_BUCKET_BYTES)?;
        for (&id, v) in ids.iter().zip(values) {
            *ps.value_mut(id) = v;
        }
        Ok(())
    }

    /// The communicator (for collectives outside the training step, e.g. sharded evaluation).
    pub fn comm(&mut self) -> &mut dyn Communicator {
        self.comm.as_mut()
    }

    /// Averages the gradients of the trainable parameters over ranks (flat 25 MB buckets).
    pub fn average_gradients(&mut self, ps: &mut ParamStore) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let grads: Vec<Tensor> = trainable(ps).map(|p| p.grad.clone()).collect();
        let grads =
            hr_dist::all_reduce_tensors(self.comm.as_mut(), &grads, true, DEFAULT_BUCKET_BYTES)?;
        let slots = ps.iter_mut().map(|(_, p)| p).filter(|p| p.trainable);
        for (p, g) in slots.zip(grads) {
            p.grad = g;
        }
        Ok(())
    }

    /// Runs `late_work` (the rest of the backward, which may only touch the gradients of
    /// parameters named `late_prefix`...) while the other trainable gradients, already final,
    /// are averaged beside it ([`Communicator::all_reduce_tensors_alongside`]: a second host
    /// thread for host communicators, a side stream for NCCL); then averages the `late_prefix`
    /// gradients. The same result as running `late_work` then [`Dist::average_gradients`].
    pub fn average_gradients_overlapped(
        &mut self,
        ps: &mut ParamStore,
        late_prefix: &str,
        late_work: impl FnOnce(&mut ParamStore) -> Result<()>,
    ) -> Result<()> {
        if self.world_size() == 1 {
            return late_work(ps);
        }
        let is_early = |p: &hr_nn::Param| p.trainable && !p.name.starts_with(late_prefix);
        let ids: Vec<ParamId> = ps
            .iter()
            .filter(|(_, p)| is_early(p))
            .map(|(id, _)| id)
            .collect();
        // The early gradients are moved out (no second owner: NCCL reduces them in place
        // without a copy) and put back after; the late ones keep their zero-gradient state.
        let hole = Tensor::zeros(&[0], DType::F32, Device::Cpu)?;
        let mut early: Vec<Tensor> = ids
            .iter()
            .map(|&id| std::mem::replace(ps.grad_mut(id), hole.clone()))
            .collect();
        let mut late_work = Some(late_work);
        let mut worked = Ok(());
        let reduced = self.comm.all_reduce_tensors_alongside(
            &mut early,
            true,
            DEFAULT_BUCKET_BYTES,
            &mut || {
                if let Some(f) = late_work.take() {
                    worked = f(&mut *ps);
                }
            },
        );
        for (&id, g) in ids.iter().zip(early) {
            *ps.grad_mut(id) = g;
        }
        reduced?;
        worked?;
        let late: Vec<Tensor> = trainable(ps)
            .filter(|p| !is_early(p))
            .map(|p| p.grad.clone())
            .collect();
        let late =
            hr_dist::all_reduce_tensors(self.comm.as_mut(), &late, true, DEFAULT_BUCKET_BYTES)?;
        let slots = ps.iter_mut().map(|(_, p)| p);
        for (p, g) in slots.filter(|p| p.trainable && !is_early(p)).zip(late) {
            p.grad = g;
        }
        Ok(())
    }

    /// True on every rank when `flag` is true on any rank.
    pub fn any(&mut self, flag: bool) -> Result<bool> {
        Ok(hr_dist::any_rank(self.comm.as_mut(), flag)?)
    }

    /// Waits for every rank.
    pub fn barrier(&mut self) -> Result<()> {
        Ok(self.comm.barrier()?)
    }

    /// The model's view of the communicator for one step.
    pub fn exchange(&mut self) -> Exchange<'_> {
        Exchange {
            comm: self.comm.as_mut(),
            failure: &mut self.failure,
        }
    }

    /// Replaces a model error caused by a failed collective with the collective's own error
    /// (which names the lost rank).
    pub fn explain(&mut self, e: hr_models::Error) -> TrainError {
        match (self.failure.take(), e) {
            (Some(d), hr_models::Error::Nn(hr_nn::Error::Collective(_))) => TrainError::Dist(d),
            (_, e) => e.into(),
        }
    }
}

/// The GPU ordinal of a rank with `local_rank` under `run.device = "cuda"`: 0 when the
/// launcher made exactly one GPU visible to the process (`CUDA_VISIBLE_DEVICES` with one entry,
/// e.g. Slurm's per-task GPU binding), else the local rank.
pub fn local_gpu(local_rank: usize) -> usize {
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() && !v.contains(',') => 0,
        _ => local_rank,
    }
}

fn trainable(ps: &ParamStore) -> impl Iterator<Item = &hr_nn::Param> {
    ps.iter().map(|(_, p)| p).filter(|p| p.trainable)
}

/// [`RowExchange`] over a [`Communicator`].
pub struct Exchange<'a> {
    comm: &'a mut dyn Communicator,
    failure: &'a mut Option<DistError>,
}

impl Exchange<'_> {
    /// Keeps the collective error for [`Dist::explain`] and hands the model a generic one.
    fn fail(&mut self, e: DistError) -> hr_models::Error {
        let msg = e.to_string();
        *self.failure = Some(e);
        hr_nn::Error::Collective(msg).into()
    }
}

impl RowExchange for Exchange<'_> {
    fn gather_rows(&mut self, x: &Tensor) -> ModelResult<(Tensor, usize)> {
        match hr_dist::all_gather_rows(self.comm, x) {
            Ok((g, cache)) => Ok((g, cache.offset())),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn gather_rows_bwd(&mut self, dy: &Tensor, offset: usize, rows: usize) -> ModelResult<Tensor> {
        let cols = dy.dim("gather_rows_bwd", 1)?;
        let mut g = dy.to_vec_f32()?;
        if let Err(e) = self.comm.all_reduce_sum(&mut g) {
            return Err(self.fail(e));
        }
        let mine = g[offset * cols..(offset + rows) * cols].to_vec();
        Ok(like(dy, Tensor::from_vec(mine, &[rows, cols])?)?)
    }

    fn gather_u64(&mut self, v: &[u64]) -> ModelResult<Vec<u64>> {
        // 16-bit pieces are exact in f32.
        let pieces: Vec<f32> = v
            .iter()
            .flat_map(|&x| (0..4).map(move |k| ((x >> (16 * k)) & 0xFFFF) as f32))
            .collect();
        let all = match self.comm.all_gather(&pieces) {
            Ok(a) => a,
            Err(e) => return Err(self.fail(e)),
        };
        Ok(all
            .chunks(4)
            .map(|c| (0..4).fold(0u64, |acc, k| acc | ((c[k] as u64) << (16 * k))))
            .collect())
    }
}

/// `t` (f32, host) with `like`'s dtype and device.
fn like(like: &Tensor, t: Tensor) -> hr_tensor::Result<Tensor> {
    let t = match like.dtype() {
        DType::F32 => t,
        d => t.to_dtype(d)?,
    };
    match like.device() {
        Device::Cpu => Ok(t),
        d => t.to_device(d),
    }
}
