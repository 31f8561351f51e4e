//! `manifest.json`: the list of shards per split with their sizes and hashes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::schema::SCHEMA_VERSION;
use crate::store::Store;

/// File name of the manifest inside a dataset root.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One Parquet shard as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the dataset root, e.g. `train/part-00000-of-00008.parquet`.
    pub path: String,
    /// Number of clips (rows).
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

/// Where the rows of a rewritten dataset came from (recorded in its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The source's name.
    pub name: String,
    /// Its root as given.
    pub root: String,
    /// sha256 of its manifest.json.
    pub manifest_sha256: String,
    /// Prefix added to its clip ids ("" = ids kept).
    pub id_prefix: String,
    /// Rows taken per split.
    pub rows: BTreeMap<String, u64>,
}

/// The dataset manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name (e.g. `clotho`, `synthetic`).
    pub name: String,
    /// Schema version of the shards.
    pub schema_version: u32,
    /// Tool that wrote the dataset.
    pub created_by: String,
    /// Shards per split, in order.
    pub splits: BTreeMap<String, Vec<ShardInfo>>,
    /// Tokenizer file relative to the root, when the dataset ships one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// How the audio is stored (absent in datasets written before it was recorded: source files
    /// as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<crate::audio::AudioStorage>,
    /// The datasets this one was merged from (`hr-data merge`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceInfo>,
}

impl Manifest {
    /// An empty manifest for dataset `name`.
    pub fn new(name: &str) -> Self {
        Manifest {
            name: name.to_string(),
            schema_version: SCHEMA_VERSION,
            created_by: format!("hr-data {}", env!("CARGO_PKG_VERSION")),
            splits: BTreeMap::new(),
            tokenizer: None,
            audio: None,
            sources: Vec::new(),
        }
    }

    /// Shards of `split`, or an error naming the available splits.
    pub fn split(&self, split: &str) -> Result<&[ShardInfo]> {
        self.splits.get(split).map(Vec::as_slice).ok_or_else(|| {
            DataError::Config(format!(
                "split `{split}` not in the manifest of `{}` (available: {})",
                self.name,
                self.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Total rows in `split` (0 if absent).
    pub fn rows(&self, split: &str) -> u64 {
        self.splits
            .get(split)
            .map_or(0, |s| s.iter().map(|x| x.rows).sum())
    }

    /// Parses and validates manifest JSON (`origin` names it in errors).
    pub fn from_json(text: &[u8], origin: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(text).map_err(|e| DataError::BadManifest {
            path: origin.to_string(),
            detail: e.to_string(),
        })?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(DataError::BadManifest {
                path: origin.to_string(),
                detail: format!(
                    "schema_version {} is not supported (this build reads {SCHEMA_VERSION})",
                    m.schema_version
                ),
            });
        }
        Ok(m)
    }

    /// Loads the manifest of the dataset behind `store`.
    pub fn load(store: &Store) -> Result<Self> {
        Ok(Manifest::load_with_sha256(store)?.0)
    }

    /// Loads the manifest and the sha256 of its file (which names every shard's sha256, so it
    /// identifies the dataset's content).
    pub fn load_with_sha256(store: &Store) -> Result<(Self, String)> {
        let bytes = store
            .get(MANIFEST_FILE)
            .map_err(|e| DataError::MissingManifest {
                root: store.root().to_string(),
                detail: e.to_string(),
            })?;
        let m = Manifest::from_json(&bytes, &format!("{}/{MANIFEST_FILE}", store.root()))?;
        Ok((m, crate::shard::sha256_hex(&bytes)))
    }

    /// Writes `root/manifest.json` atomically: temp file, fsync, rename, fsync of the directory.
    pub fn write_atomic(&self, root: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| DataError::Config(e.to_string()))?;
        Ok(hr_core::write_atomic(&root.join(MANIFEST_FILE), &text)?)
    }
}
