//! The building blocks: conv -> BN -> activation, squeeze-and-excitation and the inverted
//! residual block, each with an explicit forward (returning a cache) and backward.

use crate::Result;
use hr_nn::layers::{BatchNorm2d, BatchNormCache, Conv2d, Conv2dCache, Linear, LinearCache};
use hr_nn::{Mode, ParamStore};
use hr_tensor::{ops, Rng, Tensor, Unary};

use super::config::BlockConfig;

/// Convolution `{name}.0` (bias-free, symmetric padding), BatchNorm `{name}.1`, optional
/// activation (fused into the batch norm: [`BatchNorm2d::forward_act`]).
#[derive(Debug, Clone)]
pub struct ConvBnAct {
    conv: Conv2d,
    bn: BatchNorm2d,
    act: Option<Unary>,
}

/// Saved activations of a [`ConvBnAct`] (the batch norm's input and statistics; the
/// normalised tensor is recomputed in the backward, not kept).
#[derive(Debug, Clone)]
pub struct ConvBnActCache {
    conv: Conv2dCache,
    bn: BatchNormCache,
}

/// Geometry of a [`ConvBnAct`].
#[derive(Debug, Clone, Copy)]
pub struct ConvGeom {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvBnAct {
    /// Registers the conv and BN parameters under `name`.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        g: ConvGeom,
        act: Option<Unary>,
        eps_mom: (f64, f64),
        rng: &mut Rng,
    ) -> Result<ConvBnAct> {
        let conv = Conv2d::new(
            ps,
            &format!("{name}.0"),
            g.c_in,
            g.c_out,
            g.k,
            g.stride,
            g.groups,
            rng,
        )?;
        let bn = BatchNorm2d::new(ps, &format!("{name}.1"), g.c_out, eps_mom.0, eps_mom.1)?;
        Ok(ConvBnAct { conv, bn, act })
    }

    /// Forward (BN with batch statistics in training, running statistics in evaluation).
    pub fn forward(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, ConvBnActCache)> {
        let (h, conv) = self.conv.forward(ps, x)?;
        let (y, bn) = match self.act {
            Some(act) => self.bn.forward_act(ps, &h, mode, act)?,
            None => self.bn.forward(ps, &h, mode)?,
        };
        Ok((y, ConvBnActCache { conv, bn }))
    }

    /// Accumulates parameter gradients and returns dx.
    pub fn backward(&self, ps: &mut ParamStore, c: &ConvBnActCache, dy: &Tensor) -> Result<Tensor> {
        let dh = match self.act {
            Some(act) => self.bn.backward_act(ps, &c.bn, dy, act)?,
            None => self.bn.backward(ps, &c.bn, dy)?,
        };
        Ok(self.conv.backward(ps, &c.conv, &dh)?)
    }
}

/// Squeeze-and-excitation over channels (EfficientAT `conc_se_layers.0`): mean over (H, W) ->
/// fc1 -> ReLU -> fc2 -> sigmoid -> scale. The pooling, the scaling and the backward's gate
/// gradient are one pass each over the feature map ([`ops::plane_sum`], [`ops::plane_scale`]);
/// with bf16 activations the per-channel values (pooled, gate, their gradients) stay f32.
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    fc1: Linear,
    fc2: Linear,
}

/// Saved activations of a [`SqueezeExcite`].
#[derive(Debug, Clone)]
pub struct SeCache {
    x: Tensor,
    fc1: LinearCache,
    h: Tensor,
    fc2: LinearCache,
    z: Tensor,
    gate: Tensor,
}

impl SqueezeExcite {
    /// Registers `{name}.fc1` (c -> s) and `{name}.fc2` (s -> c).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c: usize,
        s: usize,
        rng: &mut Rng,
    ) -> Result<SqueezeExcite> {
        let fc1 = Linear::new(ps, &format!("{name}.fc1"), c, s, true, rng)?;
        let fc2 = Linear::new(ps, &format!("{name}.fc2"), s, c, true, rng)?;
        Ok(SqueezeExcite { fc1, fc2 })
    }

    /// `x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`.
    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, SeCache)> {
        let s = ops::scale(&ops::plane_sum(x, None)?, 1.0 / plane_len(x))?;
        let (h, fc1) = self.fc1.forward(ps, &s)?;
        let (z, fc2) = self.fc2.forward(ps, &ops::relu(&h)?)?;
        let gate = ops::sigmoid(&z)?;
        let y = ops::plane_scale(x, &gate, None)?;
        Ok((
            y,
            SeCache {
                x: x.clone(),
                fc1,
                h,
                fc2,
                z,
                gate,
            },
        ))
    }

    /// Accumulates the fc gradients and returns dx = dy * gate + d(mean)/dx.
    pub fn backward(&self, ps: &mut ParamStore, c: &SeCache, dy: &Tensor) -> Result<Tensor> {
        let dgate = ops::plane_sum(dy, Some(&c.x))?;
        let dz = ops::unary_bwd(Unary::Sigmoid, &c.z, &dgate)?;
        let dr = self.fc2.backward(ps, &c.fc2, &dz)?;
        let dh = ops::unary_bwd(Unary::Relu, &c.h, &dr)?;
        let ds = self.fc1.backward(ps, &c.fc1, &dh)?;
        let shift = ops::scale(&ds, 1.0 / plane_len(&c.x))?;
        Ok(ops::plane_scale(dy, &c.gate, Some(&shift))?)
    }
}

/// Elements of one (H, W) plane of the NCHW map `x`, as a divisor (at least 1).
fn plane_len(x: &Tensor) -> f64 {
    x.shape()[2..].iter().product::<usize>().max(1) as f64
}

/// An inverted residual block `features.{i}`: \[expand\] -> depthwise -> \[SE\] -> project
/// (+ input when the block is residual).
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    se: Option<SqueezeExcite>,
    project: ConvBnAct,
    residual: bool,
}

/// Saved activations of an [`InvertedResidual`].
#[derive(Debug, Clone)]
pub struct BlockCache {
    expand: Option<ConvBnActCache>,
    depthwise: ConvBnActCache,
    se: Option<SeCache>,
    project: ConvBnActCache,
}

impl InvertedResidual {
    /// Registers the block's parameters under `{name}.block.{j}` (j counts the sub-layers).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        cfg: &BlockConfig,
        eps_mom: (f64, f64),
        rng: &mut Rng,
    ) -> Result<InvertedResidual> {
        let mut j = 0;
        let mut next = || {
            j += 1;
            format!("{name}.block.{}", j - 1)
        };
        let e = cfg.expanded;
        let expand = match cfg.has_expand() {
            true => Some(ConvBnAct::new(
                ps,
                &next(),
                geom(cfg.input, e, 1, 1, 1),
                Some(cfg.act),
                eps_mom,
                rng,
            )?),
            false => None,
        };
        let depthwise = ConvBnAct::new(
            ps,
            &next(),
            geom(e, e, cfg.kernel, cfg.stride, e),
            Some(cfg.act),
            eps_mom,
            rng,
        )?;
        let se = match cfg.se {
            Some(s) => Some(SqueezeExcite::new(
                ps,
                &format!("{}.conc_se_layers.0", next()),
                e,
                s,
                rng,
            )?),
            None => None,
        };
        let project = ConvBnAct::new(ps, &next(), geom(e, cfg.out, 1, 1, 1), None, eps_mom, rng)?;
        Ok(InvertedResidual {
            expand,
            depthwise,
            se,
            project,
            residual: cfg.residual(),
        })
    }

    /// Forward of the block.
    pub fn forward(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, BlockCache)> {
        let (h, expand) = match &self.expand {
            Some(l) => {
                let (h, c) = l.forward(ps, x, mode)?;
                (h, Some(c))
            }
            None => (x.clone(), None),
        };
        let (h, depthwise) = self.depthwise.forward(ps, &h, mode)?;
        let (h, se) = match &self.se {
            Some(l) => {
                let (h, c) = l.forward(ps, &h)?;
                (h, Some(c))
            }
            None => (h, None),
        };
        let (mut y, project) = self.project.forward(ps, &h, mode)?;
        if self.residual {
            y = ops::add(&y, x)?;
        }
        Ok((
            y,
            BlockCache {
                expand,
                depthwise,
                se,
                project,
            },
        ))
    }

    /// Accumulates the block's parameter gradients and returns dx.
    pub fn backward(&self, ps: &mut ParamStore, c: &BlockCache, dy: &Tensor) -> Result<Tensor> {
        let mut dh = self.project.backward(ps, &c.project, dy)?;
        if let (Some(l), Some(sc)) = (&self.se, &c.se) {
            dh = l.backward(ps, sc, &dh)?;
        }
        dh = self.depthwise.backward(ps, &c.depthwise, &dh)?;
        if let (Some(l), Some(ec)) = (&self.expand, &c.expand) {
            dh = l.backward(ps, ec, &dh)?;
        }
        if self.residual {
            ops::axpy(&mut dh, 1.0, dy)?;
        }
        Ok(dh)
    }
}

/// Shorthand for a [`ConvGeom`].
pub fn geom(c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize) -> ConvGeom {
    ConvGeom {
        c_in,
        c_out,
        k,
        stride,
        groups,
    }
}
