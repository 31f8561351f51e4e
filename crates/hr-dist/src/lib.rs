//! Distributed data parallel for hybrid-retrieval: world discovery, an authenticated rendezvous
//! store, collectives over a CPU TCP ring or NCCL (CUDA devices), gradient bucketing, all-gather
//! with gradient and a local launcher. Depends on hr-tensor (and cudarc for NCCL).
//!
//! # Backends
//! [`DistOptions::backend`] picks the communicator: [`Backend::Auto`] (the default) uses NCCL
//! when [`DistOptions::device`] names a CUDA ordinal and NCCL is available, the CPU ring
//! otherwise, and [`LocalComm`] in a world of one; [`Backend::Nccl`] insists on NCCL (also
//! in a world of one) and fails with [`DistError::BackendUnavailable`] without it. With NCCL,
//! the tensor helpers below run on device buffers without a host copy when the tensors are on
//! the communicator's GPU.
//!
//! # Using it from a trainer
//! ```no_run
//! use hr_dist::{init_from_env, DistOptions, DEFAULT_BUCKET_BYTES};
//! # fn main() -> hr_dist::Result<()> {
//! // Slurm (srun), torchrun-style variables, `launch_local`, or nothing (world of 1).
//! let opts = DistOptions { run_dir: Some("runs/x".into()), ..Default::default() };
//! let (world, mut comm) = init_from_env(&opts)?;
//! # let params: Vec<hr_tensor::Tensor> = vec![];
//! // At start: every rank takes rank 0's parameters.
//! let params = hr_dist::broadcast_tensors(comm.as_mut(), &params, 0, DEFAULT_BUCKET_BYTES)?;
//! // Each step: embeddings of the global batch for the contrastive loss ...
//! # let local_emb = hr_tensor::Tensor::from_vec(vec![0.0f32; 4], &[2, 2])?;
//! let (global_emb, cache) = hr_dist::all_gather_rows(comm.as_mut(), &local_emb)?;
//! # let d_global = global_emb.clone();
//! // ... loss + backward on global_emb gives d_global ([N, d]) ...
//! let d_local = hr_dist::all_gather_rows_backward(comm.as_mut(), &cache, &d_global)?;
//! // ... model backward from d_local gives grads; average them over ranks in 25 MB buckets.
//! # let grads: Vec<hr_tensor::Tensor> = vec![];
//! let grads = hr_dist::all_reduce_tensors(comm.as_mut(), &grads, true, DEFAULT_BUCKET_BYTES)?;
//! comm.barrier()?; // before exiting, so rank 0 (the store host) leaves last
//! # let _ = (world, params, d_local, grads);
//! # Ok(())
//! # }
//! ```
//! On any peer failure every collective returns an error naming the lost, unresponsive or
//! misbehaving rank ([`DistError::PeerLost`], [`DistError::Unresponsive`],
//! [`DistError::BadPeer`]: a frame that is malformed or fails authentication) within the
//! timeout (default 60 s) plus a short diagnosis grace (a quarter of the timeout, 0.2–5 s);
//! the communicator is unusable afterwards and the trainer should log the error and exit
//! non-zero. [`any_rank`] agrees on a flag (e.g. "a preemption signal arrived") so every rank
//! checkpoints at the same step.
//! `hr-train --nproc-per-node N` maps to [`launch_local`]`(N, current_exe, args_without_the_flag,
//! env)`; each child then finds its world through [`init_from_env`].
//!
//! # Modules
//! - [`world`] — [`discover`] (pure function of an env map) / [`discover_from_env`].
//! - [`auth`] — the job [`Token`] (`HR_DIST_TOKEN` or `RUN/dist-token`) and the HMAC-SHA256 handshake.
//! - [`store`] — [`StoreServer`] / [`StoreClient`] (set, get, wait, add, set_if_absent).
//! - [`comm`] — the [`Communicator`] trait and [`LocalComm`]; [`ring`] — [`RingComm`];
//!   [`nccl`] — [`NcclComm`] (CUDA devices, collectives in place on device buffers).
//! - [`grad`] — bucketed all-reduce, parameter broadcast, all-gather with gradient (math there).
//! - [`launch`] — [`launch_local`].
//! - [`testing`] — a world of ring ranks in threads, for tests.
//! - [`fuzzing`] — the wire parsers as functions of bytes, for the fuzz targets.

#![deny(unsafe_code)]

pub mod auth;
pub mod comm;
pub mod error;
pub mod fuzzing;
pub mod grad;
pub mod init;
pub mod launch;
// NCCL is called through raw FFI: the only unsafe code of this crate.
#[allow(unsafe_code)]
pub mod nccl;
pub mod ring;
pub mod store;
pub mod testing;
mod wire;
pub mod world;

pub use auth::{resolve_token, Token, TOKEN_ENV, TOKEN_FILE};
pub use comm::{any_rank, Communicator, LocalComm};
pub use error::{DistError, Result};
pub use grad::{
    all_gather_rows, all_gather_rows_backward, all_reduce_tensors, all_reduce_vecs,
    broadcast_tensors, GatherCache, DEFAULT_BUCKET_BYTES,
};
pub use init::{init, init_from_env, init_nccl, init_ring, Backend, DistOptions};
pub use launch::{launch_local, launch_local_with, LaunchOptions};
pub use nccl::{nccl_available, nccl_version, NcclComm, NcclSetup};
pub use ring::{RingComm, RingSetup};
pub use store::{StoreClient, StoreServer};
pub use world::{discover, discover_from_env, WorldInfo, WorldSource};
