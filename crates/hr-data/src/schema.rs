//! The dataset schema (one format for every source) and conversions between rows and Arrow.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Float32Array, Int32Array, ListArray, ListBuilder,
    RecordBatch, StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::error::{DataError, Result};

/// Version of the on-disk schema written into manifest.json.
pub const SCHEMA_VERSION: u32 = 1;

/// Names of the columns, in order.
pub const COLUMNS: [&str; 9] = [
    "id",
    "audio",
    "captions",
    "keywords",
    "labels",
    "description",
    "sample_rate",
    "duration_s",
    "license",
];

/// Encoded audio of one clip: the layout of Hugging Face `datasets`' Audio feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioBlob {
    /// The encoded file bytes (wav, flac, ogg/vorbis or mp3).
    pub bytes: Vec<u8>,
    /// The original file name (used as a format hint).
    pub path: String,
}

/// One row of the dataset: a clip with its captions and metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClipRecord {
    /// Unique clip id.
    pub id: String,
    /// Encoded audio.
    pub audio: AudioBlob,
    /// 1..5 captions.
    pub captions: Vec<String>,
    /// Open-set tags (may be empty).
    pub keywords: Vec<String>,
    /// Closed-set tags (may be empty).
    pub labels: Vec<String>,
    /// Full-sentence metadata.
    pub description: Option<String>,
    /// Sample rate of the encoded audio in Hz.
    pub sample_rate: i32,
    /// Duration in seconds.
    pub duration_s: f32,
    /// License string.
    pub license: Option<String>,
}

fn utf8_list_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    )
}

fn audio_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

/// The Arrow schema of a shard.
pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("audio", DataType::Struct(audio_fields()), false),
        utf8_list_field("captions"),
        utf8_list_field("keywords"),
        utf8_list_field("labels"),
        Field::new("description", DataType::Utf8, true),
        Field::new("sample_rate", DataType::Int32, false),
        Field::new("duration_s", DataType::Float32, false),
        Field::new("license", DataType::Utf8, true),
    ]))
}

fn list_array(rows: &[&Vec<String>]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in row.iter() {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Converts clips into one Arrow record batch with [`arrow_schema`].
pub fn to_record_batch(clips: &[ClipRecord]) -> Result<RecordBatch> {
    let ids = StringArray::from_iter_values(clips.iter().map(|c| c.id.as_str()));
    let mut bytes = BinaryBuilder::new();
    for c in clips {
        bytes.append_value(&c.audio.bytes);
    }
    let paths = StringArray::from_iter_values(clips.iter().map(|c| c.audio.path.as_str()));
    let audio = StructArray::new(
        audio_fields(),
        vec![Arc::new(bytes.finish()) as ArrayRef, Arc::new(paths)],
        None,
    );
    let caps: Vec<&Vec<String>> = clips.iter().map(|c| &c.captions).collect();
    let kws: Vec<&Vec<String>> = clips.iter().map(|c| &c.keywords).collect();
    let labels: Vec<&Vec<String>> = clips.iter().map(|c| &c.labels).collect();
    let desc: StringArray = clips.iter().map(|c| c.description.as_deref()).collect();
    let sr = Int32Array::from_iter_values(clips.iter().map(|c| c.sample_rate));
    let dur = Float32Array::from_iter_values(clips.iter().map(|c| c.duration_s));
    let lic: StringArray = clips.iter().map(|c| c.license.as_deref()).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(audio),
        list_array(&caps),
        list_array(&kws),
        list_array(&labels),
        Arc::new(desc),
        Arc::new(sr),
        Arc::new(dur),
        Arc::new(lic),
    ];
    RecordBatch::try_new(arrow_schema(), columns).map_err(|e| DataError::Config(e.to_string()))
}

/// Column accessors over one record batch, validated against the schema.
///
/// Columns that were not projected are `None`.
pub struct BatchView<'a> {
    shard: &'a str,
    /// Row offset of this batch inside the shard (for error messages).
    pub row_offset: usize,
    id: Option<&'a StringArray>,
    audio_bytes: Option<&'a BinaryArray>,
    audio_path: Option<&'a StringArray>,
    captions: Option<&'a ListArray>,
    keywords: Option<&'a ListArray>,
    labels: Option<&'a ListArray>,
    description: Option<&'a StringArray>,
    sample_rate: Option<&'a Int32Array>,
    duration_s: Option<&'a Float32Array>,
    license: Option<&'a StringArray>,
}

fn wrong(shard: &str, column: &str, detail: impl Into<String>) -> DataError {
    DataError::WrongSchema {
        shard: shard.to_string(),
        column: column.to_string(),
        detail: detail.into(),
        version: SCHEMA_VERSION,
    }
}

/// Field `name` of the `audio` struct column as a `T` (`kind`: "a binary", "a utf8").
fn audio_field<'a, T: 'static>(
    s: &'a StructArray,
    shard: &str,
    (name, kind): (&str, &str),
) -> Result<&'a T> {
    s.column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            let column = format!("audio.{name}");
            wrong(shard, &column, format!("expected {kind} field `{name}`"))
        })
}

fn col<'a, T: 'static>(
    batch: &'a RecordBatch,
    shard: &str,
    name: &str,
    expected: &str,
) -> Result<Option<&'a T>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(a) => a.as_any().downcast_ref::<T>().map(Some).ok_or_else(|| {
            wrong(
                shard,
                name,
                format!("expected {expected}, found {}", a.data_type()),
            )
        }),
    }
}

fn list_col<'a>(batch: &'a RecordBatch, shard: &str, name: &str) -> Result<Option<&'a ListArray>> {
    let l = col::<ListArray>(batch, shard, name, "list<utf8>")?;
    if let Some(l) = l {
        if l.values().data_type() != &DataType::Utf8 {
            return Err(wrong(
                shard,
                name,
                format!("expected list<utf8>, found {}", l.data_type()),
            ));
        }
    }
    Ok(l)
}

impl<'a> BatchView<'a> {
    /// Validates the columns present in `batch` and builds typed accessors.
    ///
    /// `required` lists the columns that must be present.
    pub fn new(
        batch: &'a RecordBatch,
        shard: &'a str,
        row_offset: usize,
        required: &[&str],
    ) -> Result<Self> {
        for name in required {
            if batch.column_by_name(name).is_none() {
                return Err(wrong(shard, name, "column is missing"));
            }
        }
        let (audio_bytes, audio_path) =
            match col::<StructArray>(batch, shard, "audio", "struct<bytes: binary, path: utf8>")? {
                None => (None, None),
                Some(s) => {
                    let b = audio_field::<BinaryArray>(s, shard, ("bytes", "a binary"))?;
                    let p = audio_field::<StringArray>(s, shard, ("path", "a utf8"))?;
                    (Some(b), Some(p))
                }
            };
        Ok(BatchView {
            shard,
            row_offset,
            id: col(batch, shard, "id", "utf8")?,
            audio_bytes,
            audio_path,
            captions: list_col(batch, shard, "captions")?,
            keywords: list_col(batch, shard, "keywords")?,
            labels: list_col(batch, shard, "labels")?,
            description: col(batch, shard, "description", "utf8")?,
            sample_rate: col(batch, shard, "sample_rate", "int32")?,
            duration_s: col(batch, shard, "duration_s", "float32")?,
            license: col(batch, shard, "license", "utf8")?,
        })
    }

    fn bad(&self, row: usize, column: &str, detail: &str) -> DataError {
        DataError::BadRow {
            shard: self.shard.to_string(),
            row: self.row_offset + row,
            column: column.to_string(),
            detail: detail.to_string(),
        }
    }

    fn strings(&self, l: Option<&ListArray>, row: usize) -> Vec<String> {
        let Some(l) = l else { return Vec::new() };
        if l.is_null(row) {
            return Vec::new();
        }
        let v = l.value(row);
        let Some(s) = v.as_any().downcast_ref::<StringArray>() else {
            return Vec::new();
        };
        s.iter().flatten().map(str::to_string).collect()
    }

    /// The clip id of `row`.
    pub fn id(&self, row: usize) -> Result<String> {
        match self.id {
            Some(a) if !a.is_null(row) => Ok(a.value(row).to_string()),
            _ => Err(self.bad(row, "id", "null or missing id")),
        }
    }

    /// Captions of `row`; errors when empty.
    pub fn captions(&self, row: usize) -> Result<Vec<String>> {
        let c = self.strings(self.captions, row);
        if c.is_empty() {
            return Err(self.bad(
                row,
                "captions",
                "empty caption list (every clip needs 1..5 captions)",
            ));
        }
        Ok(c)
    }

    /// Keywords of `row`.
    pub fn keywords(&self, row: usize) -> Vec<String> {
        self.strings(self.keywords, row)
    }

    /// Labels of `row`.
    pub fn labels(&self, row: usize) -> Vec<String> {
        self.strings(self.labels, row)
    }

    /// Description of `row`.
    pub fn description(&self, row: usize) -> Option<String> {
        self.description
            .filter(|a| !a.is_null(row))
            .map(|a| a.value(row).to_string())
    }

    /// Audio blob of `row`; errors when absent.
    pub fn audio(&self, row: usize) -> Result<AudioBlob> {
        let Some(b) = self.audio_bytes.filter(|a| !a.is_null(row)) else {
            return Err(self.bad(row, "audio.bytes", "null or missing audio bytes"));
        };
        let path = self
            .audio_path
            .filter(|a| !a.is_null(row))
            .map(|a| a.value(row).to_string())
            .unwrap_or_default();
        Ok(AudioBlob {
            bytes: b.value(row).to_vec(),
            path,
        })
    }

    /// Sample rate of `row`'s audio in Hz (0 when unknown).
    pub fn sample_rate(&self, row: usize) -> i32 {
        self.sample_rate
            .filter(|a| !a.is_null(row))
            .map_or(0, |a| a.value(row))
    }

    /// Duration of `row`'s audio in seconds (0 when unknown).
    pub fn duration_s(&self, row: usize) -> f32 {
        self.duration_s
            .filter(|a| !a.is_null(row))
            .map_or(0.0, |a| a.value(row))
    }

    /// Full record of `row` (all columns must have been read).
    pub fn record(&self, row: usize) -> Result<ClipRecord> {
        Ok(ClipRecord {
            id: self.id(row)?,
            audio: self.audio(row)?,
            captions: self.captions(row)?,
            keywords: self.keywords(row),
            labels: self.labels(row),
            description: self.description(row),
            sample_rate: self.sample_rate(row),
            duration_s: self.duration_s(row),
            license: self
                .license
                .filter(|a| !a.is_null(row))
                .map(|a| a.value(row).to_string()),
        })
    }
}
