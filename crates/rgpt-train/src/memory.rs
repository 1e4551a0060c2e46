//! How much memory the run holds, for the per-step metrics. Training runs
//! on the CPU, where the process's resident set is the figure that runs out
//! first; a CUDA run would report the caching allocator's figure instead.
use std::path::Path;

/// The process's resident set size in MiB, or `None` where the platform
/// does not expose it (anything but Linux).
///
/// Read from `/proc/self/status`'s `VmRSS` line, which the kernel gives in
/// kB: `/proc/self/statm` counts pages, and their size would need a
/// `sysconf` call. One small read, cheap next to a training step.
pub fn resident_set_mib() -> Option<f64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status")).ok()?;
    vm_rss_mib(&status)
}

/// The `VmRSS:   123456 kB` line of a `/proc/PID/status` text, in MiB.
fn vm_rss_mib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line["VmRSS:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_line() {
        let status = "Name:\trgpt\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_mib(status), Some(2.0));
        assert_eq!(vm_rss_mib("Name:\trgpt\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_resident_set() {
        assert!(resident_set_mib().is_some_and(|mib| mib > 0.0));
    }
}
