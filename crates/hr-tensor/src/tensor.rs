//! The tensor type: a contiguous row-major buffer with a shape, on one device.

use std::sync::{Arc, OnceLock};

use crate::backend::backend_for;
use crate::storage::{CpuStorage, Storage};
use crate::{cuda, DType, Device, Elem, Error, Result, Rng};

/// A contiguous row-major tensor. Cloning is cheap (the storage is shared and copied on write).
#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Shared>,
}

/// A tensor's storage (shared by its clones and reshapes) and a derived copy cached with it.
#[derive(Debug)]
struct Shared {
    data: Storage,
    /// The bf16 copy of `data` that autocast GEMMs read (see [`Tensor::bf16_copy`]): made by
    /// the first one, reused by the later ones (a weight in the forward and in the backward,
    /// a saved input in the forward and in its weight gradient), dropped with `data` and
    /// cleared whenever `data` is written.
    bf16: OnceLock<Storage>,
}

impl Shared {
    fn new(data: Storage) -> Shared {
        Shared {
            data,
            bf16: OnceLock::new(),
        }
    }
}

impl Clone for Shared {
    /// A copy of the data (copy-on-write); the derived copy is not carried over.
    fn clone(&self) -> Shared {
        Shared::new(self.data.clone())
    }
}

/// Number of elements of a shape (1 for a scalar), or an error when it overflows.
pub fn numel_of(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::invalid(op, format!("shape {shape:?} overflows usize")))
    })
}

impl Tensor {
    /// Wraps a storage whose length the caller has checked against `shape`.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>) -> Tensor {
        Tensor {
            shape,
            storage: Arc::new(Shared::new(storage)),
        }
    }

    /// Wraps CPU storage; errors when the element count does not match the shape.
    pub fn from_cpu_storage(storage: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        let n = numel_of("Tensor::from_cpu_storage", shape)?;
        if storage.len() != n {
            return Err(Error::invalid(
                "Tensor::from_cpu_storage",
                format!(
                    "{} elements do not fit shape {shape:?} ({n})",
                    storage.len()
                ),
            ));
        }
        Ok(Tensor::from_storage(Storage::Cpu(storage), shape.to_vec()))
    }

    /// A CPU tensor from a vector.
    pub fn from_vec<T: Elem>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_cpu_storage(T::into_storage(data), shape)
    }

    /// A CPU tensor copied from a slice.
    pub fn from_slice<T: Elem>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A CPU tensor of `dtype` filled with `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let n = numel_of("Tensor::full", shape)?;
        let s = CpuStorage::from_f64_iter(dtype, std::iter::repeat_n(value, n));
        Tensor::from_cpu_storage(s, shape)
    }

    /// Zeros of `dtype` on `device` (allocated and cleared on the device itself, without a
    /// host buffer, for f32 on a GPU).
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n = numel_of("Tensor::zeros", shape)?;
        let storage = backend_for("Tensor::zeros", device)?.zeros(n, dtype, device)?;
        Ok(Tensor::from_storage(storage, shape.to_vec()))
    }

    /// Zeros with the shape, dtype and device of `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(&self.shape, self.dtype(), self.device())
    }

    /// Normal samples with mean 0 and standard deviation `std` (CPU, f32).
    pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Result<Tensor> {
        let n = numel_of("Tensor::randn", shape)?;
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * std).collect();
        Tensor::from_vec(v, shape)
    }

    /// Uniform samples in `[lo, hi)` (CPU, f32).
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Result<Tensor> {
        let n = numel_of("Tensor::rand_uniform", shape)?;
        let v: Vec<f32> = (0..n)
            .map(|_| lo + (hi - lo) * rng.uniform() as f32)
            .collect();
        Tensor::from_vec(v, shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of dimension `i`; errors name the op when `i` is out of range.
    pub fn dim(&self, op: &'static str, i: usize) -> Result<usize> {
        self.shape.get(i).copied().ok_or_else(|| {
            Error::invalid(
                op,
                format!("axis {i} out of range for shape {:?}", self.shape),
            )
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage().dtype()
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.storage().device()
    }

    /// The underlying storage.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage.data
    }

    /// Same data, new shape with the same number of elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel_of("reshape", shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }

    /// Mutable access to the storage (copied first if shared), for in-place device kernels.
    /// Every write goes through here: the cached bf16 copy is cleared.
    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        let shared = Arc::make_mut(&mut self.storage);
        shared.bf16.take();
        &mut shared.data
    }

    /// The bf16 copy of this tensor's storage, made by `make` (from the storage) on first use
    /// and cached with the storage: shared by clones and reshapes, dropped with the storage,
    /// cleared by every write ([`Tensor::storage_mut`]). Two threads racing on the first use
    /// may both run `make`; one result is kept.
    pub(crate) fn bf16_copy(
        &self,
        make: impl FnOnce(&Storage) -> Result<Storage>,
    ) -> Result<&Storage> {
        if let Some(copy) = self.storage.bf16.get() {
            return Ok(copy);
        }
        let made = make(&self.storage.data)?;
        Ok(self.storage.bf16.get_or_init(|| made))
    }

    /// The host storage, or an error naming `op` when the tensor is on a GPU.
    pub fn cpu_storage(&self, op: &'static str) -> Result<&CpuStorage> {
        match self.storage() {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda { .. } => Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: Device::Cpu,
            }),
        }
    }

    /// Borrows the host elements as `&[T]`; errors when on a GPU or of another dtype.
    pub fn as_slice<T: Elem>(&self) -> Result<&[T]> {
        let dtype = self.dtype();
        T::slice(self.cpu_storage("as_slice")?).ok_or(Error::DTypeMismatch {
            op: "as_slice",
            lhs: dtype,
            rhs: T::DTYPE,
        })
    }

    /// Mutably borrows the host elements (copying first if the storage is shared).
    pub fn as_mut_slice<T: Elem>(&mut self) -> Result<&mut [T]> {
        let dtype = self.dtype();
        let device = self.device();
        match self.storage_mut() {
            Storage::Cpu(s) => T::slice_mut(s).ok_or(Error::DTypeMismatch {
                op: "as_mut_slice",
                lhs: dtype,
                rhs: T::DTYPE,
            }),
            Storage::Cuda { .. } => Err(Error::DeviceMismatch {
                op: "as_mut_slice",
                lhs: device,
                rhs: Device::Cpu,
            }),
        }
    }

    /// Copies all elements to the host as f32 (any dtype, any device).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.host_storage()? {
            std::borrow::Cow::Owned(CpuStorage::F32(v)) => v,
            s => s.to_f32_vec(),
        })
    }

    /// Copies all elements to the host as f64 (any dtype, any device).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match self.storage() {
            Storage::Cpu(s) => Ok(s.to_f64_vec()),
            Storage::Cuda { .. } => Ok(self.to_vec_f32()?.into_iter().map(f64::from).collect()),
        }
    }

    /// The single value of a one-element tensor.
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "scalar",
                format!("expected one element, got shape {:?}", self.shape),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// A copy converted to `dtype`: any pair on the CPU; F32 <-> BF16 on a GPU (bf16 rounds
    /// to nearest even, like `half::bf16::from_f32`).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage =
            backend_for("to_dtype", self.device())?.cast(self.storage(), self.numel(), dtype)?;
        Ok(Tensor::from_storage(storage, self.shape.clone()))
    }

    /// The elements in host storage of the tensor's dtype (a copy for a GPU tensor).
    fn host_storage(&self) -> Result<std::borrow::Cow<'_, CpuStorage>> {
        match self.storage() {
            Storage::Cpu(s) => Ok(std::borrow::Cow::Borrowed(s)),
            gpu => Ok(std::borrow::Cow::Owned(
                backend_for("download", self.device())?.download(gpu, self.numel())?,
            )),
        }
    }

    /// A copy on `device` in the same dtype (f32 and bf16 only on GPUs for now).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(self.host_storage()?.into_owned()),
            // Host data is uploaded straight from its buffer (no intermediate copy).
            _ => backend_for("to_device", device)?.upload(&*self.host_storage()?, device)?,
        };
        Ok(Tensor::from_storage(storage, self.shape.clone()))
    }
}

/// A tensor whose copy to its device may still be running ([`Tensor::upload_ahead`]).
#[derive(Debug)]
pub struct Upload {
    tensor: Tensor,
    pending: Option<cuda::Pending>,
}

impl Upload {
    /// The tensor, ready for use: the device's compute stream is ordered after the copy (the
    /// host does not wait).
    pub fn ready(self) -> Result<Tensor> {
        if let Some(p) = &self.pending {
            p.ready()?;
        }
        Ok(self.tensor)
    }
}

impl Tensor {
    /// Starts copying this host f32 tensor to `device` and returns at once: on a GPU the copy
    /// runs on the device's copy stream through a page-locked buffer, beside the kernels
    /// already queued, and [`Upload::ready`] orders later work after it. Anything else (the
    /// CPU, other dtypes, a tensor already there) is [`Tensor::to_device`].
    pub fn upload_ahead(&self, device: Device) -> Result<Upload> {
        let host_f32 = self.device() == Device::Cpu && self.dtype() == DType::F32;
        let (Device::Cuda(_), true) = (device, host_f32) else {
            return Ok(Upload {
                tensor: self.to_device(device)?,
                pending: None,
            });
        };
        let CpuStorage::F32(v) = &*self.host_storage()? else {
            return Err(Error::UnsupportedDType {
                op: "upload_ahead",
                dtype: self.dtype(),
                device,
            });
        };
        let (storage, pending) = backend_for("upload_ahead", device)?.upload_ahead(v, device)?;
        Ok(Upload {
            tensor: Tensor::from_storage(storage, self.shape.clone()),
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the GPU cast: the storage converted to bf16, counting the calls.
    fn copy_of(t: &Tensor, made: &mut u32) -> Vec<f32> {
        let copy = t
            .bf16_copy(|data| {
                *made += 1;
                match data {
                    Storage::Cpu(s) => Ok(Storage::Cpu(s.to_dtype(DType::BF16))),
                    Storage::Cuda { .. } => unreachable!("CPU test"),
                }
            })
            .expect("bf16_copy");
        match copy {
            Storage::Cpu(s) => s.to_f32_vec(),
            Storage::Cuda { .. } => unreachable!("CPU test"),
        }
    }

    #[test]
    fn bf16_copy_is_cached_with_the_storage_and_cleared_by_writes() {
        let mut made = 0;
        let mut t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 1.0 / 3.0], &[2, 2]).unwrap();
        let first = copy_of(&t, &mut made);
        assert_eq!(first[..3], [1.0, 2.5, -3.0]);
        // Clones and reshapes share the storage and its copy.
        let clone = t.clone();
        let flat = t.reshape(&[4]).unwrap();
        assert_eq!(copy_of(&clone, &mut made), first);
        assert_eq!(copy_of(&flat, &mut made), first);
        assert_eq!(made, 1, "made once");
        // A write through a shared handle copies the storage first: the written tensor has
        // no copy yet, the others keep theirs.
        t.as_mut_slice::<f32>().unwrap()[0] = 8.0;
        assert_eq!(copy_of(&t, &mut made)[0], 8.0);
        assert_eq!(made, 2);
        assert_eq!(copy_of(&clone, &mut made), first);
        assert_eq!(made, 2);
        // A write to a unique storage clears its copy.
        drop((clone, flat));
        t.as_mut_slice::<f32>().unwrap()[1] = 4.0;
        assert_eq!(copy_of(&t, &mut made)[..2], [8.0, 4.0]);
        assert_eq!(made, 3);
    }
}
