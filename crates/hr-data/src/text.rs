//! Text preprocessing and tokenization: the shared `hr-text` crate, re-exported.

pub use hr_text::{
    preprocess, tags_to_text, train_wordpiece, TextError, TextTokenizer, TokenBatch, MAX_TOKENS,
    SPECIAL_TOKENS,
};
