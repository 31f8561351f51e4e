//! EfficientAT's static MobileNetV3 (`mn01` ... `mn40`, docs/spec-mobilenetv3-mn40.md) with explicit
//! forward and backward passes.
//!
//! Input: log-mel spectrograms (B, 1, F, T) (H = frequency, W = time). Outputs: logits of the
//! mlp head, the pooled features (global average of `features.16`) and the frame sequence
//! (B, T', C) = `features.16` averaged over frequency, plus every intermediate feature map.
//! Parameters carry the EfficientAT state-dict names, so converted checkpoints load directly
//! ([`MobileNetV3::load_efficientat`]). [`MobileNetV3::forward_windows`] runs long inputs as
//! non-overlapping 10 s windows and concatenates their frames.

mod block;
mod config;
mod windows;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::Result;
use hr_nn::layers::{Activation, ActivationCache, Dropout, DropoutCache, Linear, LinearCache};
use hr_nn::{MisShaped, Mode, ParamId, ParamStore};
use hr_tensor::{ops, DType, Rng, Tensor, Unary};

pub use block::{
    BlockCache, ConvBnAct, ConvBnActCache, ConvGeom, InvertedResidual, SeCache, SqueezeExcite,
};
pub use config::{make_divisible, BlockConfig, MobileNetConfig};
pub use windows::{window_layout, WindowedCache, WINDOW_FRAMES};

use block::geom;

/// A static MobileNetV3 (EfficientAT) with its parameters registered in a [`ParamStore`].
#[derive(Debug, Clone)]
pub struct MobileNetV3 {
    config: MobileNetConfig,
    prefix: String,
    stem: ConvBnAct,
    blocks: Vec<InvertedResidual>,
    last: ConvBnAct,
    /// The classifier head; `None` for a [`Part::Backbone`].
    head: Option<Head>,
    params: Vec<ParamId>,
}

/// The mlp head `classifier.{2,5}`.
#[derive(Debug, Clone)]
struct Head {
    fc1: Linear,
    act: Activation,
    drop: Dropout,
    fc2: Linear,
}

impl Head {
    /// `classifier.2` (last_conv -> head_hidden), Hardswish, dropout, `classifier.5`.
    fn new(
        ps: &mut ParamStore,
        prefix: &str,
        config: &MobileNetConfig,
        rng: &mut Rng,
    ) -> Result<Head> {
        let fc = |ps: &mut ParamStore, name: &str, i: usize, o: usize, rng: &mut Rng| {
            Linear::new(ps, &format!("{prefix}classifier.{name}"), i, o, true, rng)
        };
        Ok(Head {
            fc1: fc(ps, "2", config.last_conv, config.head_hidden, rng)?,
            act: Activation::new(Unary::Hardswish),
            drop: Dropout::new(config.dropout),
            fc2: fc(ps, "5", config.head_hidden, config.num_classes, rng)?,
        })
    }
}

/// Saved activations of the head.
#[derive(Debug, Clone)]
struct HeadCache {
    fc1: LinearCache,
    act: ActivationCache,
    drop: DropoutCache,
    fc2: LinearCache,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct MobileNetOutput {
    /// (B, num_classes); `None` from [`MobileNetV3::forward_backbone`].
    pub logits: Option<Tensor>,
    /// (B, C): `features.16` averaged over frequency and time.
    pub pooled: Tensor,
    /// (B, T', C): `features.16` averaged over frequency.
    pub frames: Tensor,
    /// Outputs of `features.0` ... `features.16` (17 maps, NCHW): in bf16 under
    /// [`hr_tensor::autocast::bf16_activations`] (f32 input), except `features.16`, which is
    /// in the input's dtype like `pooled` and `frames`.
    pub feature_maps: Vec<Tensor>,
}

/// Saved activations of a forward pass, consumed by [`MobileNetV3::backward`].
#[derive(Debug, Clone)]
pub struct MobileNetCache {
    stem: ConvBnActCache,
    blocks: Vec<BlockCache>,
    last: ConvBnActCache,
    head: Option<HeadCache>,
    f16_shape: Vec<usize>,
    /// dtype of the input and of the outputs (pooled, frames, `features.16`).
    io: DType,
    /// dtype of the activations inside the network: bf16 under
    /// [`hr_tensor::autocast::bf16_activations`] for an f32 input, else the input's.
    acts: DType,
}

/// Upstream gradients of the outputs (any subset; absent = zero).
#[derive(Debug, Clone, Default)]
pub struct MobileNetGrads {
    /// d loss / d logits (B, num_classes); needs a forward with the head.
    pub logits: Option<Tensor>,
    /// d loss / d pooled (B, C).
    pub pooled: Option<Tensor>,
    /// d loss / d frames (B, T', C).
    pub frames: Option<Tensor>,
    /// d loss / d `features.16` output (B, C, F', T').
    pub features16: Option<Tensor>,
}

/// An invalid-argument error naming the model.
fn invalid(msg: String) -> crate::Error {
    hr_tensor::Error::invalid("mobilenet_v3", msg).into()
}

/// NaN / Inf in the input is an error in debug builds (release builds skip the scan).
fn check_finite(x: &Tensor) -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    match x.to_vec_f64()?.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(invalid(format!(
            "input of shape {:?} has a non-finite value at flat index {i}",
            x.shape()
        ))),
        None => Ok(()),
    }
}

/// `acc += t` (or `acc = t` when empty).
fn accumulate(acc: &mut Option<Tensor>, t: Tensor) -> Result<()> {
    match acc {
        Some(a) => ops::axpy(a, 1.0, &t)?,
        None => *acc = Some(t),
    }
    Ok(())
}

/// Which part of the network a [`MobileNetV3`] registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Features and the classifier head (`features.*`, `classifier.*`).
    Classifier,
    /// The feature extractor alone (`features.*`): what a retriever uses.
    /// [`MobileNetV3::forward`] is then an error; EfficientAT checkpoints still load, their
    /// classifier entries ignored.
    Backbone,
}

impl MobileNetV3 {
    /// Registers a model under the EfficientAT names, initialised like EfficientAT (Kaiming
    /// normal fan-out convs, identity BN, Linear N(0, 0.01) with zero bias).
    pub fn new(ps: &mut ParamStore, config: MobileNetConfig, rng: &mut Rng) -> Result<MobileNetV3> {
        MobileNetV3::with_prefix(ps, "", Part::Classifier, config, rng)
    }

    /// Like [`MobileNetV3::new`] with `prefix` prepended to every name (e.g. `"audio.cnn."`),
    /// the whole classifier or its [`Part::Backbone`] alone.
    pub fn with_prefix(
        ps: &mut ParamStore,
        prefix: &str,
        part: Part,
        config: MobileNetConfig,
        rng: &mut Rng,
    ) -> Result<MobileNetV3> {
        let start = ps.len();
        let em = (config.bn_eps, config.bn_momentum);
        let hs = Some(Unary::Hardswish);
        let stem = ConvBnAct::new(
            ps,
            &format!("{prefix}features.0"),
            geom(1, config.stem, 3, 2, 1),
            hs,
            em,
            rng,
        )?;
        let blocks = config
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                InvertedResidual::new(ps, &format!("{prefix}features.{}", i + 1), b, em, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        let last_in = config.blocks.last().map_or(config.stem, |b| b.out);
        let last = ConvBnAct::new(
            ps,
            &format!("{prefix}features.16"),
            geom(last_in, config.last_conv, 1, 1, 1),
            hs,
            em,
            rng,
        )?;
        let head = match part {
            Part::Classifier => Some(Head::new(ps, prefix, &config, rng)?),
            Part::Backbone => None,
        };
        let params: Vec<ParamId> = ps.iter().skip(start).map(|(id, _)| id).collect();
        let model = MobileNetV3 {
            config,
            prefix: prefix.to_string(),
            stem,
            blocks,
            last,
            head,
            params,
        };
        model.init_linears(ps, rng)?;
        Ok(model)
    }

    /// Linear weights ~ N(0, 0.01), biases 0 (EfficientAT's init).
    fn init_linears(&self, ps: &mut ParamStore, rng: &mut Rng) -> Result<()> {
        for &id in &self.params {
            let p = ps.param(id);
            let name = &p.name[self.prefix.len()..];
            if !(name.contains(".conc_se_layers.") || name.starts_with("classifier.")) {
                continue;
            }
            let (shape, device) = (p.value.shape().to_vec(), p.value.device());
            *ps.value_mut(id) = match shape.len() {
                2 => Tensor::randn(&shape, 0.01, rng)?.to_device(device)?,
                _ => Tensor::zeros(&shape, hr_tensor::DType::F32, device)?,
            };
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &MobileNetConfig {
        &self.config
    }

    /// The ids of this model's parameters and buffers, in registration order.
    pub fn param_ids(&self) -> &[ParamId] {
        &self.params
    }

    /// Full forward (backbone and head) of `x` (B, 1, F, T). Training mode uses batch
    /// statistics in every BatchNorm (updating the running statistics in `ps`) and dropout
    /// in the head.
    pub fn forward(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(MobileNetOutput, MobileNetCache)> {
        self.run(ps, x, mode, true)
    }

    /// Forward without the classifier head (`logits` is `None`).
    pub fn forward_backbone(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(MobileNetOutput, MobileNetCache)> {
        self.run(ps, x, mode, false)
    }

    fn check_input(x: &Tensor) -> Result<()> {
        match x.shape() {
            [b, 1, f, t] if *b > 0 && *f > 0 && *t > 0 => check_finite(x),
            s => Err(invalid(format!(
                "expected a mel input (B, 1, F, T), got shape {s:?}"
            ))),
        }
    }

    fn run(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
        with_head: bool,
    ) -> Result<(MobileNetOutput, MobileNetCache)> {
        Self::check_input(x)?;
        let io = x.dtype();
        let acts = match io == DType::F32 && hr_tensor::autocast::bf16_activations_active() {
            true => DType::BF16,
            false => io,
        };
        let mut maps = Vec::with_capacity(17);
        let (mut h, stem) = self.stem.forward(ps, &x.to_dtype(acts)?, mode)?;
        maps.push(h.clone());
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let (y, c) = b.forward(ps, &h, mode)?;
            maps.push(y.clone());
            blocks.push(c);
            h = y;
        }
        let (f16, last) = self.last.forward(ps, &h, mode)?;
        let f16 = f16.to_dtype(io)?;
        maps.push(f16.clone());
        let pooled = ops::mean_axes(&f16, &[2, 3], false)?;
        let frames = ops::permute(&ops::mean_axes(&f16, &[2], false)?, &[0, 2, 1])?;
        let (logits, head) = match with_head {
            true => {
                let (l, c) = self.head_forward(ps, &pooled, mode)?;
                (Some(l), Some(c))
            }
            false => (None, None),
        };
        let cache = MobileNetCache {
            stem,
            blocks,
            last,
            head,
            f16_shape: f16.shape().to_vec(),
            io,
            acts,
        };
        Ok((
            MobileNetOutput {
                logits,
                pooled,
                frames,
                feature_maps: maps,
            },
            cache,
        ))
    }

    fn head(&self) -> Result<&Head> {
        self.head
            .as_ref()
            .ok_or_else(|| invalid("this MobileNetV3 was built without its classifier head".into()))
    }

    /// Whether the classifier head (`classifier.*`) is part of the model.
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    fn head_forward(
        &self,
        ps: &ParamStore,
        pooled: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, HeadCache)> {
        let h = self.head()?;
        let (a, fc1) = h.fc1.forward(ps, pooled)?;
        let (a, act) = h.act.forward(&a)?;
        let (a, drop) = h.drop.forward(&a, mode.sub(1_000))?;
        let (logits, fc2) = h.fc2.forward(ps, &a)?;
        Ok((
            logits,
            HeadCache {
                fc1,
                act,
                drop,
                fc2,
            },
        ))
    }

    fn head_backward(
        &self,
        ps: &mut ParamStore,
        c: &HeadCache,
        dlogits: &Tensor,
    ) -> Result<Tensor> {
        let h = self.head()?;
        let d = h.fc2.backward(ps, &c.fc2, dlogits)?;
        let d = h.drop.backward(&c.drop, &d)?;
        let d = h.act.backward(&c.act, &d)?;
        Ok(h.fc1.backward(ps, &c.fc1, &d)?)
    }

    /// Backward of a forward pass: accumulates every parameter gradient into `ps` and returns
    /// the input gradient (B, 1, F, T).
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &MobileNetCache,
        grads: &MobileNetGrads,
    ) -> Result<Tensor> {
        let df16 = self
            .features16_grad(ps, cache, grads)?
            .to_dtype(cache.acts)?;
        let mut d = self.last.backward(ps, &cache.last, &df16)?;
        for (b, c) in self.blocks.iter().zip(&cache.blocks).rev() {
            d = b.backward(ps, c, &d)?;
        }
        Ok(self
            .stem
            .backward(ps, &cache.stem, &d)?
            .to_dtype(cache.io)?)
    }

    /// The gradient of the `features.16` output from every given upstream gradient.
    fn features16_grad(
        &self,
        ps: &mut ParamStore,
        cache: &MobileNetCache,
        g: &MobileNetGrads,
    ) -> Result<Tensor> {
        let shape = &cache.f16_shape;
        let mut dpooled = g.pooled.clone();
        if let Some(dl) = &g.logits {
            let hc = cache.head.as_ref().ok_or_else(|| {
                invalid("logits gradient given but the forward ran without the head".into())
            })?;
            accumulate(&mut dpooled, self.head_backward(ps, hc, dl)?)?;
        }
        let mut df16 = g.features16.clone();
        if let Some(dp) = dpooled {
            accumulate(&mut df16, ops::mean_axes_bwd(&dp, shape, &[2, 3])?)?;
        }
        if let Some(df) = &g.frames {
            let dm = ops::permute_bwd(df, &[0, 2, 1])?;
            accumulate(&mut df16, ops::mean_axes_bwd(&dm, shape, &[2])?)?;
        }
        df16.ok_or_else(|| invalid("backward called without any upstream gradient".into()))
    }

    /// Loads a converted EfficientAT checkpoint (safetensors with the PyTorch state-dict names;
    /// `num_batches_tracked` entries are ignored, and so are `classifier.*` entries when the
    /// model has no head). Every missing, unexpected and mis-shaped key is reported at once
    /// ([`hr_nn::Error::KeyMismatch`]); nothing is changed on error.
    pub fn load_efficientat(&self, ps: &mut ParamStore, path: &Path) -> Result<()> {
        let mut file = hr_nn::io::read_safetensors(path)?;
        if !self.has_head() {
            file.tensors.retain(|k, _| !k.starts_with("classifier."));
        }
        let ours: BTreeMap<String, ParamId> = self
            .params
            .iter()
            .map(|&id| (ps.param(id).name[self.prefix.len()..].to_string(), id))
            .collect();
        key_mismatch(ps, &ours, &file.tensors, path)?;
        for (k, id) in ours {
            if let Some(t) = file.tensors.get(&k) {
                let v = ps.value(id);
                let t = t.to_dtype(v.dtype())?.to_device(v.device())?;
                *ps.value_mut(id) = t;
            }
        }
        Ok(())
    }
}

/// Compares the model's entries `ours` (name without prefix -> id) with a file's tensors
/// (`num_batches_tracked` ignored); errors with every missing, unexpected and mis-shaped key.
fn key_mismatch(
    ps: &ParamStore,
    ours: &BTreeMap<String, ParamId>,
    file: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let keys: BTreeSet<&String> = file
        .keys()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    let missing: Vec<String> = ours.keys().filter(|k| !keys.contains(k)).cloned().collect();
    let unexpected: Vec<String> = keys
        .iter()
        .filter(|k| !ours.contains_key(k.as_str()))
        .map(|k| k.to_string())
        .collect();
    let mis_shaped: Vec<MisShaped> = ours
        .iter()
        .filter_map(|(k, &id)| {
            let (want, got) = (ps.value(id).shape(), file.get(k)?.shape());
            (want != got).then(|| MisShaped {
                name: k.clone(),
                expected: want.to_vec(),
                found: got.to_vec(),
            })
        })
        .collect();
    if missing.is_empty() && unexpected.is_empty() && mis_shaped.is_empty() {
        return Ok(());
    }
    Err(hr_nn::Error::KeyMismatch {
        path: path.to_path_buf(),
        missing,
        unexpected,
        mis_shaped,
    }
    .into())
}
