//! Error type of the hr-data library.
//!
//! Every variant names the file or shard (and the row or column where it applies) and says what
//! the user can do about it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Errors raised while reading, writing, converting or loading datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A local file could not be read or written.
    #[error("I/O error on {path}: {source}; check that the path exists and is readable/writable")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The dataset has no manifest.json.
    #[error("no manifest.json under {root}: {detail}; run `hr-data prepare ... --out {root}` first or point at a dataset root")]
    MissingManifest {
        /// The dataset root as given.
        root: String,
        /// What the store said.
        detail: String,
    },
    /// manifest.json exists but is not valid.
    #[error("manifest {path} is invalid: {detail}; re-run `hr-data prepare` to regenerate it")]
    BadManifest {
        /// The manifest location.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A shard's sha256 differs from the one recorded in the manifest.
    #[error("shard {shard}: sha256 mismatch (manifest {expected}, file {actual}); the shard is corrupt or was replaced: re-download it or re-run `hr-data prepare`")]
    ChecksumMismatch {
        /// The shard path relative to the dataset root.
        shard: String,
        /// Hash recorded in the manifest.
        expected: String,
        /// Hash of the bytes read.
        actual: String,
    },
    /// A shard is truncated or not a valid Parquet file.
    #[error("shard {shard}: corrupt or truncated Parquet ({detail}); re-download the shard or re-run `hr-data prepare`")]
    CorruptShard {
        /// The shard path relative to the dataset root.
        shard: String,
        /// The Parquet/Arrow error.
        detail: String,
    },
    /// A shard's Arrow schema does not match the dataset schema.
    #[error("shard {shard}: wrong schema, column `{column}`: {detail}; the file was not written by `hr-data prepare` (schema v{version}); convert it again")]
    WrongSchema {
        /// The shard path relative to the dataset root.
        shard: String,
        /// The offending column.
        column: String,
        /// What is wrong with it.
        detail: String,
        /// Expected schema version.
        version: u32,
    },
    /// A row violates a data invariant (empty caption list, null id, ...).
    #[error("shard {shard}, row {row}, column `{column}`: {detail}; fix the source data and re-run `hr-data prepare`")]
    BadRow {
        /// The shard path relative to the dataset root.
        shard: String,
        /// Row index inside the shard.
        row: usize,
        /// The offending column.
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// An audio blob could not be decoded.
    #[error("{origin}: cannot decode audio: {detail}; re-encode the file as wav/flac/ogg/mp3, or skip such files: `hr-data prepare ... --on-bad-audio skip` when preparing, `data.bad_rows = \"skip\"` when training")]
    Undecodable {
        /// Where the blob came from (shard + row, or a file path).
        origin: String,
        /// The decoder's message.
        detail: String,
    },
    /// A source CSV/JSONL file of a converter is malformed.
    #[error("{path}, line {line}: {detail}")]
    BadSource {
        /// The source file.
        path: PathBuf,
        /// 1-based line number (0 when unknown).
        line: u64,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The dataset root URL uses a scheme this build cannot read.
    #[error("cannot open dataset root {url}: {detail}")]
    UnsupportedUrl {
        /// The URL as given.
        url: String,
        /// Why (e.g. the `cloud` feature is off).
        detail: String,
    },
    /// An object store operation failed.
    #[error("object store error on {path}: {detail}; check the URL, credentials and network")]
    Store {
        /// The object path.
        path: String,
        /// The store's message.
        detail: String,
    },
    /// The tokenizer could not be loaded, trained or applied.
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: String,
        /// The tokenizers crate message.
        detail: String,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<hr_text::TextError> for DataError {
    fn from(e: hr_text::TextError) -> Self {
        DataError::Tokenizer {
            path: e.origin,
            detail: e.detail,
        }
    }
}

impl From<hr_core::FileError> for DataError {
    fn from(e: hr_core::FileError) -> Self {
        match e {
            hr_core::FileError::Io { path, source } => DataError::Io { path, source },
            hr_core::FileError::Format { path, msg } => DataError::BadSource {
                path,
                line: 0,
                detail: msg,
            },
        }
    }
}
