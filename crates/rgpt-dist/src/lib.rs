//! Distributed training on PyTorch's own c10d: a `TCPStore` rendezvous and a
//! process group (NCCL for CUDA tensors, Gloo for CPU ones) whose
//! collectives run on tch tensors, reached through a small C++ shim
//! (`shim/`, built by `build.rs` like tch's own wrapper). Every collective is
//! bounded by the group's timeout and returns an error, never hangs, when a
//! peer is gone. [`DistEnv`] reads the launcher's variables (torchrun,
//! Slurm, `rgpt launch`); [`launch`] is `rgpt launch` itself.
mod env;
mod error;
mod ffi;
mod group;
mod heartbeat;
mod launch;
mod store;

pub use env::{first_host, DistEnv, DEFAULT_PORT};
pub use error::{DistError, Result};
pub use group::{Backend, ProcessGroup, ReduceOp};
pub use launch::{launch, LaunchConfig, Stream};
pub use store::TcpStore;

/// Whether this build has the NCCL backend (libtorch with CUDA and the
/// CUDA/NCCL headers at build time; see `build.rs`).
pub const NCCL_BUILT: bool = cfg!(rgpt_nccl);
