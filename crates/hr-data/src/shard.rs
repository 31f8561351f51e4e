//! Parquet shard writer and reader.
//!
//! Writing is local (converters write a local dataset root that can then be uploaded); reading goes
//! through [`Store`] with parquet's async reader: footer and page index once, then only the byte
//! ranges a read needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::manifest::{Manifest, ShardInfo};
use crate::schema::{
    arrow_schema, to_record_batch, AudioBlob, BatchView, ClipRecord, COLUMNS, SCHEMA_VERSION,
};
use crate::store::Store;

/// Clips per Parquet row group.
pub const ROW_GROUP_CLIPS: usize = 64;

/// Default clips per shard file.
pub const DEFAULT_CLIPS_PER_SHARD: usize = 512;

/// Lower-case hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streams a local file through sha256, returning (hash, size).
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Writer settings: zstd pages, [`ROW_GROUP_CLIPS`] rows per row group, and one data page per
/// clip in the audio columns (no dictionary), so a reader fetches the audio of single rows
/// through the offset index instead of whole column chunks. Audio pages are not compressed:
/// FLAC/ogg/mp3 do not shrink, and zstd saved 4 % on 16-bit PCM at 32 kHz while its
/// decompression took most of the loader's time per clip (docs/PERF.md section 3).
fn writer_props() -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(3).map_err(|e| DataError::Config(e.to_string()))?;
    let bytes = ColumnPath::from(vec!["audio".to_string(), "bytes".to_string()]);
    let path = ColumnPath::from(vec!["audio".to_string(), "path".to_string()]);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_CLIPS))
        // Page limits are checked between write batches: one row per batch makes them exact.
        .set_write_batch_size(1)
        .set_column_dictionary_enabled(bytes.clone(), false)
        .set_column_compression(bytes.clone(), Compression::UNCOMPRESSED)
        .set_column_data_page_row_count_limit(bytes, 1)
        .set_column_data_page_row_count_limit(path, 1)
        .set_created_by(format!("hr-data schema v{SCHEMA_VERSION}"))
        .build())
}

/// Writes the shards of one split, rolling to a new file every `clips_per_shard` clips.
struct SplitWriter {
    split: String,
    dir: PathBuf,
    clips_per_shard: usize,
    pending: Vec<ClipRecord>,
    current: Option<(ArrowWriter<BufWriter<File>>, PathBuf)>,
    rows_in_current: usize,
    finished: Vec<(PathBuf, u64)>,
}

impl SplitWriter {
    fn new(root: &Path, split: &str, clips_per_shard: usize) -> Result<Self> {
        let dir = root.join(split);
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        Ok(SplitWriter {
            split: split.to_string(),
            dir,
            clips_per_shard: clips_per_shard.max(1),
            pending: Vec::with_capacity(ROW_GROUP_CLIPS),
            current: None,
            rows_in_current: 0,
            finished: Vec::new(),
        })
    }

    fn push(&mut self, clip: ClipRecord) -> Result<()> {
        if clip.captions.is_empty() {
            return Err(DataError::Config(format!(
                "clip `{}` of split {} has no captions; every clip needs 1..5 captions",
                clip.id, self.split
            )));
        }
        self.pending.push(clip);
        let room = self.clips_per_shard - self.rows_in_current;
        if self.pending.len() >= ROW_GROUP_CLIPS.min(room) {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let tmp = self
                .dir
                .join(format!(".part-{:05}.parquet.tmp", self.finished.len()));
            let f = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
            let w = ArrowWriter::try_new(BufWriter::new(f), arrow_schema(), Some(writer_props()?))
                .map_err(|e| DataError::Config(format!("{}: {e}", tmp.display())))?;
            self.current = Some((w, tmp));
        }
        let batch = to_record_batch(&self.pending)?;
        let n = self.pending.len();
        self.pending.clear();
        if let Some((w, tmp)) = self.current.as_mut() {
            w.write(&batch)
                .map_err(|e| DataError::Config(format!("{}: {e}", tmp.display())))?;
            w.flush()
                .map_err(|e| DataError::Config(format!("{}: {e}", tmp.display())))?;
        }
        self.rows_in_current += n;
        if self.rows_in_current >= self.clips_per_shard {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((w, tmp)) = self.current.take() {
            let inner = w
                .into_inner()
                .map_err(|e| DataError::Config(format!("{}: {e}", tmp.display())))?;
            let f = inner
                .into_inner()
                .map_err(|e| DataError::io(&tmp, e.into_error()))?;
            f.sync_all().map_err(|e| DataError::io(&tmp, e))?;
            self.finished.push((tmp, self.rows_in_current as u64));
            self.rows_in_current = 0;
        }
        Ok(())
    }

    /// Renames temp files to `part-i-of-n.parquet`, removes stale parts, returns shard infos.
    fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.flush_pending()?;
        self.close_current()?;
        let n = self.finished.len();
        let mut infos = Vec::with_capacity(n);
        let mut keep = Vec::with_capacity(n);
        for (i, (tmp, rows)) in self.finished.iter().enumerate() {
            let name = format!("part-{i:05}-of-{n:05}.parquet");
            let dst = self.dir.join(&name);
            std::fs::rename(tmp, &dst).map_err(|e| DataError::io(&dst, e))?;
            let (sha256, bytes) = sha256_file(&dst)?;
            infos.push(ShardInfo {
                path: format!("{}/{name}", self.split),
                rows: *rows,
                bytes,
                sha256,
            });
            keep.push(name);
        }
        remove_stale_parts(&self.dir, &keep)?;
        Ok(infos)
    }
}

fn remove_stale_parts(dir: &Path, keep: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("part-") && name.ends_with(".parquet") && !keep.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| DataError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Writes a dataset root: shards per split plus an atomically written manifest.
///
/// Memory is bounded by one row group per open split.
pub struct DatasetWriter {
    root: PathBuf,
    name: String,
    clips_per_shard: usize,
    splits: BTreeMap<String, SplitWriter>,
    tokenizer: Option<String>,
    audio: Option<crate::audio::AudioStorage>,
}

impl DatasetWriter {
    /// Creates (or reuses) the local directory `root`.
    pub fn create(root: &Path, name: &str, clips_per_shard: usize) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
        Ok(DatasetWriter {
            root: root.to_path_buf(),
            name: name.to_string(),
            clips_per_shard,
            splits: BTreeMap::new(),
            tokenizer: None,
            audio: None,
        })
    }

    /// The dataset root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a tokenizer file (relative to the root) in the manifest.
    pub fn set_tokenizer(&mut self, rel: &str) {
        self.tokenizer = Some(rel.to_string());
    }

    /// Records how the audio is stored in the manifest.
    pub fn set_audio(&mut self, audio: crate::audio::AudioStorage) {
        self.audio = Some(audio);
    }

    /// Appends one clip to `split`.
    pub fn push(&mut self, split: &str, clip: ClipRecord) -> Result<()> {
        if !self.splits.contains_key(split) {
            let w = SplitWriter::new(&self.root, split, self.clips_per_shard)?;
            self.splits.insert(split.to_string(), w);
        }
        match self.splits.get_mut(split) {
            Some(w) => w.push(clip),
            None => Err(DataError::Config(format!("split {split} vanished"))),
        }
    }

    /// Closes all shards and writes manifest.json atomically.
    pub fn finish(self) -> Result<Manifest> {
        let mut manifest = Manifest::new(&self.name);
        manifest.tokenizer = self.tokenizer;
        manifest.audio = self.audio;
        for (split, w) in self.splits {
            manifest.splits.insert(split, w.finish()?);
        }
        manifest.write_atomic(&self.root)?;
        Ok(manifest)
    }
}

/// A shard on its store, read through parquet's async reader interface: for every read,
/// parquet asks for exactly the byte ranges it needs (with a row selection and the offset
/// index, the pages holding the selected rows), and they are fetched with one coalescing
/// `get_ranges` call. Measured against the hand-written blocking chunk reader this replaced:
/// 12x the clips/s reading shuffled rows (docs/PERF.md section 3).
#[derive(Clone)]
struct ShardFile {
    store: Store,
    rel: String,
    len: u64,
    /// Bytes fetched so far (shared by the clones parquet's readers take).
    fetched: Arc<AtomicU64>,
}

impl ShardFile {
    fn count(&self, n: usize) {
        self.fetched.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn store_err(e: DataError) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ShardFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let b = self.store.get_range_async(&self.rel, range).await;
            let b = b.map_err(store_err)?;
            self.count(b.len());
            Ok(b)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let v = self.store.get_ranges_async(&self.rel, &ranges).await;
            let v = v.map_err(store_err)?;
            self.count(v.iter().map(Bytes::len).sum());
            Ok(v)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let len = self.len;
            let m = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, len)
                .await?;
            Ok(Arc::new(m))
        }
        .boxed()
    }
}

/// An open shard: metadata (with the offset index) read once, row groups, columns and rows
/// fetched on demand.
#[derive(Clone)]
pub struct ShardReader {
    name: String,
    file: ShardFile,
    meta: ArrowReaderMetadata,
}

impl ShardReader {
    /// Opens shard `info` of the dataset behind `store`.
    ///
    /// With `verify`, the whole file is fetched once and its sha256 checked against the manifest
    /// (then dropped: memory stays bounded by what a read needs). Either way only the footer and
    /// page index are kept; row groups, columns and pages are fetched as byte ranges later.
    pub fn open(store: &Store, info: &ShardInfo, verify: bool) -> Result<Self> {
        if verify {
            let actual = sha256_hex(&store.get(&info.path)?);
            if actual != info.sha256 {
                return Err(DataError::ChecksumMismatch {
                    shard: info.path.clone(),
                    expected: info.sha256.clone(),
                    actual,
                });
            }
        }
        let mut file = ShardFile {
            store: store.clone(),
            rel: info.path.clone(),
            len: store.size(&info.path)?,
            fetched: Arc::new(AtomicU64::new(0)),
        };
        let opts = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let meta = store
            .block_on(ArrowReaderMetadata::load_async(&mut file, opts))
            .map_err(|e| DataError::CorruptShard {
                shard: info.path.clone(),
                detail: e.to_string(),
            })?;
        let r = ShardReader {
            name: info.path.clone(),
            file,
            meta,
        };
        r.check_schema()?;
        Ok(r)
    }

    fn check_schema(&self) -> Result<()> {
        let schema = self.meta.schema();
        for required in ["id", "audio", "captions"] {
            if schema.field_with_name(required).is_err() {
                return Err(DataError::WrongSchema {
                    shard: self.name.clone(),
                    column: required.to_string(),
                    detail: "column is missing".into(),
                    version: SCHEMA_VERSION,
                });
            }
        }
        Ok(())
    }

    /// The Arrow schema stored in the shard.
    pub fn arrow_schema(&self) -> arrow::datatypes::SchemaRef {
        self.meta.schema().clone()
    }

    /// The shard's path relative to the root.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rows per row group.
    pub fn row_group_rows(&self) -> Vec<usize> {
        let md = self.meta.metadata();
        (0..md.num_row_groups())
            .map(|i| md.row_group(i).num_rows().max(0) as usize)
            .collect()
    }

    /// Bytes this reader (and its clones) fetched from the store so far: footer, page index and
    /// data, not counting the checksum pass of [`ShardReader::open`].
    pub fn bytes_fetched(&self) -> u64 {
        self.file.fetched.load(Ordering::Relaxed)
    }

    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.row_group_rows().iter().sum()
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> DataError {
        DataError::CorruptShard {
            shard: self.name.clone(),
            detail: e.to_string(),
        }
    }

    fn mask(&self, columns: Option<&[&str]>) -> ProjectionMask {
        match columns {
            Some(cols) => {
                let schema = self.meta.schema();
                let idx: Vec<usize> = cols
                    .iter()
                    .filter_map(|c| schema.index_of(c).ok())
                    .collect();
                ProjectionMask::roots(self.meta.parquet_schema(), idx)
            }
            None => ProjectionMask::all(),
        }
    }

    /// Runs a read: `groups` with `mask`, and only `selection`'s rows when given. A panic inside
    /// the Parquet reader (on a hostile file) is a [`DataError::CorruptShard`] naming the shard.
    fn run(
        &self,
        groups: Vec<usize>,
        mask: ProjectionMask,
        selection: Option<RowSelection>,
    ) -> Result<Vec<RecordBatch>> {
        hr_core::catch_panic(|| self.run_unguarded(groups, mask, selection))
            .unwrap_or_else(|m| Err(self.corrupt(format!("the Parquet reader panicked: {m}"))))
    }

    fn run_unguarded(
        &self,
        groups: Vec<usize>,
        mask: ProjectionMask,
        selection: Option<RowSelection>,
    ) -> Result<Vec<RecordBatch>> {
        let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.file.clone(),
            self.meta.clone(),
        )
        .with_batch_size(ROW_GROUP_CLIPS * 4)
        .with_row_groups(groups)
        .with_projection(mask);
        if let Some(sel) = selection {
            b = b.with_row_selection(sel);
        }
        let stream = b.build().map_err(|e| self.corrupt(e))?;
        self.file
            .store
            .block_on(stream.try_collect::<Vec<_>>())
            .map_err(|e| self.corrupt(e))
    }

    /// Reads the given row groups (all when `None`) with only `columns` (all when `None`).
    pub fn read(
        &self,
        row_groups: Option<Vec<usize>>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let n = self.meta.metadata().num_row_groups();
        let groups: Vec<usize> = row_groups
            .unwrap_or_else(|| (0..n).collect())
            .into_iter()
            .filter(|&g| g < n)
            .collect();
        self.run(groups, self.mask(columns), None)
    }

    /// The audio of `rows` (indices within row group `rg`, any order, repeats allowed), in the
    /// order asked. Only the pages holding those rows are fetched (shards written by this crate
    /// keep one audio page per clip and an offset index; older shards read whole column chunks).
    pub fn read_audio(&self, rg: usize, rows: &[usize]) -> Result<Vec<AudioBlob>> {
        let md = self.meta.metadata();
        if rg >= md.num_row_groups() {
            return Err(self.corrupt(format!("row group {rg} does not exist")));
        }
        let total = md.row_group(rg).num_rows().max(0) as usize;
        let mut sorted: Vec<usize> = rows.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if let Some(&bad) = sorted.iter().find(|&&r| r >= total) {
            return Err(self.corrupt(format!("row {bad} of row group {rg} ({total} rows)")));
        }
        let blobs = self.selected_audio(rg, total, &sorted)?;
        // Each blob moves to its last request; earlier repeats get copies.
        let at: Vec<usize> = rows
            .iter()
            .map(|r| sorted.partition_point(|s| s < r))
            .collect();
        let mut left = vec![0usize; sorted.len()];
        at.iter().for_each(|&i| left[i] += 1);
        let mut slots: Vec<Option<AudioBlob>> = blobs.into_iter().map(Some).collect();
        at.iter()
            .map(|&i| {
                left[i] -= 1;
                let blob = match left[i] {
                    0 => slots[i].take(),
                    _ => slots[i].clone(),
                };
                blob.ok_or_else(|| self.corrupt(format!("row group {rg}: a selected row vanished")))
            })
            .collect()
    }

    /// The audio of the distinct, sorted `rows` of row group `rg` (of `total` rows), in order.
    fn selected_audio(&self, rg: usize, total: usize, rows: &[usize]) -> Result<Vec<AudioBlob>> {
        let ranges = rows.iter().map(|&r| r..r + 1);
        let selection = RowSelection::from_consecutive_ranges(ranges, total);
        let batches = self.run(vec![rg], self.mask(Some(&["audio"])), Some(selection))?;
        let base = self.row_group_offset(rg);
        let mut blobs = Vec::with_capacity(rows.len());
        for batch in &batches {
            let view = BatchView::new(batch, &self.name, base, &["audio"])?;
            for row in 0..batch.num_rows() {
                let mut blob = view.audio(row);
                if let (Err(DataError::BadRow { row: r, .. }), Some(&at)) =
                    (&mut blob, rows.get(blobs.len()))
                {
                    // Report the shard row, not the position within the selection.
                    *r = base + at;
                }
                blobs.push(blob?);
            }
        }
        if blobs.len() != rows.len() {
            return Err(self.corrupt(format!(
                "row group {rg}: {} of {} selected rows read",
                blobs.len(),
                rows.len()
            )));
        }
        Ok(blobs)
    }

    /// Row offset of the first row of row group `rg` inside the shard.
    pub fn row_group_offset(&self, rg: usize) -> usize {
        self.row_group_rows().iter().take(rg).sum()
    }

    /// Reads full records of one row group.
    pub fn read_row_group(&self, rg: usize) -> Result<Vec<ClipRecord>> {
        let batches = self.read(Some(vec![rg]), None)?;
        let mut offset = self.row_group_offset(rg);
        let mut out = Vec::new();
        for batch in &batches {
            let view = BatchView::new(batch, &self.name, offset, &COLUMNS[..3])?;
            for row in 0..batch.num_rows() {
                out.push(view.record(row)?);
            }
            offset += batch.num_rows();
        }
        Ok(out)
    }

    /// Reads every record of the shard.
    pub fn read_all(&self) -> Result<Vec<ClipRecord>> {
        let mut out = Vec::new();
        for rg in 0..self.row_group_rows().len() {
            out.extend(self.read_row_group(rg)?);
        }
        Ok(out)
    }
}

/// Opens every shard of `split` (used by inspect/verify and tests).
pub fn open_split(
    store: &Store,
    manifest: &Manifest,
    split: &str,
    verify: bool,
) -> Result<Vec<Arc<ShardReader>>> {
    manifest
        .split(split)?
        .iter()
        .map(|info| ShardReader::open(store, info, verify).map(Arc::new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ClipRecord;

    fn clip(i: usize) -> ClipRecord {
        ClipRecord {
            id: format!("c{i}"),
            audio: AudioBlob {
                // Distinct, poorly compressible blobs of 20-40 KB.
                bytes: (0..20_000 + 200 * i)
                    .map(|k| ((k * 2_654_435_761 + i * 97) >> 7) as u8)
                    .collect(),
                path: format!("c{i}.wav"),
            },
            captions: vec![format!("caption {i}")],
            ..ClipRecord::default()
        }
    }

    fn shard() -> (tempfile::TempDir, ShardReader) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path(), "t", 1000).unwrap();
        for i in 0..100 {
            w.push("train", clip(i)).unwrap();
        }
        let m = w.finish().unwrap();
        let store = Store::local(dir.path()).unwrap();
        let r = ShardReader::open(&store, &m.splits["train"][0], true).unwrap();
        (dir, r)
    }

    /// Each clip's audio is one page, so reading a row fetches that page, not the column chunk.
    #[test]
    fn one_audio_page_per_row_and_only_selected_pages_are_fetched() {
        let (_dir, r) = shard();
        assert_eq!(r.row_group_rows(), vec![64, 36]);
        let schema = r.meta.parquet_schema();
        let leaf = (0..schema.num_columns())
            .find(|&c| schema.column(c).path().string() == "audio.bytes")
            .unwrap();
        let pages = r.meta.metadata().page_index_for_row_group(1);
        assert_eq!(pages.offset_index(leaf).unwrap().page_locations().len(), 36);
        let chunk = r.meta.metadata().row_group(1).column(leaf).byte_range().1;
        let before = r.bytes_fetched();
        let one = r.read_audio(1, &[7]).unwrap();
        let fetched = r.bytes_fetched() - before;
        assert!(
            fetched < 2 * one[0].bytes.len() as u64 + 4096 && fetched * 10 < chunk,
            "one row: {fetched} B fetched for a {} B clip of a {chunk} B column chunk",
            one[0].bytes.len()
        );
    }

    #[test]
    fn read_audio_returns_the_rows_asked_in_order_with_repeats() {
        let (_dir, r) = shard();
        let rows = r.read_row_group(1).unwrap();
        let got = r.read_audio(1, &[5, 2, 5, 35, 0]).unwrap();
        let want: Vec<AudioBlob> = [5, 2, 5, 35, 0]
            .iter()
            .map(|&i| rows[i].audio.clone())
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[0].path, "c69.wav");
        let err = r.read_audio(1, &[36]).unwrap_err().to_string();
        assert!(err.contains("train/part-00000-of-00001.parquet"), "{err}");
        assert!(err.contains("row 36 of row group 1"), "{err}");
    }
}
