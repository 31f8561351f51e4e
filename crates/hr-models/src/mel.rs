//! The EfficientAT mel frontend (`AugmentMelSTFT`) and SpecAugment.
//!
//! Input (B, N) waveforms at 32 kHz; output (B, 1, 128, T) log-mel spectrograms with
//! `T = 1 + floor((N - 1) / 320)` (docs/spec-mobilenetv3-mn40.md section 1). In order: preemphasis
//! (N - 1 samples), reflect padding by 512, a symmetric Hann window of 800 samples centred in the
//! 1024-sample frame, a real FFT every 320 samples, power, a Kaldi-style mel bank (rebuilt per call
//! because fmin / fmax jitter in training), `ln(x + 1e-5)`, SpecAugment (training only) and
//! `(x + 4.5) / 5`. Examples are processed in parallel (rayon). Windowing, FFT, power and the
//! mel sum run in f64 (the mel weights in f32 as torchaudio builds them); against the f32
//! PyTorch reference the agreement is ~2e-5 relative, dominated by the reference's own FFT
//! rounding in quiet bins, which the logarithm amplifies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::Result;
use hr_nn::Mode;
use hr_tensor::{mix64, ops, DType, Device, Rng, Tensor};
use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

/// Settings of the mel frontend (EfficientAT defaults via [`MelConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    /// Sample rate in Hz.
    pub sample_rate: f64,
    /// Number of mel bins.
    pub n_mels: usize,
    /// FFT size (frame length).
    pub n_fft: usize,
    /// Window length (a symmetric Hann window zero-padded to `n_fft`, centred).
    pub win_length: usize,
    /// Hop between frames in samples.
    pub hop: usize,
    /// Preemphasis coefficient: `y[n] = x[n+1] - c x[n]`.
    pub preemphasis: f32,
    /// Lowest mel edge in Hz (evaluation).
    pub fmin: f64,
    /// Highest mel edge in Hz (evaluation).
    pub fmax: f64,
    /// Training jitter: fmin = `fmin + randint[0, fmin_aug_range)`.
    pub fmin_aug_range: usize,
    /// Training jitter: fmax = `fmax + fmax_aug_range / 2 - randint[0, fmax_aug_range)`.
    pub fmax_aug_range: usize,
    /// SpecAugment: maximum frequency-mask width in bins (0 = off).
    pub freq_mask: usize,
    /// SpecAugment: maximum time-mask width in frames (0 = off).
    pub time_mask: usize,
    /// Offset inside the logarithm.
    pub log_offset: f32,
}

impl Default for MelConfig {
    fn default() -> Self {
        MelConfig {
            sample_rate: 32000.0,
            n_mels: 128,
            n_fft: 1024,
            win_length: 800,
            hop: 320,
            preemphasis: 0.97,
            fmin: 0.0,
            fmax: 15000.0,
            fmin_aug_range: 10,
            fmax_aug_range: 2000,
            freq_mask: 48,
            time_mask: 192,
            log_offset: 1e-5,
        }
    }
}

/// A sparse mel filter bank: per filter, the first FFT bin and its non-zero weights.
#[derive(Debug, Clone, PartialEq)]
pub struct MelBank {
    /// Number of FFT bins (`n_fft / 2 + 1`; the Nyquist column is always zero).
    pub n_bins: usize,
    /// `(first bin, weights)` per mel filter.
    pub filters: Vec<(usize, Vec<f32>)>,
}

impl MelBank {
    /// The dense (n_mels, n_bins) matrix, row-major.
    pub fn dense(&self) -> Vec<f32> {
        let mut m = vec![0f32; self.filters.len() * self.n_bins];
        for (r, (start, w)) in self.filters.iter().enumerate() {
            let row = &mut m[r * self.n_bins..(r + 1) * self.n_bins];
            row[*start..*start + w.len()].copy_from_slice(w);
        }
        m
    }

    /// Applies the bank to one power spectrum of `n_bins` values.
    fn apply(&self, power: &[f64], out: &mut [f64]) {
        for ((start, w), o) in self.filters.iter().zip(out.iter_mut()) {
            *o = w
                .iter()
                .zip(&power[*start..])
                .map(|(a, b)| f64::from(*a) * b)
                .sum();
        }
    }
}

/// Kaldi mel scale `1127 ln(1 + f / 700)` (f32, as torchaudio computes it).
fn mel_scale(f: f32) -> f32 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// The Kaldi mel bank (torchaudio `get_mel_banks` without VTLN, plus a zero Nyquist column):
/// `n_mels` triangles evenly spaced in mel between `fmin` and `fmax`, weights
/// `max(0, min(up, down))` with slopes in the mel domain, no area normalisation.
pub fn kaldi_mel_bank(
    n_mels: usize,
    n_fft: usize,
    sample_rate: f64,
    fmin: f64,
    fmax: f64,
) -> MelBank {
    let n_bins = n_fft / 2 + 1;
    let lo = 1127.0 * (1.0 + fmin / 700.0).ln();
    let hi = 1127.0 * (1.0 + fmax / 700.0).ln();
    let delta = (hi - lo) / (n_mels + 1) as f64;
    let bin_width = (sample_rate / n_fft as f64) as f32;
    let mels: Vec<f32> = (0..n_fft / 2)
        .map(|i| mel_scale(bin_width * i as f32))
        .collect();
    let filters = (0..n_mels)
        .map(|m| {
            // torchaudio's f32 chain: lo + (bin + k) * delta with f32 rounding at each step.
            let edge = |k: f32| (m as f32 + k) * delta as f32 + lo as f32;
            let (left, center, right) = (edge(0.0), edge(1.0), edge(2.0));
            let w: Vec<f32> = mels
                .iter()
                .map(|&x| {
                    ((x - left) / (center - left))
                        .min((right - x) / (right - center))
                        .max(0.0)
                })
                .collect();
            sparse_row(&w)
        })
        .collect();
    MelBank { n_bins, filters }
}

/// `(first non-zero index, weights up to the last non-zero)` of a dense row.
fn sparse_row(w: &[f32]) -> (usize, Vec<f32>) {
    let first = w.iter().position(|&v| v != 0.0);
    let last = w.iter().rposition(|&v| v != 0.0);
    match (first, last) {
        (Some(a), Some(b)) => (a, w[a..=b].to_vec()),
        _ => (0, Vec::new()),
    }
}

/// Symmetric Hann window of `win` samples, zero-padded centred to `n_fft`.
pub fn centred_hann(win: usize, n_fft: usize) -> Vec<f32> {
    let mut w = vec![0f32; n_fft];
    let off = (n_fft - win) / 2;
    let denom = win.saturating_sub(1).max(1) as f64;
    for n in 0..win {
        let v = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / denom).cos();
        w[off + n] = v as f32;
    }
    w
}

/// Preemphasis `y[n] = x[n+1] - c x[n]` (N - 1 samples).
pub fn preemphasis(x: &[f32], c: f32) -> Vec<f32> {
    x.windows(2).map(|p| p[1] - c * p[0]).collect()
}

/// numpy `reflect` padding by `pad` on both sides (the edge sample is not repeated);
/// needs `x.len() > pad`.
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f32> {
    let n = x.len();
    let mut y = Vec::with_capacity(n + 2 * pad);
    y.extend((1..=pad).rev().map(|i| x[i]));
    y.extend_from_slice(x);
    y.extend((1..=pad).map(|i| x[n - 1 - i]));
    y
}

/// Masks drawn for one example (SpecAugment), as `(start, width)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    /// Frequency mask (bins).
    pub freq: (usize, usize),
    /// Time mask (frames).
    pub time: (usize, usize),
}

/// One SpecAugment mask along an axis of `size`: `width = floor(U * param)` (at most `size`),
/// `start = floor(U * (size - width))` (the spec's form; torchaudio subtracts the unfloored
/// width, a difference of at most one start position).
fn draw_mask(rng: &mut Rng, param: usize, size: usize) -> (usize, usize) {
    let width = ((rng.uniform() * param as f64) as usize).min(size);
    let start = (rng.uniform() * (size - width) as f64) as usize;
    (start, width)
}

/// The SpecAugment masks of example `b` of a training call with `seed` (frequency mask first).
pub fn draw_masks(cfg: &MelConfig, seed: u64, b: usize, n_frames: usize) -> Masks {
    let mut rng = Rng::new(mix64(seed ^ mix64(0x5bec_a001 + b as u64)));
    let freq = draw_mask(&mut rng, cfg.freq_mask, cfg.n_mels);
    let time = draw_mask(&mut rng, cfg.time_mask, n_frames);
    Masks { freq, time }
}

/// The (fmin, fmax) of a call: fixed in evaluation, jittered per call in training.
pub fn mel_range(cfg: &MelConfig, mode: Mode) -> (f64, f64) {
    match mode {
        Mode::Eval => (cfg.fmin, cfg.fmax),
        Mode::Train { seed } => {
            let mut rng = Rng::new(mix64(seed ^ 0x00f0_f1f2));
            let fmin = cfg.fmin + rng.below(cfg.fmin_aug_range) as f64;
            let fmax =
                cfg.fmax + (cfg.fmax_aug_range / 2) as f64 - rng.below(cfg.fmax_aug_range) as f64;
            (fmin, fmax)
        }
    }
}

/// The constant tensors of [`MelFrontend::forward_device`] on one device.
#[derive(Clone)]
struct DeviceConsts {
    /// The centred window (n_fft).
    window: Tensor,
    /// The DFT basis (n_fft, 2 * n_bins): `cos(2 pi k n / n_fft)` then `-sin(..)` columns.
    basis: Tensor,
}

/// The EfficientAT mel frontend with a cached FFT plan and window (and, per device, the
/// window and DFT basis of the device path).
#[derive(Clone)]
pub struct MelFrontend {
    cfg: MelConfig,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f64>>,
    device_consts: Arc<Mutex<HashMap<Device, DeviceConsts>>>,
}

impl std::fmt::Debug for MelFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontend")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// An invalid-argument error of the frontend.
fn invalid(msg: String) -> crate::Error {
    hr_tensor::Error::invalid("mel_frontend", msg).into()
}

impl MelFrontend {
    /// A frontend for `cfg`; errors when the geometry is inconsistent.
    pub fn new(cfg: MelConfig) -> Result<MelFrontend> {
        let ok = cfg.n_fft >= 2
            && cfg.win_length >= 1
            && cfg.win_length <= cfg.n_fft
            && cfg.hop >= 1
            && cfg.n_mels >= 1
            && cfg.fmin >= 0.0
            && cfg.fmax > cfg.fmin
            && cfg.fmax <= cfg.sample_rate / 2.0;
        if !ok {
            return Err(crate::Error::Config {
                key: "mel".into(),
                msg: format!("inconsistent settings {cfg:?}"),
            });
        }
        let window = centred_hann(cfg.win_length, cfg.n_fft);
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        Ok(MelFrontend {
            cfg,
            window,
            fft,
            device_consts: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of frames for `n` input samples: `1 + (n - 1) / hop`.
    pub fn n_frames(&self, n: usize) -> usize {
        1 + n.saturating_sub(1) / self.cfg.hop
    }

    /// Waveforms (B, N) -> log-mel (B, 1, n_mels, T) f32 on the host. Waveforms on a GPU are
    /// downloaded first: this frontend is host code (realfft + rayon), the f64 reference;
    /// [`MelFrontend::forward_device`] computes the same on any device with tensor ops (the
    /// retriever uses it for CUDA models). Training mode jitters fmin / fmax
    /// (one draw per call) and applies one frequency and one time mask per example; all draws
    /// derive from the mode's seed. Errors name `mel_frontend` and the input shape.
    pub fn forward(&self, wav: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, n) = self.check_input(wav)?;
        let data = wav.to_vec_f32()?;
        check_finite(&data, wav.shape())?;
        let (fmin, fmax) = mel_range(&self.cfg, mode);
        let bank = kaldi_mel_bank(
            self.cfg.n_mels,
            self.cfg.n_fft,
            self.cfg.sample_rate,
            fmin,
            fmax,
        );
        let t = self.n_frames(n);
        let per = self.cfg.n_mels * t;
        let mut out = vec![0f32; b * per];
        out.par_chunks_mut(per).enumerate().try_for_each(|(i, o)| {
            self.example(&data[i * n..(i + 1) * n], &bank, o)?;
            if let Mode::Train { seed } = mode {
                self.spec_augment(o, draw_masks(&self.cfg, seed, i, t), t);
            }
            o.iter_mut().for_each(|v| *v = (*v + 4.5) / 5.0);
            Ok::<(), crate::Error>(())
        })?;
        Ok(Tensor::from_vec(out, &[b, 1, self.cfg.n_mels, t])?)
    }

    /// The same log-mel as [`MelFrontend::forward`], computed with tensor ops on `device`
    /// (f32 throughout): `frame_signal` (preemphasis, reflect padding, framing, window), the
    /// DFT as a GEMM against a cached (n_fft, 2 * n_bins) cos | -sin basis, power, the mel
    /// bank as a GEMM (the call's jittered bank is built on the host and uploaded), `ln(x +
    /// offset)`, a permute to (B, 1, n_mels, T), SpecAugment as multiplies by host-built
    /// 0/1 frequency and time factors (training; the masks of `forward`, drawn by
    /// [`draw_masks`]) and
    /// `(x + 4.5) / 5`. The waveforms are uploaded first when they live elsewhere. Forward
    /// only (no gradient reaches the waveforms). Against the f64 host path the agreement is
    /// about 1e-5 absolute on the normalised output (f32 DFT rounding relative to each frame's
    /// energy, amplified by the logarithm in near-silent bins).
    pub fn forward_device(&self, wav: &Tensor, mode: Mode, device: Device) -> Result<Tensor> {
        let (b, n) = self.check_input(wav)?;
        let cfg = &self.cfg;
        let consts = self.consts(device)?;
        // The op path is f32 (window, basis and bank are f32); f64 host input is converted.
        let x = match wav.dtype() {
            DType::F32 => wav.to_device(device)?,
            _ => wav.to_dtype(DType::F32)?.to_device(device)?,
        };
        let frames = ops::frame_signal(&x, &consts.window, cfg.hop, f64::from(cfg.preemphasis))?;
        let t = self.n_frames(n);
        if frames.shape() != [b * t, cfg.n_fft] {
            return Err(invalid(format!(
                "input shape {:?}: frames {:?}, expected ({b} x {t}, {}) (odd n_fft?)",
                wav.shape(),
                frames.shape(),
                cfg.n_fft
            )));
        }
        let power = self.power_spectrum(&frames, &consts.basis)?;
        let (fmin, fmax) = mel_range(cfg, mode);
        let bank = kaldi_mel_bank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, fmin, fmax);
        let bank = Tensor::from_vec(bank.dense(), &[cfg.n_mels, bank.n_bins])?.to_device(device)?;
        let mel = ops::matmul_ex(&power, &bank, false, true, 1.0)?;
        let log = ops::unary(
            hr_tensor::Unary::Log,
            &ops::affine(&mel, 1.0, f64::from(cfg.log_offset))?,
        )?;
        let log = ops::permute(&log.reshape(&[b, t, cfg.n_mels])?, &[0, 2, 1])?
            .reshape(&[b, 1, cfg.n_mels, t])?;
        let log = match mode {
            Mode::Train { seed } => {
                let (freq, time) = self.mask_factors(seed, b, t)?;
                let log = ops::mul(&log, &freq.to_device(device)?)?;
                ops::mul(&log, &time.to_device(device)?)?
            }
            Mode::Eval => log,
        };
        Ok(ops::affine(&log, 0.2, 0.9)?)
    }

    /// `|DFT|^2` (rows, n_bins) of windowed frames (rows, n_fft) through the basis GEMM.
    fn power_spectrum(&self, frames: &Tensor, basis: &Tensor) -> Result<Tensor> {
        let nb = self.cfg.n_fft / 2 + 1;
        let spec = ops::matmul(frames, basis)?;
        let re = ops::slice(&spec, 1, 0, nb)?;
        let im = ops::slice(&spec, 1, nb, nb)?;
        Ok(ops::add(&ops::mul(&re, &re)?, &ops::mul(&im, &im)?)?)
    }

    /// The SpecAugment masks of a training call (the masks of `forward`, drawn by
    /// [`draw_masks`]) as two host tensors of 1 (keep) and 0 (masked) whose broadcast product
    /// is the (B, 1, n_mels, T) mask: frequency rows (B, 1, n_mels, 1) and time columns
    /// (B, 1, 1, T). Uploading the factors moves B (n_mels + T) floats instead of B n_mels T.
    fn mask_factors(&self, seed: u64, b: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let n_mels = self.cfg.n_mels;
        let (mut freq, mut time) = (vec![1f32; b * n_mels], vec![1f32; b * t]);
        for i in 0..b {
            let masks = draw_masks(&self.cfg, seed, i, t);
            let (fs, fw) = masks.freq;
            freq[i * n_mels + fs..i * n_mels + fs + fw].fill(0.0);
            let (ts, tw) = masks.time;
            time[i * t + ts..i * t + ts + tw].fill(0.0);
        }
        Ok((
            Tensor::from_vec(freq, &[b, 1, n_mels, 1])?,
            Tensor::from_vec(time, &[b, 1, 1, t])?,
        ))
    }

    /// The window and DFT basis on `device` (built and uploaded on first use).
    fn consts(&self, device: Device) -> Result<DeviceConsts> {
        let mut map = self
            .device_consts
            .lock()
            .map_err(|_| invalid("device constant cache poisoned by an earlier panic".into()))?;
        if let Some(c) = map.get(&device) {
            return Ok(c.clone());
        }
        let n_fft = self.cfg.n_fft;
        let c = DeviceConsts {
            window: Tensor::from_slice(&self.window, &[n_fft])?.to_device(device)?,
            basis: Tensor::from_vec(dft_basis(n_fft), &[n_fft, 2 * (n_fft / 2 + 1)])?
                .to_device(device)?,
        };
        map.insert(device, c.clone());
        Ok(c)
    }

    /// Validates the input and returns (B, N).
    fn check_input(&self, wav: &Tensor) -> Result<(usize, usize)> {
        let &[b, n] = wav.shape() else {
            return Err(invalid(format!(
                "expected waveforms (B, N), got shape {:?}",
                wav.shape()
            )));
        };
        let pad = self.cfg.n_fft / 2;
        if n < pad + 2 {
            return Err(invalid(format!(
                "input shape {:?}: need at least {} samples per waveform (reflect padding of {pad})",
                wav.shape(),
                pad + 2
            )));
        }
        Ok((b, n))
    }

    /// Log-mel (n_mels, T) of one waveform into `out` (before normalisation).
    fn example(&self, x: &[f32], bank: &MelBank, out: &mut [f32]) -> Result<()> {
        let cfg = &self.cfg;
        let padded = reflect_pad(&preemphasis(x, cfg.preemphasis), cfg.n_fft / 2);
        let t = out.len() / cfg.n_mels;
        let mut frame = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; bank.n_bins];
        let mut mel = vec![0f64; cfg.n_mels];
        for f in 0..t {
            let seg = &padded[f * cfg.hop..f * cfg.hop + cfg.n_fft];
            frame
                .iter_mut()
                .zip(seg.iter().zip(&self.window))
                .for_each(|(d, (s, w))| *d = f64::from(*s) * f64::from(*w));
            self.fft
                .process_with_scratch(&mut frame, &mut spec, &mut scratch)
                .map_err(|e| invalid(format!("FFT failed: {e}")))?;
            power
                .iter_mut()
                .zip(&spec)
                .for_each(|(p, c)| *p = c.re * c.re + c.im * c.im);
            bank.apply(&power, &mut mel);
            for (m, v) in mel.iter().enumerate() {
                out[m * t + f] = (v + f64::from(cfg.log_offset)).ln() as f32;
            }
        }
        Ok(())
    }

    /// Sets the masked bins and frames of one (n_mels, T) log-mel to 0.
    fn spec_augment(&self, out: &mut [f32], masks: Masks, t: usize) {
        let (fs, fw) = masks.freq;
        out[fs * t..(fs + fw) * t].iter_mut().for_each(|v| *v = 0.0);
        let (ts, tw) = masks.time;
        for row in out.chunks_mut(t) {
            row[ts..ts + tw].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// The real-DFT basis (n_fft, 2 * (n_fft / 2 + 1)), row-major: row `n`, column `k` holds
/// `cos(2 pi k n / n_fft)` and column `n_bins + k` holds `-sin(2 pi k n / n_fft)` (computed in
/// f64 with the exact integer phase `k n mod n_fft`, stored as f32), so that `frame @ basis`
/// is (Re X, Im X) of realfft's forward transform.
pub fn dft_basis(n_fft: usize) -> Vec<f32> {
    let nb = n_fft / 2 + 1;
    let mut m = vec![0f32; n_fft * 2 * nb];
    for (n, row) in m.chunks_mut(2 * nb).enumerate() {
        for k in 0..nb {
            let phase = 2.0 * std::f64::consts::PI * ((k * n) % n_fft) as f64 / n_fft as f64;
            row[k] = phase.cos() as f32;
            row[nb + k] = -phase.sin() as f32;
        }
    }
    m
}

/// NaN / Inf in the input is an error in debug builds (a cheap check; release builds skip it).
fn check_finite(data: &[f32], shape: &[usize]) -> Result<()> {
    if cfg!(debug_assertions) {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!(
                "input shape {shape:?}: non-finite value {} at flat index {i}",
                data[i]
            )));
        }
    }
    Ok(())
}
