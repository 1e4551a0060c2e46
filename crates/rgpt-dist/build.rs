//! Builds the c10d shim (`shim/`) against the libtorch that torch-sys links,
//! the way torch-sys builds its own wrapper: Gloo always (its headers come
//! from the system's `libgloo-dev`, which `scripts/setup.sh` installs; the
//! torch wheel ships Gloo's library but not its headers), NCCL when libtorch
//! has CUDA and NCCL's header is found (the wheel's `nvidia/` packages), so
//! the NCCL path compiles without a GPU.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rustc-check-cfg=cfg(rgpt_nccl)");
    // torch-sys's build script exports its libtorch through `links = "tch"`.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)"),
    );
    // The integration tests check that the NCCL path was built wherever
    // libtorch has CUDA (decided here, where the test binary is built: it
    // may run on another machine).
    println!("cargo:rustc-env=RGPT_DIST_LIBTORCH_LIB={}", lib.display());
    println!(
        "cargo:rustc-env=RGPT_DIST_LIBTORCH_HAS_CUDA={}",
        lib.join("libtorch_cuda.so").is_file()
    );
    let torch = lib
        .parent()
        .expect("libtorch's lib has a parent")
        .to_path_buf();
    let includes = [
        torch.join("include"),
        torch.join("include/torch/csrc/api/include"),
    ];
    if !Path::new("/usr/include/gloo/config.h").is_file() {
        panic!(
            "Gloo's headers are missing (/usr/include/gloo); run scripts/setup.sh, \
             or install Debian's libgloo-dev"
        );
    }
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let build = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .warnings(false)
            .includes(&includes)
            .include("shim")
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            .define("USE_C10D_GLOO", None);
        build
    };
    let mut files = vec!["shim/c10d.cpp"];
    // The wheel's CUDA and NCCL headers live beside torch in site-packages:
    // nccl.h from nvidia-nccl, the runtime's from nvidia-cuda-runtime, and
    // the `crt/` and `nv/` headers those include from nvidia-cuda-crt and
    // nvidia-cuda-cccl (scripts/setup.sh installs the last two).
    let nvidia = torch.parent().map(|p| p.join("nvidia"));
    let nccl = nvidia.as_ref().and_then(|n| {
        let (nccl, cuda) = (n.join("nccl/include"), n.join("cu13/include"));
        let headers = [
            nccl.join("nccl.h"),
            cuda.join("cuda_runtime_api.h"),
            cuda.join("crt/host_config.h"),
            cuda.join("nv/target"),
        ];
        let cuda_libtorch = lib.join("libtorch_cuda.so").is_file();
        if cuda_libtorch && !headers.iter().all(|h| h.exists()) {
            println!(
                "cargo:warning=rgpt-dist builds without NCCL: libtorch has CUDA but the \
                 CUDA/NCCL headers are missing; run scripts/setup.sh"
            );
        }
        (cuda_libtorch && headers.iter().all(|h| h.exists())).then_some((nccl, cuda))
    });
    let mut shim = build();
    if let Some((nccl, cuda)) = &nccl {
        println!("cargo:rustc-cfg=rgpt_nccl");
        shim.define("USE_C10D_NCCL", None)
            .include(nccl)
            .include(cuda);
        files.push("shim/nccl.cpp");
    }
    shim.files(&files).compile("rgpt_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=torch_cuda");
        println!("cargo:rustc-link-lib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}
