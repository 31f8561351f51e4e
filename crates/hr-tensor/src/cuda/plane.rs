//! Per-plane ops on CUDA through `kernels/plane.cu` (f32 or bf16 activations, f32 per-plane
//! values). CPU twin: `crate::cpu::plane`.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::backend::{buf, i64_of, wrap, CudaBackend};
use super::batch_norm::cfg_planes;
use super::cast::{acts_device, alloc_as, kname, storage, wrap_storage};
use crate::backend::PlaneOps;
use crate::checks;
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, launch};
use crate::{Result, Tensor};

/// Threads per block.
const THREADS: u32 = 256;
/// The grid's x limit.
const GRID_X_MAX: usize = i32::MAX as usize;

impl PlaneOps for CudaBackend {
    fn plane_sum(&self, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "plane_sum";
        let (planes, s) = checks::planes(OP, a, b, &[])?;
        let acts: Vec<&Tensor> = std::iter::once(a).chain(b).collect();
        let dev = acts_device(OP, &acts, &[])?;
        let mut out = alloc_f32(&dev, planes, OP)?;
        if planes > 0 {
            let name = kname!(a.dtype(), "plane_sum");
            let f = dev.function(Family::Plane, name)?;
            let (pp, ss, has_b) = (i64_of(planes), i64_of(s), i32::from(b.is_some()));
            let (_, sa) = storage(OP, a)?;
            let (_, sb) = storage(OP, b.unwrap_or(a))?;
            let mut l = dev.stream.launch_builder(&f);
            l.arg(sa)
                .arg(sb)
                .arg(&has_b)
                .arg(&mut out)
                .arg(&pp)
                .arg(&ss);
            let cfg = LaunchConfig {
                grid_dim: (planes.clamp(1, GRID_X_MAX) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            launch(l, name, cfg)?;
        }
        Ok(wrap(&dev, out, &a.shape()[..2]))
    }

    fn plane_scale(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "plane_scale";
        let per_plane: Vec<&Tensor> = std::iter::once(scale).chain(shift).collect();
        let (planes, s) = checks::planes(OP, x, None, &per_plane)?;
        let dev = acts_device(OP, &[x], &per_plane)?;
        let mut y = alloc_as(&dev, x.dtype(), x.numel(), OP)?;
        if x.numel() > 0 {
            let name = kname!(x.dtype(), "plane_scale");
            let f = dev.function(Family::Plane, name)?;
            let (pp, ss, has_shift) = (i64_of(planes), i64_of(s), i32::from(shift.is_some()));
            let (_, xs) = storage(OP, x)?;
            let (_, sc) = buf(OP, scale)?;
            let (_, sh) = buf(OP, shift.unwrap_or(scale))?;
            let mut l = dev.stream.launch_builder(&f);
            l.arg(xs)
                .arg(sc)
                .arg(sh)
                .arg(&has_shift)
                .arg(&mut y)
                .arg(&pp)
                .arg(&ss);
            // The batch norm's pointwise grid: planes on x, 4-element chunks of a plane on y.
            launch(l, name, cfg_planes(planes, s))?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }
}
