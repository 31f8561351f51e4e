//! Converters from source layouts (Clotho, AudioCaps, a plain folder) to the dataset format.
//!
//! Converters stream: source rows are processed in chunks of one row group; audio files are read
//! and probed in parallel (rayon) and written immediately, so memory does not grow with the
//! dataset. Output is deterministic (no timestamps), so re-running is idempotent.

pub mod audiocaps;
pub mod clotho;
pub mod folder;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::audio::AudioStorage;
use crate::error::{DataError, Result};
use crate::schema::ClipRecord;
use crate::shard::{DatasetWriter, DEFAULT_CLIPS_PER_SHARD, ROW_GROUP_CLIPS};

/// One clip as described by a source layout, before its audio is read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceClip {
    /// Target split (train/val/test).
    pub split: String,
    /// Unique id.
    pub id: String,
    /// Audio file.
    pub audio: PathBuf,
    /// Captions (1..5).
    pub captions: Vec<String>,
    /// Open-set tags.
    pub keywords: Vec<String>,
    /// Closed-set tags.
    pub labels: Vec<String>,
    /// Sentence metadata.
    pub description: Option<String>,
    /// License.
    pub license: Option<String>,
}

/// What to do with clips whose audio file is missing, or whose audio does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingPolicy {
    /// Fail with an error naming the file.
    #[default]
    Fail,
    /// Count, log and skip.
    Skip,
}

/// Options every converter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrepareOptions {
    /// Clips per shard file (default [`DEFAULT_CLIPS_PER_SHARD`]).
    pub clips_per_shard: Option<usize>,
    /// Audio that does not decode: fail naming the file (default), or report it and go on.
    pub on_bad_audio: MissingPolicy,
    /// How the audio is stored (default: mono 16-bit wav resampled once to 32 kHz).
    pub audio: AudioStorage,
}

/// Where and how a converter writes its dataset.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The dataset folder.
    pub dir: &'a Path,
    /// Shard size, bad-audio policy and audio storage.
    pub opts: PrepareOptions,
    /// Called with the number of source clips each chunk processed.
    pub progress: &'a dyn Fn(u64),
}

impl<'a> Target<'a> {
    /// `dir` with the default options and no progress reports.
    pub fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            opts: PrepareOptions::default(),
            progress: &|_| {},
        }
    }
}

/// Result of a conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Clips written per split.
    pub written: std::collections::BTreeMap<String, u64>,
    /// Clips skipped because the audio file was missing.
    pub missing: Vec<String>,
    /// Clips skipped because the audio did not decode.
    pub undecodable: Vec<String>,
    /// Clips skipped because they had no captions.
    pub uncaptioned: Vec<String>,
}

impl ConvertSummary {
    /// Total clips written.
    pub fn total(&self) -> u64 {
        self.written.values().sum()
    }
}

enum Prepared {
    Ok(Box<ClipRecord>),
    Missing(String),
    Undecodable(DataError),
}

fn prepare_one(src: &SourceClip, audio: &AudioStorage) -> Prepared {
    let bytes = match std::fs::read(&src.audio) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Prepared::Missing(src.audio.display().to_string())
        }
        Err(e) => return Prepared::Undecodable(DataError::io(&src.audio, e)),
    };
    let name = src
        .audio
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let origin = src.audio.display().to_string();
    match audio.store(bytes, &name, &origin) {
        Ok((blob, rate, duration_s)) => Prepared::Ok(Box::new(ClipRecord {
            id: src.id.clone(),
            audio: blob,
            captions: src.captions.clone(),
            keywords: src.keywords.clone(),
            labels: src.labels.clone(),
            description: src.description.clone(),
            sample_rate: rate as i32,
            duration_s,
            license: src.license.clone(),
        })),
        Err(e) => Prepared::Undecodable(e),
    }
}

/// Writes source clips to a dataset at `to`, chunk by chunk. Missing audio files follow
/// `missing`; audio that does not decode follows `to.opts.on_bad_audio`.
pub fn write_dataset<I>(
    to: &Target,
    name: &str,
    clips: I,
    missing: MissingPolicy,
) -> Result<ConvertSummary>
where
    I: Iterator<Item = Result<SourceClip>>,
{
    let (opts, progress) = (&to.opts, to.progress);
    let per_shard = opts.clips_per_shard.unwrap_or(DEFAULT_CLIPS_PER_SHARD);
    let mut w = DatasetWriter::create(to.dir, name, per_shard)?;
    w.set_audio(opts.audio);
    let mut sum = ConvertSummary::default();
    let mut chunk: Vec<SourceClip> = Vec::with_capacity(ROW_GROUP_CLIPS);
    let mut clips = clips.peekable();
    while clips.peek().is_some() {
        chunk.clear();
        while chunk.len() < ROW_GROUP_CLIPS {
            match clips.next() {
                Some(c) => chunk.push(c?),
                None => break,
            }
        }
        let prepared: Vec<Prepared> = chunk
            .par_iter()
            .map(|c| prepare_one(c, &opts.audio))
            .collect();
        for (src, p) in chunk.iter().zip(prepared) {
            handle(&mut w, &mut sum, src, p, (missing, opts.on_bad_audio))?;
        }
        progress(chunk.len() as u64);
    }
    w.finish()?;
    Ok(sum)
}

/// Writes clips listed up front (a missing audio file is an error) to a dataset at `to`.
fn write_listed(to: &Target, name: &str, clips: Vec<SourceClip>) -> Result<ConvertSummary> {
    write_dataset(to, name, clips.into_iter().map(Ok), MissingPolicy::Fail)
}

fn handle(
    w: &mut DatasetWriter,
    sum: &mut ConvertSummary,
    src: &SourceClip,
    p: Prepared,
    (missing, bad_audio): (MissingPolicy, MissingPolicy),
) -> Result<()> {
    if src.captions.is_empty() {
        tracing::warn!(clip = %src.id, "no captions; skipped");
        sum.uncaptioned.push(src.id.clone());
        return Ok(());
    }
    match (p, missing, bad_audio) {
        (Prepared::Ok(rec), _, _) => {
            w.push(&src.split, *rec)?;
            *sum.written.entry(src.split.clone()).or_default() += 1;
        }
        (Prepared::Missing(path), MissingPolicy::Skip, _) => {
            tracing::warn!(clip = %src.id, %path, "audio file missing; skipped");
            sum.missing.push(path);
        }
        (Prepared::Missing(path), MissingPolicy::Fail, _) => {
            return Err(DataError::BadSource {
                path: PathBuf::from(&path),
                line: 0,
                detail: format!(
                    "audio file of clip `{}` is missing; complete the download or remove the row",
                    src.id
                ),
            })
        }
        (Prepared::Undecodable(e), _, MissingPolicy::Skip) => {
            tracing::warn!(clip = %src.id, file = %src.audio.display(), "audio does not decode; skipped ({e})");
            sum.undecodable.push(src.audio.display().to_string());
        }
        (Prepared::Undecodable(e), _, MissingPolicy::Fail) => return Err(e),
    }
    Ok(())
}

/// Reads a text file that may be UTF-8 or ISO-8859-1 (decoded as windows-1252, its superset).
pub fn read_text_lossless(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let (s, _, _) = encoding_rs::WINDOWS_1252.decode(e.as_bytes());
            s.into_owned()
        }
    })
}

/// Reads a file that is known to be ISO-8859-1 (Clotho metadata).
pub fn read_latin1(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let (s, _, _) = encoding_rs::WINDOWS_1252.decode(&bytes);
    Ok(s.into_owned())
}

/// Parses CSV text with headers into rows of (line, header -> value).
pub fn csv_rows(
    text: &str,
    path: &Path,
) -> Result<Vec<(u64, std::collections::HashMap<String, String>)>> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| bad_csv(path, 1, e))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad_csv(path, e.position().map_or(0, |p| p.line()), e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let map = headers
            .iter()
            .cloned()
            .zip(rec.iter().map(str::to_string))
            .collect();
        out.push((line, map));
    }
    Ok(out)
}

/// Error for a malformed CSV.
pub fn bad_csv(path: &Path, line: u64, e: impl std::fmt::Display) -> DataError {
    DataError::BadSource {
        path: path.to_path_buf(),
        line,
        detail: format!("malformed CSV: {e}; check the file is the official one and not truncated"),
    }
}

/// Fetches a required column or errors naming file, line and column.
pub fn field<'a>(
    row: &'a std::collections::HashMap<String, String>,
    key: &str,
    path: &Path,
    line: u64,
) -> Result<&'a str> {
    row.get(key)
        .map(String::as_str)
        .ok_or_else(|| DataError::BadSource {
            path: path.to_path_buf(),
            line,
            detail: format!("missing column `{key}`; expected the official column layout"),
        })
}

/// Splits a tag list on `sep`, trimming and dropping empty entries.
pub fn split_tags(s: &str, sep: char) -> Vec<String> {
    s.split(sep)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Audio file extensions the converters pick up.
pub const AUDIO_EXTS: [&str; 5] = ["wav", "flac", "ogg", "mp3", "oga"];
