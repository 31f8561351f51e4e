//! Layout kernels: permute, concat, slice / pad, embedding gather and its scatter-add.
//!
//! Pure data movement works for every storage dtype (f32, f64, bf16, f16); the embedding
//! backward accumulates and therefore runs in f32/f64, and for bf16 through `bf16_via_f32`
//! (f32 sums, rounded once).

use half::{bf16, f16};
use rayon::prelude::*;

use super::{bf16_via_f32, float_dispatch, is_bf16, out, strides, CpuBackend, PAR_THRESHOLD};
use crate::backend::LayoutOps;
use crate::checks::split_at_axis;
use crate::{DType, Elem, Error, Float, Result, Tensor};

/// Runs `$body` with `$T` bound to the Rust type of `$dtype` (every storage dtype).
macro_rules! elem_dispatch {
    ($dtype:expr, |$T:ident| $body:block) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
        }
    };
}

/// The permutation reduced to its essentials: output axes as `(size, input stride)` with
/// size-1 axes dropped and output axes merged where they are contiguous in the input.
fn reduce_permutation(in_shape: &[usize], perm: &[usize]) -> Vec<(usize, usize)> {
    let st = strides(in_shape);
    let mut axes: Vec<(usize, usize)> = Vec::with_capacity(perm.len());
    for &p in perm {
        let (size, stride) = (in_shape[p], st[p]);
        if size == 1 {
            continue;
        }
        match axes.last_mut() {
            // The previous output axis steps exactly over this whole axis: merge.
            Some(last) if last.1 == stride * size => {
                last.0 *= size;
                last.1 = stride;
            }
            _ => axes.push((size, stride)),
        }
    }
    axes
}

/// Input offset of the first element of output row `r` (rows = all axes but the last of
/// `outer`, given as `(size, input stride)`).
#[inline]
fn row_offset(mut r: usize, outer: &[(usize, usize)]) -> usize {
    let mut off = 0;
    for &(size, stride) in outer.iter().rev() {
        off += (r % size) * stride;
        r /= size;
    }
    off
}

/// Side of the square tiles of the blocked 2-D transpose.
const TILE: usize = 32;

/// `out = x` permuted; contiguous inner runs are copied with `copy_from_slice`, a transposed
/// last axis is gathered in cache-friendly tiles.
fn permute_k<T: Elem + Default>(x: &[T], in_shape: &[usize], perm: &[usize]) -> Vec<T> {
    let total = x.len();
    if total == 0 {
        return Vec::new();
    }
    let axes = reduce_permutation(in_shape, perm);
    if axes.len() <= 1 {
        // Identity after reduction (the layout of the data does not change).
        return x.to_vec();
    }
    let mut y = vec![T::default(); total];
    let (run, run_stride) = axes[axes.len() - 1];
    let outer = &axes[..axes.len() - 1];
    if run_stride == 1 {
        // Each output row of `run` elements is a contiguous input run.
        let copy = |(r, yr): (usize, &mut [T])| {
            let o = row_offset(r, outer);
            yr.copy_from_slice(&x[o..o + run]);
        };
        if total >= PAR_THRESHOLD {
            y.par_chunks_mut(run).enumerate().for_each(copy);
        } else {
            y.chunks_mut(run).enumerate().for_each(copy);
        }
        return y;
    }
    // The last output axis is strided in the input. Tile over the last two output axes
    // (rows x run) so both reads and writes stay within a few cache lines.
    let (rows2, rows2_stride) = axes[axes.len() - 2];
    let batch_axes = &axes[..axes.len() - 2];
    let plane = rows2 * run;
    let do_plane = |(b, yp): (usize, &mut [T])| {
        let base = row_offset(b, batch_axes);
        for i0 in (0..rows2).step_by(TILE) {
            let i1 = (i0 + TILE).min(rows2);
            for j0 in (0..run).step_by(TILE) {
                let j1 = (j0 + TILE).min(run);
                for j in j0..j1 {
                    let src = base + j * run_stride;
                    for i in i0..i1 {
                        yp[i * run + j] = x[src + i * rows2_stride];
                    }
                }
            }
        }
    };
    if total >= PAR_THRESHOLD && total / plane > 1 {
        y.par_chunks_mut(plane).enumerate().for_each(do_plane);
    } else if total >= PAR_THRESHOLD {
        // One big plane: split it by bands of TILE output rows.
        y.par_chunks_mut(TILE * run)
            .enumerate()
            .for_each(|(band, yb)| {
                let i0 = band * TILE;
                let n_rows = yb.len() / run;
                for j0 in (0..run).step_by(TILE) {
                    let j1 = (j0 + TILE).min(run);
                    for j in j0..j1 {
                        let src = j * run_stride + i0 * rows2_stride;
                        for i in 0..n_rows {
                            yb[i * run + j] = x[src + i * rows2_stride];
                        }
                    }
                }
            });
    } else {
        y.chunks_mut(plane).enumerate().for_each(do_plane);
    }
    y
}

/// Concatenation along an axis: `outer` blocks, each made of every input's block in turn.
fn concat_k<T: Elem + Default>(xs: &[&[T]], blocks: &[usize], outer: usize) -> Vec<T> {
    let row: usize = blocks.iter().sum();
    let mut y = vec![T::default(); outer * row];
    if row == 0 {
        return y;
    }
    let fill = |(o, yr): (usize, &mut [T])| {
        let mut at = 0;
        for (x, &b) in xs.iter().zip(blocks) {
            yr[at..at + b].copy_from_slice(&x[o * b..(o + 1) * b]);
            at += b;
        }
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(row).enumerate().for_each(fill);
    } else {
        y.chunks_mut(row).enumerate().for_each(fill);
    }
    y
}

/// Copies entries `[start, start + len)` of the middle axis of `x` (outer, dim, inner).
fn slice_k<T: Elem + Default>(
    x: &[T],
    (outer, dim, inner): (usize, usize, usize),
    start: usize,
    len: usize,
) -> Vec<T> {
    let blk = len * inner;
    let mut y = vec![T::default(); outer * blk];
    if blk == 0 {
        return y;
    }
    let fill = |(o, yr): (usize, &mut [T])| {
        let s = (o * dim + start) * inner;
        yr.copy_from_slice(&x[s..s + blk]);
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(blk).enumerate().for_each(fill);
    } else {
        y.chunks_mut(blk).enumerate().for_each(fill);
    }
    y
}

/// Places `x` (outer, len, inner) at `start` of a zero (outer, total, inner) buffer.
fn pad_k<T: Elem + Default>(
    x: &[T],
    (outer, len, inner): (usize, usize, usize),
    start: usize,
    total: usize,
) -> Vec<T> {
    let blk = total * inner;
    let mut y = vec![T::default(); outer * blk];
    if blk == 0 || len * inner == 0 {
        return y;
    }
    let fill = |(o, yr): (usize, &mut [T])| {
        let n = len * inner;
        yr[start * inner..start * inner + n].copy_from_slice(&x[o * n..(o + 1) * n]);
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(blk).enumerate().for_each(fill);
    } else {
        y.chunks_mut(blk).enumerate().for_each(fill);
    }
    y
}

/// Gathers rows of `table` (vocab, d) (ids below vocab: checked by the op).
fn embedding_k<T: Elem + Default>(table: &[T], d: usize, ids: &[u32]) -> Vec<T> {
    let mut y = vec![T::default(); ids.len() * d];
    if d == 0 {
        return y;
    }
    let fill = |(i, yr): (usize, &mut [T])| {
        let s = ids[i] as usize * d;
        yr.copy_from_slice(&table[s..s + d]);
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(d).enumerate().for_each(fill);
    } else {
        y.chunks_mut(d).enumerate().for_each(fill);
    }
    y
}

/// Positions of `ids` bucketed by id (a stable counting sort): the positions holding id `v` are
/// `order[start[v]..start[v + 1]]`, in increasing order. Ids must be below `vocab` (checked by
/// the callers). Shared with the CUDA backend's deterministic bf16 embedding backward.
pub(crate) fn id_buckets(ids: &[u32], vocab: usize) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; vocab + 1];
    for &id in ids {
        start[id as usize + 1] += 1;
    }
    for v in 0..vocab {
        start[v + 1] += start[v];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; ids.len()];
    for (pos, &id) in ids.iter().enumerate() {
        order[fill[id as usize]] = pos;
        fill[id as usize] += 1;
    }
    (start, order)
}

/// Scatter-add of `dy` (n, d) into a zero (vocab, d) gradient. Deterministic: positions are
/// bucketed by id ([`id_buckets`]) and each vocabulary row sums its positions in order, so
/// rows are independent and can run in parallel.
fn embedding_bwd_k<T: Float>(dy: &[T], d: usize, ids: &[u32], vocab: usize) -> Vec<T> {
    let mut g = vec![T::zero(); vocab * d];
    if d == 0 || ids.is_empty() {
        return g;
    }
    let (start, order) = id_buckets(ids, vocab);
    let row = |(v, gr): (usize, &mut [T])| {
        for &pos in &order[start[v]..start[v + 1]] {
            for (a, &b) in gr.iter_mut().zip(&dy[pos * d..(pos + 1) * d]) {
                *a = *a + b;
            }
        }
    };
    if dy.len() >= PAR_THRESHOLD {
        g.par_chunks_mut(d).enumerate().for_each(row);
    } else {
        g.chunks_mut(d).enumerate().for_each(row);
    }
    g
}

impl LayoutOps for CpuBackend {
    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        elem_dispatch!(x.dtype(), |T| {
            out(permute_k::<T>(x.as_slice()?, x.shape(), perm), &shape)
        })
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let (outer, _, inner) = split_at_axis(first.shape(), axis);
        let mut shape = first.shape().to_vec();
        shape[axis] = xs
            .iter()
            .map(|t| t.shape().get(axis).copied().unwrap_or(0))
            .sum();
        let blocks: Vec<usize> = xs
            .iter()
            .map(|t| t.shape().get(axis).copied().unwrap_or(0) * inner)
            .collect();
        elem_dispatch!(first.dtype(), |T| {
            let slices = xs
                .iter()
                .map(|t| t.as_slice::<T>())
                .collect::<Result<Vec<_>>>()?;
            out(concat_k::<T>(&slices, &blocks, outer), &shape)
        })
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        let geo = split_at_axis(x.shape(), axis);
        let mut shape = x.shape().to_vec();
        shape[axis] = len;
        elem_dispatch!(x.dtype(), |T| {
            out(slice_k::<T>(x.as_slice()?, geo, start, len), &shape)
        })
    }

    fn pad_axis(&self, x: &Tensor, axis: usize, start: usize, total: usize) -> Result<Tensor> {
        let geo = split_at_axis(x.shape(), axis);
        let mut shape = x.shape().to_vec();
        shape[axis] = total;
        elem_dispatch!(x.dtype(), |T| {
            out(pad_k::<T>(x.as_slice()?, geo, start, total), &shape)
        })
    }

    fn embedding(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let d = table.shape()[1];
        elem_dispatch!(table.dtype(), |T| {
            out(embedding_k::<T>(table.as_slice()?, d, ids), &[ids.len(), d])
        })
    }

    fn embedding_bwd(&self, dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
        if is_bf16(dy) {
            return bf16_via_f32(&[dy], |t| self.embedding_bwd(t[0], ids, vocab));
        }
        let d = dy.shape()[1];
        float_dispatch!("embedding_bwd", dy.dtype(), |T| {
            out(
                embedding_bwd_k::<T>(dy.as_slice()?, d, ids, vocab),
                &[vocab, d],
            )
        })
    }
}
