//! The collectives: enqueueing primitives on device buffers, the bucketed device path of the
//! tensor collectives, host-slice helpers staged through the device, and [`Communicator`] for
//! [`NcclComm`].

use super::*;
use hr_tensor::cuda::raw;

/// Element type of an NCCL transfer.
pub(super) trait NcclElem:
    cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy
{
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
    pub(super) fn cu_stream(&self) -> sys::cudaStream_t {
        self.on.cu_stream() as sys::cudaStream_t
    }

    /// In-place all-reduce of the first `n` elements of `buf`.
    pub(super) fn enq_all_reduce<T: NcclElem>(
        &self,
        buf: &mut CudaSlice<T>,
        n: usize,
        op: sys::ncclRedOp_t,
        deadline: Instant,
    ) -> Step<()> {
        let (comm, stream) = (self.comm, self.cu_stream());
        self.enq_in_place(buf, n, ("ncclAllReduce", deadline), |ptr| {
            // SAFETY: `ptr` addresses the `n` live elements of type T `enq_in_place` keeps
            // alive (and ordered on `stream`) until after the call; in place is allowed.
            unsafe { sys::ncclAllReduce(ptr, ptr, n, T::TYPE, op, comm, stream) }
        })
    }

    /// In-place broadcast of the first `n` elements of `buf` from `root`.
    pub(super) fn enq_broadcast(
        &self,
        buf: &mut CudaSlice<f32>,
        n: usize,
        root: usize,
        deadline: Instant,
    ) -> Step<()> {
        let (comm, stream) = (self.comm, self.cu_stream());
        let ty = sys::ncclDataType_t::ncclFloat32;
        self.enq_in_place(buf, n, ("ncclBroadcast", deadline), |ptr| {
            // SAFETY: as in `enq_all_reduce`; `root < world` was checked by the caller.
            unsafe { sys::ncclBroadcast(ptr, ptr, n, ty, root as c_int, comm, stream) }
        })
    }

    /// Enqueues `call(ptr)`, an in-place NCCL call named `name` on the first `n` elements of
    /// `buf` (`ptr` addresses them and stays valid and ordered on the stream during the call).
    fn enq_in_place<T: NcclElem>(
        &self,
        buf: &mut CudaSlice<T>,
        n: usize,
        (name, deadline): (&'static str, Instant),
        call: impl FnOnce(*mut c_void) -> sys::ncclResult_t,
    ) -> Step<()> {
        let stream = self.stream();
        let mut view = buf.slice_mut(..n);
        let (ptr, _rec) = view.device_ptr_mut(&stream);
        let rc = call(ptr as *mut c_void);
        self.enqueued(rc, name, deadline)
    }

    /// All-gather of `n` elements of `send` from every rank into `recv` (`n * world` elements).
    pub(super) fn enq_all_gather<T: NcclElem>(
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
    pub(super) fn zeros<T: NcclElem>(&self, n: usize) -> Step<CudaSlice<T>> {
        self.on
            .alloc_zeros::<T>(n.max(1))
            .map_err(|e| Fail::Cuda(format!("allocating {n} elements: {e}")))
    }

    pub(super) fn upload<T: NcclElem>(&self, data: &[T]) -> Step<CudaSlice<T>> {
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
    pub(super) fn download<T: NcclElem>(
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
    pub(super) fn copy(
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
pub(super) fn reduce_op(mean: bool) -> sys::ncclRedOp_t {
    match mean {
        true => sys::ncclRedOp_t::ncclAvg,
        false => sys::ncclRedOp_t::ncclSum,
    }
}

pub(super) fn tensor_fail(e: hr_tensor::Error) -> Fail {
    Fail::Cuda(e.to_string())
}

/// The device path of the bucketed tensor collectives.
impl NcclComm {
    /// Applies `f` to consecutive `bucket_bytes` windows of the concatenation of `ts` on the
    /// device: a window that is one whole tensor is reduced in place, others are packed into
    /// a bucket buffer, processed and unpacked.
    pub(super) fn device_buckets(
        &self,
        ts: &mut [Tensor],
        bucket_bytes: usize,
        f: &BucketOp<'_>,
    ) -> Step<()> {
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
                    let (_, s) = raw::slice_mut(&mut ts[i], "nccl").map_err(tensor_fail)?;
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

    /// All-reduces `ts` on the device with `op`, bucket by bucket (see `device_buckets`).
    pub(super) fn all_reduce_buckets(
        &self,
        ts: &mut [Tensor],
        bucket_bytes: usize,
        op: sys::ncclRedOp_t,
        deadline: Instant,
    ) -> Step<()> {
        self.device_buckets(ts, bucket_bytes, &|c, b, n| {
            c.enq_all_reduce(b, n, op, deadline)
        })
    }

    pub(super) fn pack(
        &self,
        ts: &[Tensor],
        pieces: &[(usize, usize, usize)],
        buf: &mut CudaSlice<f32>,
    ) -> Step<()> {
        let mut pos = 0;
        for &(i, lo, hi) in pieces {
            let (_, s) = raw::slice(&ts[i], "nccl").map_err(tensor_fail)?;
            self.copy(s, lo, buf, pos, hi - lo)?;
            pos += hi - lo;
        }
        Ok(())
    }

    pub(super) fn unpack(
        &self,
        buf: &CudaSlice<f32>,
        pieces: &[(usize, usize, usize)],
        ts: &mut [Tensor],
    ) -> Step<()> {
        let mut pos = 0;
        for &(i, lo, hi) in pieces {
            let (_, s) = raw::slice_mut(&mut ts[i], "nccl").map_err(tensor_fail)?;
            self.copy(buf, pos, s, lo, hi - lo)?;
            pos += hi - lo;
        }
        Ok(())
    }

    /// Gathers `x` (this rank's `lens[rank]` elements) into a flat device buffer.
    pub(super) fn gather_device(
        &self,
        x: &Tensor,
        lens: &[usize],
        deadline: Instant,
    ) -> Step<Tensor> {
        let (ordinal, src) = raw::slice(x, "nccl all_gather").map_err(tensor_fail)?;
        let max = lens.iter().copied().max().unwrap_or(0);
        let total: usize = lens.iter().sum();
        let mut send = self.zeros::<f32>(max)?;
        self.copy(src, 0, &mut send, 0, x.numel())?;
        let mut recv = self.zeros::<f32>(max * self.world)?;
        if max > 0 {
            self.enq_all_gather(&send, max, &mut recv, deadline)?;
        }
        if lens.iter().all(|&n| n == max) {
            return raw::from_slice(ordinal, recv, &[total]).map_err(tensor_fail);
        }
        let mut out = self.zeros::<f32>(total)?;
        let mut pos = 0;
        for (r, &n) in lens.iter().enumerate() {
            self.copy(&recv, r * max, &mut out, pos, n)?;
            pos += n;
        }
        raw::from_slice(ordinal, out, &[total]).map_err(tensor_fail)
    }

    /// Sums `t` over ranks on the device and returns `range` of the sum as a tensor of `shape`.
    pub(super) fn sum_range_device(
        &self,
        t: &Tensor,
        range: Range<usize>,
        shape: &[usize],
        deadline: Instant,
    ) -> Step<Tensor> {
        let n = t.numel();
        let (ordinal, src) = raw::slice(t, "nccl all_reduce").map_err(tensor_fail)?;
        let mut sum = self.zeros::<f32>(n)?;
        self.copy(src, 0, &mut sum, 0, n)?;
        if n > 0 {
            self.enq_all_reduce(&mut sum, n, sys::ncclRedOp_t::ncclSum, deadline)?;
        }
        let mut out = self.zeros::<f32>(range.len())?;
        self.copy(&sum, range.start, &mut out, 0, range.len())?;
        raw::from_slice(ordinal, out, shape).map_err(tensor_fail)
    }
}

pub(super) fn check_range(n: usize, range: &Range<usize>, shape: &[usize]) -> Result<()> {
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
        self.host_in_place(buf, "broadcast", |c, d, n, deadline| {
            c.enq_broadcast(d, n, root, deadline)
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
            raw::slice_mut(t, "nccl all_reduce").map_err(DistError::from)?;
        }
        let op = reduce_op(mean);
        self.run_alongside(
            "all_reduce (overlapped)",
            |c, deadline| c.all_reduce_buckets(ts, bucket_bytes, op, deadline),
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
            c.all_reduce_buckets(ts, bucket_bytes, op, deadline)
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
    pub(super) fn host_all_reduce(&mut self, buf: &mut [f32], op: sys::ncclRedOp_t) -> Result<()> {
        self.host_in_place(buf, "all_reduce", |c, d, n, deadline| {
            c.enq_all_reduce(d, n, op, deadline)
        })
    }

    /// Runs the in-place collective `enq(c, device copy, len, deadline)` named `op` on a device
    /// copy of `buf` and copies the result back (nothing for an empty `buf`).
    fn host_in_place(
        &mut self,
        buf: &mut [f32],
        op: &'static str,
        enq: impl FnOnce(&Self, &mut CudaSlice<f32>, usize, Instant) -> Step<()>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.run(op, |c, deadline| {
            let mut d = c.upload(buf)?;
            enq(c, &mut d, buf.len(), deadline)?;
            c.download(&d, buf, deadline)
        })
    }

    /// Every rank's element count (exact up to 2^53, gathered as f64).
    pub(super) fn gather_lens(&self, n: usize, deadline: Instant) -> Step<Vec<usize>> {
        let send = self.upload(&[n as f64])?;
        let mut recv = self.zeros::<f64>(self.world)?;
        self.enq_all_gather(&send, 1, &mut recv, deadline)?;
        let mut lens = vec![0.0f64; self.world];
        self.download(&recv, &mut lens, deadline)?;
        Ok(lens.into_iter().map(|v| v as usize).collect())
    }
}
