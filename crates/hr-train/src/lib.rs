//! hr-train: the typed training configuration, the training loop, retrieval metrics and
//! evaluation, atomic resumable checkpoints, preemption handling and the demo.
//!
//! - [`config`]: TOML + `--set a.b=c` overrides, checked key by key;
//! - [`trainer`]: the loop, single process or one rank of a data-parallel job;
//! - [`dist`]: data parallelism on hr-dist (embedding exchange, gradient averaging);
//! - [`metrics`] / [`evaluate`]: text -> audio R@1/5/10 and mAP@10;
//! - [`checkpoint`]: the run-directory checkpoint format;
//! - [`init`]: pretrained weights and the tokenizer (`model.text_init`, `model.audio_init`,
//!   `model.init_from`, `model.tokenizer`) and their provenance record;
//! - [`import`]: EfficientAT `.pt` checkpoints to safetensors (`hr-train import-weights`);
//! - [`eval_job`]: what `hr-eval` runs; [`demo`]: baseline vs hybrids;
//! - [`plots`]: PNG plots of the loss and the validation metrics.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
mod data;
pub mod demo;
pub mod dist;
mod error;
pub mod eval_job;
pub mod evaluate;
pub mod import;
pub mod init;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod tensorboard;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use trainer::{train, train_dist, Outcome, Resume, TrainControl, TrainSummary, EXIT_REQUEUE};
