//! PyTorch checkpoints in the zip format `torch.save` writes by default since
//! torch 1.6 (`_save`/`_load` in torch/serialization.py), read without Python.
//!
//! The archive holds `<prefix>/data.pkl`, a pickle of the saved object in
//! which every tensor is `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` and every storage is a persistent id
//! `('storage', <storage class or dtype>, key, location, numel)` whose bytes
//! are the uncompressed entry `<prefix>/data/<key>`. We run that pickle with
//! [`crate::pickle`], accepting only the globals a state dict needs, and
//! return byte ranges into the mapped file instead of copying storages.

use std::collections::HashMap;
use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use zip::{CompressionMethod, ZipArchive};

use crate::pickle::{self, Global, Host, Value};
use crate::raw::RawTensor;
use crate::{Dtype, WeightsError};

/// Lists the tensors of a `torch.save`d state dict held in `bytes`, with
/// nested dicts flattened to `.`-joined names.
pub(crate) fn read_tensors(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(String, RawTensor)>, WeightsError> {
    let invalid = |message: String| WeightsError::TorchBin {
        path: path.to_path_buf(),
        message,
    };
    if is_legacy_format(bytes) {
        return Err(WeightsError::LegacyTorchBin {
            path: path.to_path_buf(),
        });
    }
    let archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("not a torch.save zip archive ({e})")))?;
    let prefix = archive
        .file_names()
        .filter_map(|name| name.strip_suffix("/data.pkl"))
        .find(|prefix| !prefix.is_empty() && !prefix.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| {
            invalid("the zip archive has no <name>/data.pkl, so torch.save did not write it".into())
        })?;

    let mut entries = Entries { archive, bytes };
    let byteorder = format!("{prefix}/byteorder");
    if entries.archive.index_for_name(&byteorder).is_some() {
        let range = entries.stored(&byteorder).map_err(&invalid)?;
        let order = &bytes[range];
        if order != b"little" {
            return Err(invalid(format!(
                "its tensors are stored {} endian; only little endian is supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let pickle_range = entries
        .stored(&format!("{prefix}/data.pkl"))
        .map_err(&invalid)?;

    let mut unpickler = Unpickler {
        entries,
        prefix,
        storages: HashMap::new(),
    };
    let root = pickle::load(&bytes[pickle_range], &mut unpickler)
        .map_err(|e| invalid(format!("data.pkl: {e}")))?;
    let Value::Dict(_) = root else {
        return Err(invalid(format!(
            "data.pkl holds a {}, not a dict of tensors (a state dict)",
            root.kind()
        )));
    };
    let mut out = Vec::new();
    let mut budget = VISIT_BUDGET;
    flatten(&root, "", 0, &mut budget, &mut out).map_err(&invalid)?;
    if out.is_empty() {
        return Err(invalid("data.pkl holds no tensors".into()));
    }
    Ok(out)
}

/// The formats before torch 1.6: a bare sequence of pickles starting with
/// a magic number, or (before 0.4) a tar archive.
fn is_legacy_format(bytes: &[u8]) -> bool {
    const PICKLE_PROTO: u8 = 0x80;
    let is_tar = bytes.get(257..262) == Some(b"ustar".as_slice());
    bytes.first() == Some(&PICKLE_PROTO) || is_tar
}

struct Entries<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    bytes: &'a [u8],
}

impl Entries<'_> {
    /// The byte range of an uncompressed entry inside the whole file.
    fn stored(&mut self, name: &str) -> Result<Range<usize>, String> {
        let index = self
            .archive
            .index_for_name(name)
            .ok_or_else(|| format!("the zip archive has no entry {name}"))?;
        let entry = self
            .archive
            .by_index_raw(index)
            .map_err(|e| format!("zip entry {name}: {e}"))?;
        if entry.compression() != CompressionMethod::Stored || entry.encrypted() {
            // Memory-mapping needs the raw bytes; torch itself never
            // compresses, so this archive was rewritten by another tool.
            return Err(format!(
                "zip entry {name} is compressed ({}); re-save the checkpoint with torch.save",
                entry.compression()
            ));
        }
        if entry.compressed_size() != entry.size() {
            return Err(format!(
                "zip entry {name} is stored with {} bytes but claims {}",
                entry.compressed_size(),
                entry.size()
            ));
        }
        let start = usize::try_from(entry.data_start()).ok();
        let len = usize::try_from(entry.size()).ok();
        start
            .zip(len)
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|range| range.end <= self.bytes.len())
            .ok_or_else(|| format!("zip entry {name} extends past the end of the file"))
    }
}

/// The objects of a state dict pickle that are not plain Python data.
#[derive(Clone)]
enum Torch {
    Storage { dtype: Dtype, bytes: Range<usize> },
    Tensor(Rc<RawTensor>),
}

struct Unpickler<'a> {
    entries: Entries<'a>,
    prefix: String,
    /// Entry ranges by storage key: tied weights and views share a storage.
    storages: HashMap<String, Range<usize>>,
}

type V = Value<Torch>;

impl Host for Unpickler<'_> {
    type Ext = Torch;

    fn find_class(&mut self, module: &str, name: &str) -> Result<(), String> {
        let known = storage_dtype(module, name).is_some()
            || matches!(
                (module, name),
                ("collections", "OrderedDict")
                    | (
                        "torch._utils",
                        "_rebuild_tensor"
                            | "_rebuild_tensor_v2"
                            | "_rebuild_parameter"
                            | "_rebuild_parameter_with_state"
                    )
                    | ("torch._tensor" | "torch.tensor", "_rebuild_from_type_v2")
                    | ("torch" | "torch._tensor" | "torch.tensor", "Tensor")
                    | ("torch.nn.parameter", "Parameter")
                    | ("torch", "Size")
                    | ("_codecs", "encode")
            );
        if known {
            Ok(())
        } else {
            Err(format!(
                "unsupported global `{module}.{name}` (only tensors, storages and dicts of them are read)"
            ))
        }
    }

    fn persistent_load(&mut self, pid: V) -> Result<V, String> {
        let Value::Tuple(pid) = &pid else {
            return Err(format!("persistent id is a {}, not a tuple", pid.kind()));
        };
        let [typename, storage_type, key, _location, numel] = &pid[..] else {
            return Err(format!("persistent id has {} fields, not 5", pid.len()));
        };
        if !matches!(typename, Value::Str(s) if &**s == "storage")
            && !matches!(typename, Value::Bytes(b) if &**b == b"storage")
        {
            return Err("persistent id is not a ('storage', ...) tuple".into());
        }
        let dtype = match storage_type {
            Value::Global(g) => storage_dtype(&g.module, &g.name)
                .ok_or_else(|| format!("`{g}` is not a storage type"))?,
            other => return Err(format!("storage type is a {}, not a global", other.kind())),
        };
        let key = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(format!("storage key is a {}, not a string", other.kind())),
        };
        let numel = int(numel, "storage size")?;
        let nbytes = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| format!("storage {key} has invalid size {numel}"))?;
        let entry = match self.storages.get(&key) {
            Some(range) => range.clone(),
            None => {
                let range = self
                    .entries
                    .stored(&format!("{}/data/{key}", self.prefix))?;
                self.storages.insert(key.clone(), range.clone());
                range
            }
        };
        if nbytes > entry.len() {
            return Err(format!(
                "storage {key} should hold {nbytes} bytes but its entry has {}",
                entry.len()
            ));
        }
        Ok(Value::Ext(Torch::Storage {
            dtype,
            bytes: entry.start..entry.start + nbytes,
        }))
    }

    fn call(&mut self, callable: &Global, args: &[V]) -> Result<V, String> {
        match (callable.module.as_str(), callable.name.as_str()) {
            ("collections", "OrderedDict") => match args {
                [] => Ok(Value::new_dict(Vec::new())),
                // OrderedDict([(key, value), ...]), as protocol 0/1 write it.
                [Value::List(items)] => {
                    let mut pairs = Vec::new();
                    for item in items.borrow().iter() {
                        match item {
                            Value::Tuple(kv) if kv.len() == 2 => {
                                pairs.push((kv[0].clone(), kv[1].clone()))
                            }
                            other => {
                                return Err(format!(
                                    "OrderedDict item is a {}, not a pair",
                                    other.kind()
                                ))
                            }
                        }
                    }
                    Ok(Value::new_dict(pairs))
                }
                _ => Err("OrderedDict called with unexpected arguments".into()),
            },
            ("torch._utils", "_rebuild_tensor_v2") if matches!(args.len(), 6 | 7) => {
                rebuild_tensor(&args[..4])
            }
            ("torch._utils", "_rebuild_tensor") if args.len() == 4 => rebuild_tensor(args),
            ("torch._utils", "_rebuild_parameter") if args.len() == 3 => as_tensor(&args[0]),
            ("torch._utils", "_rebuild_parameter_with_state") if args.len() == 4 => {
                as_tensor(&args[0])
            }
            // Tensors with Python attributes: `func(*args)`, then the
            // attributes, which are not weights.
            ("torch._tensor" | "torch.tensor", "_rebuild_from_type_v2") if args.len() == 4 => {
                let (Value::Global(func), Value::Global(ty), Value::Tuple(inner)) =
                    (&args[0], &args[1], &args[2])
                else {
                    return Err("_rebuild_from_type_v2 called with unexpected arguments".into());
                };
                // Only the plain rebuild functions: a nested
                // _rebuild_from_type_v2 could recurse as deep as the input.
                if func.name == "_rebuild_from_type_v2" {
                    return Err("nested _rebuild_from_type_v2".into());
                }
                if !matches!(ty.name.as_str(), "Tensor" | "Parameter") {
                    return Err(format!("tensor subclass `{ty}` is not supported"));
                }
                let tensor = self.call(func, inner)?;
                as_tensor(&tensor)
            }
            ("torch", "Size") => match args {
                [Value::Tuple(dims)] => Ok(Value::Tuple(dims.clone())),
                _ => Err("torch.Size called with unexpected arguments".into()),
            },
            // How protocol 2 pickles `bytes`: `_codecs.encode(text, "latin1")`.
            ("_codecs", "encode") => match args {
                [Value::Str(text), Value::Str(encoding)]
                    if matches!(&**encoding, "latin1" | "latin-1") =>
                {
                    text.chars()
                        .map(|c| u8::try_from(u32::from(c)).ok())
                        .collect::<Option<Vec<u8>>>()
                        .map(|b| Value::Bytes(Rc::from(b)))
                        .ok_or_else(|| "_codecs.encode: text is not latin-1".to_string())
                }
                _ => Err("_codecs.encode called with unexpected arguments".into()),
            },
            _ => Err(format!(
                "cannot call `{callable}` with {} arguments",
                args.len()
            )),
        }
    }

    fn build(&mut self, obj: V, state: V) -> Result<V, String> {
        match obj {
            // A module's state dict is an OrderedDict whose `_metadata`
            // attribute (layer versions) arrives through BUILD; it is no
            // weight, so the dict's items are all we keep.
            Value::Dict(_) | Value::Ext(Torch::Tensor(_)) => Ok(obj),
            other => Err(format!(
                "cannot set the state ({}) of a {}",
                state.kind(),
                other.kind()
            )),
        }
    }
}

/// The element type of a storage class (`torch.HalfStorage`), or of a dtype
/// (`torch.float16`) where a writer put one in its place. Torch matches
/// storage classes by name alone (`StorageType` in torch/serialization.py),
/// so `torch.cuda.FloatStorage` from old GPU checkpoints works too.
fn storage_dtype(module: &str, name: &str) -> Option<Dtype> {
    let by_class = match name {
        "FloatStorage" => Some(Dtype::F32),
        "HalfStorage" => Some(Dtype::F16),
        "BFloat16Storage" => Some(Dtype::BF16),
        "DoubleStorage" => Some(Dtype::F64),
        "LongStorage" => Some(Dtype::I64),
        "IntStorage" => Some(Dtype::I32),
        "ShortStorage" => Some(Dtype::I16),
        "CharStorage" => Some(Dtype::I8),
        "ByteStorage" => Some(Dtype::U8),
        "BoolStorage" => Some(Dtype::Bool),
        // torch loads untyped storages as bytes.
        "UntypedStorage" => Some(Dtype::U8),
        _ => None,
    };
    if by_class.is_some() {
        return by_class;
    }
    if module != "torch" {
        return None;
    }
    match name {
        "float32" | "float" => Some(Dtype::F32),
        "float16" | "half" => Some(Dtype::F16),
        "bfloat16" => Some(Dtype::BF16),
        "float64" | "double" => Some(Dtype::F64),
        "int64" | "long" => Some(Dtype::I64),
        "int32" | "int" => Some(Dtype::I32),
        "int16" | "short" => Some(Dtype::I16),
        "int8" => Some(Dtype::I8),
        "uint8" => Some(Dtype::U8),
        "bool" => Some(Dtype::Bool),
        _ => None,
    }
}

fn int(value: &V, what: &str) -> Result<i64, String> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(format!("{what} is a {}, not an int", other.kind())),
    }
}

fn ints(value: &V, what: &str) -> Result<Vec<i64>, String> {
    let items: Vec<V> = match value {
        Value::Tuple(items) => items.to_vec(),
        Value::List(items) => items.borrow().clone(),
        other => return Err(format!("{what} is a {}, not a tuple", other.kind())),
    };
    items.iter().map(|v| int(v, what)).collect()
}

fn as_tensor(value: &V) -> Result<V, String> {
    match value {
        Value::Ext(Torch::Tensor(_)) => Ok(value.clone()),
        other => Err(format!("expected a tensor, got a {}", other.kind())),
    }
}

/// `_rebuild_tensor(storage, storage_offset, size, stride)`, checked so that
/// the view lies inside its storage and every later size computation fits
/// in an i64.
fn rebuild_tensor(args: &[V]) -> Result<V, String> {
    let [storage, offset, size, stride] = args else {
        return Err("_rebuild_tensor needs 4 arguments".into());
    };
    let Value::Ext(Torch::Storage { dtype, bytes }) = storage else {
        return Err(format!(
            "tensor storage is a {}, not a storage",
            storage.kind()
        ));
    };
    let offset = int(offset, "storage offset")?;
    let shape = ints(size, "tensor size")?;
    let strides = ints(stride, "tensor stride")?;
    if shape.len() != strides.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {strides:?} differ in rank"
        ));
    }
    let bad = || {
        format!("tensor view (offset {offset}, size {shape:?}, stride {strides:?}) does not fit its storage")
    };
    if offset < 0 || shape.iter().chain(&strides).any(|&v| v < 0) {
        return Err(bad());
    }
    shape
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(bad)?;
    let storage_len = i64::try_from(bytes.len() / dtype.size_in_bytes()).map_err(|_| bad())?;
    if !shape.contains(&0) {
        let last = shape
            .iter()
            .zip(&strides)
            .try_fold(offset, |acc, (&d, &s)| {
                (d - 1)
                    .checked_mul(s)
                    .and_then(|step| acc.checked_add(step))
            });
        if last.is_none_or(|last| last >= storage_len) {
            return Err(bad());
        }
    }
    let raw = RawTensor {
        dtype: *dtype,
        shape,
        strides,
        storage_offset: offset,
        bytes: bytes.clone(),
    };
    if !raw.in_bounds() {
        return Err(format!(
            "tensor view (offset {}, size {:?}, stride {:?}) does not fit its storage",
            raw.storage_offset, raw.shape, raw.strides
        ));
    }
    Ok(Value::Ext(Torch::Tensor(Rc::new(raw))))
}

/// Enough for any real checkpoint, small enough that a pickle sharing one
/// dict many times over (a DAG exponential in its depth) fails fast.
const VISIT_BUDGET: usize = 1 << 20;
const MAX_DEPTH: usize = 32;

/// Collects the tensors of a dict, recursing into nested dicts. Other
/// values (an `epoch` counter, a config string) are not weights and are
/// skipped.
fn flatten(
    value: &V,
    prefix: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<(String, RawTensor)>,
) -> Result<(), String> {
    let Value::Dict(dict) = value else {
        return Ok(());
    };
    if depth >= MAX_DEPTH {
        return Err(format!("dicts nested more than {MAX_DEPTH} deep"));
    }
    for (key, item) in dict.borrow().iter() {
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| "data.pkl holds too many objects".to_string())?;
        let key = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(format!("a dict key is a {}, not a string", other.kind())),
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match item {
            Value::Ext(Torch::Tensor(raw)) => out.push((name, RawTensor::clone(raw))),
            Value::Dict(_) => flatten(item, &name, depth + 1, budget, out)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/torch_bin")
            .join(name)
    }

    fn read_fixture(name: &str) -> Vec<u8> {
        let path = fixture(name);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/fixtures/torch_bin.py to generate the fixtures",
                path.display()
            )
        })
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = read_fixture("state.bin");
        for len in 0..bytes.len() {
            assert!(
                read_tensors(Path::new("t.bin"), &bytes[..len]).is_err(),
                "length {len}"
            );
        }
    }

    /// Corrupting any single byte may still load (tensor data, padding) but
    /// must never panic or yield a view outside the file.
    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = read_fixture("state_protocol4.bin");
        for pos in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut copy = bytes.clone();
                copy[pos] ^= flip;
                if let Ok(tensors) = read_tensors(Path::new("t.bin"), &copy) {
                    for (name, raw) in tensors {
                        assert!(
                            raw.bytes.end <= copy.len() && raw.in_bounds(),
                            "{name} at {pos}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn views_share_storage_without_copying() {
        let bytes = read_fixture("state.bin");
        let tensors: HashMap<String, RawTensor> = read_tensors(Path::new("state.bin"), &bytes)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .collect();
        let (Some(base), Some(view), Some(tied)) = (
            tensors.get("encoder.weight"),
            tensors.get("encoder.weight_rows"),
            tensors.get("decoder.weight"),
        ) else {
            panic!(
                "fixture names changed: {:?}",
                tensors.keys().collect::<Vec<_>>()
            )
        };
        assert_eq!(view.bytes, base.bytes);
        assert!(view.storage_offset > 0);
        assert_eq!(tied.bytes, base.bytes);
        let Some(transposed) = tensors.get("encoder.weight_t") else {
            panic!("no encoder.weight_t")
        };
        assert_eq!(transposed.strides, [1, base.shape[1]]);
    }
}
