//! `hr-data inspect` (summary of a dataset) and `hr-data verify` (hashes, schema, every audio decodes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rayon::prelude::*;

use crate::audio::decode_mono;
use crate::error::{DataError, Result};
use crate::manifest::Manifest;
use crate::schema::BatchView;
use crate::shard::ShardReader;
use crate::store::Store;

/// Per-split statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitStats {
    /// Clips.
    pub clips: u64,
    /// Captions (= training items).
    pub captions: u64,
    /// Mean words per caption.
    pub mean_caption_words: f64,
    /// Mean keywords per clip.
    pub mean_keywords: f64,
    /// Clips without keywords.
    pub clips_without_keywords: u64,
    /// Mean labels per clip.
    pub mean_labels: f64,
    /// Total duration in hours.
    pub hours: f64,
    /// Most frequent keywords with counts.
    pub top_keywords: Vec<(String, u64)>,
}

/// Summarises a dataset: manifest, schema, counts, text statistics and `sample_rows` example rows.
pub fn inspect(store: &Store, sample_rows: usize) -> Result<String> {
    let manifest = Manifest::load(store)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dataset `{}` at {} (schema v{}, created by {})",
        manifest.name,
        store.root(),
        manifest.schema_version,
        manifest.created_by
    );
    if let Some(t) = &manifest.tokenizer {
        let _ = writeln!(out, "tokenizer: {t}");
    }
    for (split, shards) in &manifest.splits {
        let bytes: u64 = shards.iter().map(|s| s.bytes).sum();
        let _ = writeln!(
            out,
            "split {split}: {} shards, {} rows, {:.1} MiB",
            shards.len(),
            manifest.rows(split),
            bytes as f64 / (1 << 20) as f64
        );
        let (stats, rows) = split_stats(store, &manifest, split, sample_rows)?;
        let _ = writeln!(
            out,
            "  clips {}  captions {}  words/caption {:.1}  keywords/clip {:.2} ({} clips without)  labels/clip {:.2}  hours {:.2}",
            stats.clips,
            stats.captions,
            stats.mean_caption_words,
            stats.mean_keywords,
            stats.clips_without_keywords,
            stats.mean_labels,
            stats.hours
        );
        let top: Vec<String> = stats
            .top_keywords
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        let _ = writeln!(out, "  top keywords: {}", top.join(", "));
        for r in rows {
            let _ = writeln!(out, "  {r}");
        }
    }
    if let Some(first) = manifest.splits.values().flatten().next() {
        let reader = ShardReader::open(store, first, false)?;
        let _ = writeln!(out, "schema of {}:", first.path);
        for f in reader.arrow_schema().fields() {
            let _ = writeln!(out, "  {}: {}", f.name(), f.data_type());
        }
    }
    Ok(out)
}

/// Computes statistics of one split (text columns only) and formats a few example rows.
pub fn split_stats(
    store: &Store,
    manifest: &Manifest,
    split: &str,
    sample_rows: usize,
) -> Result<(SplitStats, Vec<String>)> {
    let mut s = SplitStats::default();
    let mut words = 0u64;
    let mut kw_total = 0u64;
    let mut labels_total = 0u64;
    let mut seconds = 0f64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = Vec::new();
    let cols = crate::loader::META_COLUMNS;
    for info in manifest.split(split)? {
        let reader = ShardReader::open(store, info, false)?;
        let mut offset = 0;
        for batch in reader.read(None, Some(&cols))? {
            let view = BatchView::new(&batch, reader.name(), offset, &["id", "captions"])?;
            let dur = batch.column_by_name("duration_s").and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow::array::Float32Array>()
                    .cloned()
            });
            for r in 0..batch.num_rows() {
                let caps = view.captions(r)?;
                let kws = view.keywords(r);
                s.clips += 1;
                s.captions += caps.len() as u64;
                words += caps
                    .iter()
                    .map(|c| c.split_whitespace().count() as u64)
                    .sum::<u64>();
                kw_total += kws.len() as u64;
                s.clips_without_keywords += kws.is_empty() as u64;
                labels_total += view.labels(r).len() as u64;
                seconds += dur.as_ref().map_or(0.0, |d| d.value(r) as f64);
                for k in &kws {
                    *counts.entry(k.to_lowercase()).or_default() += 1;
                }
                if rows.len() < sample_rows {
                    rows.push(format!(
                        "{} | {} | keywords: {} | labels: {} | {}",
                        view.id(r)?,
                        caps.first().cloned().unwrap_or_default(),
                        kws.join("; "),
                        view.labels(r).join("; "),
                        view.description(r).unwrap_or_default()
                    ));
                }
            }
            offset += batch.num_rows();
        }
    }
    s.mean_caption_words = words as f64 / s.captions.max(1) as f64;
    s.mean_keywords = kw_total as f64 / s.clips.max(1) as f64;
    s.mean_labels = labels_total as f64 / s.clips.max(1) as f64;
    s.hours = seconds / 3600.0;
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    s.top_keywords = top;
    Ok((s, rows))
}

/// Outcome of `verify`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Shards checked.
    pub shards: usize,
    /// Clips whose audio decoded.
    pub clips_ok: u64,
    /// Every problem found (each names the shard and row).
    pub failures: Vec<String>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Verifies every shard: sha256 and size against the manifest, schema, rows, and that every audio
/// blob decodes. Problems are collected rather than stopping at the first.
pub fn verify(store: &Store, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
    let manifest = Manifest::load(store)?;
    let mut rep = VerifyReport::default();
    if let Some(t) = &manifest.tokenizer {
        if let Err(e) = store.get(t).and_then(|b| {
            Ok(crate::text::TextTokenizer::from_bytes(
                &b,
                t,
                crate::text::MAX_TOKENS,
            )?)
        }) {
            rep.failures.push(e.to_string());
        }
    }
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for info in manifest.splits.values().flatten() {
        rep.shards += 1;
        let reader = match ShardReader::open(store, info, true) {
            Ok(r) => r,
            Err(e) => {
                rep.failures.push(e.to_string());
                continue;
            }
        };
        if reader.num_rows() as u64 != info.rows {
            rep.failures.push(format!(
                "shard {}: manifest says {} rows, file has {}; re-run `hr-data prepare`",
                info.path,
                info.rows,
                reader.num_rows()
            ));
        }
        let mut offset = 0usize;
        for rg in 0..reader.row_group_rows().len() {
            verify_group(&reader, rg, offset, &mut rep, &mut seen, progress);
            offset += reader.row_group_rows()[rg];
        }
    }
    Ok(rep)
}

fn verify_group(
    reader: &ShardReader,
    rg: usize,
    offset: usize,
    rep: &mut VerifyReport,
    seen: &mut std::collections::HashMap<String, String>,
    progress: &(dyn Fn(u64) + Sync),
) {
    let records = match reader.read_row_group(rg) {
        Ok(r) => r,
        Err(e) => {
            rep.failures.push(e.to_string());
            return;
        }
    };
    let results: Vec<std::result::Result<(), DataError>> = records
        .par_iter()
        .enumerate()
        .map(|(i, rec)| {
            let origin = format!(
                "shard {}, row {} (clip `{}`)",
                reader.name(),
                offset + i,
                rec.id
            );
            decode_mono(&rec.audio.bytes, &rec.audio.path, &origin).map(|_| ())
        })
        .collect();
    for (i, rec) in records.iter().enumerate() {
        let here = format!("shard {}, row {}", reader.name(), offset + i);
        if let Some(first) = seen.insert(rec.id.clone(), here.clone()) {
            rep.failures.push(format!(
                "{here}: clip id `{}` already used at {first}; ids must be unique across the dataset",
                rec.id
            ));
        }
    }
    for r in results {
        match r {
            Ok(()) => rep.clips_ok += 1,
            Err(e) => rep.failures.push(e.to_string()),
        }
    }
    progress(records.len() as u64);
}
