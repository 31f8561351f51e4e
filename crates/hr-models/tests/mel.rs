//! The mel frontend: parity with EfficientAT's `AugmentMelSTFT` (eval) and the determinism of
//! the training-time jitter and SpecAugment.

use hr_models::mel::{centred_hann, draw_masks, kaldi_mel_bank, mel_range, MelConfig, MelFrontend};
use hr_nn::io::read_safetensors;
use hr_nn::Mode;
use hr_tensor::testing::{assert_close, randn32};
use hr_tensor::{Rng, Tensor};

use hr_core::testing::assert_mentions;
use hr_tensor::testing::reference_fixture as fixture;

fn frontend() -> MelFrontend {
    MelFrontend::new(MelConfig::default()).unwrap()
}

#[test]
fn mel_frontend_matches_reference() {
    let path = fixture("mel_frontend.safetensors");
    let f = read_safetensors(&path).unwrap();
    let wav = f.get(&path, "waveform").unwrap();
    let want = f.get(&path, "mel").unwrap();
    let got = frontend().forward(wav, Mode::Eval).unwrap();
    let (b, m, t) = (want.shape()[0], want.shape()[1], want.shape()[2]);
    assert_eq!(got.shape(), &[b, 1, m, t]);
    assert_close("mel", &got.reshape(&[b, m, t]).unwrap(), want, 1e-4);
}

#[test]
fn window_and_bank_follow_the_spec() {
    let w = centred_hann(800, 1024);
    assert_eq!(w[111], 0.0);
    assert_eq!(w[912], 0.0);
    assert!(w[112].abs() < 1e-12 && w[911].abs() < 1e-12 && w[112 + 399] > 0.99);
    let bank = kaldi_mel_bank(128, 1024, 32000.0, 0.0, 15000.0);
    assert_eq!(bank.n_bins, 513);
    let dense = bank.dense();
    assert_eq!(dense.len(), 128 * 513);
    assert!(
        (0..128).all(|m| dense[m * 513 + 512] == 0.0),
        "zero Nyquist column"
    );
    assert!(dense.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(
        dense.iter().any(|&v| v > 0.9),
        "triangles peak near 1 (no area normalisation)"
    );
}

#[test]
fn frame_count_and_shape() {
    let fe = frontend();
    assert_eq!(fe.n_frames(320_000), 1000);
    let x = randn32(&[3, 320 * 7 + 5], &mut Rng::new(1));
    let y = fe.forward(&x, Mode::Eval).unwrap();
    assert_eq!(y.shape(), &[3, 1, 128, 1 + (320 * 7 + 4) / 320]);
}

#[test]
fn training_jitter_is_seeded_and_in_range() {
    let cfg = MelConfig::default();
    assert_eq!(mel_range(&cfg, Mode::Eval), (0.0, 15000.0));
    let mut seen = std::collections::HashSet::new();
    for seed in 0..200 {
        let (lo, hi) = mel_range(&cfg, Mode::Train { seed });
        assert_eq!((lo, hi), mel_range(&cfg, Mode::Train { seed }));
        assert!((0.0..10.0).contains(&lo) && lo.fract() == 0.0, "fmin {lo}");
        assert!(
            hi > 14000.0 && hi <= 16000.0 && hi.fract() == 0.0,
            "fmax {hi}"
        );
        seen.insert((lo as i64, hi as i64));
    }
    assert!(seen.len() > 100, "jitter varies with the seed");
}

#[test]
fn spec_augment_is_seeded_and_per_example() {
    let fe = frontend();
    let x = randn32(&[4, 320 * 300], &mut Rng::new(2));
    let t = fe.n_frames(320 * 300);
    let a = fe
        .forward(&x, Mode::Train { seed: 7 })
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let b = fe
        .forward(&x, Mode::Train { seed: 7 })
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let c = fe
        .forward(&x, Mode::Train { seed: 8 })
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_eq!(a, b, "same seed, same output");
    assert_ne!(a, c, "another seed, another output");
    let cfg = fe.config();
    let masks: Vec<_> = (0..4).map(|i| draw_masks(cfg, 7, i, t)).collect();
    assert!(
        masks.windows(2).any(|w| w[0] != w[1]),
        "masks differ between examples"
    );
    for (i, m) in masks.iter().enumerate() {
        assert!(m.freq.1 <= 48 && m.freq.0 + m.freq.1 <= 128);
        assert!(m.time.1 <= 192 && m.time.0 + m.time.1 <= t);
        let ex = &a[i * 128 * t..(i + 1) * 128 * t];
        for f in m.freq.0..m.freq.0 + m.freq.1 {
            assert!(
                ex[f * t..(f + 1) * t].iter().all(|&v| v == 0.9),
                "freq mask -> (0 + 4.5) / 5"
            );
        }
        for f in 0..128 {
            assert!(ex[f * t + m.time.0..f * t + m.time.0 + m.time.1]
                .iter()
                .all(|&v| v == 0.9));
        }
    }
}

#[test]
fn bad_input_names_the_op_and_shape() {
    let fe = frontend();
    let e = fe
        .forward(
            &Tensor::full(&[2, 3, 4000], 0.0, hr_tensor::DType::F32).unwrap(),
            Mode::Eval,
        )
        .unwrap_err();
    let msg = e.to_string();
    assert_mentions(&msg, &["mel_frontend", "[2, 3, 4000]"]);
    let e = fe
        .forward(
            &Tensor::full(&[1, 100], 0.0, hr_tensor::DType::F32).unwrap(),
            Mode::Eval,
        )
        .unwrap_err();
    assert!(e.to_string().contains("[1, 100]"), "{e}");
}

/// Waveforms (B, N) of amplitude `amp`: a tone plus normal noise of `noise` relative level, f32.
fn waveforms(b: usize, n: usize, amp: f32, noise: f32, seed: u64) -> Tensor {
    let z = randn32(&[b, n], &mut Rng::new(seed)).to_vec_f32().unwrap();
    let v: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, z)| amp * (noise * z + (i as f32 * 0.05).sin()))
        .collect();
    Tensor::from_vec(v, &[b, n]).unwrap()
}

/// Max |a - b| over two tensors of one shape.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Tolerance of the device path (f32 DFT as a GEMM) against the f64 host path, on the
/// normalised output `(ln(mel + 1e-5) + 4.5) / 5` (2e-4 there = 1e-3 on the log-mel).
/// Measured on the CPU backend (max abs): ~7e-6 for noise-like signals at unit amplitude,
/// ~6e-5 for a pure unit tone (near-silent leakage bins, where ln amplifies the f32 rounding of
/// the DFT, which is relative to the frame's energy), below 1e-6 at 1e-3 and 1e-5 amplitude
/// (the 1e-5 offset dominates). 2e-4 is ~3x the worst measured case, room for cuBLAS's
/// different summation order.
const DEVICE_TOL: f64 = 2e-4;

#[test]
fn device_path_on_the_cpu_matches_the_host_path() {
    let fe = frontend();
    // Odd lengths; the 96k-sample cases have 300 frames, so the time mask (up to 192 frames)
    // and the frequency mask (up to 48 bins) are partial in training mode.
    for (i, &(b, n, amp, noise)) in [
        (2usize, 320 * 5 + 1, 1.0f32, 0.3f32),
        (3, 320 * 4 + 7, 1e-3, 0.3),
        (1, 514, 1e-5, 0.3),
        (2, 3333, 1.0, 0.0),
        (2, 96_001, 0.1, 0.3),
        (1, 96_000 + 77, 1.0, 0.0),
    ]
    .iter()
    .enumerate()
    {
        let x = waveforms(b, n, amp, noise, 40 + i as u64);
        for mode in [
            Mode::Eval,
            Mode::Train {
                seed: 77 + i as u64,
            },
        ] {
            let host = fe.forward(&x, mode).unwrap();
            let dev = fe.forward_device(&x, mode, hr_tensor::Device::Cpu).unwrap();
            let err = max_abs_diff(&dev, &host);
            println!("b {b} n {n} amp {amp:e} noise {noise} {mode:?}: max abs err {err:.3e}");
            assert!(err <= DEVICE_TOL, "b {b} n {n} amp {amp} {mode:?}: {err:e}");
            if let (Mode::Train { .. }, true) = (mode, n > 90_000) {
                // The masked entries coincide: exactly 0.9 = (0 + 4.5) / 5 on both paths.
                let (h, d) = (host.to_vec_f32().unwrap(), dev.to_vec_f32().unwrap());
                let masked = |v: &[f32]| v.iter().map(|&x| x == 0.9).collect::<Vec<_>>();
                let mh = masked(&h);
                assert_eq!(mh, masked(&d), "SpecAugment masks differ");
                let count = mh.iter().filter(|&&m| m).count();
                println!("  masked {count} of {}", mh.len());
                assert!(count > 0 && count < mh.len(), "masks not partial");
            }
        }
    }
}

#[test]
fn device_path_rejects_bad_input() {
    let fe = frontend();
    let short = Tensor::from_vec(vec![0f32; 2 * 100], &[2, 100]).unwrap();
    assert!(fe
        .forward_device(&short, Mode::Eval, hr_tensor::Device::Cpu)
        .is_err());
    // f64 waveforms are converted to f32 (the host path accepts them too).
    let x = Tensor::from_vec(
        (0..2 * 1000)
            .map(|i| (i as f64 * 0.01).sin())
            .collect::<Vec<_>>(),
        &[2, 1000],
    )
    .unwrap();
    let want = fe.forward(&x, Mode::Eval).unwrap();
    let got = fe
        .forward_device(&x, Mode::Eval, hr_tensor::Device::Cpu)
        .unwrap();
    assert!(max_abs_diff(&got, &want) <= DEVICE_TOL);
    let flat = Tensor::from_vec(vec![0f32; 2000], &[2000]).unwrap();
    assert!(fe
        .forward_device(&flat, Mode::Eval, hr_tensor::Device::Cpu)
        .is_err());
}
