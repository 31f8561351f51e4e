//! bf16 GEMMs under autocast and for bf16 activations: f32 operands are cast to bf16 (the
//! backend's `cast`, i.e. `cast_f32_bf16` in `kernels/elementwise.cu`: round to nearest even
//! like the CPU's `round_bf16`; bf16 operands are used as they are), then one
//! `cublasGemmStridedBatchedEx` with bf16 inputs, an f32 output (a bf16 one for the next bf16
//! activation) and f32 accumulation (`CUBLAS_COMPUTE_32F`: tensor cores on sm_80+). CPU twin: the autocast branch of
//! `crate::cpu::gemm` (same rounding, then an f32 GEMM). An operand's bf16 copy is cached with
//! its storage ([`Tensor::bf16_copy`]): a weight is cast once per optimizer step (forward and
//! backward), a saved input once (forward and weight gradient), an upstream gradient once for
//! both of its backward GEMMs.

use std::ffi::c_void;

use cudarc::cublas::{result as blas_result, sys as blas_sys, CudaBlas, GemmConfig};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut};

use super::backend::to_i32;
use crate::backend::MatmulSpec;
use crate::cuda::{profile, CudaDevice, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};

/// The bf16 device buffer of GEMM operand `x`: its own storage when it holds bf16 (a bf16
/// activation), else the bf16 copy of its f32 storage (made through [`super::cast`] on first
/// use, then cached with `x`'s storage).
fn to_bf16<'a>(x: &'a Tensor, op: &'static str) -> Result<&'a CudaSlice<u16>> {
    if let Storage::Cuda {
        data: CudaStorage::BF16(b),
        ..
    } = x.storage()
    {
        return Ok(b);
    }
    let copy = x.bf16_copy(|data| match data {
        Storage::Cuda {
            ordinal,
            data: f32 @ CudaStorage::F32(s),
        } => Ok(Storage::Cuda {
            ordinal: *ordinal,
            data: super::cast(*ordinal, f32, s.len(), DType::BF16)?,
        }),
        _ => Err(Error::invalid(
            op,
            "bf16 GEMM operands must be f32 or bf16 on a GPU",
        )),
    })?;
    match copy {
        Storage::Cuda {
            data: CudaStorage::BF16(b),
            ..
        } => Ok(b),
        _ => Err(Error::invalid(
            op,
            "the cached bf16 copy is not bf16 device storage",
        )),
    }
}

/// Elements of the operand buffer behind `x` (bf16 or f32 storage).
pub(super) fn operand_len(x: &Tensor) -> usize {
    match x.storage() {
        Storage::Cuda { data, .. } => match data {
            CudaStorage::F32(s) => s.len(),
            CudaStorage::BF16(s) => s.len(),
        },
        Storage::Cpu(_) => 0,
    }
}

/// The output of a bf16 GEMM: f32 (the default under autocast) or bf16 (the next bf16
/// activation: cuBLAS rounds the f32 accumulator once).
pub(super) enum Out<'a> {
    /// f32 output.
    F32(&'a mut CudaSlice<f32>),
    /// bf16 output.
    BF16(&'a mut CudaSlice<u16>),
}

/// `c = gemm(a, b)` of [`super::CudaBackend::matmul`] with bf16 operands (f32 ones through
/// their cached bf16 copy, bf16 ones as they are); `g` is the column-major config (operands
/// already swapped), `a`/`b` the row-major operands.
pub(super) fn matmul(
    dev: &CudaDevice,
    [a, b]: [&Tensor; 2],
    c: Out<'_>,
    spec: &MatmulSpec,
    g: &GemmConfig<f32>,
) -> Result<()> {
    const OP: &str = "matmul";
    let (a16, b16) = (to_bf16(a, OP)?, to_bf16(b, OP)?);
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let stride = |batched: bool, len: usize| if batched { len as i64 } else { 0 };
    let batch = Batch {
        count: to_i32(OP, "batch", spec.batch)?,
        stride_a: stride(spec.b_batched, k * n),
        stride_b: stride(spec.a_batched, m * k),
        stride_c: (m * n) as i64,
    };
    let blas = dev.blas()?;
    profile::around("cublas bf16 gemm", || {
        gemm_ex(dev, &blas, g, [&b16.as_view(), &a16.as_view()], c, &batch).map_err(|e| {
            Error::Cuda {
                op: OP,
                msg: format!(
                    "cublasGemmStridedBatchedEx bf16 (batch {}, m {m}, n {n}, k {k}) failed: {e:?}",
                    spec.batch
                ),
            }
        })
    })
}

/// Two operands cast to bf16.
pub(super) type Bf16Pair<'a> = (&'a CudaSlice<u16>, &'a CudaSlice<u16>);

/// Both operands as bf16 (f32 ones cast once, bf16 ones as they are), for several GEMMs on
/// slices of them.
pub(super) fn cast_pair<'a>([a, b]: [&'a Tensor; 2], op: &'static str) -> Result<Bf16Pair<'a>> {
    Ok((to_bf16(a, op)?, to_bf16(b, op)?))
}

/// One strided-batched bf16 GEMM on bf16 views (column-major config `g`, f32 output), with
/// the profiler's name and an error naming `op` and `what`.
pub(super) fn batched(
    dev: &CudaDevice,
    g: &GemmConfig<f32>,
    operands: [&CudaView<'_, u16>; 2],
    c: &mut CudaSlice<f32>,
    batch: &Batch,
    (op, what): (&'static str, &str),
) -> Result<()> {
    let blas = dev.blas()?;
    profile::around("cublas bf16 gemm", || {
        gemm_ex(dev, &blas, g, operands, Out::F32(c), batch).map_err(|e| Error::Cuda {
            op,
            msg: format!("cublasGemmStridedBatchedEx bf16 ({what}) failed: {e:?}"),
        })
    })
}

/// Batch count and element strides of a strided-batched GEMM (0 = a shared matrix).
pub(super) struct Batch {
    /// Number of products.
    pub count: i32,
    /// Elements between consecutive `a` matrices.
    pub stride_a: i64,
    /// Elements between consecutive `b` matrices.
    pub stride_b: i64,
    /// Elements between consecutive `c` matrices.
    pub stride_c: i64,
}

/// One `cublasGemmStridedBatchedEx`: column-major `c = alpha op(a) op(b) + beta c` with bf16
/// `a` and `b`, f32 or bf16 `c`, f32 accumulation (tensor cores on sm_80+).
fn gemm_ex(
    dev: &CudaDevice,
    blas: &CudaBlas,
    g: &GemmConfig<f32>,
    [a, b]: [&CudaView<'_, u16>; 2],
    c: Out<'_>,
    batch: &Batch,
) -> std::result::Result<(), blas_result::CublasError> {
    let (pa, _ra) = a.device_ptr(&dev.stream);
    let (pb, _rb) = b.device_ptr(&dev.stream);
    let bf = blas_sys::cudaDataType::CUDA_R_16BF;
    let ((pc, _rc), c_type) = match c {
        Out::F32(s) => (
            s.device_ptr_mut(&dev.stream),
            blas_sys::cudaDataType::CUDA_R_32F,
        ),
        Out::BF16(s) => (s.device_ptr_mut(&dev.stream), bf),
    };
    // SAFETY: the handle is live and bound to `dev.stream`; the buffers hold the elements
    // the config addresses (checked by the callers: same geometry as their f32 paths); alpha
    // and beta are host f32 scalars (host pointer mode) that outlive the call.
    unsafe {
        blas_result::gemm_strided_batched_ex(
            *blas.handle(),
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            (&g.alpha) as *const f32 as *const c_void,
            pa as *const c_void,
            bf,
            g.lda,
            batch.stride_a,
            pb as *const c_void,
            bf,
            g.ldb,
            batch.stride_b,
            (&g.beta) as *const f32 as *const c_void,
            pc as *mut c_void,
            c_type,
            g.ldc,
            batch.stride_c,
            batch.count,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
}
