//! Normalisation kernels: filled in by the norms work item.

use super::CpuBackend;
use crate::backend::{NormGrads, NormOps, NormStats};
use crate::{Device, Error, Result, Tensor};

fn todo_op(op: &'static str) -> Error {
    Error::NotImplemented {
        op,
        device: Device::Cpu,
    }
}

impl NormOps for CpuBackend {
    fn layer_norm(&self, _x: &Tensor, _g: &Tensor, _b: &Tensor, _eps: f64) -> Result<(Tensor, NormStats)> {
        Err(todo_op("layer_norm"))
    }
    fn layer_norm_bwd(&self, _x: &Tensor, _g: &Tensor, _s: &NormStats, _dy: &Tensor) -> Result<NormGrads> {
        Err(todo_op("layer_norm_bwd"))
    }
    fn batch_norm_train(
        &self,
        _x: &Tensor,
        _g: &Tensor,
        _b: &Tensor,
        _rm: &mut Tensor,
        _rv: &mut Tensor,
        _momentum: f64,
        _eps: f64,
    ) -> Result<(Tensor, NormStats)> {
        Err(todo_op("batch_norm_train"))
    }
    fn batch_norm_eval(&self, _x: &Tensor, _g: &Tensor, _b: &Tensor, _rm: &Tensor, _rv: &Tensor, _eps: f64) -> Result<Tensor> {
        Err(todo_op("batch_norm_eval"))
    }
    fn batch_norm_bwd(&self, _x: &Tensor, _g: &Tensor, _s: &NormStats, _dy: &Tensor) -> Result<NormGrads> {
        Err(todo_op("batch_norm_bwd"))
    }
    fn l2_normalize(&self, _x: &Tensor, _eps: f64) -> Result<(Tensor, Tensor)> {
        Err(todo_op("l2_normalize"))
    }
    fn l2_normalize_bwd(&self, _y: &Tensor, _n: &Tensor, _dy: &Tensor, _eps: f64) -> Result<Tensor> {
        Err(todo_op("l2_normalize_bwd"))
    }
}
