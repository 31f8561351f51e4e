//! hr-data: the dataset format (sharded Parquet + manifest), converters from public datasets,
//! synthetic sound scenes, and the deterministic distributed loader.
//!
//! [`rewrite`] reads prepared datasets and writes transformed ones (`hr-data merge`).
//!
//! The crate is independent of the tensor crates: batches are plain host arrays.

#![forbid(unsafe_code)]

pub mod audio;
pub mod convert;
pub mod error;
mod eval_set;
pub mod inspect;
pub mod loader;
pub mod manifest;
pub mod order;
pub mod rewrite;
pub mod rng;
pub mod schema;
pub mod shard;
pub mod store;
pub mod synthetic;
pub mod testing;
pub mod text;

pub use error::{DataError, Result};
pub use loader::{Batch, EvalSet, FsEval, Loader, LoaderConfig, MetadataKind, SplitIndex};
pub use manifest::{Manifest, ShardInfo};
pub use order::{partition, Cursor, Item};
pub use store::Store;

/// Opens a dataset root (local path or URL) and loads its manifest.
pub fn open_dataset(root: &str) -> Result<(Store, Manifest)> {
    let store = Store::open(root)?;
    let manifest = Manifest::load(&store)?;
    Ok((store, manifest))
}

/// Loads the tokenizer recorded with the dataset (manifest `tokenizer` field): the default of
/// a model trained from scratch on it (the synthetic demo). A pretrained text encoder brings
/// its own tokenizer instead.
pub fn dataset_tokenizer(
    store: &Store,
    manifest: &Manifest,
    max_tokens: usize,
) -> Result<text::TextTokenizer> {
    let rel = manifest
        .tokenizer
        .as_deref()
        .ok_or_else(|| DataError::Tokenizer {
            path: format!("{}/<none>", store.root()),
            detail: "the manifest names no tokenizer; a pretrained text encoder brings its own \
                     (hr-train: model.text_init = a Hugging Face BERT folder, or \
                     model.tokenizer = a tokenizer.json / vocab.txt), or record one with \
                     `hr-data prepare ... --tokenizer FILE`"
                .into(),
        })?;
    let bytes = store.get(rel)?;
    Ok(text::TextTokenizer::from_bytes(
        &bytes,
        &format!("{}/{rel}", store.root()),
        max_tokens,
    )?)
}

/// Records `file` (a `tokenizer.json`, or a `vocab.txt` converted to one) as the tokenizer of
/// the prepared dataset at `root`: written as `root/tokenizer.json` and named in the manifest
/// (both atomically).
pub fn record_tokenizer(root: &std::path::Path, file: &std::path::Path) -> Result<()> {
    let tok = text::TextTokenizer::from_path(file, text::MAX_TOKENS)?;
    let json = tok.to_json()?;
    let store = Store::local(root)?;
    let mut manifest = Manifest::load(&store)?;
    hr_core::write_atomic(&root.join("tokenizer.json"), json.as_bytes())?;
    manifest.tokenizer = Some("tokenizer.json".into());
    manifest.write_atomic(root)
}

/// Opens `root`, indexes `split` (verifying shard hashes when `cfg.verify_checksums`) and
/// starts a training [`Loader`] at `start` that tokenizes with `tok` (the text encoder's).
pub fn open_loader(
    root: &str,
    split: &str,
    cfg: LoaderConfig,
    tok: text::TextTokenizer,
    start: Cursor,
    end_epoch: Option<u64>,
) -> Result<Loader> {
    let (store, manifest) = open_dataset(root)?;
    if manifest.audio.and_then(|a| a.sample_rate) != Some(audio::TARGET_SR) {
        tracing::info!(
            "{root}: audio is not stored at 32 kHz, so the loader decodes and resamples whole \
             clips every epoch; `hr-data prepare reencode {root} --out NEW_ROOT` stores it once \
             at 32 kHz (crops are then decoded alone, without resampling)"
        );
    }
    let index = SplitIndex::open(&store, &manifest, split, cfg.verify_checksums)?;
    Loader::new(std::sync::Arc::new(index), cfg, tok, start, end_epoch)
}
