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

fn unavailable(reason: impl Into<String>) -> DistError {
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
fn check_library() -> Result<()> {
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

/// `ncclGetErrorString(rc)` plus `ncclGetLastError(comm)` when it says more.
fn describe(rc: sys::ncclResult_t, comm: sys::ncclComm_t) -> String {
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

fn nccl_ok(
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

fn cuda_err(op: &str, what: &str, e: impl std::fmt::Display) -> DistError {
    DistError::Nccl {
        call: "cuda",
        op: op.to_string(),
        msg: format!("{what}: {e}"),
    }
}

/// A config like `NCCL_CONFIG_INITIALIZER` (every field undefined) with `blocking = 0`.
fn nonblocking_config() -> sys::ncclConfig_t {
    const UNDEF: c_int = c_int::MIN;
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: 2 * 10000 + 30 * 100, // the layout of cudarc's nccl-02030 bindings
        blocking: 0,
        cgaClusterSize: UNDEF,
        minCTAs: UNDEF,
        maxCTAs: UNDEF,
        netName: std::ptr::null(),
        splitShare: UNDEF,
        trafficClass: UNDEF,
        commName: std::ptr::null(),
        collnetEnable: UNDEF,
        CTAPolicy: UNDEF,
        shrinkShare: UNDEF,
        nvlsCTAs: UNDEF,
        nChannelsPerNetPeer: UNDEF,
        nvlinkCentricSched: UNDEF,
        graphUsageMode: UNDEF,
        numRmaCtx: UNDEF,
        maxP2pPeers: UNDEF,
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

impl NcclComm {
    /// A world of one on CUDA device `ordinal` (no store needed).
    pub fn single(ordinal: usize, timeout: Duration) -> Result<NcclComm> {
        let setup = NcclSetup {
            rank: 0,
            world: 1,
            ordinal,
            timeout,
            rendezvous_timeout: timeout,
        };
        NcclComm::connect(setup, None, None)
    }

    /// Creates this rank's communicator: checks availability, exchanges the unique id through
    /// `store` (required when `world > 1`) and initialises NCCL within the rendezvous timeout.
    /// `server` is the store server when this is rank 0 (kept alive with the communicator).
    pub fn connect(
        setup: NcclSetup,
        store: Option<StoreClient>,
        server: Option<StoreServer>,
    ) -> Result<NcclComm> {
        let NcclSetup { rank, world, .. } = setup;
        if world == 0 || rank >= world {
            return Err(DistError::Invalid(format!(
                "nccl needs rank < world, got {rank}/{world}"
            )));
        }
        nccl_available(setup.ordinal)?;
        let dev = cuda::context(setup.ordinal)?;
        let id = exchange_id(&setup, store.as_ref())?;
        if let Some(s) = &store {
            s.set(&format!("{JOINED_PREFIX}/{rank}"), b"1")?;
        }
        let mut me = NcclComm {
            comm: std::ptr::null_mut(),
            rank,
            world,
            on: dev.stream.clone(),
            side: None,
            dev,
            timeout: setup.timeout,
            store,
            _server: server,
            seq: 0,
            poisoned: None,
        };
        me.init_comm(id, setup.rendezvous_timeout)?;
        Ok(me)
    }

    /// CUDA device ordinal of this communicator.
    pub fn ordinal(&self) -> usize {
        self.dev.ordinal
    }

    /// The store client (`None` in a world of one).
    pub fn store(&self) -> Option<&StoreClient> {
        self.store.as_ref()
    }

    /// Non-blocking `ncclCommInitRankConfig`, polled until ready or `limit` passes.
    fn init_comm(&mut self, id: sys::ncclUniqueId, limit: Duration) -> Result<()> {
        self.bind("nccl init")?;
        let mut cfg = nonblocking_config();
        let (world, rank) = (self.world as c_int, self.rank as c_int);
        // SAFETY: `self.comm` and `cfg` are valid pointers for the call; symbols were checked.
        let rc = unsafe { sys::ncclCommInitRankConfig(&mut self.comm, world, id, rank, &mut cfg) };
        if !matches!(
            rc,
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress
        ) {
            let msg = describe(rc, self.comm);
            self.abort();
            return Err(DistError::Nccl {
                call: "ncclCommInitRankConfig",
                op: "init".into(),
                msg,
            });
        }
        let deadline = Instant::now() + limit;
        match self.settle(deadline) {
            Ok(()) => Ok(()),
            Err(fail) => {
                self.abort();
                Err(self.init_error(fail, limit))
            }
        }
    }

    /// Names the ranks that never reached initialisation (from the store's join marks).
    fn init_error(&self, fail: Fail, limit: Duration) -> DistError {
        match fail {
            Fail::Timeout => DistError::Unresponsive {
                ranks: self.absent(JOINED_PREFIX),
                op: "nccl init (ncclCommInitRankConfig)".into(),
                after: limit,
            },
            Fail::Nccl { call, msg } => DistError::Nccl {
                call,
                op: "init".into(),
                msg,
            },
            Fail::Cuda(msg) => cuda_err("init", "CUDA", msg),
        }
    }

    /// Ranks other than this one without a `PREFIX/RANK` key in the store (all others when the
    /// store cannot be read).
    fn absent(&self, prefix: &str) -> Vec<usize> {
        let others = (0..self.world).filter(|&r| r != self.rank);
        let Some(store) = &self.store else {
            return vec![self.rank];
        };
        let grace = self.grace();
        others
            .filter(|r| {
                !matches!(
                    store.try_get_within(&format!("{prefix}/{r}"), grace),
                    Ok(Some(_))
                )
            })
            .collect()
    }

    fn grace(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    fn bind(&self, op: &str) -> Result<()> {
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_err(op, "binding the CUDA context", e))
    }

    /// Aborts the NCCL communicator (idempotent).
    fn abort(&mut self) {
        if self.comm.is_null() {
            return;
        }
        let _ = self.dev.ctx.bind_to_thread();
        // SAFETY: the handle is live (not yet aborted) and no other call on it is running.
        let _ = unsafe { sys::ncclCommAbort(self.comm) };
        self.comm = std::ptr::null_mut();
    }

    /// The asynchronous state of the communicator (`ncclInProgress` while work is pending).
    fn async_state(&self) -> Step<bool> {
        let mut state: u32 = u32::MAX;
        // SAFETY: the handle is live; NCCL writes an `ncclResult_t` (a C enum, 32 bits) into
        // `state`, read back as a plain integer so an unknown code cannot be an invalid enum.
        let rc = unsafe {
            sys::ncclCommGetAsyncError(self.comm, &mut state as *mut u32 as *mut sys::ncclResult_t)
        };
        if rc != sys::ncclResult_t::ncclSuccess {
            return Err(Fail::Nccl {
                call: "ncclCommGetAsyncError",
                msg: describe(rc, self.comm),
            });
        }
        match state {
            0 => Ok(true),
            7 => Ok(false), // ncclInProgress
            code => Err(Fail::Nccl {
                call: "async error",
                msg: self.code_message(code),
            }),
        }
    }

    fn code_message(&self, code: u32) -> String {
        let known = [
            sys::ncclResult_t::ncclUnhandledCudaError,
            sys::ncclResult_t::ncclSystemError,
            sys::ncclResult_t::ncclInternalError,
            sys::ncclResult_t::ncclInvalidArgument,
            sys::ncclResult_t::ncclInvalidUsage,
            sys::ncclResult_t::ncclRemoteError,
        ];
        match known.into_iter().find(|&k| k as u32 == code) {
            Some(rc) => describe(rc, self.comm),
            None => format!("NCCL error code {code}"),
        }
    }

    /// Polls until the communicator is no longer `ncclInProgress` (after a non-blocking call).
    fn settle(&self, deadline: Instant) -> Step<()> {
        let mut backoff = Backoff::new();
        while !self.async_state()? {
            if Instant::now() >= deadline {
                return Err(Fail::Timeout);
            }
            backoff.wait();
        }
        Ok(())
    }

    /// Checks the return code of an enqueueing NCCL call and waits out `ncclInProgress`.
    fn enqueued(&self, rc: sys::ncclResult_t, call: &'static str, deadline: Instant) -> Step<()> {
        match rc {
            sys::ncclResult_t::ncclSuccess => Ok(()),
            sys::ncclResult_t::ncclInProgress => self.settle(deadline),
            rc => Err(Fail::Nccl {
                call,
                msg: describe(rc, self.comm),
            }),
        }
    }

    /// Waits for all work enqueued so far on the current stream, watching NCCL's async error.
    fn wait_stream(&self, deadline: Instant) -> Step<()> {
        self.wait_on(&self.on, deadline).map(drop)
    }

    /// Waits for all work enqueued so far on `stream`, watching NCCL's async error; returns
    /// the completed event.
    fn wait_on(&self, stream: &CudaStream, deadline: Instant) -> Step<CudaEvent> {
        let event = stream
            .record_event(None)
            .map_err(|e| Fail::Cuda(format!("recording an event: {e}")))?;
        let mut backoff = Backoff::new();
        loop {
            let done = event
                .try_is_complete()
                .map_err(|e| Fail::Cuda(format!("querying the stream: {e}")))?;
            self.async_state()?;
            if done {
                return Ok(event);
            }
            if Instant::now() >= deadline {
                return Err(Fail::Timeout);
            }
            backoff.wait();
        }
    }

    /// Runs one collective: refuses when poisoned, enqueues with `f`, waits for completion and
    /// turns failures into attributed errors (aborting the communicator).
    fn run<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Self, Instant) -> Step<T>,
    ) -> Result<T> {
        let deadline = self.begin(op)?;
        let out = f(self, deadline).and_then(|v| self.wait_stream(deadline).map(|()| v));
        out.map_err(|fail| self.fail(op, fail))
    }

    /// Starts collective `op`: refuses when poisoned, numbers it, binds the context; returns
    /// its deadline.
    fn begin(&mut self, op: &'static str) -> Result<Instant> {
        if let Some(msg) = &self.poisoned {
            return Err(DistError::Protocol(format!(
                "{op}: communicator unusable after an earlier failure: {msg}"
            )));
        }
        self.seq += 1;
        self.bind(op)?;
        Ok(Instant::now() + self.timeout)
    }

    /// Like [`NcclComm::run`] for work that overlaps `work`: `f` is enqueued on the side
    /// stream, after everything queued so far on the compute stream; `work` then runs on this
    /// thread (queueing its kernels on the compute stream); finally this waits for the side
    /// stream (bounded by the timeout, watching NCCL's async error) and orders the compute
    /// stream after it.
    fn run_alongside(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Self, Instant) -> Step<()>,
        work: &mut dyn FnMut(),
    ) -> Result<()> {
        let deadline = self.begin(op)?;
        if let Err(fail) = self.enqueue_beside(|c| f(c, deadline)) {
            return Err(self.fail(op, fail));
        }
        work();
        let side = self.side_stream().map_err(|fail| self.fail(op, fail))?;
        let done = self.wait_on(&side, deadline).and_then(|event| {
            self.dev
                .stream
                .wait(&event)
                .map_err(|e| Fail::Cuda(format!("ordering the compute stream: {e}")))
        });
        done.map_err(|fail| self.fail(op, fail))
    }

    /// Runs `f` with the side stream as the current stream, after making the side stream wait
    /// for the work queued so far on the compute stream.
    fn enqueue_beside(&mut self, f: impl FnOnce(&mut Self) -> Step<()>) -> Step<()> {
        let side = self.side_stream()?;
        side.join(&self.dev.stream)
            .map_err(|e| Fail::Cuda(format!("ordering the side stream: {e}")))?;
        let compute = std::mem::replace(&mut self.on, side);
        let out = f(self);
        self.on = compute;
        out
    }

    /// The side stream, created on first use.
    fn side_stream(&mut self) -> Step<Arc<CudaStream>> {
        if let Some(s) = &self.side {
            return Ok(s.0.clone());
        }
        let made = SideStream::new(&self.dev)
            .map_err(|e| Fail::Cuda(format!("creating the side stream: {e}")))?;
        let stream = made.0.clone();
        self.side = Some(made);
        Ok(stream)
    }

    /// Aborts, poisons, and attributes a failure to the ranks that do not check in.
    fn fail(&mut self, op: &str, fail: Fail) -> DistError {
        let opname = format!("{op} #{}", self.seq);
        self.abort();
        let err = match fail {
            Fail::Cuda(msg) => cuda_err(&opname, "CUDA", msg),
            Fail::Timeout => DistError::Unresponsive {
                ranks: self.diagnose(),
                op: opname.clone(),
                after: self.timeout,
            },
            Fail::Nccl { call, msg } => self.nccl_failure(&opname, call, msg),
        };
        self.poisoned = Some(err.to_string());
        err
    }

    /// An NCCL error: a remote/system error with exactly one silent rank is that rank's loss.
    fn nccl_failure(&self, opname: &str, call: &'static str, msg: String) -> DistError {
        let suspects = if self.world > 1 {
            self.diagnose()
        } else {
            Vec::new()
        };
        match suspects.as_slice() {
            [rank] if *rank != self.rank => DistError::PeerLost {
                rank: *rank,
                op: opname.to_string(),
                reason: format!("{call}: {msg}"),
            },
            _ => DistError::Nccl {
                call,
                op: opname.to_string(),
                msg,
            },
        }
    }

    /// Marks this rank alive for this collective, waits a grace, and returns the ranks that did
    /// not (`[0]` when the store, hosted by rank 0, is gone; this rank in a world of one).
    fn diagnose(&self) -> Vec<usize> {
        let Some(store) = &self.store else {
            return vec![self.rank];
        };
        let prefix = format!("{ALIVE_PREFIX}/{}", self.seq);
        if store
            .set_within(&format!("{prefix}/{}", self.rank), b"1", self.grace())
            .is_err()
        {
            return vec![0];
        }
        std::thread::sleep(self.grace());
        self.absent(&prefix)
    }

    /// True when every tensor is f32 on this communicator's GPU (the device path applies).
    fn my_device<'a>(&self, ts: impl IntoIterator<Item = &'a Tensor>) -> bool {
        let me = Device::Cuda(self.dev.ordinal);
        ts.into_iter()
            .all(|t| t.device() == me && t.dtype() == DType::F32)
    }

    fn stream(&self) -> Arc<CudaStream> {
        self.on.clone()
    }
}

/// Short spins first (most collectives finish in microseconds), then sleeps of 100 µs.
struct Backoff {
    start: Instant,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            start: Instant::now(),
        }
    }

    fn wait(&mut self) {
        if self.start.elapsed() < Duration::from_millis(2) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// The stream of overlapped reductions: non-blocking (no implicit ordering with the compute
/// stream, which is the legacy default stream), ordered with it by explicit events only.
/// Created through the driver API and wrapped as a borrowed stream, so cudarc stays in its
/// single-stream mode (no event recorded at every buffer access of every kernel); destroyed
/// on drop (the driver releases it once its queued work is done).
struct SideStream(Arc<CudaStream>);

impl SideStream {
    fn new(dev: &CudaDevice) -> std::result::Result<SideStream, DriverError> {
        dev.ctx.bind_to_thread()?;
        let raw = stream::create(stream::StreamKind::NonBlocking)?;
        // SAFETY: `raw` is a live stream of this context; it is destroyed only when this
        // `SideStream` drops, and the buffers allocated on it (reduction buckets) are freed
        // before that, inside the collective that made them.
        Ok(SideStream(unsafe { dev.ctx.wrap_borrowed_stream(raw) }))
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        let _ = self.0.context().bind_to_thread();
        // SAFETY: the stream was created by `SideStream::new` and is destroyed only here.
        let _ = unsafe { stream::destroy(self.0.cu_stream()) };
    }
}

/// Rank 0 creates the unique id and publishes it; the others wait for it.
fn exchange_id(setup: &NcclSetup, store: Option<&StoreClient>) -> Result<sys::ncclUniqueId> {
    let store = match (store, setup.world) {
        (_, 1) => return new_id(),
        (Some(s), _) => s,
        (None, w) => {
            return Err(DistError::Invalid(format!(
                "nccl with {w} ranks needs the rendezvous store"
            )))
        }
    };
    if setup.rank == 0 {
        let id = new_id()?;
        let bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        store.set(ID_KEY, &bytes)?;
        return Ok(id);
    }
    let bytes = store
        .wait(ID_KEY, setup.rendezvous_timeout)
        .map_err(|e| match e {
            DistError::Timeout { after, .. } => DistError::Unresponsive {
                ranks: vec![0],
                op: "nccl rendezvous (waiting for rank 0's unique id)".into(),
                after,
            },
            e => e,
        })?;
    id_from_bytes(&bytes)
}

fn new_id() -> Result<sys::ncclUniqueId> {
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    // SAFETY: `id` is a valid out pointer; the symbol was checked by `nccl_available`.
    let rc = unsafe { sys::ncclGetUniqueId(&mut id) };
    nccl_ok(rc, "ncclGetUniqueId", "rendezvous", std::ptr::null_mut())?;
    Ok(id)
}

fn id_from_bytes(bytes: &[u8]) -> Result<sys::ncclUniqueId> {
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    if bytes.len() != id.internal.len() {
        return Err(DistError::Protocol(format!(
            "nccl unique id in the store has {} bytes, expected 128",
            bytes.len()
        )));
    }
    for (d, &b) in id.internal.iter_mut().zip(bytes) {
        *d = b as c_char;
    }
    Ok(id)
}

/// Element type of an NCCL transfer.
trait NcclElem: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy {
    const TYPE: sys::ncclDataType_t;
}

impl NcclElem for f32 {
    const TYPE: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
}

impl NcclElem for f64 {
    const TYPE: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat64;
}

/// Enqueueing primitives on device buffers (no waiting: [`NcclComm::run`] waits).
impl NcclComm {
    fn cu_stream(&self) -> sys::cudaStream_t {
        self.on.cu_stream() as sys::cudaStream_t
    }

    /// In-place all-reduce of the first `n` elements of `buf`.
    fn enq_all_reduce<T: NcclElem>(
        &self,
        buf: &mut CudaSlice<T>,
        n: usize,
        op: sys::ncclRedOp_t,
        deadline: Instant,
    ) -> Step<()> {
        let stream = self.stream();
        let mut view = buf.slice_mut(..n);
        let (ptr, _rec) = view.device_ptr_mut(&stream);
        // SAFETY: `ptr` addresses `n` live elements of type T on this communicator's device,
        // kept alive (and ordered on `stream`) by `_rec` until after the call; in place is allowed.
        let rc = unsafe {
            sys::ncclAllReduce(
                ptr as *const c_void,
                ptr as *mut c_void,
                n,
                T::TYPE,
                op,
                self.comm,
                self.cu_stream(),
            )
        };
        self.enqueued(rc, "ncclAllReduce", deadline)
    }

    /// In-place broadcast of the first `n` elements of `buf` from `root`.
    fn enq_broadcast(
        &self,
        buf: &mut CudaSlice<f32>,
        n: usize,
        root: usize,
        deadline: Instant,
    ) -> Step<()> {
        let stream = self.stream();
        let mut view = buf.slice_mut(..n);
        let (ptr, _rec) = view.device_ptr_mut(&stream);
        // SAFETY: as in `enq_all_reduce`; `root < world` was checked by the caller.
        let rc = unsafe {
            sys::ncclBroadcast(
                ptr as *const c_void,
                ptr as *mut c_void,
                n,
                sys::ncclDataType_t::ncclFloat32,
                root as c_int,
                self.comm,
                self.cu_stream(),
            )
        };
        self.enqueued(rc, "ncclBroadcast", deadline)
    }

    /// All-gather of `n` elements of `send` from every rank into `recv` (`n * world` elements).
    fn enq_all_gather<T: NcclElem>(
        &self,
        send: &CudaSlice<T>,
        n: usize,
        recv: &mut CudaSlice<T>,
        deadline: Instant,
    ) -> Step<()> {
        let stream = self.stream();
        if send.len() < n || recv.len() < n * self.world {
            return Err(Fail::Cuda(format!(
                "all_gather buffers too small: {} and {} for {n} x {}",
                send.len(),
                recv.len(),
                self.world
            )));
        }
        let (src, _rs) = send.device_ptr(&stream);
        let (dst, _rd) = recv.device_ptr_mut(&stream);
        // SAFETY: `src` holds at least `n` and `dst` at least `n * world` live elements (checked
        // above) on this device, kept alive by the records until after the call.
        let rc = unsafe {
            sys::ncclAllGather(
                src as *const c_void,
                dst as *mut c_void,
                n,
                T::TYPE,
                self.comm,
                self.cu_stream(),
            )
        };
        self.enqueued(rc, "ncclAllGather", deadline)
    }

    /// A zeroed device buffer of `n` (at least 1) elements.
    fn zeros<T: NcclElem>(&self, n: usize) -> Step<CudaSlice<T>> {
        self.on
            .alloc_zeros::<T>(n.max(1))
            .map_err(|e| Fail::Cuda(format!("allocating {n} elements: {e}")))
    }

    fn upload<T: NcclElem>(&self, data: &[T]) -> Step<CudaSlice<T>> {
        let mut buf = self.zeros::<T>(data.len())?;
        if !data.is_empty() {
            self.on
                .memcpy_htod(data, &mut buf.slice_mut(..data.len()))
                .map_err(|e| Fail::Cuda(format!("upload: {e}")))?;
        }
        Ok(buf)
    }

    /// Copies the first `out.len()` elements of `buf` to `out` (synchronises the stream first,
    /// bounded by the deadline, so a hang is still detected).
    fn download<T: NcclElem>(
        &self,
        buf: &CudaSlice<T>,
        out: &mut [T],
        deadline: Instant,
    ) -> Step<()> {
        self.wait_stream(deadline)?;
        if out.is_empty() {
            return Ok(());
        }
        self.on
            .memcpy_dtoh(&buf.slice(..out.len()), out)
            .map_err(|e| Fail::Cuda(format!("download: {e}")))
    }

    /// Device-to-device copy of `len` elements.
    fn copy(
        &self,
        src: &CudaSlice<f32>,
        src_at: usize,
        dst: &mut CudaSlice<f32>,
        dst_at: usize,
        len: usize,
    ) -> Step<()> {
        if len == 0 {
            return Ok(());
        }
        self.on
            .memcpy_dtod(
                &src.slice(src_at..src_at + len),
                &mut dst.slice_mut(dst_at..dst_at + len),
            )
            .map_err(|e| Fail::Cuda(format!("device copy of {len} elements: {e}")))
    }
}

/// NCCL's average for `mean`, else its sum.
fn reduce_op(mean: bool) -> sys::ncclRedOp_t {
    match mean {
        true => sys::ncclRedOp_t::ncclAvg,
        false => sys::ncclRedOp_t::ncclSum,
    }
}

fn tensor_fail(e: hr_tensor::Error) -> Fail {
    Fail::Cuda(e.to_string())
}

/// The device path of the bucketed tensor collectives.
impl NcclComm {
    /// Applies `f` to consecutive `bucket_bytes` windows of the concatenation of `ts` on the
    /// device: a window that is one whole tensor is reduced in place, others are packed into
    /// a bucket buffer, processed and unpacked.
    fn device_buckets(&self, ts: &mut [Tensor], bucket_bytes: usize, f: &BucketOp<'_>) -> Step<()> {
        let lens: Vec<usize> = ts.iter().map(Tensor::numel).collect();
        let total: usize = lens.iter().sum();
        let cap = (bucket_bytes / 4).max(1);
        let mut bucket: Option<CudaSlice<f32>> = None;
        let mut start = 0;
        while start < total {
            let end = (start + cap).min(total);
            let pieces = grad::pieces(&lens, start, end);
            if let [(i, 0, hi)] = pieces[..] {
                if hi == lens[i] {
                    let (_, s) = ts[i].cuda_slice_mut("nccl").map_err(tensor_fail)?;
                    f(self, s, hi)?;
                    start = end;
                    continue;
                }
            }
            let buf = match &mut bucket {
                Some(b) => b,
                None => bucket.insert(self.zeros::<f32>(cap.min(total))?),
            };
            self.pack(ts, &pieces, buf)?;
            f(self, buf, end - start)?;
            self.unpack(buf, &pieces, ts)?;
            start = end;
        }
        Ok(())
    }

    fn pack(
        &self,
        ts: &[Tensor],
        pieces: &[(usize, usize, usize)],
        buf: &mut CudaSlice<f32>,
    ) -> Step<()> {
        let mut pos = 0;
        for &(i, lo, hi) in pieces {
            let (_, s) = ts[i].cuda_slice("nccl").map_err(tensor_fail)?;
            self.copy(s, lo, buf, pos, hi - lo)?;
            pos += hi - lo;
        }
        Ok(())
    }

    fn unpack(
        &self,
        buf: &CudaSlice<f32>,
        pieces: &[(usize, usize, usize)],
        ts: &mut [Tensor],
    ) -> Step<()> {
        let mut pos = 0;
        for &(i, lo, hi) in pieces {
            let (_, s) = ts[i].cuda_slice_mut("nccl").map_err(tensor_fail)?;
            self.copy(buf, pos, s, lo, hi - lo)?;
            pos += hi - lo;
        }
        Ok(())
    }

    /// Gathers `x` (this rank's `lens[rank]` elements) into a flat device buffer.
    fn gather_device(&self, x: &Tensor, lens: &[usize], deadline: Instant) -> Step<Tensor> {
        let (ordinal, src) = x.cuda_slice("nccl all_gather").map_err(tensor_fail)?;
        let max = lens.iter().copied().max().unwrap_or(0);
        let total: usize = lens.iter().sum();
        let mut send = self.zeros::<f32>(max)?;
        self.copy(src, 0, &mut send, 0, x.numel())?;
        let mut recv = self.zeros::<f32>(max * self.world)?;
        if max > 0 {
            self.enq_all_gather(&send, max, &mut recv, deadline)?;
        }
        if lens.iter().all(|&n| n == max) {
            return Tensor::from_cuda_slice(ordinal, recv, &[total]).map_err(tensor_fail);
        }
        let mut out = self.zeros::<f32>(total)?;
        let mut pos = 0;
        for (r, &n) in lens.iter().enumerate() {
            self.copy(&recv, r * max, &mut out, pos, n)?;
            pos += n;
        }
        Tensor::from_cuda_slice(ordinal, out, &[total]).map_err(tensor_fail)
    }

    /// Sums `t` over ranks on the device and returns `range` of the sum as a tensor of `shape`.
    fn sum_range_device(
        &self,
        t: &Tensor,
        range: Range<usize>,
        shape: &[usize],
        deadline: Instant,
    ) -> Step<Tensor> {
        let n = t.numel();
        let (ordinal, src) = t.cuda_slice("nccl all_reduce").map_err(tensor_fail)?;
        let mut sum = self.zeros::<f32>(n)?;
        self.copy(src, 0, &mut sum, 0, n)?;
        if n > 0 {
            self.enq_all_reduce(&mut sum, n, sys::ncclRedOp_t::ncclSum, deadline)?;
        }
        let mut out = self.zeros::<f32>(range.len())?;
        self.copy(&sum, range.start, &mut out, 0, range.len())?;
        Tensor::from_cuda_slice(ordinal, out, shape).map_err(tensor_fail)
    }
}

fn check_range(n: usize, range: &Range<usize>, shape: &[usize]) -> Result<()> {
    let want: usize = shape.iter().product();
    if range.start > range.end || range.end > n || range.len() != want {
        return Err(DistError::Invalid(format!(
            "range {range:?} of {n} elements does not fit shape {shape:?}"
        )));
    }
    Ok(())
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        self.host_all_reduce(buf, sys::ncclRedOp_t::ncclSum)
    }

    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()> {
        self.host_all_reduce(buf, sys::ncclRedOp_t::ncclAvg)
    }

    fn all_gather(&mut self, data: &[f32]) -> Result<Vec<f32>> {
        let world = self.world;
        self.run("all_gather", |c, deadline| {
            let lens = c.gather_lens(data.len(), deadline)?;
            let max = lens.iter().copied().max().unwrap_or(0);
            if max == 0 {
                return Ok(Vec::new());
            }
            let mut send = c.upload(data)?;
            send = match data.len() < max {
                true => {
                    let mut padded = c.zeros::<f32>(max)?;
                    c.copy(&send, 0, &mut padded, 0, data.len())?;
                    padded
                }
                false => send,
            };
            let mut recv = c.zeros::<f32>(max * world)?;
            c.enq_all_gather(&send, max, &mut recv, deadline)?;
            let mut all = vec![0.0f32; max * world];
            c.download(&recv, &mut all, deadline)?;
            Ok(lens
                .iter()
                .enumerate()
                .flat_map(|(r, &n)| all[r * max..r * max + n].to_vec())
                .collect())
        })
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.run("broadcast", |c, deadline| {
            let mut d = c.upload(buf)?;
            c.enq_broadcast(&mut d, buf.len(), root, deadline)?;
            c.download(&d, buf, deadline)
        })
    }

    fn barrier(&mut self) -> Result<()> {
        self.run("barrier", |c, deadline| {
            let mut d = c.zeros::<f32>(1)?;
            c.enq_all_reduce(&mut d, 1, sys::ncclRedOp_t::ncclSum, deadline)
        })
    }

    fn all_reduce_tensors_alongside(
        &mut self,
        ts: &mut [Tensor],
        mean: bool,
        bucket_bytes: usize,
        work: &mut dyn FnMut(),
    ) -> Result<()> {
        if !self.my_device(ts.iter()) {
            return grad::host_all_reduce_alongside(self, ts, mean, bucket_bytes, work);
        }
        // Copy-on-write copies of shared buffers are made here, on the compute stream, so the
        // side stream (which waits for the compute stream's queue) sees them.
        for t in ts.iter_mut() {
            t.cuda_slice_mut("nccl all_reduce")
                .map_err(DistError::from)?;
        }
        let op = reduce_op(mean);
        self.run_alongside(
            "all_reduce (overlapped)",
            |c, deadline| {
                c.device_buckets(ts, bucket_bytes, &|c, b, n| {
                    c.enq_all_reduce(b, n, op, deadline)
                })
            },
            work,
        )
    }

    fn all_reduce_tensors_in_place(
        &mut self,
        ts: &mut [Tensor],
        mean: bool,
        bucket_bytes: usize,
    ) -> Result<()> {
        if !self.my_device(ts.iter()) {
            return grad::host_all_reduce_tensors(self, ts, mean, bucket_bytes);
        }
        let op = reduce_op(mean);
        self.run("all_reduce", |c, deadline| {
            c.device_buckets(ts, bucket_bytes, &|c, b, n| {
                c.enq_all_reduce(b, n, op, deadline)
            })
        })
    }

    fn broadcast_tensors_in_place(
        &mut self,
        ts: &mut [Tensor],
        root: usize,
        bucket_bytes: usize,
    ) -> Result<()> {
        check_root(root, self.world)?;
        if !self.my_device(ts.iter()) {
            return grad::host_broadcast_tensors(self, ts, root, bucket_bytes);
        }
        self.run("broadcast", |c, deadline| {
            c.device_buckets(ts, bucket_bytes, &|c, b, n| {
                c.enq_broadcast(b, n, root, deadline)
            })
        })
    }

    fn all_gather_tensor(&mut self, x: &Tensor, lens: &[usize]) -> Result<Tensor> {
        grad::check_gather_lens(x, lens, self.rank, self.world)?;
        if !self.my_device([x]) {
            return grad::host_all_gather_tensor(self, x, lens);
        }
        self.run("all_gather", |c, deadline| {
            c.gather_device(x, lens, deadline)
        })
    }

    fn all_reduce_sum_range(
        &mut self,
        t: &Tensor,
        range: Range<usize>,
        shape: &[usize],
    ) -> Result<Tensor> {
        check_range(t.numel(), &range, shape)?;
        if !self.my_device([t]) {
            return grad::host_all_reduce_sum_range(self, t, range, shape);
        }
        self.run("all_reduce", |c, deadline| {
            c.sum_range_device(t, range, shape, deadline)
        })
    }
}

/// Host-slice helpers (staged through the device).
impl NcclComm {
    fn host_all_reduce(&mut self, buf: &mut [f32], op: sys::ncclRedOp_t) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.run("all_reduce", |c, deadline| {
            let mut d = c.upload(buf)?;
            c.enq_all_reduce(&mut d, buf.len(), op, deadline)?;
            c.download(&d, buf, deadline)
        })
    }

    /// Every rank's element count (exact up to 2^53, gathered as f64).
    fn gather_lens(&self, n: usize, deadline: Instant) -> Step<Vec<usize>> {
        let send = self.upload(&[n as f64])?;
        let mut recv = self.zeros::<f64>(self.world)?;
        self.enq_all_gather(&send, 1, &mut recv, deadline)?;
        let mut lens = vec![0.0f64; self.world];
        self.download(&recv, &mut lens, deadline)?;
        Ok(lens.into_iter().map(|v| v as usize).collect())
    }
}
