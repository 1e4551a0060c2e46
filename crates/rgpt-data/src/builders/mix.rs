//! The training mix (paper Sec. 3.2: pre-training and fine-tuning mixes):
//! built files combined with weights into one shuffled file. A weight is a
//! sampling rate: 1 keeps every sample, 0.5 a random half, 2 every sample
//! twice (copies get `#k` appended to their id).
use std::path::PathBuf;

use rand::seq::{index, SliceRandom};

use super::{seeded_rng, Built};
use crate::format::read_all_samples;
use crate::DataError;

/// One input of a mix.
#[derive(Debug, Clone)]
pub struct MixInput {
    pub path: PathBuf,
    pub weight: f64,
}

impl std::str::FromStr for MixInput {
    type Err = String;

    /// `FILE` (weight 1) or `FILE:WEIGHT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, weight) = match s.rsplit_once(':') {
            Some((path, weight)) if weight.parse::<f64>().is_ok() => {
                (path, weight.parse::<f64>().unwrap_or(1.0))
            }
            _ => (s, 1.0),
        };
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(format!("weight of `{path}` must be a non-negative number"));
        }
        Ok(MixInput {
            path: PathBuf::from(path),
            weight,
        })
    }
}

pub fn mix(inputs: &[MixInput], seed: u64) -> Result<Built, DataError> {
    if inputs.is_empty() {
        return Err(DataError::InvalidArgument(
            "a mix needs at least one input".into(),
        ));
    }
    let mut rng = seeded_rng(seed);
    let mut built = Built::default();
    for input in inputs {
        let samples = read_all_samples(&input.path)?;
        let whole = input.weight.floor() as usize;
        for copy in 0..whole {
            built.samples.extend(samples.iter().map(|s| {
                let mut s = s.clone();
                if copy > 0 {
                    s.id = format!("{}#{copy}", s.id);
                }
                s
            }));
        }
        let part = ((input.weight - whole as f64) * samples.len() as f64).round() as usize;
        let mut picked = index::sample(&mut rng, samples.len(), part.min(samples.len())).into_vec();
        picked.sort_unstable();
        built.samples.extend(picked.into_iter().map(|i| {
            let mut s = samples[i].clone();
            if whole > 0 {
                s.id = format!("{}#{whole}", s.id);
            }
            s
        }));
        let left_out = samples.len().saturating_sub(part) * usize::from(whole == 0);
        for _ in 0..left_out {
            built
                .skips
                .add("not drawn at the input's weight", input.path.display());
        }
    }
    built.samples.shuffle(&mut rng);
    Ok(built)
}
