//! Softmax kernels: filled in by the softmax work item.

use super::CpuBackend;
use crate::backend::SoftmaxOps;
use crate::{Device, Error, Result, Tensor};

fn todo_op(op: &'static str) -> Error {
    Error::NotImplemented {
        op,
        device: Device::Cpu,
    }
}

impl SoftmaxOps for CpuBackend {
    fn softmax(&self, _x: &Tensor, _mask: Option<&Tensor>) -> Result<Tensor> {
        Err(todo_op("softmax"))
    }
    fn softmax_bwd(&self, _y: &Tensor, _dy: &Tensor) -> Result<Tensor> {
        Err(todo_op("softmax_bwd"))
    }
    fn log_softmax(&self, _x: &Tensor) -> Result<Tensor> {
        Err(todo_op("log_softmax"))
    }
    fn log_softmax_bwd(&self, _y: &Tensor, _dy: &Tensor) -> Result<Tensor> {
        Err(todo_op("log_softmax_bwd"))
    }
}
