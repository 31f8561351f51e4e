//! Convolutions on CUDA (NCHW input, OIHW weight, no bias). CPU twin: `crate::cpu::conv`.
//!
//! Two paths, picked from the (re-validated) [`Conv2dSpec`]:
//!
//! * **GEMM** (1x1, stride 1, no padding, groups 1): cuBLAS in NCHW without transposes of the
//!   activations. Forward `y[n] (C_out x HW) = W (C_out x C_in) @ x[n] (C_in x HW)` is one
//!   strided-batched GEMM over `n` with `W` shared (stride 0); backward-data is
//!   `dx[n] = W^T @ dy[n]` the same way. Backward-weight `dW = sum_n dy[n] @ x[n]^T`: the batch
//!   cannot be folded into K in NCHW, so chunks of strided-batched GEMMs write per-example
//!   gradients that a deterministic `sum_to` adds; for small images with many channels (where
//!   those `N * C_in * C_out` values outweigh the activations) both activations are transposed
//!   to channel-major instead and one GEMM with `K = N * HW` runs ([`pointwise_bwd_weight`]).
//! * **direct** (everything else: depthwise, the one-channel stem, grouped and dilated
//!   convolutions) through `kernels/conv.cu`, with 3x3 and 5x5 kernels unrolled; the
//!   weight gradient is a deterministic two-stage block reduction (see the kernel file for why
//!   these are not im2col + GEMM).
//!
//! bf16 activations (x, y, dy, dx in bf16 with an f32 weight; the CPU twin is the f32 op on the
//! same values, rounded once): the direct kernels' `_bf16` entry points, and bf16 GEMMs for the
//! pointwise path (the weight's cached bf16 copy times the activations as they are, f32
//! accumulation, a bf16 result; the weight gradient stays f32).

use cudarc::cublas::{sys as blas_sys, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::backend::{buf, i64_of, to_i32, wrap, CudaBackend};
use super::cast::{acts_device, alloc_as, kname, storage, wrap_storage, zeros_as};
use super::gemm_bf16;
use crate::backend::{
    Conv2dSpec, ConvOps, ElementwiseOps, GemmOps, LayoutOps, MatmulSpec, ReduceOps,
};
use crate::cuda::kernels::Family;
use crate::cuda::launch::{alloc_f32, cfg_elems, launch, ConvGeom};
use crate::cuda::CudaDevice;
use crate::{DType, Error, Result, Tensor};

/// Largest plane (`h * w`, `h_out * w_out`) the direct kernels index with `int`.
const PLANE_MAX: usize = 1 << 30;
/// Largest number of planes (`n * c_in`, `n * c_out`): the direct kernels number planes,
/// channels and tiles with 32-bit integers.
const PLANES_MAX: usize = 1 << 30;
/// Largest size, stride, padding or dilation of one axis (keeps `oh * stride - pad + i * dil`
/// inside `int`).
const AXIS_MAX: usize = 1 << 28;
/// Output positions per block of the weight-gradient reduction (whole batch entries are
/// grouped into a chunk until it holds about this many).
const BWD_WEIGHT_CHUNK: usize = 8192;
/// Rows of the tile of one block of `conv_fwd_*` / `conv_bwd_data_*` (32 x 8 threads, each
/// computing 4 rows): mirrors `CONV_TH * CONV_ROWS` in kernels/conv.cu.
const TILE_ROWS: usize = 32;
/// Columns of that tile (one warp): mirrors `CONV_TW` in kernels/conv.cu.
const TILE_COLS: usize = 32;
/// Output positions per block of `conv_fwd_c1_*` (one per thread): `CONV_C1_THREADS`.
const C1_THREADS: usize = 256;
/// Output channels per block of `conv_fwd_c1_*` (weights in shared memory): `CONV_C1_CO`.
const C1_CHANNELS: usize = 16;
/// Threads per block of the weight-gradient reduction.
const BWD_WEIGHT_THREADS: u32 = 256;
/// The grid's y limit.
const GRID_Y_MAX: usize = 65_535;
/// The grid's x limit.
const GRID_X_MAX: usize = i32::MAX as usize;

fn x_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.n, s.c_in, s.h, s.w]
}

fn w_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.c_out, s.c_in / s.groups.max(1), s.kh, s.kw]
}

fn y_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.n, s.c_out, s.h_out, s.w_out]
}

/// True when the geometry runs as a cuBLAS GEMM.
fn is_gemm(s: &Conv2dSpec) -> bool {
    crate::checks::dense_pointwise(s)
}

/// The kernel-side geometry; errors when a size exceeds the direct kernels' index range.
fn geom(op: &'static str, s: &Conv2dSpec) -> Result<ConvGeom> {
    let axes = [
        s.h,
        s.w,
        s.kh,
        s.kw,
        s.stride.0,
        s.stride.1,
        s.padding.0,
        s.padding.1,
        s.dilation.0,
        s.dilation.1,
        s.h_out,
        s.w_out,
    ];
    let planes_ok = s.h.checked_mul(s.w).is_some_and(|p| p <= PLANE_MAX)
        && s.h_out.checked_mul(s.w_out).is_some_and(|p| p <= PLANE_MAX);
    let counts_ok = s.n.checked_mul(s.c_in).is_some_and(|p| p <= PLANES_MAX)
        && s.n.checked_mul(s.c_out).is_some_and(|p| p <= PLANES_MAX);
    if axes.iter().any(|&v| v > AXIS_MAX) || !planes_ok || !counts_ok {
        return Err(Error::invalid(
            op,
            format!(
                "geometry {s:?} exceeds the CUDA convolution kernels' limits (planes of at most \
                 2^30 elements, at most 2^30 planes n * c_in and n * c_out, sizes, strides, \
                 paddings and dilations of at most 2^28)"
            ),
        ));
    }
    let g = s.groups.max(1);
    let i = |v: usize| v as i32;
    Ok(ConvGeom {
        n: i64_of(s.n),
        c_in: i64_of(s.c_in),
        h: i64_of(s.h),
        w: i64_of(s.w),
        c_out: i64_of(s.c_out),
        ho: i64_of(s.h_out),
        wo: i64_of(s.w_out),
        cig: i64_of(s.c_in / g),
        cog: i64_of(s.c_out / g),
        kh: i(s.kh),
        kw: i(s.kw),
        sh: i(s.stride.0),
        sw: i(s.stride.1),
        ph: i(s.padding.0),
        pw: i(s.padding.1),
        dh: i(s.dilation.0),
        dw: i(s.dilation.1),
    })
}

/// The unrolled 3x3 or 5x5 variant of a kernel, else its run-time-size variant.
fn pick(s: &Conv2dSpec, names: [&'static str; 3]) -> &'static str {
    match (s.kh, s.kw) {
        (3, 3) => names[0],
        (5, 5) => names[1],
        _ => names[2],
    }
}

/// Blocks of 32 x 8 threads: grid.x over `planes`, grid.y over the `TILE_ROWS x TILE_COLS`
/// (32 x 32) tiles of a `rows x cols` plane (both grid-strided in the kernel).
fn cfg_tiles(planes: usize, rows: usize, cols: usize) -> LaunchConfig {
    let tiles = rows.div_ceil(TILE_ROWS) * cols.div_ceil(TILE_COLS);
    LaunchConfig {
        grid_dim: (
            planes.clamp(1, GRID_X_MAX) as u32,
            tiles.clamp(1, GRID_Y_MAX) as u32,
            1,
        ),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// A single (unbatched) GEMM spec: a dense pointwise convolution on 1 x 1 images (a pooled
/// feature map) folds its batch into the GEMM rows, one GEMM instead of a batch of
/// matrix-vector products (bf16 operands under autocast, like the batched path).
fn flat_spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulSpec {
    MatmulSpec {
        batch: 1,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batched: false,
        b_batched: false,
        alpha: 1.0,
        bf16_inputs: crate::autocast::bf16_matmuls_active(),
    }
}

/// A dense pointwise convolution's GEMM producing activations of dtype `acts`: f32 through
/// [`CudaBackend::matmul`] (bf16 operands under autocast), bf16 through
/// [`CudaBackend::matmul_bf16`] (bf16 operands, bf16 result).
fn pointwise_gemm(
    [a, b]: [&Tensor; 2],
    spec: &MatmulSpec,
    shape: &[usize],
    acts: DType,
) -> Result<Tensor> {
    match acts {
        DType::BF16 => {
            let spec = MatmulSpec {
                bf16_inputs: true,
                ..*spec
            };
            CudaBackend.matmul_bf16(a, b, &spec, shape, DType::BF16)
        }
        _ => CudaBackend.matmul(a, b, spec, shape),
    }
}

/// `conv_fwd_c1_*`: blocks of `C1_THREADS` threads; grid.x over (batch entry, chunk of
/// `C1_THREADS` output positions), grid.y over the chunks of `C1_CHANNELS` output channels
/// (both grid-strided in the kernel).
fn cfg_c1(s: &Conv2dSpec) -> LaunchConfig {
    let chunks = (s.h_out * s.w_out).div_ceil(C1_THREADS);
    LaunchConfig {
        grid_dim: (
            s.n.saturating_mul(chunks).clamp(1, GRID_X_MAX) as u32,
            s.c_out.div_ceil(C1_CHANNELS).clamp(1, GRID_Y_MAX) as u32,
            1,
        ),
        block_dim: (C1_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// True when the forward of `s` runs `conv_fwd_dw_s2_*`: depthwise (one channel per group,
/// as many outputs), stride 2 and dilation 1 on both axes, and the tile kernel switched on
/// ([`crate::cuda::stride2_tiles`]).
fn s2_tiled(s: &Conv2dSpec) -> bool {
    s.groups == s.c_in
        && s.c_out == s.c_in
        && s.stride == (2, 2)
        && s.dilation == (1, 1)
        && crate::cuda::stride2_tiles()
}

/// Forward.
pub(super) fn forward(x: &Tensor, w: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let dt = x.dtype();
    if is_gemm(s) && s.h * s.w == 1 {
        // y (N x C_out) = x (N x C_in) @ w^T.
        let spec = flat_spec(s.n, s.c_out, s.c_in, false, true);
        return pointwise_gemm([x, w], &spec, &y_shape(s), dt);
    }
    if is_gemm(s) {
        let spec = MatmulSpec {
            batch: s.n,
            m: s.c_out,
            n: s.h * s.w,
            k: s.c_in,
            trans_a: false,
            trans_b: false,
            a_batched: false,
            b_batched: true,
            alpha: 1.0,
            // Under autocast a dense pointwise convolution is a bf16 GEMM (the CPU twin rounds
            // its operands the same way: crate::autocast::bf16_conv_operands).
            bf16_inputs: crate::autocast::bf16_matmuls_active(),
        };
        return pointwise_gemm([w, x], &spec, &y_shape(s), dt);
    }
    let dev = acts_device(OP, &[x], &[w])?;
    let ((_, xs), (_, ws)) = (storage(OP, x)?, buf(OP, w)?);
    let n = y_shape(s).iter().product();
    let mut y = alloc_as(&dev, dt, n, OP)?;
    if n > 0 {
        let g = geom(OP, s)?;
        // One input channel, groups 1 (the stem), 3x3 or 5x5: input taps in registers reused
        // for chunks of C1_CHANNELS output channels (bit-identical to conv_fwd_*).
        let tiled = s2_tiled(s);
        let (name, cfg) = match (s.c_in, s.groups, s.kh, s.kw) {
            (1, 1, 3, 3) => (kname!(dt, "conv_fwd_c1_k3"), cfg_c1(s)),
            (1, 1, 5, 5) => (kname!(dt, "conv_fwd_c1_k5"), cfg_c1(s)),
            // Depthwise, stride 2, dilation 1: the shared-memory tile kernel (bit-identical to
            // conv_fwd_*; same launch shape).
            (_, _, 3, 3) if tiled => (
                kname!(dt, "conv_fwd_dw_s2_k3"),
                cfg_tiles(s.n * s.c_out, s.h_out, s.w_out),
            ),
            (_, _, 5, 5) if tiled => (
                kname!(dt, "conv_fwd_dw_s2_k5"),
                cfg_tiles(s.n * s.c_out, s.h_out, s.w_out),
            ),
            _ => (
                pick(
                    s,
                    [
                        kname!(dt, "conv_fwd_k3"),
                        kname!(dt, "conv_fwd_k5"),
                        kname!(dt, "conv_fwd_any"),
                    ],
                ),
                cfg_tiles(s.n * s.c_out, s.h_out, s.w_out),
            ),
        };
        let f = dev.function(Family::Conv, name)?;
        let mut a = dev.stream.launch_builder(&f);
        a.arg(xs).arg(ws).arg(&mut y).arg(&g);
        launch(a, name, cfg)?;
    }
    Ok(wrap_storage(&dev, y, &y_shape(s)))
}

/// Gradient of the input.
pub(super) fn backward_data(dy: &Tensor, w: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
    const OP: &str = "conv2d_bwd_data";
    let dt = dy.dtype();
    if is_gemm(s) && s.h * s.w == 1 {
        // dx (N x C_in) = dy (N x C_out) @ w.
        let spec = flat_spec(s.n, s.c_in, s.c_out, false, false);
        return pointwise_gemm([dy, w], &spec, &x_shape(s), dt);
    }
    if is_gemm(s) {
        let spec = MatmulSpec {
            batch: s.n,
            m: s.c_in,
            n: s.h * s.w,
            k: s.c_out,
            trans_a: true,
            trans_b: false,
            a_batched: false,
            b_batched: true,
            alpha: 1.0,
            // Under autocast a dense pointwise convolution is a bf16 GEMM (the CPU twin rounds
            // its operands the same way: crate::autocast::bf16_conv_operands).
            bf16_inputs: crate::autocast::bf16_matmuls_active(),
        };
        return pointwise_gemm([w, dy], &spec, &x_shape(s), dt);
    }
    let dev = acts_device(OP, &[dy], &[w])?;
    let ((_, dys), (_, ws)) = (storage(OP, dy)?, buf(OP, w)?);
    let n = x_shape(s).iter().product();
    let mut dx = alloc_as(&dev, dt, n, OP)?;
    if n > 0 {
        let g = geom(OP, s)?;
        let name = match (s.kh, s.kw, s.stride) {
            (3, 3, (1, 1)) => kname!(dt, "conv_bwd_data_k3s1"),
            (3, 3, (2, 2)) => kname!(dt, "conv_bwd_data_k3s2"),
            (5, 5, (1, 1)) => kname!(dt, "conv_bwd_data_k5s1"),
            (5, 5, (2, 2)) => kname!(dt, "conv_bwd_data_k5s2"),
            _ => pick(
                s,
                [
                    kname!(dt, "conv_bwd_data_k3"),
                    kname!(dt, "conv_bwd_data_k5"),
                    kname!(dt, "conv_bwd_data_any"),
                ],
            ),
        };
        let f = dev.function(Family::Conv, name)?;
        let mut a = dev.stream.launch_builder(&f);
        a.arg(dys).arg(ws).arg(&mut dx).arg(&g);
        launch(a, name, cfg_tiles(s.n * s.c_in, s.h, s.w))?;
    }
    Ok(wrap_storage(&dev, dx, &x_shape(s)))
}

/// Gradient of the weight.
pub(super) fn backward_weight(x: &Tensor, dy: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
    const OP: &str = "conv2d_bwd_weight";
    let dev = acts_device(OP, &[x, dy], &[])?;
    let len: usize = w_shape(s).iter().product();
    if len == 0 || s.n == 0 {
        return Ok(wrap_storage(
            &dev,
            zeros_as(&dev, DType::F32, len, OP)?,
            &w_shape(s),
        ));
    }
    if is_gemm(s) {
        return pointwise_bwd_weight(&dev, x, dy, s);
    }
    let dt = x.dtype();
    let ((_, xs), (_, dys)) = (storage(OP, x)?, storage(OP, dy)?);
    let g = geom(OP, s)?;
    // Chunks of whole batch entries holding about BWD_WEIGHT_CHUNK output positions each, at
    // most GRID_Y_MAX of them (grid.y is the chunk index).
    let plane = (s.h_out * s.w_out).max(1);
    let mut per_chunk = (BWD_WEIGHT_CHUNK / plane).clamp(1, s.n);
    if s.n.div_ceil(per_chunk) > GRID_Y_MAX {
        per_chunk = s.n.div_ceil(GRID_Y_MAX);
    }
    let chunks = s.n.div_ceil(per_chunk);
    let pairs = s.c_out * (s.c_in / s.groups);
    let mut part = alloc_f32(&dev, chunks * len, OP)?;
    let name = pick(
        s,
        [
            kname!(dt, "conv_bwd_weight_part_k3"),
            kname!(dt, "conv_bwd_weight_part_k5"),
            kname!(dt, "conv_bwd_weight_part_any"),
        ],
    );
    let cfg = LaunchConfig {
        grid_dim: (pairs.clamp(1, GRID_X_MAX) as u32, chunks as u32, 1),
        block_dim: (BWD_WEIGHT_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = dev.function(Family::Conv, name)?;
    let pc = i64_of(per_chunk);
    let mut a = dev.stream.launch_builder(&f);
    a.arg(xs).arg(dys).arg(&mut part).arg(&g).arg(&pc);
    launch(a, name, cfg)?;
    let mut dw = alloc_f32(&dev, len, OP)?;
    let f = dev.function(Family::Conv, "conv_bwd_weight_finish_f32")?;
    let (ch, ln) = (i64_of(chunks), i64_of(len));
    let mut a = dev.stream.launch_builder(&f);
    a.arg(&part).arg(&mut dw).arg(&ch).arg(&ln);
    launch(a, "conv_bwd_weight_finish_f32", cfg_elems(len))?;
    Ok(wrap(&dev, dw, &w_shape(s)))
}

/// Most f32 elements of the per-example weight gradients one chunk of the batch computes at
/// once in [`pointwise_bwd_weight`] (128 MiB).
const DW_PARTIAL_MAX: usize = 1 << 25;

/// `dW (C_out x C_in) = sum_n dy[n] (C_out x HW) @ x[n]^T`. The batch runs in chunks: one
/// strided-batched cuBLAS GEMM per chunk writes the chunk's per-example gradients (column-major
/// `dW[n]^T (C_in x C_out) = op_T(x[n] as HW x C_in) @ dy[n] (HW x C_out)`), `sum_to` adds
/// them in a fixed order (f64) and the chunks accumulate in order: deterministic, and a
/// handful of large GEMMs instead of one small GEMM per example. Under autocast the operands
/// are cast to bf16 once (f32 accumulation, like the forward and backward-data GEMMs; the CPU
/// rounds the same operands); bf16 activations are bf16 operands as they are. 1 x 1 images
/// fold the batch into one GEMM. Needs `s.n > 0`.
fn pointwise_bwd_weight(
    dev: &CudaDevice,
    x: &Tensor,
    dy: &Tensor,
    s: &Conv2dSpec,
) -> Result<Tensor> {
    const OP: &str = "conv2d_bwd_weight";
    let bf16_acts = x.dtype() == DType::BF16;
    if s.h * s.w == 1 {
        // dW (C_out x C_in) = dy^T (C_out x N) @ x (N x C_in): one GEMM over the batch.
        let spec = flat_spec(s.c_out, s.c_in, s.n, true, false);
        return match bf16_acts {
            true => CudaBackend.matmul_bf16(dy, x, &spec, &w_shape(s), DType::F32),
            false => CudaBackend.matmul(dy, x, &spec, &w_shape(s)),
        };
    }
    let (ci, co, hw) = (s.c_in, s.c_out, s.h * s.w);
    if ci * co > hw * (ci + co) {
        return channel_major_bwd_weight(x, dy, s);
    }
    if gemm_bf16::operand_len(x) < s.n * ci * hw || gemm_bf16::operand_len(dy) < s.n * co * hw {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.shape().to_vec(),
            rhs: dy.shape().to_vec(),
        });
    }
    let gemm = GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_T,
        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: to_i32(OP, "c_in", ci)?,
        n: to_i32(OP, "c_out", co)?,
        k: to_i32(OP, "h*w", hw)?,
        alpha: 1.0f32,
        lda: to_i32(OP, "h*w", hw)?,
        ldb: to_i32(OP, "h*w", hw)?,
        beta: 0.0f32,
        ldc: to_i32(OP, "c_in", ci)?,
    };
    let casts = match bf16_acts || crate::autocast::bf16_matmuls_active() {
        true => Some(gemm_bf16::cast_pair([x, dy], OP)?),
        false => None,
    };
    let chunk = (DW_PARTIAL_MAX / (ci * co).max(1)).clamp(1, s.n);
    let mut dw: Option<Tensor> = None;
    for n0 in (0..s.n).step_by(chunk) {
        let nb = chunk.min(s.n - n0);
        let (xr, dr) = (
            n0 * ci * hw..(n0 + nb) * ci * hw,
            n0 * co * hw..(n0 + nb) * co * hw,
        );
        let mut part = alloc_f32(dev, nb * ci * co, OP)?;
        let what = format!(
            "examples {n0}..{} of {}, m {ci}, n {co}, k {hw}",
            n0 + nb,
            s.n
        );
        let batch = gemm_bf16::Batch {
            count: to_i32(OP, "batch", nb)?,
            stride_a: (ci * hw) as i64,
            stride_b: (co * hw) as i64,
            stride_c: (ci * co) as i64,
        };
        match &casts {
            Some((x16, d16)) => {
                let views = [&x16.slice(xr), &d16.slice(dr)];
                gemm_bf16::batched(dev, &gemm, views, &mut part, &batch, (OP, &what))?;
            }
            None => {
                let operands = [buf(OP, x)?.1, buf(OP, dy)?.1];
                f32_batched(dev, &gemm, operands, [xr, dr], &mut part, &batch, &what)?
            }
        }
        let sum = CudaBackend.sum_to(&wrap(dev, part, &[nb, co * ci]), &[1, co * ci])?;
        match dw.as_mut() {
            None => dw = Some(sum),
            Some(acc) => CudaBackend.axpy(acc, 1.0, &sum)?,
        }
    }
    dw.ok_or_else(|| Error::invalid(OP, "empty batch"))?
        .reshape(&w_shape(s))
}

/// `dW (C_out x C_in) = dy' @ x'^T` with both activations transposed to channel-major
/// `(C, N, HW)` = `(C, N * HW)` first: one GEMM with `K = N * HW` and no per-example gradients.
/// [`pointwise_bwd_weight`] takes it when those gradients (`N * C_in * C_out` values written
/// and summed) outweigh the two transposes (`N * HW * (C_in + C_out)` values): the late layers
/// of the audio CNN, whose images are small and whose channels are many (mn40's last stage:
/// 4.3x fewer values moved). Same operand rounding as the batched path (bf16 operands under
/// autocast or for bf16 activations, f32 accumulation, f32 result); one GEMM, deterministic.
fn channel_major_bwd_weight(x: &Tensor, dy: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
    let (n, ci, co, hw) = (s.n, s.c_in, s.c_out, s.h * s.w);
    let xt = CudaBackend.permute(&x.reshape(&[n, ci, hw])?, &[1, 0, 2])?;
    let dyt = CudaBackend.permute(&dy.reshape(&[n, co, hw])?, &[1, 0, 2])?;
    let bf16_acts = x.dtype() == DType::BF16;
    let spec = MatmulSpec {
        batch: 1,
        m: co,
        n: ci,
        k: n * hw,
        trans_a: false,
        trans_b: true,
        a_batched: false,
        b_batched: false,
        alpha: 1.0,
        bf16_inputs: bf16_acts || crate::autocast::bf16_matmuls_active(),
    };
    match bf16_acts {
        true => CudaBackend.matmul_bf16(&dyt, &xt, &spec, &w_shape(s), DType::F32),
        false => CudaBackend.matmul(&dyt, &xt, &spec, &w_shape(s)),
    }
}

/// One strided-batched FP32 GEMM of [`pointwise_bwd_weight`] on the element ranges `xr` / `dr`
/// of the two operands (`batch` gives the count and strides).
fn f32_batched(
    dev: &CudaDevice,
    gemm: &GemmConfig<f32>,
    [xs, dys]: [&CudaSlice<f32>; 2],
    [xr, dr]: [std::ops::Range<usize>; 2],
    part: &mut CudaSlice<f32>,
    batch: &gemm_bf16::Batch,
    what: &str,
) -> Result<()> {
    const OP: &str = "conv2d_bwd_weight";
    let blas = dev.blas()?;
    let cfg = StridedBatchedConfig {
        gemm: *gemm,
        batch_size: batch.count,
        stride_a: batch.stride_a,
        stride_b: batch.stride_b,
        stride_c: batch.stride_c,
    };
    let (xv, dv) = (xs.slice(xr), dys.slice(dr));
    crate::cuda::profile::around("cublas sgemm strided batched (pointwise dW)", || {
        // SAFETY: the caller checked that the operands hold the batch's `count` matrices of
        // ci*hw and co*hw elements at those strides; `part` holds count * ci*co.
        unsafe { blas.gemm_strided_batched(cfg, &xv, &dv, part) }.map_err(|e| Error::Cuda {
            op: OP,
            msg: format!("cublasSgemmStridedBatched ({what}) failed: {e:?}"),
        })
    })
}

impl ConvOps for CudaBackend {
    fn conv2d(&self, x: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        forward(x, w, spec)
    }

    fn conv2d_bwd_data(&self, dy: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        backward_data(dy, w, spec)
    }

    fn conv2d_bwd_weight(&self, x: &Tensor, dy: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
        backward_weight(x, dy, spec)
    }
}
