//! `--device` and `--dtype` as users write them.
use tch::{Device, Kind};

use crate::LlmError;

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present, else CPU).
pub fn parse_device(spec: &str) -> Result<Device, LlmError> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if cuda_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cuda" => require_cuda(spec, 0),
        _ => match spec
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(index) => require_cuda(spec, index),
            None => Err(LlmError::UnknownDevice(spec.to_string())),
        },
    }
}

fn require_cuda(spec: &str, index: usize) -> Result<Device, LlmError> {
    if cuda_available() && (index as i64) < tch::Cuda::device_count() {
        Ok(Device::Cuda(index))
    } else {
        Err(LlmError::CudaUnavailable(spec.to_string()))
    }
}

/// Whether CUDA can be used. The linker drops `libtorch_cuda.so` from our
/// binaries because no symbol of it is referenced, which leaves libtorch
/// without its CUDA backend; loading it here registers that backend, and
/// costs CPU-only runs nothing.
pub fn cuda_available() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        // SAFETY: loading libtorch's own CUDA library runs only its static
        // initialisers, which register the backend with the libtorch we use.
        let library = unsafe {
            libloading::os::unix::Library::open(
                Some("libtorch_cuda.so"),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        };
        match library {
            Ok(library) => {
                // Stays loaded for the life of the process.
                std::mem::forget(library);
                true
            }
            Err(_) => false,
        }
    });
    loaded && tch::Cuda::is_available()
}

/// Parses `f32`, `bf16` or `f16` (and their long names).
pub fn parse_dtype(spec: &str) -> Result<Kind, LlmError> {
    match spec {
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" | "half" => Ok(Kind::Half),
        _ => Err(LlmError::UnknownDtype(spec.to_string())),
    }
}
