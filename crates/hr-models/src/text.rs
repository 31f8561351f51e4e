//! Text side inputs (spec-retrieval.md section 2): the paper's preprocessing, a `tokenizer.json`
//! loaded through the `tokenizers` crate with our truncation and padding policy, and the padded
//! [`TokenBatch`] the BERT consumes.

use std::path::Path;

use hr_nn::{Error, Result};
use tokenizers::Tokenizer;

/// Maximum tokens per text, [CLS] and [SEP] included (spec: 32).
pub const MAX_TOKENS: usize = 32;

/// Lowercases, then deletes every ASCII punctuation character (no replacement:
/// "dog's" -> "dogs", "high-pitched" -> "highpitched").
pub fn preprocess(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect()
}

/// The metadata string of a list of tags: tags joined with spaces, then [`preprocess`]ed.
pub fn tags_to_text<S: AsRef<str>>(tags: &[S]) -> String {
    let joined: Vec<&str> = tags.iter().map(|t| t.as_ref()).collect();
    preprocess(&joined.join(" "))
}

/// Token ids and attention mask of a padded batch, row-major `[rows, cols]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids, `rows * cols`.
    pub ids: Vec<u32>,
    /// Attention mask (1 = token, 0 = padding), `rows * cols`.
    pub mask: Vec<u8>,
    /// Number of texts.
    pub rows: usize,
    /// Padded length (the longest text of the batch).
    pub cols: usize,
}

impl TokenBatch {
    /// Pads `seqs` with `pad_id` to the longest one.
    pub fn from_sequences(seqs: &[Vec<u32>], pad_id: u32) -> TokenBatch {
        let cols = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = TokenBatch {
            ids: Vec::with_capacity(seqs.len() * cols),
            mask: Vec::with_capacity(seqs.len() * cols),
            rows: seqs.len(),
            cols,
        };
        for s in seqs {
            out.ids.extend_from_slice(s);
            out.ids.extend(std::iter::repeat_n(pad_id, cols - s.len()));
            out.mask.extend(std::iter::repeat_n(1u8, s.len()));
            out.mask.extend(std::iter::repeat_n(0u8, cols - s.len()));
        }
        out
    }

    /// Checks that ids and mask hold `rows * cols` entries.
    pub fn validate(&self) -> Result<()> {
        let n = self.rows * self.cols;
        if self.ids.len() != n || self.mask.len() != n {
            return Err(Error::Config {
                key: "tokens".into(),
                msg: format!(
                    "{} ids and {} mask entries for {} x {} tokens",
                    self.ids.len(),
                    self.mask.len(),
                    self.rows,
                    self.cols
                ),
            });
        }
        Ok(())
    }
}

/// A `tokenizer.json` with the project's policy: padding and truncation stored in the file
/// are turned off; texts are [`preprocess`]ed, encoded with [CLS]/[SEP], truncated to
/// `max_len` keeping the final [SEP], and padded to the longest text of a batch.
#[derive(Clone)]
pub struct TextTokenizer {
    tok: Tokenizer,
    pad_id: u32,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl TextTokenizer {
    /// Loads `path` (a HF `tokenizer.json`); `max_len` must be at least 2.
    pub fn from_file(path: &Path, max_len: usize) -> Result<TextTokenizer> {
        if max_len < 2 {
            return Err(Error::Config {
                key: "max_len".into(),
                msg: format!("must be at least 2 ([CLS] and [SEP]), got {max_len}"),
            });
        }
        let mut tok = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| tok_err(path, e))?;
        let pad_id = tok
            .token_to_id("[PAD]")
            .ok_or_else(|| tok_err(path, "the vocabulary has no [PAD] token"))?;
        Ok(TextTokenizer {
            tok,
            pad_id,
            max_len,
        })
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Preprocesses and encodes one text; longer encodings keep their first `max_len - 1`
    /// tokens and their last one ([SEP]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(preprocess(text), true)
            .map_err(|e| tok_err(Path::new("<tokenizer>"), e))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_len - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// Encodes `texts` and pads them to the longest.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        let seqs = texts
            .iter()
            .map(|t| self.encode(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenBatch::from_sequences(&seqs, self.pad_id))
    }

    /// Encodes metadata strings; returns the batch and, per row, whether the metadata is
    /// non-empty after preprocessing (empty items are fused as audio only / masked).
    pub fn encode_metadata<S: AsRef<str>>(&self, texts: &[S]) -> Result<(TokenBatch, Vec<bool>)> {
        let present = texts
            .iter()
            .map(|t| !preprocess(t.as_ref()).trim().is_empty())
            .collect();
        Ok((self.encode_batch(texts)?, present))
    }
}
