//! Batch norm over axis 1 of (N, C, *spatial) on CUDA through `kernels/batchnorm.cu`.
//! CPU twin: `channel` in `crate::cpu::norm` (same operand checks, same per-channel constants,
//! PyTorch running-stat semantics: biased variance to normalise, unbiased variance and
//! `running = (1 - momentum) * running + momentum * batch` for the running statistics).
//!
//! Launches: a partial-reduction kernel (grid.x = chunks of one channel's positions, grid.y =
//! channels, 256 threads, f64 partials), a finish kernel (one thread per channel), then a
//! pointwise kernel (grid.x = (n, c) planes, grid.y = tiles of a plane, float4 when possible).
//!
//! bf16 activations: x, y, dy and dx may be bf16 with f32 parameters (the `_bf16` kernels; the
//! statistics, dgamma and dbeta stay f32, and the per-channel finish kernels are shared).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::backend::{buf, buf_mut, i64_of, unary_code, wrap, CudaBackend};
use super::cast::{acts_device, alloc_as, kname, storage, wrap_storage};
use crate::backend::{
    Affine, BatchNormOps, BatchNormTrain, NormGrads, NormSaved, NormStats, Unary,
};
use crate::checks::nc_spatial;
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, cfg_elems, driver_msg, launch, zeros_f32};
use crate::cuda::CudaDevice;
use crate::{Error, Result, Tensor};

/// Positions per block of the reduction kernels: a plane larger than this is split, smaller
/// planes are grouped (whole batch entries) until a chunk holds about this many.
const CHUNK_ELEMS: usize = 8192;
/// Threads per block of the reduction and pointwise kernels.
const THREADS: u32 = 256;
/// The grid's y limit.
const GRID_Y_MAX: usize = 65_535;
/// The grid's x limit.
const GRID_X_MAX: usize = i32::MAX as usize;

/// How the positions of one channel are split into reduction chunks (kernel arguments).
#[derive(Debug, Clone, Copy)]
struct Chunks {
    /// Batch entries per chunk.
    per_chunk: i64,
    /// Spatial positions per chunk.
    s_len: i64,
    /// Spatial chunks per batch group.
    s_chunks: i64,
    /// Chunks per channel.
    chunks: usize,
}

fn chunks(n: usize, s: usize) -> Chunks {
    let s_len = s.clamp(1, CHUNK_ELEMS);
    let s_chunks = s.div_ceil(s_len).max(1);
    let per_chunk = (CHUNK_ELEMS / s_len).clamp(1, n.max(1));
    Chunks {
        per_chunk: i64_of(per_chunk),
        s_len: i64_of(s_len),
        s_chunks: i64_of(s_chunks),
        chunks: n.div_ceil(per_chunk) * s_chunks,
    }
}

/// A zeroed f64 scratch buffer of `n` elements (at least one) for reduction partials.
fn scratch_f64(dev: &CudaDevice, n: usize, op: &'static str) -> Result<CudaSlice<f64>> {
    dev.stream
        .alloc_zeros::<f64>(n.max(1))
        .map_err(|e| Error::Cuda {
            op,
            msg: format!("allocating {n} f64 partials: {}", driver_msg(&e)),
        })
}

/// Grid of the partial-reduction kernels (both axes grid-strided in the kernels).
fn cfg_reduce(ck: &Chunks, c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            ck.chunks.clamp(1, GRID_X_MAX) as u32,
            c.clamp(1, GRID_Y_MAX) as u32,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Grid of the pointwise kernels: planes on x, tiles of a plane on y (two float4s per thread
/// when the plane length is a multiple of 4, as the kernels then vectorise and keep two
/// vectors in flight; both axes are grid-strided, so any grid is correct).
pub(super) fn cfg_planes(planes: usize, s: usize) -> LaunchConfig {
    let work = if s.is_multiple_of(4) { s / 4 } else { s };
    let threads = (work.div_ceil(32) * 32).clamp(32, THREADS as usize);
    LaunchConfig {
        grid_dim: (
            planes.clamp(1, GRID_X_MAX) as u32,
            work.div_ceil(2 * threads).clamp(1, GRID_Y_MAX) as u32,
            1,
        ),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `y = act((x - m) * a + b)` per channel (`act` None: the plain batch norm output).
fn apply(
    dev: &CudaDevice,
    op: &'static str,
    x: &Tensor,
    [m, a, b]: [&CudaSlice<f32>; 3],
    act: Option<Unary>,
) -> Result<Tensor> {
    let (n, c, s) = nc_spatial(op, x)?;
    let (_, xs) = storage(op, x)?;
    let mut y = alloc_as(dev, x.dtype(), x.numel(), op)?;
    if x.numel() > 0 {
        let name = match act {
            Some(_) => kname!(x.dtype(), "bn_apply_act"),
            None => kname!(x.dtype(), "bn_apply"),
        };
        let f = dev.function(Family::BatchNorm, name)?;
        let (nn, cc, ss) = (i64_of(n), i64_of(c), i64_of(s));
        let code = act.map(unary_code);
        let mut l = dev.stream.launch_builder(&f);
        l.arg(xs)
            .arg(m)
            .arg(a)
            .arg(b)
            .arg(&mut y)
            .arg(&nn)
            .arg(&cc)
            .arg(&ss);
        if let Some(code) = &code {
            l.arg(code);
        }
        launch(l, name, cfg_planes(n * c, s))?;
    }
    Ok(wrap_storage(dev, y, x.shape()))
}

/// Train mode: batch statistics, normalised output (through `act` when given: the fused
/// batch norm + activation), running statistics updated in place.
fn train(x: &Tensor, p: BatchNormTrain) -> Result<(Tensor, NormStats)> {
    const OP: &str = "batch_norm_train";
    let (gamma, beta, eps, act) = (p.affine.gamma, p.affine.beta, p.affine.eps, p.act);
    let (running_mean, running_var, momentum) = (p.running.mean, p.running.var, p.running.momentum);
    let (n, c, s) = nc_spatial(OP, x)?;
    let dev = acts_device(OP, &[x], &[gamma, beta, &*running_mean, &*running_var])?;
    let ((_, xs), (_, gs), (_, bs)) = (storage(OP, x)?, buf(OP, gamma)?, buf(OP, beta)?);
    let ck = chunks(n, s);
    let (nn, cc, ss, nch) = (i64_of(n), i64_of(c), i64_of(s), i64_of(ck.chunks));
    let mut part = scratch_f64(&dev, ck.chunks * c * 3, OP)?;
    let name = kname!(x.dtype(), "bn_stats_part");
    let f = dev.function(Family::BatchNorm, name)?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(xs)
        .arg(&mut part)
        .arg(&nn)
        .arg(&cc)
        .arg(&ss)
        .arg(&ck.per_chunk)
        .arg(&ck.s_len)
        .arg(&ck.s_chunks)
        .arg(&nch);
    launch(l, name, cfg_reduce(&ck, c))?;
    let mut mean = alloc_f32(&dev, c, OP)?;
    let mut rstd = alloc_f32(&dev, c, OP)?;
    let mut scale = alloc_f32(&dev, c, OP)?;
    {
        let rm = buf_mut(OP, running_mean)?;
        let rv = buf_mut(OP, running_var)?;
        let f = dev.function(Family::BatchNorm, "bn_stats_finish_f32")?;
        let mut l = dev.stream.launch_builder(&f);
        l.arg(&part)
            .arg(gs)
            .arg(&mut mean)
            .arg(&mut rstd)
            .arg(&mut scale)
            .arg(rm)
            .arg(rv)
            .arg(&cc)
            .arg(&nch)
            .arg(&momentum)
            .arg(&eps);
        launch(l, "bn_stats_finish_f32", cfg_elems(c))?;
    }
    let y = apply(&dev, OP, x, [&mean, &scale, bs], act)?;
    let stats = NormStats {
        mean: wrap(&dev, mean, &[c]),
        rstd: wrap(&dev, rstd, &[c]),
    };
    Ok((y, stats))
}

/// Eval mode: `y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta`.
fn eval(x: &Tensor, p: Affine, [running_mean, running_var]: [&Tensor; 2]) -> Result<Tensor> {
    const OP: &str = "batch_norm_eval";
    let (gamma, beta, eps) = (p.gamma, p.beta, p.eps);
    let (_, c, _) = nc_spatial(OP, x)?;
    let dev = acts_device(OP, &[x], &[gamma, beta, running_mean, running_var])?;
    let ((_, gs), (_, bs)) = (buf(OP, gamma)?, buf(OP, beta)?);
    let ((_, ms), (_, vs)) = (buf(OP, running_mean)?, buf(OP, running_var)?);
    let mut scale = alloc_f32(&dev, c, OP)?;
    if c > 0 {
        let f = dev.function(Family::BatchNorm, "bn_eval_scale_f32")?;
        let cc = i64_of(c);
        let mut l = dev.stream.launch_builder(&f);
        l.arg(gs).arg(vs).arg(&mut scale).arg(&cc).arg(&eps);
        launch(l, "bn_eval_scale_f32", cfg_elems(c))?;
    }
    apply(&dev, OP, x, [ms, &scale, bs], None)
}

/// Backward of the train mode: `(dx, dgamma, dbeta)`. With `act` (and its batch norm's
/// `beta`) it is the backward of the fused batch norm + activation: the kernels form
/// `dy * act'(z)` on the fly, recomputing z from x, the statistics, gamma and beta.
fn backward(saved: NormSaved, dy: &Tensor, act: Option<(Unary, &Tensor)>) -> Result<NormGrads> {
    const OP: &str = "batch_norm_bwd";
    let (x, gamma, stats) = (saved.x, saved.gamma, saved.stats);
    let (n, c, s) = nc_spatial(OP, x)?;
    let dev = acts_device(OP, &[x, dy], &[gamma, &stats.mean, &stats.rstd])?;
    let dt = x.dtype();
    if x.numel() == 0 {
        return Ok(NormGrads {
            dx: wrap_storage(&dev, alloc_as(&dev, dt, 0, OP)?, x.shape()),
            dgamma: wrap(&dev, zeros_f32(&dev, c, OP)?, gamma.shape()),
            dbeta: wrap(&dev, zeros_f32(&dev, c, OP)?, gamma.shape()),
        });
    }
    let ((_, xs), (_, gs), (_, dys)) = (storage(OP, x)?, buf(OP, gamma)?, storage(OP, dy)?);
    let ((_, ms), (_, rs)) = (buf(OP, &stats.mean)?, buf(OP, &stats.rstd)?);
    let ck = chunks(n, s);
    let (nn, cc, ss, nch) = (i64_of(n), i64_of(c), i64_of(s), i64_of(ck.chunks));
    let fused = match act {
        Some((kind, beta)) => Some((unary_code(kind), buf(OP, beta)?.1)),
        None => None,
    };
    let mut part = scratch_f64(&dev, ck.chunks * c * 2, OP)?;
    let name = match fused {
        Some(_) => kname!(dt, "bn_bwd_part_act"),
        None => kname!(dt, "bn_bwd_part"),
    };
    let f = dev.function(Family::BatchNorm, name)?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(xs).arg(dys).arg(ms);
    if let Some((_, bs)) = &fused {
        l.arg(rs).arg(gs).arg(*bs);
    }
    l.arg(&mut part)
        .arg(&nn)
        .arg(&cc)
        .arg(&ss)
        .arg(&ck.per_chunk)
        .arg(&ck.s_len)
        .arg(&ck.s_chunks)
        .arg(&nch);
    if let Some((code, _)) = &fused {
        l.arg(code);
    }
    launch(l, name, cfg_reduce(&ck, c))?;
    let mut dg = alloc_f32(&dev, c, OP)?;
    let mut db = alloc_f32(&dev, c, OP)?;
    let mut k1 = alloc_f32(&dev, c, OP)?;
    let mut k2 = alloc_f32(&dev, c, OP)?;
    let mut k3 = alloc_f32(&dev, c, OP)?;
    let m = (n * s) as f64;
    let f = dev.function(Family::BatchNorm, "bn_bwd_finish_f32")?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(&part)
        .arg(gs)
        .arg(rs)
        .arg(&mut dg)
        .arg(&mut db)
        .arg(&mut k1)
        .arg(&mut k2)
        .arg(&mut k3)
        .arg(&cc)
        .arg(&nch)
        .arg(&m);
    launch(l, "bn_bwd_finish_f32", cfg_elems(c))?;
    let mut dx = alloc_as(&dev, dt, x.numel(), OP)?;
    let name = match fused {
        Some(_) => kname!(dt, "bn_bwd_dx_act"),
        None => kname!(dt, "bn_bwd_dx"),
    };
    let f = dev.function(Family::BatchNorm, name)?;
    let mut l = dev.stream.launch_builder(&f);
    l.arg(xs).arg(dys).arg(ms);
    if let Some((_, bs)) = &fused {
        l.arg(rs).arg(gs).arg(*bs);
    }
    l.arg(&k1)
        .arg(&k2)
        .arg(&k3)
        .arg(&mut dx)
        .arg(&nn)
        .arg(&cc)
        .arg(&ss);
    if let Some((code, _)) = &fused {
        l.arg(code);
    }
    launch(l, name, cfg_planes(n * c, s))?;
    Ok(NormGrads {
        dx: wrap_storage(&dev, dx, x.shape()),
        dgamma: wrap(&dev, dg, gamma.shape()),
        dbeta: wrap(&dev, db, gamma.shape()),
    })
}

impl BatchNormOps for CudaBackend {
    fn batch_norm_train(&self, x: &Tensor, p: BatchNormTrain) -> Result<(Tensor, NormStats)> {
        train(x, p)
    }

    fn batch_norm_eval(&self, x: &Tensor, p: Affine, [rm, rv]: [&Tensor; 2]) -> Result<Tensor> {
        eval(x, p, [rm, rv])
    }

    fn batch_norm_bwd(
        &self,
        s: NormSaved,
        dy: &Tensor,
        act: Option<(Unary, &Tensor)>,
    ) -> Result<NormGrads> {
        backward(s, dy, act)
    }
}
