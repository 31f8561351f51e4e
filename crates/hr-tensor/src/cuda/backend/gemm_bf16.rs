//! bf16 GEMMs under autocast: both operands are cast to bf16 (`cast_f32_bf16` in
//! `kernels/elementwise.cu`, round to nearest even like the CPU's `round_bf16`), then one
//! `cublasGemmStridedBatchedEx` with bf16 inputs, f32 output and f32 accumulation
//! (`CUBLAS_COMPUTE_32F`: tensor cores on sm_80+). CPU twin: the autocast branch of
//! `crate::cpu::gemm` (same rounding, then an f32 GEMM).

use std::ffi::c_void;

use cudarc::cublas::{result as blas_result, sys as blas_sys, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{i64_of, to_i32};
use crate::backend::MatmulSpec;
use crate::cuda::kernels::Family;
use crate::cuda::launch::{cfg_elems, cuda_err, launch};
use crate::cuda::CudaDevice;
use crate::{Error, Result};

/// `x` cast to bf16 (bits as u16) in a new device buffer.
fn to_bf16(dev: &CudaDevice, x: &CudaSlice<f32>, op: &'static str) -> Result<CudaSlice<u16>> {
    let n = x.len();
    // SAFETY: every element is written by the cast kernel before it is read.
    let mut y = unsafe { dev.stream.alloc::<u16>(n.max(1)) }.map_err(|e| cuda_err(op, e))?;
    let f = dev.function(Family::Elementwise, "cast_f32_bf16")?;
    let mut a = dev.stream.launch_builder(&f);
    let n64 = i64_of(n);
    a.arg(x).arg(&mut y).arg(&n64);
    launch(a, "cast_f32_bf16", cfg_elems(n))?;
    Ok(y)
}

/// `c = gemm(a, b)` of [`super::CudaBackend::matmul`] with bf16 operands; `g` is the
/// column-major config (operands already swapped), `a`/`b` the row-major operands.
pub(super) fn matmul(
    dev: &CudaDevice,
    [a, b]: [&CudaSlice<f32>; 2],
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
