//! BERT under HF `BertModel` parameter names (no pooler), any size: embeddings (word +
//! position + token type 0, LayerNorm, dropout) followed by N post-norm `BertLayer`s. Padded
//! keys are excluded from attention exactly as HF's additive mask does.

use std::path::Path;

use crate::{Error, Result};
use hr_nn::io::read_safetensors;
use hr_nn::layers::{
    Dropout, DropoutCache, Embedding, EmbeddingCache, EncoderLayerCache, LayerNorm, LayerNormCache,
    Mode, Naming, TransformerEncoderLayer, TransformerLayerConfig,
};
use hr_nn::{MisShaped, ParamId, ParamStore};
use hr_tensor::{ops, Rng, Tensor, Unary};
use serde::{Deserialize, Serialize};

use crate::text::TokenBatch;

/// Shape and dropout of a BERT; field names follow HF's `config.json`, so a model's
/// `config.json` parses directly (unknown keys are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Rows of the position table (longest input).
    pub max_position_embeddings: usize,
    /// Rows of the token type table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and sub-layer outputs.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    pub attention_probs_dropout_prob: f64,
}

impl Default for BertConfig {
    /// bert-base-uncased.
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
        }
    }
}

impl BertConfig {
    /// Reads a HF `config.json`.
    pub fn from_json_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(hr_core::FileError::io(path))?;
        Ok(serde_json::from_str(&text)
            .map_err(|e| hr_core::FileError::format(path, e.to_string()))?)
    }

    fn layer_config(&self) -> TransformerLayerConfig {
        TransformerLayerConfig {
            dim: self.hidden_size,
            heads: self.num_attention_heads,
            ffn: self.intermediate_size,
            dropout: self.hidden_dropout_prob,
            attn_dropout: self.attention_probs_dropout_prob,
            ffn_inner_dropout: false,
            norm_first: false,
            eps: self.layer_norm_eps,
            activation: Unary::Gelu,
        }
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A BERT encoder whose parameters live in a [`ParamStore`] under `prefix` + HF names.
#[derive(Debug, Clone)]
pub struct BertModel {
    cfg: BertConfig,
    prefix: String,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    ln: LayerNorm,
    drop: Dropout,
    layers: Vec<TransformerEncoderLayer>,
    params: Vec<ParamId>,
}

/// Saved activations of a [`BertModel::forward`].
#[derive(Debug, Clone)]
pub struct BertCache {
    shape: [usize; 2],
    word: EmbeddingCache,
    position: EmbeddingCache,
    token_type: EmbeddingCache,
    ln: LayerNormCache,
    drop: DropoutCache,
    layers: Vec<EncoderLayerCache>,
}

impl BertModel {
    /// Registers a randomly initialised BERT (embeddings N(0, 0.02)) under `prefix`
    /// (empty = bare HF names such as `embeddings.word_embeddings.weight`).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        cfg: BertConfig,
        rng: &mut Rng,
    ) -> Result<BertModel> {
        let start = ps.len();
        let h = cfg.hidden_size;
        let n = |s: &str| join(prefix, s);
        let word = Embedding::new(
            ps,
            &n("embeddings.word_embeddings"),
            cfg.vocab_size,
            h,
            0.02,
            rng,
        )?;
        let position = Embedding::new(
            ps,
            &n("embeddings.position_embeddings"),
            cfg.max_position_embeddings,
            h,
            0.02,
            rng,
        )?;
        let token_type = Embedding::new(
            ps,
            &n("embeddings.token_type_embeddings"),
            cfg.type_vocab_size,
            h,
            0.02,
            rng,
        )?;
        let ln = LayerNorm::new(ps, &n("embeddings.LayerNorm"), h, cfg.layer_norm_eps)?;
        let layers = TransformerEncoderLayer::stack(
            ps,
            &n("encoder.layer"),
            cfg.num_hidden_layers,
            Naming::Bert,
            cfg.layer_config(),
            rng,
        )?;
        let params = ps.iter().skip(start).map(|(id, _)| id).collect();
        Ok(BertModel {
            cfg,
            prefix: prefix.to_string(),
            word,
            position,
            token_type,
            ln,
            drop: Dropout::new(cfg.hidden_dropout_prob),
            layers,
            params,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Ids of every parameter of this model (registration order).
    pub fn param_ids(&self) -> &[ParamId] {
        &self.params
    }

    fn check_tokens(&self, tokens: &TokenBatch) -> Result<()> {
        tokens.validate().map_err(|msg| Error::Config {
            key: "tokens".into(),
            msg,
        })?;
        if tokens.cols > self.cfg.max_position_embeddings {
            return Err(Error::Config {
                key: "tokens".into(),
                msg: format!(
                    "{} tokens exceed max_position_embeddings {}",
                    tokens.cols, self.cfg.max_position_embeddings
                ),
            });
        }
        Ok(())
    }

    /// The (B, T) key mask in the dtype and on the device of the model's parameters.
    fn mask_tensor(&self, ps: &ParamStore, tokens: &TokenBatch) -> Result<Tensor> {
        let v: Vec<f64> = tokens
            .mask
            .iter()
            .map(|&m| f64::from(u8::from(m != 0)))
            .collect();
        tensor_in(v, &[tokens.rows, tokens.cols], ps.value(self.word.weight))
    }

    /// `last_hidden_state` (B, T, hidden) of a padded batch and the cache for the backward.
    pub fn forward(
        &self,
        ps: &ParamStore,
        tokens: &TokenBatch,
        mode: Mode,
    ) -> Result<(Tensor, BertCache)> {
        self.check_tokens(tokens)?;
        let shape = [tokens.rows, tokens.cols];
        let positions: Vec<u32> = (0..tokens.rows)
            .flat_map(|_| 0..tokens.cols as u32)
            .collect();
        let types = vec![0u32; tokens.ids.len()];
        let (w, word) = self.word.forward(ps, &tokens.ids, &shape)?;
        let (p, position) = self.position.forward(ps, &positions, &shape)?;
        let (t, token_type) = self.token_type.forward(ps, &types, &shape)?;
        let (e, ln) = self.ln.forward(ps, &ops::add(&ops::add(&w, &p)?, &t)?)?;
        let (mut x, drop) = self.drop.forward(&e, mode.sub(0))?;
        let mask = self.mask_tensor(ps, tokens)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let (y, c) = l.forward(ps, &x, Some(&mask), mode.sub(i as u64 + 1))?;
            x = y;
            layers.push(c);
        }
        let cache = BertCache {
            shape,
            word,
            position,
            token_type,
            ln,
            drop,
            layers,
        };
        Ok((x, cache))
    }

    /// Accumulates every parameter gradient for upstream `dy` (B, T, hidden).
    pub fn backward(&self, ps: &mut ParamStore, c: &BertCache, dy: &Tensor) -> Result<()> {
        let mut d = dy.clone();
        for (l, lc) in self.layers.iter().zip(&c.layers).rev() {
            d = l.backward(ps, lc, &d)?;
        }
        let d = self.drop.backward(&c.drop, &d)?;
        let d = self.ln.backward(ps, &c.ln, &d)?;
        self.word.backward(ps, &c.word, &d)?;
        self.position.backward(ps, &c.position, &d)?;
        Ok(self.token_type.backward(ps, &c.token_type, &d)?)
    }

    /// The `[CLS]` vectors (B, hidden) of a `last_hidden_state`.
    pub fn cls(hidden: &Tensor) -> Result<Tensor> {
        let (b, h) = (hidden.dim("cls", 0)?, hidden.dim("cls", 2)?);
        Ok(ops::slice(hidden, 1, 0, 1)?.reshape(&[b, h])?)
    }

    /// Backward of [`BertModel::cls`]: `dcls` (B, hidden) placed at position 0 of `t` tokens.
    pub fn cls_bwd(dcls: &Tensor, t: usize) -> Result<Tensor> {
        let (b, h) = (dcls.dim("cls_bwd", 0)?, dcls.dim("cls_bwd", 1)?);
        Ok(ops::pad_axis(&dcls.reshape(&[b, 1, h])?, 1, 0, t)?)
    }

    /// CLS forward: `(cls (B, hidden), cache)`; the cache remembers the token count.
    pub fn forward_cls(
        &self,
        ps: &ParamStore,
        tokens: &TokenBatch,
        mode: Mode,
    ) -> Result<(Tensor, BertCache)> {
        let (hidden, cache) = self.forward(ps, tokens, mode)?;
        Ok((Self::cls(&hidden)?, cache))
    }

    /// Backward of [`BertModel::forward_cls`].
    pub fn backward_cls(&self, ps: &mut ParamStore, c: &BertCache, dcls: &Tensor) -> Result<()> {
        self.backward(ps, c, &Self::cls_bwd(dcls, c.shape[1])?)
    }

    /// Loads HF weights from a safetensors file as real checkpoints carry them: keys with a
    /// `bert.` prefix or none; TF-era LayerNorm names (`gamma` / `beta`, renamed as
    /// `transformers` does on load); `pooler.*`, the pre-training heads `cls.*` and the
    /// `embeddings.position_ids` buffer are ignored. Every missing, unexpected and mis-shaped
    /// key is reported at once.
    pub fn load_safetensors(&self, ps: &mut ParamStore, path: &Path) -> Result<()> {
        load_mapped(ps, path, &self.params, |key| {
            hf_bert_name(key).map(|k| join(&self.prefix, &k))
        })
    }
}

/// The `BertModel` name of a HF checkpoint key (None = not part of the encoder).
fn hf_bert_name(key: &str) -> Option<String> {
    if key.starts_with("cls.") {
        return None;
    }
    let k = key.strip_prefix("bert.").unwrap_or(key);
    if k.starts_with("pooler.") || k == "embeddings.position_ids" {
        return None;
    }
    let renamed = match (k.strip_suffix(".gamma"), k.strip_suffix(".beta")) {
        (Some(base), _) if base.ends_with("LayerNorm") => format!("{base}.weight"),
        (_, Some(base)) if base.ends_with("LayerNorm") => format!("{base}.bias"),
        _ => k.to_string(),
    };
    Some(renamed)
}

/// Loads the tensors of `path` into the parameters `ids` of `ps`; `map` turns a file key into
/// a model name (None = ignore the key). Values keep the model's dtype and device.
pub(crate) fn load_mapped(
    ps: &mut ParamStore,
    path: &Path,
    ids: &[ParamId],
    map: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let file = read_safetensors(path)?;
    let wanted: std::collections::HashMap<String, ParamId> = ids
        .iter()
        .map(|&id| (ps.param(id).name.clone(), id))
        .collect();
    let (mut unexpected, mut mis_shaped, mut updates) = (Vec::new(), Vec::new(), Vec::new());
    let mut found = std::collections::HashSet::new();
    for (key, t) in &file.tensors {
        let Some(name) = map(key) else { continue };
        let Some(&id) = wanted.get(&name) else {
            unexpected.push(key.clone());
            continue;
        };
        found.insert(id);
        let expected = ps.value(id).shape();
        if expected != t.shape() {
            let (expected, found) = (expected.to_vec(), t.shape().to_vec());
            mis_shaped.push(MisShaped {
                name,
                expected,
                found,
            });
            continue;
        }
        updates.push((id, t));
    }
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(id))
        .map(|&id| ps.param(id).name.clone())
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mis_shaped.is_empty() {
        let path = path.to_path_buf();
        return Err(hr_nn::Error::KeyMismatch {
            path,
            missing,
            unexpected,
            mis_shaped,
        }
        .into());
    }
    for (id, t) in updates {
        let (dtype, device) = (ps.value(id).dtype(), ps.value(id).device());
        *ps.value_mut(id) = t.to_dtype(dtype)?.to_device(device)?;
    }
    Ok(())
}

/// A tensor holding `v` in the dtype and on the device of `like` (masks and per-row weights
/// built on the host from batch metadata, uploaded once per call).
pub(crate) fn tensor_in(v: Vec<f64>, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape)?
        .to_dtype(like.dtype())?
        .to_device(like.device())?)
}
