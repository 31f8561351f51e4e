//! Ranking an index: exact search as one matrix product over every item (CPU GEMM or cuBLAS,
//! wherever the index lives), then the top k.

use hr_tensor::{ops, Tensor};

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

/// The rows of a (rows, n) tensor.
fn rows(s: &Tensor, n: usize) -> Result<Vec<Vec<f32>>> {
    Ok(s.to_vec_f32()?
        .chunks(n.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}

/// The `k` best of `scores`, best first (ties: lower position first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<Hit> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let better = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx.into_iter()
        .map(|item| Hit {
            item,
            score: scores[item],
        })
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
    let s = ops::matmul_ex(&q, &index.vectors, false, true, 1.0)?.to_vec_f32()?;
    let mut hits = top_k(&s, k + 1);
    hits.retain(|h| h.item != item);
    hits.truncate(k);
    Ok(hits)
}
