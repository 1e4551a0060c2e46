//! Timing on a device: wait for the device before and after, take the
//! median of repeated runs.
use std::time::Instant;

use tch::Device;

/// Waits until `device` has finished its queued work.
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Seconds of each of `runs` runs of `f`, after `warmup` untimed ones.
pub fn time_runs<E>(
    device: Device,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    for _ in 0..warmup {
        f()?;
    }
    synchronize(device);
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        synchronize(device);
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(seconds)
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
