use tch::Device;

use crate::config::Precision;
use crate::error::{Result, TrainerError};

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
        Device::Cuda(i) if i as i64 >= tch::Cuda::device_count() => {
            Err(bad(&format!("only {} CUDA device(s) visible", tch::Cuda::device_count())))
        }
        d => Ok(d),
    })
}

/// Whether the U-Net runs under bf16 autocast.
pub fn use_bf16(precision: Precision, device: Device) -> bool {
    match precision {
        Precision::Auto => device.is_cuda(),
        Precision::Bf16 => true,
        Precision::Fp32 => false,
    }
}
