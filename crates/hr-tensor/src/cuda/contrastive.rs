//! The fused contrastive loss on CUDA through `kernels/contrastive.cu`. CPU twin:
//! `crate::cpu::contrastive` (same semantics; the CPU accumulates in f64, the kernels reduce
//! the log-sum-exps in f32 with the max trick and the loss in f64).
//!
//! Launches (no host round trip, deterministic: no atomics):
//! - `contrastive_fwd_f32`: one block per row (grid-stride over rows), 32..128 threads; block
//!   r reduces row r and column r of the scores to their log-sum-exps and writes the f64
//!   partial loss of row r;
//! - `contrastive_loss_finish_f32`: one block of 256 threads sums the N partials in a fixed
//!   order into the scalar loss;
//! - `contrastive_bwd_f32`: elementwise, one thread per score (grid-stride, 256 threads).
//!
//! The group counts (positives per row, equal to the positives per column since `P` is
//! symmetric) and `|P|` are computed on the host while the groups are uploaded.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::backend::{buf, device_of, i64_of, upload_ids, wrap, CudaBackend};
use crate::backend::{ContrastiveOps, ContrastiveSaved, ContrastiveStats};
use crate::checks::group_counts;
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, cfg_elems, driver_msg, launch};
use crate::cuda::CudaDevice;
use crate::{Error, Result, Tensor};

/// Most threads per block of the forward kernel (rows longer than this are strided).
const FWD_THREADS_MAX: usize = 128;
/// Threads of the one-block finishing reduction.
const FINISH_THREADS: u32 = 256;
/// Upper bound on the forward grid (the kernel grid-strides over rows).
const FWD_BLOCKS_MAX: usize = 1 << 18;

/// The groups and their positive counts on the device, with `|P|` (host value).
struct Groups {
    groups: CudaSlice<u32>,
    counts: CudaSlice<u32>,
    pairs: f64,
}

/// Uploads `groups` and their counts; `|P| = sum of counts`.
fn upload_groups(dev: &CudaDevice, op: &'static str, groups: &[u32]) -> Result<Groups> {
    let counts = group_counts(groups);
    let pairs = counts.iter().map(|&c| f64::from(c)).sum();
    Ok(Groups {
        groups: upload_ids(dev, op, groups)?,
        counts: upload_ids(dev, op, &counts)?,
        pairs,
    })
}

/// Uninitialised f64 scratch of `n` elements (at least one; every element the finishing
/// kernel reads is written by the forward kernel).
fn scratch_f64(dev: &CudaDevice, n: usize, op: &'static str) -> Result<CudaSlice<f64>> {
    // SAFETY: `contrastive_fwd_f32` writes partial[r] for every r < n before the finishing
    // kernel (same stream) reads them.
    unsafe { dev.stream.alloc::<f64>(n.max(1)) }.map_err(|e| Error::Cuda {
        op,
        msg: format!("allocating {n} f64 partials: {}", driver_msg(&e)),
    })
}

/// One block per row: a multiple of 32 threads covering the row, at most [`FWD_THREADS_MAX`].
fn cfg_fwd(n: usize) -> LaunchConfig {
    let threads = (n.div_ceil(32) * 32).clamp(32, FWD_THREADS_MAX);
    LaunchConfig {
        grid_dim: (n.clamp(1, FWD_BLOCKS_MAX) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block for the deterministic sum of the partials.
fn cfg_finish() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (FINISH_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `(row_lse, col_lse, partials)` of the scores `s` (N, N).
fn forward_stats(
    dev: &CudaDevice,
    op: &'static str,
    s: &CudaSlice<f32>,
    g: &Groups,
    n: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f64>)> {
    let mut row = alloc_f32(dev, n, op)?;
    let mut col = alloc_f32(dev, n, op)?;
    let mut part = scratch_f64(dev, n, op)?;
    let nn = i64_of(n);
    let f = dev.function(Family::Contrastive, "contrastive_fwd_f32")?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(s)
        .arg(&g.groups)
        .arg(&g.counts)
        .arg(&mut row)
        .arg(&mut col)
        .arg(&mut part)
        .arg(&nn);
    launch(l, "contrastive_fwd_f32", cfg_fwd(n))?;
    Ok((row, col, part))
}

/// The scalar loss `-sum(partials) / (2 |P|)`.
fn finish_loss(
    dev: &CudaDevice,
    op: &'static str,
    part: &CudaSlice<f64>,
    g: &Groups,
    n: usize,
) -> Result<CudaSlice<f32>> {
    let mut loss = alloc_f32(dev, 1, op)?;
    let nn = i64_of(n);
    let f = dev.function(Family::Contrastive, "contrastive_loss_finish_f32")?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(part).arg(&mut loss).arg(&nn).arg(&g.pairs);
    launch(l, "contrastive_loss_finish_f32", cfg_finish())?;
    Ok(loss)
}

impl ContrastiveOps for CudaBackend {
    fn contrastive_loss(
        &self,
        scores: &Tensor,
        groups: &[u32],
    ) -> Result<(Tensor, ContrastiveStats)> {
        const OP: &str = "contrastive_loss";
        let n = groups.len();
        let dev = device_of(OP, &[scores])?;
        let (_, s) = buf(OP, scores)?;
        let g = upload_groups(&dev, OP, groups)?;
        let (row, col, part) = forward_stats(&dev, OP, s, &g, n)?;
        let loss = finish_loss(&dev, OP, &part, &g, n)?;
        let stats = ContrastiveStats {
            row_lse: wrap(&dev, row, &[n]),
            col_lse: wrap(&dev, col, &[n]),
        };
        Ok((wrap(&dev, loss, &[]), stats))
    }

    fn contrastive_loss_bwd(&self, saved: ContrastiveSaved, dloss: f64) -> Result<Tensor> {
        const OP: &str = "contrastive_loss_bwd";
        let (scores, groups, stats) = (saved.scores, saved.groups, saved.stats);
        let n = groups.len();
        let dev = device_of(OP, &[scores, &stats.row_lse, &stats.col_lse])?;
        let ((_, s), (_, row), (_, col)) = (
            buf(OP, scores)?,
            buf(OP, &stats.row_lse)?,
            buf(OP, &stats.col_lse)?,
        );
        let g = upload_groups(&dev, OP, groups)?;
        let w = (-0.5 * dloss / g.pairs) as f32;
        let mut ds = alloc_f32(&dev, n * n, OP)?;
        let nn = i64_of(n);
        let f = dev.function(Family::Contrastive, "contrastive_bwd_f32")?;
        let mut l = dev.stream.launch_builder(&f);
        l.arg(s)
            .arg(&g.groups)
            .arg(&g.counts)
            .arg(row)
            .arg(col)
            .arg(&mut ds)
            .arg(&nn)
            .arg(&w);
        launch(l, "contrastive_bwd_f32", cfg_elems(n * n))?;
        Ok(wrap(&dev, ds, &[n, n]))
    }
}
