//! The [`Communicator`] trait and the single-process [`LocalComm`].

use std::ops::Range;

use hr_tensor::Tensor;

use crate::error::{DistError, Result};
use crate::grad;

/// Collective operations over all ranks of a job. Every rank must call the same collectives in
/// the same order with matching buffer lengths; results are bit-identical on every rank.
///
/// Every call is bounded by the communicator's timeout: if a peer dies or stops responding the
/// call returns [`DistError::PeerLost`] or [`DistError::Unresponsive`] naming the rank(s), and the
/// communicator is unusable afterwards (every later call returns an error too).
pub trait Communicator: Send {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Element-wise sum over all ranks, in place.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise mean over all ranks, in place (sum, then divide by the world size).
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let w = self.world() as f32;
        buf.iter_mut().for_each(|x| *x /= w);
        Ok(())
    }
    /// Concatenation of every rank's `data`, in rank order (lengths may differ between ranks).
    fn all_gather(&mut self, data: &[f32]) -> Result<Vec<f32>>;
    /// Copies `root`'s `buf` into every rank's `buf` (all lengths must match).
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Returns once every rank has entered the barrier.
    fn barrier(&mut self) -> Result<()>;

    /// All-reduces `ts` in place (as [`Communicator::all_reduce_tensors_in_place`]) while
    /// `work` runs on the calling thread, and returns once both are done: the trainer
    /// reduces the text side's final gradients during the audio CNN's backward this way.
    /// `work` must not touch `ts`.
    ///
    /// The default (host backends) reduces on a second host thread; a world of one only runs
    /// `work`. [`crate::NcclComm`] enqueues the reduction of device tensors on a stream of its
    /// own, ordered after the work already queued on the GPU, so it runs beside the kernels
    /// `work` queues.
    fn all_reduce_tensors_alongside(
        &mut self,
        ts: &mut [Tensor],
        mean: bool,
        bucket_bytes: usize,
        work: &mut dyn FnMut(),
    ) -> Result<()> {
        grad::host_all_reduce_alongside(self, ts, mean, bucket_bytes, work)
    }

    /// All-reduces `ts` in place, as one flat array cut into buckets of `bucket_bytes`
    /// (`mean` divides by the world size); shapes, dtypes and devices are kept.
    ///
    /// The default copies to the host, runs [`Communicator::all_reduce_sum`] /
    /// [`Communicator::all_reduce_mean`] per bucket and copies back (a world of one returns at
    /// once); a device backend ([`crate::NcclComm`]) overrides it to run on its GPU's buffers.
    fn all_reduce_tensors_in_place(
        &mut self,
        ts: &mut [Tensor],
        mean: bool,
        bucket_bytes: usize,
    ) -> Result<()> {
        grad::host_all_reduce_tensors(self, ts, mean, bucket_bytes)
    }

    /// Broadcasts `ts` from `root` in place in buckets of `bucket_bytes` (default: through the
    /// host with [`Communicator::broadcast`]).
    fn broadcast_tensors_in_place(
        &mut self,
        ts: &mut [Tensor],
        root: usize,
        bucket_bytes: usize,
    ) -> Result<()> {
        grad::host_broadcast_tensors(self, ts, root, bucket_bytes)
    }

    /// Concatenation of every rank's `x` (flattened) in rank order as a 1-D tensor of `x`'s
    /// dtype and device; `lens[r]` is rank `r`'s element count (known from an earlier
    /// gather; `lens[rank] == x.numel()`). Default: through the host with
    /// [`Communicator::all_gather`].
    fn all_gather_tensor(&mut self, x: &Tensor, lens: &[usize]) -> Result<Tensor> {
        grad::check_gather_lens(x, lens, self.rank(), self.world())?;
        grad::host_all_gather_tensor(self, x, lens)
    }

    /// Sums `t` (flattened) over ranks and returns elements `range` of the sum as a tensor of
    /// `shape` with `t`'s dtype and device. Default: through the host with
    /// [`Communicator::all_reduce_sum`].
    fn all_reduce_sum_range(
        &mut self,
        t: &Tensor,
        range: Range<usize>,
        shape: &[usize],
    ) -> Result<Tensor> {
        grad::host_all_reduce_sum_range(self, t, range, shape)
    }
}

/// The communicator of a one-process world: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalComm;

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_mean(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn broadcast(&mut self, _buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}

/// True on every rank if `flag` is true on any rank (e.g. to agree on a preemption checkpoint
/// at the next step boundary after SIGTERM reached some of the ranks).
pub fn any_rank(comm: &mut dyn Communicator, flag: bool) -> Result<bool> {
    let mut v = [if flag { 1.0 } else { 0.0 }];
    comm.all_reduce_sum(&mut v)?;
    Ok(v[0] > 0.0)
}

/// Checks that `root` is a rank of a world of `world` ranks.
pub(crate) fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(DistError::Invalid(format!(
            "broadcast root {root} is not a rank of a world of {world}"
        )));
    }
    Ok(())
}
