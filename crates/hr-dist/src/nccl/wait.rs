//! Waiting for enqueued NCCL work and attributing failures: polling the stream and
//! `ncclCommGetAsyncError` against a deadline, aborting and poisoning the communicator on a
//! timeout or an asynchronous error, and naming the ranks that stopped answering the store.
//! Also the side stream of overlapped reductions.

use super::*;

impl NcclComm {
    /// Ranks other than this one without a `PREFIX/RANK` key in the store (all others when the
    /// store cannot be read).
    pub(super) fn absent(&self, prefix: &str) -> Vec<usize> {
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

    pub(super) fn grace(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    pub(super) fn bind(&self, op: &str) -> Result<()> {
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_err(op, "binding the CUDA context", e))
    }

    /// Aborts the NCCL communicator (idempotent).
    pub(super) fn abort(&mut self) {
        if self.comm.is_null() {
            return;
        }
        let _ = self.dev.ctx.bind_to_thread();
        // SAFETY: the handle is live (not yet aborted) and no other call on it is running.
        let _ = unsafe { sys::ncclCommAbort(self.comm) };
        self.comm = std::ptr::null_mut();
    }

    /// The asynchronous state of the communicator (`ncclInProgress` while work is pending).
    pub(super) fn async_state(&self) -> Step<bool> {
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

    pub(super) fn code_message(&self, code: u32) -> String {
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
    pub(super) fn settle(&self, deadline: Instant) -> Step<()> {
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
    pub(super) fn enqueued(
        &self,
        rc: sys::ncclResult_t,
        call: &'static str,
        deadline: Instant,
    ) -> Step<()> {
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
    pub(super) fn wait_stream(&self, deadline: Instant) -> Step<()> {
        self.wait_on(&self.on, deadline).map(drop)
    }

    /// Waits for all work enqueued so far on `stream`, watching NCCL's async error; returns
    /// the completed event.
    pub(super) fn wait_on(&self, stream: &CudaStream, deadline: Instant) -> Step<CudaEvent> {
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
    pub(super) fn run<T>(
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
    pub(super) fn begin(&mut self, op: &'static str) -> Result<Instant> {
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
    pub(super) fn run_alongside(
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
    pub(super) fn enqueue_beside(&mut self, f: impl FnOnce(&mut Self) -> Step<()>) -> Step<()> {
        let side = self.side_stream()?;
        side.join(&self.dev.stream)
            .map_err(|e| Fail::Cuda(format!("ordering the side stream: {e}")))?;
        let compute = std::mem::replace(&mut self.on, side);
        let out = f(self);
        self.on = compute;
        out
    }

    /// The side stream, created on first use.
    pub(super) fn side_stream(&mut self) -> Step<Arc<CudaStream>> {
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
    pub(super) fn fail(&mut self, op: &str, fail: Fail) -> DistError {
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
    pub(super) fn nccl_failure(&self, opname: &str, call: &'static str, msg: String) -> DistError {
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
    pub(super) fn diagnose(&self) -> Vec<usize> {
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
    pub(super) fn my_device<'a>(&self, ts: impl IntoIterator<Item = &'a Tensor>) -> bool {
        let me = Device::Cuda(self.dev.ordinal);
        ts.into_iter()
            .all(|t| t.device() == me && t.dtype() == DType::F32)
    }

    pub(super) fn stream(&self) -> Arc<CudaStream> {
        self.on.clone()
    }
}

/// Short spins first (most collectives finish in microseconds), then sleeps of 100 µs.
pub(super) struct Backoff {
    start: Instant,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            start: Instant::now(),
        }
    }

    pub(super) fn wait(&mut self) {
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
pub(super) struct SideStream(Arc<CudaStream>);

impl SideStream {
    pub(super) fn new(dev: &CudaDevice) -> std::result::Result<SideStream, DriverError> {
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
