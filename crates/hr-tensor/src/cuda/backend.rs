//! The CUDA backend's shared pieces: the [`CudaBackend`] type (its op families live in the
//! sibling modules `cuda/<family>.rs`, each next to its `kernels/<family>.cu`) and the buffer
//! helpers every family uses. Semantics match the CPU reference in `crate::cpu`; the
//! device-parametrised family tests in `tests/<family>.rs` check each op on a GPU.

use std::sync::Arc;

use cudarc::cublas::{sys as blas_sys, GemmConfig};
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::cast::{alloc_as, device_any, kname, storage, wrap_storage};
use super::gemm_bf16;
use super::kernels::Family;
use super::launch::{cfg_elems, cuda_err, launch, row_major, Strided};
use super::{CudaDevice, CudaStorage};
use crate::backend::{Binary, MatmulSpec, Unary};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// The CUDA backend (stateless: devices, modules and cuBLAS handles live in the registry of
/// [`crate::cuda`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CudaBackend;

impl crate::backend::Backend for CudaBackend {}

/// The f32 device buffer of `t` and its device, or an error naming `op`.
pub(super) fn buf<'a>(op: &'static str, t: &'a Tensor) -> Result<(usize, &'a CudaSlice<f32>)> {
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
pub(super) fn buf_mut<'a>(op: &'static str, t: &'a mut Tensor) -> Result<&'a mut CudaSlice<f32>> {
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
pub(super) fn device_of(op: &'static str, ts: &[&Tensor]) -> Result<Arc<CudaDevice>> {
    // f32 operands only (a bf16 one is `UnsupportedDType` naming `op`).
    for t in ts {
        buf(op, t)?;
    }
    device_any(op, ts)
}

/// Wraps a device buffer as a tensor of `shape` on `dev`.
pub(super) fn wrap(dev: &CudaDevice, data: CudaSlice<f32>, shape: &[usize]) -> Tensor {
    wrap_storage(dev, CudaStorage::F32(data), shape)
}

/// Uploads host ids (u32) for a gather/scatter kernel.
pub(super) fn upload_ids(
    dev: &CudaDevice,
    op: &'static str,
    ids: &[u32],
) -> Result<CudaSlice<u32>> {
    if ids.is_empty() {
        // SAFETY: never read: the kernels that take ids are either not launched for zero ids
        // or (embedding_bwd_sorted_bf16) index them only through bucket starts, all zero then.
        return unsafe { dev.stream.alloc::<u32>(1) }.map_err(|e| cuda_err(op, e));
    }
    dev.stream.clone_htod(ids).map_err(|e| cuda_err(op, e))
}

pub(super) fn unary_code(kind: Unary) -> i32 {
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

pub(super) fn binary_code(kind: Binary) -> i32 {
    match kind {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
    }
}

/// Strides of `in_shape` broadcast to `out_shape` (0 where the input has size 1).
pub(super) fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> Vec<i64> {
    row_major(in_shape)
        .into_iter()
        .zip(in_shape.iter().zip(out_shape))
        .map(|(s, (&i, &o))| if i == o { s } else { 0 })
        .collect()
}

/// Size as the `long long` the kernels take.
pub(super) fn i64_of(n: usize) -> i64 {
    n as i64
}

/// Gathers `x` (f32 or bf16) through a strided view into a new tensor of `shape` (broadcast,
/// permute, slice) with kernel `name` (the one of `x`'s dtype).
pub(super) fn gather(
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
pub(super) fn scatter_into(
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

pub(super) fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(op, format!("{what} = {v} exceeds cuBLAS's i32 range")))
}

/// The column-major cuBLAS config of the row-major product `spec` (C^T = op(B)^T op(A)^T: the
/// operands swap places).
pub(super) fn col_major(op: &'static str, spec: &MatmulSpec) -> Result<GemmConfig<f32>> {
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
pub(super) fn check_gemm_operands(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    spec: &MatmulSpec,
) -> Result<()> {
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
