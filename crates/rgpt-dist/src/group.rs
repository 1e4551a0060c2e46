//! A process group: c10d's Gloo (CPU tensors) or NCCL (CUDA tensors)
//! backend running collectives on tch tensors in place, each bounded by the
//! group's timeout, so a rank that is gone is an error, not a hang.
use std::ffi::{c_int, c_void, CString};
use std::fmt;
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tch::{Device, Tensor};

use crate::env::DistEnv;
use crate::error::{DistError, Result};
use crate::ffi;
use crate::heartbeat::{diagnose, Heartbeat};
use crate::store::{millis, TcpStore};

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// NCCL when CUDA is available, Gloo otherwise.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

impl FromStr for Backend {
    type Err = DistError;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Backend::Auto),
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            other => Err(DistError::Invalid(format!(
                "unknown backend `{other}`; use nccl, gloo or auto"
            ))),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// How a reduction combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size (floating-point tensors only).
    Avg,
    Max,
}

impl ReduceOp {
    /// c10d's `ReduceOp::RedOpType` numbering.
    fn code(self) -> c_int {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
            ReduceOp::Max => 4,
        }
    }
}

pub struct ProcessGroup {
    raw: NonNull<ffi::Group>,
    // Declared after `raw`: the group is dropped first.
    _heartbeat: Heartbeat,
    store: Arc<TcpStore>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    device: Device,
    timeout: Duration,
}

// SAFETY: c10d backends may be called from any thread; collectives must
// still be issued in the same order on every rank, which `&mut`-free use
// from one thread at a time (Send, not Sync) keeps.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group the launcher's variables describe: rank 0 serves the
    /// store at `MASTER_ADDR:MASTER_PORT`, the others connect to it, and
    /// the backend connects every pair of ranks. NCCL ranks use the GPU
    /// `LOCAL_RANK`.
    pub fn init(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        let store = Arc::new(TcpStore::new(
            &env.master_addr,
            env.master_port,
            env.rank == 0,
            env.world_size,
            timeout,
        )?);
        // Before the group's own rendezvous, so every rank's counter exists
        // once any collective can run.
        let heartbeat = Heartbeat::start(Arc::clone(&store), env.rank)?;
        let backend = match backend {
            Backend::Auto if tch::Cuda::is_available() => Backend::Nccl,
            Backend::Auto => Backend::Gloo,
            chosen => chosen,
        };
        let rank: c_int = to_c(env.rank, "rank")?;
        let world: c_int = to_c(env.world_size, "world size")?;
        let mut raw = std::ptr::null_mut();
        let device = match backend {
            Backend::Nccl => Device::Cuda(env.local_rank),
            _ => Device::Cpu,
        };
        let answer = match backend {
            Backend::Nccl => nccl_group(&store, rank, world, timeout, env.local_rank, &mut raw)?,
            _ => {
                // Loopback rendezvous: every rank is on this machine, and
                // Gloo listens there too (its default is the address the
                // host name resolves to).
                let hostname = if is_loopback(&env.master_addr) {
                    "127.0.0.1"
                } else {
                    ""
                };
                let hostname = CString::new(hostname).unwrap_or_default();
                // SAFETY: valid pointers for the call; `raw` is written on
                // success only.
                unsafe {
                    ffi::rgpt_group_gloo_new(
                        store.raw(),
                        rank,
                        world,
                        millis(timeout),
                        hostname.as_ptr(),
                        &mut raw,
                    )
                }
            }
        };
        ffi::check(answer).map_err(DistError::C10d)?;
        let raw = NonNull::new(raw)
            .ok_or_else(|| DistError::C10d("the shim returned no process group".into()))?;
        Ok(ProcessGroup {
            raw,
            _heartbeat: heartbeat,
            store,
            rank: env.rank,
            world_size: env.world_size,
            backend,
            device,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend in use (`Auto` resolved).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where this rank's tensors for collectives live: the CPU for Gloo,
    /// GPU `LOCAL_RANK` for NCCL.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The rendezvous store, for small values every rank must agree on.
    pub fn store(&self) -> &TcpStore {
        &self.store
    }

    /// Reduces `tensor` across ranks, leaving the result in it on every rank.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.check(tensor, "all_reduce")?;
        check_op(tensor, op, "all_reduce")?;
        let answer = unsafe {
            ffi::rgpt_all_reduce(
                self.raw.as_ptr(),
                tensor_ptr(tensor),
                op.code(),
                millis(self.timeout),
            )
        };
        self.answer(answer)
    }

    /// Copies `root`'s `tensor` into every rank's.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        self.check(tensor, "broadcast")?;
        let root = self.rank_arg(root)?;
        let answer = unsafe {
            ffi::rgpt_broadcast(
                self.raw.as_ptr(),
                tensor_ptr(tensor),
                root,
                millis(self.timeout),
            )
        };
        self.answer(answer)
    }

    /// Every rank's `tensor`, in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        self.check(tensor, "all_gather")?;
        let mut shape = vec![self.world_size as i64];
        shape.extend(tensor.size());
        let output = Tensor::empty(shape.as_slice(), (tensor.kind(), tensor.device()));
        let answer = unsafe {
            ffi::rgpt_all_gather(
                self.raw.as_ptr(),
                tensor_ptr(&output),
                tensor_ptr(tensor),
                millis(self.timeout),
            )
        };
        self.answer(answer)?;
        Ok(output.unbind(0))
    }

    /// Reduces `tensor` across ranks and gives this rank its part: the
    /// `rank`-th of `world_size` equal chunks along the first dimension.
    pub fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        self.check(tensor, "reduce_scatter")?;
        check_op(tensor, op, "reduce_scatter")?;
        let mut shape = tensor.size();
        let world = self.world_size as i64;
        match shape.first_mut() {
            Some(first) if *first % world == 0 => *first /= world,
            _ => {
                return Err(DistError::Invalid(format!(
                    "reduce_scatter: the first dimension of {shape:?} is not a multiple of \
                     the world size {world}"
                )))
            }
        }
        let output = Tensor::empty(shape.as_slice(), (tensor.kind(), tensor.device()));
        let answer = unsafe {
            ffi::rgpt_reduce_scatter(
                self.raw.as_ptr(),
                tensor_ptr(&output),
                tensor_ptr(tensor),
                op.code(),
                millis(self.timeout),
            )
        };
        self.answer(answer)?;
        Ok(output)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<()> {
        let answer = unsafe { ffi::rgpt_barrier(self.raw.as_ptr(), millis(self.timeout)) };
        self.answer(answer)
    }

    fn check(&self, tensor: &Tensor, what: &str) -> Result<()> {
        if !tensor.is_contiguous() {
            return Err(DistError::Invalid(format!(
                "{what}: the tensor must be contiguous (call .contiguous() first)"
            )));
        }
        if tensor.device() != self.device {
            return Err(DistError::Invalid(format!(
                "{what}: the tensor is on {:?}, but the {} group works on {:?}",
                tensor.device(),
                self.backend,
                self.device
            )));
        }
        Ok(())
    }

    fn rank_arg(&self, rank: usize) -> Result<c_int> {
        if rank >= self.world_size {
            return Err(DistError::Invalid(format!(
                "rank {rank} is not below the world size {}",
                self.world_size
            )));
        }
        to_c(rank, "rank")
    }

    fn answer(&self, answer: *mut std::ffi::c_char) -> Result<()> {
        ffi::check(answer).map_err(|message| {
            let others = diagnose(&self.store, self.world_size, self.rank);
            DistError::C10d(format!(
                "rank {} of {}: {message}; {others}",
                self.rank, self.world_size
            ))
        })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from the shim and is freed once.
        unsafe { ffi::rgpt_group_free(self.raw.as_ptr()) }
    }
}

/// Refuses an average of integers (c10d would divide with truncation on
/// some backends and refuse on others).
fn check_op(tensor: &Tensor, op: ReduceOp, what: &str) -> Result<()> {
    if op == ReduceOp::Avg && !tensor.is_floating_point() {
        return Err(DistError::Invalid(format!(
            "{what}: avg needs a floating-point tensor, got {:?}",
            tensor.kind()
        )));
    }
    Ok(())
}

/// tch's tensor handle is a `torch::Tensor*`, which the shim takes.
fn tensor_ptr(tensor: &Tensor) -> *mut c_void {
    tensor.as_ptr() as *mut c_void
}

fn to_c(value: usize, what: &str) -> Result<c_int> {
    c_int::try_from(value).map_err(|_| DistError::Invalid(format!("{what} {value} is too large")))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(rgpt_nccl)]
fn nccl_group(
    store: &TcpStore,
    rank: c_int,
    world: c_int,
    timeout: Duration,
    device: usize,
    raw: &mut *mut ffi::Group,
) -> Result<*mut std::ffi::c_char> {
    if !tch::Cuda::is_available() {
        return Err(DistError::Invalid(
            "backend nccl needs CUDA, which is not available; use gloo".into(),
        ));
    }
    let device = to_c(device, "local rank")?;
    // SAFETY: valid pointers for the call; `raw` is written on success only.
    Ok(unsafe { ffi::rgpt_group_nccl_new(store.raw(), rank, world, millis(timeout), device, raw) })
}

#[cfg(not(rgpt_nccl))]
fn nccl_group(
    _: &TcpStore,
    _: c_int,
    _: c_int,
    _: Duration,
    _: usize,
    _: &mut *mut ffi::Group,
) -> Result<*mut std::ffi::c_char> {
    Err(DistError::Invalid(
        "this build has no NCCL (its libtorch has no CUDA); use backend gloo".into(),
    ))
}
