//! CUDA runtime: contexts opened through cudarc with dynamic loading, so the crate builds and
//! its CPU tests run on machines without a CUDA toolkit or driver.
//!
//! cudarc panics when the driver library is missing, so every entry point checks
//! `is_culib_present` first and runs the context creation under `catch_unwind`.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};

use crate::{Error, Result};

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
}

/// Storage of a tensor on a GPU.
#[derive(Debug, Clone)]
pub enum CudaStorage {
    /// f32 elements.
    F32(CudaSlice<f32>),
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
        let name = ctx.name().map_err(cuda_err)?;
        let compute_capability = ctx.compute_capability().map_err(cuda_err)?;
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            name,
            compute_capability,
        })
    }));
    opened.unwrap_or_else(|_| Err(unavailable(ordinal, "the CUDA driver panicked on initialisation")))
}

/// Copies host f32 data to a new buffer on `ordinal`.
pub fn upload_f32(ordinal: usize, data: &[f32]) -> Result<CudaStorage> {
    let dev = context(ordinal)?;
    let slice = dev.stream.clone_htod(data).map_err(|e| Error::Cuda {
        op: "upload",
        msg: e.to_string(),
    })?;
    Ok(CudaStorage::F32(slice))
}

/// Copies a device buffer back to the host.
pub fn download_f32(ordinal: usize, storage: &CudaStorage) -> Result<Vec<f32>> {
    let dev = context(ordinal)?;
    let CudaStorage::F32(slice) = storage;
    dev.stream.clone_dtoh(slice).map_err(|e| Error::Cuda {
        op: "download",
        msg: e.to_string(),
    })
}
