//! bf16 GEMMs under autocast: both operands are cast to bf16 (the backend's `cast`, i.e.
//! `cast_f32_bf16` in `kernels/elementwise.cu`: round to nearest even like the CPU's
//! `round_bf16`), then one `cublasGemmStridedBatchedEx` with bf16 inputs, f32 output and f32
//! accumulation (`CUBLAS_COMPUTE_32F`: tensor cores on sm_80+). CPU twin: the autocast branch of
//! `crate::cpu::gemm` (same rounding, then an f32 GEMM).

use std::ffi::c_void;

use cudarc::cublas::{result as blas_result, sys as blas_sys, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::to_i32;
use crate::backend::MatmulSpec;
use crate::cuda::{CudaDevice, CudaStorage};
use crate::{DType, Error, Result};

/// The f32 operand `x` cast to a new bf16 buffer (through [`super::cast`]).
fn to_bf16(dev: &CudaDevice, x: &CudaStorage, op: &'static str) -> Result<CudaSlice<u16>> {
    let n = match x {
        CudaStorage::F32(s) => s.len(),
        CudaStorage::BF16(_) => return Err(Error::invalid(op, "bf16 GEMM operands must be f32")),
    };
    match super::cast(dev.ordinal, x, n, DType::BF16)? {
        CudaStorage::BF16(s) => Ok(s),
        CudaStorage::F32(_) => Err(Error::invalid(op, "cast to bf16 returned f32 storage")),
    }
}

/// `c = gemm(a, b)` of [`super::CudaBackend::matmul`] with bf16 operands; `g` is the
/// column-major config (operands already swapped), `a`/`b` the row-major operands.
pub(super) fn matmul(
    dev: &CudaDevice,
    [a, b]: [&CudaStorage; 2],
    c: &mut CudaSlice<f32>,
    spec: &MatmulSpec,
    g: &GemmConfig<f32>,
) -> Result<()> {
    const OP: &str = "matmul";
    let (a16, b16) = (to_bf16(dev, a, OP)?, to_bf16(dev, b, OP)?);
    let blas = dev.blas()?;
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let stride = |batched: bool, len: usize| if batched { len as i64 } else { 0 };
    let (pa, _ra) = a16.device_ptr(&dev.stream);
    let (pb, _rb) = b16.device_ptr(&dev.stream);
    let (pc, _rc) = c.device_ptr_mut(&dev.stream);
    let bf = blas_sys::cudaDataType::CUDA_R_16BF;
    // SAFETY: the handle is live and bound to `dev.stream`; the buffers hold the elements
    // the config addresses (checked by the caller: same geometry as the f32 path); alpha and
    // beta are host f32 scalars (host pointer mode) that outlive the call.
    unsafe {
        blas_result::gemm_strided_batched_ex(
            *blas.handle(),
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            (&g.alpha) as *const f32 as *const c_void,
            pb as *const c_void,
            bf,
            g.lda,
            stride(spec.b_batched, k * n),
            pa as *const c_void,
            bf,
            g.ldb,
            stride(spec.a_batched, m * k),
            (&g.beta) as *const f32 as *const c_void,
            pc as *mut c_void,
            blas_sys::cudaDataType::CUDA_R_32F,
            g.ldc,
            (m * n) as i64,
            to_i32(OP, "batch", spec.batch)?,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| Error::Cuda {
        op: OP,
        msg: format!(
            "cublasGemmStridedBatchedEx bf16 (batch {}, m {m}, n {n}, k {k}) failed: {e:?}",
            spec.batch
        ),
    })
}
