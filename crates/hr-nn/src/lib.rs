//! hr-nn: layers with explicit forward/backward passes and saved activations (llm.c style),
//! the [`ParamStore`] of named parameters with safetensors load/save, Adam/AdamW with
//! parameter groups, the warm-up + cosine schedule and the NT-Xent loss.

#![forbid(unsafe_code)]

mod error;
pub mod io;
pub mod layers;
pub mod loss;
pub mod optim;
mod param;
pub mod schedule;
pub mod testing;

pub use error::{Error, MisShaped, Result};
pub use layers::Mode;
pub use param::{LoadOptions, Param, ParamId, ParamStore};
