//! The collections an index is built from: a split of a prepared dataset (read as `hr-eval`
//! reads it) or any folder of audio with an optional metadata sidecar (as `hr-data prepare
//! folder` reads it; clips without captions are kept: search needs none).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use hr_data::convert::{folder, SourceClip};
use hr_data::loader::{ClipBatch, ClipMeta};
use hr_data::{EvalSet, MetadataKind, SplitIndex};

use crate::encoder::Encoder;
use crate::error::{Error, Result};

/// Where the clips of an index come from (recorded in the index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// A split of a prepared dataset (a path or an object-store URL).
    Dataset {
        /// The dataset root.
        root: String,
        /// The split.
        split: String,
    },
    /// A folder of audio files.
    Folder {
        /// The folder.
        root: PathBuf,
    },
}

/// What an index records of each clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInfo {
    /// The clip's id (the dataset's id, or the path relative to the folder).
    pub id: String,
    /// Where its audio is: the source file, or the dataset shard and row.
    pub source: String,
    /// Its position in the source (clip index of the split, or file number of the folder).
    pub row: u64,
    /// Duration of the recording in seconds.
    pub duration_s: f32,
    /// The metadata text fused with the audio (empty for none).
    pub metadata: String,
    /// Its captions, if the collection has any.
    pub captions: Vec<String>,
}

/// An opened collection.
pub enum Source {
    /// A dataset split.
    Dataset {
        /// The evaluation view (decodes clips as evaluation does).
        set: Box<EvalSet>,
        /// The split's index.
        index: Arc<SplitIndex>,
    },
    /// A folder of audio.
    Folder {
        /// The folder.
        root: PathBuf,
        /// Its clips in sorted path order, with their sidecar metadata.
        clips: Vec<SourceClip>,
    },
}

impl Source {
    /// Opens `spec` for `enc`'s model (metadata kind, crop length, tokenizer).
    pub fn open(spec: &SourceSpec, enc: &Encoder) -> Result<Source> {
        match spec {
            SourceSpec::Dataset { root, split } => {
                let (set, index) = hr_train::trainer::open_eval_set(
                    root,
                    split,
                    &enc.loader,
                    enc.tokenizer.clone(),
                )?;
                Ok(Source::Dataset {
                    set: Box::new(set),
                    index,
                })
            }
            SourceSpec::Folder { root } => Ok(Source::Folder {
                root: root.clone(),
                clips: folder::clips(root)?,
            }),
        }
    }

    /// Number of clips.
    pub fn len(&self) -> usize {
        match self {
            Source::Dataset { index, .. } => index.num_clips(),
            Source::Folder { clips, .. } => clips.len(),
        }
    }

    /// Whether the collection has no clips.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the index records of clip `i`, with the metadata of `kind`.
    pub fn info(&self, i: usize, kind: MetadataKind) -> ItemInfo {
        match self {
            Source::Dataset { set, index } => {
                let m = &index.clips[i];
                ItemInfo {
                    id: m.id.clone(),
                    source: index.origin(i),
                    row: i as u64,
                    duration_s: m.duration_s,
                    metadata: set.metadata_text(i, 0),
                    captions: m.captions.clone(),
                }
            }
            Source::Folder { clips, .. } => {
                let c = &clips[i];
                ItemInfo {
                    id: c.id.clone(),
                    source: c.audio.display().to_string(),
                    row: i as u64,
                    duration_s: 0.0,
                    metadata: clip_meta(c).metadata_text(kind, None),
                    captions: c.captions.clone(),
                }
            }
        }
    }

    /// Clips `[start, start + n)` decoded and cropped as evaluation crops them, with their
    /// metadata tokenized (evaluation's clip batch: `clip_indices` are positions in the
    /// source, and a dataset whose run skips undecodable rows may leave some out), and the
    /// duration of each recording.
    pub fn batch(&self, enc: &Encoder, start: usize, n: usize) -> Result<(ClipBatch, Vec<f32>)> {
        match self {
            Source::Dataset { set, index } => {
                let b = set.clip_batch(start, n)?;
                let durations = b
                    .clip_indices
                    .iter()
                    .map(|&c| index.clips[c as usize].duration_s)
                    .collect();
                Ok((b, durations))
            }
            Source::Folder { clips, .. } => {
                let end = (start + n).min(clips.len());
                let samples = enc.loader.clip_samples();
                let decoded: Vec<Result<(Vec<f32>, usize, f32)>> = clips[start..end]
                    .par_iter()
                    .map(|c| decode_file(&c.audio, samples))
                    .collect();
                let mut b = ClipBatch {
                    clip_indices: (start as u32..end as u32).collect(),
                    samples,
                    waveforms: Vec::with_capacity((end - start) * samples),
                    valid_lengths: Vec::new(),
                    metadata: Vec::new(),
                };
                let mut durations = Vec::new();
                for d in decoded {
                    let (wave, valid, dur) = d?;
                    b.waveforms.extend_from_slice(&wave);
                    b.valid_lengths.push(valid as u32);
                    durations.push(dur);
                }
                let texts: Vec<String> = clips[start..end]
                    .iter()
                    .map(|c| clip_meta(c).metadata_text(enc.metadata, None))
                    .collect();
                b.metadata.push(enc.tokenize(&texts)?);
                Ok((b, durations))
            }
        }
    }
}

/// A folder clip's metadata in the dataset's terms.
fn clip_meta(c: &SourceClip) -> ClipMeta {
    ClipMeta {
        id: c.id.clone(),
        captions: c.captions.clone(),
        keywords: c.keywords.clone(),
        labels: c.labels.clone(),
        description: c.description.clone(),
        duration_s: 0.0,
        row_group: 0,
        row_in_group: 0,
    }
}

/// Decodes a file to 32 kHz mono cropped from its start (or padded) to `samples`: the wave,
/// its valid length and the recording's duration.
fn decode_file(path: &Path, samples: usize) -> Result<(Vec<f32>, usize, f32)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let name = path.display().to_string();
    let full = hr_data::audio::load_32k(&bytes, &name, &name)?;
    let (wave, valid) = hr_data::audio::crop_or_pad(&full, samples, 0);
    Ok((wave, valid, full.len() as f32 / 32_000.0))
}

/// The stored audio of an indexed clip, for serving: the encoded bytes and a file name (its
/// extension names the format).
/// `split` is the dataset split of a dataset index, `None` for a folder.
pub fn audio_bytes(split: Option<&SplitIndex>, item: &ItemInfo) -> Result<(Vec<u8>, String)> {
    match split {
        Some(index) => {
            let blob = index.clip_audio(item.row as usize)?;
            Ok((blob.bytes, blob.path))
        }
        None => {
            let path = PathBuf::from(&item.source);
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            Ok((bytes, item.source.clone()))
        }
    }
}
