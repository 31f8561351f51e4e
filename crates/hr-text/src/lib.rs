//! hr-text: the text side inputs shared by the data pipeline and the models
//! (docs/spec-retrieval.md section 2): the paper's preprocessing, a `tokenizer.json` loaded through
//! the `tokenizers` crate with our truncation and padding policy, the padded [`TokenBatch`] the
//! BERT consumes, and BERT-style WordPiece training for the synthetic vocabulary.

#![forbid(unsafe_code)]

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// A tokenizer that cannot be loaded, trained or applied; names its origin (a file or
/// `"<training>"`).
#[derive(Debug, thiserror::Error)]
#[error("tokenizer {origin}: {detail}")]
pub struct TextError {
    /// Where the tokenizer came from.
    pub origin: String,
    /// What went wrong.
    pub detail: String,
}

/// Result alias of hr-text.
pub type Result<T> = std::result::Result<T, TextError>;

/// Maximum tokens per text (including `[CLS]` and `[SEP]`).
pub const MAX_TOKENS: usize = 32;

/// Special tokens in id order: `[PAD]` = 0.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Lowercases and deletes every ASCII punctuation character ("dog's" -> "dogs").
pub fn preprocess(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect()
}

/// Joins tags with spaces and preprocesses them (metadata string).
pub fn tags_to_text<S: AsRef<str>>(tags: &[S]) -> String {
    let joined: Vec<&str> = tags.iter().map(|t| t.as_ref()).collect();
    preprocess(&joined.join(" "))
}

/// Token ids and masks of a padded batch of texts, row-major `[rows, cols]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids, `rows * cols`.
    pub ids: Vec<u32>,
    /// Attention mask (1 = token, 0 = padding), `rows * cols`.
    pub mask: Vec<u8>,
    /// Number of texts.
    pub rows: usize,
    /// Padded length (longest text in the batch).
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

    /// Checks that ids and mask hold `rows * cols` entries; the error says what was found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.rows * self.cols;
        if self.ids.len() != n || self.mask.len() != n {
            return Err(format!(
                "{} ids and {} mask entries for {} x {} tokens",
                self.ids.len(),
                self.mask.len(),
                self.rows,
                self.cols
            ));
        }
        Ok(())
    }
}

/// A loaded tokenizer with the project's truncation/padding policy.
#[derive(Clone)]
pub struct TextTokenizer {
    tok: Tokenizer,
    pad_id: u32,
    sep_id: u32,
    max_len: usize,
    origin: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .finish()
    }
}

fn tok_err(origin: &str, e: impl std::fmt::Display) -> TextError {
    TextError {
        origin: origin.to_string(),
        detail: e.to_string(),
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` from bytes; padding/truncation stored in the file are disabled.
    pub fn from_bytes(bytes: &[u8], origin: &str, max_len: usize) -> Result<Self> {
        // A panic inside the tokenizers crate on a hostile file is an error naming the file.
        let parsed = hr_core::catch_panic(|| Tokenizer::from_bytes(bytes))
            .map_err(|m| tok_err(origin, format!("the tokenizer parser panicked: {m}")))?;
        let mut tok = parsed.map_err(|e| tok_err(origin, e))?;
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| tok_err(origin, e))?;
        let id = |t: &str| {
            tok.token_to_id(t)
                .ok_or_else(|| tok_err(origin, format!("vocabulary has no {t} token")))
        };
        let pad_id = id("[PAD]")?;
        let sep_id = id("[SEP]")?;
        if max_len < 2 {
            return Err(tok_err(
                origin,
                format!("max_tokens must be >= 2 ([CLS] and [SEP]), got {max_len}"),
            ));
        }
        Ok(TextTokenizer {
            tok,
            pad_id,
            sep_id,
            max_len,
            origin: origin.to_string(),
        })
    }

    /// Loads a `tokenizer.json` file (errors name the path).
    pub fn from_file(path: &std::path::Path, max_len: usize) -> Result<Self> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| tok_err(&origin, e))?;
        TextTokenizer::from_bytes(&bytes, &origin, max_len)
    }

    /// Builds an uncased BERT WordPiece tokenizer from a `vocab.txt` (one token per line, the
    /// line number is the id), as HF's `BertTokenizerFast` does: lowercasing BERT normalizer
    /// (accents stripped), BERT pre-tokenizer, `[CLS] $A [SEP]`.
    pub fn from_vocab_txt(path: &std::path::Path, max_len: usize) -> Result<Self> {
        let origin = path.display().to_string();
        let file = path
            .to_str()
            .ok_or_else(|| tok_err(&origin, "path is not valid UTF-8"))?;
        let model = WordPiece::from_file(file)
            .unk_token("[UNK]".to_string())
            .build()
            .map_err(|e| tok_err(&origin, e))?;
        let mut tok = Tokenizer::new(model);
        set_bert_splitting(&mut tok, &origin)?;
        set_bert_template(&mut tok, &origin)?;
        let json = tok.to_string(false).map_err(|e| tok_err(&origin, e))?;
        TextTokenizer::from_bytes(json.as_bytes(), &origin, max_len)
    }

    /// Loads `path`: a `vocab.txt` ([`TextTokenizer::from_vocab_txt`]) when its name ends in
    /// `.txt`, else a `tokenizer.json`.
    pub fn from_path(path: &std::path::Path, max_len: usize) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("txt") => TextTokenizer::from_vocab_txt(path, max_len),
            _ => TextTokenizer::from_file(path, max_len),
        }
    }

    /// The tokenizer as `tokenizer.json` text (what a run directory stores).
    pub fn to_json(&self) -> Result<String> {
        self.tok
            .to_string(false)
            .map_err(|e| tok_err(&self.origin, e))
    }

    /// Where the tokenizer was loaded from (a path, or what the caller named it).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Preprocesses and encodes one text with `[CLS]`/`[SEP]`, truncated to `max_len` keeping `[SEP]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        // The tokenizers crate panics on some hostile tokenizer files only when encoding (a
        // post-processor naming a token the vocabulary lacks): an error naming the file.
        let enc = hr_core::catch_panic(|| self.tok.encode(preprocess(text), true))
            .map_err(|m| {
                tok_err(
                    &self.origin,
                    format!("the tokenizer panicked while encoding: {m}"),
                )
            })?
            .map_err(|e| tok_err(&self.origin, e))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            ids.truncate(self.max_len - 1);
            ids.push(self.sep_id);
        }
        Ok(ids)
    }

    /// Encodes texts and pads them to the longest in the batch.
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

/// Trains a BERT-style WordPiece tokenizer on `texts` and returns its JSON.
///
/// `[PAD]=0`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`; lowercase BERT normalizer, BertPreTokenizer and the
/// `"[CLS] $A [SEP]"` template. Texts are preprocessed (punctuation removed) before training, and
/// the vocabulary is canonicalized afterwards so the same corpus always gives the same file.
pub fn train_wordpiece<I>(texts: I, vocab_size: usize) -> Result<String>
where
    I: Iterator<Item = String>,
{
    let origin = "<training>";
    let model = WordPiece::builder()
        .unk_token("[UNK]".to_string())
        .build()
        .map_err(|e| tok_err(origin, e))?;
    let mut tok = Tokenizer::new(model);
    set_bert_splitting(&mut tok, origin)?;
    let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(1)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build()
        .into();
    let texts: Vec<String> = texts.map(|t| preprocess(&t)).collect();
    let words: std::collections::BTreeSet<String> = texts
        .iter()
        .flat_map(|t| t.split_whitespace().map(str::to_string))
        .collect();
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| tok_err(origin, e))?;
    set_bert_template(&mut tok, origin)?;
    let json = tok.to_string(false).map_err(|e| tok_err(origin, e))?;
    canonicalize_vocab(&json, &words)
}

/// The uncased BERT normalizer, pre-tokenizer and decoder on `tok`.
fn set_bert_splitting(tok: &mut Tokenizer, origin: &str) -> Result<()> {
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(|e| tok_err(origin, e))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    Ok(())
}

/// The `[CLS] $A [SEP]` (pair: `[CLS] $A [SEP] $B [SEP]`) post-processor of BERT.
fn set_bert_template(tok: &mut Tokenizer, origin: &str) -> Result<()> {
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| tok_err(origin, format!("vocabulary has no {t} token")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .map_err(|e| tok_err(origin, e))?
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .map_err(|e| tok_err(origin, e))?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| tok_err(origin, e))?;
    tok.with_post_processor(Some(template));
    Ok(())
}

/// Makes the trained vocabulary independent of the trainer's hash-order tie-breaking: keeps the
/// special tokens (ids 0..5), single characters, `##`-continuations of single characters and whole
/// corpus words, and numbers them in sorted order. Intermediate merge pieces are dropped.
fn canonicalize_vocab(json: &str, words: &std::collections::BTreeSet<String>) -> Result<String> {
    let origin = "<training>";
    let mut v: serde_json::Value = serde_json::from_str(json).map_err(|e| tok_err(origin, e))?;
    let vocab = v
        .pointer("/model/vocab")
        .and_then(|x| x.as_object())
        .ok_or_else(|| tok_err(origin, "serialized tokenizer has no model.vocab"))?;
    let is_char = |t: &str| t.chars().count() == 1;
    let mut chars = std::collections::BTreeSet::new();
    let mut conts = std::collections::BTreeSet::new();
    let mut whole = std::collections::BTreeSet::new();
    for tok in vocab.keys() {
        if SPECIAL_TOKENS.contains(&tok.as_str()) {
            continue;
        }
        match tok.strip_prefix("##") {
            Some(rest) if is_char(rest) => {
                conts.insert(tok.clone());
            }
            Some(_) => {}
            None if is_char(tok) => {
                chars.insert(tok.clone());
            }
            None if words.contains(tok) => {
                whole.insert(tok.clone());
            }
            None => {}
        }
    }
    let ordered = SPECIAL_TOKENS
        .iter()
        .map(|t| t.to_string())
        .chain(chars)
        .chain(conts)
        .chain(whole);
    let map: serde_json::Map<String, serde_json::Value> = ordered
        .enumerate()
        .map(|(i, t)| (t, serde_json::Value::from(i as u64)))
        .collect();
    if let Some(slot) = v.pointer_mut("/model/vocab") {
        *slot = serde_json::Value::Object(map);
    }
    serde_json::to_string_pretty(&v).map_err(|e| tok_err(origin, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_deletes_punctuation() {
        assert_eq!(
            preprocess("A Dog's high-pitched BARK!"),
            "a dogs highpitched bark"
        );
    }

    #[test]
    fn trained_tokenizer_has_bert_layout_and_truncates_keeping_sep() {
        let corpus: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "a low hum while a bell rings {} times then a fast clicking",
                    i % 4
                )
            })
            .collect();
        let json = train_wordpiece(corpus.into_iter(), 200).unwrap();
        let t = TextTokenizer::from_bytes(json.as_bytes(), "t", 6).unwrap();
        assert_eq!(t.pad_id(), 0);
        let ids = t.encode("A low hum, while a bell rings twice!").unwrap();
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[0], 2); // [CLS]
        assert_eq!(*ids.last().unwrap(), 3); // [SEP]
        let b = t.encode_batch(&["hum", "a low hum while"]).unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.ids.len(), 2 * b.cols);
        assert_eq!(b.mask[..b.cols].iter().filter(|m| **m == 1).count(), 3);
        assert_eq!(b.ids[b.cols - 1], 0);
    }

    #[test]
    fn training_is_deterministic() {
        let corpus =
            || (0..40).map(|i| format!("a quiet {} bell rings twice while wind blows {i}", i % 3));
        let a = train_wordpiece(corpus(), 500).unwrap();
        for _ in 0..3 {
            assert_eq!(a, train_wordpiece(corpus(), 500).unwrap());
        }
        let t = TextTokenizer::from_bytes(a.as_bytes(), "t", 32).unwrap();
        let ids = t
            .encode("A quiet bell rings twice while wind blows")
            .unwrap();
        assert!(!ids.contains(&1), "no [UNK]: {ids:?}");
        let toks: Vec<String> = ids.iter().filter_map(|i| t.tok.id_to_token(*i)).collect();
        assert_eq!(ids.len(), 10, "{toks:?}");
    }

    #[test]
    fn vocab_txt_builds_an_uncased_bert_tokenizer() {
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\ndog\nbark\n##s\ncar\n";
        let path = std::env::temp_dir().join(format!("hr-text-{}-vocab.txt", std::process::id()));
        std::fs::write(&path, vocab).unwrap();
        let t = TextTokenizer::from_path(&path, 32).unwrap();
        assert_eq!(t.vocab_size(), 10);
        assert_eq!(
            t.encode("A Dog barks, zebra!").unwrap(),
            [2, 5, 6, 7, 8, 1, 3]
        );
        let again = TextTokenizer::from_bytes(t.to_json().unwrap().as_bytes(), "json", 32).unwrap();
        assert_eq!(again.encode("car barks").unwrap(), [2, 9, 7, 8, 3]);
        let _ = std::fs::remove_file(path);
    }
}
