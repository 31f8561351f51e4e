//! Shared test helpers: fixture paths and finite-difference checks of every trainable
//! parameter (and optional inputs) of a model in f64.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

use hr_models::retriever::WaveformBatch;
use hr_models::text::TokenBatch;
use hr_models::Result;
use hr_nn::testing::check_param_gradients;
use hr_nn::ParamStore;
use hr_tensor::Tensor;

pub use hr_tensor::testing::reference_fixture as fixture;

/// Parameters whose true gradient is exactly zero: a key bias adds the same score to every
/// key of a query row, which softmax ignores. Relative errors of noise are meaningless there.
pub fn is_zero_grad(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// Asserts that a gradient that must be zero is zero up to rounding.
pub fn assert_tiny(name: &str, g: &Tensor) {
    let m = g
        .to_vec_f64()
        .expect("cpu")
        .iter()
        .fold(0f64, |a, v| a.max(v.abs()));
    assert!(m < 1e-6, "{name}: gradient must vanish, max |g| = {m:e}");
}

/// Checks the gradients of `inputs` (f64) and of every trainable parameter of `ps` (converted
/// to f64). `fwd(ps, inputs)` returns the output; `fwd_bwd(ps, inputs, dy)` runs forward and
/// backward on `ps` (grads zeroed) and returns one gradient per input (None = not checked).
pub fn check_model(
    name: &str,
    ps: &ParamStore,
    inputs: &[Tensor],
    max_checks: usize,
    fwd: impl Fn(&ParamStore, &[Tensor]) -> Result<Tensor>,
    fwd_bwd: impl Fn(&mut ParamStore, &[Tensor], &Tensor) -> Result<Vec<Option<Tensor>>>,
) {
    check_param_gradients(
        name,
        (ps, inputs),
        max_checks,
        |p, xs| fwd(p, xs),
        fwd_bwd,
        |name, g| match is_zero_grad(name) {
            true => {
                assert_tiny(name, g);
                None
            }
            false => Some(g.clone()),
        },
    );
}

/// A token batch of `rows` (padded with 0).
pub fn tokens(rows: &[&[u32]]) -> TokenBatch {
    let seqs: Vec<Vec<u32>> = rows.iter().map(|r| r.to_vec()).collect();
    TokenBatch::from_sequences(&seqs, 0)
}

/// The text side of the four-row test batches: queries, metadata, which rows have metadata
/// (row 1 has none) and clip ids (rows 0 and 2 share clip 0: same-clip positives).
pub struct TextRows {
    /// One query per row.
    pub queries: TokenBatch,
    /// One metadata sequence per row.
    pub metadata: TokenBatch,
    /// Whether each row has metadata.
    pub metadata_present: Vec<bool>,
    /// The clip of each row.
    pub clip_ids: Vec<u64>,
}

/// See [`TextRows`].
pub fn four_text_rows() -> TextRows {
    TextRows {
        queries: tokens(&[
            &[2, 10, 11, 3],
            &[2, 12, 3],
            &[2, 13, 14, 15, 3],
            &[2, 16, 3],
        ]),
        metadata: tokens(&[&[2, 20, 21, 3], &[2, 3], &[2, 22, 3], &[2, 23, 24, 25, 3]]),
        metadata_present: vec![true, false, true, true],
        clip_ids: vec![0, 1, 0, 2],
    }
}

/// Four 0.25 s clips at 32 kHz (random, seed 5; valid 8000, 4000, 6000, 8000 samples) with the
/// text of [`four_text_rows`].
pub fn waveform_batch() -> WaveformBatch {
    let t = four_text_rows();
    WaveformBatch {
        waveforms: hr_tensor::testing::randn32(&[4, 8000], &mut hr_tensor::Rng::new(5)),
        valid_lengths: vec![8000, 4000, 6000, 8000],
        queries: t.queries,
        metadata: t.metadata,
        metadata_present: t.metadata_present,
        clip_ids: t.clip_ids,
    }
}
