//! Multi-head self-attention with a key padding mask (batch first).

use hr_tensor::{ops, AttentionSpec, Rng, Tensor};

use super::{Dropout, Linear, LinearCache, Mode, Naming};
use crate::{ParamStore, Result};

/// How queries, keys and values are projected (the two naming schemes we import).
#[derive(Debug, Clone)]
pub enum InProj {
    /// One (3D, D) projection, PyTorch `nn.MultiheadAttention` (`in_proj_weight`, `in_proj_bias`).
    Fused(Linear),
    /// Three (D, D) projections, HF BERT (`query`, `key`, `value`).
    Separate {
        /// Query projection.
        q: Linear,
        /// Key projection.
        k: Linear,
        /// Value projection.
        v: Linear,
    },
}

/// Multi-head scaled dot-product self-attention.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    /// Input projections.
    pub in_proj: InProj,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
    /// Model width.
    pub dim: usize,
    /// Dropout on the attention probabilities.
    pub attn_dropout: Dropout,
}

/// Saved activations of a [`MultiHeadAttention`] forward: the per-head views of the
/// projections, the fused attention's output and row log-sum-exps (the (B, H, T, T)
/// probabilities are recomputed in the backward, never stored).
#[derive(Debug, Clone)]
pub struct AttentionCache {
    proj: Vec<LinearCache>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Tensor>,
    ctx: Tensor,
    lse: Tensor,
    spec: AttentionSpec,
    out: LinearCache,
}

/// (B, T, D) -> (B, T, H, D/H) (a view: no data moves).
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let [b, t, d] = [x.shape()[0], x.shape()[1], x.shape()[2]];
    Ok(x.reshape(&[b, t, heads, d / heads])?)
}

/// (B, T, H, Dh) -> (B, T, H*Dh).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    Ok(x.reshape(&[s[0], s[1], s[2] * s[3]])?)
}

impl MultiHeadAttention {
    /// Registers an attention of width `dim` and `heads` heads under `name`, with PyTorch's
    /// parameter names (`{name}.in_proj_weight`, `{name}.in_proj_bias`, `{name}.out_proj.*`) or
    /// HF BERT's (`{name}.self.{query,key,value}`, `{name}.output.dense`).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        naming: Naming,
        dim: usize,
        heads: usize,
        dropout: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        // A (dim, dim) projection `{name}.{n}`.
        let lin = |ps: &mut ParamStore, rng: &mut Rng, n: &str| {
            Linear::new(ps, &format!("{name}.{n}"), dim, dim, true, rng)
        };
        let (in_proj, out_proj) = match naming {
            Naming::Torch => {
                let (w, b) = (
                    format!("{name}.in_proj_weight"),
                    format!("{name}.in_proj_bias"),
                );
                let fused = Linear::new_named(ps, &w, Some(&b), dim, 3 * dim, rng)?;
                (InProj::Fused(fused), lin(ps, rng, "out_proj")?)
            }
            Naming::Bert => {
                let q = lin(ps, rng, "self.query")?;
                let k = lin(ps, rng, "self.key")?;
                let v = lin(ps, rng, "self.value")?;
                (InProj::Separate { q, k, v }, lin(ps, rng, "output.dense")?)
            }
        };
        Self::build(in_proj, out_proj, dim, heads, dropout)
    }

    fn build(
        in_proj: InProj,
        out_proj: Linear,
        dim: usize,
        heads: usize,
        dropout: f64,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(crate::Error::Config {
                key: "heads".into(),
                msg: format!("model width {dim} is not divisible by {heads} heads"),
            });
        }
        Ok(MultiHeadAttention {
            in_proj,
            out_proj,
            heads,
            dim,
            attn_dropout: Dropout::new(dropout),
        })
    }

    /// Projects `x` to (q, k, v), each (B, T, D).
    fn project(&self, ps: &ParamStore, x: &Tensor) -> Result<([Tensor; 3], Vec<LinearCache>)> {
        match &self.in_proj {
            InProj::Fused(l) => {
                let (qkv, c) = l.forward(ps, x)?;
                let d = self.dim;
                let part = |i: usize| ops::slice(&qkv, 2, i * d, d);
                Ok(([part(0)?, part(1)?, part(2)?], vec![c]))
            }
            InProj::Separate { q, k, v } => {
                let (qy, qc) = q.forward(ps, x)?;
                let (ky, kc) = k.forward(ps, x)?;
                let (vy, vc) = v.forward(ps, x)?;
                Ok(([qy, ky, vy], vec![qc, kc, vc]))
            }
        }
    }

    /// `x` (B, T, D); `mask` (B, T) with 1 = real token, 0 = padding (keys masked out).
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<(Tensor, AttentionCache)> {
        if x.rank() != 3 || x.shape()[2] != self.dim {
            return Err(hr_tensor::Error::ShapeMismatch {
                op: "MultiHeadAttention",
                lhs: x.shape().to_vec(),
                rhs: vec![0, 0, self.dim],
            }
            .into());
        }
        let ([q, k, v], proj) = self.project(ps, x)?;
        let (q, k, v) = (
            split_heads(&q, self.heads)?,
            split_heads(&k, self.heads)?,
            split_heads(&v, self.heads)?,
        );
        let mut spec = ops::attention_spec(&q, &k)?;
        if let Mode::Train { seed } = mode {
            // The same mask `Dropout` would draw for the (B, H, T, T) probabilities.
            (spec.dropout, spec.seed) = (self.attn_dropout.p, seed);
        }
        let (ctx, lse) = ops::attention(&q, &k, &v, mask, &spec)?;
        let (y, out) = self.out_proj.forward(ps, &merge_heads(&ctx)?)?;
        let cache = AttentionCache {
            proj,
            q,
            k,
            v,
            mask: mask.cloned(),
            ctx,
            lse,
            spec,
            out,
        };
        Ok((y, cache))
    }

    /// Accumulates parameter gradients and returns dx.
    pub fn backward(&self, ps: &mut ParamStore, c: &AttentionCache, dy: &Tensor) -> Result<Tensor> {
        let dctx = self.out_proj.backward(ps, &c.out, dy)?;
        let dctx = split_heads(&dctx, self.heads)?;
        let m = c.mask.as_ref();
        let [dq, dk, dv] = ops::attention_bwd(&c.q, &c.k, &c.v, m, &c.ctx, &c.lse, &dctx, &c.spec)?;
        let (dq, dk, dv) = (merge_heads(&dq)?, merge_heads(&dk)?, merge_heads(&dv)?);
        match &self.in_proj {
            InProj::Fused(l) => {
                let dqkv = ops::concat(&[&dq, &dk, &dv], 2)?;
                l.backward(ps, &c.proj[0], &dqkv)
            }
            InProj::Separate { q, k, v } => {
                let mut dx = q.backward(ps, &c.proj[0], &dq)?;
                ops::axpy(&mut dx, 1.0, &k.backward(ps, &c.proj[1], &dk)?)?;
                ops::axpy(&mut dx, 1.0, &v.backward(ps, &c.proj[2], &dv)?)?;
                Ok(dx)
            }
        }
    }
}
