//! Ranking an index: exact search as one matrix product over every item, then the top k. On a
//! GPU the product is cuBLAS's; on the CPU, where one query against a large index is bound by
//! memory bandwidth, it is one pass over the rows on every core ([`dot_rows`]), from f32 or f16
//! storage (f16 halves the bytes read). Mid fusion scores with two products through the model.

use half::{f16, slice::HalfFloatSliceExt};
use hr_tensor::{ops, DType, Device, Tensor};
use rayon::prelude::*;

use crate::encoder::{Encoder, QueryVectors};
use crate::error::{Error, Result};
use crate::index::Index;

/// One ranked item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position of the item in the index.
    pub item: usize,
    /// Its score: cosine similarity (`none`, `late`, and clip-to-clip), or mid fusion's
    /// score scaled by `1 / tau` (the scores `hr-eval` ranks).
    pub score: f32,
}

/// Scores `[queries][items]` of every item of `index` for the query side `q`.
pub fn scores(index: &Index, enc: &Encoder, q: &QueryVectors) -> Result<Vec<Vec<f32>>> {
    let s = match (q, &index.meta_vectors) {
        (QueryVectors::Cosine(q), _) if index.vectors.device() == Device::Cpu => {
            let q = q.to_vec_f32()?;
            let d = index.manifest.plan.dim;
            return q
                .chunks(d.max(1))
                .map(|q| dot_rows(&index.vectors, q))
                .collect();
        }
        // (Nq, N) = Q V^T
        (QueryVectors::Cosine(q), _) => ops::matmul_ex(q, &index.vectors, false, true, 1.0)?,
        (QueryVectors::Mid(mq), Some(meta)) => {
            // (N, Nq) -> (Nq, N)
            let s = enc
                .model
                .mid_scores(&index.vectors, meta, &index.present, mq)?;
            ops::transpose(&s, 0, 1)?
        }
        (QueryVectors::Mid(_), None) => {
            return Err(Error::BadRequest(
                "the index holds no metadata tokens: it was not built with a mid-fusion model"
                    .into(),
            ))
        }
    };
    rows(&s, index.len())
}

/// `v q` for host vectors `v` (N, d) in f32 or f16 and a query `q` (d): every row's dot
/// product, rows split over the cores.
pub fn dot_rows(v: &Tensor, q: &[f32]) -> Result<Vec<f32>> {
    const ROWS: usize = 1024;
    let d = q.len().max(1);
    let mut out = vec![0f32; v.numel() / d];
    match v.dtype() {
        DType::F16 => {
            let v = v.as_slice::<f16>()?;
            out.par_chunks_mut(ROWS)
                .zip(v.par_chunks(ROWS * d))
                .for_each(|(o, block)| {
                    let mut row32 = vec![0f32; d];
                    for (s, row) in o.iter_mut().zip(block.chunks_exact(d)) {
                        row.convert_to_f32_slice(&mut row32);
                        *s = dot(&row32, q);
                    }
                });
        }
        _ => {
            let v = v.as_slice::<f32>()?;
            out.par_chunks_mut(ROWS)
                .zip(v.par_chunks(ROWS * d))
                .for_each(|(o, block)| {
                    for (s, row) in o.iter_mut().zip(block.chunks_exact(d)) {
                        *s = dot(row, q);
                    }
                });
        }
    }
    Ok(out)
}

/// A dot product in 16 independent lanes (vectorised without reassociation flags).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The rows of a (rows, n) tensor.
fn rows(s: &Tensor, n: usize) -> Result<Vec<Vec<f32>>> {
    Ok(s.to_vec_f32()?
        .chunks(n.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}

/// The `k` best of `scores`, best first (ties: lower position first); evaluation's selection.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Hit> {
    hr_train::metrics::top_k(scores, k)
        .into_iter()
        .map(|(item, score)| Hit { item, score })
        .collect()
}

/// The `k` best items for each text query.
pub fn search_text<S: AsRef<str>>(
    index: &Index,
    enc: &Encoder,
    texts: &[S],
    k: usize,
) -> Result<Vec<Vec<Hit>>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let q = enc.embed_queries(texts)?;
    Ok(scores(index, enc, &q)?
        .iter()
        .map(|row| top_k(row, k))
        .collect())
}

/// The `k` items most similar to item `item` (cosine of their `embedding` vectors: the item
/// embedding, or the audio token for mid fusion), the item itself left out.
pub fn search_like(index: &Index, item: usize, k: usize) -> Result<Vec<Hit>> {
    let q = ops::slice(&index.vectors, 0, item, 1)?;
    let s = match index.vectors.device() {
        Device::Cpu => dot_rows(&index.vectors, &q.to_vec_f32()?)?,
        _ => ops::matmul_ex(&q, &index.vectors, false, true, 1.0)?.to_vec_f32()?,
    };
    let mut hits = top_k(&s, k + 1);
    hits.retain(|h| h.item != item);
    hits.truncate(k);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_the_head_of_the_full_order() {
        let s = [0.1, 0.9, -0.3, 0.9, 0.5, 0.0];
        let got: Vec<usize> = top_k(&s, 3).iter().map(|h| h.item).collect();
        assert_eq!(got, [1, 3, 4], "ties keep the lower position first");
        assert_eq!(top_k(&s, 10).len(), 6);
        assert!(top_k(&s, 0).is_empty());
    }

    #[test]
    fn dot_rows_matches_a_plain_product_in_f32_and_f16() {
        let (n, d) = (2500, 37);
        let mut rng = hr_tensor::Rng::new(3);
        let v: Vec<f32> = (0..n * d).map(|_| rng.normal_f32()).collect();
        let q: Vec<f32> = (0..d).map(|_| rng.normal_f32()).collect();
        let want: Vec<f64> = v
            .chunks(d)
            .map(|r| {
                r.iter()
                    .zip(&q)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            })
            .collect();
        let t = Tensor::from_vec(v, &[n, d]).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F16, 2e-2)] {
            let got = dot_rows(&t.to_dtype(dtype).unwrap(), &q).unwrap();
            assert_eq!(got.len(), n);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() < tol * (1.0 + w.abs()),
                    "{dtype:?}: {g} vs {w}"
                );
            }
        }
    }
}
