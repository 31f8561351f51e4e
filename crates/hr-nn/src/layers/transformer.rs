//! Transformer encoder layer (pre-norm or post-norm) under PyTorch or HF BERT parameter names.

use hr_tensor::{ops, Rng, Tensor, Unary};

use super::{
    Activation, ActivationCache, AttentionCache, Dropout, DropoutCache, LayerNorm, LayerNormCache,
    Linear, LinearCache, Mode, MultiHeadAttention,
};
use crate::{ParamStore, Result};

/// Which parameter names a layer registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `nn.TransformerEncoderLayer`: self_attn, linear1, linear2, norm1, norm2.
    Torch,
    /// HF `BertLayer`: attention.self.*, attention.output.*, intermediate.dense, output.*.
    Bert,
}

/// Shape and behaviour of a [`TransformerEncoderLayer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformerLayerConfig {
    /// Model width.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Dropout after attention and after the feed-forward block.
    pub dropout: f64,
    /// Dropout on attention probabilities.
    pub attn_dropout: f64,
    /// Dropout between the feed-forward activation and its second linear (PyTorch has it,
    /// BERT does not).
    pub ffn_inner_dropout: bool,
    /// Pre-norm (`norm_first=True`) or post-norm.
    pub norm_first: bool,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Feed-forward activation.
    pub activation: Unary,
}

/// One encoder layer.
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    cfg: TransformerLayerConfig,
    attn: MultiHeadAttention,
    norm1: LayerNorm,
    norm2: LayerNorm,
    linear1: Linear,
    linear2: Linear,
    act: Activation,
    drop: Dropout,
}

/// Saved activations of a [`TransformerEncoderLayer`] forward.
#[derive(Debug, Clone)]
pub struct EncoderLayerCache {
    norm1: LayerNormCache,
    norm2: LayerNormCache,
    attn: AttentionCache,
    attn_drop: DropoutCache,
    linear1: LinearCache,
    act: ActivationCache,
    inner_drop: DropoutCache,
    linear2: LinearCache,
    ffn_drop: DropoutCache,
}

/// Results of the feed-forward block.
struct FfnOut {
    y: Tensor,
    linear1: LinearCache,
    act: ActivationCache,
    inner_drop: DropoutCache,
    linear2: LinearCache,
    ffn_drop: DropoutCache,
}

impl TransformerEncoderLayer {
    /// Registers a layer under `name` (e.g. "layers.0" or "encoder.layer.0").
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        naming: Naming,
        cfg: TransformerLayerConfig,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (d, f) = (cfg.dim, cfg.ffn);
        let n = |s: &str| format!("{name}.{s}");
        // The names of attention, norm1, linear1, linear2, norm2 (registered in this order).
        let [attn, norm1, linear1, linear2, norm2] = match naming {
            Naming::Torch => ["self_attn", "norm1", "linear1", "linear2", "norm2"],
            Naming::Bert => [
                "attention",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
        }
        .map(n);
        let attn = MultiHeadAttention::new(ps, &attn, naming, d, cfg.heads, cfg.attn_dropout, rng)?;
        let norm1 = LayerNorm::new(ps, &norm1, d, cfg.eps)?;
        let linear1 = Linear::new(ps, &linear1, d, f, true, rng)?;
        let linear2 = Linear::new(ps, &linear2, f, d, true, rng)?;
        let norm2 = LayerNorm::new(ps, &norm2, d, cfg.eps)?;
        let (act, drop) = (Activation::new(cfg.activation), Dropout::new(cfg.dropout));
        Ok(TransformerEncoderLayer {
            cfg,
            attn,
            norm1,
            norm2,
            linear1,
            linear2,
            act,
            drop,
        })
    }

    /// Registers `count` layers named `{prefix}.0`, `{prefix}.1`, ... (e.g. prefix
    /// "encoder.layer").
    pub fn stack(
        ps: &mut ParamStore,
        prefix: &str,
        count: usize,
        naming: Naming,
        cfg: TransformerLayerConfig,
        rng: &mut Rng,
    ) -> Result<Vec<Self>> {
        let layer = |i| format!("{prefix}.{i}");
        (0..count)
            .map(|i| Self::new(ps, &layer(i), naming, cfg, rng))
            .collect()
    }

    fn ffn(&self, ps: &ParamStore, x: &Tensor, mode: Mode) -> Result<FfnOut> {
        let (h, linear1) = self.linear1.forward(ps, x)?;
        let (a, act) = self.act.forward(&h)?;
        let inner = if self.cfg.ffn_inner_dropout {
            self.drop
        } else {
            Dropout::new(0.0)
        };
        let (a, inner_drop) = inner.forward(&a, mode.sub(2))?;
        let (h2, linear2) = self.linear2.forward(ps, &a)?;
        let (y, ffn_drop) = self.drop.forward(&h2, mode.sub(3))?;
        Ok(FfnOut {
            y,
            linear1,
            act,
            inner_drop,
            linear2,
            ffn_drop,
        })
    }

    fn ffn_bwd(&self, ps: &mut ParamStore, c: &EncoderLayerCache, dy: &Tensor) -> Result<Tensor> {
        let d = self.drop.backward(&c.ffn_drop, dy)?;
        let d = self.linear2.backward(ps, &c.linear2, &d)?;
        let d = self.drop.backward(&c.inner_drop, &d)?;
        let d = self.act.backward(&c.act, &d)?;
        self.linear1.backward(ps, &c.linear1, &d)
    }

    /// `x` (B, T, D), `mask` (B, T) with 1 = real token.
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<(Tensor, EncoderLayerCache)> {
        let attn_mode = mode.sub(0);
        if self.cfg.norm_first {
            let (h, norm1) = self.norm1.forward(ps, x)?;
            let (a, attn) = self.attn.forward(ps, &h, mask, attn_mode)?;
            let (a, attn_drop) = self.drop.forward(&a, mode.sub(1))?;
            let x1 = ops::add(x, &a)?;
            let (h2, norm2) = self.norm2.forward(ps, &x1)?;
            let f = self.ffn(ps, &h2, mode)?;
            let y = ops::add(&x1, &f.y)?;
            Ok((y, Self::cache(norm1, norm2, attn, attn_drop, f)))
        } else {
            let (a, attn) = self.attn.forward(ps, x, mask, attn_mode)?;
            let (a, attn_drop) = self.drop.forward(&a, mode.sub(1))?;
            let (x1, norm1) = self.norm1.forward(ps, &ops::add(x, &a)?)?;
            let f = self.ffn(ps, &x1, mode)?;
            let (y, norm2) = self.norm2.forward(ps, &ops::add(&x1, &f.y)?)?;
            Ok((y, Self::cache(norm1, norm2, attn, attn_drop, f)))
        }
    }

    fn cache(
        norm1: LayerNormCache,
        norm2: LayerNormCache,
        attn: AttentionCache,
        attn_drop: DropoutCache,
        f: FfnOut,
    ) -> EncoderLayerCache {
        EncoderLayerCache {
            norm1,
            norm2,
            attn,
            attn_drop,
            linear1: f.linear1,
            act: f.act,
            inner_drop: f.inner_drop,
            linear2: f.linear2,
            ffn_drop: f.ffn_drop,
        }
    }

    /// Accumulates parameter gradients and returns dx.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        c: &EncoderLayerCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        if self.cfg.norm_first {
            let mut dx1 = dy.clone();
            let dh2 = self.ffn_bwd(ps, c, dy)?;
            ops::axpy(&mut dx1, 1.0, &self.norm2.backward(ps, &c.norm2, &dh2)?)?;
            let da = self.drop.backward(&c.attn_drop, &dx1)?;
            let dh = self.attn.backward(ps, &c.attn, &da)?;
            let mut dx = dx1;
            ops::axpy(&mut dx, 1.0, &self.norm1.backward(ps, &c.norm1, &dh)?)?;
            Ok(dx)
        } else {
            let ds2 = self.norm2.backward(ps, &c.norm2, dy)?;
            let mut dx1 = ds2.clone();
            ops::axpy(&mut dx1, 1.0, &self.ffn_bwd(ps, c, &ds2)?)?;
            let ds1 = self.norm1.backward(ps, &c.norm1, &dx1)?;
            let da = self.drop.backward(&c.attn_drop, &ds1)?;
            let mut dx = ds1;
            ops::axpy(&mut dx, 1.0, &self.attn.backward(ps, &c.attn, &da)?)?;
            Ok(dx)
        }
    }
}
