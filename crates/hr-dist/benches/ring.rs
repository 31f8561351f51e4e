//! The CPU ring's all-reduce for docs/PERF.md and docs/RELIABILITY.md: 2 ranks in threads on
//! 127.0.0.1, sum of N floats, median of HR_BENCH_REPS (default 10) runs per size, as GB/s of
//! buffer reduced; and, for the cost of the frames' encryption and authentication, the rate of
//! AES-256-GCM sealing the same bytes on one core (each rank seals what it sends and opens what
//! it receives: 2 (w-1)/w of the buffer each way per all-reduce). The all-reduce without it is
//! measured by running this file at commit 224bd29 (before frames were sealed); RELIABILITY.md
//! has both.
//!
//! Run: `cargo bench -p hr-dist --bench ring`. Sizes (MiB of f32) in HR_BENCH_MIB (default
//! "1,16,64").

use std::time::Instant;

use hr_dist::testing::run_world;
use hr_dist::Communicator;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Median seconds of one all-reduce of `floats` floats on 2 ranks.
fn all_reduce_secs(floats: usize, reps: usize) -> f64 {
    let times = run_world(2, 60_000, move |_, mut c| {
        let mut v = vec![1.0f32; floats];
        c.all_reduce_sum(&mut v).expect("warm-up all-reduce");
        (0..reps)
            .map(|_| {
                c.barrier().expect("barrier");
                let t0 = Instant::now();
                c.all_reduce_sum(&mut v).expect("all-reduce");
                t0.elapsed().as_secs_f64()
            })
            .collect::<Vec<f64>>()
    });
    median(times.into_iter().flatten().collect())
}

/// GB/s of AES-256-GCM sealing a buffer of `bytes` in place on this core.
fn seal_gbps(bytes: usize, reps: usize) -> f64 {
    let mut buf = vec![7u8; bytes];
    let key = UnboundKey::new(&AES_256_GCM, &[1u8; 32]).expect("a 32-byte key");
    let key = LessSafeKey::new(key);
    let times: Vec<f64> = (0..reps as u64)
        .map(|i| {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_le_bytes());
            let t0 = Instant::now();
            let tag = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::empty(),
                &mut buf,
            );
            std::hint::black_box(tag.is_ok());
            t0.elapsed().as_secs_f64()
        })
        .collect();
    bytes as f64 / median(times) / 1e9
}

fn main() {
    let reps = hr_core::env_or("HR_BENCH_REPS", 10usize);
    println!("| buffer | all-reduce (2 ranks) | GB/s reduced | AES-256-GCM on one core |");
    println!("|---|---|---|---|");
    for mib in env_list("HR_BENCH_MIB", "1,16,64") {
        let floats = mib << 18;
        let secs = all_reduce_secs(floats, reps);
        let bytes = 4 * floats;
        println!(
            "| {mib} MiB | {:.2} ms | {:.2} | {:.2} GB/s |",
            secs * 1e3,
            bytes as f64 / secs / 1e9,
            seal_gbps(bytes, reps)
        );
    }
}
