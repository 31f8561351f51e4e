//! hr-models: the seed paper's model on the hr-nn layers.
//!
//! - [`mel`]: the EfficientAT mel frontend and SpecAugment;
//! - [`mobilenet`]: MobileNetV3 (EfficientAT static family mn01..mn40);
//! - [`bert`]: BERT under HF names and the tokenizer / text preprocessing;
//! - [`pooling`]: the audio pooling transformer;
//! - [`fusion`] and [`retriever`]: none / late / mid fusion and the `HybridRetriever`;
//! - [`testing`]: helpers for tests (the installed all-MiniLM-L6-v2 folder);
//! - [`Error`]: the models' typed error ([`Error::NonFinite`] is what the trainer skips);
//! - [`exchange`]: the row exchange that lets the loss see a data-parallel global batch.

#![forbid(unsafe_code)]

pub mod bert;
mod error;
pub mod exchange;
pub mod fusion;
pub mod mel;
pub mod mobilenet;
pub mod pooling;
pub mod presets;
pub mod retriever;
pub mod testing;
pub mod text;

pub use error::{Error, NonFiniteValue, Result};
