//! Layout kernels (permute, concat, slice, embedding): filled in by the layout work item.

use super::CpuBackend;
use crate::backend::LayoutOps;
use crate::{Device, Error, Result, Tensor};

fn todo_op(op: &'static str) -> Error {
    Error::NotImplemented {
        op,
        device: Device::Cpu,
    }
}

impl LayoutOps for CpuBackend {
    fn permute(&self, _x: &Tensor, _perm: &[usize]) -> Result<Tensor> {
        Err(todo_op("permute"))
    }
    fn concat(&self, _xs: &[&Tensor], _axis: usize) -> Result<Tensor> {
        Err(todo_op("concat"))
    }
    fn slice(&self, _x: &Tensor, _axis: usize, _start: usize, _len: usize) -> Result<Tensor> {
        Err(todo_op("slice"))
    }
    fn pad_axis(&self, _x: &Tensor, _axis: usize, _start: usize, _total: usize) -> Result<Tensor> {
        Err(todo_op("pad_axis"))
    }
    fn embedding(&self, _table: &Tensor, _ids: &[u32]) -> Result<Tensor> {
        Err(todo_op("embedding"))
    }
    fn embedding_bwd(&self, _dy: &Tensor, _ids: &[u32], _vocab: usize) -> Result<Tensor> {
        Err(todo_op("embedding_bwd"))
    }
}
