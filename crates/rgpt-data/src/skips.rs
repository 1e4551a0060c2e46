//! What a reader or builder left out, and why: nothing is dropped silently.
//! Every skipped record is counted under its reason, and the summary lists
//! every reason with its count at the end of a run.
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Counts of skipped records by reason, with one example each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skips {
    reasons: BTreeMap<String, SkipReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkipReason {
    pub count: u64,
    /// The first record skipped for this reason (an id or a path).
    pub example: String,
}

impl Skips {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one skipped record.
    pub fn add(&mut self, reason: &str, example: impl fmt::Display) {
        self.reasons
            .entry(reason.to_string())
            .and_modify(|r| r.count += 1)
            .or_insert_with(|| SkipReason {
                count: 1,
                example: example.to_string(),
            });
    }

    pub fn count(&self, reason: &str) -> u64 {
        self.reasons.get(reason).map_or(0, |r| r.count)
    }

    pub fn total(&self) -> u64 {
        self.reasons.values().map(|r| r.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }

    pub fn reasons(&self) -> impl Iterator<Item = (&str, &SkipReason)> {
        self.reasons.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn merge(&mut self, other: &Skips) {
        for (reason, skip) in &other.reasons {
            self.reasons
                .entry(reason.clone())
                .and_modify(|r| r.count += skip.count)
                .or_insert_with(|| skip.clone());
        }
    }
}

impl fmt::Display for Skips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "nothing skipped");
        }
        writeln!(f, "skipped {} record(s):", self.total())?;
        for (reason, skip) in &self.reasons {
            writeln!(f, "  {:>8}  {reason} (e.g. {})", skip.count, skip.example)?;
        }
        Ok(())
    }
}
