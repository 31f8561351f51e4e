//! Text side inputs (docs/spec-retrieval.md section 2): the shared `hr-text` crate, re-exported.

pub use hr_text::{preprocess, tags_to_text, TextError, TextTokenizer, TokenBatch, MAX_TOKENS};
