//! The one narrow door from a [`Tensor`] to its cudarc device buffer, for code that must call
//! CUDA libraries on a tensor's memory itself (hr-dist's NCCL collectives). Everything else
//! goes through the ops; nothing of cudarc appears in `Tensor`'s own API.
//!
//! Buffers belong to the stream of [`super::context`]`(ordinal)`: work issued on another
//! stream must be ordered against it by the caller.

use cudarc::driver::CudaSlice;

use super::CudaStorage;
use crate::storage::Storage;
use crate::tensor::numel_of;
use crate::{DType, Device, Error, Result, Tensor};

/// Wraps an f32 device buffer of GPU `ordinal` as a tensor of `shape` (no copy). The buffer
/// may be longer than the shape (empty tensors keep one spare element).
pub fn from_slice(ordinal: usize, slice: CudaSlice<f32>, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "cuda::raw::from_slice";
    let n = numel_of(OP, shape)?;
    if slice.len() < n {
        return Err(Error::invalid(
            OP,
            format!("{} elements do not fit shape {shape:?} ({n})", slice.len()),
        ));
    }
    let data = CudaStorage::F32(slice);
    Ok(Tensor::from_storage(
        Storage::Cuda { ordinal, data },
        shape.to_vec(),
    ))
}

/// Borrows the device buffer of an f32 GPU tensor with its device ordinal (the buffer may hold
/// more than [`Tensor::numel`] elements; use the first `numel`). Errors naming `op` for a host
/// tensor or another dtype.
pub fn slice<'a>(t: &'a Tensor, op: &'static str) -> Result<(usize, &'a CudaSlice<f32>)> {
    let (dtype, device) = (t.dtype(), t.device());
    match t.storage() {
        Storage::Cuda {
            ordinal,
            data: CudaStorage::F32(s),
        } => Ok((*ordinal, s)),
        _ => Err(not_cuda_f32(op, dtype, device)),
    }
}

/// Mutably borrows the device buffer of an f32 GPU tensor (copied on the device first if the
/// storage is shared), e.g. for an in-place collective. Errors naming `op` for a host tensor or
/// another dtype.
pub fn slice_mut<'a>(
    t: &'a mut Tensor,
    op: &'static str,
) -> Result<(usize, &'a mut CudaSlice<f32>)> {
    let (dtype, device) = (t.dtype(), t.device());
    match t.storage_mut() {
        Storage::Cuda {
            ordinal,
            data: CudaStorage::F32(s),
        } => Ok((*ordinal, s)),
        _ => Err(not_cuda_f32(op, dtype, device)),
    }
}

/// The error of an accessor called on a host tensor (device mismatch) or a GPU tensor of
/// another dtype.
fn not_cuda_f32(op: &'static str, dtype: DType, device: Device) -> Error {
    match device {
        Device::Cpu => Error::DeviceMismatch {
            op,
            lhs: Device::Cpu,
            rhs: Device::Cuda(0),
        },
        Device::Cuda(_) => Error::UnsupportedDType { op, dtype, device },
    }
}
