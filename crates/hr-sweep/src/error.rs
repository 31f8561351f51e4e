//! Errors of the sweep library.

use std::path::PathBuf;

/// Result alias of hr-sweep.
pub type Result<T> = std::result::Result<T, SweepError>;

/// Everything that can go wrong while planning, launching, tracking or reporting a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file is malformed or inconsistent; `what` names the offending part.
    #[error("sweep file {file}: {what}")]
    Spec {
        /// The sweep file.
        file: PathBuf,
        /// What is wrong (names the axis, value, rule or key).
        what: String,
    },
    /// A run's resolved training config is invalid.
    #[error("sweep file {file}: run {run}: {error}")]
    RunConfig {
        /// The sweep file.
        file: PathBuf,
        /// The run's axis labels.
        run: String,
        /// The trainer's config error (names the dotted key).
        error: Box<hr_train::TrainError>,
    },
    /// The sweep file changed since the sweep was first launched.
    #[error("{0}")]
    Changed(String),
    /// A dataset root named by the sweep does not exist.
    #[error("run {run}: dataset root {root:?} ({key}) does not exist (no manifest.json) and is not generated synthetically")]
    MissingData {
        /// The run's name.
        run: String,
        /// The config key or eval set.
        key: String,
        /// The root.
        root: String,
    },
    /// A file could not be read or written, or has unexpected content (names the file).
    #[error(transparent)]
    File(#[from] hr_core::FileError),
    /// Another coordinator holds the ledger.
    #[error("ledger {ledger} is locked by {owner}")]
    Locked {
        /// The ledger.
        ledger: PathBuf,
        /// Who holds it: host and pid.
        owner: String,
    },
    /// A program could not be found or run.
    #[error("{0}")]
    Program(String),
    /// A Slurm command failed or printed something unexpected.
    #[error("slurm: {0}")]
    Slurm(String),
    /// Drawing a chart failed.
    #[error("chart {path}: {msg}")]
    Chart {
        /// The PNG file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
    /// The trainer library failed (e.g. generating a synthetic dataset).
    #[error(transparent)]
    Train(Box<hr_train::TrainError>),
}

impl From<hr_train::TrainError> for SweepError {
    fn from(e: hr_train::TrainError) -> Self {
        SweepError::Train(Box::new(e))
    }
}

impl SweepError {
    /// An I/O error constructor for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SweepError {
        let io = hr_core::FileError::io(path);
        move |source| SweepError::File(io(source))
    }

    /// Unexpected content in `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> SweepError {
        SweepError::File(hr_core::FileError::format(path, msg))
    }

    /// A sweep-file error.
    pub fn spec(file: impl Into<PathBuf>, what: impl Into<String>) -> SweepError {
        SweepError::Spec {
            file: file.into(),
            what: what.into(),
        }
    }
}
