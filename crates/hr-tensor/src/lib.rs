//! hr-tensor: the compute core of hybrid-retrieval.
//!
//! A [`Tensor`] is a contiguous row-major buffer with a shape and a [`DType`] on a [`Device`].
//! Ops live in [`ops`] as free functions: each validates its operands once and dispatches to
//! the [`backend::Backend`] of their device. Every op has a forward and a backward function;
//! there is no autograd tape: layers call the backward functions explicitly (llm.c style).
//!
//! The CPU backend ([`cpu`]) is the reference for correctness; it computes in f32 or f64
//! (f64 is what the gradient checks use). The CUDA side ([`cuda`]) opens devices through
//! cudarc with dynamic loading and returns [`Error::CudaUnavailable`] when no driver exists.

#![deny(unsafe_code)]

pub mod autocast;
pub mod backend;
mod checks;
pub mod cpu;
// The CUDA backend calls the driver, NVRTC and cuBLAS through FFI.
#[allow(unsafe_code)]
pub mod cuda;
mod device;
mod dtype;
mod elem;
mod error;
pub mod ops;
mod rng;
pub mod storage;
mod tensor;
pub mod testing;

pub use backend::{
    AdamStep, AttentionSpec, Binary, ContrastiveStats, Conv2dSpec, MatmulSpec, NormGrads,
    NormStats, Unary,
};
pub use device::Device;
pub use dtype::DType;
pub use elem::{Elem, Float};
pub use error::{Error, Result};
pub use rng::{counter_uniform, mix64, Rng};
pub use tensor::{numel_of, Tensor, Upload};
