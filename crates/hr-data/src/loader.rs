//! The deterministic distributed loader and the evaluation view.
//!
//! Training items are (clip, caption) pairs in the order of [`crate::order::epoch_order`] (a
//! shuffle of the whole split every epoch); each rank decodes its share of every global batch on
//! a bounded prefetch pipeline: a producer thread plans each batch, a worker pool fetches the
//! audio of just those rows (the Parquet pages holding them, in parallel per row group, through
//! a bounded cache) then decodes the crop, resamples when the stored rate is not 32 kHz and
//! tokenizes, staying at most `prefetch_batches` batches ahead of the consumer. The text of the
//! split lives in the [`SplitIndex`] (no audio), read once when the split is opened.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audio::{load_crop_32k, TARGET_SR};
use crate::error::{DataError, Result};
use crate::manifest::Manifest;
use crate::order::{
    batches_per_epoch, epoch_order, global_batch, partition, Cursor, Item, OrderConfig, Shape,
};
use crate::rng::Rng;
use crate::schema::{AudioBlob, BatchView};
use crate::shard::ShardReader;
use crate::store::Store;
use crate::text::{tags_to_text, TextTokenizer, TokenBatch};

/// Which metadata string accompanies each clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKind {
    /// Open-set keywords joined with spaces (OS).
    #[default]
    Keywords,
    /// Closed-set labels joined with spaces (CS).
    Labels,
    /// The `description` column.
    Description,
    /// Full-sentence metadata simulated from another caption (FS): caption (k+1) mod n in
    /// training; at evaluation as [`FsEval`] says.
    FullSentence,
}

/// How full-sentence (FS) metadata is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsEval {
    /// The authors' protocol: every caption is a query; query k ranks the clips with caption
    /// (k+2) mod n of each clip as its metadata (one set of item embeddings per k).
    #[default]
    CaptionOffsets,
    /// Caption 2 mod n is every clip's metadata and is not used as a query (n-1 queries per
    /// clip, one set of item embeddings).
    FixedCaption,
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Base seed of the data order.
    pub seed: u64,
    /// Global batch size over all ranks.
    pub global_batch: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// This rank.
    pub rank: usize,
    /// Crop/pad length in seconds at 32 kHz.
    pub clip_seconds: f32,
    /// Random crop offset for longer clips (training); start at 0 otherwise.
    pub random_crop: bool,
    /// Maximum tokens per text including `[CLS]`/`[SEP]`.
    pub max_tokens: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch_batches: usize,
    /// Decode worker threads.
    pub workers: usize,
    /// Encoded audio kept in memory for clips read recently (MiB per rank; 0 = no cache). A
    /// clip's captions are spread over the epoch, so this mostly helps small splits.
    pub audio_cache_mib: usize,
    /// Skip (count and log) rows whose audio does not decode instead of failing.
    pub skip_undecodable: bool,
    /// Check shard sha256 against the manifest when opening.
    pub verify_checksums: bool,
    /// Metadata kind.
    pub metadata: MetadataKind,
    /// Evaluation protocol of full-sentence metadata.
    pub fs_eval: FsEval,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            seed: 0,
            global_batch: 32,
            world_size: 1,
            rank: 0,
            clip_seconds: 10.0,
            random_crop: true,
            max_tokens: crate::text::MAX_TOKENS,
            prefetch_batches: 4,
            workers: 2,
            audio_cache_mib: 256,
            skip_undecodable: false,
            verify_checksums: true,
            metadata: MetadataKind::Keywords,
            fs_eval: FsEval::CaptionOffsets,
        }
    }
}

impl LoaderConfig {
    /// Crop/pad length in samples.
    pub fn clip_samples(&self) -> usize {
        (self.clip_seconds * TARGET_SR as f32).round() as usize
    }

    fn order(&self) -> OrderConfig {
        OrderConfig {
            seed: self.seed,
            global_batch: self.global_batch,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.global_batch == 0
            || self.world_size == 0
            || !self.global_batch.is_multiple_of(self.world_size)
        {
            return Err(DataError::Config(format!(
                "global_batch {} must be a positive multiple of world_size {}",
                self.global_batch, self.world_size
            )));
        }
        if self.rank >= self.world_size {
            return Err(DataError::Config(format!(
                "rank {} >= world_size {}",
                self.rank, self.world_size
            )));
        }
        if self.clip_samples() == 0 {
            return Err(DataError::Config("clip_seconds must be > 0".into()));
        }
        Ok(())
    }
}

/// Text metadata of one clip (no audio).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipMeta {
    /// Clip id.
    pub id: String,
    /// Captions.
    pub captions: Vec<String>,
    /// Keywords.
    pub keywords: Vec<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Description.
    pub description: Option<String>,
    /// Duration of the whole recording in seconds (as the dataset records it).
    pub duration_s: f32,
    /// Row group (global index over the split).
    pub row_group: usize,
    /// Row inside its row group.
    pub row_in_group: usize,
}

#[derive(Debug, Clone)]
struct RowGroupRef {
    shard: usize,
    rg: usize,
    first_row: usize,
}

impl ClipMeta {
    /// The metadata text of this clip for query caption `caption` (training) or evaluation
    /// and search (`None`): its tags joined, its description, or another of its captions.
    pub fn metadata_text(&self, kind: MetadataKind, caption: Option<usize>) -> String {
        match kind {
            MetadataKind::Keywords => tags_to_text(&self.keywords),
            MetadataKind::Labels => tags_to_text(&self.labels),
            MetadataKind::Description => self.description.clone().unwrap_or_default(),
            MetadataKind::FullSentence => {
                let n = self.captions.len().max(1);
                let k = caption.map_or(2 % n, |k| (k + 1) % n);
                self.captions.get(k).cloned().unwrap_or_default()
            }
        }
    }
}

/// The text index of one split plus handles to fetch audio by row group.
pub struct SplitIndex {
    shards: Vec<Arc<ShardReader>>,
    groups: Vec<RowGroupRef>,
    /// Clip metadata, indexed by clip.
    pub clips: Vec<ClipMeta>,
    shape: Shape,
}

/// The text and duration columns a split index reads (everything but the audio).
pub(crate) const META_COLUMNS: [&str; 6] = [
    "id",
    "captions",
    "keywords",
    "labels",
    "description",
    "duration_s",
];

impl SplitIndex {
    /// Opens every shard of `split` and reads the text columns.
    pub fn open(store: &Store, manifest: &Manifest, split: &str, verify: bool) -> Result<Self> {
        let mut idx = SplitIndex {
            shards: Vec::new(),
            groups: Vec::new(),
            clips: Vec::new(),
            shape: Shape::default(),
        };
        for info in manifest.split(split)? {
            let reader = Arc::new(ShardReader::open(store, info, verify)?);
            idx.add_shard(reader)?;
        }
        Ok(idx)
    }

    fn add_shard(&mut self, reader: Arc<ShardReader>) -> Result<()> {
        let shard = self.shards.len();
        let rg_rows = reader.row_group_rows();
        let base_group = self.groups.len();
        let mut first_row = 0;
        for (rg, &n) in rg_rows.iter().enumerate() {
            self.groups.push(RowGroupRef {
                shard,
                rg,
                first_row,
            });
            first_row += n;
        }
        let mut row = 0usize;
        let mut rg = 0usize;
        let mut rg_start = 0usize;
        for batch in reader.read(None, Some(&META_COLUMNS))? {
            let view = BatchView::new(&batch, reader.name(), row, &["id", "captions"])?;
            for r in 0..batch.num_rows() {
                while rg + 1 < rg_rows.len() && row >= rg_start + rg_rows[rg] {
                    rg_start += rg_rows[rg];
                    rg += 1;
                }
                let captions = view.captions(r)?;
                self.shape
                    .captions_per_clip
                    .push(captions.len().min(u16::MAX as usize) as u16);
                self.clips.push(ClipMeta {
                    id: view.id(r)?,
                    captions,
                    keywords: view.keywords(r),
                    labels: view.labels(r),
                    description: view.description(r),
                    duration_s: view.duration_s(r),
                    row_group: base_group + rg,
                    row_in_group: row - rg_start,
                });
                row += 1;
            }
        }
        self.shards.push(reader);
        Ok(())
    }

    /// The shape that determines the epoch order.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of clips.
    pub fn num_clips(&self) -> usize {
        self.clips.len()
    }

    /// The audio of `clips`, which all lie in row group `g`.
    fn read_audio(&self, g: usize, clips: &[u32]) -> Result<Vec<AudioBlob>> {
        let r = &self.groups[g];
        let rows: Vec<usize> = clips
            .iter()
            .map(|&c| self.clips[c as usize].row_in_group)
            .collect();
        self.shards[r.shard].read_audio(r.rg, &rows)
    }

    /// Where `clip` lives: its shard, row and id (for error messages and search results).
    pub fn origin(&self, clip: usize) -> String {
        let m = &self.clips[clip];
        let r = &self.groups[m.row_group];
        format!(
            "shard {}, row {} (clip `{}`)",
            self.shards[r.shard].name(),
            r.first_row + m.row_in_group,
            m.id
        )
    }

    /// Metadata text of `clip` for query caption `caption` (training) or evaluation (`None`).
    pub fn metadata_text(&self, kind: MetadataKind, clip: usize, caption: Option<usize>) -> String {
        self.clips[clip].metadata_text(kind, caption)
    }

    /// The encoded audio of `clip` as stored (one row read).
    pub fn clip_audio(&self, clip: usize) -> Result<AudioBlob> {
        let g = self.clips[clip].row_group;
        self.read_audio(g, &[clip as u32])?
            .pop()
            .ok_or_else(|| DataError::Config(format!("no audio for clip {clip}")))
    }
}

/// Encoded audio of recently read clips, bounded in bytes (the oldest insertions leave first).
pub(crate) struct AudioCache {
    budget: usize,
    used: usize,
    map: HashMap<u32, Arc<AudioBlob>>,
    lru: VecDeque<u32>,
}

impl AudioCache {
    fn new(mib: usize) -> Self {
        AudioCache {
            budget: mib << 20,
            used: 0,
            map: HashMap::new(),
            lru: VecDeque::new(),
        }
    }

    fn get(&self, clip: u32) -> Option<Arc<AudioBlob>> {
        self.map.get(&clip).cloned()
    }

    fn insert(&mut self, clip: u32, blob: Arc<AudioBlob>) {
        let size = blob.bytes.len();
        if size > self.budget || self.map.contains_key(&clip) {
            return;
        }
        while self.used + size > self.budget {
            let Some(old) = self.lru.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.used -= b.bytes.len();
            }
        }
        self.used += size;
        self.map.insert(clip, blob);
        self.lru.push_back(clip);
    }
}

/// One rank's batch: plain host arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Epoch of this batch.
    pub epoch: u64,
    /// Global batch index within the epoch.
    pub index: u64,
    /// The cursor to save after this batch was consumed.
    pub cursor_after: Cursor,
    /// Rows in this batch (may be below the rank's share when rows were skipped).
    pub batch_size: usize,
    /// Samples per waveform.
    pub samples: usize,
    /// Waveforms, `[batch_size, samples]` row-major, 32 kHz mono.
    pub waveforms: Vec<f32>,
    /// Valid (unpadded) length of each waveform.
    pub valid_lengths: Vec<u32>,
    /// Caption tokens.
    pub captions: TokenBatch,
    /// Metadata tokens (same tokenizer and preprocessing).
    pub metadata: TokenBatch,
    /// Clip index of each row (equal indices are same-clip positives).
    pub clip_indices: Vec<u32>,
    /// Caption index of each row.
    pub caption_indices: Vec<u16>,
    /// Rows skipped because their audio did not decode.
    pub skipped: u32,
}

struct Decoded {
    item: Item,
    wave: Vec<f32>,
    valid: usize,
    caption: String,
    meta: String,
}

/// Shared state of the decoding side.
pub(crate) struct Work {
    pub(crate) index: Arc<SplitIndex>,
    pub(crate) cfg: LoaderConfig,
    pub(crate) tok: TextTokenizer,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) skipped: Arc<AtomicU64>,
}

type Blobs = HashMap<u32, Arc<AudioBlob>>;

impl Work {
    /// Fetches the audio of `items`' clips: cached ones from `cache`, the rest as the Parquet
    /// pages holding them, one read per row group, row groups in parallel.
    pub(crate) fn fetch(&self, items: &[Item], cache: Option<&mut AudioCache>) -> Result<Blobs> {
        let mut blobs = Blobs::new();
        let mut wanted: HashMap<usize, Vec<u32>> = HashMap::new();
        for item in items {
            let hit = cache.as_ref().and_then(|c| c.get(item.clip));
            match hit {
                Some(b) => {
                    blobs.insert(item.clip, b);
                }
                None => {
                    let g = self.index.clips[item.clip as usize].row_group;
                    let clips = wanted.entry(g).or_default();
                    if !clips.contains(&item.clip) {
                        clips.push(item.clip);
                    }
                }
            }
        }
        let mut groups: Vec<(usize, Vec<u32>)> = wanted.into_iter().collect();
        groups.sort_unstable();
        let read: Vec<Result<Vec<AudioBlob>>> = self.pool.install(|| {
            groups
                .par_iter()
                .map(|(g, clips)| self.index.read_audio(*g, clips))
                .collect()
        });
        let mut cache = cache;
        for ((_, clips), res) in groups.iter().zip(read) {
            for (&clip, blob) in clips.iter().zip(res?) {
                let blob = Arc::new(blob);
                if let Some(c) = cache.as_mut() {
                    c.insert(clip, blob.clone());
                }
                blobs.insert(clip, blob);
            }
        }
        Ok(blobs)
    }

    fn decode_item(&self, blob: &AudioBlob, item: Item, epoch: u64, pos: u64) -> Result<Decoded> {
        let clip = item.clip as usize;
        let origin = self.index.origin(clip);
        let len = self.cfg.clip_samples();
        let seed = self.cfg.seed;
        let random = self.cfg.random_crop;
        let pick = move |total: usize| {
            if random {
                Rng::from_parts(&[seed, epoch, pos, 0xC40B]).below(total - len + 1)
            } else {
                0
            }
        };
        let (wave, valid) = load_crop_32k(&blob.bytes, &blob.path, &origin, len, &pick)?;
        let m = &self.index.clips[clip];
        let caption = m
            .captions
            .get(item.caption as usize)
            .cloned()
            .unwrap_or_default();
        let meta = self
            .index
            .metadata_text(self.cfg.metadata, clip, Some(item.caption as usize));
        Ok(Decoded {
            item,
            wave,
            valid,
            caption,
            meta,
        })
    }

    pub(crate) fn build(
        &self,
        epoch: u64,
        b: u64,
        first_pos: u64,
        items: &[Item],
        blobs: &Blobs,
        bpe: u64,
    ) -> Result<Batch> {
        let results: Vec<Result<Decoded>> = self.pool.install(|| {
            items
                .par_iter()
                .enumerate()
                .map(|(i, item)| {
                    let blob = blobs.get(&item.clip).ok_or_else(|| {
                        DataError::Config(format!("audio of clip {} was not fetched", item.clip))
                    })?;
                    self.decode_item(blob, *item, epoch, first_pos + i as u64)
                })
                .collect()
        });
        let mut rows = Vec::with_capacity(items.len());
        let mut skipped = 0u32;
        for r in results {
            match r {
                Ok(d) => rows.push(d),
                Err(e @ DataError::Undecodable { .. }) if self.cfg.skip_undecodable => {
                    skipped += 1;
                    let total = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(skipped_total = total, "skipping row: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        let captions = self
            .tok
            .encode_batch(&rows.iter().map(|d| d.caption.as_str()).collect::<Vec<_>>())?;
        let metadata = self
            .tok
            .encode_batch(&rows.iter().map(|d| d.meta.as_str()).collect::<Vec<_>>())?;
        let samples = self.cfg.clip_samples();
        let mut waveforms = Vec::with_capacity(rows.len() * samples);
        for d in &rows {
            waveforms.extend_from_slice(&d.wave);
        }
        Ok(Batch {
            epoch,
            index: b,
            cursor_after: Cursor::after(epoch, b, self.cfg.global_batch, bpe),
            batch_size: rows.len(),
            samples,
            waveforms,
            valid_lengths: rows.iter().map(|d| d.valid as u32).collect(),
            captions,
            metadata,
            clip_indices: rows.iter().map(|d| d.item.clip).collect(),
            caption_indices: rows.iter().map(|d| d.item.caption).collect(),
            skipped,
        })
    }
}

/// The training loader of one rank. Iterate it to get batches; each batch carries its cursor.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    skipped: Arc<AtomicU64>,
    batches_per_epoch: u64,
}

pub(crate) fn build_pool(workers: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .thread_name(|i| format!("hr-data-decode-{i}"))
        .build()
        .map_err(|e| DataError::Config(format!("cannot start decode pool: {e}")))
}

impl Loader {
    /// Starts loading from `start` until `end_epoch` (exclusive; `None` = forever).
    pub fn new(
        index: Arc<SplitIndex>,
        cfg: LoaderConfig,
        tok: TextTokenizer,
        start: Cursor,
        end_epoch: Option<u64>,
    ) -> Result<Self> {
        cfg.validate()?;
        let bpe = batches_per_epoch(index.shape(), cfg.global_batch);
        if bpe == 0 {
            return Err(DataError::Config(format!(
                "split has {} items, fewer than one global batch of {}",
                index.shape().num_items(),
                cfg.global_batch
            )));
        }
        let first = start.next_batch(cfg.global_batch)?;
        let skipped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(cfg.prefetch_batches.max(1));
        let work = Work {
            pool: build_pool(cfg.workers)?,
            index,
            cfg,
            tok,
            skipped: skipped.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("hr-data-loader".into())
            .spawn(move || produce(work, start.epoch, first, end_epoch, bpe, tx))
            .map_err(|e| DataError::Config(format!("cannot start loader thread: {e}")))?;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
            skipped,
            batches_per_epoch: bpe,
        })
    }

    /// Rows skipped so far because their audio did not decode.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Global batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }
}

fn produce(
    work: Work,
    epoch0: u64,
    first: u64,
    end_epoch: Option<u64>,
    bpe: u64,
    tx: SyncSender<Result<Batch>>,
) {
    let g = work.cfg.global_batch;
    let mut cache = AudioCache::new(work.cfg.audio_cache_mib);
    let mut epoch = epoch0;
    let mut b0 = first;
    while end_epoch.is_none_or(|e| epoch < e) {
        let order = epoch_order(work.index.shape(), &work.cfg.order(), epoch);
        for b in b0..bpe {
            let res = produce_batch(&work, &mut cache, &order, epoch, b, g, bpe);
            let failed = res.is_err();
            if tx.send(res).is_err() || failed {
                return;
            }
        }
        b0 = 0;
        epoch += 1;
    }
}

fn produce_batch(
    work: &Work,
    cache: &mut AudioCache,
    order: &[Item],
    epoch: u64,
    b: u64,
    g: usize,
    bpe: u64,
) -> Result<Batch> {
    let global = global_batch(order, b, g);
    let mine = partition(global, work.cfg.rank, work.cfg.world_size)?;
    let per = g / work.cfg.world_size;
    let first_pos = b * g as u64 + (work.cfg.rank * per) as u64;
    let blobs = work.fetch(mine, Some(cache))?;
    work.build(epoch, b, first_pos, mine, &blobs, bpe)
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub use crate::eval_set::{ClipBatch, EvalSet, Query, QueryBatch};
