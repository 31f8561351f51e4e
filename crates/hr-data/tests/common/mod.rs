//! Shared fixtures for integration tests.
#![allow(dead_code)]

use std::path::Path;

use hr_data::audio::encode_wav;
use hr_data::schema::{AudioBlob, ClipRecord};
use hr_data::shard::DatasetWriter;
use hr_data::text::{train_wordpiece, TextTokenizer};

/// A sine of `secs` seconds.
pub fn sine(freq: f32, sr: u32, secs: f32) -> Vec<f32> {
    (0..(sr as f32 * secs) as usize)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * freq * i as f32 / sr as f32).sin())
        .collect()
}

/// A small clip whose id encodes its index; `n_captions` in 1..=5.
pub fn clip(i: usize, n_captions: usize) -> ClipRecord {
    let sr = if i.is_multiple_of(3) { 16_000 } else { 32_000 };
    let secs = 0.25 + 0.05 * (i % 7) as f32;
    let x = sine(200.0 + 10.0 * i as f32, sr, secs);
    ClipRecord {
        id: format!("clip-{i:04}"),
        audio: AudioBlob {
            bytes: encode_wav(&[x], sr, 16).unwrap(),
            path: format!("clip-{i:04}.wav"),
        },
        captions: (0..n_captions)
            .map(|k| format!("clip {i} caption {k}, a tone!"))
            .collect(),
        keywords: vec![format!("kw{}", i % 5), "tone".into()],
        labels: vec!["tone".into()],
        description: Some(format!("description of clip {i}")),
        sample_rate: sr as i32,
        duration_s: secs,
        license: None,
    }
}

/// Writes `n` clips into split `train` (and a few into `test`) with `per_shard` clips per shard.
pub fn write_dataset(root: &Path, n: usize, per_shard: usize) -> hr_data::Manifest {
    let mut w = DatasetWriter::create(root, "fixture", per_shard).unwrap();
    for i in 0..n {
        w.push("train", clip(i, 1 + i % 5)).unwrap();
    }
    for i in 0..5 {
        w.push("test", clip(1000 + i, 5)).unwrap();
    }
    let json = train_wordpiece(
        (0..50).map(|i| {
            format!(
                "clip {i} caption {} a tone kw{} description of",
                i % 5,
                i % 5
            )
        }),
        300,
    )
    .unwrap();
    std::fs::write(root.join("tokenizer.json"), json).unwrap();
    w.set_tokenizer("tokenizer.json");
    w.finish().unwrap()
}

/// Every row of `split` of the dataset at `root`, in shard order (checksums verified).
pub fn records(root: &Path, split: &str) -> Vec<ClipRecord> {
    let store = hr_data::Store::local(root).unwrap();
    let m = hr_data::Manifest::load(&store).unwrap();
    hr_data::shard::open_split(&store, &m, split, true)
        .unwrap()
        .iter()
        .flat_map(|s| s.read_all().unwrap())
        .collect()
}

/// The fixture's tokenizer.
pub fn tokenizer(root: &Path) -> TextTokenizer {
    TextTokenizer::from_bytes(
        &std::fs::read(root.join("tokenizer.json")).unwrap(),
        "t",
        32,
    )
    .unwrap()
}
