//! Tensor-level helpers for data parallel training: bucketed gradient all-reduce, parameter
//! broadcast, and all-gather with gradient for contrastive embeddings.
//!
//! # All-gather with gradient
//! Forward ([`all_gather_rows`]): each rank `r` holds `x_r` (`[n_r, d]`); every rank gets
//! `Y = concat_r x_r` (`[N, d]`, `N = Σ n_r`, rows in rank order).
//!
//! Backward ([`all_gather_rows_backward`]): rank `k` computed a loss `L_k` on `Y` and has
//! `G_k = ∂L_k/∂Y`. The objective is `L = Σ_k L_k`, and `x_r` reaches every `L_k` through its rows
//! of `Y`, so `∂L/∂x_r = (Σ_k G_k)[rows of r]`: the backward all-reduces (sums) `G_k` and returns
//! this rank's rows.
//!
//! Two ways to use it:
//! - every rank computes the *same full* loss `L_global` on `Y` (so `L = w · L_global`): the
//!   backward returns `w · ∂L_global/∂x_r`; then average parameter gradients over ranks with
//!   [`all_reduce_tensors`] `mean = true` and you get exactly `∂L_global/∂θ` (torch / open_clip
//!   convention, what DDP-equivalence with one rank of the global batch needs);
//! - each rank computes only its share `L_k` with `Σ_k L_k = L_global`: the backward returns
//!   exactly `∂L_global/∂x_r`; then *sum* parameter gradients (`mean = false`).

use std::ops::Range;

use hr_tensor::{DType, Device, Tensor};

use crate::comm::Communicator;
use crate::error::{DistError, Result};

/// Default gradient bucket size: 25 MB of f32, as in torch DDP.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// All-reduces `grads` in flat buckets of `bucket_bytes` and returns reduced tensors with the
/// original shapes, dtypes and devices (`mean` divides by the world size). Runs
/// [`Communicator::all_reduce_tensors_in_place`]: through the host for the CPU ring, on the
/// GPU without a host copy for NCCL with tensors on its device.
pub fn all_reduce_tensors(
    comm: &mut dyn Communicator,
    grads: &[Tensor],
    mean: bool,
    bucket_bytes: usize,
) -> Result<Vec<Tensor>> {
    let mut out = grads.to_vec();
    comm.all_reduce_tensors_in_place(&mut out, mean, bucket_bytes)?;
    Ok(out)
}

/// Broadcasts `params` from `root` in buckets; returns the root's values on every rank
/// (through [`Communicator::broadcast_tensors_in_place`]).
pub fn broadcast_tensors(
    comm: &mut dyn Communicator,
    params: &[Tensor],
    root: usize,
    bucket_bytes: usize,
) -> Result<Vec<Tensor>> {
    let mut out = params.to_vec();
    comm.broadcast_tensors_in_place(&mut out, root, bucket_bytes)?;
    Ok(out)
}

/// All-reduces a list of f32 vectors in place, treating them as one flat array cut into buckets
/// of `bucket_bytes` (a vector may span buckets).
pub fn all_reduce_vecs<C: Communicator + ?Sized>(
    comm: &mut C,
    vecs: &mut [Vec<f32>],
    mean: bool,
    bucket_bytes: usize,
) -> Result<()> {
    if comm.world() == 1 {
        return Ok(());
    }
    for_each_bucket(vecs, bucket_bytes, |b| match mean {
        true => comm.all_reduce_mean(b),
        false => comm.all_reduce_sum(b),
    })
}

/// The host path of [`Communicator::all_reduce_tensors_in_place`].
pub(crate) fn host_all_reduce_tensors<C: Communicator + ?Sized>(
    comm: &mut C,
    ts: &mut [Tensor],
    mean: bool,
    bucket_bytes: usize,
) -> Result<()> {
    if comm.world() == 1 {
        return Ok(());
    }
    let mut flats = to_flats(ts)?;
    all_reduce_vecs(comm, &mut flats, mean, bucket_bytes)?;
    write_back(ts, flats)
}

/// The host path of [`Communicator::all_reduce_tensors_alongside`]: the reduction runs on a
/// scoped second thread while `work` runs on this one (a world of one only runs `work`).
pub(crate) fn host_all_reduce_alongside<C: Communicator + ?Sized>(
    comm: &mut C,
    ts: &mut [Tensor],
    mean: bool,
    bucket_bytes: usize,
    work: &mut dyn FnMut(),
) -> Result<()> {
    if comm.world() == 1 {
        work();
        return Ok(());
    }
    std::thread::scope(|s| {
        let reduce = s.spawn(move || host_all_reduce_tensors(comm, ts, mean, bucket_bytes));
        work();
        reduce
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The host path of [`Communicator::broadcast_tensors_in_place`].
pub(crate) fn host_broadcast_tensors<C: Communicator + ?Sized>(
    comm: &mut C,
    ts: &mut [Tensor],
    root: usize,
    bucket_bytes: usize,
) -> Result<()> {
    let mut flats = to_flats(ts)?;
    for_each_bucket(&mut flats, bucket_bytes, |b| comm.broadcast(b, root))?;
    write_back(ts, flats)
}

/// Checks the per-rank element counts given to [`Communicator::all_gather_tensor`].
pub(crate) fn check_gather_lens(
    x: &Tensor,
    lens: &[usize],
    rank: usize,
    world: usize,
) -> Result<()> {
    if lens.len() != world || lens.get(rank) != Some(&x.numel()) {
        return Err(DistError::Invalid(format!(
            "all_gather_tensor: lens {lens:?} for a world of {world} do not give rank {rank} its \
             {} elements",
            x.numel()
        )));
    }
    Ok(())
}

/// The host path of [`Communicator::all_gather_tensor`].
pub(crate) fn host_all_gather_tensor<C: Communicator + ?Sized>(
    comm: &mut C,
    x: &Tensor,
    lens: &[usize],
) -> Result<Tensor> {
    let all = comm.all_gather(&x.to_vec_f32()?)?;
    let total: usize = lens.iter().sum();
    if all.len() != total {
        return Err(DistError::Protocol(format!(
            "all_gather_tensor: gathered {} elements, expected {total} from lens {lens:?}",
            all.len()
        )));
    }
    rebuild_as(x, all, &[total])
}

/// The host path of [`Communicator::all_reduce_sum_range`].
pub(crate) fn host_all_reduce_sum_range<C: Communicator + ?Sized>(
    comm: &mut C,
    t: &Tensor,
    range: Range<usize>,
    shape: &[usize],
) -> Result<Tensor> {
    let mut g = t.to_vec_f32()?;
    comm.all_reduce_sum(&mut g)?;
    let mine = g.get(range.clone()).ok_or_else(|| {
        DistError::Invalid(format!("range {range:?} out of {} elements", g.len()))
    })?;
    rebuild_as(t, mine.to_vec(), shape)
}

/// The pieces `(index, lo, hi)` of the vectors of lengths `lens` that cover flat positions
/// `start..end` of their concatenation, in order (empty vectors never appear).
pub(crate) fn pieces(lens: &[usize], start: usize, end: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut base = 0;
    for (i, &n) in lens.iter().enumerate() {
        let (lo, hi) = (start.max(base), end.min(base + n));
        if lo < hi {
            out.push((i, lo - base, hi - base));
        }
        base += n;
        if base >= end {
            break;
        }
    }
    out
}

/// Copies consecutive `bucket_bytes` windows of the concatenation of `vecs` into one buffer,
/// applies `f`, and scatters the result back.
fn for_each_bucket(
    vecs: &mut [Vec<f32>],
    bucket_bytes: usize,
    mut f: impl FnMut(&mut [f32]) -> Result<()>,
) -> Result<()> {
    let cap = (bucket_bytes / 4).max(1);
    let total: usize = vecs.iter().map(Vec::len).sum();
    let mut buf = Vec::with_capacity(cap.min(total));
    let mut start = 0;
    while start < total {
        let end = (start + cap).min(total);
        buf.clear();
        visit_range(vecs, start, end, |s| buf.extend_from_slice(s));
        f(&mut buf)?;
        let mut pos = 0;
        visit_range(vecs, start, end, |s| {
            s.copy_from_slice(&buf[pos..pos + s.len()]);
            pos += s.len();
        });
        start = end;
    }
    Ok(())
}

/// Calls `f` on the pieces of `vecs` that cover flat positions `start..end`, in order.
fn visit_range(vecs: &mut [Vec<f32>], start: usize, end: usize, mut f: impl FnMut(&mut [f32])) {
    let mut base = 0;
    for v in vecs.iter_mut() {
        let (lo, hi) = (start.max(base), end.min(base + v.len()));
        if lo < hi {
            f(&mut v[lo - base..hi - base]);
        }
        base += v.len();
        if base >= end {
            break;
        }
    }
}

fn to_flats(ts: &[Tensor]) -> Result<Vec<Vec<f32>>> {
    ts.iter().map(|t| Ok(t.to_vec_f32()?)).collect()
}

/// Replaces each tensor by one with its shape, dtype and device holding the matching vector.
fn write_back(ts: &mut [Tensor], flats: Vec<Vec<f32>>) -> Result<()> {
    for (t, v) in ts.iter_mut().zip(flats) {
        *t = rebuild(t, v)?;
    }
    Ok(())
}

/// A tensor with `t`'s shape, dtype and device holding `v`.
fn rebuild(t: &Tensor, v: Vec<f32>) -> Result<Tensor> {
    rebuild_as(t, v, t.shape())
}

/// A tensor of `shape` with `like`'s dtype and device holding `v`.
fn rebuild_as(t: &Tensor, v: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    let mut out = Tensor::from_vec(v, shape)?;
    if t.dtype() != DType::F32 {
        out = out.to_dtype(t.dtype())?;
    }
    if t.device() != Device::Cpu {
        out = out.to_device(t.device())?;
    }
    Ok(out)
}

/// What [`all_gather_rows_backward`] needs from the forward.
#[derive(Debug, Clone)]
pub struct GatherCache {
    rows: Vec<usize>,
    rank: usize,
    cols: usize,
}

impl GatherCache {
    /// Row offset of this rank's rows in the gathered matrix.
    pub fn offset(&self) -> usize {
        self.rows[..self.rank].iter().sum()
    }

    /// Number of rows each rank contributed.
    pub fn rows_per_rank(&self) -> &[usize] {
        &self.rows
    }
}

/// Gathers the rows of a 2-D tensor `x` (`[n_r, d]`) from every rank: `[Σ n_r, d]`, rank order.
pub fn all_gather_rows(comm: &mut dyn Communicator, x: &Tensor) -> Result<(Tensor, GatherCache)> {
    let [n, d] = *x.shape() else {
        return Err(DistError::Invalid(format!(
            "all_gather_rows needs a 2-D tensor, got {:?}",
            x.shape()
        )));
    };
    let counts = comm.all_gather(&[n as f32, d as f32])?;
    let rows: Vec<usize> = counts.chunks(2).map(|c| c[0] as usize).collect();
    if let Some(bad) = counts.chunks(2).position(|c| c[1] as usize != d) {
        return Err(DistError::Invalid(format!(
            "rank {bad} gathers rows of width {}, this rank {d}",
            counts[2 * bad + 1]
        )));
    }
    let lens: Vec<usize> = rows.iter().map(|r| r * d).collect();
    let all = comm.all_gather_tensor(x, &lens)?;
    let total: usize = rows.iter().sum();
    let cache = GatherCache {
        rows,
        rank: comm.rank(),
        cols: d,
    };
    Ok((all.reshape(&[total, d])?, cache))
}

/// Backward of [`all_gather_rows`]: sums `dy` (`[Σ n_r, d]`) over ranks and returns this
/// rank's rows (`[n_r, d]`). See the module docs for the math and the loss-scaling convention.
pub fn all_gather_rows_backward(
    comm: &mut dyn Communicator,
    cache: &GatherCache,
    dy: &Tensor,
) -> Result<Tensor> {
    let total: usize = cache.rows.iter().sum();
    if dy.shape() != [total, cache.cols] {
        return Err(DistError::Invalid(format!(
            "all_gather_rows_backward: gradient shape {:?}, expected [{total}, {}]",
            dy.shape(),
            cache.cols
        )));
    }
    let (start, n) = (cache.offset() * cache.cols, cache.rows[cache.rank]);
    comm.all_reduce_sum_range(dy, start..start + n * cache.cols, &[n, cache.cols])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_everything_once() {
        let mut vecs = vec![vec![1.0; 5], vec![2.0; 1], vec![], vec![3.0; 7]];
        let mut seen = Vec::new();
        for_each_bucket(&mut vecs, 12, |b| {
            seen.push(b.len());
            b.iter_mut().for_each(|x| *x *= 10.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [3, 3, 3, 3, 1]);
        assert_eq!(vecs, [vec![10.0; 5], vec![20.0; 1], vec![], vec![30.0; 7]]);
    }
}
