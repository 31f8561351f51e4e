//! The models' error type. The trainer decides skip-or-stop by matching its variants
//! ([`Error::NonFinite`] is a batch to skip), never by reading message text.

/// What held a non-finite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFiniteValue {
    /// The contrastive loss of a batch (every rank sees the same global loss).
    Loss,
    /// The audio frames fed to the pooling transformer (a rank's own inputs).
    Frames,
}

impl std::fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NonFiniteValue::Loss => "loss",
            NonFiniteValue::Frames => "frames",
        })
    }
}

/// An error of a model's construction, weights or forward / backward pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer, tensor op, file or collective failed (hr-nn's error, unchanged).
    #[error(transparent)]
    Nn(#[from] hr_nn::Error),
    /// A NaN or infinity where the model needs finite values: the trainer skips the batch.
    #[error("{what}: non-finite ({detail})")]
    NonFinite {
        /// Which value.
        what: NonFiniteValue,
        /// Where (index, shape) or why.
        detail: String,
    },
    /// A model configuration value is invalid.
    #[error("{key}: {msg}")]
    Config {
        /// The configuration key.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

impl From<hr_tensor::Error> for Error {
    fn from(e: hr_tensor::Error) -> Self {
        Error::Nn(e.into())
    }
}

impl From<hr_core::FileError> for Error {
    fn from(e: hr_core::FileError) -> Self {
        Error::Nn(e.into())
    }
}

impl Error {
    /// True for [`Error::NonFinite`].
    pub fn is_non_finite(&self) -> bool {
        matches!(self, Error::NonFinite { .. })
    }
}

/// Result of the models' operations.
pub type Result<T> = std::result::Result<T, Error>;
