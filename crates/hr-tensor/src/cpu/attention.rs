//! Fused scaled-dot-product attention (the reference of `kernels/attention.cu`): one (b, h)
//! pair at a time, one query row at a time; scores and probabilities live in a row buffer
//! only. Row reductions accumulate in f64. Pairs run in parallel.

use rayon::prelude::*;

use super::{float_dispatch, out, CpuBackend};
use crate::backend::{AttentionOps, AttentionSpec, Qkv};
use crate::rng::counter_uniform;
use crate::{Elem, Float, Result, Tensor};

/// Index helpers of the (B, T, H, Dh) layout.
#[derive(Clone, Copy)]
struct Layout {
    heads: usize,
    dh: usize,
}

impl Layout {
    /// Offset of row `t` of head `h` in batch entry `b` of a tensor with `len` positions.
    fn at(self, b: usize, len: usize, t: usize, h: usize) -> usize {
        ((b * len + t) * self.heads + h) * self.dh
    }
}

/// Dropout multiplier of probability (b, h, i, j): 0 or 1 / (1 - p), as `ops::dropout` draws
/// it for the (B, H, Tq, Tk) probability tensor.
fn keep_scale(s: &AttentionSpec, bh: usize, i: usize, j: usize) -> f64 {
    if s.dropout <= 0.0 {
        return 1.0;
    }
    let idx = ((bh * s.q_len + i) * s.k_len + j) as u64;
    if counter_uniform(s.seed, idx) < s.dropout {
        0.0
    } else {
        1.0 / (1.0 - s.dropout)
    }
}

/// `sum_i a_i b_i` in f64 with eight independent partial sums (a fixed order the compiler can
/// vectorise; a plain iterator sum is one sequential chain).
fn dot64<T: Float>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += Elem::to_f64(x[l]) * Elem::to_f64(y[l]);
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += Elem::to_f64(*x) * Elem::to_f64(*y);
    }
    sum
}

/// Scaled scores of query row `qi` against every key into `row` (`-inf` for masked keys);
/// returns the row maximum (`-inf` when no key is kept).
fn scores_into<T: Float>(
    qi: &[T],
    k: &[T],
    keep: impl Fn(usize) -> bool,
    key_at: impl Fn(usize) -> usize,
    s: &AttentionSpec,
    row: &mut [f64],
) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for (j, r) in row.iter_mut().enumerate() {
        *r = match keep(j) {
            true => dot64(qi, &k[key_at(j)..key_at(j) + s.head_dim]) * s.scale,
            false => f64::NEG_INFINITY,
        };
        max = max.max(*r);
    }
    max
}

/// The mask row of batch entry `b` as a keep predicate.
fn keeper<'a, T: Float>(mask: Option<&'a [T]>, b: usize, tk: usize) -> impl Fn(usize) -> bool + 'a {
    move |j| mask.is_none_or(|m| m[b * tk + j] != T::c(0.0))
}

/// Forward of one (b, h) pair: writes its output rows (strided in `out`) and its lse row.
fn forward_pair<T: Float>(
    [q, k, v]: [&[T]; 3],
    mask: Option<&[T]>,
    s: &AttentionSpec,
    bh: usize,
) -> (Vec<(usize, Vec<T>)>, Vec<T>) {
    let (b, h) = (bh / s.heads, bh % s.heads);
    let lay = Layout {
        heads: s.heads,
        dh: s.head_dim,
    };
    let keep = keeper(mask, b, s.k_len);
    let key_at = |j: usize| lay.at(b, s.k_len, j, h);
    let mut row = vec![0f64; s.k_len];
    let mut acc = vec![0f64; s.head_dim];
    let mut rows = Vec::with_capacity(s.q_len);
    let mut lse = Vec::with_capacity(s.q_len);
    for i in 0..s.q_len {
        let qo = lay.at(b, s.q_len, i, h);
        // Normalised like the unfused softmax (exp(x - max) / sum): outputs are then exactly
        // as invariant to a shift of a row's scores as the composed ops.
        let max = scores_into(&q[qo..qo + s.head_dim], k, &keep, key_at, s, &mut row);
        let mut sum = 0.0;
        acc.fill(0.0);
        if max > f64::NEG_INFINITY {
            for r in row.iter_mut() {
                *r = (*r - max).exp();
                sum += *r;
            }
            for (j, &e) in row.iter().enumerate() {
                let p = e / sum * keep_scale(s, bh, i, j);
                if p != 0.0 {
                    let vj = &v[key_at(j)..key_at(j) + s.head_dim];
                    acc.iter_mut()
                        .zip(vj)
                        .for_each(|(a, x)| *a += p * Elem::to_f64(*x));
                }
            }
        }
        rows.push((qo, acc.iter().map(|&a| <T as Elem>::from_f64(a)).collect()));
        lse.push(<T as Elem>::from_f64(max + sum.ln()));
    }
    (rows, lse)
}

/// Gradients of one (b, h) pair: `(dq rows, dk rows, dv rows)`, each as (offset, values).
type PairGrads<T> = [Vec<(usize, Vec<T>)>; 3];

/// Backward of one (b, h) pair.
#[allow(clippy::too_many_arguments)]
fn backward_pair<T: Float>(
    [q, k, v]: [&[T]; 3],
    mask: Option<&[T]>,
    o: &[T],
    lse: &[T],
    dout: &[T],
    s: &AttentionSpec,
    bh: usize,
) -> PairGrads<T> {
    let (b, h, dh) = (bh / s.heads, bh % s.heads, s.head_dim);
    let lay = Layout { heads: s.heads, dh };
    let keep = keeper(mask, b, s.k_len);
    let key_at = |j: usize| lay.at(b, s.k_len, j, h);
    // dK and dV rows of every key, flat (k_len x dh).
    let mut dk = vec![0f64; s.k_len * dh];
    let mut dv = vec![0f64; s.k_len * dh];
    let mut dq_rows = Vec::with_capacity(s.q_len);
    let mut row = vec![0f64; s.k_len];
    for i in 0..s.q_len {
        let qo = lay.at(b, s.q_len, i, h);
        let (qi, doi) = (&q[qo..qo + dh], &dout[qo..qo + dh]);
        let l = Elem::to_f64(lse[bh * s.q_len + i]);
        let mut dqi = vec![0f64; dh];
        if l > f64::NEG_INFINITY {
            scores_into(qi, k, &keep, key_at, s, &mut row);
            // D_i = dout_i . out_i (holds with dropout: out = (P * M) V).
            let d_i = dot64(doi, &o[qo..qo + dh]);
            for (j, &sc) in row.iter().enumerate() {
                if sc == f64::NEG_INFINITY {
                    continue;
                }
                let p = (sc - l).exp();
                let m = keep_scale(s, bh, i, j);
                let (kj, vj) = (&k[key_at(j)..key_at(j) + dh], &v[key_at(j)..key_at(j) + dh]);
                let ds = p * (m * dot64(doi, vj) - d_i) * s.scale;
                let pm = p * m;
                let (dkj, dvj) = (&mut dk[j * dh..(j + 1) * dh], &mut dv[j * dh..(j + 1) * dh]);
                for c in 0..dh {
                    dvj[c] += pm * Elem::to_f64(doi[c]);
                    dqi[c] += ds * Elem::to_f64(kj[c]);
                    dkj[c] += ds * Elem::to_f64(qi[c]);
                }
            }
        }
        dq_rows.push((qo, dqi));
    }
    let conv = |rows: Vec<(usize, Vec<f64>)>| -> Vec<(usize, Vec<T>)> {
        rows.into_iter()
            .map(|(off, r)| (off, r.into_iter().map(<T as Elem>::from_f64).collect()))
            .collect()
    };
    let keyed = |g: Vec<f64>| {
        g.chunks(dh.max(1))
            .enumerate()
            .map(|(j, r)| (key_at(j), r.to_vec()))
            .collect()
    };
    [conv(dq_rows), conv(keyed(dk)), conv(keyed(dv))]
}

/// Scatters (offset, row) pairs into a zeroed buffer of `n` elements.
fn scatter<T: Float>(n: usize, parts: impl Iterator<Item = (usize, Vec<T>)>) -> Vec<T> {
    let mut buf = vec![T::c(0.0); n];
    for (off, r) in parts {
        buf[off..off + r.len()].copy_from_slice(&r);
    }
    buf
}

impl AttentionOps for CpuBackend {
    fn attention(&self, x: Qkv, spec: &AttentionSpec) -> Result<(Tensor, Tensor)> {
        let Qkv { q, k, v, mask } = x;
        float_dispatch!("attention", q.dtype(), |T| {
            let qkv = [q.as_slice::<T>()?, k.as_slice::<T>()?, v.as_slice::<T>()?];
            let m = mask.map(|m| m.as_slice::<T>()).transpose()?;
            let pairs: Vec<_> = (0..spec.batch * spec.heads)
                .into_par_iter()
                .map(|bh| forward_pair(qkv, m, spec, bh))
                .collect();
            let mut lse = Vec::with_capacity(spec.batch * spec.heads * spec.q_len);
            let mut rows = Vec::new();
            for (r, l) in pairs {
                rows.extend(r);
                lse.extend(l);
            }
            let y = scatter(q.numel(), rows.into_iter());
            Ok((
                out(y, q.shape())?,
                out(lse, &[spec.batch, spec.heads, spec.q_len])?,
            ))
        })
    }

    fn attention_bwd(&self, x: Qkv, t: [&Tensor; 3], spec: &AttentionSpec) -> Result<[Tensor; 3]> {
        let (Qkv { q, k, v, mask }, [o, lse, dout]) = (x, t);
        float_dispatch!("attention_bwd", q.dtype(), |T| {
            let qkv = [q.as_slice::<T>()?, k.as_slice::<T>()?, v.as_slice::<T>()?];
            let m = mask.map(|m| m.as_slice::<T>()).transpose()?;
            let (os, ls, ds) = (
                o.as_slice::<T>()?,
                lse.as_slice::<T>()?,
                dout.as_slice::<T>()?,
            );
            let pairs: Vec<PairGrads<T>> = (0..spec.batch * spec.heads)
                .into_par_iter()
                .map(|bh| backward_pair(qkv, m, os, ls, ds, spec, bh))
                .collect();
            let mut parts: [Vec<(usize, Vec<T>)>; 3] = Default::default();
            for p in pairs {
                for (dst, src) in parts.iter_mut().zip(p) {
                    dst.extend(src);
                }
            }
            let [pq, pk, pv] = parts;
            Ok([
                out(scatter(q.numel(), pq.into_iter()), q.shape())?,
                out(scatter(k.numel(), pk.into_iter()), k.shape())?,
                out(scatter(v.numel(), pv.into_iter()), v.shape())?,
            ])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_index_matches_the_probability_tensor_layout() {
        let s = AttentionSpec {
            batch: 2,
            heads: 3,
            q_len: 4,
            k_len: 5,
            head_dim: 2,
            scale: 1.0,
            dropout: 0.5,
            seed: 7,
        };
        // (b=1, h=2, i=3, j=4) is the last element of a (2, 3, 4, 5) tensor.
        let last = (2 * 3 * 4 * 5 - 1) as u64;
        let want = if counter_uniform(7, last) < 0.5 {
            0.0
        } else {
            2.0
        };
        assert_eq!(keep_scale(&s, 5, 3, 4), want);
    }
}
