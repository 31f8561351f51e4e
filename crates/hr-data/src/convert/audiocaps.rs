//! AudioCaps: `{train,val,test}.csv` (audiocap_id, youtube_id, start_time, caption), a folder of
//! downloaded clips named by YouTube id, AudioSet segment CSVs and `class_labels_indices.csv`.
//! Closed-set labels are AudioSet display names; clips whose audio is missing are counted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::convert::{
    bad_csv, csv_rows, field, read_text_lossless, write_dataset, ConvertSummary, MissingPolicy,
    SourceClip, Target, AUDIO_EXTS,
};
use crate::error::{DataError, Result};

/// AudioCaps split file stems (same as our split names).
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Reads `class_labels_indices.csv`: mid -> display name.
pub fn read_label_names(path: &Path) -> Result<HashMap<String, String>> {
    let text = read_text_lossless(path)?;
    let mut out = HashMap::new();
    for (line, row) in csv_rows(&text, path)? {
        out.insert(
            field(&row, "mid", path, line)?.to_string(),
            field(&row, "display_name", path, line)?.to_string(),
        );
    }
    Ok(out)
}

/// Parses one AudioSet segment line `YTID, start, end, "mid1,mid2"` (note the space before the
/// quote, which standard CSV readers do not treat as quoting). Comments and blanks give `None`.
pub fn parse_segment_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut parts = line.splitn(4, ',');
    let ytid = parts.next()?.trim().to_string();
    let _start = parts.next()?;
    let _end = parts.next()?;
    let mids = parts.next().unwrap_or("").trim().trim_matches('"');
    Some((ytid, crate::convert::split_tags(mids, ',')))
}

/// Streams AudioSet segment CSVs keeping only the wanted YouTube ids: ytid -> label mids.
pub fn read_segments(
    paths: &[PathBuf],
    wanted: &HashSet<String>,
) -> Result<HashMap<String, Vec<String>>> {
    use std::io::BufRead;
    let mut out = HashMap::new();
    for path in paths {
        let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| bad_csv(path, i as u64 + 1, e))?;
            if let Some((ytid, mids)) = parse_segment_line(&line) {
                if wanted.contains(&ytid) {
                    out.insert(ytid, mids);
                }
            }
        }
    }
    Ok(out)
}

/// Finds the audio file of `ytid` under the usual download layouts.
pub fn find_audio(audio_dirs: &[PathBuf], ytid: &str, start: &str) -> Option<PathBuf> {
    let start_int = start.split('.').next().unwrap_or(start);
    let stems = [
        ytid.to_string(),
        format!("Y{ytid}"),
        format!("{ytid}_{start_int}"),
        format!("{ytid}_{start}"),
        format!("Y{ytid}_{start}"),
    ];
    for dir in audio_dirs {
        for stem in &stems {
            for ext in AUDIO_EXTS {
                let p = dir.join(format!("{stem}.{ext}"));
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

struct Group {
    ytid: String,
    start: String,
    captions: Vec<String>,
}

fn read_split(path: &Path) -> Result<Vec<Group>> {
    let text = read_text_lossless(path)?;
    let mut order: Vec<Group> = Vec::new();
    let mut pos: HashMap<String, usize> = HashMap::new();
    for (line, row) in csv_rows(&text, path)? {
        let ytid = field(&row, "youtube_id", path, line)?.to_string();
        let caption = field(&row, "caption", path, line)?.to_string();
        let start = row.get("start_time").cloned().unwrap_or_default();
        let i = *pos.entry(ytid.clone()).or_insert_with(|| {
            order.push(Group {
                ytid: ytid.clone(),
                start,
                captions: Vec::new(),
            });
            order.len() - 1
        });
        if !caption.is_empty() && order[i].captions.len() < 5 {
            order[i].captions.push(caption);
        }
    }
    Ok(order)
}

/// Inputs of the AudioCaps converter.
#[derive(Debug, Clone)]
pub struct AudioCapsInputs {
    /// Folder with `{train,val,test}.csv` and the audio.
    pub root: PathBuf,
    /// AudioSet segment CSVs (balanced/unbalanced/eval).
    pub audioset_csvs: Vec<PathBuf>,
    /// `class_labels_indices.csv`.
    pub labels: PathBuf,
    /// Audio folder override (default: `root/audio/{split}`, `root/{split}`, `root/audio`, `root`).
    pub audio_dir: Option<PathBuf>,
}

fn audio_dirs(inp: &AudioCapsInputs, split: &str) -> Vec<PathBuf> {
    match &inp.audio_dir {
        Some(d) => vec![d.join(split), d.clone()],
        None => vec![
            inp.root.join("audio").join(split),
            inp.root.join(split),
            inp.root.join("audio"),
            inp.root.clone(),
        ],
    }
}

/// Converts AudioCaps to a dataset at `to`; missing audio is counted and reported.
pub fn convert(inp: &AudioCapsInputs, to: &Target) -> Result<ConvertSummary> {
    let names = read_label_names(&inp.labels)?;
    let mut splits = Vec::new();
    for split in SPLITS {
        let p = inp.root.join(format!("{split}.csv"));
        if p.exists() {
            splits.push((split, read_split(&p)?));
        }
    }
    if splits.is_empty() {
        return Err(DataError::BadSource {
            path: inp.root.clone(),
            line: 0,
            detail: "no train.csv/val.csv/test.csv found; point --source at the AudioCaps folder"
                .into(),
        });
    }
    let wanted: HashSet<String> = splits
        .iter()
        .flat_map(|(_, g)| g.iter().map(|g| g.ytid.clone()))
        .collect();
    let segments = read_segments(&inp.audioset_csvs, &wanted)?;
    let mut clips = Vec::new();
    for (split, groups) in splits {
        let dirs = audio_dirs(inp, split);
        for g in groups {
            let labels = segments
                .get(&g.ytid)
                .map(|mids| mids.iter().filter_map(|m| names.get(m).cloned()).collect())
                .unwrap_or_default();
            let audio = find_audio(&dirs, &g.ytid, &g.start)
                .unwrap_or_else(|| dirs[0].join(format!("{}.wav", g.ytid)));
            clips.push(SourceClip {
                split: split.to_string(),
                id: g.ytid,
                audio,
                captions: g.captions,
                keywords: Vec::new(),
                labels,
                description: None,
                license: Some("YouTube (see AudioCaps/AudioSet terms)".into()),
            });
        }
    }
    let sum = write_dataset(
        to,
        "audiocaps",
        clips.into_iter().map(Ok),
        MissingPolicy::Skip,
    )?;
    if !sum.missing.is_empty() {
        tracing::warn!(
            missing = sum.missing.len(),
            "AudioCaps clips without audio were skipped"
        );
    }
    Ok(sum)
}
