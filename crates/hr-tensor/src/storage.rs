//! Raw storage of a tensor on each device.

use half::{bf16, f16};

use crate::{cuda::CudaStorage, DType, Device};

/// Host storage, one variant per dtype.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f16 elements.
    F16(Vec<f16>),
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All elements converted to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// All elements converted to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            CpuStorage::F32(v) => v.clone(),
            CpuStorage::F64(v) => v.iter().map(|&x| x as f32).collect(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Builds storage of `dtype` from f64 values (rounding as needed).
    pub fn from_f64_iter(dtype: DType, it: impl Iterator<Item = f64>) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(it.map(|x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(it.collect()),
            DType::BF16 => CpuStorage::BF16(it.map(bf16::from_f64).collect()),
            DType::F16 => CpuStorage::F16(it.map(f16::from_f64).collect()),
        }
    }

    /// Keeps the first `n` elements (device buffers of empty tensors carry a spare one).
    pub(crate) fn truncate(&mut self, n: usize) {
        match self {
            CpuStorage::F32(v) => v.truncate(n),
            CpuStorage::F64(v) => v.truncate(n),
            CpuStorage::BF16(v) => v.truncate(n),
            CpuStorage::F16(v) => v.truncate(n),
        }
    }

    /// Converts to another dtype (a copy, even when the dtype is the same).
    pub fn to_dtype(&self, dtype: DType) -> CpuStorage {
        match (self, dtype) {
            (CpuStorage::F32(v), DType::F32) => CpuStorage::F32(v.clone()),
            (CpuStorage::F32(v), DType::BF16) => {
                CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect())
            }
            (CpuStorage::F32(v), DType::F16) => {
                CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
            }
            (s, d) => CpuStorage::from_f64_iter(d, s.to_f64_vec().into_iter()),
        }
    }
}

/// Storage on any device.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory on device `ordinal`.
    Cuda {
        /// Device ordinal.
        ordinal: usize,
        /// The device buffer.
        data: CudaStorage,
    },
}

impl Storage {
    /// The device the storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda { ordinal, .. } => Device::Cuda(*ordinal),
        }
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda { data, .. } => data.dtype(),
        }
    }
}
