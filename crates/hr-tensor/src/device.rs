//! Where a tensor lives.

use crate::{cuda, Result};

/// A compute device. `Cuda(n)` is the n-th GPU of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU reference backend.
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl Device {
    /// Opens CUDA device `ordinal`, checking that a driver and the device exist.
    ///
    /// On a machine without a CUDA driver this returns [`crate::Error::CudaUnavailable`]
    /// (it never panics).
    pub fn cuda(ordinal: usize) -> Result<Device> {
        cuda::context(ordinal)?;
        Ok(Device::Cuda(ordinal))
    }

    /// Parses "cpu", "cuda" (= cuda:0) or "cuda:N" and opens the device.
    pub fn parse(s: &str) -> Result<Device> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => Err(crate::Error::invalid(
                    "Device::parse",
                    format!("unknown device {other:?}; expected cpu, cuda or cuda:N"),
                )),
            },
        }
    }

    /// True for [`Device::Cpu`].
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
