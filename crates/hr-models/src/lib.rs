//! hr-models: the seed paper's model on the hr-nn layers.
//!
//! - [`mel`]: the EfficientAT mel frontend and SpecAugment;
//! - [`mobilenet`]: MobileNetV3 (EfficientAT static family mn01..mn40);
//! - [`bert`]: BERT under HF names and the tokenizer / text preprocessing;
//! - [`pooling`]: the audio pooling transformer;
//! - [`fusion`] and [`retriever`]: none / late / mid fusion and the `HybridRetriever`.

pub mod bert;
pub mod fusion;
pub mod mel;
pub mod mobilenet;
pub mod pooling;
pub mod presets;
pub mod retriever;
pub mod text;
