//! The `HybridRetriever`: text encoder(s), audio pooling transformer, fusion and the NT-Xent
//! loss in one struct with an explicit forward and backward.
//!
//! Parameter names: `text.*` (HF BERT names of the query encoder, shared with the metadata by
//! default), `text_proj.*` (hidden -> embed), `meta_text.*` / `meta_text_proj.*` (separate
//! metadata encoder, an ablation), `audio_cnn.*` (EfficientAT MobileNetV3 names, when
//! `audio.backbone` is set), `audio_head.*` (pooling transformer) and `mid.*` (mid fusion).
//! [`HybridRetriever::forward`] consumes frame sequences (B, T, C) and its backward returns their
//! gradient; [`HybridRetriever::forward_waveforms`] runs the mel frontend and the MobileNetV3
//! (10 s windows) first and backpropagates into the CNN too.

use std::path::Path;

use hr_nn::layers::{Linear, LinearCache, Mode};
use hr_nn::loss::{
    contrastive_loss, contrastive_loss_bwd, positive_mask, ContrastiveCache, NtXent, NtXentCache,
};
use hr_nn::{Error, ParamStore, Result};
use hr_tensor::{ops, Rng, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::{BertCache, BertConfig, BertModel};
use crate::fusion::{
    late_fuse, late_fuse_bwd, FusionKind, GateNorm, MidFusion, MidInputs, MidItemsCache,
    MidScoreCache,
};
use crate::mel::{MelConfig, MelFrontend};
use crate::mobilenet::{MobileNetConfig, MobileNetV3, WindowedCache, WINDOW_FRAMES};
use crate::pooling::frame_mask;
use crate::pooling::{AudioPooling, PoolingCache, PoolingConfig};
use crate::text::TokenBatch;

/// The audio backbone a preset names (wired to waveforms by the training code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// EfficientAT model name (`mn01` ... `mn40`, `mn40_as_ext`), or None when the model is fed
    /// frame sequences directly.
    #[serde(default)]
    pub backbone: Option<String>,
}

/// Everything that defines a [`HybridRetriever`] (the TOML presets in `configs/models/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieverConfig {
    /// Preset name.
    pub name: String,
    /// none | late | mid.
    #[serde(default)]
    pub fusion: FusionKind,
    /// NT-Xent temperature.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// A separate BERT for the metadata (default: shared with the queries).
    #[serde(default)]
    pub separate_metadata_encoder: bool,
    /// Gate normalisation of the mid-fusion GEUs.
    #[serde(default)]
    pub geu_norm: GateNorm,
    /// Audio backbone.
    pub audio: AudioConfig,
    /// Pooling transformer; `in_dim` = frame width, `out_dim` = the shared embedding width.
    pub pooling: PoolingConfig,
    /// BERT shape (HF config names).
    pub text: BertConfig,
}

fn default_tau() -> f64 {
    0.05
}

impl RetrieverConfig {
    /// Checks cross-field consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| {
            Err(Error::Config {
                key: key.into(),
                msg,
            })
        };
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return bad("tau", format!("must be positive, got {}", self.tau));
        }
        if self.fusion == FusionKind::Mid && self.pooling.layers == 0 {
            return bad(
                "pooling.layers",
                "mid fusion needs at least one layer".into(),
            );
        }
        if self.text.max_position_embeddings < crate::text::MAX_TOKENS {
            return bad(
                "text.max_position_embeddings",
                format!("must hold {} tokens", crate::text::MAX_TOKENS),
            );
        }
        Ok(())
    }
}

/// One training or evaluation batch: row i pairs item i (audio + metadata) with query i.
#[derive(Debug, Clone)]
pub struct RetrievalBatch {
    /// Audio frame sequences (B, T, C).
    pub frames: Tensor,
    /// Frame mask, B * T entries (1 = real frame).
    pub frame_valid: Vec<u8>,
    /// Query (caption) tokens, B rows.
    pub queries: TokenBatch,
    /// Metadata tokens, B rows (ignored by `none` fusion).
    pub metadata: TokenBatch,
    /// Per row: the item has metadata (false = audio only / metadata masked).
    pub metadata_present: Vec<bool>,
    /// Clip of each row (equal ids are same-clip positives).
    pub clip_ids: Vec<u64>,
}

/// A batch of raw audio: like [`RetrievalBatch`] with waveforms instead of frames.
#[derive(Debug, Clone)]
pub struct WaveformBatch {
    /// Waveforms (B, N) at 32 kHz, zero-padded at the end.
    pub waveforms: Tensor,
    /// Valid (unpadded) samples of each waveform.
    pub valid_lengths: Vec<usize>,
    /// Query (caption) tokens, B rows.
    pub queries: TokenBatch,
    /// Metadata tokens, B rows (ignored by `none` fusion).
    pub metadata: TokenBatch,
    /// Per row: the item has metadata.
    pub metadata_present: Vec<bool>,
    /// Clip of each row.
    pub clip_ids: Vec<u64>,
}

/// Saved activations of [`HybridRetriever::forward_waveforms`].
#[derive(Debug, Clone)]
pub struct WaveformCache {
    cnn: WindowedCache,
    inner: RetrieverCache,
}

/// The waveform front: mel frontend and MobileNetV3 (10 s windows).
#[derive(Debug, Clone)]
struct Backbone {
    mel: MelFrontend,
    cnn: MobileNetV3,
}

/// What [`HybridRetriever::forward`] returns.
#[derive(Debug, Clone)]
pub struct RetrieverOutput {
    /// Item embeddings (B, E), unnormalised (`none` and `late` fusion).
    pub items: Option<Tensor>,
    /// Query embeddings (B, E), unnormalised.
    pub queries: Tensor,
    /// Scores (items x queries) divided by tau (`mid` fusion).
    pub scores: Option<Tensor>,
    /// The NT-Xent loss (shape `[]`).
    pub loss: Tensor,
}

/// Saved activations of the metadata encoder.
#[derive(Debug, Clone)]
struct MetaCache {
    bert: BertCache,
    proj: Option<LinearCache>,
}

/// Saved activations of the item side.
#[derive(Debug, Clone)]
enum ItemCache {
    Pooled(PoolingCache),
    Mid(Box<(MidItemsCache, MidScoreCache)>),
}

/// Saved activations of the loss.
#[derive(Debug, Clone)]
enum LossCache {
    Cosine(NtXentCache),
    Scores(ContrastiveCache),
}

/// Results of the item side and the loss.
struct ItemPass {
    items: Option<Tensor>,
    loss: Tensor,
    scores: Option<Tensor>,
    meta: Option<MetaCache>,
    item_cache: ItemCache,
    loss_cache: LossCache,
}

/// Saved activations of a [`HybridRetriever::forward`].
#[derive(Debug, Clone)]
pub struct RetrieverCache {
    query: BertCache,
    query_proj: LinearCache,
    meta: Option<MetaCache>,
    items: ItemCache,
    loss: LossCache,
    present: Vec<bool>,
}

/// The separate metadata encoder.
#[derive(Debug, Clone)]
struct MetaEncoder {
    bert: BertModel,
    proj: Linear,
}

/// Audio + metadata item encoder, text query encoder and contrastive loss.
#[derive(Debug, Clone)]
pub struct HybridRetriever {
    cfg: RetrieverConfig,
    backbone: Option<Backbone>,
    text: BertModel,
    text_proj: Linear,
    meta: Option<MetaEncoder>,
    pooling: AudioPooling,
    mid: Option<MidFusion>,
}

impl HybridRetriever {
    /// Registers a randomly initialised model.
    pub fn new(
        ps: &mut ParamStore,
        cfg: RetrieverConfig,
        rng: &mut Rng,
    ) -> Result<HybridRetriever> {
        cfg.validate()?;
        let (h, e) = (cfg.text.hidden_size, cfg.pooling.out_dim);
        let text = BertModel::new(ps, "text", cfg.text, rng)?;
        let text_proj = Linear::new(ps, "text_proj", h, e, true, rng)?;
        let meta = if cfg.separate_metadata_encoder && cfg.fusion != FusionKind::None {
            let bert = BertModel::new(ps, "meta_text", cfg.text, rng)?;
            let proj = Linear::new(ps, "meta_text_proj", h, e, true, rng)?;
            Some(MetaEncoder { bert, proj })
        } else {
            None
        };
        let backbone = Self::new_backbone(ps, &cfg, rng)?;
        let pooling = AudioPooling::new(ps, "audio_head", cfg.pooling, rng)?;
        let mid = match cfg.fusion {
            FusionKind::Mid => Some(MidFusion::new(ps, "mid", &pooling, h, cfg.geu_norm, rng)?),
            _ => None,
        };
        Ok(HybridRetriever {
            cfg,
            backbone,
            text,
            text_proj,
            meta,
            pooling,
            mid,
        })
    }

    /// The MobileNetV3 named by `audio.backbone` (`audio_cnn.` + EfficientAT names).
    fn new_backbone(
        ps: &mut ParamStore,
        cfg: &RetrieverConfig,
        rng: &mut Rng,
    ) -> Result<Option<Backbone>> {
        let Some(name) = &cfg.audio.backbone else {
            return Ok(None);
        };
        let mc = MobileNetConfig::from_name(name)?;
        if mc.last_conv != cfg.pooling.in_dim {
            let msg = format!(
                "{name} gives {}-wide frames but pooling.in_dim is {}",
                mc.last_conv, cfg.pooling.in_dim
            );
            return Err(Error::Config {
                key: "pooling.in_dim".into(),
                msg,
            });
        }
        let cnn = MobileNetV3::with_prefix(ps, "audio_cnn.", mc, rng)?;
        Ok(Some(Backbone {
            mel: MelFrontend::new(MelConfig::default())?,
            cnn,
        }))
    }

    /// The audio CNN, when the config names one (load EfficientAT weights through it).
    pub fn audio_cnn(&self) -> Option<&MobileNetV3> {
        self.backbone.as_ref().map(|b| &b.cnn)
    }

    fn backbone(&self) -> Result<&Backbone> {
        self.backbone.as_ref().ok_or_else(|| Error::Config {
            key: "audio.backbone".into(),
            msg: "this model has no audio backbone; feed frame sequences".into(),
        })
    }

    /// Waveforms (B, N) -> frames (B, T, C) and their mask (first `ceil(valid / N * T)` frames
    /// of each row): mel frontend (SpecAugment in training), MobileNetV3 over 10 s windows.
    pub fn encode_waveforms(
        &self,
        ps: &mut ParamStore,
        waveforms: &Tensor,
        valid_lengths: &[usize],
        mode: Mode,
    ) -> Result<(Tensor, Vec<u8>, WindowedCache)> {
        let bb = self.backbone()?;
        let n = waveforms.dim("encode_waveforms", 1)?;
        if valid_lengths.len() != waveforms.dim("encode_waveforms", 0)? {
            return Err(Error::Config {
                key: "valid_lengths".into(),
                msg: format!(
                    "{} lengths for waveforms {:?}",
                    valid_lengths.len(),
                    waveforms.shape()
                ),
            });
        }
        let mel = bb.mel.forward(waveforms, mode.sub(3))?;
        let (frames, cache) = bb
            .cnn
            .forward_windows(ps, &mel, mode.sub(4), WINDOW_FRAMES)?;
        let fractions: Vec<f64> = valid_lengths
            .iter()
            .map(|&v| v as f64 / n.max(1) as f64)
            .collect();
        let valid = frame_mask(&fractions, frames.dim("encode_waveforms", 1)?);
        Ok((frames, valid, cache))
    }

    /// Forward from waveforms (the CNN's BatchNorm running statistics update in training).
    pub fn forward_waveforms(
        &self,
        ps: &mut ParamStore,
        batch: &WaveformBatch,
        mode: Mode,
    ) -> Result<(RetrieverOutput, WaveformCache)> {
        let (frames, frame_valid, cnn) =
            self.encode_waveforms(ps, &batch.waveforms, &batch.valid_lengths, mode)?;
        let fb = RetrievalBatch {
            frames,
            frame_valid,
            queries: batch.queries.clone(),
            metadata: batch.metadata.clone(),
            metadata_present: batch.metadata_present.clone(),
            clip_ids: batch.clip_ids.clone(),
        };
        let (out, inner) = self.forward(ps, &fb, mode)?;
        Ok((out, WaveformCache { cnn, inner }))
    }

    /// Backward of [`HybridRetriever::forward_waveforms`] through every parameter.
    pub fn backward_waveforms(
        &self,
        ps: &mut ParamStore,
        c: &WaveformCache,
        dloss: f64,
    ) -> Result<()> {
        let dframes = self.backward(ps, &c.inner, dloss)?;
        self.backbone()?
            .cnn
            .backward_windows(ps, &c.cnn, &dframes)?;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &RetrieverConfig {
        &self.cfg
    }

    /// Loads pretrained HF BERT weights into the text encoder(s) (both when separate).
    pub fn load_text_encoder(&self, ps: &mut ParamStore, path: &Path) -> Result<()> {
        self.text.load_safetensors(ps, path)?;
        match &self.meta {
            Some(m) => m.bert.load_safetensors(ps, path),
            None => Ok(()),
        }
    }

    /// The BERT and projection that encode metadata.
    fn meta_encoder(&self) -> (&BertModel, &Linear) {
        match &self.meta {
            Some(m) => (&m.bert, &m.proj),
            None => (&self.text, &self.text_proj),
        }
    }

    fn check_batch(&self, batch: &RetrievalBatch) -> Result<()> {
        let b = batch.clip_ids.len();
        let rows_ok = batch.frames.rank() == 3
            && batch.frames.shape()[0] == b
            && batch.queries.rows == b
            && (self.cfg.fusion == FusionKind::None
                || (batch.metadata.rows == b && batch.metadata_present.len() == b));
        if !rows_ok {
            return Err(Error::Config {
                key: "batch".into(),
                msg: format!(
                    "{b} clip ids, frames {:?}, {} queries, {} metadata rows, {} presence flags",
                    batch.frames.shape(),
                    batch.queries.rows,
                    batch.metadata.rows,
                    batch.metadata_present.len()
                ),
            });
        }
        check_finite("frames", &batch.frames)
    }

    /// Embeddings, scores and loss of a batch.
    pub fn forward(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        mode: Mode,
    ) -> Result<(RetrieverOutput, RetrieverCache)> {
        self.check_batch(batch)?;
        let (qcls, query) = self.text.forward_cls(ps, &batch.queries, mode.sub(0))?;
        let (q, query_proj) = self.text_proj.forward(ps, &qcls)?;
        let present = batch.metadata_present.clone();
        let p = match self.cfg.fusion {
            FusionKind::Mid => self.forward_mid(ps, batch, &q, mode)?,
            _ => self.forward_pooled(ps, batch, &q, mode)?,
        };
        if !p.loss.scalar_f64()?.is_finite() {
            return Err(Error::Config {
                key: "loss".into(),
                msg: "the loss is NaN or infinite (check the inputs)".into(),
            });
        }
        let output = RetrieverOutput {
            items: p.items,
            queries: q,
            scores: p.scores,
            loss: p.loss,
        };
        let cache = RetrieverCache {
            query,
            query_proj,
            meta: p.meta,
            items: p.item_cache,
            loss: p.loss_cache,
            present,
        };
        Ok((output, cache))
    }

    /// `none` and `late` fusion.
    fn forward_pooled(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        q: &Tensor,
        mode: Mode,
    ) -> Result<ItemPass> {
        let (a, pc) = self
            .pooling
            .forward(ps, &batch.frames, &batch.frame_valid, mode.sub(2))?;
        let (items, meta) = if self.cfg.fusion == FusionKind::Late {
            let (bert, proj) = self.meta_encoder();
            let (mcls, bc) = bert.forward_cls(ps, &batch.metadata, mode.sub(1))?;
            let (m, lc) = proj.forward(ps, &mcls)?;
            (
                late_fuse(&a, &m, &batch.metadata_present)?,
                Some(MetaCache {
                    bert: bc,
                    proj: Some(lc),
                }),
            )
        } else {
            (a, None)
        };
        let (loss, lc) = NtXent { tau: self.cfg.tau }.forward(&items, q, &batch.clip_ids)?;
        let (item_cache, loss_cache) = (ItemCache::Pooled(pc), LossCache::Cosine(lc));
        Ok(ItemPass {
            items: Some(items),
            loss,
            scores: None,
            meta,
            item_cache,
            loss_cache,
        })
    }

    /// `mid` fusion.
    fn forward_mid(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        q: &Tensor,
        mode: Mode,
    ) -> Result<ItemPass> {
        let mid = self.mid_fusion()?;
        let (bert, _) = self.meta_encoder();
        let (mcls, bc) = bert.forward_cls(ps, &batch.metadata, mode.sub(1))?;
        let present = &batch.metadata_present;
        let inputs = MidInputs {
            frames: &batch.frames,
            valid: &batch.frame_valid,
            meta: &mcls,
            present,
        };
        let (a, m, ic) = mid.items(ps, &self.pooling, inputs, mode.sub(2))?;
        let (s, sc) = mid.score(ps, &a, &m, present, q)?;
        let scores = ops::scale(&s, 1.0 / self.cfg.tau)?;
        let (loss, lc) = contrastive_loss(&scores, &positive_mask(&batch.clip_ids)?)?;
        let meta = Some(MetaCache {
            bert: bc,
            proj: None,
        });
        let (item_cache, loss_cache) = (ItemCache::Mid(Box::new((ic, sc))), LossCache::Scores(lc));
        Ok(ItemPass {
            items: None,
            loss,
            scores: Some(scores),
            meta,
            item_cache,
            loss_cache,
        })
    }

    fn mid_fusion(&self) -> Result<&MidFusion> {
        self.mid.as_ref().ok_or_else(|| Error::Config {
            key: "fusion".into(),
            msg: "model was built without mid fusion".into(),
        })
    }

    /// Accumulates every parameter gradient for `dloss` (1.0 for plain training); returns the
    /// gradient of the frames (B, T, C).
    pub fn backward(&self, ps: &mut ParamStore, c: &RetrieverCache, dloss: f64) -> Result<Tensor> {
        let (dx, dq, dmeta) = match (&c.items, &c.loss) {
            (ItemCache::Pooled(pc), LossCache::Cosine(lc)) => {
                let (di, dq) = NtXent { tau: self.cfg.tau }.backward(lc, dloss)?;
                let (da, dmeta) = match &c.meta {
                    Some(MetaCache { proj: Some(pl), .. }) => {
                        let (da, dm) = late_fuse_bwd(&di, &c.present)?;
                        (da, Some(self.meta_encoder().1.backward(ps, pl, &dm)?))
                    }
                    _ => (di, None),
                };
                (self.pooling.backward(ps, pc, &da)?, dq, dmeta)
            }
            (ItemCache::Mid(mc), LossCache::Scores(lc)) => {
                let mid = self.mid_fusion()?;
                let ds = ops::scale(&contrastive_loss_bwd(lc, dloss)?, 1.0 / self.cfg.tau)?;
                let (da, dm, dq) = mid.score_bwd(ps, &mc.1, &ds)?;
                let (dx, dmeta) = mid.items_bwd(ps, &self.pooling, &mc.0, &da, &dm)?;
                (dx, dq, Some(dmeta))
            }
            _ => {
                return Err(Error::Config {
                    key: "cache".into(),
                    msg: "cache does not match the model".into(),
                })
            }
        };
        if let (Some(meta), Some(dmeta)) = (&c.meta, dmeta) {
            self.meta_encoder().0.backward_cls(ps, &meta.bert, &dmeta)?;
        }
        let dqcls = self.text_proj.backward(ps, &c.query_proj, &dq)?;
        self.text.backward_cls(ps, &c.query, &dqcls)?;
        Ok(dx)
    }
}

/// NaN / Inf in an input is an error in debug builds (release builds rely on the loss check).
fn check_finite(what: &str, t: &Tensor) -> Result<()> {
    if cfg!(debug_assertions) {
        if let Some(i) = t.to_vec_f64()?.iter().position(|v| !v.is_finite()) {
            return Err(Error::Config {
                key: what.into(),
                msg: format!(
                    "non-finite value at flat index {i} of shape {:?}",
                    t.shape()
                ),
            });
        }
    }
    Ok(())
}
