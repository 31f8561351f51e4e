//! What the retriever's forward takes: a batch of frame sequences or of raw waveforms, with the
//! queries, metadata and clip ids of its rows.

use hr_tensor::{Device, Tensor};

use crate::text::TokenBatch;
use crate::Result;

/// One training or evaluation batch: row i pairs item i (audio + metadata) with query i.
#[derive(Debug, Clone)]
pub struct RetrievalBatch {
    /// Audio frame sequences (B, T, C).
    pub frames: Tensor,
    /// Frame mask, B * T entries (1 = real frame).
    pub frame_valid: Vec<u8>,
    /// Query (caption) tokens, B rows.
    pub queries: TokenBatch,
    /// Metadata tokens, B rows (ignored by `none` fusion).
    pub metadata: TokenBatch,
    /// Per row: the item has metadata (false = audio only / metadata masked).
    pub metadata_present: Vec<bool>,
    /// Clip of each row (equal ids are same-clip positives).
    pub clip_ids: Vec<u64>,
}

impl RetrievalBatch {
    /// The same batch with its frames on `device` (token ids, masks and flags stay host
    /// vectors: the ops take them as slices or build their masks from them per call).
    pub fn to_device(&self, device: Device) -> Result<RetrievalBatch> {
        Ok(RetrievalBatch {
            frames: self.frames.to_device(device)?,
            ..self.clone()
        })
    }
}

/// A batch of raw audio: like [`RetrievalBatch`] with waveforms instead of frames. Keep the
/// waveforms on the host: the mel frontend is host code (see
/// [`HybridRetriever::device`](crate::retriever::HybridRetriever::device)).
#[derive(Debug, Clone)]
pub struct WaveformBatch {
    /// Waveforms (B, N) at 32 kHz, zero-padded at the end.
    pub waveforms: Tensor,
    /// Valid (unpadded) samples of each waveform.
    pub valid_lengths: Vec<usize>,
    /// Query (caption) tokens, B rows.
    pub queries: TokenBatch,
    /// Metadata tokens, B rows (ignored by `none` fusion).
    pub metadata: TokenBatch,
    /// Per row: the item has metadata.
    pub metadata_present: Vec<bool>,
    /// Clip of each row.
    pub clip_ids: Vec<u64>,
}

/// What [`HybridRetriever::forward`](crate::retriever::HybridRetriever::forward) takes: a batch
/// of frame sequences or of waveforms (`From` both, so `forward(ps, &batch, ..)` takes either).
#[derive(Debug, Clone, Copy)]
pub enum Batch<'a> {
    /// Frames from an external audio encoder (models without `audio.backbone`).
    Frames(&'a RetrievalBatch),
    /// Raw audio through the model's mel frontend and CNN.
    Waveforms(&'a WaveformBatch),
}

impl<'a> From<&'a RetrievalBatch> for Batch<'a> {
    fn from(b: &'a RetrievalBatch) -> Self {
        Batch::Frames(b)
    }
}

impl<'a> From<&'a WaveformBatch> for Batch<'a> {
    fn from(b: &'a WaveformBatch) -> Self {
        Batch::Waveforms(b)
    }
}
