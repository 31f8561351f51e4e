//! The data order's and the synthetic scenes' generator: the workspace's SplitMix64 ([`Rng`],
//! from hr-core), whose stream is pinned by a test there so that data order and synthetic
//! datasets reproduce across releases.

pub use hr_core::rng::{mix_seed, Rng};
