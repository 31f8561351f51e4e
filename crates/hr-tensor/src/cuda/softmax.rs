//! Softmax, log-softmax and NLL loss on CUDA through `kernels/softmax.cu`.

use super::cast::{alloc_as, device_any, kname, storage, wrap_storage};

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::backend::{buf, device_of, i64_of, upload_ids, wrap, CudaBackend};
use super::kernels::Family;
use super::launch::{alloc_f32, cfg_elems, cfg_rows, cfg_warp_rows, launch, zeros_f32};
use crate::backend::SoftmaxOps;
use crate::checks::rows_cols;
use crate::{DType, Result, Tensor};

/// Launches a row kernel `name(a, b, out, rows, k)` of the softmax family.
fn softmax_rows_2(op: &'static str, name: &'static str, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (rows, k) = rows_cols(op, y)?;
    let dev = device_any(op, &[y, dy])?;
    let ((_, ys), (_, gs)) = (storage(op, y)?, storage(op, dy)?);
    let mut dx = alloc_as(&dev, y.dtype(), y.numel(), op)?;
    if rows > 0 {
        let f = dev.function(Family::Softmax, name)?;
        let (r, kk) = (i64_of(rows), i64_of(k));
        let mut a = dev.stream.launch_builder(&f);
        a.arg(ys).arg(gs).arg(&mut dx).arg(&r).arg(&kk);
        launch(a, name, cfg_rows(rows, k))?;
    }
    Ok(wrap_storage(&dev, dx, y.shape()))
}

/// Softmax kernel and launch shape for rows of `k` entries: up to 1024 entries one warp per
/// row (the row held in registers), longer rows one block per row.
fn softmax_kernel(dtype: DType, rows: usize, k: usize) -> (&'static str, LaunchConfig) {
    let warp = cfg_warp_rows(rows);
    match k.div_ceil(32) {
        0..=1 => (kname!(dtype, "softmax_warp1"), warp),
        2 => (kname!(dtype, "softmax_warp2"), warp),
        3..=4 => (kname!(dtype, "softmax_warp4"), warp),
        5..=8 => (kname!(dtype, "softmax_warp8"), warp),
        9..=16 => (kname!(dtype, "softmax_warp16"), warp),
        17..=32 => (kname!(dtype, "softmax_warp32"), warp),
        _ => (kname!(dtype, "softmax"), cfg_rows(rows, k)),
    }
}

impl SoftmaxOps for CudaBackend {
    fn softmax(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "softmax";
        let (rows, k) = rows_cols(OP, x)?;
        // Rows per mask row: x is viewed as (B, R, K) against a (B, K) mask.
        let per_mask_row = mask.map_or(1, |m| rows.checked_div(m.shape()[0]).unwrap_or(1));
        let dev = match mask {
            Some(m) => device_any(OP, &[x, m])?,
            None => device_any(OP, &[x])?,
        };
        let (_, xs) = storage(OP, x)?;
        let (ms, has) = match mask {
            Some(m) => (storage(OP, m)?.1, 1i32),
            None => (xs, 0i32),
        };
        let mut y = alloc_as(&dev, x.dtype(), x.numel(), OP)?;
        if rows > 0 {
            let (r, kk, pm) = (i64_of(rows), i64_of(k), i64_of(per_mask_row.max(1)));
            let (name, cfg) = softmax_kernel(x.dtype(), rows, k);
            let f = dev.function(Family::Softmax, name)?;
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(ms)
                .arg(&has)
                .arg(&mut y)
                .arg(&r)
                .arg(&kk)
                .arg(&pm);
            launch(a, name, cfg)?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }

    fn softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        softmax_rows_2("softmax_bwd", kname!(y.dtype(), "softmax_bwd"), y, dy)
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "log_softmax";
        let (rows, k) = rows_cols(OP, x)?;
        let dev = device_of(OP, &[x])?;
        let (_, xs) = buf(OP, x)?;
        let mut y = alloc_f32(&dev, x.numel(), OP)?;
        if rows > 0 {
            let f = dev.function(Family::Softmax, "log_softmax_f32")?;
            let (r, kk) = (i64_of(rows), i64_of(k));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&r).arg(&kk);
            launch(a, "log_softmax_f32", cfg_rows(rows, k))?;
        }
        Ok(wrap(&dev, y, x.shape()))
    }

    fn log_softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        // f32 only: rejects bf16 operands before the dtype-generic launcher.
        device_of("log_softmax_bwd", &[y, dy])?;
        softmax_rows_2("log_softmax_bwd", "log_softmax_bwd_f32", y, dy)
    }

    fn nll_loss(&self, logp: &Tensor, targets: &[u32]) -> Result<Tensor> {
        const OP: &str = "nll_loss";
        let (rows, k) = rows_cols(OP, logp)?;
        let dev = device_of(OP, &[logp])?;
        let (_, ls) = buf(OP, logp)?;
        let tb = upload_ids(&dev, OP, targets)?;
        let mut out = alloc_f32(&dev, 1, OP)?;
        let f = dev.function(Family::Softmax, "nll_loss_f32")?;
        let (r, kk) = (i64_of(rows), i64_of(k));
        let mut a = dev.stream.launch_builder(&f);
        a.arg(ls).arg(&tb).arg(&mut out).arg(&r).arg(&kk);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(a, "nll_loss_f32", cfg)?;
        Ok(wrap(&dev, out, &[]))
    }

    fn nll_loss_bwd(&self, logp: &Tensor, targets: &[u32], dloss: f64) -> Result<Tensor> {
        const OP: &str = "nll_loss_bwd";
        let (rows, k) = rows_cols(OP, logp)?;
        let dev = device_of(OP, &[logp])?;
        let tb = upload_ids(&dev, OP, targets)?;
        let mut g = zeros_f32(&dev, logp.numel(), OP)?;
        let f = dev.function(Family::Softmax, "nll_loss_bwd_f32")?;
        let (r, kk, v) = (i64_of(rows), i64_of(k), (-dloss / rows as f64) as f32);
        let mut a = dev.stream.launch_builder(&f);
        a.arg(&tb).arg(&mut g).arg(&r).arg(&kk).arg(&v);
        launch(a, "nll_loss_bwd_f32", cfg_elems(rows))?;
        Ok(wrap(&dev, g, logp.shape()))
    }
}
