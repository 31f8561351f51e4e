//! The optimiser family on the GPU (kernels/optim.cu): the fused Adam/AdamW update of one
//! tensor (`adam_f32`) and of a list of tensors in one launch (`adam_multi_f32`, the
//! optimizer's path: one launch per parameter group instead of one per parameter). Both apply
//! the same per-element update, so they agree with each other and with the CPU bit for bit.

use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};

use super::backend::{buf, buf_mut, device_of, i64_of, CudaBackend};
use crate::backend::{AdamTensors, OptimOps};
use crate::cuda::kernels::Family;
use crate::cuda::launch::{cfg_elems, cuda_err, launch, AdamConsts, BLOCK, MAX_BLOCKS};
use crate::{AdamStep, Error, Result, Tensor};

/// Elements of one chunk of the multi-tensor update (one block's share; a multiple of 4).
const CHUNK: usize = 1 << 16;

/// `AdamRow` of kernels/optim.cu: one tensor of a multi-tensor update.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AdamRow {
    p: u64,
    g: u64,
    m: u64,
    v: u64,
    n: i64,
    first: i64,
}

// SAFETY: four u64 and two i64 in the order of `struct AdamRow` in kernels/optim.cu.
unsafe impl DeviceRepr for AdamRow {}

/// The per-step constants, computed in f64 like the CPU and rounded to f32.
fn consts(hp: &AdamStep) -> AdamConsts {
    let t = hp.step as f64;
    let bc1 = 1.0 - hp.beta1.powf(t);
    let bc2 = 1.0 - hp.beta2.powf(t);
    AdamConsts {
        decay: (1.0 - hp.lr * hp.weight_decay) as f32,
        b1: hp.beta1 as f32,
        one_minus_b1: (1.0 - hp.beta1) as f32,
        b2: hp.beta2 as f32,
        one_minus_b2: (1.0 - hp.beta2) as f32,
        step_size: (hp.lr / bc1) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        eps: hp.eps as f32,
    }
}

/// One tensor's update (`adam_f32`).
fn step(param: &mut Tensor, grad: &Tensor, [m, v]: [&mut Tensor; 2], hp: &AdamStep) -> Result<()> {
    const OP: &str = "adam_step";
    let n = param.numel();
    let dev = device_of(OP, &[param, grad, m, v])?;
    if n == 0 {
        return Ok(());
    }
    let c = consts(hp);
    let f = dev.function(Family::Optim, "adam_f32")?;
    let (_, gs) = buf(OP, grad)?;
    let ps = buf_mut(OP, param)?;
    let ms = buf_mut(OP, m)?;
    let vs = buf_mut(OP, v)?;
    let nn = i64_of(n);
    let mut a = dev.stream.launch_builder(&f);
    a.arg(ps).arg(gs).arg(ms).arg(vs).arg(&nn).arg(&c);
    launch(a, "adam_f32", cfg_elems(n))
}

/// Every tensor's update in one launch (`adam_multi_f32`): a table with one row per non-empty
/// tensor (device addresses, element count, first chunk) is uploaded, and each block updates
/// chunks of `CHUNK` elements. The ops layer checked that the four lists have the same length
/// and matching shapes.
fn step_multi(t: AdamTensors, hp: &AdamStep) -> Result<()> {
    const OP: &str = "adam_step_multi";
    let AdamTensors {
        params,
        grads,
        m: ms,
        v: vs,
    } = t;
    let all: Vec<&Tensor> = params.iter().chain(grads).chain(&*ms).chain(&*vs).collect();
    if all.is_empty() {
        return Ok(());
    }
    let dev = device_of(OP, &all)?;
    let mut rows = Vec::with_capacity(params.len());
    let mut chunks = 0usize;
    let quads = params
        .iter_mut()
        .zip(grads)
        .zip(ms.iter_mut().zip(vs.iter_mut()));
    for ((p, g), (m, v)) in quads {
        let n = p.numel();
        if n == 0 {
            continue;
        }
        // Raw addresses: the tensors stay borrowed (alive, unchanged) until the launch is
        // queued; a shared buffer is copied on write first, by `buf_mut`.
        rows.push(AdamRow {
            g: buf(OP, g)?.1.device_ptr(&dev.stream).0,
            p: buf_mut(OP, p)?.device_ptr_mut(&dev.stream).0,
            m: buf_mut(OP, m)?.device_ptr_mut(&dev.stream).0,
            v: buf_mut(OP, v)?.device_ptr_mut(&dev.stream).0,
            n: i64_of(n),
            first: i64_of(chunks),
        });
        chunks += n.div_ceil(CHUNK);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let count = i32::try_from(rows.len())
        .map_err(|_| Error::invalid(OP, format!("{} tensors in one update", rows.len())))?;
    let table = dev.stream.clone_htod(&rows).map_err(|e| cuda_err(OP, e))?;
    let f = dev.function(Family::Optim, "adam_multi_f32")?;
    let (nc, chunk, c) = (i64_of(chunks), i64_of(CHUNK), consts(hp));
    let cfg = LaunchConfig {
        grid_dim: (chunks.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut a = dev.stream.launch_builder(&f);
    a.arg(&table).arg(&count).arg(&nc).arg(&chunk).arg(&c);
    launch(a, "adam_multi_f32", cfg)
}

impl OptimOps for CudaBackend {
    fn adam_step(&self, t: AdamTensors, hp: &AdamStep) -> Result<()> {
        match (t.params, t.grads, t.m, t.v) {
            ([p], [g], [m], [v]) => step(p, g, [m, v], hp),
            (params, grads, m, v) => step_multi(
                AdamTensors {
                    params,
                    grads,
                    m,
                    v,
                },
                hp,
            ),
        }
    }
}
