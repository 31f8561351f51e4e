//! Errors of the layer library.

use std::path::PathBuf;

/// Result alias of hr-nn.
pub type Result<T> = std::result::Result<T, Error>;

/// A key whose stored shape differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MisShaped {
    /// Parameter name.
    pub name: String,
    /// Shape the model expects.
    pub expected: Vec<usize>,
    /// Shape found in the file.
    pub found: Vec<usize>,
}

/// Everything that can go wrong in hr-nn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] hr_tensor::Error),
    /// A file could not be read or written, or has unexpected content (names the file).
    #[error(transparent)]
    File(#[from] hr_core::FileError),
    /// A checkpoint's keys do not match the model; lists every problem at once.
    #[error("{path}: checkpoint does not match the model: {} missing {:?}, {} unexpected {:?}, {} mis-shaped {}",
        missing.len(), missing, unexpected.len(), unexpected, mis_shaped.len(),
        mis_shaped.iter().map(|m| format!("{} (model {:?}, file {:?})", m.name, m.expected, m.found)).collect::<Vec<_>>().join(", "))]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// Model keys absent from the file.
        missing: Vec<String>,
        /// File keys the model does not have.
        unexpected: Vec<String>,
        /// Keys present in both with different shapes.
        mis_shaped: Vec<MisShaped>,
    },
    /// A parameter name is registered twice.
    #[error("parameter {0:?} registered twice")]
    DuplicateName(String),
    /// A data-parallel collective (row exchange between ranks) failed.
    #[error("collective failed: {0}")]
    Collective(String),
    /// A configuration value is invalid.
    #[error("{key}: {msg}")]
    Config {
        /// The offending key.
        key: String,
        /// What is wrong.
        msg: String,
    },
}
