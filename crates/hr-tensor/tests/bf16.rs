//! bf16 storage on the CPU: every covered op (unary, unary_bwd, binary, affine, axpy, dropout,
//! softmax with a bf16 mask, softmax_bwd, layer_norm, layer_norm_bwd, sum_to, embedding_bwd)
//! on bf16 tensors equals the f32 op on the same (bf16-representable) values, rounded to bf16
//! once; layer norm's statistics stay f32. Data movement (permute, concat, slice, pad_axis,
//! embedding, broadcast_to) copies bf16 values bit for bit (signed zeros, infinities and NaN
//! included). Ops without bf16 support return `UnsupportedDType` naming the op.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): bf16 uploads, downloads and
//! casts on the device against the CPU, and the ops without bf16 kernels naming themselves there
//! ([`hr_tensor::testing::parity`]). The bf16 parity checks of each op family live in that
//! family's test file (`bf16_*` cases).

use half::bf16;
use hr_tensor::ops;
use hr_tensor::testing::parity::{bf16_host, key_padding_mask, on, randn};
use hr_tensor::testing::{assert_unsupported_bf16, bf16_bits as bits, bf16_pair as pair};
use hr_tensor::{test_device, AdamStep, Binary, DType, Device, Error, NormStats, Tensor, Unary};

const UNARY: [Unary; 8] = Unary::ALL;

const BINARY: [Binary; 4] = [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div];

const SHAPES: [&[usize]; 5] = [&[1], &[7], &[3, 5], &[2, 3, 33], &[4, 1, 129]];

/// `got` (bf16) must equal `want` (the f32 result) rounded to bf16, bit for bit.
fn same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), DType::BF16, "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let want = want.to_dtype(DType::BF16).expect("round");
    let (g, w) = (bits(got), bits(&want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let nan = bf16::from_bits(*a).is_nan() && bf16::from_bits(*b).is_nan();
        assert!(a == b || nan, "{what}[{i}]: {a:#06x} vs {b:#06x}");
    }
}

#[test]
fn unary_forward_and_backward() {
    for (si, shape) in SHAPES.iter().enumerate() {
        for (ki, &kind) in UNARY.iter().enumerate() {
            let seed = (si * 16 + ki) as u64;
            let (x32, x16) = match kind {
                Unary::Log | Unary::Sqrt => pair(shape, 0.5, 2.0, seed),
                _ => pair(shape, 2.5, 0.0, seed),
            };
            let (dy32, dy16) = pair(shape, 1.0, 0.0, seed + 1000);
            let name = format!("{kind:?} {shape:?}");
            same(
                &name,
                &ops::unary(kind, &x16).unwrap(),
                &ops::unary(kind, &x32).unwrap(),
            );
            same(
                &format!("{name} bwd"),
                &ops::unary_bwd(kind, &x16, &dy16).unwrap(),
                &ops::unary_bwd(kind, &x32, &dy32).unwrap(),
            );
        }
    }
}

#[test]
fn binary_same_shape_and_broadcast() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[7], &[7]),
        (&[3, 5], &[3, 5]),
        (&[3, 1, 5], &[4, 5]),
        (&[2, 3, 33], &[33]),
        (&[5, 1], &[1, 9]),
    ];
    for (ci, &(sa, sb)) in cases.iter().enumerate() {
        let (a32, a16) = pair(sa, 2.0, 0.0, 100 + ci as u64);
        // Divisors away from zero.
        let (b32, b16) = pair(sb, 0.5, 1.5, 200 + ci as u64);
        for kind in BINARY {
            same(
                &format!("{kind:?} {sa:?} {sb:?}"),
                &ops::binary(kind, &a16, &b16).unwrap(),
                &ops::binary(kind, &a32, &b32).unwrap(),
            );
        }
    }
}

#[test]
fn affine_scales_and_shifts() {
    for (si, shape) in SHAPES.iter().enumerate() {
        let (x32, x16) = pair(shape, 3.0, 0.0, 300 + si as u64);
        same(
            &format!("affine {shape:?}"),
            &ops::affine(&x16, 0.37, -1.25).unwrap(),
            &ops::affine(&x32, 0.37, -1.25).unwrap(),
        );
    }
}

/// [`key_padding_mask`] in `dtype`.
fn mask(b: usize, k: usize, dtype: DType, seed: u64) -> Tensor {
    key_padding_mask(b, k, seed).to_dtype(dtype).expect("mask")
}

#[test]
fn softmax_masked_and_backward() {
    for (i, &(b, r, k)) in [(1, 1, 1), (2, 3, 7), (2, 3, 33), (3, 4, 97), (2, 2, 1031)]
        .iter()
        .enumerate()
    {
        let seed = 400 + i as u64 * 10;
        let (x32, x16) = pair(&[b, r, k], 3.0, 0.0, seed);
        let (dy32, dy16) = pair(&[b, r, k], 1.0, 0.0, seed + 1);
        let name = format!("softmax ({b}, {r}, {k})");
        same(
            &name,
            &ops::softmax(&x16, None).unwrap(),
            &ops::softmax(&x32, None).unwrap(),
        );
        let (m32, m16) = (
            mask(b, k, DType::F32, seed + 2),
            mask(b, k, DType::BF16, seed + 2),
        );
        let y16 = ops::softmax(&x16, Some(&m16)).unwrap();
        let y32 = ops::softmax(&x32, Some(&m32)).unwrap();
        same(&format!("{name} masked"), &y16, &y32);
        // The backward from the bf16 forward's output (exactly representable in f32).
        let y = y16.to_dtype(DType::F32).unwrap();
        same(
            &format!("{name} bwd"),
            &ops::softmax_bwd(&y16, &dy16).unwrap(),
            &ops::softmax_bwd(&y, &dy32).unwrap(),
        );
    }
}

#[test]
fn layer_norm_with_f32_statistics() {
    for (i, shape) in [&[1usize, 1][..], &[3, 5, 7], &[9, 65], &[2, 3, 257]]
        .iter()
        .enumerate()
    {
        let seed = 500 + i as u64 * 10;
        let d = *shape.last().unwrap();
        let (x32, x16) = pair(shape, 2.0, 0.5, seed);
        let (g32, g16) = pair(&[d], 0.25, 1.0, seed + 1);
        let (b32, b16) = pair(&[d], 1.0, 0.0, seed + 2);
        let (dy32, dy16) = pair(shape, 1.0, 0.0, seed + 3);
        let name = format!("layer_norm {shape:?}");
        let (y16, st16) = ops::layer_norm(&x16, &g16, &b16, 1e-5).unwrap();
        let (y32, st32) = ops::layer_norm(&x32, &g32, &b32, 1e-5).unwrap();
        same(&name, &y16, &y32);
        for (s16, s32) in [(&st16.mean, &st32.mean), (&st16.rstd, &st32.rstd)] {
            assert_eq!(s16.dtype(), NormStats::dtype_for(DType::BF16));
            assert_eq!(s16.to_vec_f32().unwrap(), s32.to_vec_f32().unwrap());
        }
        let g16r = ops::layer_norm_bwd(&x16, &g16, &st16, &dy16).unwrap();
        let g32r = ops::layer_norm_bwd(&x32, &g32, &st32, &dy32).unwrap();
        same(&format!("{name} dx"), &g16r.dx, &g32r.dx);
        same(&format!("{name} dgamma"), &g16r.dgamma, &g32r.dgamma);
        same(&format!("{name} dbeta"), &g16r.dbeta, &g32r.dbeta);
    }
}

#[test]
fn layer_norm_bwd_rejects_bf16_statistics() {
    let (_, x) = pair(&[3, 4], 1.0, 0.0, 1);
    let (_, g) = pair(&[4], 1.0, 0.0, 2);
    let (_, st) = ops::layer_norm(&x, &g, &g, 1e-5).unwrap();
    let bad = NormStats {
        mean: st.mean.to_dtype(DType::BF16).unwrap(),
        rstd: st.rstd.to_dtype(DType::BF16).unwrap(),
    };
    let err = ops::layer_norm_bwd(&x, &g, &bad, &x).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DTypeMismatch {
                op: "layer_norm_bwd",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn mixed_bf16_and_f32_operands_are_rejected() {
    let (a32, a16) = pair(&[2, 5], 1.0, 0.0, 3);
    let err = ops::add(&a16, &a32).unwrap_err();
    assert!(
        matches!(err, Error::DTypeMismatch { op: "binary", .. }),
        "{err}"
    );
    let err = ops::softmax(&a16, Some(&mask(2, 5, DType::F32, 4))).unwrap_err();
    assert!(
        matches!(err, Error::DTypeMismatch { op: "softmax", .. }),
        "{err}"
    );
}

/// A bf16 tensor of `shape` with random values plus, when it has room, the special values
/// -0.0, +inf, -inf and NaN (data movement must copy their bits), and its exact f32 twin.
fn special_pair(shape: &[usize], seed: u64) -> (Tensor, Tensor) {
    let (x32, _) = pair(shape, 2.0, 0.0, seed);
    let mut v = x32.to_vec_f32().expect("values");
    for (slot, s) in v
        .iter_mut()
        .step_by(5)
        .zip([-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
    {
        *slot = s;
    }
    let b = Tensor::from_vec(v, shape)
        .and_then(|t| t.to_dtype(DType::BF16))
        .expect("bf16");
    (b.to_dtype(DType::F32).expect("to f32"), b)
}

/// `got` (bf16) must hold exactly the bits of `want` (an f32 result of data movement over
/// bf16 values, hence exactly representable).
fn exact(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), DType::BF16, "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let w = bits(&want.to_dtype(DType::BF16).expect("round"));
    assert_eq!(bits(got), w, "{what}: bits");
}

#[test]
fn layout_ops_copy_bits() {
    for (si, shape) in [&[1usize, 1, 1][..], &[2, 3, 5], &[3, 1, 33], &[4, 7, 9]]
        .iter()
        .enumerate()
    {
        let (x32, x16) = special_pair(shape, 600 + si as u64);
        let name = format!("{shape:?}");
        for perm in [[2, 0, 1], [1, 2, 0], [0, 2, 1], [2, 1, 0]] {
            exact(
                &format!("permute {name} {perm:?}"),
                &ops::permute(&x16, &perm).unwrap(),
                &ops::permute(&x32, &perm).unwrap(),
            );
        }
        for axis in 0..3 {
            let d = shape[axis];
            let (start, len) = (d / 3, d - d / 3);
            exact(
                &format!("slice {name} axis {axis}"),
                &ops::slice(&x16, axis, start, len).unwrap(),
                &ops::slice(&x32, axis, start, len).unwrap(),
            );
            exact(
                &format!("pad_axis {name} axis {axis}"),
                &ops::pad_axis(&x16, axis, 2, d + 3).unwrap(),
                &ops::pad_axis(&x32, axis, 2, d + 3).unwrap(),
            );
            let mut other = shape.to_vec();
            other[axis] = 3;
            let (y32, y16) = special_pair(&other, 700 + si as u64);
            exact(
                &format!("concat {name} axis {axis}"),
                &ops::concat(&[&x16, &y16, &x16], axis).unwrap(),
                &ops::concat(&[&x32, &y32, &x32], axis).unwrap(),
            );
        }
        let mut wide = shape.to_vec();
        wide[1] = 4;
        if shape[1] == 1 {
            exact(
                &format!("broadcast_to {name}"),
                &ops::broadcast_to(&x16, &wide).unwrap(),
                &ops::broadcast_to(&x32, &wide).unwrap(),
            );
        }
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    for (i, &(vocab, d)) in [(1, 1), (5, 3), (11, 33), (7, 130)].iter().enumerate() {
        let seed = 800 + i as u64 * 10;
        let (t32, t16) = special_pair(&[vocab, d], seed);
        // Repeated ids (and, for vocab > 1, an unused one).
        let ids: Vec<u32> = (0..2 * vocab + 3)
            .map(|j| ((j * 7 + 1) % vocab.max(2).saturating_sub(1).max(1)) as u32)
            .collect();
        let name = format!("({vocab}, {d})");
        exact(
            &format!("embedding {name}"),
            &ops::embedding(&t16, &ids).unwrap(),
            &ops::embedding(&t32, &ids).unwrap(),
        );
        let (dy32, dy16) = pair(&[ids.len(), d], 1.0, 0.0, seed + 1);
        same(
            &format!("embedding_bwd {name}"),
            &ops::embedding_bwd(&dy16, &ids, vocab).unwrap(),
            &ops::embedding_bwd(&dy32, &ids, vocab).unwrap(),
        );
    }
}

#[test]
fn sum_to_rounds_once() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[7], &[1]),
        (&[3, 5], &[1, 5]),
        (&[3, 5], &[3, 1]),
        (&[2, 3, 33], &[1, 3, 1]),
        (&[4, 9, 129], &[1, 1, 129]),
    ];
    for (ci, &(from, to)) in cases.iter().enumerate() {
        let (x32, x16) = pair(from, 1.0, 0.25, 900 + ci as u64);
        same(
            &format!("sum_to {from:?} -> {to:?}"),
            &ops::sum_to(&x16, to).unwrap(),
            &ops::sum_to(&x32, to).unwrap(),
        );
    }
}

#[test]
fn dropout_and_axpy_round_once() {
    for (si, shape) in SHAPES.iter().enumerate() {
        let seed = 1000 + si as u64;
        let (x32, x16) = pair(shape, 2.0, 0.0, seed);
        for p in [0.0, 0.1, 0.3] {
            let (y16, s16) = ops::dropout(&x16, p, seed).unwrap();
            let (y32, s32) = ops::dropout(&x32, p, seed).unwrap();
            same(&format!("dropout y {shape:?} p {p}"), &y16, &y32);
            same(&format!("dropout scale {shape:?} p {p}"), &s16, &s32);
        }
        let (a32, a16) = pair(shape, 1.0, 0.5, seed + 50);
        let (mut acc16, mut acc32) = (a16.clone(), a32);
        ops::axpy(&mut acc16, -0.3, &x16).unwrap();
        ops::axpy(&mut acc32, -0.3, &x32).unwrap();
        same(&format!("axpy {shape:?}"), &acc16, &acc32);
        // The clone shared `a16`'s storage: axpy must not write through it.
        assert_ne!(bits(&a16), bits(&acc16), "axpy {shape:?}: aliasing");
    }
}

/// `r` must be `UnsupportedDType` for bf16 naming `op`.
#[test]
fn unsupported_ops_name_themselves() {
    let (_, x) = pair(&[3, 6], 1.0, 0.0, 5);
    let (_, w) = pair(&[6, 4], 1.0, 0.0, 6);
    assert_unsupported_bf16("log_softmax", ops::log_softmax(&x));
    assert_unsupported_bf16("log_softmax_bwd", ops::log_softmax_bwd(&x, &x));
    assert_unsupported_bf16("nll_loss", ops::nll_loss(&x, &[0, 1, 2]));
    assert_unsupported_bf16("l2_normalize", ops::l2_normalize(&x, 1e-12));
    assert_unsupported_bf16("matmul", ops::matmul(&x, &w));
    // Convolutions and batch norms take bf16 activations with f32 parameters only (see
    // tests/bf16_activations.rs); bf16 parameters are rejected there.
    let (mut p, mut m, mut v) = (x.clone(), x.clone(), x.clone());
    let hp = AdamStep::new(1e-3, 0.0, 1);
    assert_unsupported_bf16("adam_step", ops::adam_step(&mut p, &x, &mut m, &mut v, &hp));
    let (_, q) = pair(&[1, 4, 2, 8], 1.0, 0.0, 10);
    let spec = ops::attention_spec(&q, &q).unwrap();
    assert_unsupported_bf16("attention", ops::attention(&q, &q, &q, None, &spec));
    let (_, sq) = pair(&[4, 4], 1.0, 0.0, 11);
    assert_unsupported_bf16(
        "contrastive_loss",
        ops::contrastive_loss(&sq, &[0, 1, 2, 3]),
    );
    let (_, wav) = pair(&[2, 64], 1.0, 0.0, 12);
    let (_, win) = pair(&[16], 1.0, 0.0, 13);
    assert_unsupported_bf16("frame_signal", ops::frame_signal(&wav, &win, 8, 0.97));
}

/// Host bf16 -> device -> host is exact; f32 -> bf16 -> f32 on the device rounds like the CPU
/// (ties to even, subnormals, overflow to infinity).
fn bf16_round_trips(dev: Device) {
    use hr_tensor::DType;
    let x = bf16_host(&[3, 37], 4.0, 0.0, 1700);
    let xg = on(&x, dev);
    assert_eq!(xg.dtype(), DType::BF16);
    let back = xg.to_device(Device::Cpu).expect("download");
    assert_eq!(back.dtype(), DType::BF16);
    let bits = |t: &Tensor| -> Vec<u16> {
        let s = t.as_slice::<half::bf16>().expect("bf16 slice");
        s.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&back), bits(&x), "bf16 host -> device -> host");
    println!("ok bf16 host -> device -> host: exact");
    let mut v = randn(&[1000], 1701).to_vec_f32().expect("values");
    v.extend([
        0.0,
        -0.0,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        1e-40,
        3.3895314e38,
        3.4028235e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let n = v.len();
    let x32 = Tensor::from_vec(v, &[n]).expect("tensor");
    let want = x32
        .to_dtype(DType::BF16)
        .and_then(|t| t.to_dtype(DType::F32));
    let got = on(&x32, dev)
        .to_dtype(DType::BF16)
        .and_then(|t| t.to_dtype(DType::F32));
    let (want, got) = (want.expect("cpu cast"), got.expect("gpu cast"));
    assert_eq!(got.dtype(), DType::F32);
    let (w, g) = (
        want.to_vec_f32().expect("cpu"),
        got.to_vec_f32().expect("gpu"),
    );
    let same = w.iter().zip(&g).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same,
        "f32 -> bf16 -> f32 on the device differs from the CPU"
    );
    println!("ok f32 -> bf16 -> f32 on the device: equal to the CPU's rounding ({n} values)");
}

test_device!(bf16_round_trips);

/// Ops still without a bf16 kernel name themselves on bf16 storage on the device:
/// log_softmax, l2_normalize, log_softmax_bwd, nll_loss and matmul return `UnsupportedDType`
/// naming the op.
fn bf16_ops_without_kernels_name_themselves(dev: Device) {
    // An op without a bf16 kernel names itself.
    let x = on(&bf16_host(&[3, 6], 1.0, 0.0, 2400), dev);
    assert_unsupported_bf16("log_softmax", ops::log_softmax(&x));
    assert_unsupported_bf16("l2_normalize", ops::l2_normalize(&x, 1e-12));
    println!("ok log_softmax / l2_normalize on bf16: UnsupportedDType naming the op");
    let x = on(&bf16_host(&[3, 6], 1.0, 0.0, 2550), dev);
    let w = on(&bf16_host(&[6, 4], 1.0, 0.0, 2551), dev);
    assert_unsupported_bf16("log_softmax_bwd", ops::log_softmax_bwd(&x, &x));
    assert_unsupported_bf16("nll_loss", ops::nll_loss(&x, &[0, 1, 2]));
    assert_unsupported_bf16("matmul", ops::matmul(&x, &w));
    println!("ok log_softmax_bwd / nll_loss / matmul on bf16: UnsupportedDType naming the op");
}

test_device!(bf16_ops_without_kernels_name_themselves);
