//! The model side of search: a checkpoint loaded with its run's tokenizer, embedding clips
//! (the item side exactly as the model scores it) and text queries.

use std::path::{Path, PathBuf};

use hr_data::loader::ClipBatch;
use hr_data::text::{TextTokenizer, TokenBatch};
use hr_data::MetadataKind;
use hr_models::fusion::{FusionKind, MidQueries};
use hr_models::retriever::{HybridRetriever, RetrievalBatch};
use hr_nn::{Mode, ParamStore};
use hr_tensor::{Device, Tensor};
use hr_train::config::MissingMetadata;
use hr_train::evaluate::unit_rows;

use crate::error::{Error, Result};

/// The item-side vectors of a batch of clips, L2-normalised, `[rows, dim]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemVectors {
    /// The item embedding (`none`, `late`) or the audio token (`mid`).
    pub embedding: Vec<f32>,
    /// The metadata token (`mid` only).
    pub meta: Option<Vec<f32>>,
    /// Whether each clip's metadata was fused.
    pub present: Vec<bool>,
}

/// The query side of a batch of text queries.
#[derive(Debug, Clone)]
pub enum QueryVectors {
    /// L2-normalised query embeddings (Nq, dim), scored by cosine (`none`, `late`).
    Cosine(Tensor),
    /// The query side of mid fusion.
    Mid(MidQueries),
}

/// A checkpoint ready to embed clips and queries.
pub struct Encoder {
    /// The model.
    pub model: HybridRetriever,
    /// Its parameters.
    pub params: ParamStore,
    /// The run's tokenizer.
    pub tokenizer: TextTokenizer,
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// sha256 of the checkpoint's weights (`model.safetensors`).
    pub model_sha256: String,
    /// The metadata kind the model was trained with.
    pub metadata: MetadataKind,
    /// How clips without metadata are fused.
    pub missing: MissingMetadata,
    /// The run's loader settings (crop length, tokens, metadata), as evaluation reads clips.
    pub loader: hr_data::LoaderConfig,
}

impl Encoder {
    /// Loads a checkpoint (a checkpoint directory, or a run directory: its newest committed
    /// checkpoint) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Encoder> {
        let mut ck = hr_train::eval_job::load(path)?;
        ck.params.to_device(device)?;
        let lcfg = hr_train::trainer::loader_config(&ck.config);
        let tokenizer = hr_train::init::run_tokenizer(&ck.run, &ck.config, lcfg.max_tokens)?;
        let weights = ck.dir.join(hr_train::checkpoint::MODEL_FILE);
        let (model_sha256, _) = hr_data::shard::sha256_file(&weights)?;
        Ok(Encoder {
            model: ck.model,
            params: ck.params,
            tokenizer,
            checkpoint: ck.dir,
            model_sha256,
            metadata: ck.config.model.metadata,
            missing: ck.config.model.missing_metadata,
            loader: lcfg,
        })
    }

    /// The fusion of the model.
    pub fn fusion(&self) -> FusionKind {
        self.model.config().fusion
    }

    /// Width of the item and query vectors.
    pub fn width(&self) -> usize {
        self.model.config().pooling.out_dim
    }

    /// The temperature that scales mid-fusion scores.
    pub fn tau(&self) -> f64 {
        self.model.config().tau
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.model.device(&self.params)
    }

    /// Tokenizes metadata texts (one per clip).
    pub fn tokenize(&self, texts: &[String]) -> Result<TokenBatch> {
        self.tokenizer
            .encode_batch(texts)
            .map_err(|e| Error::Data(e.into()))
    }

    /// The item side of a batch of clips in evaluation mode: audio through the CNN once,
    /// fused with each clip's metadata (`late`, `mid`) as the model scores it.
    /// `b` is evaluation's clip batch; its first metadata set is the clip's own metadata.
    pub fn embed_items(&mut self, b: &ClipBatch) -> Result<ItemVectors> {
        let rows = b.clip_indices.len();
        let wf = Tensor::from_slice(&b.waveforms, &[rows, b.samples])?;
        let valid: Vec<usize> = b.valid_lengths.iter().map(|&v| v as usize).collect();
        let (frames, frame_valid) =
            self.model
                .encode_audio(&mut self.params, &wf, &valid, Mode::Eval)?;
        let metadata = b.metadata.first().cloned().unwrap_or_default();
        let present = hr_train::model::present(&metadata, self.missing);
        let batch = RetrievalBatch {
            frames,
            frame_valid,
            queries: TokenBatch::default(),
            metadata,
            metadata_present: present.clone(),
            clip_ids: (0..rows as u64).collect(),
        };
        match self.fusion() {
            FusionKind::Mid => {
                let (a, m) = self.model.encode_mid_items(&self.params, &batch)?;
                Ok(ItemVectors {
                    embedding: a.to_vec_f32()?,
                    meta: Some(m.to_vec_f32()?),
                    present,
                })
            }
            _ => {
                let items = self.model.encode_items(&self.params, &batch)?;
                Ok(ItemVectors {
                    embedding: unit_rows(&items.to_vec_f32()?, self.width()),
                    meta: None,
                    present,
                })
            }
        }
    }

    /// The query side of text queries (evaluation mode).
    pub fn embed_queries<S: AsRef<str>>(&self, texts: &[S]) -> Result<QueryVectors> {
        let tokens = self
            .tokenizer
            .encode_batch(texts)
            .map_err(|e| Error::Data(e.into()))?;
        match self.fusion() {
            FusionKind::Mid => Ok(QueryVectors::Mid(
                self.model.encode_mid_queries(&self.params, &tokens)?,
            )),
            _ => {
                let q = self.model.encode_queries(&self.params, &tokens)?;
                let v = unit_rows(&q.to_vec_f32()?, self.width());
                let t = Tensor::from_vec(v, &[texts.len(), self.width()])?;
                Ok(QueryVectors::Cosine(t.to_device(self.device())?))
            }
        }
    }
}
