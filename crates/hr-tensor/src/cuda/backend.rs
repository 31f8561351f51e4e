//! The CUDA backend: every op family of [`crate::backend`] on f32 tensors of one GPU (and bf16
//! storage for the ops listed in `backend/dtype.rs`), through
//! the NVRTC-compiled kernels of `kernels/` and cuBLAS for GEMMs. Semantics match the CPU
//! reference in `crate::cpu` (the `_cuda` parity cases of each `tests/<family>.rs`, registered
//! with `test_device!`, check each op).
//! Convolutions (`backend/conv.rs`), batch norm (`backend/batchnorm.rs`) and the audio family
//! (`backend/audio.rs`) live in child modules.

mod attention;
mod audio;
mod batchnorm;
mod contrastive;
mod conv;
mod dtype;
mod gemm_bf16;
mod optim;
mod plane;

pub(crate) use dtype::cast;
use dtype::{alloc_as, cfg_vec, device_any, kname, storage, storage_mut, wrap_storage, zeros_as};

use std::sync::Arc;

use cudarc::cublas::{sys as blas_sys, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::kernels::Family;
use super::launch::{
    alloc_f32, cfg_elems, cfg_rows, cfg_sum_cols, cfg_warp_rows, cuda_err, launch, row_major,
    zeros_f32, Broadcast2, Strided,
};
use super::{CudaDevice, CudaStorage};
use crate::backend::{
    AdamStep, Binary, Conv2dSpec, ConvOps, ElementwiseOps, GemmOps, LayoutOps, MatmulSpec,
    NormGrads, NormOps, NormStats, OptimOps, ReduceOps, SoftmaxOps, Unary,
};
use crate::checks::{
    check_axis, check_targets, last_axis_rows, per_row, rows_cols, same_shape, split_at_axis,
};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// The CUDA backend (stateless: devices, modules and cuBLAS handles live in the registry of
/// [`crate::cuda`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaBackend;

/// The f32 device buffer of `t` and its device, or an error naming `op`.
fn buf<'a>(op: &'static str, t: &'a Tensor) -> Result<(usize, &'a CudaSlice<f32>)> {
    match t.storage() {
        Storage::Cuda {
            ordinal,
            data: CudaStorage::F32(s),
        } => Ok((*ordinal, s)),
        Storage::Cpu(_) if t.dtype() == DType::F32 => Err(Error::DeviceMismatch {
            op,
            lhs: t.device(),
            rhs: Device::Cuda(0),
        }),
        _ => Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            device: t.device(),
        }),
    }
}

/// Mutable device buffer of `t` (copied first if its storage is shared).
fn buf_mut<'a>(op: &'static str, t: &'a mut Tensor) -> Result<&'a mut CudaSlice<f32>> {
    let (dtype, device) = (t.dtype(), t.device());
    match t.storage_mut() {
        Storage::Cuda {
            data: CudaStorage::F32(s),
            ..
        } => Ok(s),
        _ => Err(Error::UnsupportedDType { op, dtype, device }),
    }
}

/// The device of the first operand plus a check that every other one lives there too.
fn device_of(op: &'static str, ts: &[&Tensor]) -> Result<Arc<CudaDevice>> {
    // f32 operands only (a bf16 one is `UnsupportedDType` naming `op`).
    for t in ts {
        buf(op, t)?;
    }
    device_any(op, ts)
}

/// Wraps a device buffer as a tensor of `shape` on `dev`.
fn wrap(dev: &CudaDevice, data: CudaSlice<f32>, shape: &[usize]) -> Tensor {
    wrap_storage(dev, CudaStorage::F32(data), shape)
}

/// Uploads host ids (u32) for a gather/scatter kernel.
fn upload_ids(dev: &CudaDevice, op: &'static str, ids: &[u32]) -> Result<CudaSlice<u32>> {
    if ids.is_empty() {
        // SAFETY: never read: the kernels that take ids are either not launched for zero ids
        // or (embedding_bwd_sorted_bf16) index them only through bucket starts, all zero then.
        return unsafe { dev.stream.alloc::<u32>(1) }.map_err(|e| cuda_err(op, e));
    }
    dev.stream.clone_htod(ids).map_err(|e| cuda_err(op, e))
}

fn unary_code(kind: Unary) -> i32 {
    match kind {
        Unary::Relu => 0,
        Unary::Gelu => 1,
        Unary::Hardswish => 2,
        Unary::Sigmoid => 3,
        Unary::Tanh => 4,
        Unary::Exp => 5,
        Unary::Log => 6,
        Unary::Sqrt => 7,
    }
}

fn binary_code(kind: Binary) -> i32 {
    match kind {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
    }
}

/// Strides of `in_shape` broadcast to `out_shape` (0 where the input has size 1).
fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> Vec<i64> {
    row_major(in_shape)
        .into_iter()
        .zip(in_shape.iter().zip(out_shape))
        .map(|(s, (&i, &o))| if i == o { s } else { 0 })
        .collect()
}

/// Size as the `long long` the kernels take.
fn i64_of(n: usize) -> i64 {
    n as i64
}

/// Gathers `x` (f32 or bf16) through a strided view into a new tensor of `shape` (broadcast,
/// permute, slice) with kernel `name` (the one of `x`'s dtype).
fn gather(
    op: &'static str,
    family: Family,
    name: &'static str,
    x: &Tensor,
    shape: &[usize],
    base: usize,
    stride: &[i64],
) -> Result<Tensor> {
    let dev = device_any(op, &[x])?;
    let (_, xs) = storage(op, x)?;
    let n = crate::numel_of(op, shape)?;
    let mut y = alloc_as(&dev, x.dtype(), n, op)?;
    if n > 0 {
        let s = Strided::new(op, shape, stride)?;
        let f = dev.function(family, name)?;
        let (nn, b) = (i64_of(n), i64_of(base));
        let mut a = dev.stream.launch_builder(&f);
        a.arg(xs).arg(&mut y).arg(&nn).arg(&b).arg(&s);
        launch(a, name, cfg_elems(n))?;
    }
    Ok(wrap_storage(&dev, y, shape))
}

/// Writes `x` (shape `shape`) into the strided window `base + stride` of `y` (same dtype: f32
/// or bf16, a bit-exact copy).
fn scatter_into(
    dev: &CudaDevice,
    op: &'static str,
    x: &Tensor,
    y: &mut CudaStorage,
    base: usize,
    stride: &[i64],
) -> Result<()> {
    let (_, xs) = storage(op, x)?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let s = Strided::new(op, x.shape(), stride)?;
    let name = kname!(x.dtype(), "scatter_strided");
    let f = dev.function(Family::Layout, name)?;
    let (nn, b) = (i64_of(n), i64_of(base));
    let mut a = dev.stream.launch_builder(&f);
    a.arg(xs).arg(y).arg(&nn).arg(&b).arg(&s);
    launch(a, name, cfg_elems(n))
}

fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(op, format!("{what} = {v} exceeds cuBLAS's i32 range")))
}

/// The column-major cuBLAS config of the row-major product `spec` (C^T = op(B)^T op(A)^T: the
/// operands swap places).
fn col_major(op: &'static str, spec: &MatmulSpec) -> Result<GemmConfig<f32>> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let op_of = |t: bool| {
        if t {
            blas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    Ok(GemmConfig {
        transa: op_of(spec.trans_b),
        transb: op_of(spec.trans_a),
        m: to_i32(op, "n", n)?,
        n: to_i32(op, "m", m)?,
        k: to_i32(op, "k", k)?,
        alpha: spec.alpha as f32,
        lda: to_i32(op, "ldb", if spec.trans_b { k } else { n })?,
        ldb: to_i32(op, "lda", if spec.trans_a { m } else { k })?,
        beta: 0.0f32,
        ldc: to_i32(op, "n", n)?,
    })
}

/// Checks that the operand buffers of `a` and `b` hold the elements `spec` addresses.
fn check_gemm_operands(op: &'static str, a: &Tensor, b: &Tensor, spec: &MatmulSpec) -> Result<()> {
    let a_need = if spec.a_batched { spec.batch } else { 1 } * spec.m * spec.k;
    let b_need = if spec.b_batched { spec.batch } else { 1 } * spec.k * spec.n;
    if gemm_bf16::operand_len(a) < a_need || gemm_bf16::operand_len(b) < b_need {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    Ok(())
}

impl CudaBackend {
    /// A product with bf16 operands whose result is a bf16 activation (the dense pointwise
    /// convolutions of bf16 activations): `a` and `b` are f32 (cast through their cached bf16
    /// copy) or bf16 (used as they are), cuBLAS accumulates in f32 and rounds the result to
    /// `out` (bf16 or f32) once.
    pub(super) fn matmul_bf16(
        &self,
        a: &Tensor,
        b: &Tensor,
        spec: &MatmulSpec,
        out_shape: &[usize],
        out: DType,
    ) -> Result<Tensor> {
        const OP: &str = "matmul";
        let dev = device_any(OP, &[a])?;
        if storage(OP, b)?.0 != dev.ordinal {
            return Err(Error::DeviceMismatch {
                op: OP,
                lhs: a.device(),
                rhs: b.device(),
            });
        }
        let total = spec.batch * spec.m * spec.n;
        if total == 0 || spec.k == 0 {
            return Ok(wrap_storage(
                &dev,
                zeros_as(&dev, out, total, OP)?,
                out_shape,
            ));
        }
        check_gemm_operands(OP, a, b, spec)?;
        let gemm = col_major(OP, spec)?;
        let mut c = alloc_as(&dev, out, total, OP)?;
        let target = match &mut c {
            CudaStorage::F32(s) => gemm_bf16::Out::F32(s),
            CudaStorage::BF16(s) => gemm_bf16::Out::BF16(s),
        };
        gemm_bf16::matmul(&dev, [a, b], target, spec, &gemm)?;
        Ok(wrap_storage(&dev, c, out_shape))
    }
}

impl GemmOps for CudaBackend {
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        spec: &MatmulSpec,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        const OP: &str = "matmul";
        let dev = device_of(OP, &[a, b])?;
        let (_, ab) = buf(OP, a)?;
        let (_, bb) = buf(OP, b)?;
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let total = spec.batch * m * n;
        if total == 0 || k == 0 {
            return Ok(wrap(&dev, zeros_f32(&dev, total, OP)?, out_shape));
        }
        let mut c = alloc_f32(&dev, total, OP)?;
        check_gemm_operands(OP, a, b, spec)?;
        let gemm = col_major(OP, spec)?;
        if spec.bf16_inputs {
            gemm_bf16::matmul(&dev, [a, b], gemm_bf16::Out::F32(&mut c), spec, &gemm)?;
            return Ok(wrap(&dev, c, out_shape));
        }
        let blas = dev.blas()?;
        let name = if spec.batch == 1 {
            "cublas sgemm"
        } else {
            "cublas sgemm strided batched"
        };
        crate::cuda::profile::around(name, || {
            let res = if spec.batch == 1 {
                // SAFETY: the buffers hold at least the m*k, k*n and m*n elements the config
                // addresses (checked above).
                unsafe { blas.gemm(gemm, bb, ab, &mut c) }
            } else {
                let cfg = StridedBatchedConfig {
                    gemm,
                    batch_size: to_i32(OP, "batch", spec.batch)?,
                    stride_a: if spec.b_batched { (k * n) as i64 } else { 0 },
                    stride_b: if spec.a_batched { (m * k) as i64 } else { 0 },
                    stride_c: (m * n) as i64,
                };
                // SAFETY: as above, per batch entry (stride 0 = the shared matrix).
                unsafe { blas.gemm_strided_batched(cfg, bb, ab, &mut c) }
            };
            res.map_err(|e| Error::Cuda {
                op: OP,
                msg: format!(
                    "cublasSgemm{} (batch {}, m {m}, n {n}, k {k}) failed: {e:?}",
                    if spec.batch == 1 {
                        ""
                    } else {
                        "StridedBatched"
                    },
                    spec.batch
                ),
            })
        })?;
        Ok(wrap(&dev, c, out_shape))
    }
}

impl ElementwiseOps for CudaBackend {
    fn unary(&self, kind: Unary, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "unary";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "unary_fwd_v4", "unary_fwd");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, code) = (i64_of(n), unary_code(kind));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&nn).arg(&code);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }

    fn unary_bwd(&self, kind: Unary, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        const OP: &str = "unary_bwd";
        same_shape(OP, x, dy)?;
        let dev = device_any(OP, &[x, dy])?;
        let ((_, xs), (_, gs)) = (storage(OP, x)?, storage(OP, dy)?);
        let n = x.numel();
        let mut dx = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "unary_bwd_v4", "unary_bwd");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, code) = (i64_of(n), unary_code(kind));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(gs).arg(&mut dx).arg(&nn).arg(&code);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, dx, x.shape()))
    }

    fn binary(&self, kind: Binary, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "binary";
        let dev = device_any(OP, &[a, b])?;
        let ((_, av), (_, bv)) = (storage(OP, a)?, storage(OP, b)?);
        if a.rank() != out_shape.len() || b.rank() != out_shape.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: a.shape().to_vec(),
                rhs: b.shape().to_vec(),
            });
        }
        let n = crate::numel_of(OP, out_shape)?;
        let mut c = alloc_as(&dev, a.dtype(), n, OP)?;
        if n > 0 {
            let (nn, code) = (i64_of(n), binary_code(kind));
            if a.shape() == out_shape && b.shape() == out_shape {
                let name = kname!(a.dtype(), "binary_same_v4", "binary_same");
                let f = dev.function(Family::Elementwise, name)?;
                let mut l = dev.stream.launch_builder(&f);
                l.arg(av).arg(bv).arg(&mut c).arg(&nn).arg(&code);
                launch(l, name, cfg_vec(a.dtype(), n))?;
            } else {
                let g = Broadcast2::new(
                    OP,
                    out_shape,
                    &broadcast_strides(a.shape(), out_shape),
                    &broadcast_strides(b.shape(), out_shape),
                )?;
                let name = kname!(a.dtype(), "binary_bcast");
                let f = dev.function(Family::Elementwise, name)?;
                let mut l = dev.stream.launch_builder(&f);
                l.arg(av).arg(bv).arg(&mut c).arg(&nn).arg(&code).arg(&g);
                launch(l, name, cfg_elems(n))?;
            }
        }
        Ok(wrap_storage(&dev, c, out_shape))
    }

    fn affine(&self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
        const OP: &str = "affine";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "affine_v4", "affine");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, m, ad) = (i64_of(n), mul as f32, add as f32);
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&nn).arg(&m).arg(&ad);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }

    fn axpy(&self, y: &mut Tensor, alpha: f64, x: &Tensor) -> Result<()> {
        const OP: &str = "axpy";
        same_shape(OP, y, x)?;
        let dev = device_any(OP, &[y, x])?;
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let name = kname!(x.dtype(), "axpy_v4", "axpy");
        let f = dev.function(Family::Elementwise, name)?;
        let (_, xs) = storage(OP, x)?;
        let ys = storage_mut(OP, y)?;
        let (nn, al) = (i64_of(n), alpha as f32);
        let mut a = dev.stream.launch_builder(&f);
        a.arg(ys).arg(xs).arg(&nn).arg(&al);
        launch(a, name, cfg_vec(x.dtype(), n))
    }

    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        const OP: &str = "dropout";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        let mut s = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "dropout");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, keep) = (i64_of(n), (1.0 / (1.0 - p)) as f32);
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(&mut y)
                .arg(&mut s)
                .arg(&nn)
                .arg(&p)
                .arg(&seed)
                .arg(&keep);
            launch(a, name, cfg_elems(n))?;
        }
        Ok((
            wrap_storage(&dev, y, x.shape()),
            wrap_storage(&dev, s, x.shape()),
        ))
    }
}

/// Longest reduction that `sum_to_cols` takes (each of its threads sums a 1/8 of it).
const SUM_COLS_MAX: usize = 1 << 14;

impl ReduceOps for CudaBackend {
    fn sum_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "sum_to";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let in_shape = x.shape();
        if in_shape.len() != out_shape.len()
            || in_shape
                .iter()
                .zip(out_shape)
                .any(|(&i, &o)| o != i && o != 1)
        {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: in_shape.to_vec(),
                rhs: out_shape.to_vec(),
            });
        }
        let n_out = crate::numel_of(OP, out_shape)?;
        let mut y = alloc_as(&dev, x.dtype(), n_out, OP)?;
        if n_out > 0 {
            let st = row_major(in_shape);
            let kept = Strided::new(OP, out_shape, &st)?;
            let (mut red_shape, mut red_stride) = (Vec::new(), Vec::new());
            for ((&i, &o), &s) in in_shape.iter().zip(out_shape).zip(&st) {
                if o != i {
                    red_shape.push(i);
                    red_stride.push(s);
                }
            }
            let red_n: usize = red_shape.iter().product();
            let red = Strided::new(OP, &red_shape, &red_stride)?;
            // Long contiguous reductions (a mean over H x W): a block per output. Short or
            // strided ones (bias gradients, a mean over one middle axis): 32 outputs per block
            // side by side, so that the loads of a warp are neighbours.
            let contiguous = red.is_contiguous_run();
            let (name, cfg) = if contiguous || red_n > SUM_COLS_MAX {
                (kname!(x.dtype(), "sum_to"), cfg_rows(n_out, red_n))
            } else {
                (kname!(x.dtype(), "sum_to_cols"), cfg_sum_cols(n_out))
            };
            let f = dev.function(Family::Reduce, name)?;
            let (no, rn) = (i64_of(n_out), i64_of(red_n));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&no).arg(&rn).arg(&kept).arg(&red);
            launch(a, name, cfg)?;
        }
        Ok(wrap_storage(&dev, y, out_shape))
    }

    fn broadcast_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "broadcast_to";
        if x.rank() != out_shape.len()
            || x.shape()
                .iter()
                .zip(out_shape)
                .any(|(&i, &o)| i != o && i != 1)
        {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: x.shape().to_vec(),
                rhs: out_shape.to_vec(),
            });
        }
        let st = broadcast_strides(x.shape(), out_shape);
        gather(
            OP,
            Family::Reduce,
            kname!(x.dtype(), "gather_strided"),
            x,
            out_shape,
            0,
            &st,
        )
    }
}

impl LayoutOps for CudaBackend {
    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        const OP: &str = "permute";
        let mut seen = vec![false; x.rank()];
        if perm.len() != x.rank()
            || perm
                .iter()
                .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "{perm:?} is not a permutation of the axes of shape {:?}",
                    x.shape()
                ),
            ));
        }
        let st = row_major(x.shape());
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        let stride: Vec<i64> = perm.iter().map(|&p| st[p]).collect();
        let name = kname!(x.dtype(), "gather");
        gather(OP, Family::Layout, name, x, &shape, 0, &stride)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        const OP: &str = "concat";
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid(OP, "no tensors given"))?;
        check_axis(OP, first, axis)?;
        for t in xs {
            let fits = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        let dev = device_any(OP, xs)?;
        let (outer, _, inner) = split_at_axis(first.shape(), axis);
        let total: usize = xs.iter().map(|t| t.shape()[axis]).sum();
        let mut shape = first.shape().to_vec();
        shape[axis] = total;
        let mut y = alloc_as(&dev, first.dtype(), outer * total * inner, OP)?;
        let mut at = 0usize;
        for t in xs {
            let len = t.shape()[axis];
            let geo = [outer, len, inner];
            let st = [(total * inner) as i64, inner as i64, 1];
            let part = t.reshape(&geo)?;
            scatter_into(&dev, OP, &part, &mut y, at * inner, &st)?;
            at += len;
        }
        Ok(wrap_storage(&dev, y, &shape))
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        const OP: &str = "slice";
        check_axis(OP, x, axis)?;
        let (outer, dim, inner) = split_at_axis(x.shape(), axis);
        if start.checked_add(len).is_none_or(|end| end > dim) {
            return Err(Error::invalid(
                OP,
                format!(
                    "range {start}..{start}+{len} out of bounds for axis {axis} of shape {:?}",
                    x.shape()
                ),
            ));
        }
        let mut shape = x.shape().to_vec();
        shape[axis] = len;
        let geo = [outer, len, inner];
        let st = [(dim * inner) as i64, inner as i64, 1];
        let y = gather(
            OP,
            Family::Layout,
            kname!(x.dtype(), "gather"),
            x,
            &geo,
            start * inner,
            &st,
        )?;
        y.reshape(&shape)
    }

    fn pad_axis(&self, x: &Tensor, axis: usize, start: usize, total: usize) -> Result<Tensor> {
        const OP: &str = "pad_axis";
        check_axis(OP, x, axis)?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        if start.checked_add(len).is_none_or(|end| end > total) {
            return Err(Error::invalid(
                OP,
                format!(
                    "{len} entries at {start} do not fit an axis of size {total} (shape {:?}, axis {axis})",
                    x.shape()
                ),
            ));
        }
        let dev = device_any(OP, &[x])?;
        let mut shape = x.shape().to_vec();
        shape[axis] = total;
        let mut y = zeros_as(&dev, x.dtype(), outer * total * inner, OP)?;
        let part = x.reshape(&[outer, len, inner])?;
        let st = [(total * inner) as i64, inner as i64, 1];
        scatter_into(&dev, OP, &part, &mut y, start * inner, &st)?;
        Ok(wrap_storage(&dev, y, &shape))
    }

    fn embedding(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        const OP: &str = "embedding";
        if table.rank() != 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "expected a (vocab, dim) table, got shape {:?}",
                    table.shape()
                ),
            ));
        }
        let (vocab, d) = (table.shape()[0], table.shape()[1]);
        if d > 0 {
            if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
                return Err(Error::invalid(
                    OP,
                    format!("id {id} at position {pos} is out of range for vocab size {vocab}"),
                ));
            }
        }
        let dev = device_any(OP, &[table])?;
        let (_, ts) = storage(OP, table)?;
        let n = ids.len() * d;
        let mut y = alloc_as(&dev, table.dtype(), n, OP)?;
        if n > 0 {
            let idb = upload_ids(&dev, OP, ids)?;
            let name = kname!(table.dtype(), "embedding");
            let f = dev.function(Family::Layout, name)?;
            let (ni, dd) = (i64_of(ids.len()), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(ts).arg(&idb).arg(&mut y).arg(&ni).arg(&dd);
            launch(a, name, cfg_elems(n))?;
        }
        Ok(wrap_storage(&dev, y, &[ids.len(), d]))
    }

    fn embedding_bwd(&self, dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
        const OP: &str = "embedding_bwd";
        if dy.rank() != 2 || dy.shape()[0] != ids.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: dy.shape().to_vec(),
                rhs: vec![ids.len(), dy.shape().last().copied().unwrap_or(0)],
            });
        }
        if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::invalid(
                OP,
                format!("id {id} at position {pos} is out of range for vocab size {vocab}"),
            ));
        }
        let d = dy.shape()[1];
        if dy.dtype() == DType::BF16 {
            return embedding_bwd_sorted(dy, ids, vocab, d);
        }
        let dev = device_of(OP, &[dy])?;
        let (_, gs) = buf(OP, dy)?;
        let mut g = zeros_f32(&dev, vocab * d, OP)?;
        let n = ids.len() * d;
        if n > 0 {
            let idb = upload_ids(&dev, OP, ids)?;
            let f = dev.function(Family::Layout, "embedding_bwd_f32")?;
            let (ni, dd) = (i64_of(ids.len()), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(gs).arg(&idb).arg(&mut g).arg(&ni).arg(&dd);
            launch(a, "embedding_bwd_f32", cfg_elems(n))?;
        }
        Ok(wrap(&dev, g, &[vocab, d]))
    }
}

/// Embedding backward for bf16 `dy` (n_ids, d): positions bucketed by id on the host (stable
/// counting sort, shared with the CPU), then one thread per gradient element sums its bucket
/// in position order in f32 and rounds once. Deterministic and equal to the CPU bit for bit
/// (the f32 path's atomicAdd would make the bf16 rounding order-dependent).
fn embedding_bwd_sorted(dy: &Tensor, ids: &[u32], vocab: usize, d: usize) -> Result<Tensor> {
    const OP: &str = "embedding_bwd";
    let dev = device_any(OP, &[dy])?;
    let (_, gs) = storage(OP, dy)?;
    let n = crate::numel_of(OP, &[vocab, d])?;
    let mut g = alloc_as(&dev, dy.dtype(), n, OP)?;
    if n > 0 {
        let (start, order) = crate::cpu::id_buckets(ids, vocab);
        let as_u32 = |v: Vec<usize>| {
            v.into_iter()
                .map(|p| {
                    u32::try_from(p).map_err(|_| {
                        Error::invalid(OP, format!("{} ids exceed the u32 range", ids.len()))
                    })
                })
                .collect::<Result<Vec<u32>>>()
        };
        let sb = upload_ids(&dev, OP, &as_u32(start)?)?;
        let ob = upload_ids(&dev, OP, &as_u32(order)?)?;
        let name = "embedding_bwd_sorted_bf16";
        let f = dev.function(Family::Layout, name)?;
        let (vv, dd) = (i64_of(vocab), i64_of(d));
        let mut a = dev.stream.launch_builder(&f);
        a.arg(gs).arg(&sb).arg(&ob).arg(&mut g).arg(&vv).arg(&dd);
        launch(a, name, cfg_elems(n))?;
    }
    Ok(wrap_storage(&dev, g, &[vocab, d]))
}

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
    let f = dev.function(Family::Norm, name)?;
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
    let f = dev.function(Family::Norm, name)?;
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

impl NormOps for CudaBackend {
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, NormStats)> {
        const OP: &str = "layer_norm";
        let d = gamma.numel();
        let (rows, stat_shape) = last_axis_rows(OP, x, d)?;
        if beta.numel() != d {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: gamma.shape().to_vec(),
                rhs: beta.shape().to_vec(),
            });
        }
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
            let f = dev.function(Family::Norm, name)?;
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

    fn layer_norm_bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        stats: &NormStats,
        dy: &Tensor,
    ) -> Result<NormGrads> {
        const OP: &str = "layer_norm_bwd";
        let d = gamma.numel();
        let (rows, _) = last_axis_rows(OP, x, d)?;
        same_shape(OP, x, dy)?;
        per_row(OP, &stats.mean, rows)?;
        per_row(OP, &stats.rstd, rows)?;
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
            let f = dev.function(Family::Norm, name)?;
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

    fn batch_norm_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        momentum: f64,
        eps: f64,
    ) -> Result<(Tensor, NormStats)> {
        batchnorm::train(
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            momentum,
            eps,
            None,
        )
    }

    fn batch_norm_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        batchnorm::eval(x, gamma, beta, running_mean, running_var, eps)
    }

    fn batch_norm_bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        stats: &NormStats,
        dy: &Tensor,
    ) -> Result<NormGrads> {
        batchnorm::backward(x, gamma, stats, dy, None)
    }

    fn batch_norm_train_act(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        momentum: f64,
        eps: f64,
        act: Unary,
    ) -> Result<(Tensor, NormStats)> {
        let (rm, rv) = (running_mean, running_var);
        batchnorm::train(x, gamma, beta, rm, rv, momentum, eps, Some(act))
    }

    fn batch_norm_act_bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        stats: &NormStats,
        dy: &Tensor,
        act: Unary,
    ) -> Result<NormGrads> {
        batchnorm::backward(x, gamma, stats, dy, Some((act, beta)))
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
            let f = dev.function(Family::Norm, "l2_normalize_f32")?;
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
        same_shape(OP, y, dy)?;
        per_row(OP, norms, rows)?;
        let dev = device_of(OP, &[y, norms, dy])?;
        let ((_, ys), (_, ns), (_, gs)) = (buf(OP, y)?, buf(OP, norms)?, buf(OP, dy)?);
        let mut dx = alloc_f32(&dev, y.numel(), OP)?;
        if rows > 0 {
            let f = dev.function(Family::Norm, "l2_normalize_bwd_f32")?;
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

/// Launches a row kernel `name(a, b, out, rows, k)` of the softmax family.
fn softmax_rows_2(op: &'static str, name: &'static str, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (rows, k) = rows_cols(op, y)?;
    same_shape(op, y, dy)?;
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
        let per_mask_row = match mask {
            Some(m) => {
                let b = m.numel().checked_div(k).unwrap_or(0);
                if m.numel() != b * k || b == 0 || rows % b != 0 {
                    return Err(Error::ShapeMismatch {
                        op: OP,
                        lhs: x.shape().to_vec(),
                        rhs: m.shape().to_vec(),
                    });
                }
                rows / b
            }
            None => 1,
        };
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
        check_targets(OP, rows, k, targets)?;
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
        check_targets(OP, rows, k, targets)?;
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

impl ConvOps for CudaBackend {
    fn conv2d(&self, x: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        conv::forward(x, w, spec)
    }

    fn conv2d_bwd_data(&self, dy: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        conv::backward_data(dy, w, spec)
    }

    fn conv2d_bwd_weight(&self, x: &Tensor, dy: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        conv::backward_weight(x, dy, spec)
    }
}

impl OptimOps for CudaBackend {
    fn adam_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamStep,
    ) -> Result<()> {
        optim::step(param, grad, m, v, hp)
    }

    fn adam_step_multi(
        &self,
        params: &mut [Tensor],
        grads: &[Tensor],
        m: &mut [Tensor],
        v: &mut [Tensor],
        hp: &AdamStep,
    ) -> Result<()> {
        optim::step_multi(params, grads, m, v, hp)
    }
}
