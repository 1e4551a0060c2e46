//! Every CUDA kernel source compiles with NVRTC to PTX for compute_80
//! (A100) and compute_90 (H100/H200), with every warning an error, on a
//! machine without a GPU: NVRTC comes with the torch wheel
//! (`nvidia/cu13/lib/libnvrtc.so.13`), its headers with the wheel's CUDA
//! packages. NVRTC's own builtins library is found through the loader
//! path, so the check runs in a child process whose `LD_LIBRARY_PATH`
//! holds that folder.
use std::path::PathBuf;
use std::process::Command;

/// The wheel's CUDA folder (`.../site-packages/nvidia/cu13`), from
/// `LIBTORCH` (`.../site-packages/torch`, set by scripts/setup.sh).
fn cuda_dir() -> PathBuf {
    let torch = std::env::var("LIBTORCH")
        .expect("LIBTORCH is not set: run scripts/setup.sh, which points cargo at the torch wheel");
    PathBuf::from(torch).join("../nvidia/cu13")
}

/// Runs the test `name` again in a child process whose loader path holds
/// NVRTC's folder, and says whether this is that child (which goes on to
/// run the test's body); the parent asserts the child passed.
fn in_child_with_nvrtc(name: &str) -> bool {
    if std::env::var_os("RGPT_NVRTC_CHILD").is_some() {
        return true;
    }
    let cuda = cuda_dir();
    assert!(
        cuda.join("lib/libnvrtc.so.13").is_file(),
        "no libnvrtc.so.13 under {}: scripts/setup.sh installs the torch wheel",
        cuda.display()
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .env("RGPT_NVRTC_CHILD", "1")
        .env("LD_LIBRARY_PATH", cuda.join("lib"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the NVRTC check failed (its output is above)"
    );
    false
}

#[test]
fn every_kernel_compiles_to_ptx_for_compute_80_and_90() {
    if !in_child_with_nvrtc("every_kernel_compiles_to_ptx_for_compute_80_and_90") {
        return;
    }
    let include = cuda_dir().join("include").display().to_string();
    for arch in ["compute_80", "compute_90"] {
        let ptx = rgpt_region::cuda::compile_mask_pool(arch, std::slice::from_ref(&include))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        let target = arch.replace("compute_", "sm_");
        assert!(
            text.contains(&format!(".target {target}")),
            "{arch}: no .target {target}"
        );
        for kernel in rgpt_region::cuda::MASK_POOL_KERNELS {
            assert!(
                text.contains(&format!(".entry {kernel}(")),
                "{arch}: no kernel {kernel}"
            );
        }
    }
}

/// A source with a warning (an unused variable) is refused, so the check
/// above would catch one in ours.
#[test]
fn a_warning_fails_the_compile() {
    if !in_child_with_nvrtc("a_warning_fails_the_compile") {
        return;
    }
    let clean = "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }";
    rgpt_region::cuda::compile(clean, "clean.cu", "compute_90", &[]).unwrap();
    let warned = "extern \"C\" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }";
    let error = rgpt_region::cuda::compile(warned, "warned.cu", "compute_90", &[])
        .expect_err("a source with a warning compiled");
    assert!(error.message.contains("warning"), "{error}");
}
