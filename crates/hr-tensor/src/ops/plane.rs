//! Per-plane ops over `(N, C, *spatial)` tensors: the squeeze-and-excitation block's pooling,
//! gate gradient and scaling, one pass each (see [`crate::backend::PlaneOps`]).

use crate::{Result, Tensor};

/// `out[n, c] = sum over the spatial positions of a[n, c, ..]`, times `b[n, c, ..]` when given
/// (same shape, dtype and device as `a`; the product rounded in the compute dtype like
/// [`super::mul`]), accumulated in f64 and rounded once. Shape `(N, C)`; dtype f32 for bf16
/// activations, else `a`'s.
pub fn plane_sum(a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "plane_sum";
    let acts: Vec<&Tensor> = std::iter::once(a).chain(b).collect();
    let be = super::acts_params(OP, &acts, &[])?;
    crate::checks::planes(OP, a, b, &[])?;
    be.plane_sum(a, b)
}

/// `y[n, c, ..] = x[n, c, ..] * scale[n, c]`, plus `shift[n, c]` when given, rounded once to
/// `x`'s dtype; `scale` and `shift` have shape `(N, C)` and the parameter dtype of `x` (f32 for
/// bf16 activations).
pub fn plane_scale(x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "plane_scale";
    let per_plane: Vec<&Tensor> = std::iter::once(scale).chain(shift).collect();
    let be = super::acts_params(OP, &[x], &per_plane)?;
    crate::checks::planes(OP, x, None, &per_plane)?;
    be.plane_scale(x, scale, shift)
}

/// Backward of [`plane_sum`]: `(da, db)` for the upstream gradient `dout` of shape `(N, C)`
/// (`db` is `None` without `b`): `da = b * dout[n, c]` (or `dout[n, c]` spread over the plane),
/// `db = a * dout[n, c]`.
pub fn plane_sum_bwd(
    dout: &Tensor,
    a: &Tensor,
    b: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    match b {
        Some(b) => Ok((
            plane_scale(b, dout, None)?,
            Some(plane_scale(a, dout, None)?),
        )),
        None => {
            let axes: Vec<usize> = (2..a.rank()).collect();
            let spread = super::sum_axes_bwd(&dout.to_dtype(a.dtype())?, a.shape(), &axes)?;
            Ok((spread, None))
        }
    }
}

/// Backward of [`plane_scale`]: `(dx, dscale, dshift)` for the upstream gradient `dy` (`dshift`
/// is `None` when the forward had no shift): `dx = dy * scale[n, c]`,
/// `dscale = sum over the plane of dy * x`, `dshift = sum over the plane of dy`.
pub fn plane_scale_bwd(
    dy: &Tensor,
    x: &Tensor,
    scale: &Tensor,
    with_shift: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let dshift = match with_shift {
        true => Some(plane_sum(dy, None)?),
        false => None,
    };
    Ok((
        plane_scale(dy, scale, None)?,
        plane_sum(dy, Some(x))?,
        dshift,
    ))
}
