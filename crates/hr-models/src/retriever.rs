//! The `HybridRetriever`: text encoder(s), audio pooling transformer, fusion and the NT-Xent
//! loss in one struct with an explicit forward and backward.
//!
//! Parameter names: `text.*` (HF BERT names of the query encoder, shared with the metadata by
//! default), `text_proj.*` (hidden -> embed), `meta_text.*` / `meta_text_proj.*` (separate
//! metadata encoder, an ablation), `audio_cnn.*` (EfficientAT MobileNetV3 names, when
//! `audio.backbone` is set), `audio_head.*` (pooling transformer) and `mid.*` (mid fusion).
//! One [`HybridRetriever::forward`] and one [`HybridRetriever::backward`]: the batch holds frame
//! sequences (B, T, C) ([`RetrievalBatch`]) or raw audio ([`WaveformBatch`], through the mel
//! frontend and the MobileNetV3 over 10 s windows, backpropagated into the CNN too); the
//! backward returns the frames' gradient. Both take a [`RowExchange`] so that, under data
//! parallelism, the loss sees the global batch (see [`crate::exchange`]; `LocalRows` in a single
//! process). [`HybridRetriever::backward_deferring_cnn`] leaves the CNN's backward to the caller
//! (to overlap it with gradient reduction). Evaluation and search encode each side alone:
//! [`HybridRetriever::encode_audio`], [`HybridRetriever::encode_items`],
//! [`HybridRetriever::encode_queries`].

use std::path::Path;

use crate::{Error, NonFiniteValue, Result};
use hr_nn::layers::{Linear, LinearCache, Mode};
use hr_nn::loss::{contrastive_loss, contrastive_loss_bwd, ContrastiveCache, NtXent, NtXentCache};
use hr_nn::ParamStore;
use hr_tensor::{ops, Device, Rng, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::{BertCache, BertConfig, BertModel};
use crate::exchange::{gather, gather_flags, scatter, RowExchange, RowSpan};
use crate::fusion::{
    late_fuse, late_fuse_bwd, normalize_tokens, FusionKind, GateNorm, MidFusion, MidInputs,
    MidItemsCache, MidQueries, MidScoreCache,
};
use crate::mel::{MelConfig, MelFrontend};
use crate::mobilenet::{MobileNetConfig, MobileNetV3, Part, WindowedCache, WINDOW_FRAMES};
use crate::pooling::frame_mask;
use crate::pooling::{AudioPooling, PoolingCache, PoolingConfig};
use crate::text::TokenBatch;

mod batch;
pub use batch::{Batch, RetrievalBatch, WaveformBatch};

/// The audio backbone a preset names (wired to waveforms by the training code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// EfficientAT model name (`mn01` ... `mn40`, `mn40_as_ext`), or None when the model is fed
    /// frame sequences directly.
    #[serde(default)]
    pub backbone: Option<String>,
    /// Mel frontend augmentation in training: fmin / fmax jitter and SpecAugment masks
    /// (EfficientAT: on).
    #[serde(default = "default_true")]
    pub augment: bool,
    /// Run the CNN's batch norms on their running statistics in training too (frozen batch
    /// statistics; the affine parameters still train). Makes a step independent of how the
    /// batch is split over data-parallel ranks.
    #[serde(default)]
    pub frozen_batchnorm: bool,
}

fn default_true() -> bool {
    true
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

/// The audio CNN's part of a backward, deferred by
/// [`HybridRetriever::backward_deferring_cnn`]: it touches only the CNN's gradients and
/// communicates nothing.
#[derive(Debug)]
pub struct DeferredCnnBackward<'c> {
    model: &'c HybridRetriever,
    cnn: Option<&'c WindowedCache>,
    dframes: Tensor,
}

impl DeferredCnnBackward<'_> {
    /// Runs the CNN's backward (nothing for a frame batch); returns the frame gradient.
    pub fn run(self, ps: &mut ParamStore) -> Result<Tensor> {
        if let Some(cnn) = self.cnn {
            self.model
                .backbone()?
                .cnn
                .backward_windows(ps, cnn, &self.dframes)?;
        }
        Ok(self.dframes)
    }
}

/// Name prefix of the audio CNN's parameters (EfficientAT MobileNetV3 under the retriever).
pub const AUDIO_CNN_PREFIX: &str = "audio_cnn.";

/// The waveform front: mel frontend and MobileNetV3 (10 s windows).
#[derive(Debug, Clone)]
struct Backbone {
    mel: MelFrontend,
    cnn: MobileNetV3,
}

/// What [`HybridRetriever::forward`] returns.
#[derive(Debug, Clone)]
pub struct RetrieverOutput {
    /// Item embeddings of this rank's rows (B, E), unnormalised (`none` and `late` fusion).
    pub items: Option<Tensor>,
    /// Query embeddings of this rank's rows (B, E), unnormalised.
    pub queries: Tensor,
    /// Scores of the global batch (items x queries) divided by tau (`mid` fusion).
    pub scores: Option<Tensor>,
    /// The NT-Xent loss of the global batch (shape `[]`).
    pub loss: Tensor,
}

/// Saved activations of the metadata encoder.
#[derive(Debug, Clone)]
struct MetaCache {
    bert: BertCache,
    proj: Option<LinearCache>,
}

/// Saved activations of the item side, with the spans of this rank's rows in the gathered
/// matrices (items or mid fusion's audio tokens, queries, mid fusion's metadata tokens).
#[derive(Debug, Clone)]
enum ItemCache {
    Pooled(PoolingCache, [RowSpan; 2]),
    Mid(Box<(MidItemsCache, MidScoreCache)>, [RowSpan; 3]),
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
    /// The audio CNN's, when the batch held waveforms.
    cnn: Option<WindowedCache>,
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
        let cnn = MobileNetV3::with_prefix(ps, AUDIO_CNN_PREFIX, Part::Backbone, mc, rng)?;
        Ok(Some(Backbone {
            mel: MelFrontend::new(mel_config(&cfg.audio))?,
            cnn,
        }))
    }

    /// The query encoder (it also encodes the metadata unless the metadata encoder is separate).
    pub fn text_encoder(&self) -> &BertModel {
        &self.text
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

    /// The CNN's mode: evaluation (running batch-norm statistics) when they are frozen.
    fn cnn_mode(&self, mode: Mode) -> Mode {
        match self.cfg.audio.frozen_batchnorm {
            true => Mode::Eval,
            false => mode.sub(4),
        }
    }

    /// Item-side audio encoding: waveforms (B, N), on any device (the mel frontend runs on the
    /// host for a CPU model, on the device for a GPU one) -> frames (B, T, C) on the model's
    /// device and their mask (first `ceil(valid / N * T)` frames of each row), through the mel
    /// frontend (SpecAugment in training) and MobileNetV3 over 10 s windows. Evaluation and
    /// search encode each clip's audio once with it and reuse the frames.
    pub fn encode_audio(
        &self,
        ps: &mut ParamStore,
        waveforms: &Tensor,
        valid_lengths: &[usize],
        mode: Mode,
    ) -> Result<(Tensor, Vec<u8>)> {
        let (frames, valid, _) = self.encode_waveforms(ps, waveforms, valid_lengths, mode)?;
        Ok((frames, valid))
    }

    /// [`HybridRetriever::encode_audio`] with the CNN's saved activations.
    fn encode_waveforms(
        &self,
        ps: &mut ParamStore,
        waveforms: &Tensor,
        valid_lengths: &[usize],
        mode: Mode,
    ) -> Result<(Tensor, Vec<u8>, WindowedCache)> {
        let bb = self.backbone()?;
        let n = waveforms.dim("encode_audio", 1)?;
        if valid_lengths.len() != waveforms.dim("encode_audio", 0)? {
            return Err(Error::Config {
                key: "valid_lengths".into(),
                msg: format!(
                    "{} lengths for waveforms {:?}",
                    valid_lengths.len(),
                    waveforms.shape()
                ),
            });
        }
        // On a GPU the mel frontend runs there (tensor ops); on the CPU the host frontend
        // (f64 FFT, the bit-exact reference) runs and its output needs no upload.
        let device = self.device(ps);
        let mel = match device {
            Device::Cuda(_) => bb.mel.forward_device(waveforms, mode.sub(3), device)?,
            Device::Cpu => bb.mel.forward(waveforms, mode.sub(3))?,
        };
        let (frames, cache) =
            bb.cnn
                .forward_windows(ps, &mel, self.cnn_mode(mode), WINDOW_FRAMES)?;
        let fractions: Vec<f64> = valid_lengths
            .iter()
            .map(|&v| v as f64 / n.max(1) as f64)
            .collect();
        let valid = frame_mask(&fractions, frames.dim("encode_audio", 1)?);
        Ok((frames, valid, cache))
    }

    /// Query-side encoding: the query embeddings (B, E), unnormalised, of a token batch in
    /// evaluation mode (what search embeds a typed query with).
    pub fn encode_queries(&self, ps: &ParamStore, queries: &TokenBatch) -> Result<Tensor> {
        let (qcls, _) = self.text.forward_cls(ps, queries, Mode::Eval)?;
        Ok(self.text_proj.forward(ps, &qcls)?.0)
    }

    /// Item-side encoding of `none` and `late` fusion: the item embeddings (B, E),
    /// unnormalised, of a frame batch in evaluation mode (its queries are not used and may be
    /// empty). `mid`
    /// fusion has no item embedding of its own (it scores each item against each query):
    /// an error naming `fusion`.
    pub fn encode_items(&self, ps: &ParamStore, batch: &RetrievalBatch) -> Result<Tensor> {
        if self.cfg.fusion == FusionKind::Mid {
            return Err(Error::Config {
                key: "fusion".into(),
                msg: "mid fusion scores item-query pairs jointly; use forward".into(),
            });
        }
        self.check_batch(ps, batch, false)?;
        Ok(self.pooled_items(ps, batch, Mode::Eval)?.0)
    }

    /// Item-side encoding of `mid` fusion: the L2-normalised audio and metadata tokens
    /// (B, E) each of a frame batch in evaluation mode (its queries are not used). Items do
    /// not depend on the query in mid fusion (only the gated embedding units and the modality
    /// weights do), so search indexes these and scores them with [`HybridRetriever::mid_scores`].
    pub fn encode_mid_items(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
    ) -> Result<(Tensor, Tensor)> {
        let mid = self.mid_fusion()?;
        self.check_batch(ps, batch, false)?;
        let (bert, _) = self.meta_encoder();
        let (mcls, _) = bert.forward_cls(ps, &batch.metadata, Mode::Eval)?;
        let inputs = MidInputs {
            frames: &batch.frames,
            valid: &batch.frame_valid,
            meta: &mcls,
            present: &batch.metadata_present,
        };
        let (a, m, _) = mid.items(ps, &self.pooling, inputs, Mode::Eval)?;
        Ok((normalize_tokens(&a)?, normalize_tokens(&m)?))
    }

    /// The query side of `mid` fusion for a token batch (evaluation mode).
    pub fn encode_mid_queries(&self, ps: &ParamStore, queries: &TokenBatch) -> Result<MidQueries> {
        let q = self.encode_queries(ps, queries)?;
        self.mid_fusion()?.queries(ps, &q)
    }

    /// Mid-fusion scores (items x queries) of the tokens of [`HybridRetriever::encode_mid_items`]
    /// against [`HybridRetriever::encode_mid_queries`], scaled by `1 / tau` as
    /// [`HybridRetriever::forward`]'s scores are.
    pub fn mid_scores(
        &self,
        audio: &Tensor,
        meta: &Tensor,
        present: &[bool],
        queries: &MidQueries,
    ) -> Result<Tensor> {
        let s = MidFusion::score_normalized(audio, meta, present, queries)?;
        Ok(ops::scale(&s, 1.0 / self.cfg.tau)?)
    }

    /// Embeddings, scores and loss of this rank's share of a batch of frames
    /// ([`RetrievalBatch`]) or waveforms ([`WaveformBatch`]; the CNN's batch-norm running
    /// statistics update in training). The embeddings are gathered over ranks through `ex`
    /// and the loss is the global batch's ([`LocalRows`](crate::exchange::LocalRows) in a single
    /// process).
    pub fn forward<'b>(
        &self,
        ps: &mut ParamStore,
        batch: impl Into<Batch<'b>>,
        mode: Mode,
        ex: &mut dyn RowExchange,
    ) -> Result<(RetrieverOutput, RetrieverCache)> {
        match batch.into() {
            Batch::Frames(b) => self.forward_frames(ps, b, mode, ex, None),
            Batch::Waveforms(b) => {
                let (frames, frame_valid, cnn) =
                    self.encode_waveforms(ps, &b.waveforms, &b.valid_lengths, mode)?;
                let fb = RetrievalBatch {
                    frames,
                    frame_valid,
                    queries: b.queries.clone(),
                    metadata: b.metadata.clone(),
                    metadata_present: b.metadata_present.clone(),
                    clip_ids: b.clip_ids.clone(),
                };
                self.forward_frames(ps, &fb, mode, ex, Some(cnn))
            }
        }
    }

    /// Backward of [`HybridRetriever::forward`] with the same exchange: accumulates this
    /// rank's parameter gradients for `dloss` (1.0 for plain training) under the convention
    /// of [`crate::exchange`]; returns the gradient of the frames (B, T, C).
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        c: &RetrieverCache,
        dloss: f64,
        ex: &mut dyn RowExchange,
    ) -> Result<Tensor> {
        self.backward_deferring_cnn(ps, c, dloss, ex)?.run(ps)
    }

    /// [`HybridRetriever::backward`] without its last part, the audio CNN's backward, which
    /// the returned [`DeferredCnnBackward`] runs. When this returns every gradient is final
    /// except the CNN's (parameters named [`AUDIO_CNN_PREFIX`]...), and every exchange has
    /// happened: a data-parallel trainer reduces those gradients while the CNN's backward
    /// runs.
    pub fn backward_deferring_cnn<'c>(
        &'c self,
        ps: &mut ParamStore,
        c: &'c RetrieverCache,
        dloss: f64,
        ex: &mut dyn RowExchange,
    ) -> Result<DeferredCnnBackward<'c>> {
        let dframes = self.backward_heads(ps, c, dloss, ex)?;
        Ok(DeferredCnnBackward {
            model: self,
            cnn: c.cnn.as_ref(),
            dframes,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RetrieverConfig {
        &self.cfg
    }

    /// The device the model runs on: where its parameters in `ps` live.
    ///
    /// Move a model with [`ParamStore::to_device`] (the Adam moments are created on the
    /// parameters' device). Frames of a [`RetrievalBatch`] must be on this device (an error
    /// otherwise, never a silent copy); token ids, masks and presence flags stay host vectors
    /// (the embedding ops take ids as slices; masks are built on the host and uploaded once per
    /// call). Waveforms may live anywhere: on a CUDA model the mel frontend runs on the device
    /// (`MelFrontend::forward_device`, host waveforms are uploaded once), on the CPU it is host
    /// code (realfft + rayon).
    pub fn device(&self, ps: &ParamStore) -> Device {
        ps.value(self.text_proj.weight).device()
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

    /// Checks a batch against the model: frames on its device, one row per clip id in frames,
    /// metadata and (`with_queries`: not for item-only encoding) queries, finite frames.
    fn check_batch(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        with_queries: bool,
    ) -> Result<()> {
        let device = self.device(ps);
        if batch.frames.device() != device {
            return Err(hr_tensor::Error::DeviceMismatch {
                op: "HybridRetriever::forward (frames vs parameters)",
                lhs: batch.frames.device(),
                rhs: device,
            }
            .into());
        }
        let b = batch.clip_ids.len();
        let rows_ok = batch.frames.rank() == 3
            && batch.frames.shape()[0] == b
            && (!with_queries || batch.queries.rows == b)
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
        check_finite(NonFiniteValue::Frames, &batch.frames)
    }

    /// The forward of a frame batch; `cnn`: the CNN's cache when the frames came from it.
    fn forward_frames(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        mode: Mode,
        ex: &mut dyn RowExchange,
        cnn: Option<WindowedCache>,
    ) -> Result<(RetrieverOutput, RetrieverCache)> {
        self.check_batch(ps, batch, true)?;
        let (qcls, query) = self.text.forward_cls(ps, &batch.queries, mode.sub(0))?;
        let (q, query_proj) = self.text_proj.forward(ps, &qcls)?;
        let present = batch.metadata_present.clone();
        let ids = ex.gather_u64(&batch.clip_ids)?;
        let p = match self.cfg.fusion {
            FusionKind::Mid => self.forward_mid(ps, batch, &q, &ids, mode, ex)?,
            _ => self.forward_pooled(ps, batch, &q, &ids, mode, ex)?,
        };
        if !p.loss.scalar_f64()?.is_finite() {
            return Err(Error::NonFinite {
                what: NonFiniteValue::Loss,
                detail: "the loss is NaN or infinite (check the inputs)".into(),
            });
        }
        let output = RetrieverOutput {
            items: p.items,
            queries: q,
            scores: p.scores,
            loss: p.loss,
        };
        let cache = RetrieverCache {
            cnn,
            query,
            query_proj,
            meta: p.meta,
            items: p.item_cache,
            loss: p.loss_cache,
            present,
        };
        Ok((output, cache))
    }

    /// `none` and `late` fusion; `ids` = the clip ids of the global batch.
    fn forward_pooled(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        q: &Tensor,
        ids: &[u64],
        mode: Mode,
        ex: &mut dyn RowExchange,
    ) -> Result<ItemPass> {
        let (items, meta, pc) = self.pooled_items(ps, batch, mode)?;
        let (gi, si) = gather(ex, &items)?;
        let (gq, sq) = gather(ex, q)?;
        let (loss, lc) = NtXent { tau: self.cfg.tau }.forward(&gi, &gq, ids)?;
        let (item_cache, loss_cache) = (ItemCache::Pooled(pc, [si, sq]), LossCache::Cosine(lc));
        Ok(ItemPass {
            items: Some(items),
            loss,
            scores: None,
            meta,
            item_cache,
            loss_cache,
        })
    }

    /// The item embeddings of `none` and `late` fusion: pooled audio, plus the projected
    /// metadata where present (late fusion).
    fn pooled_items(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        mode: Mode,
    ) -> Result<(Tensor, Option<MetaCache>, PoolingCache)> {
        let (a, pc) = self
            .pooling
            .forward(ps, &batch.frames, &batch.frame_valid, mode.sub(2))?;
        if self.cfg.fusion != FusionKind::Late {
            return Ok((a, None, pc));
        }
        let (bert, proj) = self.meta_encoder();
        let (mcls, bc) = bert.forward_cls(ps, &batch.metadata, mode.sub(1))?;
        let (m, lc) = proj.forward(ps, &mcls)?;
        let meta = MetaCache {
            bert: bc,
            proj: Some(lc),
        };
        Ok((late_fuse(&a, &m, &batch.metadata_present)?, Some(meta), pc))
    }

    /// `mid` fusion; `ids` = the clip ids of the global batch.
    fn forward_mid(
        &self,
        ps: &ParamStore,
        batch: &RetrievalBatch,
        q: &Tensor,
        ids: &[u64],
        mode: Mode,
        ex: &mut dyn RowExchange,
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
        let ((ga, sa), (gm, sm)) = (gather(ex, &a)?, gather(ex, &m)?);
        let (gq, sq) = gather(ex, q)?;
        let gpresent = gather_flags(ex, present)?;
        let (s, sc) = mid.score(ps, &ga, &gm, &gpresent, &gq)?;
        let scores = ops::scale(&s, 1.0 / self.cfg.tau)?;
        let (loss, lc) = contrastive_loss(&scores, ids)?;
        let meta = Some(MetaCache {
            bert: bc,
            proj: None,
        });
        let item_cache = ItemCache::Mid(Box::new((ic, sc)), [sa, sq, sm]);
        let loss_cache = LossCache::Scores(lc);
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

    /// Everything of the backward but the audio CNN's: the loss, fusion, text and pooling
    /// encoders (every exchange happens here); returns the frame gradient.
    fn backward_heads(
        &self,
        ps: &mut ParamStore,
        c: &RetrieverCache,
        dloss: f64,
        ex: &mut dyn RowExchange,
    ) -> Result<Tensor> {
        let (dx, dq, dmeta) = match (&c.items, &c.loss) {
            (ItemCache::Pooled(pc, [si, sq]), LossCache::Cosine(lc)) => {
                let (di, dq) = NtXent { tau: self.cfg.tau }.backward(lc, dloss)?;
                let (di, dq) = (scatter(ex, &di, *si)?, scatter(ex, &dq, *sq)?);
                let (da, dmeta) = match &c.meta {
                    Some(MetaCache { proj: Some(pl), .. }) => {
                        let (da, dm) = late_fuse_bwd(&di, &c.present)?;
                        (da, Some(self.meta_encoder().1.backward(ps, pl, &dm)?))
                    }
                    _ => (di, None),
                };
                (self.pooling.backward(ps, pc, &da)?, dq, dmeta)
            }
            (ItemCache::Mid(mc, [sa, sq, sm]), LossCache::Scores(lc)) => {
                let mid = self.mid_fusion()?;
                let ds = ops::scale(&contrastive_loss_bwd(lc, dloss)?, 1.0 / self.cfg.tau)?;
                let (da, dm, dq) = mid.score_bwd(ps, &mc.1, &ds)?;
                let (da, dm) = (scatter(ex, &da, *sa)?, scatter(ex, &dm, *sm)?);
                let dq = scatter(ex, &dq, *sq)?;
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

/// EfficientAT's mel settings, without augmentation when the config says so.
fn mel_config(audio: &AudioConfig) -> MelConfig {
    let mut m = MelConfig::default();
    if !audio.augment {
        (m.freq_mask, m.time_mask) = (0, 0);
        (m.fmin_aug_range, m.fmax_aug_range) = (0, 0);
    }
    m
}

/// NaN / Inf in an input is an error in debug builds (release builds rely on the loss check).
fn check_finite(what: NonFiniteValue, t: &Tensor) -> Result<()> {
    if cfg!(debug_assertions) {
        if let Some(i) = t.to_vec_f64()?.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what,
                detail: format!(
                    "non-finite value at flat index {i} of shape {:?}",
                    t.shape()
                ),
            });
        }
    }
    Ok(())
}
