//! The CUDA mask-pool kernels (`cuda/mask_pool.cu`): their source, compiled
//! by NVRTC at first use for the device's architecture and cached per
//! device, and [`pool`], which launches them on libtorch's tensors. Built
//! with the `cuda` feature; the driver and NVRTC are loaded at run time
//! (cudarc's dynamic loading), so building needs no CUDA install and a
//! machine without a GPU never loads them.
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaModule, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{result, Ptx};
use tch::{Device, Kind, Tensor};

use crate::csr::RegionCsr;
use crate::RegionError;

/// The kernels' CUDA C++ source.
pub const MASK_POOL_SOURCE: &str = include_str!("cuda/mask_pool.cu");

/// Every kernel the source defines (`extern "C"` names).
pub const MASK_POOL_KERNELS: &[&str] = &[
    "rgpt_mask_pool_csr_f32",
    "rgpt_mask_pool_csr_bf16",
    "rgpt_mask_pool_csr_f16",
    "rgpt_mask_pool_box_f32",
    "rgpt_mask_pool_box_bf16",
    "rgpt_mask_pool_box_f16",
    "rgpt_mask_pool_csr_backward_f32",
];

/// Why a kernel could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("NVRTC could not compile {source_name} for {arch}: {message}")]
pub struct CompileError {
    /// The source's name (`mask_pool.cu`).
    pub source_name: String,
    pub arch: String,
    pub message: String,
}

/// Compiles the mask-pool source to PTX for `arch` (`compute_80`,
/// `compute_90`, ...), every warning an error. `include_paths` holds the
/// CUDA headers' folder (`cuda_bf16.h`, `cuda_fp16.h`).
pub fn compile_mask_pool(arch: &str, include_paths: &[String]) -> Result<Ptx, CompileError> {
    compile(MASK_POOL_SOURCE, "mask_pool.cu", arch, include_paths)
}

/// Compiles CUDA C++ `source` to PTX for `arch` with NVRTC. NVRTC has no
/// option that makes warnings errors, so its log is read: a warning in it
/// fails the compile as an error would.
pub fn compile(
    source: &str,
    name: &str,
    arch: &str,
    include_paths: &[String],
) -> Result<Ptx, CompileError> {
    let fail = |message: String| CompileError {
        source_name: name.to_string(),
        arch: arch.to_string(),
        message,
    };
    let source = CString::new(source).map_err(|e| fail(e.to_string()))?;
    let name = CString::new(name).map_err(|e| fail(e.to_string()))?;
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    options.extend(include_paths.iter().map(|p| format!("--include-path={p}")));
    let program = result::create_program(&source, Some(&name)).map_err(|e| fail(e.to_string()))?;
    // SAFETY: `program` was just created and is destroyed once, below;
    // nothing else holds it.
    let compiled = unsafe { result::compile_program(program, &options) };
    let log = unsafe { result::get_program_log(program) }
        .map(|chars| text(&chars))
        .unwrap_or_default();
    let ptx = compiled
        .map_err(|e| fail(format!("{e}: {log}")))
        .and_then(|()| {
            if log.contains("warning") {
                return Err(fail(format!("warnings are errors here: {log}")));
            }
            unsafe { result::get_ptx(program) }
                .map(|chars| Ptx::from_src(text(&chars)))
                .map_err(|e| fail(e.to_string()))
        });
    let _ = unsafe { result::destroy_program(program) };
    ptx
}

/// NVRTC's NUL-terminated text as a string.
fn text(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The compiled kernels per device ordinal.
static MODULES: OnceLock<Mutex<HashMap<usize, Arc<CudaModule>>>> = OnceLock::new();

/// Where NVRTC finds `cuda_bf16.h` and `cuda_fp16.h` at run time: the
/// folders in `RGPT_CUDA_INCLUDE` (colon-separated) when set, else the
/// include folder beside libtorch's CUDA libraries in a torch wheel
/// (`LIBTORCH` or `site-packages/torch` found from the loaded library),
/// else NVRTC's own.
fn include_paths() -> Vec<String> {
    if let Some(paths) = std::env::var_os("RGPT_CUDA_INCLUDE") {
        return std::env::split_paths(&paths)
            .map(|p| p.display().to_string())
            .collect();
    }
    std::env::var_os("LIBTORCH")
        .map(|torch| std::path::PathBuf::from(torch).join("../nvidia/cu13/include"))
        .filter(|p| p.is_dir())
        .map(|p| vec![p.display().to_string()])
        .unwrap_or_default()
}

/// The kernels for device `ordinal`, compiled for its architecture once
/// per process.
fn module(ordinal: usize) -> Result<(Arc<CudaContext>, Arc<CudaModule>), RegionError> {
    let driver = |e: cudarc::driver::DriverError| RegionError::Kernel(e.to_string());
    // The device's primary context: the one libtorch's runtime uses.
    let context = CudaContext::new(ordinal).map_err(driver)?;
    let modules = MODULES.get_or_init(Default::default);
    let mut modules = modules
        .lock()
        .map_err(|_| RegionError::Kernel("a thread panicked while compiling".into()))?;
    if let Some(module) = modules.get(&ordinal) {
        return Ok((context, Arc::clone(module)));
    }
    let (major, minor) = context.compute_capability().map_err(driver)?;
    let arch = format!("compute_{major}{minor}");
    let ptx = compile_mask_pool(&arch, &include_paths())
        .map_err(|e| RegionError::Kernel(e.to_string()))?;
    let module = context.load_module(ptx).map_err(driver)?;
    modules.insert(ordinal, Arc::clone(&module));
    Ok((context, module))
}

/// Pools `features` [B, C, H, W] (f32, bf16 or f16, on a CUDA device) over
/// the regions of `csr`: [regions, C] f32. All boxes take the box kernel,
/// anything else the CSR kernel.
///
/// Ordering with libtorch: the kernel is launched on the device's legacy
/// default stream, the stream libtorch uses unless a caller has made
/// another one current (a `CUDAStreamGuard`); work on the legacy default
/// stream waits for everything queued before it on every blocking stream,
/// and what follows waits for it, so the features (and the index tensors
/// copied here) are ready when it runs and the output is ready for
/// libtorch's next kernel. The output is allocated by libtorch, so its
/// caching allocator keeps it alive as long as the tensor.
pub fn pool(features: &Tensor, csr: &RegionCsr) -> Result<Tensor, RegionError> {
    let Device::Cuda(ordinal) = features.device() else {
        return Err(RegionError::Kernel(
            "it pools CUDA tensors only: move the features to a CUDA device".into(),
        ));
    };
    let (batch, channels, height, width) = features
        .size4()
        .map_err(|_| RegionError::FeatureShape(features.size()))?;
    if (height, width) != (csr.height, csr.width) {
        return Err(RegionError::MaskShape {
            height,
            width,
            found: vec![csr.regions() as i64, csr.height, csr.width],
        });
    }
    if let Some((region, &image)) = csr
        .image
        .iter()
        .enumerate()
        .find(|(_, &i)| !(0..batch).contains(&i64::from(i)))
    {
        return Err(RegionError::ImageIndex {
            region,
            image: i64::from(image),
            batch,
        });
    }
    let suffix = match features.kind() {
        Kind::Float => "f32",
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        other => {
            return Err(RegionError::Kernel(format!(
                "features in {other:?}: it pools f32, bf16 or f16"
            )))
        }
    };
    let device = features.device();
    let features = features.f_contiguous()?;
    let regions = csr.regions() as i64;
    // NaN until written: an element the kernel missed cannot pass for a
    // pooled zero (crates/rgpt-region/tests/cuda_pool.rs).
    let out = Tensor::f_full([regions, channels], f64::NAN, (Kind::Float, device))?;
    if regions == 0 {
        return Ok(out);
    }
    let image = Tensor::from_slice(&csr.image).f_to_device(device)?;
    let (context, module) = module(ordinal)?;
    let driver = |e: cudarc::driver::DriverError| RegionError::Kernel(e.to_string());
    let stream = context.default_stream();
    let pointer = |t: &Tensor| t.data_ptr() as u64;
    let (channels_arg, width_arg, cells_arg) = (channels as i32, width as i32, height * width);
    let config = LaunchConfig {
        grid_dim: (
            regions as u32,
            (channels as u32).div_ceil(CHANNELS_PER_BLOCK),
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (features_ptr, image_ptr, out_ptr) = (pointer(&features), pointer(&image), pointer(&out));
    match csr.boxes() {
        Some(boxes) => {
            let flat: Vec<i32> = boxes.into_iter().flatten().collect();
            let boxes = Tensor::from_slice(&flat).f_to_device(device)?;
            let boxes_ptr = pointer(&boxes);
            let function = module
                .load_function(&format!("rgpt_mask_pool_box_{suffix}"))
                .map_err(driver)?;
            let mut launch = stream.launch_builder(&function);
            launch
                .arg(&features_ptr)
                .arg(&boxes_ptr)
                .arg(&image_ptr)
                .arg(&out_ptr)
                .arg(&channels_arg)
                .arg(&width_arg)
                .arg(&cells_arg);
            // SAFETY: the arguments are the kernel's, in its order and
            // types (device pointers as 64-bit values); every tensor lives
            // until after the launch, which the stream orders before any
            // later use of its memory.
            unsafe { launch.launch(config) }.map_err(driver)?;
            drop(boxes);
        }
        None => {
            let row_ptr = Tensor::from_slice(&csr.row_ptr).f_to_device(device)?;
            let cells = Tensor::from_slice(&csr.cells).f_to_device(device)?;
            let weights = Tensor::from_slice(&csr.weights).f_to_device(device)?;
            let (row_ptr_ptr, cells_ptr, weights_ptr) =
                (pointer(&row_ptr), pointer(&cells), pointer(&weights));
            let function = module
                .load_function(&format!("rgpt_mask_pool_csr_{suffix}"))
                .map_err(driver)?;
            let mut launch = stream.launch_builder(&function);
            launch
                .arg(&features_ptr)
                .arg(&row_ptr_ptr)
                .arg(&cells_ptr)
                .arg(&weights_ptr)
                .arg(&image_ptr)
                .arg(&out_ptr)
                .arg(&channels_arg)
                .arg(&cells_arg);
            // SAFETY: as above.
            unsafe { launch.launch(config) }.map_err(driver)?;
        }
    }
    Ok(out)
}

/// The kernels' block: 8 warps over a tile of 32 channels
/// (`RGPT_WARPS`, `RGPT_CHANNELS_PER_BLOCK` in the source).
const THREADS: u32 = 256;
const CHANNELS_PER_BLOCK: u32 = 32;
