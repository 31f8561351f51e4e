//! GEMMs on CUDA through cuBLAS (f32; bf16 operands under autocast in `gemm_bf16.rs`).

use super::cast::{alloc_as, device_any, storage, wrap_storage, zeros_as};
use super::gemm_bf16;

use cudarc::cublas::{Gemm, StridedBatchedConfig};

use super::backend::{buf, check_gemm_operands, col_major, device_of, to_i32, wrap, CudaBackend};
use super::launch::{alloc_f32, zeros_f32};
use super::CudaStorage;
use crate::backend::{GemmOps, MatmulSpec};
use crate::{DType, Error, Result, Tensor};

impl CudaBackend {
    /// A product with bf16 operands whose result is a bf16 activation (the dense pointwise
    /// convolutions of bf16 activations): `a` and `b` are f32 (cast through their cached bf16
    /// copy) or bf16 (used as they are), cuBLAS accumulates in f32 and rounds the result to
    /// `out` (bf16 or f32) once.
    pub(super) fn matmul_bf16(
        &self,
        a: &Tensor,
        b: &Tensor,
        spec: &MatmulSpec,
        shape: &[usize],
        out: DType,
    ) -> Result<Tensor> {
        const OP: &str = "matmul";
        let dev = device_any(OP, &[a])?;
        if storage(OP, b)?.0 != dev.ordinal {
            return Err(Error::DeviceMismatch {
                op: OP,
                lhs: a.device(),
                rhs: b.device(),
            });
        }
        let total = spec.batch * spec.m * spec.n;
        if total == 0 || spec.k == 0 {
            return Ok(wrap_storage(&dev, zeros_as(&dev, out, total, OP)?, shape));
        }
        check_gemm_operands(OP, a, b, spec)?;
        let gemm = col_major(OP, spec)?;
        let mut c = alloc_as(&dev, out, total, OP)?;
        let target = match &mut c {
            CudaStorage::F32(s) => gemm_bf16::Out::F32(s),
            CudaStorage::BF16(s) => gemm_bf16::Out::BF16(s),
        };
        gemm_bf16::matmul(&dev, [a, b], target, spec, &gemm)?;
        Ok(wrap_storage(&dev, c, shape))
    }
}

impl GemmOps for CudaBackend {
    fn matmul(&self, a: &Tensor, b: &Tensor, spec: &MatmulSpec, shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "matmul";
        let dev = device_of(OP, &[a, b])?;
        let (_, ab) = buf(OP, a)?;
        let (_, bb) = buf(OP, b)?;
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let total = spec.batch * m * n;
        if total == 0 || k == 0 {
            return Ok(wrap(&dev, zeros_f32(&dev, total, OP)?, shape));
        }
        let mut c = alloc_f32(&dev, total, OP)?;
        check_gemm_operands(OP, a, b, spec)?;
        let gemm = col_major(OP, spec)?;
        if spec.bf16_inputs {
            gemm_bf16::matmul(&dev, [a, b], gemm_bf16::Out::F32(&mut c), spec, &gemm)?;
            return Ok(wrap(&dev, c, shape));
        }
        let blas = dev.blas()?;
        let name = if spec.batch == 1 {
            "cublas sgemm"
        } else {
            "cublas sgemm strided batched"
        };
        crate::cuda::profile::around(name, || {
            let res = if spec.batch == 1 {
                // SAFETY: the buffers hold at least the m*k, k*n and m*n elements the config
                // addresses (checked above).
                unsafe { blas.gemm(gemm, bb, ab, &mut c) }
            } else {
                let cfg = StridedBatchedConfig {
                    gemm,
                    batch_size: to_i32(OP, "batch", spec.batch)?,
                    stride_a: if spec.b_batched { (k * n) as i64 } else { 0 },
                    stride_b: if spec.a_batched { (m * k) as i64 } else { 0 },
                    stride_c: (m * n) as i64,
                };
                // SAFETY: as above, per batch entry (stride 0 = the shared matrix).
                unsafe { blas.gemm_strided_batched(cfg, bb, ab, &mut c) }
            };
            res.map_err(|e| Error::Cuda {
                op: OP,
                msg: format!(
                    "cublasSgemm{} (batch {}, m {m}, n {n}, k {k}) failed: {e:?}",
                    if spec.batch == 1 {
                        ""
                    } else {
                        "StridedBatched"
                    },
                    spec.batch
                ),
            })
        })?;
        Ok(wrap(&dev, c, shape))
    }
}
