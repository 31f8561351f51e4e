//! Search a collection with a trained checkpoint.
//!
//! - [`build`]: embed every clip of a dataset split or of a folder of audio once, the item side
//!   exactly as the model scores it, into a Parquet index ([`index`]) written part by part
//!   (each part atomically), so an interrupted build resumes;
//! - [`search`]: rank the index for text queries (one matrix product: cosine scores for `none`
//!   and `late` fusion, two products and the query-side weights for `mid` fusion) or for a clip
//!   of the index (audio-to-audio);
//! - [`export`]: the vectors as `.npy` for other tools;
//! - [`serve`]: an HTTP JSON API and a web page with an audio player per result.
//!
//! The model side lives in [`encoder`], the collections in [`source`].
#![forbid(unsafe_code)]

pub mod build;
pub mod encoder;
pub mod error;
pub mod export;
pub mod index;
pub mod search;
pub mod serve;
pub mod source;

pub use error::{Error, Result};
