//! Row exchange between data-parallel ranks, so the contrastive loss sees the global batch.
//!
//! With data parallelism each rank embeds its share of the global batch; the loss needs every
//! item and query of the global batch as negatives. [`HybridRetriever::forward`]
//! gathers the embeddings (rows) of every rank through a [`RowExchange`] right before the loss,
//! every rank then computes the same global loss, and the backward sends each rank the gradient
//! of its own rows.
//!
//! Gradient convention (torch / open_clip): [`RowExchange::gather_rows_bwd`] *sums* the row
//! gradients over ranks, so a rank's local parameter gradients are `W` times its share of the
//! global gradient while the parameters used after the gather (mid fusion's scoring) get the
//! full global gradient on every rank; averaging every parameter gradient over the `W` ranks
//! then gives exactly the gradient of one process that ran the whole global batch.
//!
//! [`HybridRetriever::forward`]: crate::retriever::HybridRetriever::forward

use crate::Result;
use hr_tensor::Tensor;

/// Collectives the model needs from a data-parallel runtime (implemented by the trainer on top
/// of its communicator). Every rank calls the same methods in the same order.
pub trait RowExchange {
    /// Concatenates every rank's `x` (`[n_r, d]`) in rank order; returns the global matrix
    /// (`[Σ n_r, d]`) and the row offset of this rank's rows in it.
    fn gather_rows(&mut self, x: &Tensor) -> Result<(Tensor, usize)>;
    /// Backward of [`RowExchange::gather_rows`]: sums `dy` (`[Σ n_r, d]`) over ranks and returns
    /// rows `offset..offset + rows`.
    fn gather_rows_bwd(&mut self, dy: &Tensor, offset: usize, rows: usize) -> Result<Tensor>;
    /// Concatenates every rank's `v` in rank order.
    fn gather_u64(&mut self, v: &[u64]) -> Result<Vec<u64>>;
}

/// The exchange of a single process: every rank is this one, gathers are the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRows;

impl RowExchange for LocalRows {
    fn gather_rows(&mut self, x: &Tensor) -> Result<(Tensor, usize)> {
        Ok((x.clone(), 0))
    }

    fn gather_rows_bwd(&mut self, dy: &Tensor, _offset: usize, _rows: usize) -> Result<Tensor> {
        Ok(dy.clone())
    }

    fn gather_u64(&mut self, v: &[u64]) -> Result<Vec<u64>> {
        Ok(v.to_vec())
    }
}

/// Where this rank's rows sit in a gathered matrix (saved for the backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    /// First row of this rank.
    pub offset: usize,
    /// Number of rows of this rank.
    pub rows: usize,
}

/// Gathers `x` and records this rank's span.
pub(crate) fn gather(ex: &mut dyn RowExchange, x: &Tensor) -> Result<(Tensor, RowSpan)> {
    let rows = x.dim("gather_rows", 0)?;
    let (g, offset) = ex.gather_rows(x)?;
    Ok((g, RowSpan { offset, rows }))
}

/// This rank's rows of the summed gradient of a gathered matrix.
pub(crate) fn scatter(ex: &mut dyn RowExchange, dy: &Tensor, span: RowSpan) -> Result<Tensor> {
    ex.gather_rows_bwd(dy, span.offset, span.rows)
}

/// Gathers presence flags (as 0/1).
pub(crate) fn gather_flags(ex: &mut dyn RowExchange, flags: &[bool]) -> Result<Vec<bool>> {
    let v: Vec<u64> = flags.iter().map(|&f| u64::from(f)).collect();
    Ok(ex.gather_u64(&v)?.into_iter().map(|x| x != 0).collect())
}
