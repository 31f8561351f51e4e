//! Convolution kernels: filled in by the conv work item.

use super::CpuBackend;
use crate::backend::{Conv2dSpec, ConvOps};
use crate::{Device, Error, Result, Tensor};

fn todo_op(op: &'static str) -> Error {
    Error::NotImplemented {
        op,
        device: Device::Cpu,
    }
}

impl ConvOps for CpuBackend {
    fn conv2d(&self, _x: &Tensor, _w: &Tensor, _s: &Conv2dSpec) -> Result<Tensor> {
        Err(todo_op("conv2d"))
    }
    fn conv2d_bwd_data(&self, _dy: &Tensor, _w: &Tensor, _s: &Conv2dSpec) -> Result<Tensor> {
        Err(todo_op("conv2d_bwd_data"))
    }
    fn conv2d_bwd_weight(&self, _x: &Tensor, _dy: &Tensor, _s: &Conv2dSpec) -> Result<Tensor> {
        Err(todo_op("conv2d_bwd_weight"))
    }
}
