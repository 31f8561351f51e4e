//! Optimiser kernels: filled in by the optimiser work item.

use super::CpuBackend;
use crate::backend::{AdamStep, OptimOps};
use crate::{Device, Error, Result, Tensor};

impl OptimOps for CpuBackend {
    fn adam_step(&self, _p: &mut Tensor, _g: &Tensor, _m: &mut Tensor, _v: &mut Tensor, _hp: &AdamStep) -> Result<()> {
        Err(Error::NotImplemented {
            op: "adam_step",
            device: Device::Cpu,
        })
    }
}
