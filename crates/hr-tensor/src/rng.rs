//! Deterministic random numbers: the workspace's SplitMix64 generator ([`Rng`], from hr-core)
//! for initialisation and tests, and a counter-based generator (`hash(seed, index)`) for
//! dropout so that GPU kernels can reproduce the same mask without sharing state.

pub use hr_core::rng::{mix64, Rng};

/// Uniform in [0, 1) from (seed, counter); the same function runs on every backend.
#[inline]
pub fn counter_uniform(seed: u64, counter: u64) -> f64 {
    let bits = mix64(seed ^ mix64(counter.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
