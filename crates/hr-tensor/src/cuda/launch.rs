//! Launch helpers: output allocation (optionally NaN-poisoned for parity tests), launch shapes,
//! kernel-argument structs mirrored from `kernels/common.cuh`, errors that name the kernel and
//! its grid/block, and a CUDA-event timer for benchmarks.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::driver::{
    result as drv, sys as drv_sys, CudaEvent, CudaSlice, DevicePtrMut, DeviceRepr, DriverError,
    LaunchArgs, LaunchConfig,
};

use super::CudaDevice;
use crate::{Error, Result};

static POISON: AtomicBool = AtomicBool::new(false);

/// When on, every output buffer the CUDA backend allocates is filled with NaN before the
/// kernel runs, so an element a kernel forgets to write shows up as NaN (parity tests).
pub fn set_poison_outputs(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// Whether outputs are poisoned (see [`set_poison_outputs`]).
pub fn poison_outputs() -> bool {
    POISON.load(Ordering::Relaxed)
}

/// Stride-2 depthwise forwards through the shared-memory tile kernel: 0 = not decided yet
/// (`HR_CONV_S2_TILES` decides on first use: `0` turns it off), 1 = off, 2 = on.
static S2_TILES: AtomicU8 = AtomicU8::new(0);

/// Turns the shared-memory tile kernel of the stride-2 depthwise forwards (`conv_fwd_dw_s2_*`)
/// on or off (bit-identical results either way; for A/B timing against the plain kernel).
pub fn set_stride2_tiles(on: bool) {
    S2_TILES.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether stride-2 depthwise forwards use the tile kernel (see [`set_stride2_tiles`]; the
/// default is on unless the environment sets `HR_CONV_S2_TILES=0`).
pub fn stride2_tiles() -> bool {
    match S2_TILES.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("HR_CONV_S2_TILES").map_or(true, |v| v.trim() != "0");
            set_stride2_tiles(on);
            on
        }
        v => v == 2,
    }
}

/// The driver's name and description of an error.
pub(crate) fn driver_msg(e: &DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?} ({})", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// Error of a driver call made for `op`.
pub(crate) fn cuda_err(op: &'static str, e: DriverError) -> Error {
    Error::Cuda {
        op,
        msg: driver_msg(&e),
    }
}

/// Fills `buf` with `byte` (0xff = NaN for f32 and bf16).
pub(crate) fn memset<T>(
    dev: &CudaDevice,
    buf: &mut CudaSlice<T>,
    byte: u8,
    op: &'static str,
) -> Result<()> {
    let bytes = buf.len() * std::mem::size_of::<T>();
    let (ptr, _sync) = buf.device_ptr_mut(&dev.stream);
    // SAFETY: `ptr` addresses `bytes` bytes owned by `buf`, on the stream it is used with.
    unsafe { drv::memset_d8_async(ptr, byte, bytes, dev.stream.cu_stream()) }
        .map_err(|e| cuda_err(op, e))
}

/// A new buffer of `n` elements of `T` (at least one: the driver rejects empty allocations),
/// NaN-filled when poisoning is on, otherwise uninitialised. `what` names the element type.
fn alloc<T: DeviceRepr>(
    dev: &CudaDevice,
    n: usize,
    what: &str,
    op: &'static str,
) -> Result<CudaSlice<T>> {
    // SAFETY: the memory is either poisoned below or fully written by the kernel that follows
    // (every backend op writes each output element or zeroes the buffer first).
    let mut buf = unsafe { dev.stream.alloc::<T>(n.max(1)) }.map_err(|e| Error::Cuda {
        op,
        msg: format!(
            "allocating {n} {what} elements ({} bytes): {}",
            n * std::mem::size_of::<T>(),
            driver_msg(&e)
        ),
    })?;
    if poison_outputs() {
        memset(dev, &mut buf, 0xff, op)?;
    }
    Ok(buf)
}

/// A new f32 buffer of `n` elements (at least one), NaN-filled when poisoning is on.
pub(crate) fn alloc_f32(dev: &CudaDevice, n: usize, op: &'static str) -> Result<CudaSlice<f32>> {
    alloc(dev, n, "f32", op)
}

/// A new bf16 buffer (bits as u16) of `n` elements (at least one), NaN-filled when poisoning
/// is on.
pub(crate) fn alloc_bf16(dev: &CudaDevice, n: usize, op: &'static str) -> Result<CudaSlice<u16>> {
    alloc(dev, n, "bf16", op)
}

/// A new zero-filled f32 buffer of `n` elements (at least one).
pub(crate) fn zeros_f32(dev: &CudaDevice, n: usize, op: &'static str) -> Result<CudaSlice<f32>> {
    let mut buf = alloc_f32(dev, n, op)?;
    memset(dev, &mut buf, 0, op)?;
    Ok(buf)
}

/// Threads per block of the elementwise kernels.
pub(crate) const BLOCK: u32 = 256;
/// Upper bound on blocks of grid-stride kernels.
pub(crate) const MAX_BLOCKS: usize = 1 << 18;

/// Grid-stride launch over `n` elements.
pub(crate) fn cfg_elems(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row (grid-stride over rows), threads a multiple of 32 fitting `k`, <= 256.
pub(crate) fn cfg_rows(rows: usize, k: usize) -> LaunchConfig {
    let threads = k.div_ceil(32).clamp(1, 8) as u32 * 32;
    LaunchConfig {
        grid_dim: (rows.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `sum_to_cols` of kernels/reduce.cu: 32 x SUM_COLS_Y (8) threads, one block per 32 outputs
/// (grid-stride over them).
pub(crate) fn cfg_sum_cols(n_out: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n_out.div_ceil(32).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row, 4 rows per block (grid-stride over rows).
pub(crate) fn cfg_warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(4).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `args` with `cfg`; errors name the kernel, the grid/block and the CUDA error.
pub(crate) fn launch(
    mut args: LaunchArgs<'_>,
    name: &'static str,
    cfg: LaunchConfig,
) -> Result<()> {
    super::profile::around(name, || {
        // SAFETY: every call site pushes arguments matching the kernel's C signature in
        // kernels/*.cu (pointers to buffers of the sizes the kernel indexes).
        unsafe { args.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::Cuda {
                op: name,
                msg: format!(
                    "launch of {name} with grid {:?} block {:?} ({} B shared) failed: {}",
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    driver_msg(&e)
                ),
            })
    })
}

/// Maximum rank of strided kernels (`HR_MAX_RANK` in common.cuh).
pub(crate) const MAX_RANK: usize = 8;

/// `Strided` of common.cuh: shape and element strides of a view.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Strided {
    rank: i32,
    pad: i32,
    shape: [i64; MAX_RANK],
    stride: [i64; MAX_RANK],
}

// SAFETY: plain-old-data with the C layout of `struct Strided` in kernels/common.cuh.
unsafe impl DeviceRepr for Strided {}

/// `Broadcast2` of common.cuh: output shape and the strides of two inputs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Broadcast2 {
    rank: i32,
    pad: i32,
    shape: [i64; MAX_RANK],
    stride_a: [i64; MAX_RANK],
    stride_b: [i64; MAX_RANK],
}

// SAFETY: plain-old-data with the C layout of `struct Broadcast2` in kernels/common.cuh.
unsafe impl DeviceRepr for Broadcast2 {}

/// `AdamConsts` of kernels/optim.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AdamConsts {
    pub decay: f32,
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

// SAFETY: eight f32 in the order of `struct AdamConsts` in kernels/optim.cu.
unsafe impl DeviceRepr for AdamConsts {}

/// `ConvGeom` of kernels/conv.cu: a validated convolution geometry (built by
/// `backend::conv::geom`, which bounds every field so the kernels' in-plane `int` arithmetic
/// cannot overflow).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConvGeom {
    pub n: i64,
    pub c_in: i64,
    pub h: i64,
    pub w: i64,
    pub c_out: i64,
    pub ho: i64,
    pub wo: i64,
    /// Input channels per group.
    pub cig: i64,
    /// Output channels per group.
    pub cog: i64,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub ph: i32,
    pub pw: i32,
    pub dh: i32,
    pub dw: i32,
}

// SAFETY: nine i64 then eight i32, in the order (and C layout, 104 bytes, no padding) of
// `struct ConvGeom` in kernels/conv.cu.
unsafe impl DeviceRepr for ConvGeom {}

/// Row-major strides of `shape`.
pub(crate) fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// Drops size-1 axes and merges axes that are contiguous in every operand: returns the
/// collapsed shape and one stride vector per operand. Errors above [`MAX_RANK`] axes.
pub(crate) fn collapse(
    op: &'static str,
    shape: &[usize],
    strides: &[&[i64]],
) -> Result<(Vec<i64>, Vec<Vec<i64>>)> {
    let mut out_shape: Vec<i64> = Vec::new();
    let mut out_strides: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for (ax, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let size = size as i64;
        let mergeable = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| o.last().copied() == Some(s[ax] * size));
        if mergeable {
            if let Some(last) = out_shape.last_mut() {
                *last *= size;
            }
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                if let Some(l) = o.last_mut() {
                    *l = s[ax];
                }
            }
        } else {
            out_shape.push(size);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[ax]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        out_strides.iter_mut().for_each(|o| o.push(0));
    }
    if out_shape.len() > MAX_RANK {
        return Err(Error::invalid(
            op,
            format!(
                "shape {shape:?} needs {} strided axes on CUDA (at most {MAX_RANK})",
                out_shape.len()
            ),
        ));
    }
    Ok((out_shape, out_strides))
}

impl Strided {
    /// Whether the view is one run of consecutive elements (rank 1, stride 1).
    pub(crate) fn is_contiguous_run(&self) -> bool {
        self.rank == 1 && self.stride[0] == 1
    }

    /// A strided view of `shape` with element `stride`s (collapsed first).
    pub(crate) fn new(op: &'static str, shape: &[usize], stride: &[i64]) -> Result<Strided> {
        let (sh, st) = collapse(op, shape, &[stride])?;
        let mut s = Strided {
            rank: sh.len() as i32,
            ..Default::default()
        };
        s.shape[..sh.len()].copy_from_slice(&sh);
        s.stride[..sh.len()].copy_from_slice(&st[0]);
        Ok(s)
    }
}

impl Broadcast2 {
    /// Output `shape` read through the strides of two inputs (collapsed first).
    pub(crate) fn new(
        op: &'static str,
        shape: &[usize],
        sa: &[i64],
        sb: &[i64],
    ) -> Result<Broadcast2> {
        let (sh, st) = collapse(op, shape, &[sa, sb])?;
        let mut g = Broadcast2 {
            rank: sh.len() as i32,
            ..Default::default()
        };
        g.shape[..sh.len()].copy_from_slice(&sh);
        g.stride_a[..sh.len()].copy_from_slice(&st[0]);
        g.stride_b[..sh.len()].copy_from_slice(&st[1]);
        Ok(g)
    }
}

/// Times GPU work on a device's stream with CUDA events (for benchmarks).
#[derive(Debug)]
pub struct DeviceTimer {
    dev: Arc<CudaDevice>,
    start: CudaEvent,
}

impl DeviceTimer {
    /// Records the start event on device `ordinal`'s stream.
    pub fn start(ordinal: usize) -> Result<DeviceTimer> {
        let dev = super::context(ordinal)?;
        let start = dev
            .stream
            .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| cuda_err("DeviceTimer::start", e))?;
        Ok(DeviceTimer { dev, start })
    }

    /// Records the end event, waits for it, and returns the elapsed milliseconds.
    pub fn stop_ms(&self) -> Result<f32> {
        let end = self
            .dev
            .stream
            .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| cuda_err("DeviceTimer::stop", e))?;
        self.start
            .elapsed_ms(&end)
            .map_err(|e| cuda_err("DeviceTimer::elapsed", e))
    }
}

/// Waits for all work queued on device `ordinal`; surfaces asynchronous kernel errors.
pub fn synchronize(ordinal: usize) -> Result<()> {
    let dev = super::context(ordinal)?;
    dev.stream
        .synchronize()
        .map_err(|e| cuda_err("synchronize", e))
}
