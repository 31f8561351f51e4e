//! "Bring your own data": any folder of audio files with an optional sidecar of captions and tags.
//!
//! Sidecars (first found): `ROOT/metadata.jsonl` with objects
//! `{"file_name", "captions" | "caption", "keywords", "labels", "description", "split", "license"}`,
//! or `ROOT/captions.csv` with columns `file_name`, `caption` or `caption_1..caption_5`,
//! `keywords` and `labels` (`;`-separated), `description`, `split`, `license`.
//! Without a sidecar entry a clip has no captions and is skipped (reported). The split is the
//! sidecar's `split`, else the first directory level when it is train/val/test (or the Clotho
//! names), else `train`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::convert::{
    csv_rows, field, read_text_lossless, split_tags, write_listed, ConvertSummary, SourceClip,
    Target, AUDIO_EXTS,
};
use crate::error::{DataError, Result};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct SidecarRow {
    file_name: String,
    captions: Vec<String>,
    caption: Option<String>,
    keywords: Vec<String>,
    labels: Vec<String>,
    description: Option<String>,
    split: Option<String>,
    license: Option<String>,
}

fn read_jsonl(path: &Path) -> Result<HashMap<String, SidecarRow>> {
    let text = read_text_lossless(path)?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row: SidecarRow = serde_json::from_str(line).map_err(|e| DataError::BadSource {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            detail: format!("invalid JSON: {e}"),
        })?;
        if let Some(c) = row.caption.take() {
            row.captions.insert(0, c);
        }
        out.insert(row.file_name.clone(), row);
    }
    Ok(out)
}

fn read_csv(path: &Path) -> Result<HashMap<String, SidecarRow>> {
    let text = read_text_lossless(path)?;
    let mut out = HashMap::new();
    for (line, row) in csv_rows(&text, path)? {
        let get = |k: &str| row.get(k).filter(|s| !s.is_empty()).cloned();
        let mut captions: Vec<String> = get("caption").into_iter().collect();
        captions.extend((1..=5).filter_map(|k| get(&format!("caption_{k}"))));
        let name = field(&row, "file_name", path, line)?.to_string();
        out.insert(
            name.clone(),
            SidecarRow {
                file_name: name,
                captions,
                caption: None,
                keywords: get("keywords")
                    .map(|s| split_tags(&s, ';'))
                    .unwrap_or_default(),
                labels: get("labels")
                    .map(|s| split_tags(&s, ';'))
                    .unwrap_or_default(),
                description: get("description"),
                split: get("split"),
                license: get("license"),
            },
        );
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| AUDIO_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn split_from_dir(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    match first {
        "train" | "development" => "train",
        "val" | "valid" | "validation" => "val",
        "test" | "evaluation" | "eval" => "test",
        _ => "train",
    }
    .to_string()
}

/// Lists the folder's clips joined with the sidecar, in sorted path order.
pub fn clips(root: &Path) -> Result<Vec<SourceClip>> {
    let sidecar = if root.join("metadata.jsonl").exists() {
        read_jsonl(&root.join("metadata.jsonl"))?
    } else if root.join("captions.csv").exists() {
        read_csv(&root.join("captions.csv"))?
    } else {
        HashMap::new()
    };
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let base = rel
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let row = sidecar
            .get(&rel_s)
            .or_else(|| sidecar.get(&base))
            .cloned()
            .unwrap_or_default();
        out.push(SourceClip {
            split: row.split.clone().unwrap_or_else(|| split_from_dir(&rel)),
            id: rel_s,
            audio: path,
            captions: row.captions.into_iter().take(5).collect(),
            keywords: row.keywords,
            labels: row.labels,
            description: row.description,
            license: row.license,
        });
    }
    Ok(out)
}

/// Converts a folder to a dataset at `to`.
pub fn convert(root: &Path, to: &Target) -> Result<ConvertSummary> {
    write_listed(to, "folder", clips(root)?)
}
