//! Layers with explicit forward and backward passes. `forward` returns the output and a cache
//! of saved activations (plain tensors); `backward` takes that cache and the upstream gradient,
//! accumulates parameter gradients into the [`crate::ParamStore`] and returns the input gradient.
//! A layer used twice in one step (a shared text encoder) simply keeps two caches.

mod activation;
mod attention;
mod batchnorm;
mod conv;
mod embedding;
mod geu;
mod layernorm;
mod linear;
mod transformer;

pub use activation::{Activation, ActivationCache, Dropout, DropoutCache};
pub use attention::{AttentionCache, InProj, MultiHeadAttention};
pub use batchnorm::{BatchNorm2d, BatchNormCache};
pub use conv::{Conv2d, Conv2dCache};
pub use embedding::{sinusoidal_pe, Embedding, EmbeddingCache};
pub use geu::{GatedEmbeddingUnit, GeuCache, GeuNorm};
pub use layernorm::{LayerNorm, LayerNormCache};
pub use linear::{Linear, LinearCache};
pub use transformer::{EncoderLayerCache, Naming, TransformerEncoderLayer, TransformerLayerConfig};

use hr_tensor::mix64;

/// Training or evaluation. Training carries the seed of this call's dropout masks; sub-layers
/// derive their own seeds with [`Mode::sub`] so every mask of a step is distinct and
/// reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Evaluation: dropout off, batch norm uses running statistics.
    Eval,
    /// Training with a dropout seed.
    Train {
        /// Seed of this call's random masks.
        seed: u64,
    },
}

impl Mode {
    /// True in training mode.
    pub fn is_train(self) -> bool {
        matches!(self, Mode::Train { .. })
    }

    /// The mode of sub-layer `k` (a derived seed in training).
    #[allow(clippy::should_implement_trait)] // not arithmetic: "sub-layer", read as mode.sub(k)
    pub fn sub(self, k: u64) -> Mode {
        match self {
            Mode::Eval => Mode::Eval,
            Mode::Train { seed } => Mode::Train {
                seed: mix64(seed ^ mix64(k.wrapping_add(1))),
            },
        }
    }
}
