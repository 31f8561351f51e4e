//! The audio family on CUDA through `kernels/audio.cu`: `frame_signal` (preemphasis, reflect
//! padding, framing, window), one thread per output element (grid-stride, 256 threads).
//! CPU twin: `crate::cpu::audio` (same f32 operations in the same order: bit-identical).

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::backend::{buf, device_of, i64_of, wrap, CudaBackend};
use crate::backend::{AudioOps, FrameSpec};
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, cfg_elems, launch};
use crate::{Error, Result, Tensor};

/// `FrameGeom` of kernels/audio.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FrameGeom {
    n: i64,
    len: i64,
    frames: i64,
    n_fft: i64,
    hop: i64,
    pad: i64,
    total: i64,
}

// SAFETY: seven i64 in the order (and C layout, 56 bytes, no padding) of `struct FrameGeom`
// in kernels/audio.cu.
unsafe impl DeviceRepr for FrameGeom {}

impl AudioOps for CudaBackend {
    fn frame_signal(&self, wav: &Tensor, window: &Tensor, spec: &FrameSpec) -> Result<Tensor> {
        const OP: &str = "frame_signal";
        let dev = device_of(OP, &[wav, window])?;
        let (_, xs) = buf(OP, wav)?;
        let (_, ws) = buf(OP, window)?;
        let rows = spec.batch * spec.frames;
        let total = rows * spec.n_fft;
        if xs.len() < spec.batch * spec.samples || ws.len() < spec.n_fft {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: wav.shape().to_vec(),
                rhs: window.shape().to_vec(),
            });
        }
        let mut y = alloc_f32(&dev, total, OP)?;
        if total > 0 {
            let g = FrameGeom {
                n: i64_of(spec.samples),
                len: i64_of(spec.samples - 1),
                frames: i64_of(spec.frames),
                n_fft: i64_of(spec.n_fft),
                hop: i64_of(spec.hop),
                pad: i64_of(spec.pad),
                total: i64_of(total),
            };
            let c = spec.preemphasis as f32;
            let f = dev.function(Family::Audio, "frame_signal_f32")?;
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(ws).arg(&mut y).arg(&g).arg(&c);
            launch(a, "frame_signal_f32", cfg_elems(total))?;
        }
        Ok(wrap(&dev, y, &[rows, spec.n_fft]))
    }
}
