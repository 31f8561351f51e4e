//! Configuration of the EfficientAT static MobileNetV3 family (mn01 ... mn40).

use crate::{Error, Result};
use hr_tensor::Unary;

/// EfficientAT's `_make_divisible(v, divisor)`: round to the nearest multiple of `divisor`
/// (at least `divisor`), adding `divisor` when that loses more than 10 %.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// One inverted residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// Input channels.
    pub input: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Expanded channels.
    pub expanded: usize,
    /// Output channels.
    pub out: usize,
    /// Squeeze-and-excitation width (None = no SE).
    pub se: Option<usize>,
    /// Activation (ReLU or Hardswish).
    pub act: Unary,
    /// Stride of the depthwise convolution (both axes).
    pub stride: usize,
}

impl BlockConfig {
    /// True when the block has an expand 1x1 convolution (expanded != input).
    pub fn has_expand(&self) -> bool {
        self.expanded != self.input
    }

    /// True when the input is added to the output.
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.input == self.out
    }
}

/// The width-1.0 table: (input, kernel, expanded, out, SE, act is HS, stride).
const BASE: [(usize, usize, usize, usize, bool, bool, usize); 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

/// A static MobileNetV3 as in EfficientAT (`mobilenet_v3_large` settings, mlp head, SE over
/// channels with a sigmoid gate).
#[derive(Debug, Clone, PartialEq)]
pub struct MobileNetConfig {
    /// Width multiplier (0.4 for mn04, 4.0 for mn40).
    pub width: f64,
    /// Stem output channels (`features.0`).
    pub stem: usize,
    /// The 15 inverted residual blocks (`features.1` ... `features.15`).
    pub blocks: Vec<BlockConfig>,
    /// Output channels of `features.16` (6 x the last block's output).
    pub last_conv: usize,
    /// Hidden width of the mlp head (`classifier.2`).
    pub head_hidden: usize,
    /// Number of classes (`classifier.5`).
    pub num_classes: usize,
    /// Dropout of the head.
    pub dropout: f64,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// BatchNorm momentum (PyTorch convention).
    pub bn_momentum: f64,
}

impl MobileNetConfig {
    /// The configuration for width multiplier `width` (527 classes, dropout 0.2).
    pub fn from_width(width: f64) -> Result<MobileNetConfig> {
        if !(width.is_finite() && width > 0.0 && width <= 16.0) {
            return Err(Error::Config {
                key: "mobilenet.width".into(),
                msg: format!("{width} is outside (0, 16]"),
            });
        }
        let adj = |c: usize| make_divisible(c as f64 * width, 8);
        let blocks: Vec<BlockConfig> = BASE
            .iter()
            .map(|&(i, k, e, o, se, hs, s)| {
                let expanded = adj(e);
                BlockConfig {
                    input: adj(i),
                    kernel: k,
                    expanded,
                    out: adj(o),
                    se: se.then(|| make_divisible((expanded / 4) as f64, 8)),
                    act: if hs { Unary::Hardswish } else { Unary::Relu },
                    stride: s,
                }
            })
            .collect();
        let last_in = blocks[14].out;
        Ok(MobileNetConfig {
            width,
            stem: adj(16),
            blocks,
            last_conv: 6 * last_in,
            head_hidden: adj(1280),
            num_classes: 527,
            dropout: 0.2,
            bn_eps: 1e-3,
            bn_momentum: 0.01,
        })
    }

    /// The configuration named `mnXY` (width XY / 10: `mn01` = 0.1 ... `mn40` = 4.0); a
    /// trailing `_as`, `_as_ext` etc. is ignored.
    pub fn from_name(name: &str) -> Result<MobileNetConfig> {
        let bad = || Error::Config {
            key: "mobilenet.name".into(),
            msg: format!("{name:?} is not of the form mnXY (mn01 ... mn40)"),
        };
        let digits = name
            .strip_prefix("mn")
            .and_then(|r| r.get(..2))
            .ok_or_else(bad)?;
        let rest_ok = name.len() == 4 || name[4..].starts_with('_');
        let v: u32 = digits.parse().map_err(|_| bad())?;
        if !rest_ok || v == 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        MobileNetConfig::from_width(v as f64 / 10.0)
    }

    /// Every state-dict entry as `(EfficientAT name, shape, trainable)` in registration order
    /// (running statistics are buffers; `num_batches_tracked` is not listed).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>, bool)> {
        let mut v = Vec::new();
        conv_bn_shapes(&mut v, "features.0", self.stem, 1, 3);
        for (i, b) in self.blocks.iter().enumerate() {
            block_shapes(&mut v, &format!("features.{}.block", i + 1), b);
        }
        let last_in = self.blocks.last().map_or(self.stem, |b| b.out);
        conv_bn_shapes(&mut v, "features.16", self.last_conv, last_in, 1);
        linear_shapes(&mut v, "classifier.2", self.last_conv, self.head_hidden);
        linear_shapes(&mut v, "classifier.5", self.head_hidden, self.num_classes);
        v
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.param_shapes()
            .iter()
            .filter(|p| p.2)
            .map(|p| p.1.iter().product::<usize>())
            .sum()
    }
}

type Shapes = Vec<(String, Vec<usize>, bool)>;

/// Shapes of a conv (`{p}.0`) with `c_in_per_group` inputs per group and its BN (`{p}.1`).
fn conv_bn_shapes(v: &mut Shapes, p: &str, c_out: usize, c_in_per_group: usize, k: usize) {
    v.push((
        format!("{p}.0.weight"),
        vec![c_out, c_in_per_group, k, k],
        true,
    ));
    v.push((format!("{p}.1.weight"), vec![c_out], true));
    v.push((format!("{p}.1.bias"), vec![c_out], true));
    v.push((format!("{p}.1.running_mean"), vec![c_out], false));
    v.push((format!("{p}.1.running_var"), vec![c_out], false));
}

fn linear_shapes(v: &mut Shapes, p: &str, c_in: usize, c_out: usize) {
    v.push((format!("{p}.weight"), vec![c_out, c_in], true));
    v.push((format!("{p}.bias"), vec![c_out], true));
}

/// Shapes of one inverted residual block under `{p}` = `features.{i}.block`.
fn block_shapes(v: &mut Shapes, p: &str, b: &BlockConfig) {
    let mut j = 0;
    if b.has_expand() {
        conv_bn_shapes(v, &format!("{p}.{j}"), b.expanded, b.input, 1);
        j += 1;
    }
    conv_bn_shapes(v, &format!("{p}.{j}"), b.expanded, 1, b.kernel);
    j += 1;
    if let Some(s) = b.se {
        let se = format!("{p}.{j}.conc_se_layers.0");
        linear_shapes(v, &format!("{se}.fc1"), b.expanded, s);
        linear_shapes(v, &format!("{se}.fc2"), s, b.expanded);
        j += 1;
    }
    conv_bn_shapes(v, &format!("{p}.{j}"), b.out, b.expanded, 1);
}
