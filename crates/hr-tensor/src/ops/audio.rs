//! Front-end ops of the audio family: [`frame_signal`], the framing step of a mel frontend
//! (preemphasis, reflect padding, framing and window multiply). Forward only: the mel frontend
//! has no parameters and no model backpropagates into its waveforms, so
//! [`frame_signal_bwd`] is a typed error.

use super::{expect_rank, pair};
use crate::backend::FrameSpec;
use crate::{Error, Result, Tensor};

/// The validated geometry of framing `wav` (B, N) with frames of `n_fft` every `hop` samples.
/// Needs `N - 1 > n_fft / 2` (reflect padding reads that far into the preemphasised signal).
pub fn frame_spec(
    wav_shape: &[usize],
    n_fft: usize,
    hop: usize,
    preemphasis: f64,
) -> Result<FrameSpec> {
    const OP: &str = "frame_signal";
    let &[batch, samples] = wav_shape else {
        return Err(Error::invalid(
            OP,
            format!("expected waveforms (B, N), got shape {wav_shape:?}"),
        ));
    };
    if n_fft < 2 || hop == 0 || !preemphasis.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("need n_fft >= 2, hop >= 1, finite preemphasis; got n_fft {n_fft}, hop {hop}, preemphasis {preemphasis}"),
        ));
    }
    let pad = n_fft / 2;
    let len = samples.saturating_sub(1);
    if len <= pad {
        return Err(Error::invalid(
            OP,
            format!(
                "waveforms {wav_shape:?}: need at least {} samples (reflect padding of {pad})",
                pad + 2
            ),
        ));
    }
    // len > pad and n_fft <= 2 pad + 1 make len + 2 pad - n_fft >= 0.
    let frames = 1 + (len + 2 * pad - n_fft) / hop;
    Ok(FrameSpec {
        batch,
        samples,
        n_fft,
        hop,
        pad,
        frames,
        preemphasis,
    })
}

/// Waveforms `wav` (B, N) -> windowed frames (B * T, n_fft),
/// `T = 1 + (N - 1 + 2 (n_fft / 2) - n_fft) / hop` (`1 + (N - 1) / hop` for even `n_fft`).
/// Row `b * T + t` holds
/// `y[t * hop + j - n_fft / 2] * window[j]` where `y[n] = x[n + 1] - preemphasis * x[n]`
/// (N - 1 samples) is read with numpy `reflect` padding (the edge sample is not repeated).
/// `window` has shape (n_fft) and the dtype and device of `wav`.
pub fn frame_signal(wav: &Tensor, window: &Tensor, hop: usize, preemphasis: f64) -> Result<Tensor> {
    let be = pair("frame_signal", wav, window)?;
    expect_rank("frame_signal", window, 1)?;
    let spec = frame_spec(wav.shape(), window.numel(), hop, preemphasis)?;
    be.frame_signal(wav, window, &spec)
}

/// Backward of [`frame_signal`]: not provided (the op is forward only, see the module docs);
/// always returns [`Error::NotImplemented`].
pub fn frame_signal_bwd(dy: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented {
        op: "frame_signal_bwd (frame_signal is forward only)",
        device: dy.device(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, Rng};

    /// A direct loop: preemphasise, reflect-pad, frame, window (f64).
    fn reference(x: &[f32], b: usize, n: usize, w: &[f32], hop: usize, c: f32) -> Vec<f64> {
        let n_fft = w.len();
        let pad = n_fft / 2;
        let mut out = Vec::new();
        for e in 0..b {
            let xe = &x[e * n..(e + 1) * n];
            let y: Vec<f32> = (0..n - 1).map(|i| xe[i + 1] - c * xe[i]).collect();
            let mut padded: Vec<f32> = (1..=pad).rev().map(|i| y[i]).collect();
            padded.extend_from_slice(&y);
            padded.extend((1..=pad).map(|i| y[n - 2 - i]));
            let mut start = 0;
            while start + n_fft <= padded.len() {
                out.extend((0..n_fft).map(|j| f64::from(padded[start + j] * w[j])));
                start += hop;
            }
        }
        out
    }

    fn check(b: usize, n: usize, n_fft: usize, hop: usize) {
        let mut rng = Rng::new(7 + n as u64);
        let x = Tensor::randn(&[b, n], 1.0, &mut rng).unwrap();
        let w = Tensor::rand_uniform(&[n_fft], 0.0, 1.0, &mut rng).unwrap();
        let y = frame_signal(&x, &w, hop, 0.97).unwrap();
        let (xs, ws) = (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap());
        let r = reference(&xs, b, n, &ws, hop, 0.97);
        let t = r.len() / (b * n_fft);
        assert_eq!(
            y.shape(),
            &[b * t, n_fft],
            "b {b} n {n} n_fft {n_fft} hop {hop}"
        );
        if n_fft.is_multiple_of(2) {
            assert_eq!(t, 1 + (n - 1) / hop);
        }
        // Same f32 operations in the same order: exact.
        for (i, (a, e)) in y.to_vec_f64().unwrap().iter().zip(&r).enumerate() {
            assert_eq!(*a, *e, "element {i} (b {b} n {n} n_fft {n_fft} hop {hop})");
        }
    }

    #[test]
    fn frame_signal_matches_a_direct_loop() {
        check(1, 7, 4, 1);
        check(3, 37, 8, 3);
        check(2, 50, 16, 5);
        check(2, 11, 5, 2); // odd n_fft
        check(1, 10, 16, 4); // the minimum length for pad 8
    }

    #[test]
    fn frame_signal_f64_and_errors() {
        let x = Tensor::from_vec((0..20).map(f64::from).collect::<Vec<_>>(), &[2, 10]).unwrap();
        let w = Tensor::from_vec(vec![1.0f64; 4], &[4]).unwrap();
        let y = frame_signal(&x, &w, 2, 0.0).unwrap();
        // c = 0: y[n] = x[n + 1]; first frame = reflect(-2, -1, 0, 1) = y[2], y[1], y[0], y[1].
        assert_eq!(&y.to_vec_f64().unwrap()[..4], &[3.0, 2.0, 1.0, 2.0]);
        let w32 = Tensor::from_vec(vec![1.0f32; 4], &[4]).unwrap();
        assert!(frame_signal(&x, &w32, 2, 0.97).is_err(), "dtype mismatch");
        let short = Tensor::zeros(&[2, 3], crate::DType::F64, Device::Cpu).unwrap();
        assert!(frame_signal(&short, &w, 2, 0.97).is_err(), "too short");
        assert!(frame_signal(&x, &w, 0, 0.97).is_err(), "hop 0");
        let flat = Tensor::zeros(&[20], crate::DType::F64, Device::Cpu).unwrap();
        assert!(frame_signal(&flat, &w, 2, 0.97).is_err(), "rank 1");
        assert!(matches!(
            frame_signal_bwd(&y),
            Err(Error::NotImplemented { .. })
        ));
    }
}
