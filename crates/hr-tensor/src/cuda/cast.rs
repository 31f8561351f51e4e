//! Storage dtypes of the CUDA backend: f32 everywhere, bf16 (f32 compute, one rounding of each
//! result) for the ops whose kernels have a `_bf16` instantiation: `unary`, `unary_bwd`,
//! `binary`, `affine`, `axpy`, `dropout`, `softmax`, `softmax_bwd`, `layer_norm` and
//! `layer_norm_bwd` (whose saved statistics stay f32), `sum_to` (f64 accumulation, rounded to
//! f32 then to bf16, like the CPU), and the data movement of `broadcast_to`, `permute`,
//! `concat`, `slice`, `pad_axis` and `embedding` (bit-exact copies) plus `embedding_bwd` (a
//! deterministic bucketed f32 sum, rounded once). Ops without one reject a bf16 operand through
//! `super::backend::buf` with [`Error::UnsupportedDType`] naming the op.
//!
//! Helpers: [`kname!`] picks the kernel name of a dtype, [`storage`] is the device buffer of
//! either dtype (pushed as a kernel argument through the `PushKernelArg` implementations of
//! [`CudaStorage`]), [`storage_mut`] its mutable buffer, [`alloc_as`] / [`zeros_as`] allocate
//! an output of a dtype, [`cast`] converts storage.

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::backend::i64_of;
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_bf16, alloc_f32, cfg_elems, launch, memset};
use crate::cuda::{context, CudaDevice, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// Kernel name for `dtype`: `<f32 base>_f32` for f32, `<bf16 base>_bf16` for bf16 (with one
/// base, the same for both). bf16 always uses the scalar kernels, so an f32 base may name a
/// float4 `_v4` variant.
macro_rules! kname {
    ($dtype:expr, $base:literal) => {
        kname!($dtype, $base, $base)
    };
    ($dtype:expr, $f32:literal, $bf16:literal) => {
        match $dtype {
            $crate::DType::BF16 => concat!($bf16, "_bf16"),
            _ => concat!($f32, "_f32"),
        }
    };
}
pub(crate) use kname;

/// The f32 or bf16 device buffer of `t` and its device ordinal, or an error naming `op`
/// (device mismatch for a host tensor).
pub(crate) fn storage<'a>(op: &'static str, t: &'a Tensor) -> Result<(usize, &'a CudaStorage)> {
    match t.storage() {
        Storage::Cuda { ordinal, data } => Ok((*ordinal, data)),
        Storage::Cpu(_) => Err(Error::DeviceMismatch {
            op,
            lhs: t.device(),
            rhs: Device::Cuda(0),
        }),
    }
}

/// The mutable f32 or bf16 device buffer of `t` (copied first if its storage is shared), or an
/// error naming `op` (device mismatch for a host tensor).
pub(crate) fn storage_mut<'a>(op: &'static str, t: &'a mut Tensor) -> Result<&'a mut CudaStorage> {
    let device = t.device();
    match t.storage_mut() {
        Storage::Cuda { data, .. } => Ok(data),
        Storage::Cpu(_) => Err(Error::DeviceMismatch {
            op,
            lhs: device,
            rhs: Device::Cuda(0),
        }),
    }
}

/// The device of the first operand (f32 or bf16) plus a check that every other one lives there
/// too and has the same dtype.
pub(crate) fn device_any(op: &'static str, ts: &[&Tensor]) -> Result<Arc<CudaDevice>> {
    let first = ts
        .first()
        .ok_or_else(|| Error::invalid(op, "no operands given"))?;
    let (ordinal, _) = storage(op, first)?;
    for t in &ts[1..] {
        let (o, _) = storage(op, t)?;
        if o != ordinal {
            return Err(Error::DeviceMismatch {
                op,
                lhs: Device::Cuda(ordinal),
                rhs: Device::Cuda(o),
            });
        }
        if t.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: first.dtype(),
                rhs: t.dtype(),
            });
        }
    }
    context(ordinal)
}

/// The device of the activations `acts` (f32 or bf16, one dtype: see [`device_any`]) after
/// checking that every f32 parameter in `params` lives there too (mixed precision: bf16
/// activations with f32 weights, statistics or per-plane values).
pub(crate) fn acts_device(
    op: &'static str,
    acts: &[&Tensor],
    params: &[&Tensor],
) -> Result<Arc<CudaDevice>> {
    let dev = device_any(op, acts)?;
    for p in params {
        if super::backend::buf(op, p)?.0 != dev.ordinal {
            return Err(Error::DeviceMismatch {
                op,
                lhs: acts[0].device(),
                rhs: p.device(),
            });
        }
    }
    Ok(dev)
}

/// A new output buffer of `n` elements of `dtype` (f32 or bf16) on `dev`.
pub(crate) fn alloc_as(
    dev: &CudaDevice,
    dtype: DType,
    n: usize,
    op: &'static str,
) -> Result<CudaStorage> {
    match dtype {
        DType::F32 => Ok(CudaStorage::F32(alloc_f32(dev, n, op)?)),
        DType::BF16 => Ok(CudaStorage::BF16(alloc_bf16(dev, n, op)?)),
        other => Err(Error::UnsupportedDType {
            op,
            dtype: other,
            device: Device::Cuda(dev.ordinal),
        }),
    }
}

/// A new zero-filled buffer of `n` elements of `dtype` (f32 or bf16; zero bits are +0.0 in
/// both) on `dev`.
pub(crate) fn zeros_as(
    dev: &CudaDevice,
    dtype: DType,
    n: usize,
    op: &'static str,
) -> Result<CudaStorage> {
    let mut y = alloc_as(dev, dtype, n, op)?;
    match &mut y {
        CudaStorage::F32(s) => memset(dev, s, 0, op)?,
        CudaStorage::BF16(s) => memset(dev, s, 0, op)?,
    }
    Ok(y)
}

/// Wraps device storage as a tensor of `shape` on `dev`.
pub(crate) fn wrap_storage(dev: &CudaDevice, data: CudaStorage, shape: &[usize]) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda {
            ordinal: dev.ordinal,
            data,
        },
        shape.to_vec(),
    )
}

/// `data` (the first `n` elements used) converted to `dtype` on device `ordinal`: f32 <-> bf16
/// through `cast_f32_bf16` / `cast_bf16_f32` (round to nearest even), a copy for the same
/// dtype; other dtypes are [`Error::UnsupportedDType`].
pub(crate) fn cast(
    ordinal: usize,
    data: &CudaStorage,
    n: usize,
    dtype: DType,
) -> Result<CudaStorage> {
    const OP: &str = "to_dtype";
    let dev = context(ordinal)?;
    let name = match (data.dtype(), dtype) {
        (from, to) if from == to => return Ok(data.clone()),
        (DType::F32, DType::BF16) => "cast_f32_bf16",
        (DType::BF16, DType::F32) => "cast_bf16_f32",
        (_, to) => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: to,
                device: Device::Cuda(ordinal),
            })
        }
    };
    let mut y = alloc_as(&dev, dtype, n, OP)?;
    if n > 0 {
        let f = dev.function(Family::Elementwise, name)?;
        let nn = i64_of(n);
        let mut a = dev.stream.launch_builder(&f);
        a.arg(data).arg(&mut y).arg(&nn);
        launch(a, name, cfg_elems(n.div_ceil(4)))?;
    }
    Ok(y)
}

/// Launch shape of an elementwise kernel over `n` elements: n/4 threads for the f32 float4
/// variants, n for the scalar bf16 kernels (all grid-stride).
pub(crate) fn cfg_vec(dtype: DType, n: usize) -> cudarc::driver::LaunchConfig {
    match dtype {
        DType::F32 => cfg_elems(n.div_ceil(4)),
        _ => cfg_elems(n),
    }
}
