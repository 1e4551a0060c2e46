//! The one loading path of every model crate: read a JSON file with an error
//! naming it, and build a module in a fresh VarStore of the run's dtype and
//! device, fill it from a checkpoint and freeze it. CLIP, SigLIP, LLaMA and
//! the LLaVA-family models all load through here.
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind};

use crate::{Checkpoint, LoadProgress, WeightsError};

/// Reads `path` as JSON into `T`; a missing file or bad JSON is an error
/// naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WeightsError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Declares a module with `build` in a VarStore of `kind` on `device`,
/// copies its weights from `checkpoint` (every variable must be there),
/// reporting progress after each tensor, and freezes it. Inference loads
/// so; training unfreezes what it trains.
pub fn load_frozen<M, E: From<WeightsError>>(
    checkpoint: &Checkpoint,
    device: Device,
    kind: Kind,
    build: impl FnOnce(&VarStore) -> Result<M, E>,
    on_progress: &mut dyn FnMut(LoadProgress),
) -> Result<(M, VarStore), E> {
    let mut vs = VarStore::new(device);
    vs.set_kind(kind);
    let model = build(&vs)?;
    checkpoint.load_into_with_progress(&vs, on_progress)?;
    vs.freeze();
    Ok((model, vs))
}
