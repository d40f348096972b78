//! The libtorch toolchain: tensors compute, the `imagen` binary links libtorch_cuda and finds
//! libtorch through its rpath.

use std::process::Command;

use tch::{Device, Kind, Tensor};

#[test]
fn tch_matmul_matches_closed_form() {
    // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
    let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]);
    let b = Tensor::from_slice(&[5f32, 6., 7., 8.]).view([2, 2]);
    let c = a.matmul(&b);
    assert_eq!(Vec::<f32>::try_from(c.view([-1])).unwrap(), vec![19., 22., 43., 50.]);
    // Autograd: d(sum(a@b))/da = ones @ b^T.
    let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]).set_requires_grad(true);
    a.matmul(&b).sum(Kind::Float).backward();
    assert_eq!(Vec::<f32>::try_from(a.grad().view([-1])).unwrap(), vec![11., 15., 11., 15.]);
    assert_eq!(c.device(), Device::Cpu);
}

fn imagen_binary() -> &'static str {
    env!("CARGO_BIN_EXE_imagen")
}

#[test]
fn imagen_binary_links_libtorch_cuda_and_has_rpath() {
    let bytes = std::fs::read(imagen_binary()).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    for lib in ["libtorch_cuda.so", "libtorch_cpu.so", "libc10.so"] {
        assert!(elf.libraries.contains(&lib), "{lib} not in DT_NEEDED: {:?}", elf.libraries);
    }
    let torch_lib = env!("IMAGEN_TORCH_LIB");
    let paths: Vec<&str> =
        elf.runpaths.iter().chain(elf.rpaths.iter()).flat_map(|p| p.split(':')).collect();
    assert!(paths.contains(&torch_lib), "rpath {paths:?} lacks {torch_lib}");
}

#[test]
fn imagen_runs_without_ld_library_path() {
    let out = Command::new(imagen_binary())
        .args(["env", "--json"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["nccl_compiled"], true);
    assert_eq!(info["cuda_autocast_default_dtype"], "Half");
    assert!(info["nccl_header_version"].as_i64().unwrap() >= 22800);
}

#[test]
fn help_lists_only_working_commands() {
    let out = Command::new(imagen_binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("config"), "{help}");
    assert!(help.contains("env"), "{help}");
}

#[test]
fn a_cuda_device_the_machine_lacks_is_refused_by_name_not_with_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cache = format!("text.cache_dir=\"{d}/cache\"");
    let run = format!("{d}/run");
    let commands: [(&[&str], &str); 3] = [
        (&["text", "encode", "--model", d, "--prompts", d, "--out", d, "--cuda", "99"], "--cuda"),
        (&["embed", "--set", &cache, "--cuda", "99"], "--cuda"),
        (&["train", "--run-dir", &run, "--set", "train.device=\"cuda:99\""], "train.device"),
    ];
    for (args, source) in commands {
        let out = Command::new(imagen_binary()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&format!("{source}: CUDA device 99, but only")), "{args:?}: {err}");
    }
}
