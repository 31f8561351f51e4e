//! bf16 GEMMs under autocast: both operands are cast to bf16 (the backend's `cast`, i.e.
//! `cast_f32_bf16` in `kernels/elementwise.cu`: round to nearest even like the CPU's
//! `round_bf16`), then one `cublasGemmStridedBatchedEx` with bf16 inputs, f32 output and f32
//! accumulation (`CUBLAS_COMPUTE_32F`: tensor cores on sm_80+). CPU twin: the autocast branch of
//! `crate::cpu::gemm` (same rounding, then an f32 GEMM). Inside a [`share_cast`] scope one
//! operand's bf16 copy is made once and reused by every GEMM of the scope.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas_result, sys as blas_sys, CudaBlas, GemmConfig};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut};

use super::to_i32;
use crate::backend::MatmulSpec;
use crate::cuda::{profile, CudaDevice, CudaStorage};
use crate::{DType, Error, Result};

thread_local! {
    /// The f32 buffer whose bf16 copy the GEMMs of the running [`share_cast`] scope share, and
    /// that copy once made.
    static SHARED: RefCell<Option<SharedCast>> = const { RefCell::new(None) };
}

/// One shared cast: the f32 buffer (device address and length) and its bf16 copy.
struct SharedCast {
    ptr: u64,
    len: usize,
    copy: Option<Arc<CudaSlice<u16>>>,
}

/// Runs `f` with the bf16 cast of the f32 buffer `t` made at most once: every GEMM of `f`
/// that casts `t` (the same device buffer; `t` is borrowed, so it cannot change meanwhile)
/// reuses the first copy. The two backward GEMMs of a pointwise convolution both read dy.
pub(super) fn share_cast<R>(dev: &CudaDevice, t: &CudaSlice<f32>, f: impl FnOnce() -> R) -> R {
    /// Restores the enclosing scope's entry, also when `f` unwinds (a stale entry could
    /// match a later buffer at the same address).
    struct Restore(Option<SharedCast>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SHARED.with(|s| s.replace(prev));
        }
    }
    let (ptr, _sync) = t.device_ptr(&dev.stream);
    let entry = SharedCast {
        ptr,
        len: t.len(),
        copy: None,
    };
    let _restore = Restore(SHARED.with(|s| s.replace(Some(entry))));
    f()
}

/// The f32 operand `x` cast to bf16 (through [`super::cast`]); the copy of the current
/// [`share_cast`] scope when `x` is its buffer.
fn to_bf16(dev: &CudaDevice, x: &CudaStorage, op: &'static str) -> Result<Arc<CudaSlice<u16>>> {
    let CudaStorage::F32(s) = x else {
        return Err(Error::invalid(op, "bf16 GEMM operands must be f32"));
    };
    // Outside a scope (most casts) the buffer's address is not needed.
    let hit = SHARED.with(|c| match c.borrow().as_ref() {
        Some(sc) if (sc.ptr, sc.len) == (s.device_ptr(&dev.stream).0, s.len()) => {
            Some(sc.copy.clone())
        }
        _ => None,
    });
    if let Some(Some(copy)) = hit {
        return Ok(copy);
    }
    let copy = match super::cast(dev.ordinal, x, s.len(), DType::BF16)? {
        CudaStorage::BF16(b) => Arc::new(b),
        CudaStorage::F32(_) => return Err(Error::invalid(op, "cast to bf16 returned f32 storage")),
    };
    if hit.is_some() {
        SHARED.with(|c| {
            if let Some(sc) = c.borrow_mut().as_mut() {
                sc.copy = Some(copy.clone());
            }
        });
    }
    Ok(copy)
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
pub(super) type Bf16Pair = (Arc<CudaSlice<u16>>, Arc<CudaSlice<u16>>);

/// Both f32 operands cast to bf16 (for several GEMMs on slices of them).
pub(super) fn cast_pair(
    dev: &CudaDevice,
    [a, b]: [&CudaStorage; 2],
    op: &'static str,
) -> Result<Bf16Pair> {
    Ok((to_bf16(dev, a, op)?, to_bf16(dev, b, op)?))
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
        gemm_ex(dev, &blas, g, operands, c, batch).map_err(|e| Error::Cuda {
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
/// `a` and `b`, f32 `c`, f32 accumulation (tensor cores on sm_80+).
fn gemm_ex(
    dev: &CudaDevice,
    blas: &CudaBlas,
    g: &GemmConfig<f32>,
    [a, b]: [&CudaView<'_, u16>; 2],
    c: &mut CudaSlice<f32>,
    batch: &Batch,
) -> std::result::Result<(), blas_result::CublasError> {
    let (pa, _ra) = a.device_ptr(&dev.stream);
    let (pb, _rb) = b.device_ptr(&dev.stream);
    let (pc, _rc) = c.device_ptr_mut(&dev.stream);
    let bf = blas_sys::cudaDataType::CUDA_R_16BF;
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
            blas_sys::cudaDataType::CUDA_R_32F,
            g.ldc,
            batch.stride_c,
            batch.count,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
}
