//! Gives the crate's binaries (its tests) an rpath to the libtorch that torch-sys linked, so that
//! they run without LD_LIBRARY_PATH.

use std::env;
use std::path::PathBuf;

fn main() {
    // torch-sys (links = "tch") exports the lib dir it linked against.
    let torch_lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch lib dir"),
    );
    let torch_lib = torch_lib.canonicalize().unwrap_or(torch_lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch_lib.display());
}
