//! Reductions on CUDA: `sum_to` and `broadcast_to`.

use super::cast::{alloc_as, device_any, kname, storage, wrap_storage};

use cudarc::driver::PushKernelArg;

use super::backend::{broadcast_strides, gather, i64_of, CudaBackend};
use super::kernels::Family;
use super::launch::{cfg_rows, cfg_sum_cols, launch, row_major, Strided};
use crate::backend::ReduceOps;
use crate::{Result, Tensor};

/// Longest reduction that `sum_to_cols` takes (each of its threads sums a 1/8 of it).
const SUM_COLS_MAX: usize = 1 << 14;

impl ReduceOps for CudaBackend {
    fn sum_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "sum_to";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let in_shape = x.shape();
        let n_out = crate::numel_of(OP, out_shape)?;
        let mut y = alloc_as(&dev, x.dtype(), n_out, OP)?;
        if n_out > 0 {
            let st = row_major(in_shape);
            let kept = Strided::new(OP, out_shape, &st)?;
            let (mut red_shape, mut red_stride) = (Vec::new(), Vec::new());
            for ((&i, &o), &s) in in_shape.iter().zip(out_shape).zip(&st) {
                if o != i {
                    red_shape.push(i);
                    red_stride.push(s);
                }
            }
            let red_n: usize = red_shape.iter().product();
            let red = Strided::new(OP, &red_shape, &red_stride)?;
            // Long contiguous reductions (a mean over H x W): a block per output. Short or
            // strided ones (bias gradients, a mean over one middle axis): 32 outputs per block
            // side by side, so that the loads of a warp are neighbours.
            let contiguous = red.is_contiguous_run();
            let (name, cfg) = if contiguous || red_n > SUM_COLS_MAX {
                (kname!(x.dtype(), "sum_to"), cfg_rows(n_out, red_n))
            } else {
                (kname!(x.dtype(), "sum_to_cols"), cfg_sum_cols(n_out))
            };
            let f = dev.function(Family::Reduce, name)?;
            let (no, rn) = (i64_of(n_out), i64_of(red_n));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&no).arg(&rn).arg(&kept).arg(&red);
            launch(a, name, cfg)?;
        }
        Ok(wrap_storage(&dev, y, out_shape))
    }

    fn broadcast_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "broadcast_to";
        let st = broadcast_strides(x.shape(), out_shape);
        gather(
            OP,
            Family::Reduce,
            kname!(x.dtype(), "gather_strided"),
            x,
            out_shape,
            0,
            &st,
        )
    }
}
