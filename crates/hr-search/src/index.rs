//! The index on disk and in memory.
//!
//! An index is a folder:
//! - `index.json`: what was indexed with what ([`Manifest`]: the checkpoint and the sha256 of
//!   its weights, fusion, metadata kind, vector width, the collection) and its parts with their
//!   sha256; written last, so its presence means the build is complete;
//! - `build.json`: the same without the parts, written first (an interrupted build resumes
//!   only into a folder whose plan is the same);
//! - `parts/part-NNNNN.parquet`: the items in order, one row each: `id`, `source`, `row`,
//!   `duration_s`, `metadata`, `captions` (list), `present` (metadata fused), `embedding`
//!   (fixed-size list of f32: the L2-normalised item embedding, or mid fusion's audio token)
//!   and, for mid fusion, `meta_embedding` (the metadata token). Any Parquet reader reads them
//!   (`pyarrow.parquet.read_table`, pandas, polars, DuckDB).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch,
    StringArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use hr_data::MetadataKind;
use hr_models::fusion::FusionKind;
use hr_tensor::{DType, Device, Tensor};

use crate::encoder::ItemVectors;
use crate::error::{Error, Result};
use crate::source::{ItemInfo, SourceSpec};

/// The file that marks a complete index.
pub const INDEX_FILE: &str = "index.json";
/// The plan of a build in progress.
pub const PLAN_FILE: &str = "build.json";
/// The folder of the parts.
pub const PARTS_DIR: &str = "parts";
/// The format name in `index.json`.
pub const FORMAT: &str = "hr-search-index";
/// The format version.
pub const VERSION: u32 = 1;

/// What an index holds and was built with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The checkpoint directory the vectors come from.
    pub checkpoint: PathBuf,
    /// sha256 of its weights.
    pub model_sha256: String,
    /// The model's fusion.
    pub fusion: FusionKind,
    /// The metadata kind fused with the audio.
    pub metadata: MetadataKind,
    /// Width of the vectors.
    pub dim: usize,
    /// The temperature that scales mid-fusion scores.
    pub tau: f64,
    /// The collection.
    pub source: SourceSpec,
    /// Number of items.
    pub items: usize,
    /// Items per part.
    pub part_size: usize,
}

/// One part file of a complete index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    /// File name under `parts/`.
    pub file: String,
    /// Items in it.
    pub rows: usize,
    /// sha256 of the file.
    pub sha256: String,
}

/// `index.json`: the plan and the parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// What was indexed with what.
    #[serde(flatten)]
    pub plan: Plan,
    /// The parts in item order.
    pub parts: Vec<PartInfo>,
}

/// The file name of part `k`.
pub fn part_name(k: usize) -> String {
    format!("part-{k:05}.parquet")
}

/// Reads a JSON file of the index.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e))
}

/// Writes a JSON file of the index atomically.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::format(path, e))?;
    Ok(hr_core::write_atomic(path, format!("{text}\n").as_bytes())?)
}

fn schema(dim: usize, mid: bool) -> Arc<Schema> {
    let vector = || {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        )
    };
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("row", DataType::UInt64, false),
        Field::new("duration_s", DataType::Float32, false),
        Field::new("metadata", DataType::Utf8, false),
        Field::new(
            "captions",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
            false,
        ),
        Field::new("present", DataType::Boolean, false),
        Field::new("embedding", vector(), false),
    ];
    if mid {
        fields.push(Field::new("meta_embedding", vector(), false));
    }
    Arc::new(Schema::new(fields))
}

fn vectors(v: &[f32], dim: usize) -> Result<ArrayRef> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Arc::new(Float32Array::from(v.to_vec()));
    let a = FixedSizeListArray::try_new(field, dim as i32, values, None)
        .map_err(|e| Error::BadRequest(format!("vectors: {e}")))?;
    Ok(Arc::new(a))
}

fn captions(items: &[ItemInfo]) -> Result<ArrayRef> {
    let lens = items.iter().map(|i| i.captions.len());
    let values: Vec<&str> = items
        .iter()
        .flat_map(|i| i.captions.iter().map(String::as_str))
        .collect();
    let field = Arc::new(Field::new("item", DataType::Utf8, false));
    let a = ListArray::try_new(
        field,
        OffsetBuffer::from_lengths(lens),
        Arc::new(StringArray::from(values)),
        None,
    )
    .map_err(|e| Error::BadRequest(format!("captions: {e}")))?;
    Ok(Arc::new(a))
}

/// Encodes one part (items and their vectors) as Parquet bytes. The bytes depend only on the
/// inputs (no timestamps), so a resumed build writes the same file.
pub fn encode_part(items: &[ItemInfo], v: &ItemVectors, dim: usize) -> Result<Vec<u8>> {
    let text = |f: fn(&ItemInfo) -> &str| -> ArrayRef {
        Arc::new(StringArray::from(items.iter().map(f).collect::<Vec<_>>()))
    };
    let mut cols: Vec<ArrayRef> = vec![
        text(|i| &i.id),
        text(|i| &i.source),
        Arc::new(UInt64Array::from(
            items.iter().map(|i| i.row).collect::<Vec<_>>(),
        )),
        Arc::new(Float32Array::from(
            items.iter().map(|i| i.duration_s).collect::<Vec<_>>(),
        )),
        text(|i| &i.metadata),
        captions(items)?,
        Arc::new(BooleanArray::from(v.present.clone())),
        vectors(&v.embedding, dim)?,
    ];
    if let Some(m) = &v.meta {
        cols.push(vectors(m, dim)?);
    }
    let schema = schema(dim, v.meta.is_some());
    let batch = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| Error::BadRequest(format!("part: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))
        .map_err(|e| Error::BadRequest(format!("part writer: {e}")))?;
    w.write(&batch)
        .and_then(|_| w.close().map(|_| ()))
        .map_err(|e| Error::BadRequest(format!("part writer: {e}")))?;
    Ok(buf)
}

/// A loaded index: the items and their vectors on a device.
pub struct Index {
    /// Its folder.
    pub dir: PathBuf,
    /// `index.json`.
    pub manifest: Manifest,
    /// The items in order.
    pub items: Vec<ItemInfo>,
    /// Whether each item's metadata was fused.
    pub present: Vec<bool>,
    /// The `embedding` column (N, dim).
    pub vectors: Tensor,
    /// The `meta_embedding` column (N, dim) of mid fusion.
    pub meta_vectors: Option<Tensor>,
    by_id: HashMap<String, usize>,
}

/// The columns of one part as read.
#[derive(Default)]
struct Columns {
    items: Vec<ItemInfo>,
    present: Vec<bool>,
    vectors: Vec<f32>,
    meta: Vec<f32>,
}

impl Index {
    /// Opens a complete index onto `device` with f32 vectors.
    pub fn open(dir: &Path, device: Device) -> Result<Index> {
        Index::open_as(dir, device, DType::F32)
    }

    /// Opens a complete index onto `device`, its vectors stored as `dtype`: f32, or f16 (half
    /// the memory and the bytes each query reads; `none` and `late` fusion on the CPU).
    pub fn open_as(dir: &Path, device: Device, dtype: DType) -> Result<Index> {
        let mpath = dir.join(INDEX_FILE);
        if !mpath.is_file() {
            let why = match dir.join(PLAN_FILE).is_file() {
                true => "the build was interrupted: run `hr-search index` again with the same arguments to finish it",
                false => "not an index (no index.json)",
            };
            return Err(Error::format(dir, why));
        }
        let manifest: Manifest = read_json(&mpath)?;
        if manifest.plan.format != FORMAT || manifest.plan.version != VERSION {
            let msg = format!(
                "format {} v{} is not {FORMAT} v{VERSION}",
                manifest.plan.format, manifest.plan.version
            );
            return Err(Error::format(&mpath, msg));
        }
        let dim = manifest.plan.dim;
        let half_ok = device == Device::Cpu && manifest.plan.fusion != FusionKind::Mid;
        match dtype {
            DType::F32 => {}
            DType::F16 if half_ok => {}
            _ => {
                let msg = format!(
                    "vectors as {dtype:?}: f32, or f16 for a none/late fusion index on the CPU"
                );
                return Err(Error::BadRequest(msg));
            }
        }
        let mut cols = Columns::default();
        for p in &manifest.parts {
            read_part(&dir.join(PARTS_DIR).join(&p.file), dim, &mut cols)?;
        }
        let n = cols.items.len();
        if n != manifest.plan.items {
            let msg = format!(
                "{n} items in the parts, {} in index.json",
                manifest.plan.items
            );
            return Err(Error::format(&mpath, msg));
        }
        let upload = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, &[n, dim])?.to_device(device)?)
        };
        let meta_vectors = match manifest.plan.fusion {
            FusionKind::Mid => Some(upload(std::mem::take(&mut cols.meta))?),
            _ => None,
        };
        let by_id = cols
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i))
            .collect();
        let mut vectors = upload(cols.vectors)?;
        if dtype != DType::F32 {
            vectors = vectors.to_dtype(dtype)?;
        }
        Ok(Index {
            dir: dir.to_path_buf(),
            vectors,
            meta_vectors,
            present: cols.present,
            items: cols.items,
            manifest,
            by_id,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The position of the item with `id`.
    pub fn position(&self, id: &str) -> Result<usize> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| Error::UnknownId(id.to_string()))
    }
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::format(path, format!("missing or mistyped column `{name}`")))
}

fn list_values(a: &FixedSizeListArray, dim: usize, path: &Path, out: &mut Vec<f32>) -> Result<()> {
    let values = a
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .filter(|_| a.value_length() as usize == dim)
        .ok_or_else(|| Error::format(path, format!("vectors are not f32 x {dim}")))?;
    let start = a.offset() * dim;
    out.extend_from_slice(&values.values()[start..start + a.len() * dim]);
    Ok(())
}

/// Appends the rows of one part file to `cols`.
fn read_part(path: &Path, dim: usize, cols: &mut Columns) -> Result<()> {
    let bytes = bytes::Bytes::from(std::fs::read(path).map_err(Error::io(path))?);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| Error::format(path, e))?;
    for batch in reader {
        let b = batch.map_err(|e| Error::format(path, e))?;
        let id = column::<StringArray>(&b, "id", path)?;
        let source = column::<StringArray>(&b, "source", path)?;
        let row = column::<UInt64Array>(&b, "row", path)?;
        let dur = column::<Float32Array>(&b, "duration_s", path)?;
        let meta = column::<StringArray>(&b, "metadata", path)?;
        let caps = column::<ListArray>(&b, "captions", path)?;
        let present = column::<BooleanArray>(&b, "present", path)?;
        for r in 0..b.num_rows() {
            let c = caps.value(r);
            let c = c
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::format(path, "captions are not strings"))?;
            cols.items.push(ItemInfo {
                id: id.value(r).to_string(),
                source: source.value(r).to_string(),
                row: row.value(r),
                duration_s: dur.value(r),
                metadata: meta.value(r).to_string(),
                captions: c.iter().flatten().map(str::to_string).collect(),
            });
            cols.present.push(present.value(r));
        }
        list_values(column(&b, "embedding", path)?, dim, path, &mut cols.vectors)?;
        if b.column_by_name("meta_embedding").is_some() {
            list_values(
                column(&b, "meta_embedding", path)?,
                dim,
                path,
                &mut cols.meta,
            )?;
        }
    }
    Ok(())
}
