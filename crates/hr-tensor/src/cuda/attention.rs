//! Fused attention on CUDA through `kernels/attention.cu`. CPU twin: `crate::cpu::attention`.
//!
//! Every kernel runs 128 threads = 32 rows x 4 threads per block, one block per (b * h, tile
//! of 32 rows) (grid `(B * H, ceil(T / 32))`), holds its rows in registers and stages the
//! other operand 32 rows at a time in static shared memory. Each kernel comes in three
//! register widths (`_dh32`, `_dh64` and unsuffixed for head dims up to 32 / 64 / 128, with 8 /
//! 16 / 32 KiB of shared memory); [`variant`] picks the narrowest:
//! - forward: rows = queries, K/V tiles, online softmax; writes `out` and `lse`;
//! - backward: `attention_bwd_dkdv_f32` (rows = keys, Q/dO tiles, P recomputed from `lse`)
//!   then `attention_bwd_dq_f32` (rows = queries, K/V tiles). Two launches rather than
//!   atomics into a zeroed dq: deterministic and every output element written once.
//!
//! Dropout masks are regenerated from `counter_uniform` in every kernel, never stored.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::backend::{buf, device_of, i64_of, wrap, CudaBackend};
use crate::backend::{AttentionOps, AttentionSpec, Qkv};
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, launch};
use crate::cuda::CudaDevice;
use crate::{Error, Result, Tensor};

/// Rows per block (`ATT_ROWS` in kernels/attention.cu).
const ROWS: usize = 32;
/// Threads per block (`ATT_THREADS`).
const THREADS: u32 = 128;
/// Largest head dimension the kernels hold in registers and shared memory (`ATT_MAX_DH`).
const MAX_HEAD_DIM: usize = 128;
/// The grid's x limit.
const GRID_X_MAX: usize = i32::MAX as usize;
/// The grid's y limit.
const GRID_Y_MAX: usize = 65_535;

/// `AttnGeom` of kernels/attention.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AttnGeom {
    heads: i64,
    tq: i64,
    tk: i64,
    dh: i64,
    scale: f32,
    keep_scale: f32,
    p: f64,
    seed: u64,
    has_mask: i32,
    pad: i32,
}

// SAFETY: four i64, two f32, one f64, one u64 and two i32 in the order (and C layout, 64 bytes,
// no padding) of `struct AttnGeom` in kernels/attention.cu.
unsafe impl DeviceRepr for AttnGeom {}

/// Kernel geometry of `spec`, or an error when the kernels cannot run it.
fn geom(op: &'static str, s: &AttentionSpec, has_mask: bool) -> Result<AttnGeom> {
    if s.head_dim > MAX_HEAD_DIM {
        return Err(Error::invalid(
            op,
            format!(
                "head dim {} exceeds the CUDA kernels' maximum of {MAX_HEAD_DIM}",
                s.head_dim
            ),
        ));
    }
    let tiles = s.q_len.max(s.k_len).div_ceil(ROWS);
    if s.batch * s.heads > GRID_X_MAX || tiles > GRID_Y_MAX {
        return Err(Error::invalid(
            op,
            format!(
                "{} batch x heads and {} positions exceed the CUDA grid",
                s.batch * s.heads,
                s.q_len.max(s.k_len)
            ),
        ));
    }
    Ok(AttnGeom {
        heads: i64_of(s.heads),
        tq: i64_of(s.q_len),
        tk: i64_of(s.k_len),
        dh: i64_of(s.head_dim),
        scale: s.scale as f32,
        keep_scale: (1.0 / (1.0 - s.dropout)) as f32,
        p: s.dropout,
        seed: s.seed,
        has_mask: i32::from(has_mask),
        pad: 0,
    })
}

/// The kernels of the family.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Fwd = 0,
    DkDv = 1,
    Dq = 2,
}

/// Entry points of each [`Kernel`] for head dims up to 32, 64 and [`MAX_HEAD_DIM`].
const NAMES: [[&str; 3]; 3] = [
    [
        "attention_fwd_dh32_f32",
        "attention_fwd_dh64_f32",
        "attention_fwd_f32",
    ],
    [
        "attention_bwd_dkdv_dh32_f32",
        "attention_bwd_dkdv_dh64_f32",
        "attention_bwd_dkdv_f32",
    ],
    [
        "attention_bwd_dq_dh32_f32",
        "attention_bwd_dq_dh64_f32",
        "attention_bwd_dq_f32",
    ],
];

/// Entry point of `k` for head dim `dh` (<= [`MAX_HEAD_DIM`]): the narrowest register width
/// that holds it.
fn variant(k: Kernel, dh: usize) -> &'static str {
    let width = match dh {
        0..=32 => 0,
        33..=64 => 1,
        _ => 2,
    };
    NAMES[k as usize][width]
}

/// Grid over (b * h, tiles of `len` rows), or `None` when it is empty.
fn cfg(s: &AttentionSpec, len: usize) -> Option<LaunchConfig> {
    let (bh, tiles) = (s.batch * s.heads, len.div_ceil(ROWS));
    (bh > 0 && tiles > 0).then_some(LaunchConfig {
        grid_dim: (bh as u32, tiles as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// The mask buffer, or `fallback` (never read: `has_mask` is 0) when there is none.
fn mask_buf<'a>(
    op: &'static str,
    mask: Option<&'a Tensor>,
    fallback: &'a CudaSlice<f32>,
) -> Result<&'a CudaSlice<f32>> {
    match mask {
        Some(m) => Ok(buf(op, m)?.1),
        None => Ok(fallback),
    }
}

/// The operands' device (mask included).
fn device_all(op: &'static str, ts: &[&Tensor], mask: Option<&Tensor>) -> Result<Arc<CudaDevice>> {
    let mut all = ts.to_vec();
    all.extend(mask);
    device_of(op, &all)
}

impl AttentionOps for CudaBackend {
    fn attention(&self, x: Qkv, spec: &AttentionSpec) -> Result<(Tensor, Tensor)> {
        let Qkv { q, k, v, mask } = x;
        const OP: &str = "attention";
        let g = geom(OP, spec, mask.is_some())?;
        let dev = device_all(OP, &[q, k, v], mask)?;
        let ((_, qs), (_, ks), (_, vs)) = (buf(OP, q)?, buf(OP, k)?, buf(OP, v)?);
        let ms = mask_buf(OP, mask, qs)?;
        let lse_shape = [spec.batch, spec.heads, spec.q_len];
        let mut out = alloc_f32(&dev, q.numel(), OP)?;
        let mut lse = alloc_f32(&dev, lse_shape.iter().product(), OP)?;
        if let Some(c) = cfg(spec, spec.q_len) {
            let name = variant(Kernel::Fwd, spec.head_dim);
            let f = dev.function(Family::Attention, name)?;
            let mut l = dev.stream.launch_builder(&f);
            l.arg(qs)
                .arg(ks)
                .arg(vs)
                .arg(ms)
                .arg(&mut out)
                .arg(&mut lse)
                .arg(&g);
            launch(l, name, c)?;
        }
        Ok((wrap(&dev, out, q.shape()), wrap(&dev, lse, &lse_shape)))
    }

    fn attention_bwd(&self, x: Qkv, t: [&Tensor; 3], spec: &AttentionSpec) -> Result<[Tensor; 3]> {
        let (Qkv { q, k, v, mask }, [out, lse, dout]) = (x, t);
        const OP: &str = "attention_bwd";
        let g = geom(OP, spec, mask.is_some())?;
        let dev = device_all(OP, &[q, k, v, out, lse, dout], mask)?;
        let ((_, qs), (_, ks), (_, vs)) = (buf(OP, q)?, buf(OP, k)?, buf(OP, v)?);
        let ((_, os), (_, ls), (_, ds)) = (buf(OP, out)?, buf(OP, lse)?, buf(OP, dout)?);
        let ms = mask_buf(OP, mask, qs)?;
        let mut dq = alloc_f32(&dev, q.numel(), OP)?;
        let mut dk = alloc_f32(&dev, k.numel(), OP)?;
        let mut dv = alloc_f32(&dev, v.numel(), OP)?;
        if let (Some(c), true) = (cfg(spec, spec.k_len), k.numel() > 0) {
            let name = variant(Kernel::DkDv, spec.head_dim);
            let f = dev.function(Family::Attention, name)?;
            let mut l = dev.stream.launch_builder(&f);
            l.arg(qs).arg(ks).arg(vs).arg(ms).arg(os).arg(ls).arg(ds);
            l.arg(&mut dk).arg(&mut dv).arg(&g);
            launch(l, name, c)?;
        }
        if let (Some(c), true) = (cfg(spec, spec.q_len), q.numel() > 0) {
            let name = variant(Kernel::Dq, spec.head_dim);
            let f = dev.function(Family::Attention, name)?;
            let mut l = dev.stream.launch_builder(&f);
            l.arg(qs).arg(ks).arg(vs).arg(ms).arg(os).arg(ls).arg(ds);
            l.arg(&mut dq).arg(&g);
            launch(l, name, c)?;
        }
        Ok([
            wrap(&dev, dq, q.shape()),
            wrap(&dev, dk, k.shape()),
            wrap(&dev, dv, v.shape()),
        ])
    }
}
