//! Long inputs as non-overlapping 10 s windows whose frame tokens are concatenated along time
//! (docs/spec-retrieval.md section 1; docs/spec-mobilenetv3-mn40.md section 3).
//!
//! Windows are cut from the mel input: a 10 s window is [`WINDOW_FRAMES`] mel frames (320000
//! samples give 1000 frames, so a 30 s clip's 3000 frames give three windows of T' = 32). The
//! windows run as one batch of B x n examples (window k of example b at index b n + k), so in
//! training every BatchNorm sees the statistics of all windows, as with the authors' reshape.

use crate::Result;
use hr_nn::{Mode, ParamStore};
use hr_tensor::{ops, Tensor};

use super::{MobileNetCache, MobileNetGrads, MobileNetV3};

/// Mel frames of one 10 s window (hop 320 at 32 kHz, preemphasis dropping one sample).
pub const WINDOW_FRAMES: usize = 1000;

/// `(number of windows, frames per window)` for an input of `t` frames: one window of all
/// frames when `t <= window`, otherwise `t / window` full windows (the incomplete tail is
/// dropped).
pub fn window_layout(t: usize, window: usize) -> (usize, usize) {
    if t <= window || window == 0 {
        (1, t)
    } else {
        (t / window, window)
    }
}

/// Saved state of [`MobileNetV3::forward_windows`].
#[derive(Debug, Clone)]
pub struct WindowedCache {
    inner: MobileNetCache,
    in_shape: Vec<usize>,
    n: usize,
    len: usize,
}

impl MobileNetV3 {
    /// Frame sequence of a mel input (B, 1, F, T) cut into windows of `window` frames:
    /// returns (B, n T'_w, C), the windows' frames concatenated in time order.
    pub fn forward_windows(
        &self,
        ps: &mut ParamStore,
        mel: &Tensor,
        mode: Mode,
        window: usize,
    ) -> Result<(Tensor, WindowedCache)> {
        Self::check_input(mel)?;
        let s = mel.shape().to_vec();
        let (b, f) = (s[0], s[2]);
        let (n, len) = window_layout(s[3], window);
        let x = ops::slice(mel, 3, 0, n * len)?.reshape(&[b, 1, f, n, len])?;
        let x = ops::permute(&x, &[0, 3, 1, 2, 4])?.reshape(&[b * n, 1, f, len])?;
        let (out, inner) = self.forward_backbone(ps, &x, mode)?;
        let (tw, c) = (out.frames.shape()[1], out.frames.shape()[2]);
        let frames = out.frames.reshape(&[b, n * tw, c])?;
        Ok((
            frames,
            WindowedCache {
                inner,
                in_shape: s,
                n,
                len,
            },
        ))
    }

    /// Backward of [`MobileNetV3::forward_windows`]: accumulates the parameter gradients and
    /// returns d mel (B, 1, F, T) (zero on a dropped tail).
    pub fn backward_windows(
        &self,
        ps: &mut ParamStore,
        cache: &WindowedCache,
        dframes: &Tensor,
    ) -> Result<Tensor> {
        let s = &cache.in_shape;
        let (b, f, t, n, len) = (s[0], s[2], s[3], cache.n, cache.len);
        let d = dframes.shape();
        if d.len() != 3 || d[0] != b || d[1].checked_rem(n) != Some(0) {
            return Err(hr_tensor::Error::invalid(
                "mobilenet_v3",
                format!("frame gradient of shape {d:?} does not fit {n} windows of a batch of {b}"),
            )
            .into());
        }
        let dw = dframes.reshape(&[b * n, d[1] / n, d[2]])?;
        let grads = MobileNetGrads {
            frames: Some(dw),
            ..Default::default()
        };
        let dx = self
            .backward(ps, &cache.inner, &grads)?
            .reshape(&[b, n, 1, f, len])?;
        let dx = ops::permute_bwd(&dx, &[0, 3, 1, 2, 4])?.reshape(&[b, 1, f, n * len])?;
        Ok(ops::pad_axis(&dx, 3, 0, t)?)
    }
}
