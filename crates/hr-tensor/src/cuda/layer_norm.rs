//! Layer norm and L2 normalisation over the last axis on CUDA through `kernels/layer_norm.cu`.

use super::cast::{alloc_as, device_any, kname, storage, wrap_storage};

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::backend::{buf, device_of, i64_of, wrap, CudaBackend};
use super::kernels::Family;
use super::launch::{alloc_f32, cfg_elems, cfg_rows, launch};
use super::{CudaDevice, CudaStorage};
use crate::backend::{Affine, LayerNormOps, NormGrads, NormSaved, NormStats};
use crate::checks::last_axis_rows;
use crate::{Device, Error, Result, Tensor};

/// Row blocks of the parameter-gradient reduction of layer-norm backward.
const LN_PARAM_CHUNKS: usize = 64;

/// `(dgamma, dbeta)` of layer-norm backward in `x`'s dtype: (column tiles of 32) x (row
/// chunks) f32 partial sums, then a fixed-order sum over chunks (deterministic).
fn layer_norm_param_grads(
    dev: &CudaDevice,
    x: &Tensor,
    [xs, dys]: [&CudaStorage; 2],
    [ms, rs]: [&CudaSlice<f32>; 2],
    rows: usize,
    d: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "layer_norm_bwd";
    let (r, dd) = (i64_of(rows), i64_of(d));
    let chunks = rows.div_ceil(8).clamp(1, LN_PARAM_CHUNKS);
    let mut pg = alloc_f32(dev, chunks * d, OP)?;
    let mut pb = alloc_f32(dev, chunks * d, OP)?;
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (d.div_ceil(32) as u32, chunks as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let name = kname!(x.dtype(), "layer_norm_bwd_params");
    let f = dev.function(Family::LayerNorm, name)?;
    let mut a = dev.stream.launch_builder(&f);
    a.arg(xs)
        .arg(ms)
        .arg(rs)
        .arg(dys)
        .arg(&mut pg)
        .arg(&mut pb)
        .arg(&r)
        .arg(&dd);
    launch(a, name, cfg)?;
    let mut dg = alloc_as(dev, x.dtype(), d, OP)?;
    let mut db = alloc_as(dev, x.dtype(), d, OP)?;
    let name = kname!(x.dtype(), "layer_norm_bwd_finish");
    let f = dev.function(Family::LayerNorm, name)?;
    let parts = i64_of(chunks);
    let mut a = dev.stream.launch_builder(&f);
    a.arg(&pg)
        .arg(&pb)
        .arg(&mut dg)
        .arg(&mut db)
        .arg(&parts)
        .arg(&dd);
    launch(a, name, cfg_elems(d))?;
    Ok((dg, db))
}

impl LayerNormOps for CudaBackend {
    fn layer_norm(&self, x: &Tensor, p: Affine) -> Result<(Tensor, NormStats)> {
        const OP: &str = "layer_norm";
        let Affine { gamma, beta, eps } = p;
        let d = gamma.numel();
        let (rows, stat_shape) = last_axis_rows(OP, x, d)?;
        let dev = device_any(OP, &[x, gamma, beta])?;
        let (xs, gs, bs) = (
            storage(OP, x)?.1,
            storage(OP, gamma)?.1,
            storage(OP, beta)?.1,
        );
        let mut y = alloc_as(&dev, x.dtype(), x.numel(), OP)?;
        // The statistics are f32 for bf16 inputs too (see `NormStats`).
        let mut mean = alloc_f32(&dev, rows, OP)?;
        let mut rstd = alloc_f32(&dev, rows, OP)?;
        if rows > 0 {
            let name = kname!(x.dtype(), "layer_norm");
            let f = dev.function(Family::LayerNorm, name)?;
            let (r, dd) = (i64_of(rows), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(gs)
                .arg(bs)
                .arg(&mut y)
                .arg(&mut mean)
                .arg(&mut rstd)
                .arg(&r)
                .arg(&dd)
                .arg(&eps);
            launch(a, name, cfg_rows(rows, d))?;
        }
        let stats = NormStats {
            mean: wrap(&dev, mean, &stat_shape),
            rstd: wrap(&dev, rstd, &stat_shape),
        };
        Ok((wrap_storage(&dev, y, x.shape()), stats))
    }

    fn layer_norm_bwd(&self, s: NormSaved, dy: &Tensor) -> Result<NormGrads> {
        const OP: &str = "layer_norm_bwd";
        let (x, gamma, stats) = (s.x, s.gamma, s.stats);
        let d = gamma.numel();
        let (rows, _) = last_axis_rows(OP, x, d)?;
        let dev = device_any(OP, &[x, gamma, dy])?;
        // f32 statistics on the same device (for bf16 inputs too).
        let ((mo, ms), (ro, rs)) = (buf(OP, &stats.mean)?, buf(OP, &stats.rstd)?);
        if mo != dev.ordinal || ro != dev.ordinal {
            return Err(Error::DeviceMismatch {
                op: OP,
                lhs: Device::Cuda(dev.ordinal),
                rhs: Device::Cuda(if mo != dev.ordinal { mo } else { ro }),
            });
        }
        let (xs, gs, dys) = (storage(OP, x)?.1, storage(OP, gamma)?.1, storage(OP, dy)?.1);
        let mut dx = alloc_as(&dev, x.dtype(), x.numel(), OP)?;
        let (r, dd) = (i64_of(rows), i64_of(d));
        if rows > 0 {
            let name = kname!(x.dtype(), "layer_norm_bwd_dx");
            let f = dev.function(Family::LayerNorm, name)?;
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(gs)
                .arg(ms)
                .arg(rs)
                .arg(dys)
                .arg(&mut dx)
                .arg(&r)
                .arg(&dd);
            launch(a, name, cfg_rows(rows, d))?;
        }
        let (dg, db) = layer_norm_param_grads(&dev, x, [xs, dys], [ms, rs], rows, d)?;
        Ok(NormGrads {
            dx: wrap_storage(&dev, dx, x.shape()),
            dgamma: wrap_storage(&dev, dg, gamma.shape()),
            dbeta: wrap_storage(&dev, db, gamma.shape()),
        })
    }

    fn l2_normalize(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        const OP: &str = "l2_normalize";
        let d = x.shape().last().copied().unwrap_or(0);
        let (rows, stat_shape) = last_axis_rows(OP, x, d)?;
        let dev = device_of(OP, &[x])?;
        let (_, xs) = buf(OP, x)?;
        let mut y = alloc_f32(&dev, x.numel(), OP)?;
        let mut norms = alloc_f32(&dev, rows, OP)?;
        if rows > 0 {
            let f = dev.function(Family::LayerNorm, "l2_normalize_f32")?;
            let (r, dd) = (i64_of(rows), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(&mut y)
                .arg(&mut norms)
                .arg(&r)
                .arg(&dd)
                .arg(&eps);
            launch(a, "l2_normalize_f32", cfg_rows(rows, d))?;
        }
        Ok((wrap(&dev, y, x.shape()), wrap(&dev, norms, &stat_shape)))
    }

    fn l2_normalize_bwd(
        &self,
        y: &Tensor,
        norms: &Tensor,
        dy: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        const OP: &str = "l2_normalize_bwd";
        let d = y.shape().last().copied().unwrap_or(0);
        let (rows, _) = last_axis_rows(OP, y, d)?;
        let dev = device_of(OP, &[y, norms, dy])?;
        let ((_, ys), (_, ns), (_, gs)) = (buf(OP, y)?, buf(OP, norms)?, buf(OP, dy)?);
        let mut dx = alloc_f32(&dev, y.numel(), OP)?;
        if rows > 0 {
            let f = dev.function(Family::LayerNorm, "l2_normalize_bwd_f32")?;
            let (r, dd) = (i64_of(rows), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(ys)
                .arg(ns)
                .arg(gs)
                .arg(&mut dx)
                .arg(&r)
                .arg(&dd)
                .arg(&eps);
            launch(a, "l2_normalize_bwd_f32", cfg_rows(rows, d))?;
        }
        Ok(wrap(&dev, dx, y.shape()))
    }
}
