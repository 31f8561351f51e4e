//! Rewriting prepared datasets: read the shards of one or more datasets row group by row group,
//! transform each row, and write new shards plus a manifest with checksums. The output is built
//! in a temporary folder next to `out` and renamed into place only when complete, so a failure
//! leaves nothing half-written. `hr-data merge` ([`merge`]) and `hr-data prepare reencode`
//! ([`reencode`]) are built on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use std::cell::RefCell;

use crate::error::{DataError, Result};
use crate::manifest::{Manifest, SourceInfo};
use crate::schema::ClipRecord;
use crate::shard::{open_split, DatasetWriter, DEFAULT_CLIPS_PER_SHARD};
use crate::store::Store;

/// A prepared dataset read by a rewrite.
pub struct Source {
    /// Its name in the output (id prefixes, `--map` rules, the manifest's `sources`).
    pub name: String,
    /// Where it is.
    pub store: Store,
    /// Its manifest.
    pub manifest: Manifest,
    /// sha256 of its `manifest.json` (which names the sha256 of every shard).
    pub manifest_sha256: String,
}

impl Source {
    /// Opens the dataset at `root` (local path or URL) under `name` (default: its manifest's
    /// dataset name).
    pub fn open(root: &str, name: Option<&str>) -> Result<Source> {
        let store = Store::open(root)?;
        let (manifest, manifest_sha256) = Manifest::load_with_sha256(&store)?;
        Ok(Source {
            name: name.map_or_else(|| manifest.name.clone(), str::to_string),
            store,
            manifest,
            manifest_sha256,
        })
    }
}

/// `(source index, split, rows of one row group)` -> the rows to write.
pub type RowTransform<'a> = dyn FnMut(usize, &str, Vec<ClipRecord>) -> Result<Vec<ClipRecord>> + 'a;

/// What a rewrite does with the rows and the manifest.
pub struct Rewrite<'a> {
    /// `(source index, split, rows of one row group)` -> the rows to write.
    pub transform: &'a mut RowTransform<'a>,
    /// Amends the manifest before the dataset is moved into place.
    pub amend: &'a mut dyn FnMut(&mut Manifest),
    /// Called with the number of rows read so far, per row group.
    pub progress: &'a dyn Fn(u64),
    /// Other files of the new dataset, `(path relative to its root, bytes)`.
    pub files: Vec<(String, bytes::Bytes)>,
}

/// Reads every split of every source (split by split, source by source, in shard order) and
/// writes the transformed rows to a new dataset `name` at `out`, which must not exist yet.
/// Returns the written manifest.
pub fn rewrite(
    sources: &[Source],
    out: &Path,
    name: &str,
    clips_per_shard: Option<usize>,
    how: Rewrite,
) -> Result<Manifest> {
    if out.exists() {
        return Err(DataError::Config(format!(
            "{} exists; remove it or choose another output folder",
            out.display()
        )));
    }
    let tmp = temp_sibling(out)?;
    let result = write_into(
        sources,
        &tmp,
        name,
        clips_per_shard,
        how.transform,
        how.progress,
    )
    .and_then(|mut m| {
        (how.amend)(&mut m);
        for (rel, bytes) in &how.files {
            hr_core::write_atomic(&tmp.join(rel), bytes)?;
        }
        m.write_atomic(&tmp)?;
        Ok(m)
    });
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, out).map_err(|e| DataError::io(out, e))?;
    Ok(manifest)
}

/// `.NAME.tmp-PID` beside `out`.
fn temp_sibling(out: &Path) -> Result<PathBuf> {
    let file = out
        .file_name()
        .ok_or_else(|| DataError::Config(format!("{} has no folder name", out.display())))?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        file.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    }
    Ok(tmp)
}

fn write_into(
    sources: &[Source],
    dir: &Path,
    name: &str,
    clips_per_shard: Option<usize>,
    transform: &mut RowTransform,
    progress: &dyn Fn(u64),
) -> Result<Manifest> {
    let mut w = DatasetWriter::create(
        dir,
        name,
        clips_per_shard.unwrap_or(DEFAULT_CLIPS_PER_SHARD),
    )?;
    for split in split_names(sources) {
        for (i, s) in sources.iter().enumerate() {
            if !s.manifest.splits.contains_key(&split) {
                continue;
            }
            for reader in open_split(&s.store, &s.manifest, &split, true)? {
                for rg in 0..reader.row_group_rows().len() {
                    let rows = reader.read_row_group(rg)?;
                    progress(rows.len() as u64);
                    for r in transform(i, &split, rows)? {
                        w.push(&split, r)?;
                    }
                }
            }
        }
    }
    w.finish()
}

/// Every split name of the sources, sorted.
fn split_names(sources: &[Source]) -> BTreeSet<String> {
    sources
        .iter()
        .flat_map(|s| s.manifest.splits.keys().cloned())
        .collect()
}

/// A list-valued metadata column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagColumn {
    /// `keywords` (open-set tags).
    Keywords,
    /// `labels` (closed-set tags).
    Labels,
}

impl TagColumn {
    fn get_mut(self, r: &mut ClipRecord) -> &mut Vec<String> {
        match self {
            TagColumn::Keywords => &mut r.keywords,
            TagColumn::Labels => &mut r.labels,
        }
    }

    /// Parses `keywords` or `labels`.
    pub fn parse(s: &str) -> Result<TagColumn> {
        match s {
            "keywords" => Ok(TagColumn::Keywords),
            "labels" => Ok(TagColumn::Labels),
            _ => Err(DataError::Config(format!(
                "unknown metadata column {s:?} (keywords, labels)"
            ))),
        }
    }
}

/// `SOURCE:FROM=TO`: in rows of SOURCE, the tags of column FROM are appended to column TO
/// (e.g. `audiocaps:labels=keywords` puts AudioCaps' AudioSet labels where Clotho has its
/// keywords, for the combined hybrid row of Table I).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The source's name.
    pub source: String,
    /// Column read.
    pub from: TagColumn,
    /// Column appended to.
    pub to: TagColumn,
}

impl ColumnMap {
    /// Parses `SOURCE:FROM=TO`.
    pub fn parse(s: &str) -> Result<ColumnMap> {
        let bad = || {
            DataError::Config(format!(
                "--map {s:?}: expected SOURCE:FROM=TO, e.g. audiocaps:labels=keywords"
            ))
        };
        let (source, cols) = s.split_once(':').ok_or_else(bad)?;
        let (from, to) = cols.split_once('=').ok_or_else(bad)?;
        Ok(ColumnMap {
            source: source.to_string(),
            from: TagColumn::parse(from)?,
            to: TagColumn::parse(to)?,
        })
    }
}

/// Options of [`merge`].
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Name of the merged dataset (default: the sources' names joined by `+`).
    pub name: Option<String>,
    /// Keep clip ids as they are instead of prefixing them with `SOURCE/`.
    pub keep_ids: bool,
    /// Metadata column mappings.
    pub maps: Vec<ColumnMap>,
    /// Clips per output shard.
    pub clips_per_shard: Option<usize>,
}

/// What a merge wrote.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    /// The written manifest.
    pub manifest: Manifest,
    /// Per source: rows per split.
    pub sources: Vec<SourceInfo>,
}

/// The union of prepared datasets, split by split, into a new dataset at `out`. Clip ids become
/// `SOURCE/id` (traceable; `keep_ids` keeps them) and must be unique over the union; the
/// sources must share a schema version; `opts.maps` move tags between columns. The manifest
/// records every source with the sha256 of its manifest. Nothing is written on error.
pub fn merge(
    sources: &[Source],
    roots: &[String],
    out: &Path,
    opts: &MergeOptions,
) -> Result<MergeSummary> {
    check_sources(sources, opts)?;
    let prefix = |i: usize| match opts.keep_ids {
        true => String::new(),
        false => format!("{}/", sources[i].name),
    };
    check_unique_ids(sources, &prefix)?;
    let counts = RefCell::new(vec![BTreeMap::<String, u64>::new(); sources.len()]);
    let name = opts.name.clone().unwrap_or_else(|| {
        sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+")
    });
    let mut transform = |i: usize, split: &str, mut rows: Vec<ClipRecord>| {
        for r in &mut rows {
            r.id = format!("{}{}", prefix(i), r.id);
            for m in opts.maps.iter().filter(|m| m.source == sources[i].name) {
                let tags = m.from.get_mut(r).clone();
                m.to.get_mut(r).extend(tags);
            }
        }
        *counts.borrow_mut()[i].entry(split.to_string()).or_default() += rows.len() as u64;
        Ok(rows)
    };
    let mut amend = |m: &mut Manifest| {
        // The storage is known when every source records the same.
        let first = sources.first().and_then(|s| s.manifest.audio);
        m.audio = first.filter(|_| sources.iter().all(|s| s.manifest.audio == first));
        m.sources = sources
            .iter()
            .enumerate()
            .map(|(i, s)| SourceInfo {
                name: s.name.clone(),
                root: roots
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| s.store.root().to_string()),
                manifest_sha256: s.manifest_sha256.clone(),
                id_prefix: prefix(i),
                rows: counts.borrow()[i].clone(),
            })
            .collect();
    };
    let how = Rewrite {
        transform: &mut transform,
        amend: &mut amend,
        progress: &|_| {},
        files: Vec::new(),
    };
    let manifest = rewrite(sources, out, &name, opts.clips_per_shard, how)?;
    Ok(MergeSummary {
        sources: manifest.sources.clone(),
        manifest,
    })
}

/// Distinct names, one schema version, mappings naming existing sources.
fn check_sources(sources: &[Source], opts: &MergeOptions) -> Result<()> {
    if sources.len() < 2 {
        return Err(DataError::Config(
            "merge needs at least two datasets".into(),
        ));
    }
    let mut names = BTreeSet::new();
    for s in sources {
        if !names.insert(s.name.as_str()) {
            return Err(DataError::Config(format!(
                "two datasets are named `{}`; name them apart with --name ROOT=NAME",
                s.name
            )));
        }
    }
    let v0 = sources[0].manifest.schema_version;
    if let Some(s) = sources.iter().find(|s| s.manifest.schema_version != v0) {
        return Err(DataError::Config(format!(
            "schema versions differ: `{}` has {v0}, `{}` ({}) has {}; re-prepare the older dataset",
            sources[0].name,
            s.name,
            s.store.root(),
            s.manifest.schema_version
        )));
    }
    if let Some(m) = opts
        .maps
        .iter()
        .find(|m| !names.contains(m.source.as_str()))
    {
        return Err(DataError::Config(format!(
            "--map names `{}`, which is not one of the datasets ({names:?})",
            m.source
        )));
    }
    Ok(())
}

/// Reads the id column of every source and refuses ids that would appear twice.
fn check_unique_ids(sources: &[Source], prefix: &dyn Fn(usize) -> String) -> Result<()> {
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        for split in s.manifest.splits.keys() {
            for reader in open_split(&s.store, &s.manifest, split, false)? {
                for batch in reader.read(None, Some(&["id"]))? {
                    let view = crate::schema::BatchView::new(&batch, reader.name(), 0, &["id"])?;
                    for r in 0..batch.num_rows() {
                        let id = format!("{}{}", prefix(i), view.id(r)?);
                        let here = (s.name.clone(), split.clone());
                        if let Some((src, sp)) = seen.insert(id.clone(), here) {
                            return Err(DataError::Config(format!(
                                "clip id `{id}` is in `{src}` ({sp}) and in `{}` ({split}); merge with prefixed ids (without --keep-ids) or remove the duplicate",
                                s.name
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes the dataset `source` again at `out` with its audio stored as `audio` says (e.g.
/// resampled once to 32 kHz as 16-bit wav), rows and text unchanged; each row group's clips are
/// re-encoded in parallel. The new manifest records `audio`, the new shards' sha256 and the
/// source with the sha256 of its manifest. A clip that does not decode stops the conversion,
/// naming its shard and row.
pub fn reencode(
    source: &Source,
    root: &str,
    out: &Path,
    audio: crate::audio::AudioStorage,
    clips_per_shard: Option<usize>,
    progress: &dyn Fn(u64),
) -> Result<Manifest> {
    use rayon::prelude::*;
    let counts = RefCell::new(BTreeMap::<String, u64>::new());
    let mut transform = |_: usize, split: &str, rows: Vec<ClipRecord>| {
        *counts.borrow_mut().entry(split.to_string()).or_default() += rows.len() as u64;
        rows.into_par_iter()
            .map(|mut r| {
                let origin = format!("{split} clip `{}` ({})", r.id, r.audio.path);
                let bytes = std::mem::take(&mut r.audio.bytes);
                let (blob, rate, dur) = audio.store(bytes, &r.audio.path, &origin)?;
                r.audio = blob;
                r.sample_rate = rate as i32;
                r.duration_s = dur;
                Ok(r)
            })
            .collect::<Result<Vec<_>>>()
    };
    let mut amend = |m: &mut Manifest| {
        m.tokenizer = source.manifest.tokenizer.clone();
        m.audio = Some(audio);
        m.sources = vec![SourceInfo {
            name: source.name.clone(),
            root: root.to_string(),
            manifest_sha256: source.manifest_sha256.clone(),
            id_prefix: String::new(),
            rows: counts.borrow().clone(),
        }];
    };
    let files = match &source.manifest.tokenizer {
        Some(rel) => vec![(rel.clone(), source.store.get(rel)?)],
        None => Vec::new(),
    };
    let how = Rewrite {
        transform: &mut transform,
        amend: &mut amend,
        progress,
        files,
    };
    let name = source.manifest.name.clone();
    rewrite(
        std::slice::from_ref(source),
        out,
        &name,
        clips_per_shard,
        how,
    )
}
