//! Mixed precision for matrix products, scoped per thread (like `torch.autocast`): inside
//! [`bf16_matmuls`], every f32 [`crate::ops::matmul_ex`] rounds its operands to bf16 and
//! multiplies with f32 accumulation and an f32 result (cuBLAS `GemmEx` with bf16 inputs on
//! CUDA; the same rounding then an f32 GEMM on the CPU, so the CPU is a faithful reference).
//! Dense pointwise (1x1, stride 1) convolutions are matrix products too and get the same
//! treatment; every other convolution, the norms, softmax, losses, the optimizer and its master
//! weights stay f32.
//!
//! A second switch, [`bf16_activations`], tells models that can keep their activations in
//! bf16 storage to do so (the audio CNN: convolutions and batch norms take bf16 activations
//! with f32 weights, see `crate::ops::conv2d` and `crate::ops::batch_norm_train`), halving the
//! memory traffic of every activation pass; the ops themselves follow their operands' dtypes.

use std::cell::Cell;
use std::thread::LocalKey;

thread_local! {
    static BF16_MATMULS: Cell<bool> = const { Cell::new(false) };
    static BF16_ACTIVATIONS: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous setting of its switch ([`bf16_matmuls`] or [`bf16_activations`]) when
/// dropped.
#[derive(Debug)]
pub struct AutocastGuard {
    flag: &'static LocalKey<Cell<bool>>,
    previous: bool,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        self.flag.with(|c| c.set(self.previous));
    }
}

/// Sets `flag` on this thread until the returned guard drops.
fn set(flag: &'static LocalKey<Cell<bool>>, on: bool) -> AutocastGuard {
    AutocastGuard {
        flag,
        previous: flag.with(|c| c.replace(on)),
    }
}

/// Turns bf16 matrix products on (`on = true`) or off on this thread until the guard drops.
pub fn bf16_matmuls(on: bool) -> AutocastGuard {
    set(&BF16_MATMULS, on)
}

/// Whether f32 matrix products on this thread round their operands to bf16.
pub fn bf16_matmuls_active() -> bool {
    BF16_MATMULS.with(Cell::get)
}

/// Asks models on this thread to keep activations in bf16 storage where they support it
/// (`on = true`) until the guard drops.
pub fn bf16_activations(on: bool) -> AutocastGuard {
    set(&BF16_ACTIVATIONS, on)
}

/// Whether models on this thread keep activations in bf16 storage (see [`bf16_activations`]).
pub fn bf16_activations_active() -> bool {
    BF16_ACTIVATIONS.with(Cell::get)
}

/// Whether a convolution's f32 operands are rounded to bf16 on this thread: under
/// [`bf16_matmuls`], for dense pointwise convolutions (the ones the CUDA backend runs as GEMMs).
pub(crate) fn bf16_conv_operands(s: &crate::backend::Conv2dSpec, dtype: crate::DType) -> bool {
    dtype == crate::DType::F32 && bf16_matmuls_active() && crate::checks::dense_pointwise(s)
}

/// A copy of the f32 CPU tensor `t` with every element rounded to bf16 (kept as f32).
pub(crate) fn rounded_f32(t: &crate::Tensor) -> crate::Result<crate::Tensor> {
    let v: Vec<f32> = t
        .as_slice::<f32>()?
        .iter()
        .map(|&x| round_bf16(x))
        .collect();
    crate::Tensor::from_vec(v, t.shape())
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32.
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard of `set` turns its flag on, a nested one off, and each restores the flag it
    /// found on drop; the flag of `other` never moves.
    fn check_guard(set: fn(bool) -> AutocastGuard, active: fn() -> bool, other: fn() -> bool) {
        assert!(!active() && !other());
        {
            let _a = set(true);
            assert!(active() && !other());
            {
                let _b = set(false);
                assert!(!active());
            }
            assert!(active());
        }
        assert!(!active() && !other());
    }

    #[test]
    fn matmul_guards_nest_and_restore() {
        check_guard(bf16_matmuls, bf16_matmuls_active, bf16_activations_active);
    }

    #[test]
    fn activation_guards_nest_restore_and_are_independent() {
        let (set, active) = (bf16_activations, bf16_activations_active);
        check_guard(set, active, bf16_matmuls_active);
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert!(round_bf16(f32::NAN).is_nan());
    }
}
