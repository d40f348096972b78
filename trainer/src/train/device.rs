use tch::Device;

use super::keep_freed_host_memory;
use crate::config::{Precision, TrainConfig};
use crate::error::{Result, TrainerError};

/// Process-wide settings of a training (or benchmarked) step on `device`: libtorch's CPU
/// threads, the host allocator, cuDNN's autotuning and the deterministic mode. Called before
/// the process's first CUDA computation (cuBLAS reads its workspace setting once) and before it
/// joins a process group: setting the environment while other threads read it is undefined.
pub fn prepare_process(train: &TrainConfig, device: Device) -> Result<()> {
    if train.threads > 0 {
        tch::set_num_threads(train.threads as i32);
    }
    keep_freed_host_memory();
    if train.deterministic && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        // cuBLAS's split-K reductions are deterministic only with a fixed workspace (the CUDA
        // toolkit's cuBLAS notes on reproducibility).
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    crate::native::set_deterministic(train.deterministic)?;
    if !train.deterministic && device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(train.cudnn_benchmark);
    }
    Ok(())
}

/// "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
pub fn resolve_device(spec: &str) -> Result<Device> {
    let bad = |why: &str| TrainerError::Config {
        source_name: "train.device".into(),
        message: format!("{spec:?}: {why}"),
    };
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => {
            let index = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad("expected auto, cpu, cuda or cuda:N"))?;
            Ok(Device::Cuda(index))
        }
    }
    .and_then(|device| match device {
        Device::Cuda(i) => visible_cuda(i, "train.device"),
        d => Ok(d),
    })
}

/// CUDA device `index`, refused in the name of `source` (the key or flag that asked for it)
/// unless this process sees it: on a machine without one, libtorch would panic at the first
/// tensor put there.
pub fn visible_cuda(index: usize, source: &str) -> Result<Device> {
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        return Err(TrainerError::Config {
            source_name: source.into(),
            message: format!("CUDA device {index}, but only {count} CUDA device(s) visible"),
        });
    }
    Ok(Device::Cuda(index))
}

/// Whether the U-Net runs under bf16 autocast.
pub fn use_bf16(precision: Precision, device: Device) -> bool {
    match precision {
        Precision::Auto => device.is_cuda(),
        Precision::Bf16 => true,
        Precision::Fp32 => false,
    }
}
