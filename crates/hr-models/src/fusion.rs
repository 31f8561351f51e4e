//! Fusion of audio and metadata (docs/spec-retrieval.md section 6).
//!
//! - `none`: the item embedding is the audio embedding (content-based baseline);
//! - `late`: item = audio embedding + metadata embedding (both unnormalised; items without
//!   metadata are audio only);
//! - `mid` ([`MidFusion`]): the metadata text vector, after `Linear(hidden -> d)`, is appended to
//!   the projected audio frames; a global audio token (bias + mean of projected frames) and a
//!   global metadata token (bias + the metadata token) lead the sequence
//!   `[g_audio, g_meta, frames..., meta]`, which runs through the pooling transformer's layers
//!   (key padding mask: padded frames, and both metadata tokens of items without metadata).
//!   Output token 0 -> the pooling head = audio token, token 1 -> `Linear(d -> out)` = metadata
//!   token. The query goes through two gated embedding units (audio- and metadata-query
//!   vectors) and `w = softmax(Linear(query -> 2))`; with L2-normalised tokens,
//!   `score = w_a <q_a, a> + w_m <q_m, m>`. For an item without metadata the weights are
//!   renormalised over the available modality (MMT's rule for missing experts): `score =
//!   <q_a, a>`. The GEU normalises its gate's pre-activation with LayerNorm by default (the
//!   original MMT uses BatchNorm, which couples the batch); `none` is the other option.

use crate::{Error, Result};
use hr_nn::layers::{GatedEmbeddingUnit, GeuCache, GeuNorm, Linear, LinearCache, Mode};
use hr_nn::{ParamId, ParamStore};
use hr_tensor::{ops, Rng, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::{join, tensor_in};
use crate::pooling::{AudioPooling, FramesCache};

/// Which fusion an item encoder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    /// Audio only (content-based baseline).
    #[default]
    None,
    /// Audio embedding + metadata embedding.
    Late,
    /// Multimodal-transformer style fusion with query-dependent modality weights.
    Mid,
}

/// Normalisation of the GEU gate (serde names `layernorm`, `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateNorm {
    /// LayerNorm before the sigmoid (default).
    #[default]
    LayerNorm,
    /// Nothing before the sigmoid.
    None,
}

impl From<GateNorm> for GeuNorm {
    fn from(n: GateNorm) -> GeuNorm {
        match n {
            GateNorm::LayerNorm => GeuNorm::LayerNorm,
            GateNorm::None => GeuNorm::None,
        }
    }
}

/// The (B, 1) presence column of `present` in `like`'s dtype.
fn presence(present: &[bool], like: &Tensor) -> Result<Tensor> {
    let v = present.iter().map(|&p| f64::from(u8::from(p))).collect();
    tensor_in(v, &[present.len(), 1], like)
}

fn check_rows(what: &str, t: &Tensor, rows: usize) -> Result<()> {
    if t.rank() != 2 || t.shape()[0] != rows {
        return Err(Error::Config {
            key: what.into(),
            msg: format!("expected {rows} rows (B, D), got shape {:?}", t.shape()),
        });
    }
    Ok(())
}

/// Late fusion: `audio + present * meta`, both (B, D).
pub fn late_fuse(audio: &Tensor, meta: &Tensor, present: &[bool]) -> Result<Tensor> {
    check_rows("late_fuse.audio", audio, present.len())?;
    check_rows("late_fuse.meta", meta, present.len())?;
    Ok(ops::add(
        audio,
        &ops::mul(meta, &presence(present, meta)?)?,
    )?)
}

/// Backward of [`late_fuse`]: `(d audio, d meta)`.
pub fn late_fuse_bwd(dy: &Tensor, present: &[bool]) -> Result<(Tensor, Tensor)> {
    Ok((dy.clone(), ops::mul(dy, &presence(present, dy)?)?))
}

/// Parameters of mid-level fusion (the encoder layers and the audio head are the pooling
/// transformer's).
#[derive(Debug, Clone)]
pub struct MidFusion {
    meta_in: Linear,
    meta_global_bias: ParamId,
    meta_out: Linear,
    geu_audio: GatedEmbeddingUnit,
    geu_meta: GatedEmbeddingUnit,
    weights: Linear,
    dim: usize,
}

/// The item-side inputs of [`MidFusion::items`].
#[derive(Debug, Clone, Copy)]
pub struct MidInputs<'a> {
    /// Audio frames (B, T, C).
    pub frames: &'a Tensor,
    /// Frame mask, B * T entries (1 = real frame).
    pub valid: &'a [u8],
    /// Metadata text vectors (B, hidden), e.g. the BERT `[CLS]` rows.
    pub meta: &'a Tensor,
    /// Per item: metadata present (false = both metadata tokens masked).
    pub present: &'a [bool],
}

/// Saved activations of [`MidFusion::items`].
#[derive(Debug, Clone)]
pub struct MidItemsCache {
    frames: FramesCache,
    meta_in: LinearCache,
    layers: Vec<hr_nn::layers::EncoderLayerCache>,
    sizes: [usize; 4],
    audio_out: LinearCache,
    meta_out: LinearCache,
}

/// Saved activations of [`MidFusion::score`].
#[derive(Debug, Clone)]
pub struct MidScoreCache {
    geu_a: GeuCache,
    geu_m: GeuCache,
    weights: LinearCache,
    w: Tensor,
    qa: Tensor,
    qm: Tensor,
    a: Tensor,
    a_norm: Tensor,
    m: Tensor,
    m_norm: Tensor,
    present: Tensor,
    gate: Tensor,
    diff: Tensor,
}

/// Epsilon of the token L2 normalisation (as torch.nn.functional.normalize).
const EPS: f64 = 1e-12;

/// The query side of mid-fusion scores, which does not depend on the items: the audio- and
/// metadata-query vectors of the two gated embedding units and the metadata modality weight.
/// With it an index of L2-normalised item tokens is scored by two matrix products
/// ([`MidFusion::score_normalized`]).
#[derive(Debug, Clone)]
pub struct MidQueries {
    /// Audio-query vectors `q_a` (Nq, out).
    pub audio: Tensor,
    /// Metadata-query vectors `q_m` (Nq, out).
    pub meta: Tensor,
    /// The metadata weight `w_m` of each query (softmax over the two modalities), (1, Nq).
    pub meta_weight: Tensor,
}

/// L2-normalised rows of `t` (B, D), as the score normalises item tokens.
pub fn normalize_tokens(t: &Tensor) -> Result<Tensor> {
    Ok(ops::l2_normalize(t, EPS)?.0)
}

impl MidFusion {
    /// Registers the fusion parameters under `prefix`: `meta_in` (text hidden -> d),
    /// `meta_global_bias` (1, 1, d), `meta_out` (d -> out), `geu_audio`, `geu_meta`
    /// (out -> out) and `modality_weights` (out -> 2).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        pooling: &AudioPooling,
        text_hidden: usize,
        norm: GateNorm,
        rng: &mut Rng,
    ) -> Result<MidFusion> {
        let cfg = *pooling.config();
        if cfg.layers == 0 {
            return Err(Error::Config {
                key: "pooling.layers".into(),
                msg: "mid fusion needs at least one transformer layer".into(),
            });
        }
        let n = |s: &str| join(prefix, s);
        let (d, out) = (cfg.dim, cfg.out_dim);
        Ok(MidFusion {
            meta_in: Linear::new(ps, &n("meta_in"), text_hidden, d, true, rng)?,
            meta_global_bias: ps.add(
                &n("meta_global_bias"),
                Tensor::randn(&[1, 1, d], 0.04, rng)?,
            )?,
            meta_out: Linear::new(ps, &n("meta_out"), d, out, true, rng)?,
            geu_audio: GatedEmbeddingUnit::new(ps, &n("geu_audio"), out, out, norm.into(), rng)?,
            geu_meta: GatedEmbeddingUnit::new(ps, &n("geu_meta"), out, out, norm.into(), rng)?,
            weights: Linear::new(ps, &n("modality_weights"), out, 2, true, rng)?,
            dim: d,
        })
    }

    /// The (B, T + 3) key mask of `[g_audio, g_meta, frames..., meta]`.
    fn mask(valid: &[u8], present: &[bool], t: usize, like: &Tensor) -> Result<Tensor> {
        let mut v = Vec::with_capacity(present.len() * (t + 3));
        for (row, &p) in valid.chunks(t.max(1)).zip(present) {
            let p = f64::from(u8::from(p));
            v.extend([1.0, p]);
            v.extend(row.iter().map(|&m| f64::from(u8::from(m != 0))));
            v.push(p);
        }
        tensor_in(v, &[present.len(), t + 3], like)
    }

    /// Audio and metadata tokens (B, out) each, unnormalised.
    pub fn items(
        &self,
        ps: &ParamStore,
        pooling: &AudioPooling,
        inp: MidInputs<'_>,
        mode: Mode,
    ) -> Result<(Tensor, Tensor, MidItemsCache)> {
        let MidInputs {
            frames: x,
            valid,
            meta,
            present,
        } = inp;
        let (b, t) = (x.dim("mid fusion", 0)?, x.dim("mid fusion", 1)?);
        check_rows("mid.meta", meta, b)?;
        if present.len() != b || valid.len() != b * t {
            return Err(Error::Config {
                key: "mid fusion".into(),
                msg: format!(
                    "{b} items need {b} presence flags and {} frame flags",
                    b * t
                ),
            });
        }
        let (g_audio, frames, fc) = pooling.embed_frames(ps, x, mode.sub(0))?;
        let (mv, meta_in) = self.meta_in.forward(ps, meta)?;
        let mv = mv.reshape(&[b, 1, self.dim])?;
        let g_meta = ops::add(&mv, ps.value(self.meta_global_bias))?;
        let seq = ops::concat(&[&g_audio, &g_meta, &frames, &mv], 1)?;
        let mask = Self::mask(valid, present, t, &seq)?;
        let (y, layers) = pooling.encode(ps, &seq, &mask, mode)?;
        let tok =
            |i: usize| -> Result<Tensor> { Ok(ops::slice(&y, 1, i, 1)?.reshape(&[b, self.dim])?) };
        let (a, audio_out) = pooling.head().forward(ps, &tok(0)?)?;
        let (m, meta_out) = self.meta_out.forward(ps, &tok(1)?)?;
        let cache = MidItemsCache {
            frames: fc,
            meta_in,
            layers,
            sizes: [1, 1, t, 1],
            audio_out,
            meta_out,
        };
        Ok((a, m, cache))
    }

    /// Backward of [`MidFusion::items`]: `(d frames, d meta)`.
    pub fn items_bwd(
        &self,
        ps: &mut ParamStore,
        pooling: &AudioPooling,
        c: &MidItemsCache,
        da: &Tensor,
        dm: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let b = da.dim("mid fusion", 0)?;
        let d = self.dim;
        let dta = pooling
            .head()
            .backward(ps, &c.audio_out, da)?
            .reshape(&[b, 1, d])?;
        let dtm = self
            .meta_out
            .backward(ps, &c.meta_out, dm)?
            .reshape(&[b, 1, d])?;
        let len: usize = c.sizes.iter().sum();
        let dy = ops::pad_axis(&ops::concat(&[&dta, &dtm], 1)?, 1, 0, len)?;
        let dseq = pooling.encode_bwd(ps, &c.layers, &dy)?;
        let parts = ops::concat_bwd(&dseq, &c.sizes, 1)?;
        let dx = pooling.embed_frames_bwd(ps, &c.frames, &parts[0], &parts[2])?;
        ps.accumulate(self.meta_global_bias, &ops::sum_to(&parts[1], &[1, 1, d])?)?;
        let dmv = ops::add(&parts[1], &parts[3])?.reshape(&[b, d])?;
        let dmeta = self.meta_in.backward(ps, &c.meta_in, &dmv)?;
        Ok((dx, dmeta))
    }

    /// Scores (items x queries) of item tokens `a`, `m` (Ni, out) against query embeddings
    /// `q` (Nq, out): `S = S_a + (present w_m^T) * (S_m - S_a)`, which is
    /// `w_a S_a + w_m S_m` for items with metadata and `S_a` for items without.
    pub fn score(
        &self,
        ps: &ParamStore,
        a: &Tensor,
        m: &Tensor,
        present: &[bool],
        q: &Tensor,
    ) -> Result<(Tensor, MidScoreCache)> {
        check_rows("mid.metadata_tokens", m, a.dim("mid score", 0)?)?;
        check_rows("mid.present", a, present.len())?;
        let (qa, geu_a) = self.geu_audio.forward(ps, q)?;
        let (qm, geu_m) = self.geu_meta.forward(ps, q)?;
        let (logits, weights) = self.weights.forward(ps, q)?;
        let w = ops::softmax(&logits, None)?;
        let (an, a_norm) = ops::l2_normalize(a, EPS)?;
        let (mn, m_norm) = ops::l2_normalize(m, EPS)?;
        let sa = ops::matmul_ex(&an, &qa, false, true, 1.0)?;
        let sm = ops::matmul_ex(&mn, &qm, false, true, 1.0)?;
        let nq = q.dim("mid score", 0)?;
        let wm = ops::slice(&w, 1, 1, 1)?.reshape(&[1, nq])?;
        let present = presence(present, a)?;
        let gate = ops::mul(&present, &wm)?;
        let diff = ops::sub(&sm, &sa)?;
        let s = ops::add(&sa, &ops::mul(&gate, &diff)?)?;
        let cache = MidScoreCache {
            geu_a,
            geu_m,
            weights,
            w,
            qa,
            qm,
            a: an,
            a_norm,
            m: mn,
            m_norm,
            present,
            gate,
            diff,
        };
        Ok((s, cache))
    }

    /// The query side of [`MidFusion::score`] for query embeddings `q` (Nq, out).
    pub fn queries(&self, ps: &ParamStore, q: &Tensor) -> Result<MidQueries> {
        let (audio, _) = self.geu_audio.forward(ps, q)?;
        let (meta, _) = self.geu_meta.forward(ps, q)?;
        let (logits, _) = self.weights.forward(ps, q)?;
        let nq = q.dim("mid queries", 0)?;
        let w = ops::softmax(&logits, None)?;
        let meta_weight = ops::slice(&w, 1, 1, 1)?.reshape(&[1, nq])?;
        Ok(MidQueries {
            audio,
            meta,
            meta_weight,
        })
    }

    /// [`MidFusion::score`] of L2-normalised item tokens `a`, `m` (Ni, out) (see
    /// [`normalize_tokens`]) against the query side `q`: two matrix products,
    /// `S = S_a + (present w_m^T) * (S_m - S_a)`, (Ni, Nq).
    pub fn score_normalized(
        a: &Tensor,
        m: &Tensor,
        present: &[bool],
        q: &MidQueries,
    ) -> Result<Tensor> {
        check_rows("mid.metadata_tokens", m, a.dim("mid score", 0)?)?;
        check_rows("mid.present", a, present.len())?;
        let sa = ops::matmul_ex(a, &q.audio, false, true, 1.0)?;
        let sm = ops::matmul_ex(m, &q.meta, false, true, 1.0)?;
        let gate = ops::mul(&presence(present, a)?, &q.meta_weight)?;
        Ok(ops::add(&sa, &ops::mul(&gate, &ops::sub(&sm, &sa)?)?)?)
    }

    /// Backward of [`MidFusion::score`]: `(d a, d m, d q)`.
    pub fn score_bwd(
        &self,
        ps: &mut ParamStore,
        c: &MidScoreCache,
        ds: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dsm = ops::mul(ds, &c.gate)?;
        let dsa = ops::sub(ds, &dsm)?;
        let dgate = ops::mul(ds, &c.diff)?;
        let nq = ds.dim("mid score", 1)?;
        let dwm = ops::sum_axes(&ops::mul(&dgate, &c.present)?, &[0], false)?.reshape(&[nq, 1])?;
        let dw = ops::pad_axis(&dwm, 1, 1, 2)?;
        let dlogits = ops::softmax_bwd(&c.w, &dw)?;
        let (dan, dqa) = ops::matmul_ex_bwd(&c.a, &c.qa, &dsa, false, true, 1.0)?;
        let (dmn, dqm) = ops::matmul_ex_bwd(&c.m, &c.qm, &dsm, false, true, 1.0)?;
        let da = ops::l2_normalize_bwd(&c.a, &c.a_norm, &dan, EPS)?;
        let dm = ops::l2_normalize_bwd(&c.m, &c.m_norm, &dmn, EPS)?;
        let mut dq = self.weights.backward(ps, &c.weights, &dlogits)?;
        ops::axpy(&mut dq, 1.0, &self.geu_audio.backward(ps, &c.geu_a, &dqa)?)?;
        ops::axpy(&mut dq, 1.0, &self.geu_meta.backward(ps, &c.geu_m, &dqm)?)?;
        Ok((da, dm, dq))
    }
}
