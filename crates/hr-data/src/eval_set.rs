//! The evaluation view of a split: every clip once (the whole file, not a crop) and every
//! caption as a query, with the item sets of the full-sentence protocol.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::error::Result;
use crate::loader::{build_pool, FsEval, LoaderConfig, MetadataKind, SplitIndex, Work};
use crate::order::Item;
use crate::text::{TextTokenizer, TokenBatch};

/// One evaluation query: a caption of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Clip index (the relevant item).
    pub clip: u32,
    /// Caption index.
    pub caption: u16,
    /// Caption text.
    pub text: String,
    /// The set of item embeddings this query ranks (see [`EvalSet::item_sets`]).
    pub item_set: usize,
}

/// A batch of evaluation queries, all ranking the same item set.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryBatch {
    /// Tokens.
    pub tokens: TokenBatch,
    /// Relevant clip of each query.
    pub clip_indices: Vec<u32>,
    /// Position of each query in [`EvalSet::queries`].
    pub rows: Vec<usize>,
    /// The item set the queries rank.
    pub item_set: usize,
}

/// A batch of evaluation clips: audio plus metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipBatch {
    /// Clip indices.
    pub clip_indices: Vec<u32>,
    /// Samples per waveform.
    pub samples: usize,
    /// Waveforms `[n, samples]`.
    pub waveforms: Vec<f32>,
    /// Valid lengths.
    pub valid_lengths: Vec<u32>,
    /// Metadata tokens, one batch per item set ([`EvalSet::item_sets`]).
    pub metadata: Vec<TokenBatch>,
}

/// Evaluation view: every caption of every clip once, in fixed order, plus each clip once.
pub struct EvalSet {
    work: Work,
}

impl EvalSet {
    /// Builds the evaluation view (crops start at 0).
    pub fn new(index: Arc<SplitIndex>, mut cfg: LoaderConfig, tok: TextTokenizer) -> Result<Self> {
        cfg.random_crop = false;
        Ok(EvalSet {
            work: Work {
                pool: build_pool(cfg.workers)?,
                index,
                cfg,
                tok,
                skipped: Arc::new(AtomicU64::new(0)),
            },
        })
    }

    fn fs(&self) -> Option<FsEval> {
        (self.work.cfg.metadata == MetadataKind::FullSentence).then_some(self.work.cfg.fs_eval)
    }

    /// How many sets of item embeddings the evaluation ranks: one per caption index with FS
    /// metadata under [`FsEval::CaptionOffsets`] (the most captions of any clip), else one.
    pub fn item_sets(&self) -> usize {
        match self.fs() {
            Some(FsEval::CaptionOffsets) => {
                let most = self.work.index.clips.iter().map(|m| m.captions.len());
                most.max().unwrap_or(1).max(1)
            }
            _ => 1,
        }
    }

    /// The metadata text of `clip` in item set `set`.
    pub fn metadata_text(&self, clip: usize, set: usize) -> String {
        let m = &self.work.index.clips[clip];
        let n = m.captions.len().max(1);
        match self.fs() {
            Some(FsEval::CaptionOffsets) => {
                m.captions.get((set + 2) % n).cloned().unwrap_or_default()
            }
            _ => self
                .work
                .index
                .metadata_text(self.work.cfg.metadata, clip, None),
        }
    }

    /// All queries in (clip, caption) order. With FS metadata under
    /// [`FsEval::FixedCaption`] the metadata caption (2 mod n) is left out; under
    /// [`FsEval::CaptionOffsets`] query k ranks item set k.
    pub fn queries(&self) -> Vec<Query> {
        let fs = self.fs();
        let mut out = Vec::new();
        for (c, m) in self.work.index.clips.iter().enumerate() {
            let meta_k = 2 % m.captions.len().max(1);
            for (k, text) in m.captions.iter().enumerate() {
                if fs == Some(FsEval::FixedCaption) && k == meta_k && m.captions.len() > 1 {
                    continue;
                }
                out.push(Query {
                    clip: c as u32,
                    caption: k as u16,
                    text: text.clone(),
                    item_set: match fs {
                        Some(FsEval::CaptionOffsets) => k,
                        _ => 0,
                    },
                });
            }
        }
        out
    }

    /// Queries tokenized in batches of at most `batch_size`, each of one item set.
    pub fn query_batches(&self, batch_size: usize) -> Result<Vec<QueryBatch>> {
        let queries = self.queries();
        let mut out = Vec::new();
        for set in 0..self.item_sets() {
            let rows: Vec<usize> = (0..queries.len())
                .filter(|&r| queries[r].item_set == set)
                .collect();
            for chunk in rows.chunks(batch_size.max(1)) {
                let texts: Vec<&str> = chunk.iter().map(|&r| queries[r].text.as_str()).collect();
                out.push(QueryBatch {
                    tokens: self.work.tok.encode_batch(&texts)?,
                    clip_indices: chunk.iter().map(|&r| queries[r].clip).collect(),
                    rows: chunk.to_vec(),
                    item_set: set,
                });
            }
        }
        Ok(out)
    }

    /// Number of clips.
    pub fn num_clips(&self) -> usize {
        self.work.index.num_clips()
    }

    /// Decodes clips `[start, start + n)` with their metadata.
    pub fn clip_batch(&self, start: usize, n: usize) -> Result<ClipBatch> {
        let end = (start + n).min(self.num_clips());
        let items: Vec<Item> = (start..end)
            .map(|c| Item {
                clip: c as u32,
                caption: 0,
            })
            .collect();
        let blobs = self.work.fetch(&items, None)?;
        let b = self.work.build(0, 0, 0, &items, &blobs, 1)?;
        let metadata = (0..self.item_sets())
            .map(|set| {
                let metas: Vec<String> = b
                    .clip_indices
                    .iter()
                    .map(|&c| self.metadata_text(c as usize, set))
                    .collect();
                self.work.tok.encode_batch(&metas)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(ClipBatch {
            clip_indices: b.clip_indices,
            samples: b.samples,
            waveforms: b.waveforms,
            valid_lengths: b.valid_lengths,
            metadata,
        })
    }
}
