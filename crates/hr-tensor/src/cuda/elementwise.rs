//! Elementwise ops on CUDA: activations, binary ops with broadcasting, affine, axpy, dropout.

use super::cast::{alloc_as, cfg_vec, device_any, kname, storage, storage_mut, wrap_storage};

use cudarc::driver::PushKernelArg;

use super::backend::{binary_code, broadcast_strides, i64_of, unary_code, CudaBackend};
use super::kernels::Family;
use super::launch::{cfg_elems, launch, Broadcast2};
use crate::backend::{Binary, ElementwiseOps, Unary};
use crate::{Result, Tensor};

impl ElementwiseOps for CudaBackend {
    fn unary(&self, kind: Unary, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "unary";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "unary_fwd_v4", "unary_fwd");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, code) = (i64_of(n), unary_code(kind));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&nn).arg(&code);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }

    fn unary_bwd(&self, kind: Unary, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        const OP: &str = "unary_bwd";
        let dev = device_any(OP, &[x, dy])?;
        let ((_, xs), (_, gs)) = (storage(OP, x)?, storage(OP, dy)?);
        let n = x.numel();
        let mut dx = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "unary_bwd_v4", "unary_bwd");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, code) = (i64_of(n), unary_code(kind));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(gs).arg(&mut dx).arg(&nn).arg(&code);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, dx, x.shape()))
    }

    fn binary(&self, kind: Binary, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "binary";
        let dev = device_any(OP, &[a, b])?;
        let ((_, av), (_, bv)) = (storage(OP, a)?, storage(OP, b)?);
        let n = crate::numel_of(OP, out_shape)?;
        let mut c = alloc_as(&dev, a.dtype(), n, OP)?;
        if n > 0 {
            let (nn, code) = (i64_of(n), binary_code(kind));
            if a.shape() == out_shape && b.shape() == out_shape {
                let name = kname!(a.dtype(), "binary_same_v4", "binary_same");
                let f = dev.function(Family::Elementwise, name)?;
                let mut l = dev.stream.launch_builder(&f);
                l.arg(av).arg(bv).arg(&mut c).arg(&nn).arg(&code);
                launch(l, name, cfg_vec(a.dtype(), n))?;
            } else {
                let g = Broadcast2::new(
                    OP,
                    out_shape,
                    &broadcast_strides(a.shape(), out_shape),
                    &broadcast_strides(b.shape(), out_shape),
                )?;
                let name = kname!(a.dtype(), "binary_bcast");
                let f = dev.function(Family::Elementwise, name)?;
                let mut l = dev.stream.launch_builder(&f);
                l.arg(av).arg(bv).arg(&mut c).arg(&nn).arg(&code).arg(&g);
                launch(l, name, cfg_elems(n))?;
            }
        }
        Ok(wrap_storage(&dev, c, out_shape))
    }

    fn affine(&self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
        const OP: &str = "affine";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "affine_v4", "affine");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, m, ad) = (i64_of(n), mul as f32, add as f32);
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs).arg(&mut y).arg(&nn).arg(&m).arg(&ad);
            launch(a, name, cfg_vec(x.dtype(), n))?;
        }
        Ok(wrap_storage(&dev, y, x.shape()))
    }

    fn axpy(&self, y: &mut Tensor, alpha: f64, x: &Tensor) -> Result<()> {
        const OP: &str = "axpy";
        let dev = device_any(OP, &[y, x])?;
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let name = kname!(x.dtype(), "axpy_v4", "axpy");
        let f = dev.function(Family::Elementwise, name)?;
        let (_, xs) = storage(OP, x)?;
        let ys = storage_mut(OP, y)?;
        let (nn, al) = (i64_of(n), alpha as f32);
        let mut a = dev.stream.launch_builder(&f);
        a.arg(ys).arg(xs).arg(&nn).arg(&al);
        launch(a, name, cfg_vec(x.dtype(), n))
    }

    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        const OP: &str = "dropout";
        let dev = device_any(OP, &[x])?;
        let (_, xs) = storage(OP, x)?;
        let n = x.numel();
        let mut y = alloc_as(&dev, x.dtype(), n, OP)?;
        let mut s = alloc_as(&dev, x.dtype(), n, OP)?;
        if n > 0 {
            let name = kname!(x.dtype(), "dropout");
            let f = dev.function(Family::Elementwise, name)?;
            let (nn, keep) = (i64_of(n), (1.0 / (1.0 - p)) as f32);
            let mut a = dev.stream.launch_builder(&f);
            a.arg(xs)
                .arg(&mut y)
                .arg(&mut s)
                .arg(&nn)
                .arg(&p)
                .arg(&seed)
                .arg(&keep);
            launch(a, name, cfg_elems(n))?;
        }
        Ok((
            wrap_storage(&dev, y, x.shape()),
            wrap_storage(&dev, s, x.shape()),
        ))
    }
}
