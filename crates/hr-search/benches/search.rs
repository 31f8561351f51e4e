//! Search figures for docs/PERF.md, on the CPU:
//! 1. exact search of one query against 1 million random unit vectors (d = 1024) plus the top
//!    10 (text encoding excluded): hr-tensor's GEMM and search's CPU path from f32 and f16
//!    storage, against a baseline measured in the same run: one streaming read of the f32
//!    matrix (the memory traffic every exact search over f32 must pay);
//! 2. the index build rate (clips/s) of the tiny and paper-base presets (untrained weights, the
//!    cost is the same) on 10 s clips of the synthetic dataset;
//! 3. a load test of `hr-search serve` (tiny model): 8 concurrent clients on 127.0.0.1, p50 /
//!    p99 latency and errors.
//!
//! Run: `cargo bench -p hr-search --bench search` (release). HR_BENCH_ITEMS (default 1000000)
//! and HR_BENCH_DIM (1024) size part 1; HR_BENCH_REPS (10) repeats each timing.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use hr_search::build::{build, BuildOptions};
use hr_search::encoder::Encoder;
use hr_search::index::Index;
use hr_search::search::{dot_rows, top_k};
use hr_search::serve::{App, Limits};
use hr_search::source::SourceSpec;
use hr_tensor::{ops, DType, Device, Rng, Tensor};
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; n * d];
    v.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
        let mut rng = Rng::from_parts(&[seed, i as u64]);
        row.iter_mut().for_each(|x| *x = rng.normal_f32());
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    });
    v
}

/// Milliseconds of `f` (one query: scores + top 10), median of `reps`.
fn time_ms(reps: usize, mut f: impl FnMut() -> Option<Vec<f32>>) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let s = f()?;
        std::hint::black_box(top_k(&s, 10));
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Some(median(times))
}

/// A sum of every element in 16 lanes on all cores: the bytes of the matrix read once.
fn stream_sum(v: &[f32]) -> f32 {
    v.par_chunks(1 << 16)
        .map(|c| {
            let mut acc = [0f32; 16];
            for x in c.chunks_exact(16) {
                for i in 0..16 {
                    acc[i] += x[i];
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum()
}

fn exact_search(n: usize, d: usize, reps: usize) {
    let t0 = Instant::now();
    let v = unit_rows(n, d, 7);
    println!(
        "generated {n} x {d} unit vectors in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let read_ms = time_ms(reps, || Some(vec![stream_sum(&v)])).unwrap_or(f64::NAN);
    let q = unit_rows(1, d, 8);
    let qt = Tensor::from_vec(q.clone(), &[1, d]).unwrap();
    let items = Tensor::from_vec(v, &[n, d]).unwrap();
    println!(
        "baseline: one streaming read of the f32 matrix ({:.1} GB): {read_ms:.1} ms",
        (n * d * 4) as f64 / 1e9
    );
    println!("| method | storage | query ms (median of {reps}) | ratio to the f32 read |");
    let gemm = time_ms(reps, || {
        ops::matmul_ex(&qt, &items, false, true, 1.0)
            .ok()?
            .to_vec_f32()
            .ok()
    });
    if let Some(ms) = gemm {
        println!(
            "| GEMM (hr-tensor matmul, q V^T) | f32 | {ms:.1} | {:.2} |",
            ms / read_ms
        );
    }
    let f32_ms = time_ms(reps, || dot_rows(&items, &q).ok()).unwrap_or(f64::NAN);
    println!(
        "| dot_rows (hr-search CPU path) | f32 | {f32_ms:.1} | {:.2} |",
        f32_ms / read_ms
    );
    let half = items.to_dtype(DType::F16).unwrap();
    drop(items);
    let f16_ms = time_ms(reps, || dot_rows(&half, &q).ok()).unwrap_or(f64::NAN);
    println!(
        "| dot_rows (hr-search CPU path) | f16 | {f16_ms:.1} | {:.2} |",
        f16_ms / read_ms
    );
}

/// An encoder of `preset` with untrained weights, reading the synthetic dataset of `dir` with
/// clips of `clip_seconds`.
fn encoder(dir: &Path, preset: &str, clip_seconds: f32) -> Encoder {
    let mcfg = hr_models::presets::preset(preset).unwrap();
    let (model, params) = hr_train::model::build_model(&mcfg, 1).unwrap();
    let set = [format!(
        "data.root={:?}",
        dir.join("data").display().to_string()
    )];
    let cfg = hr_train::TrainConfig::from_toml_str("", &set).unwrap();
    let mut loader = hr_train::trainer::loader_config(&cfg);
    loader.clip_seconds = clip_seconds;
    let tokenizer = hr_train::init::run_tokenizer(dir, &cfg, loader.max_tokens).unwrap();
    Encoder {
        model,
        params,
        tokenizer,
        checkpoint: dir.join(preset),
        model_sha256: preset.into(),
        metadata: cfg.model.metadata,
        missing: cfg.model.missing_metadata,
        loader,
    }
}

fn split(dir: &Path, split: &str) -> SourceSpec {
    SourceSpec::Dataset {
        root: dir.join("data").display().to_string(),
        split: split.into(),
    }
}

fn build_rate(dir: &Path, preset: &str, clips: usize) {
    let mut enc = encoder(dir, preset, 10.0);
    let spec = split(dir, "train");
    let out = dir.join(format!("index-{preset}"));
    // Only the first `clips` clips: a part of that size, stopped after it.
    let opts = BuildOptions {
        batch_size: 8,
        part_size: clips,
        max_parts: Some(1),
    };
    let t0 = Instant::now();
    build(&mut enc, &spec, &out, opts).unwrap();
    let s = t0.elapsed().as_secs_f64();
    println!("| {preset} | {clips} | {s:.1} | {:.2} |", clips as f64 / s);
}

fn get(addr: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn serve_load(dir: &Path, clients: usize, each: usize) {
    let mut enc = encoder(dir, "tiny", 10.0);
    let spec = split(dir, "val");
    let out = dir.join("index-serve");
    build(&mut enc, &spec, &out, BuildOptions::default()).unwrap();
    let index = Index::open(&out, Device::Cpu).unwrap();
    let items = index.len();
    let app = App::new(index, enc, Limits::default()).unwrap();
    let addr = hr_search::serve::spawn(app, "127.0.0.1:0")
        .unwrap()
        .to_string();
    let words = [
        "a dog barks while cars pass by",
        "rain on a tin roof",
        "birds sing",
        "a bell",
    ];
    let t0 = Instant::now();
    let lat: Vec<Option<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let addr = &addr;
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let q = words[(c + i) % words.len()].replace(' ', "%20");
                            let t = Instant::now();
                            let code = get(addr, &format!("/api/search?q={q}&k=10"))?;
                            (code == 200).then(|| t.elapsed().as_secs_f64() * 1e3)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let errors = lat.iter().filter(|l| l.is_none()).count();
    let mut ms: Vec<f64> = lat.into_iter().flatten().collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: usize| {
        ms.get((ms.len() * p / 100).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("| clients | requests | items | errors | p50 ms | p99 ms | requests/s |");
    println!(
        "| {clients} | {} | {items} | {errors} | {:.1} | {:.1} | {:.0} |",
        clients * each,
        pct(50),
        pct(99),
        (clients * each) as f64 / wall
    );
}

fn main() {
    hr_tensor::cpu::keep_freed_memory();
    let n = hr_core::env_or("HR_BENCH_ITEMS", 1_000_000usize);
    let d = hr_core::env_or("HR_BENCH_DIM", 1024usize);
    let reps = hr_core::env_or("HR_BENCH_REPS", 10usize);
    println!("## exact search, {n} x {d}, one query, top 10");
    exact_search(n, d, reps);
    let dir = tempfile::tempdir().unwrap();
    hr_data::synthetic::prepare(&dir.path().join("data"), 120, 5, None, &|_| {}).unwrap();
    println!("## index build rate (CPU, 10 s clips, batch 8)");
    println!("| preset | clips | s | clips/s |");
    build_rate(dir.path(), "tiny", 32);
    build_rate(dir.path(), "paper-base", 32);
    println!("## serve load test (tiny, CPU)");
    serve_load(dir.path(), 8, 50);
}
