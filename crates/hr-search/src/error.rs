//! The errors of search.

use std::path::PathBuf;

/// A search error: the file, key or id it concerns is named.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading the checkpoint or its run's config.
    #[error(transparent)]
    Train(#[from] hr_train::TrainError),
    /// Reading the collection.
    #[error(transparent)]
    Data(#[from] hr_data::DataError),
    /// The model.
    #[error(transparent)]
    Model(#[from] hr_models::Error),
    /// Parameters (loading, moving).
    #[error(transparent)]
    Nn(#[from] hr_nn::Error),
    /// A tensor op.
    #[error(transparent)]
    Tensor(#[from] hr_tensor::Error),
    /// A file could not be read or written, or has unexpected content (names the file).
    #[error(transparent)]
    File(#[from] hr_core::FileError),
    /// The output folder holds another build (other checkpoint, collection or settings).
    #[error("{path} holds an index build of {what} (delete the folder or choose another --out)")]
    OtherBuild {
        /// The index folder.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// No item has this id.
    #[error("no item with id `{0}` in the index")]
    UnknownId(String),
    /// A request or argument that cannot be served.
    #[error("{0}")]
    BadRequest(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let io = hr_core::FileError::io(path);
        move |source| Error::File(io(source))
    }

    /// A format error on `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Error {
        Error::from(hr_core::FileError::format(path, msg.to_string()))
    }
}
