//! The audio pooling transformer ("sequence model", docs/spec-retrieval.md section 1).
//!
//! Frames (B, T, C) -> `Linear(C -> d)`; global token = learnable bias + mean of ALL projected
//! frames (padding included, before the positional encoding); frames + fixed sinusoidal PE times
//! a learnable scalar, then dropout (frames only); `[global, frames...]` through N pre-norm
//! encoder layers with a key padding mask; token 0 -> `Linear(d -> out)`. With N = 0: masked mean
//! of the valid frames -> `Linear(C -> out)`.
//!
//! Parameter names (PyTorch module of the reference fixture): `proj.*`, `global_bias`,
//! `pe_scale`, the `pe` buffer, `layers.layers.{i}.*` and `out.*`, under an optional prefix.

use crate::{Error, Result};
use hr_nn::layers::{
    Dropout, DropoutCache, EncoderLayerCache, Linear, LinearCache, Mode, Naming,
    TransformerEncoderLayer, TransformerLayerConfig,
};
use hr_nn::{ParamId, ParamStore};
use hr_tensor::{ops, DType, Rng, Tensor, Unary};
use serde::{Deserialize, Serialize};

use crate::bert::{join, tensor_in};

/// Shape of the pooling transformer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolingConfig {
    /// Width of the input frames (3840 for mn40).
    pub in_dim: usize,
    /// Model width d.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Number of encoder layers N (0 = masked mean + Linear).
    pub layers: usize,
    /// Output width (the shared embedding space).
    pub out_dim: usize,
    /// Dropout after the positional encoding and inside the layers.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Rows of the positional encoding (longest frame sequence).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_dropout() -> f64 {
    0.1
}

fn default_max_len() -> usize {
    192
}

impl PoolingConfig {
    fn layer_config(&self) -> TransformerLayerConfig {
        TransformerLayerConfig {
            dim: self.dim,
            heads: self.heads,
            ffn: self.ffn,
            dropout: self.dropout,
            attn_dropout: self.dropout,
            ffn_inner_dropout: true,
            norm_first: true,
            eps: 1e-5,
            activation: Unary::Gelu,
        }
    }
}

pub use hr_nn::layers::sinusoidal_pe;

/// The frame mask of clips zero-padded at the end: row b has its first
/// `ceil(fractions[b] * t)` frames valid (1), the rest 0; `(B * t)` entries.
pub fn frame_mask(fractions: &[f64], t: usize) -> Vec<u8> {
    fractions
        .iter()
        .flat_map(|&f| {
            let n = ((f.clamp(0.0, 1.0) * t as f64).ceil() as usize).min(t);
            (0..t).map(move |i| u8::from(i < n))
        })
        .collect()
}

/// The learnable parts of the transformer variant.
#[derive(Debug, Clone)]
struct Encoder {
    proj: Linear,
    global_bias: ParamId,
    pe_scale: ParamId,
    pe: ParamId,
    layers: Vec<TransformerEncoderLayer>,
}

/// The audio pooling transformer.
#[derive(Debug, Clone)]
pub struct AudioPooling {
    cfg: PoolingConfig,
    enc: Option<Encoder>,
    drop: Dropout,
    out: Linear,
    params: Vec<ParamId>,
}

/// Saved activations of [`AudioPooling::embed_frames`].
#[derive(Debug, Clone)]
pub struct FramesCache {
    proj: LinearCache,
    proj_shape: Vec<usize>,
    pe: Tensor,
    drop: DropoutCache,
}

/// Saved activations of [`AudioPooling::forward`].
#[derive(Debug, Clone)]
pub enum PoolingCache {
    /// N >= 1.
    Transformer {
        /// Frame embedding.
        frames: FramesCache,
        /// Encoder layers.
        layers: Vec<EncoderLayerCache>,
        /// Sequence length (1 + T).
        len: usize,
        /// Output projection.
        out: LinearCache,
    },
    /// N = 0.
    Mean {
        /// Per-frame weights mask / count, (B, T, 1).
        weights: Tensor,
        /// Output projection.
        out: LinearCache,
    },
}

impl AudioPooling {
    /// Registers the module under `prefix` (empty = the fixture's bare names).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        cfg: PoolingConfig,
        rng: &mut Rng,
    ) -> Result<AudioPooling> {
        let start = ps.len();
        let n = |s: &str| join(prefix, s);
        let enc = if cfg.layers == 0 {
            None
        } else {
            Some(Self::new_encoder(ps, prefix, &cfg, rng)?)
        };
        let out_in = if cfg.layers == 0 { cfg.in_dim } else { cfg.dim };
        let out = Linear::new(ps, &n("out"), out_in, cfg.out_dim, true, rng)?;
        let params = ps.iter().skip(start).map(|(id, _)| id).collect();
        Ok(AudioPooling {
            cfg,
            enc,
            drop: Dropout::new(cfg.dropout),
            out,
            params,
        })
    }

    fn new_encoder(
        ps: &mut ParamStore,
        prefix: &str,
        cfg: &PoolingConfig,
        rng: &mut Rng,
    ) -> Result<Encoder> {
        let n = |s: &str| join(prefix, s);
        let proj = Linear::new(ps, &n("proj"), cfg.in_dim, cfg.dim, true, rng)?;
        let bias = Tensor::randn(&[1, 1, cfg.dim], 0.04, rng)?;
        let global_bias = ps.add(&n("global_bias"), bias)?;
        let pe_scale = ps.add(&n("pe_scale"), Tensor::full(&[1], 1.0, DType::F32)?)?;
        let pe = ps.add_buffer(&n("pe"), sinusoidal_pe(cfg.max_len, cfg.dim)?)?;
        let layers = TransformerEncoderLayer::stack(
            ps,
            &n("layers.layers"),
            cfg.layers,
            Naming::Torch,
            cfg.layer_config(),
            rng,
        )?;
        Ok(Encoder {
            proj,
            global_bias,
            pe_scale,
            pe,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolingConfig {
        &self.cfg
    }

    /// Ids of every parameter and buffer of this module.
    pub fn param_ids(&self) -> &[ParamId] {
        &self.params
    }

    fn encoder(&self) -> Result<&Encoder> {
        self.enc.as_ref().ok_or_else(|| Error::Config {
            key: "pooling.layers".into(),
            msg: "this operation needs at least one transformer layer".into(),
        })
    }

    fn check_input(&self, x: &Tensor, valid: &[u8]) -> Result<(usize, usize)> {
        let &[b, t, c] = x.shape() else {
            return Err(invalid(format!(
                "frames must be (B, T, C), got {:?}",
                x.shape()
            )));
        };
        if c != self.cfg.in_dim || valid.len() != b * t {
            return Err(invalid(format!(
                "frames {:?} with {} mask entries; expected C = {} and B * T mask entries",
                x.shape(),
                valid.len(),
                self.cfg.in_dim
            )));
        }
        if self.enc.is_some() && t > self.cfg.max_len {
            return Err(invalid(format!(
                "{t} frames exceed the positional encoding's {}",
                self.cfg.max_len
            )));
        }
        Ok((b, t))
    }

    /// The global token (B, 1, d) and the frame tokens (B, T, d) of frames `x` (B, T, C):
    /// projection, bias + mean of all projected frames, PE times the scale, dropout on frames.
    pub fn embed_frames(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Tensor, FramesCache)> {
        let e = self.encoder()?;
        let t = x.dim("embed_frames", 1)?;
        let (xp, proj) = e.proj.forward(ps, x)?;
        let global = ops::add(&ops::mean_axes(&xp, &[1], true)?, ps.value(e.global_bias))?;
        let pe = ops::slice(ps.value(e.pe), 0, 0, t)?;
        let frames = ops::add(&xp, &ops::mul(&pe, ps.value(e.pe_scale))?)?;
        let (frames, drop) = self.drop.forward(&frames, mode)?;
        let proj_shape = xp.shape().to_vec();
        Ok((
            global,
            frames,
            FramesCache {
                proj,
                proj_shape,
                pe,
                drop,
            },
        ))
    }

    /// Backward of [`AudioPooling::embed_frames`]; returns dx.
    pub fn embed_frames_bwd(
        &self,
        ps: &mut ParamStore,
        c: &FramesCache,
        dglobal: &Tensor,
        dframes: &Tensor,
    ) -> Result<Tensor> {
        let e = self.encoder()?;
        let dframes = self.drop.backward(&c.drop, dframes)?;
        ps.accumulate(e.global_bias, &ops::sum_to(dglobal, &[1, 1, self.cfg.dim])?)?;
        let dscale = ops::sum_all(&ops::mul(&dframes, &c.pe)?)?.reshape(&[1])?;
        ps.accumulate(e.pe_scale, &dscale)?;
        let mut dxp = dframes;
        ops::axpy(
            &mut dxp,
            1.0,
            &ops::mean_axes_bwd(dglobal, &c.proj_shape, &[1])?,
        )?;
        Ok(e.proj.backward(ps, &c.proj, &dxp)?)
    }

    /// Runs a token sequence (B, L, d) with key mask (B, L) (1 = real) through the layers.
    pub fn encode(
        &self,
        ps: &ParamStore,
        seq: &Tensor,
        mask: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Vec<EncoderLayerCache>)> {
        let e = self.encoder()?;
        let mut x = seq.clone();
        let mut caches = Vec::with_capacity(e.layers.len());
        for (i, l) in e.layers.iter().enumerate() {
            let (y, c) = l.forward(ps, &x, Some(mask), mode.sub(i as u64 + 1))?;
            x = y;
            caches.push(c);
        }
        Ok((x, caches))
    }

    /// Backward of [`AudioPooling::encode`]; returns the sequence gradient.
    pub fn encode_bwd(
        &self,
        ps: &mut ParamStore,
        caches: &[EncoderLayerCache],
        dy: &Tensor,
    ) -> Result<Tensor> {
        let e = self.encoder()?;
        let mut d = dy.clone();
        for (l, c) in e.layers.iter().zip(caches).rev() {
            d = l.backward(ps, c, &d)?;
        }
        Ok(d)
    }

    /// The output projection `Linear(d -> out)` (or `C -> out` when N = 0).
    pub fn head(&self) -> &Linear {
        &self.out
    }

    /// The dtype of the module's parameters.
    pub fn dtype(&self, ps: &ParamStore) -> DType {
        ps.value(self.out.weight).dtype()
    }

    /// Audio embeddings (B, out) of frames `x` (B, T, C) with frame mask `valid` (B * T,
    /// 1 = real frame).
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        valid: &[u8],
        mode: Mode,
    ) -> Result<(Tensor, PoolingCache)> {
        let (b, t) = self.check_input(x, valid)?;
        if self.enc.is_none() {
            return self.forward_mean(ps, x, valid, (b, t));
        }
        let (global, frames, fc) = self.embed_frames(ps, x, mode.sub(0))?;
        let seq = ops::concat(&[&global, &frames], 1)?;
        let mask = self.seq_mask(ps, valid, b, t)?;
        let (y, layers) = self.encode(ps, &seq, &mask, mode)?;
        let tok0 = ops::slice(&y, 1, 0, 1)?.reshape(&[b, self.cfg.dim])?;
        let (out, oc) = self.out.forward(ps, &tok0)?;
        Ok((
            out,
            PoolingCache::Transformer {
                frames: fc,
                layers,
                len: t + 1,
                out: oc,
            },
        ))
    }

    /// The (B, 1 + T) key mask of `[global, frames]`.
    fn seq_mask(&self, ps: &ParamStore, valid: &[u8], b: usize, t: usize) -> Result<Tensor> {
        let v: Vec<f64> = valid
            .chunks(t.max(1))
            .flat_map(|row| {
                std::iter::once(1.0).chain(row.iter().map(|&m| f64::from(u8::from(m != 0))))
            })
            .collect();
        tensor_in(v, &[b, t + 1], ps.value(self.out.weight))
    }

    fn forward_mean(
        &self,
        ps: &ParamStore,
        x: &Tensor,
        valid: &[u8],
        (b, t): (usize, usize),
    ) -> Result<(Tensor, PoolingCache)> {
        let w: Vec<f64> = valid
            .chunks(t.max(1))
            .flat_map(|row| {
                let count = row.iter().filter(|&&m| m != 0).count().max(1) as f64;
                row.iter()
                    .map(move |&m| f64::from(u8::from(m != 0)) / count)
            })
            .collect();
        let weights = tensor_in(w, &[b, t, 1], x)?;
        let pooled = ops::sum_axes(&ops::mul(x, &weights)?, &[1], false)?;
        let (out, oc) = self.out.forward(ps, &pooled)?;
        Ok((out, PoolingCache::Mean { weights, out: oc }))
    }

    /// Accumulates every parameter gradient for upstream `dy` (B, out); returns d frames.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &PoolingCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        match cache {
            PoolingCache::Mean { weights, out } => {
                let dp = self.out.backward(ps, out, dy)?;
                let (b, c) = (dp.dim("pooling", 0)?, dp.dim("pooling", 1)?);
                Ok(ops::mul(&dp.reshape(&[b, 1, c])?, weights)?)
            }
            PoolingCache::Transformer {
                frames,
                layers,
                len,
                out,
            } => {
                let dtok = self.out.backward(ps, out, dy)?;
                let b = dtok.dim("pooling", 0)?;
                let dtok = dtok.reshape(&[b, 1, self.cfg.dim])?;
                let dseq = self.encode_bwd(ps, layers, &ops::pad_axis(&dtok, 1, 0, *len)?)?;
                let parts = ops::concat_bwd(&dseq, &[1, len - 1], 1)?;
                self.embed_frames_bwd(ps, frames, &parts[0], &parts[1])
            }
        }
    }
}

fn invalid(msg: String) -> Error {
    hr_tensor::Error::invalid("AudioPooling", msg).into()
}
