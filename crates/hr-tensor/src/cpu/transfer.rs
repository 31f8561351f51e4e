//! The transfer family on the host: storage already lives in host memory, so uploads and
//! downloads are copies and casts convert element by element.

use super::CpuBackend;
use crate::backend::TransferOps;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Result};

impl TransferOps for CpuBackend {
    fn upload(&self, host: &CpuStorage, device: Device) -> Result<Storage> {
        on_host("upload", device)?;
        Ok(Storage::Cpu(host.clone()))
    }

    fn upload_ahead(
        &self,
        host: &[f32],
        device: Device,
    ) -> Result<(Storage, Option<crate::cuda::Pending>)> {
        on_host("upload_ahead", device)?;
        Ok((Storage::Cpu(CpuStorage::F32(host.to_vec())), None))
    }

    fn download(&self, storage: &Storage, numel: usize) -> Result<CpuStorage> {
        let mut s = host("download", storage)?.clone();
        s.truncate(numel);
        Ok(s)
    }

    fn cast(&self, storage: &Storage, _numel: usize, dtype: DType) -> Result<Storage> {
        Ok(Storage::Cpu(host("to_dtype", storage)?.to_dtype(dtype)))
    }

    fn zeros(&self, n: usize, dtype: DType, device: Device) -> Result<Storage> {
        on_host("Tensor::zeros", device)?;
        Ok(Storage::Cpu(CpuStorage::from_f64_iter(
            dtype,
            std::iter::repeat_n(0.0, n),
        )))
    }
}

/// Errors naming `op` unless `device` is the host.
fn on_host(op: &'static str, device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        other => Err(Error::DeviceMismatch {
            op,
            lhs: other,
            rhs: Device::Cpu,
        }),
    }
}

/// The host elements of `storage`, or an error naming `op` for device storage.
fn host<'a>(op: &'static str, storage: &'a Storage) -> Result<&'a CpuStorage> {
    match storage {
        Storage::Cpu(s) => Ok(s),
        other => Err(Error::DeviceMismatch {
            op,
            lhs: other.device(),
            rhs: Device::Cpu,
        }),
    }
}
