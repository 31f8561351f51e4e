//! GPU mel frontend: [`MelFrontend::forward_device`] on `Device::Cuda(0)` against the
//! host frontend ([`MelFrontend::forward`], f64 FFT), in evaluation and training mode (same
//! seed: the fmin / fmax jitter and the SpecAugment masks must coincide), on odd lengths and
//! at paper size (B = 32, N = 320000), printing the max abs error and, at paper size, the
//! time of both paths (host path: frontend + upload, as `encode_waveforms` did; device path:
//! upload + frontend; both synchronised, best of 5 after a warm-up).
//!
//! Tolerance on the normalised output: `HR_CUDA_MEL_TOL`, default 2e-4 (1e-3 on the log-mel;
//! see `DEVICE_TOL` in tests/mel.rs for the measurements behind it). Outputs are NaN-poisoned
//! first, so an unwritten element fails. Without a CUDA device every test prints exactly one
//! line, "skipped: no CUDA device", and passes.

use std::sync::Mutex;
use std::time::Instant;

use hr_models::mel::{MelConfig, MelFrontend};
use hr_nn::Mode;
use hr_tensor::testing::randn32;
use hr_tensor::{cuda, Device, Rng, Tensor};

/// The tests share one device and one stream: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The GPU, or `None` after printing the skip line.
fn gpu() -> Option<Device> {
    hr_tensor::testing::cuda_or_skip()
}

fn tolerance() -> f64 {
    hr_core::env_or("HR_CUDA_MEL_TOL", 2e-4)
}

/// Waveforms (B, N) of amplitude `amp`: a tone plus normal noise of `noise` relative level.
fn waveforms(b: usize, n: usize, amp: f32, noise: f32, seed: u64) -> Tensor {
    let z = randn32(&[b, n], &mut Rng::new(seed)).to_vec_f32().unwrap();
    let v: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, z)| amp * (noise * z + ((i % n) as f32 * 0.05).sin()))
        .collect();
    Tensor::from_vec(v, &[b, n]).unwrap()
}

/// Max |gpu - host|, the index of the worst element, and the NaN count of `gpu`.
fn diff(gpu: &Tensor, host: &Tensor) -> (f64, usize, usize) {
    assert_eq!(gpu.shape(), host.shape(), "shapes");
    let g = gpu.to_vec_f64().expect("download");
    let h = host.to_vec_f64().expect("host values");
    let nans = g.iter().filter(|v| v.is_nan()).count();
    let (mut err, mut worst) = (0f64, 0usize);
    for (i, (a, b)) in g.iter().zip(&h).enumerate() {
        if (a - b).abs() > err {
            err = (a - b).abs();
            worst = i;
        }
    }
    (err, worst, nans)
}

/// Compares one case in both modes; returns failure lines.
fn compare(fe: &MelFrontend, dev: Device, x: &Tensor, name: &str, seed: u64) -> Vec<String> {
    let mut fails = Vec::new();
    for mode in [Mode::Eval, Mode::Train { seed }] {
        let host = fe.forward(x, mode).expect("host forward");
        let line = match fe.forward_device(x, mode, dev) {
            Err(e) => format!("FAILED {name} {mode:?}: forward_device: {e}"),
            Ok(g) if g.device() != dev => {
                format!("FAILED {name} {mode:?}: output on {:?}", g.device())
            }
            Ok(g) => {
                let (err, worst, nans) = diff(&g, &host);
                let h = host.to_vec_f32().expect("host");
                let gv = g.to_vec_f32().expect("gpu");
                let masked_h = h.iter().filter(|&&v| v == 0.9).count();
                let masked_g = gv.iter().filter(|&&v| v == 0.9).count();
                let ok = nans == 0 && err <= tolerance() && masked_h == masked_g;
                format!(
                    "{} {name} {mode:?} {:?}: max abs err {err:.3e} at {worst} (gpu {}, host {}), \
                     NaN {nans}, entries at 0.9 host {masked_h} gpu {masked_g}",
                    if ok { "ok" } else { "FAILED" },
                    host.shape(),
                    gv[worst],
                    h[worst]
                )
            }
        };
        println!("{line}");
        if line.starts_with("FAILED") {
            fails.push(line);
        }
    }
    fails
}

#[test]
fn device_mel_matches_host_mel() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = gpu() else { return };
    let fe = MelFrontend::new(MelConfig::default()).unwrap();
    let mut fails = Vec::new();
    for (i, &(b, n, amp, noise)) in [
        (1usize, 514usize, 1.0f32, 0.3f32),
        (2, 320 * 5 + 1, 1.0, 0.3),
        (3, 96_077, 0.1, 0.3),
        (2, 96_000, 1.0, 0.0),
        (2, 3333, 1e-4, 0.3),
    ]
    .iter()
    .enumerate()
    {
        let x = waveforms(b, n, amp, noise, 500 + i as u64);
        let name = format!("b {b} n {n} amp {amp:e} noise {noise}");
        fails.extend(compare(&fe, dev, &x, &name, 900 + i as u64));
        // Waveforms already on the GPU take the same path.
        let xg = x.to_device(dev).expect("upload");
        fails.extend(compare(
            &fe,
            dev,
            &xg,
            &format!("{name} (on gpu)"),
            900 + i as u64,
        ));
    }
    assert!(
        fails.is_empty(),
        "{} failure(s):\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// Seconds of the best of 5 runs of `f` (after one warm-up), device synchronised.
fn time_best(ordinal: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    let mut best = f64::INFINITY;
    for i in 0..6 {
        cuda::synchronize(ordinal).expect("synchronize");
        let t0 = Instant::now();
        let y = f();
        cuda::synchronize(ordinal).expect("synchronize");
        let dt = t0.elapsed().as_secs_f64();
        drop(y);
        if i > 0 {
            best = best.min(dt);
        }
    }
    best
}

#[test]
fn device_mel_at_paper_size() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = gpu() else { return };
    let Device::Cuda(ordinal) = dev else { return };
    let fe = MelFrontend::new(MelConfig::default()).unwrap();
    let (b, n) = (32usize, 320_000usize);
    let x = waveforms(b, n, 0.1, 0.3, 1234);
    let fails = compare(&fe, dev, &x, "paper b 32 n 320000", 4321);
    // Timing without poisoning (the memsets would count).
    cuda::set_poison_outputs(false);
    let mode = Mode::Train { seed: 7 };
    let host = time_best(ordinal, || {
        fe.forward(&x, mode).unwrap().to_device(dev).unwrap()
    });
    let device = time_best(ordinal, || fe.forward_device(&x, mode, dev).unwrap());
    let xg = x.to_device(dev).unwrap();
    let resident = time_best(ordinal, || fe.forward_device(&xg, mode, dev).unwrap());
    println!(
        "paper size (32 x 320000, train): host frontend + upload {:.2} ms, device frontend \
         (host waveforms, incl. upload) {:.2} ms, device frontend (waveforms on the GPU) {:.2} ms",
        host * 1e3,
        device * 1e3,
        resident * 1e3
    );
    cuda::set_poison_outputs(true);
    assert!(
        fails.is_empty(),
        "{} failure(s):\n{}",
        fails.len(),
        fails.join("\n")
    );
}
