//! Writing a VarStore as a Hugging Face safetensors checkpoint: one
//! `model.safetensors`, or shards `model-0000i-of-0000n.safetensors` plus
//! `model.safetensors.index.json` when the weights exceed the shard size
//! (transformers shards at 5 GB; RGPT's format at 4 GB). Every file is
//! written beside its destination and renamed into place, so an
//! interrupted save never leaves a truncated checkpoint under the real name.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::WeightsError;

/// RGPT's shard size.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 4 << 30;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves named tensors (sorted by name, as transformers does) into `dir`.
pub fn save_safetensors(
    tensors: &[(String, Tensor)],
    dir: &Path,
    max_shard_bytes: u64,
) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let size = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
    let mut shards: Vec<Vec<&(String, Tensor)>> = vec![Vec::new()];
    let mut current = 0u64;
    for entry in sorted {
        let bytes = size(&entry.1);
        if current > 0 && current + bytes > max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += bytes;
        shards.last_mut().expect("one shard at least").push(entry);
    }
    let write = |shard: &[&(String, Tensor)], path: &Path| -> Result<(), WeightsError> {
        let tmp = tmp_path(path);
        let named: Vec<(&str, Tensor)> = shard
            .iter()
            .map(|(n, t)| (n.as_str(), t.to_device(tch::Device::Cpu).contiguous()))
            .collect();
        Tensor::write_safetensors(&named, &tmp).map_err(|source| WeightsError::Torch {
            name: path.display().to_string(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(io(path))
    };
    if shards.len() == 1 {
        return write(&shards[0], &dir.join("model.safetensors"));
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        write(shard, &dir.join(&file))?;
        for (name, tensor) in shard {
            weight_map.insert(name.clone(), file.clone());
            total += size(tensor);
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let text = serde_json::to_string_pretty(&index).unwrap_or_default();
    write_atomic(&dir.join("model.safetensors.index.json"), text.as_bytes())
}
