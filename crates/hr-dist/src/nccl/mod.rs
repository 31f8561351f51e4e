//! NCCL backend: [`NcclComm`], collectives on CUDA device buffers through cudarc's NCCL bindings.
//!
//! # Creation
//! Rank 0 creates the NCCL unique id and publishes its 128 bytes in the rendezvous store under
//! `hr-dist/nccl/id`; the other ranks wait for it (bounded by the rendezvous timeout). Every rank
//! then marks itself in `hr-dist/nccl/joined/RANK` and initialises its communicator
//! *non-blocking* (`ncclCommInitRankConfig` with `blocking = 0`), polling
//! `ncclCommGetAsyncError` until it is ready; past the rendezvous timeout the half-made
//! communicator is aborted and the error names the ranks that never joined.
//!
//! # Collectives
//! Everything runs on the stream of hr-tensor's context for the device
//! ([`hr_tensor::cuda::context`]), so collectives are ordered with the ops that made the data,
//! except [`Communicator::all_reduce_tensors_alongside`]: its buckets go to a side stream that
//! first waits (an event) for the compute stream's queue, so the reduction runs beside the
//! kernels the caller queues meanwhile (the rest of the backward); the call then waits for the
//! side stream and makes the compute stream wait for it too.
//! The tensor methods of [`Communicator`] run in place on device buffers (gradients are cut into
//! buckets with device-to-device copies, never through the host); the host-slice methods stage
//! through a device buffer. After enqueueing, every call waits for its work with the
//! communicator's timeout, polling the stream and `ncclCommGetAsyncError`; on a timeout or an
//! asynchronous NCCL error the communicator is aborted (`ncclCommAbort`, which also stops hung
//! kernels), poisoned, and the error names the ranks that did not answer a store check-in within
//! a short grace ([`DistError::PeerLost`] for one, [`DistError::Unresponsive`] for several).
//!
//! # Availability
//! cudarc with dynamic loading panics when a library or symbol is missing, so [`nccl_available`]
//! checks the driver, `libnccl.so` and every NCCL symbol used here before any NCCL call:
//! without them creation returns [`DistError::BackendUnavailable`], never a panic. cudarc looks
//! for `libnccl.so` (not the `libnccl.so.2` that pip wheels ship): put a `libnccl.so` symlink on
//! `LD_LIBRARY_PATH`.
//!
//! Tested with one GPU (world size 1); the multi-rank paths (id exchange, diagnosis) follow the
//! same code and the ring backend's conventions but have not run on several GPUs yet.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ops::Range;
use std::panic::catch_unwind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::result::stream;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError};
use cudarc::nccl::sys;
use hr_tensor::cuda::{self, CudaDevice};
use hr_tensor::{DType, Device, Tensor};

use crate::comm::{check_root, Communicator};
use crate::error::{DistError, Result};
use crate::grad;
use crate::store::{StoreClient, StoreServer};

const ID_KEY: &str = "hr-dist/nccl/id";
const JOINED_PREFIX: &str = "hr-dist/nccl/joined";
const ALIVE_PREFIX: &str = "hr-dist/nccl/alive";
const BACKEND: &str = "nccl";

mod collectives;
mod probe;
mod setup;
mod wait;

pub use probe::{nccl_available, nccl_version};
use wait::SideStream;

/// `ncclGetErrorString(rc)` plus `ncclGetLastError(comm)` when it says more.
pub(super) fn describe(rc: sys::ncclResult_t, comm: sys::ncclComm_t) -> String {
    // SAFETY: both functions return static or communicator-owned NUL-terminated strings (or
    // null); they are copied before any other NCCL call.
    let (s, last) = unsafe {
        (
            cstr(sys::ncclGetErrorString(rc)),
            cstr(sys::ncclGetLastError(comm)),
        )
    };
    match last.is_empty() {
        true => format!("{rc:?}: {s}"),
        false => format!("{rc:?}: {s} ({last})"),
    }
}

/// Copies a C string that may be null.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub(super) fn nccl_ok(
    rc: sys::ncclResult_t,
    call: &'static str,
    op: &str,
    comm: sys::ncclComm_t,
) -> Result<()> {
    match rc {
        sys::ncclResult_t::ncclSuccess => Ok(()),
        rc => Err(DistError::Nccl {
            call,
            op: op.to_string(),
            msg: describe(rc, comm),
        }),
    }
}

pub(super) fn cuda_err(op: &str, what: &str, e: impl std::fmt::Display) -> DistError {
    DistError::Nccl {
        call: "cuda",
        op: op.to_string(),
        msg: format!("{what}: {e}"),
    }
}

/// Parameters of [`NcclComm::connect`].
#[derive(Debug, Clone)]
pub struct NcclSetup {
    /// This rank.
    pub rank: usize,
    /// Number of ranks (1 is allowed).
    pub world: usize,
    /// CUDA device ordinal of this rank.
    pub ordinal: usize,
    /// Deadline of every collective.
    pub timeout: Duration,
    /// Deadline for the id exchange and communicator initialisation.
    pub rendezvous_timeout: Duration,
}

/// The outcome of one step of a collective, before attribution.
type Step<T> = std::result::Result<T, Fail>;

/// What the bucketed device path applies to each bucket: (communicator, buffer, element count).
type BucketOp<'a> = dyn Fn(&NcclComm, &mut CudaSlice<f32>, usize) -> Step<()> + 'a;

/// How waiting for NCCL work failed, before attribution.
#[derive(Debug)]
enum Fail {
    Timeout,
    Nccl { call: &'static str, msg: String },
    Cuda(String),
}

/// The NCCL communicator of one rank on one GPU. Rank 0's instance also hosts the store.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    rank: usize,
    world: usize,
    dev: Arc<CudaDevice>,
    /// The stream collectives are enqueued on: the device's compute stream, or `side` during
    /// [`Communicator::all_reduce_tensors_alongside`].
    on: Arc<CudaStream>,
    /// The stream of overlapped reductions (created on first use; see [`SideStream`]).
    side: Option<SideStream>,
    timeout: Duration,
    store: Option<StoreClient>,
    _server: Option<StoreServer>,
    seq: u64,
    poisoned: Option<String>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not run
// concurrently; every use goes through `&mut self` (or `Drop`), which guarantees that.
unsafe impl Send for NcclComm {}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("device", &self.dev.ordinal)
            .finish()
    }
}

impl Drop for NcclComm {
    /// Aborts the communicator (never blocks on peers, unlike a finalize; every collective has
    /// completed when its call returned, so nothing is pending); after a failure
    /// rank 0 keeps the store up a little longer so the other ranks can finish their diagnosis.
    fn drop(&mut self) {
        self.abort();
        if self.poisoned.is_some() && self._server.is_some() {
            std::thread::sleep(2 * self.grace());
        }
    }
}
