//! Layout ops on CUDA: permute, concat, slice, pad, embedding gather and scatter-add.

use super::cast::{alloc_as, device_any, kname, storage, wrap_storage, zeros_as};

use cudarc::driver::PushKernelArg;

use super::backend::{buf, device_of, gather, i64_of, scatter_into, upload_ids, wrap, CudaBackend};
use super::kernels::Family;
use super::launch::{cfg_elems, launch, row_major, zeros_f32};
use crate::backend::LayoutOps;
use crate::checks::split_at_axis;
use crate::{DType, Error, Result, Tensor};

impl LayoutOps for CudaBackend {
    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        const OP: &str = "permute";
        let st = row_major(x.shape());
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        let stride: Vec<i64> = perm.iter().map(|&p| st[p]).collect();
        let name = kname!(x.dtype(), "gather");
        gather(OP, Family::Layout, name, x, &shape, 0, &stride)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        const OP: &str = "concat";
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid(OP, "no tensors given"))?;
        let dev = device_any(OP, xs)?;
        let (outer, _, inner) = split_at_axis(first.shape(), axis);
        let total: usize = xs.iter().map(|t| t.shape()[axis]).sum();
        let mut shape = first.shape().to_vec();
        shape[axis] = total;
        let mut y = alloc_as(&dev, first.dtype(), outer * total * inner, OP)?;
        let mut at = 0usize;
        for t in xs {
            let len = t.shape()[axis];
            let geo = [outer, len, inner];
            let st = [(total * inner) as i64, inner as i64, 1];
            let part = t.reshape(&geo)?;
            scatter_into(&dev, OP, &part, &mut y, at * inner, &st)?;
            at += len;
        }
        Ok(wrap_storage(&dev, y, &shape))
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        const OP: &str = "slice";
        let (outer, dim, inner) = split_at_axis(x.shape(), axis);
        let mut shape = x.shape().to_vec();
        shape[axis] = len;
        let geo = [outer, len, inner];
        let st = [(dim * inner) as i64, inner as i64, 1];
        let y = gather(
            OP,
            Family::Layout,
            kname!(x.dtype(), "gather"),
            x,
            &geo,
            start * inner,
            &st,
        )?;
        y.reshape(&shape)
    }

    fn pad_axis(&self, x: &Tensor, axis: usize, start: usize, total: usize) -> Result<Tensor> {
        const OP: &str = "pad_axis";
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let dev = device_any(OP, &[x])?;
        let mut shape = x.shape().to_vec();
        shape[axis] = total;
        let mut y = zeros_as(&dev, x.dtype(), outer * total * inner, OP)?;
        let part = x.reshape(&[outer, len, inner])?;
        let st = [(total * inner) as i64, inner as i64, 1];
        scatter_into(&dev, OP, &part, &mut y, start * inner, &st)?;
        Ok(wrap_storage(&dev, y, &shape))
    }

    fn embedding(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        const OP: &str = "embedding";
        let d = table.shape()[1];
        let dev = device_any(OP, &[table])?;
        let (_, ts) = storage(OP, table)?;
        let n = ids.len() * d;
        let mut y = alloc_as(&dev, table.dtype(), n, OP)?;
        if n > 0 {
            let idb = upload_ids(&dev, OP, ids)?;
            let name = kname!(table.dtype(), "embedding");
            let f = dev.function(Family::Layout, name)?;
            let (ni, dd) = (i64_of(ids.len()), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(ts).arg(&idb).arg(&mut y).arg(&ni).arg(&dd);
            launch(a, name, cfg_elems(n))?;
        }
        Ok(wrap_storage(&dev, y, &[ids.len(), d]))
    }

    fn embedding_bwd(&self, dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
        const OP: &str = "embedding_bwd";
        let d = dy.shape()[1];
        if dy.dtype() == DType::BF16 {
            return embedding_bwd_sorted(dy, ids, vocab, d);
        }
        let dev = device_of(OP, &[dy])?;
        let (_, gs) = buf(OP, dy)?;
        let mut g = zeros_f32(&dev, vocab * d, OP)?;
        let n = ids.len() * d;
        if n > 0 {
            let idb = upload_ids(&dev, OP, ids)?;
            let f = dev.function(Family::Layout, "embedding_bwd_f32")?;
            let (ni, dd) = (i64_of(ids.len()), i64_of(d));
            let mut a = dev.stream.launch_builder(&f);
            a.arg(gs).arg(&idb).arg(&mut g).arg(&ni).arg(&dd);
            launch(a, "embedding_bwd_f32", cfg_elems(n))?;
        }
        Ok(wrap(&dev, g, &[vocab, d]))
    }
}

/// Embedding backward for bf16 `dy` (n_ids, d): positions bucketed by id on the host (stable
/// counting sort, shared with the CPU), then one thread per gradient element sums its bucket
/// in position order in f32 and rounds once. Deterministic and equal to the CPU bit for bit
/// (the f32 path's atomicAdd would make the bf16 rounding order-dependent).
fn embedding_bwd_sorted(dy: &Tensor, ids: &[u32], vocab: usize, d: usize) -> Result<Tensor> {
    const OP: &str = "embedding_bwd";
    let dev = device_any(OP, &[dy])?;
    let (_, gs) = storage(OP, dy)?;
    let n = crate::numel_of(OP, &[vocab, d])?;
    let mut g = alloc_as(&dev, dy.dtype(), n, OP)?;
    if n > 0 {
        let (start, order) = crate::cpu::id_buckets(ids, vocab);
        let as_u32 = |v: Vec<usize>| {
            v.into_iter()
                .map(|p| {
                    u32::try_from(p).map_err(|_| {
                        Error::invalid(OP, format!("{} ids exceed the u32 range", ids.len()))
                    })
                })
                .collect::<Result<Vec<u32>>>()
        };
        let sb = upload_ids(&dev, OP, &as_u32(start)?)?;
        let ob = upload_ids(&dev, OP, &as_u32(order)?)?;
        let name = "embedding_bwd_sorted_bf16";
        let f = dev.function(Family::Layout, name)?;
        let (vv, dd) = (i64_of(vocab), i64_of(d));
        let mut a = dev.stream.launch_builder(&f);
        a.arg(gs).arg(&sb).arg(&ob).arg(&mut g).arg(&vv).arg(&dd);
        launch(a, name, cfg_elems(n))?;
    }
    Ok(wrap_storage(&dev, g, &[vocab, d]))
}
