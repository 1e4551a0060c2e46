//! The memory bandwidth a run is measured against: a copy of `bytes`
//! between two buffers on the device (a device-to-device copy on a GPU, a
//! memcpy on the CPU), counted as read plus write, the best of several.
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::timing::time_runs;
use crate::BenchError;

#[derive(Debug, Clone, Serialize)]
pub struct Bandwidth {
    /// Bytes copied per run (each read once and written once).
    pub bytes: u64,
    /// The best run's bytes read and written per second.
    pub bytes_per_s: f64,
}

/// Copies `bytes` (at least 1 MiB) `runs` times on `device`.
pub fn measure(device: Device, bytes: u64, runs: usize) -> Result<Bandwidth, BenchError> {
    let elements = (bytes.max(1 << 20) / 4) as i64;
    let source = Tensor::f_ones([elements], (Kind::Float, device))?;
    let mut target = Tensor::f_zeros([elements], (Kind::Float, device))?;
    let seconds = time_runs(device, 1, runs.max(1), || -> Result<(), BenchError> {
        target.f_copy_(&source)?;
        Ok(())
    })?;
    let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let bytes = elements as u64 * 4;
    Ok(Bandwidth {
        bytes,
        bytes_per_s: 2.0 * bytes as f64 / best,
    })
}
