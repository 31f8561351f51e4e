//! Errors of the training library.

use std::path::PathBuf;

/// Result alias of hr-train.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Everything that can go wrong while configuring, training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Saving a checkpoint failed part-way (a full disk, an I/O error): it is not committed,
    /// and the checkpoints committed before it (and `latest`, unless only its update failed)
    /// are intact.
    #[error(
        "saving checkpoint {} failed; it is not used, the checkpoints committed before it are \
         intact: {cause}",
        dir.display()
    )]
    CheckpointSave {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What failed.
        cause: Box<TrainError>,
    },
    /// A configuration value is invalid or unknown; `key` is the dotted TOML path.
    #[error("config key `{key}`: {msg}")]
    Config {
        /// Dotted key (e.g. `optim.lr.text.max`).
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// A file could not be read or written, or has unexpected content (names the file).
    #[error(transparent)]
    File(#[from] hr_core::FileError),
    /// The layers, checkpoint files or tensors failed.
    #[error(transparent)]
    Nn(#[from] hr_nn::Error),
    /// The model failed (its non-finite variant is a batch to skip).
    #[error(transparent)]
    Model(#[from] hr_models::Error),
    /// Tensor creation or an op failed.
    #[error(transparent)]
    Tensor(#[from] hr_tensor::Error),
    /// The dataset or loader failed.
    #[error(transparent)]
    Data(#[from] hr_data::DataError),
    /// A collective, the rendezvous or the launcher failed (names the rank).
    #[error(transparent)]
    Dist(#[from] hr_dist::DistError),
    /// The loss became NaN or infinite and the policy is `stop`.
    #[error("non-finite loss at step {step}; checkpoint written to {checkpoint}")]
    NonFiniteLoss {
        /// Step at which it happened.
        step: u64,
        /// The checkpoint written before stopping.
        checkpoint: PathBuf,
    },
}

impl TrainError {
    /// True for the model's non-finite loss / frames errors ([`hr_models::Error::NonFinite`]).
    pub(crate) fn is_non_finite(&self) -> bool {
        matches!(self, TrainError::Model(e) if e.is_non_finite())
    }

    /// A config error for `key`.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> TrainError {
        TrainError::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let io = hr_core::FileError::io(path);
        move |source| TrainError::File(io(source))
    }

    /// Unexpected content in `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> TrainError {
        TrainError::File(hr_core::FileError::format(path, msg))
    }
}
