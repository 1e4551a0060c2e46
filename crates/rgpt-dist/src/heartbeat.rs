//! Which ranks are still there. Every rank bumps a counter in the
//! rendezvous store each second from a thread of its own, so that after a
//! collective fails, a rank can name the ranks whose counters stopped (a
//! process that died or was killed), or find the store itself gone (rank 0,
//! which serves it, is gone), instead of only the socket error c10d saw.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{DistError, Result};
use crate::store::TcpStore;

/// How long a rank watches the others' counters before naming the still ones.
const WATCH: Duration = Duration::from_millis(2500);
const BEAT: Duration = Duration::from_secs(1);

fn key(rank: usize) -> String {
    format!("rgpt/heartbeat/{rank}")
}

/// Stops the beating when dropped. The thread is not waited for: a
/// `set` in flight when rank 0 has already gone could block until the
/// store's timeout, and the thread owns its handle on the store.
pub(crate) struct Heartbeat {
    stop: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Sets this rank's counter (before any collective can run, so every
    /// rank's key exists by then) and keeps it moving.
    pub(crate) fn start(store: Arc<TcpStore>, rank: usize) -> Result<Self> {
        store.set(&key(rank), b"0")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("rgpt-heartbeat-{rank}"))
            .spawn(move || {
                let mut beat = 0u64;
                let mut next = Instant::now() + BEAT;
                while !stopped.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        beat += 1;
                        next += BEAT;
                        if store.set(&key(rank), beat.to_string().as_bytes()).is_err() {
                            return; // the store is gone; so is the run
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .map_err(|e| DistError::Invalid(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(Heartbeat { stop })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What became of the other ranks, in words, for a failed collective's
/// error: the ranks whose counters stood still for a while, or that the
/// store is gone, or that every rank is alive (so one is stuck or slow).
pub(crate) fn diagnose(store: &TcpStore, world_size: usize, me: usize) -> String {
    let read = || -> Option<Vec<Vec<u8>>> {
        (0..world_size)
            .map(|rank| store.get(&key(rank)).ok())
            .collect()
    };
    let Some(before) = read() else {
        return "the rendezvous store cannot be reached: rank 0, which serves it, is gone".into();
    };
    std::thread::sleep(WATCH);
    let Some(after) = read() else {
        return "the rendezvous store cannot be reached: rank 0, which serves it, is gone".into();
    };
    let still: Vec<String> = (0..world_size)
        .filter(|&rank| rank != me && before[rank] == after[rank])
        .map(|rank| rank.to_string())
        .collect();
    match still.as_slice() {
        [] => "every other rank is alive: one of them is stuck or slower than the timeout".into(),
        [one] => format!(
            "rank {one} is gone (no heartbeat for {:.1} s)",
            WATCH.as_secs_f64()
        ),
        many => format!(
            "ranks {} are gone (no heartbeat for {:.1} s)",
            many.join(", "),
            WATCH.as_secs_f64()
        ),
    }
}
