//! 2-D convolution layer (bias-free, NCHW / OIHW).

use hr_tensor::{ops, Conv2dSpec, Rng, Tensor};

use crate::{ParamId, ParamStore, Result};

/// A convolution (`{name}.weight` of shape (out, in/groups, kh, kw)).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// The kernel.
    pub weight: ParamId,
    /// Stride (h, w).
    pub stride: (usize, usize),
    /// Zero padding (h, w).
    pub padding: (usize, usize),
    /// Dilation (h, w).
    pub dilation: (usize, usize),
    /// Groups.
    pub groups: usize,
}

/// Saved input and geometry of a [`Conv2d`] forward.
#[derive(Debug, Clone)]
pub struct Conv2dCache {
    x: Tensor,
    spec: Conv2dSpec,
}

impl Conv2d {
    /// Registers a `k x k` convolution with symmetric padding `(k-1)/2 * dilation`, initialised
    /// like EfficientAT (Kaiming normal, fan-out).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        rng: &mut Rng,
    ) -> Result<Conv2d> {
        if groups == 0 || !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
            return Err(crate::Error::Config {
                key: format!("{name}.groups"),
                msg: format!("groups {groups} must divide in {c_in} and out {c_out} channels"),
            });
        }
        let fan_out = (c_out * k * k / groups).max(1);
        let std = (2.0 / fan_out as f32).sqrt();
        let w = Tensor::randn(&[c_out, c_in / groups, k, k], std, rng)?;
        let weight = ps.add(&format!("{name}.weight"), w)?;
        let p = (k - 1) / 2;
        Ok(Conv2d {
            weight,
            stride: (stride, stride),
            padding: (p, p),
            dilation: (1, 1),
            groups,
        })
    }

    /// `x` (N, C, H, W) -> (N, O, H', W').
    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, Conv2dCache)> {
        let w = ps.value(self.weight);
        let spec = ops::conv2d_spec(
            x.shape(),
            w.shape(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )?;
        let y = ops::conv2d(x, w, self.stride, self.padding, self.dilation, self.groups)?;
        Ok((y, Conv2dCache { x: x.clone(), spec }))
    }

    /// Accumulates dW and returns dx.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &Conv2dCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let (dx, dw) = ops::conv2d_bwd(&cache.x, ps.value(self.weight), dy, &cache.spec)?;
        ps.accumulate(self.weight, &dw)?;
        Ok(dx)
    }
}
