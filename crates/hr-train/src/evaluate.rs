//! Embedding a split and scoring every caption against every clip (text -> audio retrieval).
//!
//! `none` / `late` fusion: clip and caption embeddings are computed once each and compared by
//! cosine similarity. `mid` fusion scores depend on the query, so every (clip chunk, caption
//! chunk) pair runs the item side with the cached CNN frames (the CNN runs once per clip).
//! With several item sets (full-sentence metadata under the authors' protocol: query k ranks
//! the clips fused with their caption (k+2) mod n) the CNN still runs once per clip and each
//! query batch is scored against its own item set.
//!
//! Evaluation is sharded over the ranks of a job: rank `r` of `W` embeds the `r`-th contiguous
//! slice of the clips (and, for cosine scoring, every `W`-th query batch); the pieces are
//! gathered and each score is computed by one rank, then the score matrix is gathered, so every
//! rank ranks the same matrix and reports the same metrics. The caller makes the model state
//! identical on every rank first (the trainer broadcasts rank 0's batch-norm statistics).

use hr_data::loader::{ClipBatch, Query, QueryBatch};
use hr_data::EvalSet;
use hr_dist::Communicator;
use hr_models::exchange::LocalRows;
use hr_models::fusion::FusionKind;
use hr_models::retriever::{HybridRetriever, RetrievalBatch};
use hr_models::text::TokenBatch;
use hr_nn::{Mode, ParamStore};
use hr_tensor::Tensor;

use crate::config::MissingMetadata;
use crate::error::Result;
use crate::metrics::{from_ranks, ranks, RetrievalMetrics};
use crate::model::present;

/// Everything an evaluation produced.
#[derive(Debug, Clone)]
pub struct EvalResult {
    /// R@k and mAP@10.
    pub metrics: RetrievalMetrics,
    /// Similarities `[queries, clips]` row-major.
    pub sim: Vec<f32>,
    /// Number of clips.
    pub clips: usize,
    /// The queries in row order.
    pub queries: Vec<Query>,
    /// 1-based rank of each query's target.
    pub ranks: Vec<usize>,
}

/// The item side of one chunk of clips after the CNN: frames once, metadata per item set.
struct ClipChunk {
    frames: Tensor,
    valid: Vec<u8>,
    metas: Vec<(TokenBatch, Vec<bool>)>,
}

impl ClipChunk {
    fn rows(&self) -> usize {
        self.frames.shape().first().copied().unwrap_or(0)
    }
}

/// This rank's contiguous share `[start, end)` of `n` clips.
fn clip_share(n: usize, rank: usize, world: usize) -> (usize, usize) {
    (n * rank / world, n * (rank + 1) / world)
}

/// Evaluates `model` on every caption and clip of `set` (items without metadata fused as
/// `missing` says), sharded over the ranks of `comm` (every rank calls it; all get the same
/// result).
pub fn evaluate(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    set: &EvalSet,
    batch_size: usize,
    missing: MissingMetadata,
    comm: &mut dyn Communicator,
) -> Result<EvalResult> {
    let n = set.num_clips();
    let share = clip_share(n, comm.rank(), comm.world());
    let progress = match comm.rank() {
        0 => Some(hr_core::Progress::new(
            "evaluation: audio",
            "clips",
            (share.1 - share.0) as u64,
        )),
        _ => None,
    };
    let encoded = encode_share(
        model,
        ps,
        set,
        batch_size,
        missing,
        share,
        progress.as_ref(),
    );
    let chunks = agree(comm, encoded)?;
    let qbatches = set.query_batches(batch_size)?;
    let queries = set.queries();
    let sim = match model.config().fusion {
        FusionKind::Mid => mid_scores(model, ps, &chunks, &qbatches, n, comm)?,
        _ => cosine_scores(model, ps, &chunks, &qbatches, n, comm)?,
    };
    let targets: Vec<usize> = queries.iter().map(|q| q.clip as usize).collect();
    let ranks = ranks(&sim, n, &targets);
    Ok(EvalResult {
        metrics: from_ranks(&ranks),
        sim,
        clips: n,
        queries,
        ranks,
    })
}

/// Runs the CNN on this rank's clips `[lo, hi)` in batches of `batch_size` (rank 0 shows its
/// `progress`).
fn encode_share(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    set: &EvalSet,
    batch_size: usize,
    missing: MissingMetadata,
    (lo, hi): (usize, usize),
    progress: Option<&hr_core::Progress>,
) -> Result<Vec<ClipChunk>> {
    let mut chunks = Vec::new();
    let mut start = lo;
    while start < hi {
        let take = batch_size.max(1).min(hi - start);
        let batch = set.clip_batch(start, take)?;
        chunks.push(encode_clips(model, ps, &batch, missing)?);
        if let Some(p) = progress {
            p.inc(take as u64);
        }
        start += take;
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(chunks)
}

/// Every rank learns whether its share failed anywhere before any rank enters a gather: a rank
/// whose own share failed returns its error, the others a matching one (non-finite outputs,
/// which the trainer skips, or a failure that stops it), so none waits for a rank that left.
fn agree<T>(comm: &mut dyn Communicator, local: Result<T>) -> Result<T> {
    let mut failed = match &local {
        Ok(_) => [0.0, 0.0],
        Err(e) if e.is_non_finite() => [1.0, 0.0],
        Err(_) => [0.0, 1.0],
    };
    comm.all_reduce_sum(&mut failed)?;
    match local {
        Err(e) => Err(e),
        Ok(_) if failed[1] > 0.0 => Err(crate::TrainError::config(
            "eval",
            "validation failed on another rank (its log names the cause)",
        )),
        Ok(_) if failed[0] > 0.0 => Err(crate::TrainError::Model(hr_models::Error::NonFinite {
            what: hr_models::NonFiniteValue::Frames,
            detail: "non-finite outputs on another rank".into(),
        })),
        ok => ok,
    }
}

fn encode_clips(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    b: &ClipBatch,
    missing: MissingMetadata,
) -> Result<ClipChunk> {
    let rows = b.clip_indices.len();
    let wf = Tensor::from_slice(&b.waveforms, &[rows, b.samples])?;
    let valid: Vec<usize> = b.valid_lengths.iter().map(|&v| v as usize).collect();
    let (frames, mask) = model.encode_audio(ps, &wf, &valid, Mode::Eval)?;
    Ok(ClipChunk {
        frames,
        valid: mask,
        metas: b
            .metadata
            .iter()
            .map(|m| (m.clone(), present(m, missing)))
            .collect(),
    })
}

/// A batch of `rows` rows (clip ids all distinct) for the eval-mode passes; host frames
/// (padded copies) go to the model's device first.
fn frame_batch(
    model: &HybridRetriever,
    ps: &ParamStore,
    frames: Tensor,
    valid: Vec<u8>,
    queries: TokenBatch,
    meta: (TokenBatch, Vec<bool>),
) -> Result<RetrievalBatch> {
    let rows = meta.1.len();
    Ok(RetrievalBatch {
        frames: frames.to_device(model.device(ps))?,
        frame_valid: valid,
        queries,
        metadata: meta.0,
        metadata_present: meta.1,
        clip_ids: (0..rows as u64).collect(),
    })
}

/// Cosine scores: item embeddings of this rank's clips are gathered from every rank, each rank
/// scores its own query batches (every `W`-th) against all items, and the rows are gathered.
fn cosine_scores(
    model: &HybridRetriever,
    ps: &ParamStore,
    chunks: &[ClipChunk],
    qbatches: &[QueryBatch],
    clips: usize,
    comm: &mut dyn Communicator,
) -> Result<Vec<f32>> {
    let sets = qbatches.iter().map(|q| q.item_set + 1).max().unwrap_or(1);
    let width = model.config().pooling.out_dim;
    let mut items = Vec::with_capacity(sets);
    for set in 0..sets {
        let mut mine = Vec::new();
        for c in chunks {
            let meta = c.metas[set].clone();
            let (frames, valid) = (c.frames.clone(), c.valid.clone());
            let batch = frame_batch(model, ps, frames, valid, TokenBatch::default(), meta)?;
            let t = model.encode_items(ps, &batch)?;
            mine.extend(normalized_rows(&t)?);
        }
        items.push(gather_exact(comm, &mine, (clips, width), "item values")?);
    }
    let (rank, world) = (comm.rank(), comm.world());
    let mut rows = Vec::new();
    for qb in qbatches.iter().skip(rank).step_by(world) {
        let queries = model.encode_queries(ps, &qb.tokens)?;
        for q in normalized_rows(&queries)?.chunks(width) {
            rows.extend(items[qb.item_set].chunks(width).map(|i| dot(q, i)));
        }
    }
    let gathered = comm.all_gather(&rows)?;
    // Rank r's rows are those of batches r, r + W, ... in order; put each at its query's row.
    let nq: usize = qbatches.iter().map(|q| q.tokens.rows).sum();
    let mut sim = vec![0f32; nq * clips];
    let mut at = 0;
    for r in 0..world {
        for qb in qbatches.iter().skip(r).step_by(world) {
            for &row in &qb.rows {
                let src = gathered.get(at..at + clips).ok_or_else(|| {
                    crate::TrainError::config("eval", "gathered fewer scores than queries")
                })?;
                sim[row * clips..(row + 1) * clips].copy_from_slice(src);
                at += clips;
            }
        }
    }
    Ok(sim)
}

/// Every rank's `data` concatenated, which must make `rows x cols` values (`what` names them).
fn gather_exact(
    comm: &mut dyn Communicator,
    data: &[f32],
    (rows, cols): (usize, usize),
    what: &str,
) -> Result<Vec<f32>> {
    let all = comm.all_gather(data)?;
    if all.len() != rows * cols {
        let detail = format!("gathered {} {what}, expected {rows} x {cols}", all.len());
        return Err(crate::TrainError::config("eval", detail));
    }
    Ok(all)
}

/// Mid-fusion scores: each rank scores its own clips against every query, and the columns are
/// gathered.
fn mid_scores(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    chunks: &[ClipChunk],
    qbatches: &[QueryBatch],
    clips: usize,
    comm: &mut dyn Communicator,
) -> Result<Vec<f32>> {
    let nq: usize = qbatches.iter().map(|q| q.tokens.rows).sum();
    let mine: usize = chunks.iter().map(ClipChunk::rows).sum();
    let cols = mid_columns(model, ps, chunks, qbatches, nq, mine)?;
    let gathered = gather_exact(comm, &cols, (nq, clips), "scores")?;
    // Rank r's block is [nq, its clips] row-major; its clips start at clip_share(r).0.
    let mut sim = vec![0f32; nq * clips];
    let mut at = 0;
    for r in 0..comm.world() {
        let (lo, hi) = clip_share(clips, r, comm.world());
        for q in 0..nq {
            sim[q * clips + lo..q * clips + hi].copy_from_slice(&gathered[at..at + hi - lo]);
            at += hi - lo;
        }
    }
    Ok(sim)
}

/// Scores `[nq, clips]` of this rank's `chunks` (holding `clips` clips) against every query.
fn mid_columns(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    chunks: &[ClipChunk],
    qbatches: &[QueryBatch],
    nq: usize,
    clips: usize,
) -> Result<Vec<f32>> {
    let mut sim = vec![0f32; nq * clips];
    for qb in qbatches {
        let mut c0 = 0;
        let nqb = qb.tokens.rows;
        for c in chunks {
            let ncb = c.rows();
            let b = nqb.max(ncb);
            let frames = pad_tensor_rows(&c.frames, b)?;
            let valid = pad_rows(&c.valid, ncb, b);
            let (mt, mp) = &c.metas[qb.item_set];
            let meta = (pad_tokens(mt, b), pad_rows(mp, ncb, b));
            let q = pad_tokens(&qb.tokens, b);
            let batch = frame_batch(model, ps, frames, valid, q, meta)?;
            let (out, _) = model.forward(ps, &batch, Mode::Eval, &mut LocalRows)?;
            let s = out
                .scores
                .ok_or_else(|| crate::TrainError::config("model.fusion", "no scores"))?
                .to_vec_f32()?;
            for (qi, &row) in qb.rows.iter().enumerate() {
                for ci in 0..ncb {
                    sim[row * clips + c0 + ci] = s[ci * b + qi];
                }
            }
            c0 += ncb;
        }
    }
    Ok(sim)
}

/// Repeats the last of `n` equal-length rows of `v` until there are `rows` rows.
fn pad_rows<T: Clone>(v: &[T], n: usize, rows: usize) -> Vec<T> {
    let w = v.len() / n.max(1);
    let mut out = v.to_vec();
    for _ in n..rows {
        out.extend_from_slice(&v[(n - 1) * w..n * w]);
    }
    out
}

fn pad_tokens(t: &TokenBatch, rows: usize) -> TokenBatch {
    TokenBatch {
        ids: pad_rows(&t.ids, t.rows, rows),
        mask: pad_rows(&t.mask, t.rows, rows),
        rows: rows.max(t.rows),
        cols: t.cols,
    }
}

fn pad_tensor_rows(t: &Tensor, rows: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    let n = shape[0];
    let v = pad_rows(&t.to_vec_f32()?, n, rows);
    shape[0] = rows.max(n);
    Ok(Tensor::from_vec(v, &shape)?)
}

/// The rows of the (rows, width) `t` scaled to unit length, flat.
fn normalized_rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(unit_rows(&t.to_vec_f32()?, t.dim("eval", 1)?))
}

/// Rows of width `w` scaled to unit length: the cosine normalisation of evaluation, which search
/// shares so that its scores are evaluation's.
pub fn unit_rows(v: &[f32], w: usize) -> Vec<f32> {
    v.chunks(w.max(1))
        .flat_map(|r| {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(move |x| x / norm)
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank of a world whose other ranks report `others` ([non-finite, other failures]).
    struct Others([f32; 2]);

    impl Communicator for Others {
        fn rank(&self) -> usize {
            0
        }
        fn world(&self) -> usize {
            2
        }
        fn all_reduce_sum(&mut self, buf: &mut [f32]) -> hr_dist::Result<()> {
            buf.iter_mut().zip(self.0).for_each(|(b, o)| *b += o);
            Ok(())
        }
        fn all_gather(&mut self, data: &[f32]) -> hr_dist::Result<Vec<f32>> {
            Ok(data.to_vec())
        }
        fn broadcast(&mut self, _buf: &mut [f32], _root: usize) -> hr_dist::Result<()> {
            Ok(())
        }
        fn barrier(&mut self) -> hr_dist::Result<()> {
            Ok(())
        }
    }

    fn non_finite() -> crate::TrainError {
        crate::TrainError::Model(hr_models::Error::NonFinite {
            what: hr_models::NonFiniteValue::Frames,
            detail: "flat index 0".into(),
        })
    }

    /// A failure on any rank reaches every rank before the gathers, as the same kind.
    #[test]
    fn every_rank_learns_of_a_failed_share() {
        assert_eq!(agree(&mut Others([0.0, 0.0]), Ok(3)).unwrap(), 3);
        let e = agree(&mut Others([1.0, 0.0]), Ok(3)).unwrap_err();
        assert!(e.is_non_finite(), "{e}");
        let e = agree(&mut Others([0.0, 1.0]), Ok(3)).unwrap_err();
        assert!(
            !e.is_non_finite() && e.to_string().contains("another rank"),
            "{e}"
        );
        let own = agree::<()>(&mut Others([0.0, 0.0]), Err(non_finite())).unwrap_err();
        assert!(own.is_non_finite());
    }
}
