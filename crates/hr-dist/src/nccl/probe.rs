//! Availability: the driver, `libnccl.so` and every NCCL symbol this module calls are checked
//! before the first call (cudarc with dynamic loading panics on a missing symbol).

use super::*;

/// Every NCCL entry point this module calls (checked before the first call).
const SYMBOLS: [&str; 10] = [
    "ncclGetVersion",
    "ncclGetUniqueId",
    "ncclCommInitRankConfig",
    "ncclCommGetAsyncError",
    "ncclCommAbort",
    "ncclGetErrorString",
    "ncclGetLastError",
    "ncclAllReduce",
    "ncclBroadcast",
    "ncclAllGather",
];

pub(super) fn unavailable(reason: impl Into<String>) -> DistError {
    DistError::BackendUnavailable {
        backend: BACKEND,
        reason: reason.into(),
    }
}

/// Checks that NCCL can run on CUDA device `ordinal`: the driver and the device open, and
/// `libnccl.so` loads with every symbol this backend uses. Never panics.
pub fn nccl_available(ordinal: usize) -> Result<()> {
    if !cuda::driver_present() {
        return Err(unavailable(
            "no CUDA device: the CUDA driver library (libcuda.so) is not present",
        ));
    }
    cuda::context(ordinal).map_err(|e| unavailable(format!("cuda:{ordinal}: {e}")))?;
    check_library()
}

/// Loads `libnccl.so` and resolves every symbol of [`SYMBOLS`] under `catch_unwind`.
pub(super) fn check_library() -> Result<()> {
    // SAFETY: only tries to dlopen the library by its candidate names.
    let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return Err(unavailable(
            "libnccl.so not found: put NCCL's library folder on LD_LIBRARY_PATH (pip wheels and \
             distro packages ship libnccl.so.2; add a libnccl.so symlink next to it)",
        ));
    }
    let missing = catch_unwind(|| {
        // SAFETY: the library is present (checked above); `get` only looks symbols up.
        let lib = unsafe { sys::culib() };
        SYMBOLS
            .iter()
            .filter(|s| unsafe { lib.get::<*const c_void>(s.as_bytes()) }.is_err())
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    })
    .map_err(|_| unavailable("loading libnccl.so panicked"))?;
    if !missing.is_empty() {
        return Err(unavailable(format!(
            "libnccl.so lacks {missing:?} (NCCL 2.19 or newer is needed)"
        )));
    }
    Ok(())
}

/// The version of the loaded NCCL library, e.g. `22703` for 2.27.3.
pub fn nccl_version() -> Result<i32> {
    check_library()?;
    let mut v: c_int = 0;
    // SAFETY: every symbol was resolved above; `v` is a valid out pointer.
    let rc = unsafe { sys::ncclGetVersion(&mut v) };
    nccl_ok(rc, "ncclGetVersion", "version", std::ptr::null_mut())?;
    Ok(v)
}
