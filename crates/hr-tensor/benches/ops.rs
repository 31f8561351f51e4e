//! CPU op benchmarks: each op against a straightforward baseline measured in the same run, and
//! against this machine's measured ceilings (FMA peak, memory bandwidth).
//!
//! `cargo bench -p hr-tensor --bench ops` prints a Markdown table for docs/PERF.md.

use std::hint::black_box;
use std::time::Instant;

use hr_tensor::ops;
use hr_tensor::testing::randn32;
use hr_tensor::{Rng, Tensor};

/// Median seconds per call of `f` (after a warm-up), over runs of at least ~0.3 s in total.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.06 / once).ceil() as usize).clamp(1, 10_000);
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// Measured f32 FMA peak of all threads (GFLOP/s): independent AVX-512 (or scalar) FMA chains.
fn fma_peak() -> f64 {
    let threads = rayon::current_num_threads();
    let iters = 20_000_000usize;
    let t = Instant::now();
    let per_thread = || -> f64 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: guarded by the runtime feature check above.
                return unsafe { fma_avx512(iters / 16) };
            }
        }
        let mut acc = [1.0f32; 8];
        for _ in 0..iters / 8 {
            for a in &mut acc {
                *a = a.mul_add(0.999_999, 1e-7);
            }
        }
        black_box(acc);
        (iters / 8 * 8 * 2) as f64
    };
    let total: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(per_thread)).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    total / t.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    black_box(acc);
    (iters * 12 * 16 * 2) as f64
}

/// Measured memory bandwidth (GB/s) of a parallel copy of 256 MiB (read + write counted).
fn bandwidth() -> f64 {
    use rayon::prelude::*;
    let n = 1 << 26;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let s = time(|| {
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&dst);
    });
    (2 * n * 4) as f64 / s / 1e9
}

fn naive_gemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
}

/// Direct depthwise convolution with stride 1 and "same" padding (baseline).
fn naive_depthwise(x: &[f32], w: &[f32], y: &mut [f32], c: usize, h: usize, wd: usize, k: usize) {
    let p = (k / 2) as isize;
    for ch in 0..c {
        for i in 0..h {
            for j in 0..wd {
                let mut s = 0.0;
                for di in 0..k {
                    for dj in 0..k {
                        let (ii, jj) = (i as isize + di as isize - p, j as isize + dj as isize - p);
                        if ii >= 0 && jj >= 0 && (ii as usize) < h && (jj as usize) < wd {
                            s += x[ch * h * wd + ii as usize * wd + jj as usize]
                                * w[ch * k * k + di * k + dj];
                        }
                    }
                }
                y[ch * h * wd + i * wd + j] = s;
            }
        }
    }
}

fn naive_layer_norm(x: &[f32], y: &mut [f32], d: usize) {
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let r = 1.0 / (var + 1e-5).sqrt();
        for (o, v) in yr.iter_mut().zip(xr) {
            *o = (v - mean) * r;
        }
    }
}

struct Row {
    name: String,
    ours: f64,
    base: f64,
    work: f64,
    unit: &'static str,
    ceiling: f64,
}

fn main() {
    let mut rng = Rng::new(0);
    let threads = rayon::current_num_threads();
    let peak = fma_peak();
    let bw = bandwidth();
    let mut rows = Vec::new();

    // GEMM 1024^3 (and a naive baseline on 256^3, scaled per FLOP).
    let (m, n, k) = (1024, 1024, 1024);
    let a = randn32(&[m, k], &mut rng);
    let b = randn32(&[k, n], &mut rng);
    let ours = time(|| {
        black_box(ops::matmul(&a, &b).unwrap());
    });
    let s = 256;
    let (av, bv) = (randn32(&[s, s], &mut rng), randn32(&[s, s], &mut rng));
    let (av, bv) = (av.to_vec_f32().unwrap(), bv.to_vec_f32().unwrap());
    let mut cv = vec![0.0; s * s];
    let base_small = time(|| naive_gemm(&av, &bv, &mut cv, s, s, s));
    let base = base_small * (m * n * k) as f64 / (s * s * s) as f64;
    rows.push(Row {
        name: "GEMM 1024x1024x1024".into(),
        ours,
        base,
        work: 2.0 * (m * n * k) as f64 / 1e9,
        unit: "GFLOP/s",
        ceiling: peak,
    });

    // Depthwise 5x5 stride 1 on a MobileNetV3 mn40 block-5 map (480 ch, 16 x 125), batch 8.
    let (nb, c, h, w, kk) = (8, 480, 16, 125, 5);
    let x = randn32(&[nb, c, h, w], &mut rng);
    let wt = randn32(&[c, 1, kk, kk], &mut rng);
    let ours = time(|| {
        black_box(ops::conv2d(&x, &wt, (1, 1), (2, 2), (1, 1), c).unwrap());
    });
    let (xv, wv) = (x.to_vec_f32().unwrap(), wt.to_vec_f32().unwrap());
    let mut yv = vec![0.0; xv.len()];
    let base = time(|| {
        for bi in 0..nb {
            let o = bi * c * h * w;
            naive_depthwise(
                &xv[o..o + c * h * w],
                &wv,
                &mut yv[o..o + c * h * w],
                c,
                h,
                w,
                kk,
            );
        }
    });
    let bytes = 2.0 * (nb * c * h * w * 4) as f64 / 1e9;
    rows.push(Row {
        name: format!("depthwise 5x5 s1, x ({nb},{c},{h},{w})"),
        ours,
        base,
        work: bytes,
        unit: "GB/s",
        ceiling: bw,
    });

    // Pointwise 1x1 conv 160 -> 480 on (8, 160, 16, 125).
    let (ci, co) = (160, 480);
    let x = randn32(&[nb, ci, h, w], &mut rng);
    let wt = randn32(&[co, ci, 1, 1], &mut rng);
    let ours = time(|| {
        black_box(ops::conv2d(&x, &wt, (1, 1), (0, 0), (1, 1), 1).unwrap());
    });
    let (xv, wv) = (x.to_vec_f32().unwrap(), wt.to_vec_f32().unwrap());
    let mut yv = vec![0.0; nb * co * h * w];
    let base = time(|| {
        for bi in 0..nb {
            naive_gemm(
                &wv,
                &xv[bi * ci * h * w..(bi + 1) * ci * h * w],
                &mut yv[bi * co * h * w..(bi + 1) * co * h * w],
                co,
                h * w,
                ci,
            );
        }
    });
    rows.push(Row {
        name: format!("pointwise 1x1 {ci}->{co}, x ({nb},{ci},{h},{w})"),
        ours,
        base,
        work: 2.0 * (nb * co * ci * h * w) as f64 / 1e9,
        unit: "GFLOP/s",
        ceiling: peak,
    });

    // Attention core: softmax(q k^T / 8) v, (B=32, H=12, T=97, Dh=64), with a padding mask.
    let (bb, hh, t, dh) = (32, 12, 97, 64);
    let q = randn32(&[bb, hh, t, dh], &mut rng);
    let kt = randn32(&[bb, hh, t, dh], &mut rng);
    let v = randn32(&[bb, hh, t, dh], &mut rng);
    let mask = Tensor::from_vec(
        (0..bb * t)
            .map(|i| ((i % t) < t - (i / t) % 7) as u8 as f32)
            .collect::<Vec<_>>(),
        &[bb, t],
    )
    .unwrap();
    let attn = || {
        let s = ops::matmul_ex(&q, &kt, false, true, 0.125).unwrap();
        let p = ops::softmax(&s.reshape(&[bb, hh * t, t]).unwrap(), Some(&mask)).unwrap();
        black_box(ops::matmul(&p.reshape(&[bb, hh, t, t]).unwrap(), &v).unwrap());
    };
    let ours = time(attn);
    let (qv, kv, vv) = (
        q.to_vec_f32().unwrap(),
        kt.to_vec_f32().unwrap(),
        v.to_vec_f32().unwrap(),
    );
    let base = time(|| {
        let mut out = vec![0.0f32; dh];
        let mut sc = vec![0.0f32; t];
        for bh in 0..bb * hh {
            let o = bh * t * dh;
            for i in 0..t {
                for j in 0..t {
                    sc[j] = (0..dh)
                        .map(|d| qv[o + i * dh + d] * kv[o + j * dh + d])
                        .sum::<f32>()
                        * 0.125;
                }
                let mx = sc.iter().cloned().fold(f32::MIN, f32::max);
                let z: f32 = sc
                    .iter_mut()
                    .map(|s| {
                        *s = (*s - mx).exp();
                        *s
                    })
                    .sum();
                out.iter_mut().for_each(|x| *x = 0.0);
                for j in 0..t {
                    for d in 0..dh {
                        out[d] += sc[j] / z * vv[o + j * dh + d];
                    }
                }
                black_box(&out);
            }
        }
    });
    let flops = 4.0 * (bb * hh * t * t * dh) as f64 / 1e9;
    rows.push(Row {
        name: format!("attention B{bb} H{hh} T{t} Dh{dh}"),
        ours,
        base,
        work: flops,
        unit: "GFLOP/s",
        ceiling: peak,
    });

    // Layer norm (32*97, 768).
    let (r, d) = (32 * 97, 768);
    let x = randn32(&[r, d], &mut rng);
    let g = Tensor::from_vec(vec![1f32; d], &[d]).unwrap();
    let be = Tensor::from_vec(vec![0f32; d], &[d]).unwrap();
    let ours = time(|| {
        black_box(ops::layer_norm(&x, &g, &be, 1e-5).unwrap());
    });
    let xv = x.to_vec_f32().unwrap();
    let mut yv = vec![0.0; r * d];
    let base = time(|| naive_layer_norm(&xv, &mut yv, d));
    rows.push(Row {
        name: format!("layer norm ({r},{d})"),
        ours,
        base,
        work: 2.0 * (r * d * 4) as f64 / 1e9,
        unit: "GB/s",
        ceiling: bw,
    });

    println!("threads: {threads}; measured ceilings: f32 FMA peak {peak:.1} GFLOP/s, copy bandwidth {bw:.1} GB/s\n");
    println!("| op | ours (ms) | baseline (ms) | speed-up | ours rate | fraction of ceiling |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let rate = r.work / r.ours;
        println!(
            "| {} | {:.3} | {:.3} | {:.1}x | {:.1} {} | {:.0}% |",
            r.name,
            r.ours * 1e3,
            r.base * 1e3,
            r.base / r.ours,
            rate,
            r.unit,
            100.0 * rate / r.ceiling
        );
    }
}
