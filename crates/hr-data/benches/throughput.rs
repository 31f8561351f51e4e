//! Throughput benchmark (harness = false): converter clips/s, loader items/s (decode + resample +
//! crop + tokenize) on synthetic wav and on FLAC/wav 44.1 kHz input, and raw Parquet read speed.
//!
//! Run: `cargo bench -p hr-data --bench throughput --profile dev` (dependencies at opt-level 3).
//! Sizes are small enough for a 2-core machine; set HR_BENCH_CLIPS to change the clip count.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hr_data::audio::encode_wav;
use hr_data::convert::folder;
use hr_data::rng::Rng;
use hr_data::shard::open_split;
use hr_data::{Cursor, Loader, LoaderConfig, Manifest, SplitIndex, Store};

fn clip_signal(i: usize, sr: u32, secs: f32) -> Vec<f32> {
    let mut rng = Rng::new(i as u64);
    let f = 200.0 + 37.0 * i as f32;
    (0..(sr as f32 * secs) as usize)
        .map(|n| {
            0.3 * (2.0 * std::f32::consts::PI * f * n as f32 / sr as f32).sin()
                + 0.02 * rng.normal()
        })
        .collect()
}

/// Writes `n` 10 s 44.1 kHz clips as wav, or (flac) expects `c0000.flac`.. to exist already.
fn folder_source(dir: &Path, n: usize, flac: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sidecar = String::new();
    for i in 0..n {
        let x = clip_signal(i, 44_100, 10.0);
        let name = if flac {
            format!("c{i:04}.flac")
        } else {
            format!("c{i:04}.wav")
        };
        if !flac {
            std::fs::write(dir.join(&name), encode_wav(&[x], 44_100, 16).unwrap()).unwrap();
        }
        sidecar.push_str(&format!("{{\"file_name\": \"{name}\", \"captions\": [\"clip {i} a tone\", \"another caption\"], \"keywords\": [\"tone\"]}}\n"));
    }
    std::fs::write(dir.join("metadata.jsonl"), sidecar).unwrap();
}

fn loader_rate(root: &Path, workers: usize, batches: usize) -> f64 {
    let store = Store::local(root).unwrap();
    let m = Manifest::load(&store).unwrap();
    let index = Arc::new(SplitIndex::open(&store, &m, "train", false).unwrap());
    let tok = match hr_data::dataset_tokenizer(&store, &m, 32) {
        Ok(t) => t,
        Err(_) => common::tokenizer(&root.join("../syn")),
    };
    let cfg = LoaderConfig {
        global_batch: 32,
        workers,
        clip_seconds: 10.0,
        prefetch_batches: 4,
        verify_checksums: false,
        ..LoaderConfig::default()
    };
    let t = Instant::now();
    let mut items = 0usize;
    for b in Loader::new(index, cfg, tok, Cursor::default(), None)
        .unwrap()
        .take(batches)
    {
        items += b.unwrap().batch_size;
    }
    items as f64 / t.elapsed().as_secs_f64()
}

fn parquet_rate(root: &Path) -> (f64, f64) {
    let store = Store::local(root).unwrap();
    let m = Manifest::load(&store).unwrap();
    let bytes: u64 = m.splits.values().flatten().map(|s| s.bytes).sum();
    let t = Instant::now();
    let mut clips = 0usize;
    for split in m.splits.keys() {
        for s in open_split(&store, &m, split, false).unwrap() {
            clips += s.read_all().unwrap().len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    (clips as f64 / secs, bytes as f64 / secs / 1e6)
}

fn main() {
    let n: usize = std::env::var("HR_BENCH_CLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = tempfile::tempdir().unwrap();
    let syn = tmp.path().join("syn");
    println!("| measurement | value |\n|---|---|");

    let t = Instant::now();
    hr_data::synthetic::prepare(&syn, n as u64, 0, None, &|_| {}).unwrap();
    println!(
        "| prepare synthetic ({n} clips, 2-10 s, incl. tokenizer training) | {:.1} clips/s |",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let nf = n / 2;
    // FLAC input: a folder of c0000.flac.. made by a real encoder (see docs/PERF.md section 3).
    let flac_dir = std::env::var("HR_BENCH_FLAC_DIR")
        .ok()
        .map(std::path::PathBuf::from);
    for flac in [false, true] {
        let kind = if flac { "flac" } else { "wav" };
        let src = match (&flac_dir, flac) {
            (None, true) => {
                println!("| (flac skipped: set HR_BENCH_FLAC_DIR) | |");
                continue;
            }
            (Some(d), true) => d.clone(),
            _ => tmp.path().join(format!("src-{kind}")),
        };
        folder_source(&src, nf, flac);
        let out = tmp.path().join(format!("ds-{kind}"));
        let t = Instant::now();
        folder::convert(&src, &out, &Default::default(), &|_| {}).unwrap();
        println!(
            "| prepare folder ({nf} x 10 s 44.1 kHz mono {kind}) | {:.1} clips/s |",
            nf as f64 / t.elapsed().as_secs_f64()
        );
        std::fs::copy(syn.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
        let mut m = Manifest::load(&Store::local(&out).unwrap()).unwrap();
        m.tokenizer = Some("tokenizer.json".into());
        m.write_atomic(&out).unwrap();
        for workers in [1, 2] {
            let r = loader_rate(&out, workers, (nf * 2 / 32).min(8));
            println!("| loader, {kind} 44.1 kHz -> 32 kHz, 10 s crop, {workers} worker(s) | {r:.1} items/s |");
        }
        let (c, mb) = parquet_rate(&out);
        println!(
            "| raw Parquet read ({kind} shards, all columns) | {c:.0} clips/s, {mb:.0} MB/s |"
        );
    }
    for workers in [1, 2] {
        let r = loader_rate(&syn, workers, 12);
        println!(
            "| loader, synthetic 32 kHz wav, 10 s crop/pad, {workers} worker(s) | {r:.1} items/s |"
        );
    }
    let (c, mb) = parquet_rate(&syn);
    println!("| raw Parquet read (synthetic shards, all columns) | {c:.0} clips/s, {mb:.0} MB/s |");
}
