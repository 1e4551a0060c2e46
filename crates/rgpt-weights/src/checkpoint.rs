use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use tch::nn::VarStore;
use tch::Tensor;

use crate::raw::RawTensor;
use crate::{pytorch_bin, Dtype, WeightsError};

/// The on-disk format of a checkpoint's weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    PytorchBin,
}

/// The weight files of one Hugging Face checkpoint, memory-mapped and indexed
/// by tensor name. Opening reads only headers; tensor data is touched when
/// copied into a VarStore.
pub struct Checkpoint {
    location: PathBuf,
    format: WeightFormat,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, (usize, RawTensor)>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("location", &self.location)
            .field("format", &self.format)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The part of a `*.index.json` we need: which file holds each tensor.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Opens the weights of a model directory, in the order transformers
    /// prefers them: safetensors (sharded, then single), then PyTorch `.bin`.
    /// A path to a single weight file is accepted too.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        if path.is_file() {
            let format = if path.extension().is_some_and(|e| e == "safetensors") {
                WeightFormat::Safetensors
            } else {
                WeightFormat::PytorchBin
            };
            return Self::from_files(path, format, &[path.to_path_buf()]);
        }
        if !path.is_dir() {
            return Err(WeightsError::NoWeights {
                dir: path.to_path_buf(),
            });
        }
        let candidates = [
            (
                "model.safetensors.index.json",
                WeightFormat::Safetensors,
                true,
            ),
            ("model.safetensors", WeightFormat::Safetensors, false),
            (
                "pytorch_model.bin.index.json",
                WeightFormat::PytorchBin,
                true,
            ),
            ("pytorch_model.bin", WeightFormat::PytorchBin, false),
        ];
        for (name, format, sharded) in candidates {
            let file = path.join(name);
            if !file.is_file() {
                continue;
            }
            let files = if sharded {
                shard_files(&file)?
            } else {
                vec![file]
            };
            return Self::from_files(path, format, &files);
        }
        Err(WeightsError::NoWeights {
            dir: path.to_path_buf(),
        })
    }

    fn from_files(
        location: &Path,
        format: WeightFormat,
        paths: &[PathBuf],
    ) -> Result<Self, WeightsError> {
        let _span =
            tracing::info_span!("open_checkpoint", location = %location.display()).entered();
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let io = |source| WeightsError::Io {
                path: path.clone(),
                source,
            };
            let file = File::open(path).map_err(io)?;
            // SAFETY: the map is read-only; like every mmap-based loader we
            // rely on the checkpoint not being rewritten while we read it.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
            let entries = match format {
                WeightFormat::Safetensors => safetensors_entries(path, &mmap)?,
                WeightFormat::PytorchBin => pytorch_bin::read_tensors(path, &mmap)?,
            };
            for (name, raw) in entries {
                tensors.insert(name, (index, raw));
            }
            files.push((path.clone(), mmap));
        }
        Ok(Checkpoint {
            location: location.to_path_buf(),
            format,
            files,
            tensors,
        })
    }

    /// Renames tensors by prefix so one model definition loads several
    /// checkpoint layouts (e.g. original LLaVA's `model.mm_projector.0.` is
    /// llava-hf's `multi_modal_projector.linear_1.`). Each name takes the
    /// longest matching `from` prefix; names no rule matches keep theirs.
    /// Two tensors that end up with one name are an error, not a silent
    /// overwrite.
    pub fn rename_prefixes(&mut self, rules: &[(&str, &str)]) -> Result<(), WeightsError> {
        let mut rules = rules.to_vec();
        rules.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut renamed = HashMap::with_capacity(self.tensors.len());
        for (name, entry) in self.tensors.drain() {
            let new_name = rules
                .iter()
                .find_map(|(from, to)| name.strip_prefix(from).map(|rest| format!("{to}{rest}")))
                .unwrap_or_else(|| name.clone());
            if renamed.insert(new_name.clone(), entry).is_some() {
                return Err(WeightsError::NameClash {
                    checkpoint: self.location.clone(),
                    name: new_name,
                    source_name: name,
                });
            }
        }
        self.tensors = renamed;
        Ok(())
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The directory or file this checkpoint was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[i64]> {
        self.tensors.get(name).map(|(_, raw)| raw.shape.as_slice())
    }

    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.tensors.get(name).map(|(_, raw)| raw.dtype)
    }

    /// Copies one tensor out of the mapped file into a new CPU tensor, in the
    /// dtype it is stored in.
    pub fn tensor(&self, name: &str) -> Result<Tensor, WeightsError> {
        let (file, raw) = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                name: name.to_string(),
                checkpoint: self.location.clone(),
            })?;
        let torch = |source| WeightsError::Torch {
            name: name.to_string(),
            source,
        };
        let bytes = &self.files[*file].1[raw.bytes.clone()];
        let numel = (bytes.len() / raw.dtype.size_in_bytes()) as i64;
        // `contiguous` copies only for the strided views `.bin` files may hold.
        Tensor::f_from_data_size(bytes, &[numel], raw.dtype.kind())
            .and_then(|storage| storage.f_as_strided(&raw.shape, &raw.strides, raw.storage_offset))
            .and_then(|view| view.f_contiguous())
            .map_err(torch)
    }

    /// Fills every variable of `vs` from the tensor of the same name, casting
    /// to the variable's dtype and device. Tensors the model does not use are
    /// ignored (old checkpoints carry e.g. `rotary_emb.inv_freq`).
    pub fn load_into(&self, vs: &VarStore) -> Result<(), WeightsError> {
        self.load_into_with_progress(vs, &mut |_| {})
    }

    /// `load_into`, reporting progress after each tensor (a 7B checkpoint
    /// takes long enough on a cold disk that users want to see it move).
    pub fn load_into_with_progress(
        &self,
        vs: &VarStore,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<(), WeightsError> {
        self.load_under(vs, "", on_progress)
    }

    /// Fills only the variables whose names start with `prefix`, for a model
    /// composed from several checkpoints (a vision tower from one, the
    /// decoder from another).
    pub fn load_under(
        &self,
        vs: &VarStore,
        prefix: &str,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<(), WeightsError> {
        let _span =
            tracing::info_span!("load_weights", location = %self.location.display()).entered();
        let _guard = tch::no_grad_guard();
        let mut variables: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        // Stable order: errors and page-cache access are then reproducible.
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        // Check every name and shape before copying anything, so a wrong
        // checkpoint fails at once rather than after minutes of copying.
        let mut progress = LoadProgress {
            tensors_total: variables.len(),
            ..LoadProgress::default()
        };
        for (name, var) in &variables {
            let (_, raw) = self
                .tensors
                .get(name)
                .ok_or_else(|| WeightsError::MissingTensor {
                    name: name.clone(),
                    checkpoint: self.location.clone(),
                })?;
            let expected = var.size();
            if raw.shape != expected {
                return Err(WeightsError::TensorShape {
                    name: name.clone(),
                    expected,
                    found: raw.shape.clone(),
                });
            }
            progress.bytes_total += raw.byte_len() as u64;
        }
        for (name, mut var) in variables {
            let source = self.tensor(&name)?;
            progress.bytes_done += (source.numel() * source.kind().elt_size_in_bytes()) as u64;
            var.f_copy_(&source)
                .map_err(|source| WeightsError::Torch { name, source })?;
            progress.tensors_done += 1;
            on_progress(progress);
        }
        Ok(())
    }
}

/// How far `load_into_with_progress` has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadProgress {
    pub tensors_done: usize,
    pub tensors_total: usize,
    /// Bytes of checkpoint data copied so far, as stored on disk.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let text = std::fs::read_to_string(index_path).map_err(|source| WeightsError::Io {
        path: index_path.to_path_buf(),
        source,
    })?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| WeightsError::Index {
        path: index_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let names: BTreeSet<&String> = index.weight_map.values().collect();
    let files: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(WeightsError::Index {
            path: index_path.to_path_buf(),
            message: format!(
                "it names the shard {}, which does not exist",
                missing.display()
            ),
        });
    }
    Ok(files)
}

fn safetensors_entries(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(String, RawTensor)>, WeightsError> {
    let invalid = |message: String| WeightsError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    // `deserialize` checks the header against the buffer length, so a
    // truncated download fails here rather than at the first bad read.
    let st = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut entries = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::BOOL => Dtype::Bool,
            safetensors::Dtype::U8 => Dtype::U8,
            safetensors::Dtype::I8 => Dtype::I8,
            safetensors::Dtype::I16 => Dtype::I16,
            safetensors::Dtype::I32 => Dtype::I32,
            safetensors::Dtype::I64 => Dtype::I64,
            safetensors::Dtype::F16 => Dtype::F16,
            safetensors::Dtype::BF16 => Dtype::BF16,
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::F64 => Dtype::F64,
            other => {
                return Err(WeightsError::UnsupportedDtype {
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = view.data();
        let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let shape = view.shape().iter().map(|&d| d as i64).collect();
        entries.push((
            name,
            RawTensor::contiguous(dtype, shape, start..start + data.len()),
        ));
    }
    Ok(entries)
}
