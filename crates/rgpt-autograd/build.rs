//! Builds the autograd shim (`shim/`) against the libtorch torch-sys links,
//! the way torch-sys builds its own wrapper.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)"),
    );
    let torch = lib.parent().expect("libtorch's lib has a parent");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("shim/checkpoint.cpp")
        .compile("rgpt_autograd");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}
