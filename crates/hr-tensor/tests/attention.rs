//! Fused attention on the device against the CPU backend: forward (out, log-sum-exp) and
//! backward (dq, dk, dv) over masks, dropout, odd sequence lengths and head dims, as device
//! parity cases registered with `test_device!` (`<case>_cpu`, `<case>_cuda`;
//! [`hr_tensor::testing::parity`]). The CPU op itself is tested against the composed unfused ops
//! in `tests/fused.rs`.

use hr_tensor::testing::parity::{on, randn, Report};
use hr_tensor::{ops, test_device, Device, Error, Rng, Tensor};

/// Key mask (B, Tk) for the attention tests: random keep (70 %), the last batch entry (when
/// B > 1) drops every key, and entry 0 drops its keys 32.. (a fully masked key tile).
fn attention_mask(b: usize, tk: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let mv: Vec<f32> = (0..b * tk)
        .map(|e| {
            let (bi, j) = (e / tk, e % tk);
            let dropped = (b > 1 && bi == b - 1) || (bi == 0 && j >= 32);
            if !dropped && rng.uniform() < 0.7 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mv, &[b, tk]).unwrap()
}

/// (batch, heads, query positions, key positions, head dim) of an attention case.
type AttnShape = (usize, usize, usize, usize, usize);

/// One attention case: forward (out, lse) and backward (dq, dk, dv, fed the CPU's out and
/// lse so each direction is compared on its own) against the CPU backend.
fn attention_case(
    dev: Device,
    report: &mut Report,
    (b, h, tq, tk, dh): AttnShape,
    dropout: f64,
    masked: bool,
    seed: u64,
) {
    let q = randn(&[b, tq, h, dh], seed);
    let k = randn(&[b, tk, h, dh], seed + 1);
    let v = randn(&[b, tk, h, dh], seed + 2);
    let dout = randn(&[b, tq, h, dh], seed + 3);
    let mask = masked.then(|| attention_mask(b, tk, seed + 4));
    let mut spec = ops::attention_spec(&q, &k).unwrap();
    spec.dropout = dropout;
    spec.seed = seed + 5;
    let g = |t: &Tensor| on(t, dev);
    let (qg, kg, vg, dg) = (g(&q), g(&k), g(&v), g(&dout));
    let mg = mask.as_ref().map(g);
    let name = format!("attention B{b} H{h} Tq{tq} Tk{tk} Dh{dh} p{dropout} mask {masked}");
    let (o, l) = ops::attention(&q, &k, &v, mask.as_ref(), &spec).unwrap();
    match ops::attention(&qg, &kg, &vg, mg.as_ref(), &spec) {
        Ok((og, lg)) => {
            report.check(&format!("{name} out"), Ok(og), &o);
            report.check(&format!("{name} lse"), Ok(lg), &l);
        }
        Err(e) => report.check(&format!("{name} forward"), Err(e), &o),
    }
    let cpu = ops::attention_bwd(&q, &k, &v, mask.as_ref(), &o, &l, &dout, &spec).unwrap();
    let (og, lg) = (g(&o), g(&l));
    match ops::attention_bwd(&qg, &kg, &vg, mg.as_ref(), &og, &lg, &dg, &spec) {
        Ok(gpu) => {
            for ((what, gt), ct) in ["dq", "dk", "dv"].iter().zip(gpu).zip(&cpu) {
                report.check(&format!("{name} {what}"), Ok(gt), ct);
            }
        }
        Err(e) => report.check(&format!("{name} backward"), Err(e), &cpu[0]),
    }
}

fn attention_forward_and_backward(dev: Device) {
    let mut report = Report::new(dev);
    let cases: [(AttnShape, f64, bool); 11] = [
        ((2, 3, 37, 37, 16), 0.0, false),
        ((2, 3, 37, 37, 16), 0.1, true),
        ((2, 2, 19, 45, 24), 0.1, true),
        ((2, 2, 45, 19, 13), 0.0, true),
        ((2, 4, 77, 77, 64), 0.1, true),
        ((3, 12, 200, 200, 32), 0.1, true),
        ((2, 2, 70, 33, 64), 0.0, false),
        ((1, 2, 33, 40, 100), 0.0, true),
        ((1, 1, 9, 11, 128), 0.1, false),
        ((2, 1, 20, 70, 1), 0.1, true),
        ((1, 2, 5, 0, 8), 0.0, false),
    ];
    for (i, &(shape, p, masked)) in cases.iter().enumerate() {
        attention_case(dev, &mut report, shape, p, masked, 900 + 10 * i as u64);
    }
    // Head dims above the CUDA kernels' register tiles are refused with a clear error (the
    // CPU backend has no such limit).
    if !dev.is_cpu() {
        let q = on(&randn(&[1, 2, 1, 129], 1), dev);
        let spec = ops::attention_spec(&q, &q).unwrap();
        assert!(matches!(
            ops::attention(&q, &q, &q, None, &spec).unwrap_err(),
            Error::InvalidArgument { .. }
        ));
    }
    report.finish("attention_forward_and_backward");
}

test_device!(attention_forward_and_backward);
