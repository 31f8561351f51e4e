//! CUDA op benchmarks on `cuda:0`, timed with CUDA events on the device's stream (kernel time,
//! not host overhead): GEMM 4096^3 (cuBLAS, FP32 without TF32), layer norm, masked softmax,
//! fused Adam, GELU, the convolutions and batch norms of the MobileNetV3 mn40 audio encoder
//! (batch 32, 10 s clips; f32 and bf16 activations), the squeeze-and-excitation block's
//! per-plane ops, the fused attention and contrastive loss, the bf16 autocast GEMM,
//! plus a streaming ceiling (in-place `axpy`: two reads + one write)
//! that the memory-bound kernels are compared against (pointwise convolutions, which are
//! cuBLAS GEMMs, are compared against the 4096^3 GEMM instead).
//!
//! `cargo bench -p hr-tensor --bench cuda_ops` prints a Markdown table for docs/PERF.md; on a
//! machine without a GPU it prints "skipped: no CUDA device" and exits successfully.

use hr_tensor::{cuda, ops, AdamStep, DType, Device, Rng, Tensor};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Median milliseconds per call of `f` on device 0: 3 warm-up calls (kernel compilation,
/// allocator), then 7 samples of `reps` calls each between two CUDA events.
fn time_ms(reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    for _ in 0..3 {
        f()?;
    }
    cuda::synchronize(0)?;
    let mut samples = Vec::new();
    for _ in 0..7 {
        let t = cuda::DeviceTimer::start(0)?;
        for _ in 0..reps {
            f()?;
        }
        samples.push(t.stop_ms()? as f64 / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[3])
}

/// Uniform random f32 tensor uploaded to `dev` (small inputs; big ones use constants).
fn rand_on(shape: &[usize], seed: u64, dev: Device) -> Res<Tensor> {
    Ok(Tensor::rand_uniform(shape, -2.0, 2.0, &mut Rng::new(seed))?.to_device(dev)?)
}

fn full_on(shape: &[usize], v: f64, dev: Device) -> Res<Tensor> {
    Ok(Tensor::full(shape, v, DType::F32)?.to_device(dev)?)
}

struct Row {
    op: String,
    shape: String,
    ms: f64,
    rate: String,
    frac: String,
}

fn main() -> Res<()> {
    if !cuda::driver_present() {
        println!("skipped: no CUDA device");
        return Ok(());
    }
    let dev = match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return Ok(());
        }
    };
    let info = cuda::context(0)?;
    println!(
        "device: {} (sm_{}{}), kernel cache {}",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        cuda::kernel_cache_dir().display()
    );
    let mut rows: Vec<Row> = Vec::new();
    let gbs = |bytes: f64, ms: f64| bytes / (ms * 1e-3) / 1e9;

    // Streaming ceiling: in-place y += a * x over 2 x 128M floats (2 reads + 1 write per
    // element, no allocation), the best any of our memory-bound kernels can do.
    let n_stream = 1usize << 27;
    let xs = full_on(&[n_stream], 1.0, dev)?;
    let mut ys = full_on(&[n_stream], 0.0, dev)?;
    let ms = time_ms(5, || {
        ops::axpy(&mut ys, 1e-3, &xs)?;
        Ok(())
    })?;
    let ceiling = gbs(12.0 * n_stream as f64, ms);
    drop(ys);
    rows.push(Row {
        op: "stream ceiling (axpy, in place)".into(),
        shape: format!("[{n_stream}]"),
        ms,
        rate: format!("{ceiling:.0} GB/s"),
        frac: "1.00".into(),
    });
    // Out of place (allocates its output from the stream-ordered pool on every call).
    let ms = time_ms(5, || {
        ops::affine(&xs, 1.5, 0.5)?;
        Ok(())
    })?;
    let shape = format!("[{n_stream}]");
    rows.push(mem_row(
        "affine (out of place)",
        shape,
        8.0 * n_stream as f64,
        ms,
        ceiling,
    ));
    drop(xs);
    let mem_row =
        |op: &str, shape: String, bytes: f64, ms: f64| mem_row(op, shape, bytes, ms, ceiling);

    // GEMM 4096^3 f32.
    let n = 4096;
    let a = rand_on(&[n, n], 1, dev)?;
    let b = rand_on(&[n, n], 2, dev)?;
    let ms = time_ms(5, || {
        ops::matmul(&a, &b)?;
        Ok(())
    })?;
    let tflops = 2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12;
    rows.push(Row {
        op: "matmul f32 (cuBLAS, no TF32)".into(),
        shape: format!("{n}x{n}x{n}"),
        ms,
        rate: format!("{tflops:.1} TFLOP/s"),
        frac: "-".into(),
    });
    drop((a, b));
    let gemm_peak = tflops;

    // Layer norm (32*97, 768).
    let (r, d) = (32 * 97, 768);
    let x = rand_on(&[r, d], 3, dev)?;
    let g = rand_on(&[d], 4, dev)?;
    let bb = rand_on(&[d], 5, dev)?;
    let ms = time_ms(50, || {
        ops::layer_norm(&x, &g, &bb, 1e-5)?;
        Ok(())
    })?;
    rows.push(mem_row(
        "layer_norm",
        format!("[{r}, {d}]"),
        (2 * r * d * 4 + 2 * r * 4) as f64,
        ms,
    ));
    let dy = rand_on(&[r, d], 6, dev)?;
    let (_, st) = ops::layer_norm(&x, &g, &bb, 1e-5)?;
    let ms = time_ms(50, || {
        ops::layer_norm_bwd(&x, &g, &st, &dy)?;
        Ok(())
    })?;
    // Reads x and dy twice (dx pass, parameter pass), writes dx.
    rows.push(mem_row(
        "layer_norm_bwd",
        format!("[{r}, {d}]"),
        (5 * r * d * 4) as f64,
        ms,
    ));

    // Masked softmax (32*12*97, 97): x (32, 12*97, 97) with a (32, 97) key mask.
    let (bt, rr, k) = (32, 12 * 97, 97);
    let x = rand_on(&[bt, rr, k], 7, dev)?;
    let mv: Vec<f32> = (0..bt * k)
        .map(|i| {
            if i % k < k - 1 - (i / k) % 40 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mv, &[bt, k])?.to_device(dev)?;
    let ms = time_ms(50, || {
        ops::softmax(&x, Some(&mask))?;
        Ok(())
    })?;
    rows.push(mem_row(
        "softmax masked",
        format!("[{}, {k}]", bt * rr),
        (2 * bt * rr * k * 4) as f64,
        ms,
    ));
    let ms = time_ms(50, || {
        ops::softmax(&x, None)?;
        Ok(())
    })?;
    rows.push(mem_row(
        "softmax",
        format!("[{}, {k}]", bt * rr),
        (2 * bt * rr * k * 4) as f64,
        ms,
    ));
    drop((x, mask));

    // Fused Adam on 100M parameters (reads p, g, m, v; writes p, m, v).
    let np = 100_000_000usize;
    let mut p = full_on(&[np], 0.5, dev)?;
    let gr = full_on(&[np], 0.01, dev)?;
    let mut m = full_on(&[np], 0.0, dev)?;
    let mut v = full_on(&[np], 0.0, dev)?;
    let mut step = 0u64;
    let ms = time_ms(5, || {
        step += 1;
        let hp = AdamStep::new(1e-3, 0.01, step);
        ops::adam_step(&mut p, &gr, &mut m, &mut v, &hp)?;
        Ok(())
    })?;
    rows.push(mem_row(
        "adamw step",
        format!("[{np}]"),
        (7 * np * 4) as f64,
        ms,
    ));
    drop((p, gr, m, v));

    // GELU on 64M elements.
    let ne = 64usize << 20;
    let x = full_on(&[ne], 0.3, dev)?;
    let ms = time_ms(10, || {
        ops::gelu(&x)?;
        Ok(())
    })?;
    rows.push(mem_row("gelu", format!("[{ne}]"), (2 * ne * 4) as f64, ms));

    drop(x);
    fused_rows(dev, gemm_peak, &mut rows)?;
    for dtype in [DType::F32, DType::BF16] {
        conv_rows(dev, ceiling, gemm_peak, dtype, &mut rows)?;
        batch_norm_rows(dev, ceiling, dtype, &mut rows)?;
        plane_rows(dev, ceiling, dtype, &mut rows)?;
    }

    println!("\n| op | shape | time (ms) | achieved | fraction of stream ceiling |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {} | {} |",
            r.op, r.shape, r.ms, r.rate, r.frac
        );
    }
    Ok(())
}

/// FLOP-rate row against the f32 GEMM's rate.
fn flop_row(op: &str, shape: String, flops: f64, ms: f64, gemm_peak: f64) -> Row {
    let t = flops / (ms * 1e-3) / 1e12;
    Row {
        op: op.into(),
        shape,
        ms,
        rate: format!("{t:.2} TFLOP/s"),
        frac: format!("{:.2} of f32 GEMM", t / gemm_peak),
    }
}

/// The fused ops: attention at the BERT query shape (32 tokens) and a long sequence (200), the
/// contrastive loss at global batch 256, and the bf16 autocast GEMM 4096^3.
fn fused_rows(dev: Device, gemm_peak: f64, rows: &mut Vec<Row>) -> Res<()> {
    for (t, name, name_bwd) in [
        (32, "attention fwd (fused)", "attention bwd (fused)"),
        (
            200,
            "attention fwd (fused), T 200",
            "attention bwd (fused), T 200",
        ),
    ] {
        let (b, h, dh) = (32, 12, 64);
        let [q, k, v] = [1u64, 2, 3].map(|s| rand_on(&[b, t, h, dh], 20 + s, dev));
        let (q, k, v) = (q?, k?, v?);
        let keep: Vec<f32> = (0..b * t)
            .map(|i| f32::from(i % t < t - (i / t) % 8))
            .collect();
        let mask = Tensor::from_vec(keep, &[b, t])?.to_device(dev)?;
        let spec = ops::attention_spec(&q, &k)?;
        let shape = format!("B {b} T {t} H {h} Dh {dh}");
        let flops = 4.0 * (b * h * t * t * dh) as f64;
        let ms = time_ms(20, || {
            ops::attention(&q, &k, &v, Some(&mask), &spec)?;
            Ok(())
        })?;
        rows.push(flop_row(name, shape.clone(), flops, ms, gemm_peak));
        let (o, lse) = ops::attention(&q, &k, &v, Some(&mask), &spec)?;
        let ms = time_ms(20, || {
            ops::attention_bwd(&q, &k, &v, Some(&mask), &o, &lse, &o, &spec)?;
            Ok(())
        })?;
        rows.push(flop_row(name_bwd, shape, 2.5 * flops, ms, gemm_peak));
    }
    let n = 256;
    let s = rand_on(&[n, n], 30, dev)?;
    let groups: Vec<u32> = (0..n as u32).map(|i| i / 5).collect();
    let ms = time_ms(50, || {
        ops::contrastive_loss(&s, &groups)?;
        Ok(())
    })?;
    let (_, st) = ops::contrastive_loss(&s, &groups)?;
    rows.push(Row {
        op: "contrastive loss fwd (fused)".into(),
        shape: format!("[{n}, {n}]"),
        ms,
        rate: "-".into(),
        frac: "-".into(),
    });
    let ms = time_ms(50, || {
        ops::contrastive_loss_bwd(&s, &groups, &st, 1.0)?;
        Ok(())
    })?;
    rows.push(Row {
        op: "contrastive loss bwd (fused)".into(),
        shape: format!("[{n}, {n}]"),
        ms,
        rate: "-".into(),
        frac: "-".into(),
    });
    let n = 4096;
    let (a, b) = (rand_on(&[n, n], 31, dev)?, rand_on(&[n, n], 32, dev)?);
    let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
    let ms = time_ms(5, || {
        ops::matmul(&a, &b)?;
        Ok(())
    })?;
    let flops = 2.0 * (n as f64).powi(3);
    rows.push(flop_row(
        "matmul bf16 autocast (casts + GemmEx)",
        format!("{n}x{n}x{n}"),
        flops,
        ms,
        gemm_peak,
    ));
    Ok(())
}

/// One convolution benchmark: its kernel (`name`), the mn40 layer it comes from, input NCHW,
/// weight OIHW, stride, padding (both axes), and whether the input gradient is timed (not for
/// the stem: its input is the mel input). Groups follow from the shapes (x channels over the
/// weight's inputs per group).
struct ConvBench {
    name: &'static str,
    layer: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    pad: usize,
    bwd_data: bool,
}

impl ConvBench {
    /// The groups of this convolution.
    const fn groups(&self) -> usize {
        self.x[1] / self.w[1]
    }
}

/// The convolutions that dominate the mn40 encoder (width 4.0, batch 32, input 1 x 128 x 1000),
/// one per line: kernel, layer, x, w, stride, pad, input gradient timed.
#[rustfmt::skip]
const CONV_BENCHES: [ConvBench; 7] = {
    const fn c(
        name: &'static str, layer: &'static str, x: [usize; 4], w: [usize; 4], stride: usize,
        pad: usize, bwd_data: bool,
    ) -> ConvBench {
        ConvBench { name, layer, x, w, stride, pad, bwd_data }
    }
    [
        c("conv 3x3 s2 1->64", "stem", [32, 1, 128, 1000], [64, 1, 3, 3], 2, 1, false),
        c("dw 3x3 s1", "block 1", [32, 64, 64, 500], [64, 1, 3, 3], 1, 1, true),
        c("dw 3x3 s2", "block 2", [32, 256, 64, 500], [256, 1, 3, 3], 2, 1, true),
        c("dw 5x5 s2", "block 4", [32, 288, 32, 250], [288, 1, 5, 5], 2, 2, true),
        c("pw 1x1 64->256", "block 2 expand", [32, 64, 64, 500], [256, 64, 1, 1], 1, 0, true),
        c("pw 1x1 2688->448", "block 12 project", [32, 2688, 8, 63], [448, 2688, 1, 1], 1, 0, true),
        c("pw 1x1 640->3840", "features.16", [32, 640, 4, 32], [3840, 640, 1, 1], 1, 0, true),
    ]
};

/// A convolution row: bytes moved (each operand once) against the stream ceiling for the direct
/// kernels, TFLOP/s against the f32 GEMM for the pointwise (cuBLAS) ones; the rate column
/// gives both.
fn conv_row(
    op: &str,
    shape: String,
    [bytes, flops, ms]: [f64; 3],
    ceiling: f64,
    gemm: Option<f64>,
) -> Row {
    let mut row = match gemm {
        Some(peak) => flop_row(op, shape, flops, ms, peak),
        None => mem_row(op, shape, bytes, ms, ceiling),
    };
    let (gbs, tf) = (bytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12);
    row.rate = format!("{gbs:.0} GB/s, {tf:.2} TFLOP/s");
    row
}

/// A memory-bound row: `bytes` moved in `ms`, as GB/s and as a fraction of the stream
/// `ceiling`.
fn mem_row(op: &str, shape: String, bytes: f64, ms: f64, ceiling: f64) -> Row {
    let r = bytes / (ms * 1e-3) / 1e9;
    Row {
        op: op.into(),
        shape,
        ms,
        rate: format!("{r:.0} GB/s"),
        frac: format!("{:.2}", r / ceiling),
    }
}

impl Row {
    /// This row with `note` (how its bytes were counted) after its rate.
    fn note(mut self, note: &str) -> Row {
        self.rate.push_str(note);
        self
    }
}

/// Bytes of `shape` elements of `dtype`.
fn bytes_of(shape: &[usize], dtype: DType) -> f64 {
    (dtype.size_in_bytes() * shape.iter().product::<usize>()) as f64
}

/// " bf16" for bf16 activations (appended to a row's shape), else nothing.
fn dtype_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => " bf16",
        _ => "",
    }
}

/// Times forward, backward-data and backward-weight of [`CONV_BENCHES`] with activations (x,
/// y, dy, dx) of `dtype` (f32, or bf16 with the f32 weight: `run.precision = "bf16"`).
fn conv_rows(
    dev: Device,
    ceiling: f64,
    gemm_peak: f64,
    dtype: DType,
    rows: &mut Vec<Row>,
) -> Res<()> {
    for c in &CONV_BENCHES {
        let (st, pd, groups) = ((c.stride, c.stride), (c.pad, c.pad), c.groups());
        let spec = ops::conv2d_spec(&c.x, &c.w, st, pd, (1, 1), groups)?;
        let ys = [spec.n, spec.c_out, spec.h_out, spec.w_out];
        let x = full_on(&c.x, 0.5, dev)?.to_dtype(dtype)?;
        let w = rand_on(&c.w, 11, dev)?;
        let dy = full_on(&ys, 0.25, dev)?.to_dtype(dtype)?;
        let bytes = bytes_of(&c.x, dtype) + bytes_of(&c.w, DType::F32) + bytes_of(&ys, dtype);
        let flops = 2.0 * (ys.iter().product::<usize>() * c.w[1] * c.w[2] * c.w[3]) as f64;
        let gemm = (c.w[2] == 1 && groups == 1).then_some(gemm_peak);
        let (x_, w_, s, p, tag) = (c.x, c.w, c.stride, c.pad, dtype_tag(dtype));
        let shape = format!("x {x_:?} w {w_:?} s {s} p {p} g {groups}{tag}");
        let mut push = |op: String, shape: String, ms: f64| {
            rows.push(conv_row(&op, shape, [bytes, flops, ms], ceiling, gemm));
        };
        let forward = format!("{} ({})", c.name, c.layer);
        let fwd = || Ok(ops::conv2d(&x, &w, st, pd, (1, 1), groups).map(drop)?);
        push(forward.clone(), shape.clone(), time_ms(5, fwd)?);
        if groups > 1 && c.stride == 2 {
            // The same forward without the shared-memory tile kernel (A/B, same results).
            cuda::set_stride2_tiles(false);
            let plain = time_ms(5, fwd);
            cuda::set_stride2_tiles(true);
            push(forward, format!("{shape} (untiled kernel)"), plain?);
        }
        if c.bwd_data {
            let ms = time_ms(5, || Ok(ops::conv2d_bwd_data(&dy, &w, &spec).map(drop)?))?;
            push(format!("{} bwd_data", c.name), shape.clone(), ms);
        }
        let ms = time_ms(5, || Ok(ops::conv2d_bwd_weight(&x, &dy, &spec).map(drop)?))?;
        push(format!("{} bwd_weight", c.name), shape, ms);
    }
    Ok(())
}

/// Batch norm train forward and backward on the largest mn40 activation (block 2's expansion,
/// 256 x 64 x 500 per clip), eps 1e-3 and momentum 0.01 as in EfficientAT, activations of
/// `dtype` (parameters f32).
fn batch_norm_rows(dev: Device, ceiling: f64, dtype: DType, rows: &mut Vec<Row>) -> Res<()> {
    let shape = [32usize, 256, 64, 500];
    let c = shape[1];
    let n: usize = shape.iter().product();
    let x = rand_on(&[n], 21, dev)?.reshape(&shape)?.to_dtype(dtype)?;
    let g = rand_on(&[c], 22, dev)?;
    let b = rand_on(&[c], 23, dev)?;
    let mut rm = full_on(&[c], 0.0, dev)?;
    let mut rv = full_on(&[c], 1.0, dev)?;
    let ms = time_ms(5, || {
        ops::batch_norm_train(&x, &g, &b, &mut rm, &mut rv, 0.01, 1e-3, None)?;
        Ok(())
    })?;
    let bytes = bytes_of(&shape, dtype);
    let label = format!("{shape:?}{}", dtype_tag(dtype));
    // Statistics read x twice (the second read mostly from L2), normalise reads x and writes y:
    // counted as 3 passes.
    let row = mem_row(
        "batch_norm train fwd",
        label.clone(),
        bytes * 3.0,
        ms,
        ceiling,
    );
    rows.push(row.note(" (3 passes)"));
    let (_, st) = ops::batch_norm_train(&x, &g, &b, &mut rm, &mut rv, 0.01, 1e-3, None)?;
    let dy = full_on(&shape, 0.25, dev)?.to_dtype(dtype)?;
    let ms = time_ms(5, || {
        ops::batch_norm_bwd(&x, &g, &st, &dy, None)?;
        Ok(())
    })?;
    // Partial sums read x and dy, dx reads both again and writes dx: 5 passes.
    let row = mem_row("batch_norm bwd", label.clone(), bytes * 5.0, ms, ceiling);
    rows.push(row.note(" (5 passes)"));
    let ms = time_ms(5, || {
        ops::batch_norm_eval(&x, &g, &b, &rm, &rv, 1e-3)?;
        Ok(())
    })?;
    rows.push(mem_row("batch_norm eval", label, bytes * 2.0, ms, ceiling));
    Ok(())
}

/// The squeeze-and-excitation block's per-plane ops on its first mn40 feature map (block 4,
/// 288 x 16 x 125 per clip): the gate gradient (`plane_sum` of dy * x: two reads) and the
/// scaling with the pooled gradient as a shift (one read, one write), activations of `dtype`.
fn plane_rows(dev: Device, ceiling: f64, dtype: DType, rows: &mut Vec<Row>) -> Res<()> {
    let shape = [32usize, 288, 16, 125];
    let n: usize = shape.iter().product();
    let x = rand_on(&[n], 31, dev)?.reshape(&shape)?.to_dtype(dtype)?;
    let dy = full_on(&shape, 0.25, dev)?.to_dtype(dtype)?;
    let per = rand_on(&shape[..2], 32, dev)?;
    let bytes = bytes_of(&shape, dtype);
    let tag = dtype_tag(dtype);
    // Both ops move two passes over the map (two reads; one read and one write).
    let cases: [(&'static str, &dyn Fn() -> hr_tensor::Result<Tensor>); 2] = [
        ("SE gate gradient (plane_sum dy * x)", &|| {
            ops::plane_sum(&dy, Some(&x))
        }),
        ("SE dx (plane_scale + shift)", &|| {
            ops::plane_scale(&dy, &per, Some(&per))
        }),
    ];
    for (op, f) in cases {
        let ms = time_ms(10, || {
            f()?;
            Ok(())
        })?;
        rows.push(mem_row(
            op,
            format!("{shape:?}{tag}"),
            2.0 * bytes,
            ms,
            ceiling,
        ));
    }
    Ok(())
}
