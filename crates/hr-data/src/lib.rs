//! hr-data: the dataset format (sharded Parquet + manifest), converters from public datasets,
//! synthetic sound scenes, and the deterministic distributed loader.
//!
//! The crate is independent of the tensor crates: batches are plain host arrays.

pub mod audio;
pub mod convert;
pub mod error;
pub mod inspect;
pub mod loader;
pub mod manifest;
pub mod order;
pub mod rng;
pub mod schema;
pub mod shard;
pub mod store;
pub mod synthetic;
pub mod text;

pub use error::{DataError, Result};
pub use loader::{Batch, EvalSet, Loader, LoaderConfig, MetadataKind, SplitIndex};
pub use manifest::{Manifest, ShardInfo};
pub use order::{partition, Cursor, Item};
pub use store::Store;

/// Opens a dataset root (local path or URL) and loads its manifest.
pub fn open_dataset(root: &str) -> Result<(Store, Manifest)> {
    let store = Store::open(root)?;
    let manifest = Manifest::load(&store)?;
    Ok((store, manifest))
}

/// Loads the tokenizer shipped with the dataset (manifest `tokenizer` field).
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
            detail: "the manifest names no tokenizer".into(),
        })?;
    let bytes = store.get(rel)?;
    Ok(text::TextTokenizer::from_bytes(
        &bytes,
        &format!("{}/{rel}", store.root()),
        max_tokens,
    )?)
}

/// Opens `root`, indexes `split` (verifying shard hashes when `cfg.verify_checksums`), loads the
/// dataset's tokenizer and starts a training [`Loader`] at `start`.
pub fn open_loader(
    root: &str,
    split: &str,
    cfg: LoaderConfig,
    start: Cursor,
    end_epoch: Option<u64>,
) -> Result<Loader> {
    let (store, manifest) = open_dataset(root)?;
    let index = SplitIndex::open(&store, &manifest, split, cfg.verify_checksums)?;
    let tok = dataset_tokenizer(&store, &manifest, cfg.max_tokens)?;
    Loader::new(std::sync::Arc::new(index), cfg, tok, start, end_epoch)
}
