//! Pointwise activations and dropout as layers.

use hr_tensor::{ops, Tensor, Unary};

use super::Mode;
use crate::Result;

/// A pointwise activation (ReLU, GELU, Hardswish, Sigmoid, Tanh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activation {
    /// Which function.
    pub kind: Unary,
}

/// Saved input of an [`Activation`].
#[derive(Debug, Clone)]
pub struct ActivationCache {
    x: Tensor,
}

impl Activation {
    /// An activation layer.
    pub fn new(kind: Unary) -> Activation {
        Activation { kind }
    }

    /// `kind(x)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, ActivationCache)> {
        Ok((ops::unary(self.kind, x)?, ActivationCache { x: x.clone() }))
    }

    /// `dy * kind'(x)`.
    pub fn backward(&self, cache: &ActivationCache, dy: &Tensor) -> Result<Tensor> {
        Ok(ops::unary_bwd(self.kind, &cache.x, dy)?)
    }
}

/// Inverted dropout; identity in evaluation or with `p == 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Drop probability.
    pub p: f64,
}

/// Saved mask of a [`Dropout`] (None when it was the identity).
#[derive(Debug, Clone)]
pub struct DropoutCache {
    scale: Option<Tensor>,
}

impl Dropout {
    /// A dropout layer.
    pub fn new(p: f64) -> Dropout {
        Dropout { p }
    }

    /// Applies dropout in training mode.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, DropoutCache)> {
        match mode {
            Mode::Train { seed } if self.p > 0.0 => {
                let (y, scale) = ops::dropout(x, self.p, seed)?;
                Ok((y, DropoutCache { scale: Some(scale) }))
            }
            _ => Ok((x.clone(), DropoutCache { scale: None })),
        }
    }

    /// `dy * mask`.
    pub fn backward(&self, cache: &DropoutCache, dy: &Tensor) -> Result<Tensor> {
        match &cache.scale {
            Some(s) => Ok(ops::dropout_bwd(dy, s)?),
            None => Ok(dy.clone()),
        }
    }
}
