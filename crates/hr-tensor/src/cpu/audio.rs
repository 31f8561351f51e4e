//! Audio family on the CPU: `frame_signal` (preemphasis, reflect padding, framing, window),
//! one output row per (waveform, frame), rows in parallel for large inputs. The reference for
//! `kernels/audio.cu` (same f32 operations in the same order: bit-identical results).

use rayon::prelude::*;

use super::{float_dispatch, out, CpuBackend, PAR_THRESHOLD};
use crate::backend::{AudioOps, FrameSpec};
use crate::{Float, Result, Tensor};

/// Index into the preemphasised signal of `len` samples for padded position `p - pad`
/// (numpy `reflect`; valid for `-len < i < 2 len - 1`).
fn reflect(i: isize, len: isize) -> usize {
    let i = if i < 0 { -i } else { i };
    let i = if i >= len { 2 * (len - 1) - i } else { i };
    i as usize
}

/// Fills one output row: frame `t` of waveform `x`.
fn frame_row<T: Float>(x: &[T], w: &[T], c: T, spec: &FrameSpec, t: usize, row: &mut [T]) {
    let len = (spec.samples - 1) as isize;
    let start = (t * spec.hop) as isize - spec.pad as isize;
    for (j, (o, &wj)) in row.iter_mut().zip(w).enumerate() {
        let i = reflect(start + j as isize, len);
        *o = (x[i + 1] - c * x[i]) * wj;
    }
}

impl AudioOps for CpuBackend {
    fn frame_signal(&self, wav: &Tensor, window: &Tensor, spec: &FrameSpec) -> Result<Tensor> {
        float_dispatch!("frame_signal", wav.dtype(), |T| {
            let xs = wav.as_slice::<T>()?;
            let ws = window.as_slice::<T>()?;
            let c = T::c(spec.preemphasis);
            let rows = spec.batch * spec.frames;
            let mut y = vec![T::c(0.0); rows * spec.n_fft];
            let fill = |r: usize, row: &mut [T]| {
                let (b, t) = (r / spec.frames, r % spec.frames);
                let x = &xs[b * spec.samples..(b + 1) * spec.samples];
                frame_row(x, ws, c, spec, t, row);
            };
            if y.len() >= PAR_THRESHOLD {
                y.par_chunks_mut(spec.n_fft)
                    .enumerate()
                    .for_each(|(r, row)| fill(r, row));
            } else {
                y.chunks_mut(spec.n_fft)
                    .enumerate()
                    .for_each(|(r, row)| fill(r, row));
            }
            out(y, &[rows, spec.n_fft])
        })
    }
}
