//! Compiles the native shim (trainer/native) against the libtorch that torch-sys found, with the
//! same C++ ABI flag, and links the `imagen` binary so that it runs without LD_LIBRARY_PATH and
//! sees CUDA on a GPU machine.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    // torch-sys (links = "tch") exports the lib dir it linked against.
    let torch_lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch lib dir"),
    );
    // LIBTORCH may be a link (.venv/torch); the CUDA header wheels sit beside the real package.
    let torch_lib = torch_lib.canonicalize().unwrap_or(torch_lib);
    let torch_dir = torch_lib.parent().expect("libtorch lib dir has a parent").to_path_buf();
    let site_packages = torch_dir.parent().expect("torch package has a parent").to_path_buf();

    // The torch wheel lacks the CUDA and NCCL headers that c10d's NCCL headers include; PyPI's
    // nvidia-cuda-crt, nvidia-cuda-cccl and nvidia-nccl-cu13 (installed by bootstrap) have them.
    let nvidia = site_packages.join("nvidia");
    let includes = [
        torch_dir.join("include"),
        torch_dir.join("include/torch/csrc/api/include"),
        nvidia.join("cu13/include"),
        nvidia.join("cu13/include/cccl"),
        nvidia.join("nccl/include"),
    ];
    for dir in &includes {
        require_dir(dir);
    }

    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    // native/shim.cpp includes the others, so that libtorch's headers are parsed once.
    let inputs = [
        "native/shim.cpp",
        "native/activation_checkpoint.cpp",
        "native/autocast.cpp",
        "native/store.cpp",
        "native/error.cpp",
        "native/cuda_memory.cpp",
        "native/determinism.cpp",
        "native/process_group.cpp",
        "native/fused_adamw.cpp",
        "native/transfer.cpp",
        "native/imagen_native.h",
        "native/error.h",
        "native/store.h",
    ];
    for file in inputs {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).std("c++17");
    // -isystem: libtorch's own headers warn under gcc; those warnings are not ours to fix.
    for dir in &includes {
        build.flag("-isystem").flag(dir.to_str().expect("UTF-8 include path"));
    }
    build
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_NCCL", None)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .file("native/shim.cpp")
        .compile("imagen_native");

    println!("cargo:rustc-link-search=native={}", torch_lib.display());
    for lib in ["torch", "torch_cpu", "c10", "c10_cuda"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    // Nothing references libtorch_cuda at link time, and rustc links with --as-needed, which
    // would drop it: then CUDA is silently unavailable on a GPU machine. Keep it explicitly.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    // An rpath to the wheel's lib dir, so users never set LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch_lib.display());
    println!("cargo:rustc-env=IMAGEN_TORCH_LIB={}", torch_lib.display());
}

fn require_dir(dir: &Path) {
    if !dir.is_dir() {
        panic!(
            "missing {}: run scripts/bootstrap.sh (it installs torch and the CUDA header wheels)",
            dir.display()
        );
    }
}
