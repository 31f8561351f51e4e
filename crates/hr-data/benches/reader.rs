//! Reading the audio of shuffled rows: our page reader (`ShardReader::read_audio`, blocking
//! ranged reads of the pages the offset index names) against parquet's own async reader
//! (`ParquetRecordBatchStreamBuilder` over an `AsyncFileReader` on object_store, the current API
//! of parquet 60, which deprecates `ParquetObjectReader`; same row selection and projection),
//! both on a local object store, one thread. Run: `cargo bench -p hr-data --bench reader`. The
//! loader keeps the faster (docs/PERF.md section 3).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, BinaryArray, StructArray};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use futures::TryStreamExt;
use hr_data::audio::encode_wav;
use hr_data::rng::Rng;
use hr_data::schema::{AudioBlob, ClipRecord};
use hr_data::shard::{open_split, DatasetWriter};
use hr_data::{Manifest, Store};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

const CLIPS: usize = 320;

/// An `AsyncFileReader` on an object store (as parquet's `examples/object_store.rs`); the
/// metadata is loaded once per shard and handed to the builder.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
}

fn pq_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(pq_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(pq_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async {
            Err(ParquetError::General(
                "metadata is supplied by the caller".into(),
            ))
        }
        .boxed()
    }
}
const BATCHES: usize = 10;

fn clip(i: usize) -> ClipRecord {
    let mut rng = Rng::new(i as u64);
    let x: Vec<f32> = (0..320_000).map(|_| 0.1 * rng.normal_f32()).collect();
    ClipRecord {
        id: format!("c{i}"),
        audio: AudioBlob {
            bytes: encode_wav(&[x], 32_000, 16).unwrap(),
            path: format!("c{i}.wav"),
        },
        captions: vec![format!("clip {i}")],
        sample_rate: 32_000,
        duration_s: 10.0,
        ..ClipRecord::default()
    }
}

/// (shard, row group) -> rows, for `BATCHES` batches of 32 rows drawn without replacement.
fn plan(rows_per_group: &[(usize, usize, usize)]) -> Vec<BTreeMap<(usize, usize), Vec<usize>>> {
    let mut all: Vec<(usize, usize, usize)> = rows_per_group
        .iter()
        .flat_map(|&(s, g, n)| (0..n).map(move |r| (s, g, r)))
        .collect();
    Rng::new(7).shuffle(&mut all);
    all.chunks(32)
        .take(BATCHES)
        .map(|b| {
            let mut m: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
            for &(s, g, r) in b {
                m.entry((s, g)).or_default().push(r);
            }
            m
        })
        .collect()
}

/// Reads the audio of `rows` of row group `g` with parquet's async reader; returns its bytes.
async fn read_rows(
    reader: ObjectReader,
    meta: ArrowReaderMetadata,
    g: usize,
    rows: &[usize],
) -> usize {
    let total = meta.metadata().row_group(g).num_rows() as usize;
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    let sel = RowSelection::from_consecutive_ranges(sorted.iter().map(|&r| r..r + 1), total);
    let audio = meta.schema().index_of("audio").unwrap();
    let mask = ProjectionMask::roots(meta.parquet_schema(), [audio]);
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
        .with_row_groups(vec![g])
        .with_row_selection(sel)
        .with_projection(mask)
        .build()
        .unwrap();
    let out: Vec<_> = stream.try_collect().await.unwrap();
    let mut bytes = 0;
    for batch in out {
        let st = batch
            .column(0)
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let bin = st.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
        // Owned blobs, as read_audio returns them.
        let blobs: Vec<Vec<u8>> = (0..bin.len()).map(|i| bin.value(i).to_vec()).collect();
        bytes += blobs.iter().map(Vec::len).sum::<usize>();
    }
    bytes
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = DatasetWriter::create(tmp.path(), "bench", 128).unwrap();
    for i in 0..CLIPS {
        w.push("train", clip(i)).unwrap();
    }
    let m: Manifest = w.finish().unwrap();
    let store = Store::local(tmp.path()).unwrap();
    let shards = open_split(&store, &m, "train", false).unwrap();
    let groups: Vec<(usize, usize, usize)> = shards
        .iter()
        .enumerate()
        .flat_map(|(s, r)| {
            r.row_group_rows()
                .into_iter()
                .enumerate()
                .map(move |(g, n)| (s, g, n))
        })
        .collect();
    let batches = plan(&groups);
    let clips = (BATCHES * 32) as f64;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
    let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let metas: Vec<ArrowReaderMetadata> = m.splits["train"]
        .iter()
        .map(|info| {
            ArrowReaderMetadata::load(&store.get(&info.path).unwrap(), opts.clone()).unwrap()
        })
        .collect();
    let ours = || {
        let t = Instant::now();
        let mut bytes = 0usize;
        for b in &batches {
            for ((s, g), rows) in b {
                let blobs = shards[*s].read_audio(*g, rows).unwrap();
                bytes += blobs.iter().map(|a| a.bytes.len()).sum::<usize>();
            }
        }
        (clips / t.elapsed().as_secs_f64(), bytes)
    };
    let theirs = || {
        let t = Instant::now();
        let mut bytes = 0usize;
        rt.block_on(async {
            for b in &batches {
                for ((s, g), rows) in b {
                    let info = &m.splits["train"][*s];
                    let reader = ObjectReader {
                        store: fs.clone(),
                        path: ObjPath::from(info.path.as_str()),
                    };
                    bytes += read_rows(reader, metas[*s].clone(), *g, rows).await;
                }
            }
        });
        (clips / t.elapsed().as_secs_f64(), bytes)
    };
    // Alternate, twice each, and keep each one's better run (the first pays for cold caches).
    let (mut best_ours, mut best_theirs) = ((0f64, 0), (0f64, 0));
    for _ in 0..2 {
        let o = ours();
        let t = theirs();
        assert_eq!(o.1, t.1, "both readers return the same audio");
        best_ours = if o.0 > best_ours.0 { o } else { best_ours };
        best_theirs = if t.0 > best_theirs.0 { t } else { best_theirs };
    }
    let (ours, theirs, mb) = (best_ours.0, best_theirs.0, best_ours.1 as f64 / 1e6);

    println!("| reading the audio of {BATCHES} shuffled batches of 32 (10 s 32 kHz wav, {mb:.0} MB) | clips/s |\n|---|---|");
    println!("| ShardReader::read_audio (ours) | {ours:.0} |");
    println!("| ParquetRecordBatchStreamBuilder over an object_store AsyncFileReader (parquet 60) | {theirs:.0} |");
    println!("| ratio ours / parquet's | {:.2} |", ours / theirs);
}
