//! CUDA runtime: contexts opened through cudarc with dynamic loading, so the crate builds and
//! its CPU tests run on machines without a CUDA toolkit or driver.
//!
//! cudarc panics when the driver library is missing, so every entry point checks
//! `is_culib_present` first (driver, NVRTC, cuBLAS) and runs initialisation under
//! `catch_unwind`: a missing library is [`Error::CudaUnavailable`], never a panic.
//!
//! - `CudaBackend`: every op family, one module per family (`<family>.rs`, launching the
//!   kernels of `kernels/<family>.cu`; shared buffer helpers in backend.rs); GEMMs through cuBLAS
//!   (plain FP32, or bf16 operands under [`crate::autocast`]), the rest through the kernels of
//!   `kernels/` (fused attention and contrastive loss included). bf16 storage
//!   ([`CudaStorage::BF16`], f32 compute, each result rounded once) for unary, unary_bwd,
//!   binary, affine, axpy, dropout, softmax, softmax_bwd, layer_norm, layer_norm_bwd and
//!   sum_to, and the data movement of broadcast_to, permute, concat, slice, pad_axis and
//!   embedding (bit-exact copies) plus embedding_bwd (deterministic bucketed f32 sums)
//!   (cast.rs); other ops (log_softmax and its backward, nll_loss, l2_normalize,
//!   matmul on bf16 tensors, conv, batch norm, adam, attention, contrastive loss,
//!   frame_signal) reject it with [`Error::UnsupportedDType`].
//! - kernels.rs: NVRTC compilation at first use for the device's `sm_XY`, CUBIN cache on disk
//!   ([`kernel_cache_dir`], `HR_KERNEL_CACHE`), [`precompile_all`].
//! - launch.rs: output allocation from the stream-ordered pool (NaN-poisoned on request,
//!   [`set_poison_outputs`]), launch errors naming kernel, grid and block, [`DeviceTimer`].
//! - profile.rs: [`OpProfile`], GPU time per kernel / cuBLAS call / upload of a region.
//! - transfer.rs and copy_lane.rs: host <-> device copies behind [`crate::backend::TransferOps`]
//!   (uploads overlapping compute on a copy stream); [`raw`]: a tensor's cudarc buffer, for
//!   collectives.

mod attention;
mod audio;
mod backend;
mod batch_norm;
mod cast;
mod contrastive;
mod conv;
mod copy_lane;
mod elementwise;
mod gemm;
mod gemm_bf16;
mod kernels;
mod launch;
mod layer_norm;
mod layout;
mod optim;
mod plane;
mod profile;
pub mod raw;
mod reduce;
mod softmax;
mod transfer;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, PinnedHostSlice};

use crate::{Error, Result};

pub(crate) use backend::CudaBackend;
pub(crate) use cast::cast;
pub use copy_lane::Pending;
pub use kernels::{
    compile_options, compile_source, kernel_cache_dir, nvrtc_present, nvrtc_version,
    precompile_all, set_kernel_cache_dir, Family, ALL_FAMILIES, COMMON_CUH,
};
pub use launch::{
    poison_outputs, set_poison_outputs, set_stride2_tiles, stride2_tiles, synchronize, DeviceTimer,
};
pub use profile::{OpProfile, ProfileReport, ProfileRow};

/// An opened GPU: its context and the stream all ops of this process run on.
#[derive(Debug)]
pub struct CudaDevice {
    /// Device ordinal.
    pub ordinal: usize,
    /// The primary context of the device.
    pub ctx: Arc<CudaContext>,
    /// The default stream.
    pub stream: Arc<CudaStream>,
    /// Device name as reported by the driver.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Loaded kernel modules and functions.
    kernels: kernels::ModuleCache,
    /// The cuBLAS handle, created on first GEMM.
    blas: Mutex<Option<Arc<CudaBlas>>>,
    /// Page-locked staging buffers of large uploads, by length (training batches repeat the
    /// same few sizes; see [`upload_f32`]).
    staging: Mutex<HashMap<usize, PinnedHostSlice<f32>>>,
    /// The copy stream of [`upload_f32_ahead`] (created on first use).
    copy_lane: Mutex<Option<copy_lane::CopyLane>>,
}

/// Storage of a tensor on a GPU.
#[derive(Debug, Clone)]
pub enum CudaStorage {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// bf16 elements (the raw bits of `half::bf16`, the `bf16` struct of `kernels/common.cuh`).
    BF16(CudaSlice<u16>),
}

impl CudaStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> crate::DType {
        match self {
            CudaStorage::F32(_) => crate::DType::F32,
            CudaStorage::BF16(_) => crate::DType::BF16,
        }
    }
}

// SAFETY: pushes the device pointer of the inner slice through cudarc's own `CudaSlice`
// implementations (same stream-synchronisation bookkeeping); kernels take `float *` or
// `bf16 *` for it, picked by the caller from the dtype.
unsafe impl<'a, 'b: 'a> cudarc::driver::PushKernelArg<&'b CudaStorage>
    for cudarc::driver::LaunchArgs<'a>
{
    fn arg(&mut self, arg: &'b CudaStorage) -> &mut Self {
        match arg {
            CudaStorage::F32(s) => self.arg(s),
            CudaStorage::BF16(s) => self.arg(s),
        }
    }
}

// SAFETY: as for `&CudaStorage`, through cudarc's `&mut CudaSlice` implementations.
unsafe impl<'a, 'b: 'a> cudarc::driver::PushKernelArg<&'b mut CudaStorage>
    for cudarc::driver::LaunchArgs<'a>
{
    fn arg(&mut self, arg: &'b mut CudaStorage) -> &mut Self {
        match arg {
            CudaStorage::F32(s) => self.arg(s),
            CudaStorage::BF16(s) => self.arg(s),
        }
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<CudaDevice>>> {
    static REG: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

fn unavailable(ordinal: usize, reason: impl Into<String>) -> Error {
    Error::CudaUnavailable {
        ordinal,
        reason: reason.into(),
    }
}

/// True when the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its candidate names.
    catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// Returns the opened device `ordinal`, opening it on first use.
pub fn context(ordinal: usize) -> Result<Arc<CudaDevice>> {
    let mut reg = registry()
        .lock()
        .map_err(|_| unavailable(ordinal, "CUDA device registry poisoned by an earlier panic"))?;
    if let Some(dev) = reg.get(&ordinal) {
        return Ok(dev.clone());
    }
    let dev = Arc::new(open(ordinal)?);
    reg.insert(ordinal, dev.clone());
    Ok(dev)
}

fn open(ordinal: usize) -> Result<CudaDevice> {
    if !driver_present() {
        return Err(unavailable(
            ordinal,
            "no CUDA driver library (libcuda.so) found; install the NVIDIA driver or use --device cpu",
        ));
    }
    let opened = catch_unwind(AssertUnwindSafe(|| -> Result<CudaDevice> {
        let cuda_err = |e: cudarc::driver::DriverError| unavailable(ordinal, e.to_string());
        let count = CudaContext::device_count().map_err(cuda_err)?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(
                ordinal,
                format!("this machine has {count} CUDA device(s)"),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        // All work on a device is ordered by its one compute stream (hr-dist's NCCL side
        // stream is ordered with it by explicit events and never frees or writes a buffer the
        // compute stream is using), so cudarc's per-buffer event tracking would only create
        // and destroy two events per allocation.
        // SAFETY: see above: no buffer is shared between streams without explicit ordering.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(cuda_err)?;
        let compute_capability = ctx.compute_capability().map_err(cuda_err)?;
        let stream = ctx.default_stream();
        keep_pool_memory(&ctx);
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            name,
            compute_capability,
            kernels: kernels::ModuleCache::default(),
            blas: Mutex::new(None),
            staging: Mutex::new(HashMap::new()),
            copy_lane: Mutex::new(None),
        })
    }));
    opened.unwrap_or_else(|_| {
        Err(unavailable(
            ordinal,
            "the CUDA driver panicked on initialisation",
        ))
    })
}

/// True when cuBLAS can be loaded on this machine.
pub fn cublas_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false)
}

impl CudaDevice {
    /// The cuBLAS handle of this device (created on first use, bound to the device's stream).
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut slot = self.blas.lock().map_err(|_| Error::Cuda {
            op: "cublas",
            msg: "cuBLAS handle poisoned by an earlier panic".into(),
        })?;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        if !cublas_present() {
            return Err(unavailable(
                self.ordinal,
                "cuBLAS (libcublas.so) not found: put the CUDA 13 cuBLAS library on \
                 LD_LIBRARY_PATH (e.g. the nvidia-cublas pip wheel's lib folder)",
            ));
        }
        let stream = self.stream.clone();
        let made = catch_unwind(AssertUnwindSafe(|| -> Result<CudaBlas> {
            let blas = CudaBlas::new(stream).map_err(|e| Error::Cuda {
                op: "cublas init",
                msg: format!("{e:?}"),
            })?;
            // Plain FP32 GEMMs (no TF32), so results match the CPU to f32 rounding.
            // SAFETY: the handle is live; setting the math mode has no other precondition.
            unsafe {
                cudarc::cublas::sys::cublasSetMathMode(
                    *blas.handle(),
                    cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
                )
            }
            .result()
            .map_err(|e| Error::Cuda {
                op: "cublas init",
                msg: format!("cublasSetMathMode: {e:?}"),
            })?;
            Ok(blas)
        }))
        .unwrap_or_else(|_| {
            Err(unavailable(
                self.ordinal,
                "cuBLAS panicked on initialisation",
            ))
        })?;
        let b = Arc::new(made);
        *slot = Some(b.clone());
        Ok(b)
    }
}

/// Makes the device's default stream-ordered memory pool keep freed memory instead of
/// returning it to the driver at every synchronisation (its default release threshold is 0),
/// so steady-state allocations (`cuMemAllocAsync`) are served from the pool: a caching
/// allocator without a second allocator. Best effort: on failure allocations still work.
fn keep_pool_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` and `threshold` are valid out/in pointers for the duration of the calls;
    // the device handle comes from a live context.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) == sys::CUresult::CUDA_SUCCESS
        {
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

/// Memory use of one device, in bytes.
///
/// The `pool_*` fields describe the device's default stream-ordered memory pool, which serves
/// every tensor allocation of this crate (the analogue of PyTorch's caching allocator):
/// `pool_used_*` counts live allocations (like `torch.cuda.memory_allocated`),
/// `pool_reserved_*` what the pool holds from the driver (like `memory_reserved`). `device_*`
/// come from `cuMemGetInfo` and cover the whole device (context, cuBLAS workspaces, other
/// processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes of live pool allocations now.
    pub pool_used: u64,
    /// High-water mark of `pool_used` since the context opened or the last
    /// [`reset_peak_memory`].
    pub pool_used_high: u64,
    /// Bytes the pool holds from the driver now.
    pub pool_reserved: u64,
    /// High-water mark of `pool_reserved`.
    pub pool_reserved_high: u64,
    /// Free device memory.
    pub device_free: u64,
    /// Total device memory.
    pub device_total: u64,
}

/// The default memory pool of `dev`.
fn default_pool(dev: &CudaDevice) -> Result<cudarc::driver::sys::CUmemoryPool> {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out pointer; the device handle comes from a live context.
    let rc = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, dev.ctx.cu_device()) };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Cuda {
            op: "memory_stats",
            msg: format!("cuDeviceGetDefaultMemPool: {rc:?}"),
        });
    }
    Ok(pool)
}

/// Memory statistics of device `ordinal` (see [`MemoryStats`]).
pub fn memory_stats(ordinal: usize) -> Result<MemoryStats> {
    use cudarc::driver::sys::{self, CUmemPool_attribute as A};
    let dev = context(ordinal)?;
    let pool = default_pool(&dev)?;
    let attr = |a: A| -> Result<u64> {
        let mut v: u64 = 0;
        // SAFETY: the pool is live and these attributes are 64-bit values.
        let rc = unsafe {
            sys::cuMemPoolGetAttribute(pool, a, &mut v as *mut u64 as *mut std::ffi::c_void)
        };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(Error::Cuda {
                op: "memory_stats",
                msg: format!("cuMemPoolGetAttribute({a:?}): {rc:?}"),
            });
        }
        Ok(v)
    };
    let (free, total) = dev.ctx.mem_get_info().map_err(|e| Error::Cuda {
        op: "memory_stats",
        msg: format!("cuMemGetInfo: {e}"),
    })?;
    Ok(MemoryStats {
        pool_used: attr(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
        pool_used_high: attr(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        pool_reserved: attr(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
        pool_reserved_high: attr(A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        device_free: free as u64,
        device_total: total as u64,
    })
}

/// Resets the pool's high-water marks of device `ordinal` to the current use (call after a
/// synchronisation, e.g. after warm-up, to measure the peak of what follows).
pub fn reset_peak_memory(ordinal: usize) -> Result<()> {
    use cudarc::driver::sys::{self, CUmemPool_attribute as A};
    let dev = context(ordinal)?;
    let pool = default_pool(&dev)?;
    for a in [
        A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
    ] {
        let mut zero: u64 = 0;
        // SAFETY: the pool is live; setting a high-water attribute to 0 resets it.
        let rc = unsafe {
            sys::cuMemPoolSetAttribute(pool, a, &mut zero as *mut u64 as *mut std::ffi::c_void)
        };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(Error::Cuda {
                op: "reset_peak_memory",
                msg: format!("cuMemPoolSetAttribute({a:?}): {rc:?}"),
            });
        }
    }
    Ok(())
}
