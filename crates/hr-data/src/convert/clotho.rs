//! ClothoV2: `clotho_captions_{development,validation,evaluation}.csv`, the ISO-8859-1
//! `clotho_metadata_*.csv` (`;`-separated keywords) and the wav folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::convert::{
    csv_rows, field, read_latin1, read_text_lossless, split_tags, write_listed, ConvertSummary,
    SourceClip, Target,
};
use crate::error::{DataError, Result};

/// (Clotho name, our split name).
pub const SPLITS: [(&str, &str); 3] = [
    ("development", "train"),
    ("validation", "val"),
    ("evaluation", "test"),
];

fn audio_dir(root: &Path, name: &str) -> PathBuf {
    for cand in [name.to_string(), format!("clotho_audio_{name}")] {
        let p = root.join(&cand);
        if p.is_dir() {
            return p;
        }
    }
    root.join(name)
}

/// Reads the source clips of one Clotho split.
///
/// The `description` column holds caption 2 mod n (a fixed full-sentence metadata for the
/// `description` kind); the loader's `full_sentence` mode derives its metadata from the
/// captions themselves ((k+1) mod n in training, see `FsEval` for evaluation).
pub fn split_clips(root: &Path, clotho: &str, split: &str) -> Result<Vec<SourceClip>> {
    let cap_path = root.join(format!("clotho_captions_{clotho}.csv"));
    let meta_path = root.join(format!("clotho_metadata_{clotho}.csv"));
    if !cap_path.exists() {
        return Err(DataError::BadSource {
            path: cap_path,
            line: 0,
            detail: "Clotho captions CSV not found; download ClothoV2 and point --source at the folder holding the CSVs".into(),
        });
    }
    let meta: HashMap<String, (Vec<String>, Option<String>)> = if meta_path.exists() {
        let text = read_latin1(&meta_path)?;
        let mut m = HashMap::new();
        for (line, row) in csv_rows(&text, &meta_path)? {
            let name = field(&row, "file_name", &meta_path, line)?.to_string();
            let kws = split_tags(field(&row, "keywords", &meta_path, line)?, ';');
            let license = row.get("license").filter(|s| !s.is_empty()).cloned();
            m.insert(name, (kws, license));
        }
        m
    } else {
        tracing::warn!(path = %meta_path.display(), "metadata CSV missing; keywords will be empty");
        HashMap::new()
    };
    let text = read_text_lossless(&cap_path)?;
    let dir = audio_dir(root, clotho);
    let mut out = Vec::new();
    for (line, row) in csv_rows(&text, &cap_path)? {
        let name = field(&row, "file_name", &cap_path, line)?.to_string();
        let captions: Vec<String> = (1..=5)
            .filter_map(|k| row.get(&format!("caption_{k}")))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if captions.is_empty() {
            return Err(DataError::BadSource {
                path: cap_path.clone(),
                line,
                detail: format!("clip `{name}` has no captions (columns caption_1..caption_5)"),
            });
        }
        let (keywords, license) = meta.get(&name).cloned().unwrap_or_default();
        let description = Some(captions[2 % captions.len()].clone());
        out.push(SourceClip {
            split: split.to_string(),
            id: name.clone(),
            audio: dir.join(&name),
            captions,
            keywords,
            labels: Vec::new(),
            description,
            license,
        });
    }
    Ok(out)
}

/// Converts a ClothoV2 folder to a dataset at `to`.
pub fn convert(root: &Path, to: &Target) -> Result<ConvertSummary> {
    let mut all = Vec::new();
    for (clotho, split) in SPLITS {
        if root.join(format!("clotho_captions_{clotho}.csv")).exists() {
            all.extend(split_clips(root, clotho, split)?);
        }
    }
    if all.is_empty() {
        return Err(DataError::BadSource {
            path: root.to_path_buf(),
            line: 0,
            detail: "no clotho_captions_*.csv found; point --source at the ClothoV2 folder".into(),
        });
    }
    write_listed(to, "clotho", all)
}

/// Number of clips the converter will process (for progress bars).
pub fn count(root: &Path) -> u64 {
    SPLITS
        .iter()
        .filter_map(|(c, _)| std::fs::read(root.join(format!("clotho_captions_{c}.csv"))).ok())
        .map(|b| {
            b.split(|x| *x == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                .saturating_sub(1) as u64
        })
        .sum()
}
