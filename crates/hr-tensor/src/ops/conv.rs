//! 2-D convolution (NCHW input, OIHW weight, no bias) and its backward.
//!
//! Geometry is resolved once by [`conv2d_spec`]; the backward functions take the same
//! [`Conv2dSpec`] and re-validate it, so a hand-built or stale spec is an error, never an
//! out-of-bounds access.

use super::{all_same, expect_shape};
use crate::backend::{Backend, Conv2dSpec};
use crate::{numel_of, Error, Result, Tensor};

/// Output size of one spatial axis, or `None` when the (dilated) kernel does not fit into the
/// padded input or the arithmetic overflows.
fn out_size(len: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let padded = len.checked_add(pad.checked_mul(2)?)?;
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    if span > padded {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Resolves and validates the geometry of [`conv2d`]: `x_shape` is NCHW, `w_shape` is OIHW
/// with `I = c_in / groups`; `stride`, `padding` (zero padding on both sides) and `dilation`
/// are (h, w) pairs. The output size of an axis is `(h + 2p - d(k-1) - 1) / s + 1`; it is an
/// error when the dilated kernel is larger than the padded input. Errors name `conv2d` and
/// both shapes.
pub fn conv2d_spec(
    x_shape: &[usize],
    w_shape: &[usize],
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<Conv2dSpec> {
    let bad = |why: String| {
        Error::invalid(
            "conv2d",
            format!("input {x_shape:?} (NCHW) and weight {w_shape:?} (OIHW): {why}"),
        )
    };
    let (&[n, c_in, h, w], &[c_out, w_in, kh, kw]) = (x_shape, w_shape) else {
        return Err(bad("both must have rank 4".into()));
    };
    if stride.0 == 0 || stride.1 == 0 {
        return Err(bad(format!("stride {stride:?} must be positive")));
    }
    if dilation.0 == 0 || dilation.1 == 0 {
        return Err(bad(format!("dilation {dilation:?} must be positive")));
    }
    if groups == 0 {
        return Err(bad("groups must be positive".into()));
    }
    if c_in % groups != 0 || c_out % groups != 0 {
        return Err(bad(format!(
            "groups = {groups} must divide both c_in = {c_in} and c_out = {c_out}"
        )));
    }
    if w_in != c_in / groups {
        return Err(bad(format!(
            "weight has {w_in} input channels, expected c_in / groups = {c_in} / {groups} = {}",
            c_in / groups
        )));
    }
    if kh == 0 || kw == 0 {
        return Err(bad("kernel size must be positive".into()));
    }
    let h_out = out_size(h, kh, stride.0, padding.0, dilation.0);
    let w_out = out_size(w, kw, stride.1, padding.1, dilation.1);
    let (Some(h_out), Some(w_out)) = (h_out, w_out) else {
        return Err(bad(format!(
            "dilated kernel ({}, {}) (dilation {dilation:?}) is larger than the padded input \
             ({}, {}) (padding {padding:?}); the output would be empty",
            dilation
                .0
                .saturating_mul(kh.saturating_sub(1))
                .saturating_add(1),
            dilation
                .1
                .saturating_mul(kw.saturating_sub(1))
                .saturating_add(1),
            h.saturating_add(padding.0.saturating_mul(2)),
            w.saturating_add(padding.1.saturating_mul(2)),
        )));
    };
    numel_of("conv2d", &[n, c_out, h_out, w_out])?;
    numel_of("conv2d", &[n, c_in, h, w])?;
    numel_of("conv2d", &[c_out, w_in, kh, kw])?;
    Ok(Conv2dSpec {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups,
        h_out,
        w_out,
    })
}

/// Checks that `spec` is exactly what [`conv2d_spec`] resolves for its own shapes.
fn check_conv_spec(op: &'static str, spec: &Conv2dSpec) -> Result<()> {
    let s = spec;
    let w_in = s.c_in.checked_div(s.groups).unwrap_or(0);
    let again = conv2d_spec(
        &[s.n, s.c_in, s.h, s.w],
        &[s.c_out, w_in, s.kh, s.kw],
        s.stride,
        s.padding,
        s.dilation,
        s.groups,
    )?;
    if again != *spec {
        return Err(Error::invalid(
            op,
            format!("inconsistent Conv2dSpec {spec:?} (expected {again:?})"),
        ));
    }
    Ok(())
}

/// Checks the operands' dtypes and devices: the activations (input, dy) share one dtype and
/// device, the weight has the same dtype, or f32 under bf16 activations
/// ([`super::param_dtype`]); the error names every operand's shape, dtype and device. Returns
/// their backend.
fn same_kind(
    op: &'static str,
    acts: &[(&str, &Tensor)],
    weight: Option<&Tensor>,
) -> Result<&'static dyn Backend> {
    let (_, first) = acts[0];
    let act_ok = |t: &Tensor| t.dtype() == first.dtype() && t.device() == first.device();
    let weight_ok =
        |w: &Tensor| w.dtype() == super::param_dtype(first.dtype()) && w.device() == first.device();
    if !acts.iter().all(|(_, t)| act_ok(t)) || !weight.is_none_or(weight_ok) {
        let what: Vec<String> = acts
            .iter()
            .copied()
            .chain(weight.map(|w| ("weight", w)))
            .map(|(name, t)| format!("{name} {:?} {:?} on {:?}", t.shape(), t.dtype(), t.device()))
            .collect();
        return Err(Error::invalid(
            op,
            format!(
                "dtype/device mismatch: {} (activations share one dtype; the weight has it too, \
                 or f32 with bf16 activations)",
                what.join(", ")
            ),
        ));
    }
    let refs: Vec<&Tensor> = acts.iter().map(|(_, t)| *t).collect();
    all_same(op, &refs)
}

fn x_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.n, s.c_in, s.h, s.w]
}

fn w_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.c_out, s.c_in / s.groups, s.kh, s.kw]
}

fn y_shape(s: &Conv2dSpec) -> [usize; 4] {
    [s.n, s.c_out, s.h_out, s.w_out]
}

/// 2-D convolution `y = x conv w` (cross-correlation, as in PyTorch), no bias.
///
/// Mixed precision: a bf16 input with an f32 weight gives a bf16 output (f32 arithmetic on the
/// input's values, rounded once; a dense pointwise convolution multiplies the weight's bf16
/// rounding, like every GEMM under autocast); the backward then takes a bf16 `dy`, returns a
/// bf16 `dx` and an f32 `dw`.
///
/// `x` is (N, C_in, H, W), `w` is (C_out, C_in / groups, kH, kW); returns
/// (N, C_out, H_out, W_out). See [`conv2d_spec`] for the geometry and its errors.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<Tensor> {
    let spec = conv2d_spec(x.shape(), w.shape(), stride, padding, dilation, groups)?;
    same_kind("conv2d", &[("input", x)], Some(w))?.conv2d(x, w, &spec)
}

/// Backward of [`conv2d`] for the input: `dx` of shape (N, C_in, H, W) from `dy`
/// (N, C_out, H_out, W_out) and the weight.
pub fn conv2d_bwd_data(dy: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
    const OP: &str = "conv2d_bwd_data";
    check_conv_spec(OP, spec)?;
    expect_shape(OP, dy, &y_shape(spec))?;
    expect_shape(OP, w, &w_shape(spec))?;
    same_kind(OP, &[("dy", dy)], Some(w))?.conv2d_bwd_data(dy, w, spec)
}

/// Backward of [`conv2d`] for the weight: `dw` of shape (C_out, C_in / groups, kH, kW) from the
/// input and `dy`.
pub fn conv2d_bwd_weight(x: &Tensor, dy: &Tensor, spec: &Conv2dSpec) -> Result<Tensor> {
    const OP: &str = "conv2d_bwd_weight";
    check_conv_spec(OP, spec)?;
    expect_shape(OP, x, &x_shape(spec))?;
    expect_shape(OP, dy, &y_shape(spec))?;
    same_kind(OP, &[("input", x), ("dy", dy)], None)?.conv2d_bwd_weight(x, dy, spec)
}

/// Backward of [`conv2d`]: returns `(dx, dw)` for upstream gradient `dy`, where `spec` is the
/// forward's geometry (from [`conv2d_spec`]).
pub fn conv2d_bwd(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &Conv2dSpec,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "conv2d_bwd";
    check_conv_spec(OP, spec)?;
    expect_shape(OP, x, &x_shape(spec))?;
    expect_shape(OP, w, &w_shape(spec))?;
    expect_shape(OP, dy, &y_shape(spec))?;
    let be = same_kind(OP, &[("input", x), ("dy", dy)], Some(w))?;
    be.conv2d_bwd(x, w, dy, spec)
}
