//! The learning-rate schedule of the paper (Sec. 4): linear warm-up over
//! `warmup_ratio` of the steps, then cosine decay to zero, as transformers'
//! `get_cosine_schedule_with_warmup` (num_cycles 0.5) computes it; or the
//! same warm-up and then a constant rate (transformers'
//! `get_constant_schedule_with_warmup`).
use serde::{Deserialize, Serialize};

/// What the learning rate does after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Decays to zero by a cosine (the paper's).
    #[default]
    Cosine,
    /// Stays at the base rate. A decoder trained from nothing leaves the
    /// plateau before in-context lookup sooner without the decay
    /// (docs/experiments/demo-journal.md).
    Constant,
}

impl Schedule {
    /// Learning rate at optimiser step `step` (0-based) of `total` steps.
    pub fn lr(self, base_lr: f64, step: u64, total: u64, warmup_ratio: f64) -> f64 {
        match self {
            Schedule::Cosine => cosine_with_warmup(base_lr, step, total, warmup_ratio),
            // The cosine schedule's warm-up ramp, then the base rate.
            Schedule::Constant if step < warmup_steps(total, warmup_ratio) => {
                cosine_with_warmup(base_lr, step, total, warmup_ratio)
            }
            Schedule::Constant => base_lr,
        }
    }
}

/// transformers: num_warmup_steps = ceil(total * warmup_ratio).
fn warmup_steps(total: u64, warmup_ratio: f64) -> u64 {
    (total as f64 * warmup_ratio).ceil() as u64
}

/// Learning rate at optimiser step `step` (0-based) of `total` steps.
pub fn cosine_with_warmup(base_lr: f64, step: u64, total: u64, warmup_ratio: f64) -> f64 {
    let warmup = warmup_steps(total, warmup_ratio);
    if step < warmup {
        return base_lr * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base_lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine_to_zero() {
        // 100 steps, ratio 0.03: 3 warm-up steps.
        let lr = |s| cosine_with_warmup(1e-3, s, 100, 0.03);
        assert_eq!(lr(0), 0.0);
        assert!((lr(1) - 1e-3 / 3.0).abs() < 1e-15);
        assert!((lr(3) - 1e-3).abs() < 1e-15);
        // Half-way through the decay: half the rate.
        assert!((cosine_with_warmup(1.0, 3 + 97 / 2, 100, 0.03) - 0.5).abs() < 0.02);
        assert!(lr(100) < 1e-12);
        assert!((1..100).all(|s| lr(s + 1) <= lr(s) || s < 3));
        assert_eq!(Schedule::Cosine.lr(1e-3, 50, 100, 0.03), lr(50));
    }

    #[test]
    fn constant_warms_up_the_same_way_then_holds_the_rate() {
        let lr = |s| Schedule::Constant.lr(1e-3, s, 100, 0.03);
        for s in 0..=3 {
            assert_eq!(lr(s), cosine_with_warmup(1e-3, s, 100, 0.03));
        }
        assert!((3..=100).all(|s| lr(s) == 1e-3));
    }
}
