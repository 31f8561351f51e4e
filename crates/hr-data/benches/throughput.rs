//! Loader throughput benchmark (harness = false): items/s of the whole training loader (fetch
//! the rows of a globally shuffled batch, decode the crop, resample when needed, tokenize,
//! batch) from audio stored at 32 kHz against the same clips stored at 44.1 kHz (resampled every
//! epoch), crop decoding against decoding whole clips, and resident memory over three epochs.
//!
//! Run per core: `taskset -c 0 cargo bench -p hr-data --bench throughput --profile dev`
//! (dependencies at opt-level 3). HR_BENCH_CLIPS sets the clip count (default 160);
//! HR_BENCH_FLAC_DIR adds a row for a folder of 44.1 kHz FLAC files `c0000.flac`.. made by a
//! real encoder (tools/bench_decode_peer.py writes such files).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hr_data::audio::{crop_or_pad, encode_wav, load_32k, load_crop_32k, AudioStorage, Codec};
use hr_data::convert::{folder, PrepareOptions, Target};
use hr_data::rng::Rng;
use hr_data::{Cursor, Loader, LoaderConfig, Manifest, SplitIndex, Store};

fn clip_signal(i: usize, sr: u32, secs: f32) -> Vec<f32> {
    let mut rng = Rng::new(i as u64);
    let f = 200.0 + 37.0 * i as f32;
    (0..(sr as f32 * secs) as usize)
        .map(|n| {
            0.3 * (2.0 * std::f32::consts::PI * f * n as f32 / sr as f32).sin()
                + 0.02 * rng.normal_f32()
        })
        .collect()
}

/// A folder of `n` clips of `secs` s at `sr` as wav (or, with `flac`, the existing c0000.flac..)
/// with a two-caption sidecar.
fn folder_source(dir: &Path, n: usize, sr: u32, secs: f32, flac: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sidecar = String::new();
    for i in 0..n {
        let name = format!("c{i:04}.{}", if flac { "flac" } else { "wav" });
        if !flac {
            let x = clip_signal(i, sr, secs);
            std::fs::write(dir.join(&name), encode_wav(&[x], sr, 16).unwrap()).unwrap();
        }
        sidecar.push_str(&format!("{{\"file_name\": \"{name}\", \"captions\": [\"clip {i} a tone\", \"another caption\"], \"keywords\": [\"tone\"]}}\n"));
    }
    std::fs::write(dir.join("metadata.jsonl"), sidecar).unwrap();
}

/// Prepares `src` into `out` stored as `audio`, with the fixture tokenizer recorded.
fn prepare(src: &Path, out: &Path, audio: AudioStorage, tok_from: &Path) {
    let opts = PrepareOptions {
        audio,
        ..Default::default()
    };
    folder::convert(
        src,
        &Target {
            opts,
            ..Target::new(out)
        },
    )
    .unwrap();
    std::fs::copy(tok_from.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
    let mut m = Manifest::load(&Store::local(out).unwrap()).unwrap();
    m.tokenizer = Some("tokenizer.json".into());
    m.write_atomic(out).unwrap();
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Loader items/s over `epochs` epochs with `workers` decode threads, and the RSS in MiB at the
/// end of the first epoch and the largest RSS sampled at any later batch (flat memory: equal).
fn loader_rate(root: &Path, workers: usize, epochs: u64) -> (f64, f64, f64) {
    let store = Store::local(root).unwrap();
    let m = Manifest::load(&store).unwrap();
    let index = Arc::new(SplitIndex::open(&store, &m, "train", false).unwrap());
    let tok = hr_data::dataset_tokenizer(&store, &m, 32).unwrap();
    let cfg = LoaderConfig {
        global_batch: 32,
        workers,
        clip_seconds: 10.0,
        prefetch_batches: 4,
        verify_checksums: false,
        audio_cache_mib: 0,
        ..LoaderConfig::default()
    };
    let (mut first, mut later) = (0f64, 0f64);
    let t = Instant::now();
    let mut items = 0usize;
    for b in Loader::new(index, cfg, tok, Cursor::default(), Some(epochs)).unwrap() {
        let b = b.unwrap();
        items += b.batch_size;
        match b.epoch {
            0 => first = rss_mib(),
            _ => later = later.max(rss_mib()),
        }
    }
    (items as f64 / t.elapsed().as_secs_f64(), first, later)
}

/// Milliseconds per clip: crop decoding against decoding the whole clip then cropping.
fn crop_vs_full(bytes: &[u8], len: usize) -> (f64, f64) {
    let pick = |total: usize| (total - len) / 3;
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        load_crop_32k(bytes, "a.wav", "bench", len, &pick).unwrap();
    }
    let crop = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        let w = load_32k(bytes, "a.wav", "bench").unwrap();
        crop_or_pad(&w, len, pick(w.len()));
    }
    (crop, t.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

fn main() {
    let n: usize = hr_core::env_or("HR_BENCH_CLIPS", 160);
    let tmp = tempfile::tempdir().unwrap();
    let tok = tmp.path().join("tok");
    common::write_dataset(&tok, 4, 4);
    let original = AudioStorage::new(Codec::Original, None).unwrap();
    println!("| measurement ({n} clips of 10 s, global batch 32, 10 s crops) | value |\n|---|---|");

    let src = tmp.path().join("src-wav44");
    folder_source(&src, n, 44_100, 10.0, false);
    let mut rows: Vec<(String, f64)> = Vec::new();
    for (name, audio) in [
        (
            "stored 32 kHz wav (prepare default)",
            AudioStorage::default(),
        ),
        ("stored 44.1 kHz wav (--codec original)", original),
    ] {
        let out = tmp.path().join(name.replace([' ', '(', ')', '.'], "_"));
        prepare(&src, &out, audio, &tok);
        for workers in [1, 2] {
            let (r, first, later) = loader_rate(&out, workers, 3);
            println!("| loader, {name}, {workers} decode worker(s) | {r:.1} items/s (RSS {first:.0} MiB after epoch 1, at most {later:.0} MiB in epochs 2-3) |");
            rows.push((format!("{name}, {workers}"), r));
        }
    }
    if let Some(flac) = std::env::var_os("HR_BENCH_FLAC_DIR").map(std::path::PathBuf::from) {
        let count = (0..)
            .take_while(|i| flac.join(format!("c{i:04}.flac")).exists())
            .count();
        folder_source(&flac, count, 44_100, 10.0, true);
        let out = tmp.path().join("flac44");
        prepare(&flac, &out, original, &tok);
        let (r, _, _) = loader_rate(&out, 1, 1);
        println!("| loader, stored 44.1 kHz FLAC (--codec original, {count} clips), 1 decode worker | {r:.1} items/s |");
    }
    let ratio = rows[0].1 / rows[2].1;
    println!("| ratio, 1 worker: stored at 32 kHz / stored at 44.1 kHz | {ratio:.2}x |");

    let long = encode_wav(&[clip_signal(1, 32_000, 30.0)], 32_000, 16).unwrap();
    let (crop, full) = crop_vs_full(&long, 320_000);
    println!("| one 10 s crop of a 30 s 32 kHz wav: crop decoding / whole clip then crop | {crop:.2} ms / {full:.2} ms ({:.1}x) |", full / crop);
}
