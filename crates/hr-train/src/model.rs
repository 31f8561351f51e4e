//! Building the model from a training config and converting host batches to model inputs.

use hr_models::retriever::{HybridRetriever, RetrieverConfig, WaveformBatch};
use hr_nn::ParamStore;
use hr_tensor::{Rng, Tensor};

use hr_data::text::TextTokenizer;

use crate::config::{MissingMetadata, TrainConfig};
use crate::error::{Result, TrainError};
use crate::init::text_shape;

/// The model config of a training config: the preset with fusion, tau, audio augmentation,
/// dropout and batch-norm settings applied, and the text encoder shaped as
/// [`text_shape`] says.
pub fn retriever_config(cfg: &TrainConfig, tok: &TextTokenizer) -> Result<RetrieverConfig> {
    let mut m = hr_models::presets::preset(&cfg.model.preset)
        .map_err(|e| TrainError::config("model.preset", e.to_string()))?;
    m.fusion = cfg.model.fusion;
    m.tau = cfg.model.tau;
    m.audio.augment = cfg.model.audio_augment;
    m.audio.frozen_batchnorm = cfg.model.frozen_batchnorm;
    m.separate_metadata_encoder |= cfg.model.separate_metadata_encoder;
    if cfg.model.disable_dropout {
        m.pooling.dropout = 0.0;
        m.text.hidden_dropout_prob = 0.0;
        m.text.attention_probs_dropout_prob = 0.0;
    }
    m.text = text_shape(cfg, m.text, tok)?;
    m.validate()
        .map_err(|e| TrainError::config("model", e.to_string()))?;
    Ok(m)
}

/// A freshly initialised model and its parameters (initialisation seeded by `seed`).
pub fn build_model(mcfg: &RetrieverConfig, seed: u64) -> Result<(HybridRetriever, ParamStore)> {
    let mut ps = ParamStore::new();
    let mut rng = Rng::new(seed ^ 0x1A17_5EED);
    let model = HybridRetriever::new(&mut ps, mcfg.clone(), &mut rng)?;
    Ok((model, ps))
}

/// The resolved model config as TOML (stored as `RUN/model.toml`).
pub fn model_toml(mcfg: &RetrieverConfig) -> Result<String> {
    toml::to_string(mcfg).map_err(|e| TrainError::config("model", e.to_string()))
}

/// Per metadata row: whether the model fuses it. With [`MissingMetadata::Mask`], rows whose
/// text has nothing besides `[CLS]` and `[SEP]` are left out; with
/// [`MissingMetadata::EmptyString`] every row is fused.
pub fn present(t: &hr_data::text::TokenBatch, missing: MissingMetadata) -> Vec<bool> {
    (0..t.rows)
        .map(|r| {
            let row = &t.mask[r * t.cols..(r + 1) * t.cols];
            missing == MissingMetadata::EmptyString
                || row.iter().map(|&m| m as usize).sum::<usize>() > 2
        })
        .collect()
}

/// A loader batch as the model's waveform batch, with its waveforms (host or device) as `waveforms`.
pub fn waveform_batch(
    b: &hr_data::Batch,
    waveforms: Tensor,
    missing: MissingMetadata,
) -> Result<WaveformBatch> {
    Ok(WaveformBatch {
        waveforms,
        valid_lengths: b.valid_lengths.iter().map(|&v| v as usize).collect(),
        queries: b.captions.clone(),
        metadata: b.metadata.clone(),
        metadata_present: present(&b.metadata, missing),
        clip_ids: b.clip_indices.iter().map(|&c| c as u64).collect(),
    })
}
