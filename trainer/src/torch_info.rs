//! What libtorch this binary runs on, and what it can see: for `imagen env` and start-up logs.

use serde::Serialize;

use crate::autocast::{autocast_dtype, AutocastDevice};
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct TorchInfo {
    /// The libtorch lib dir this binary was linked against (its rpath).
    pub libtorch_lib: String,
    pub cuda_available: bool,
    pub cudnn_available: bool,
    pub cuda_device_count: i64,
    pub nccl_compiled: bool,
    /// NCCL header version the shim was compiled against, e.g. 22809 for 2.28.9.
    pub nccl_header_version: i64,
    /// The dtype CUDA autocast regions use before imagen sets it (libtorch's default).
    pub cuda_autocast_default_dtype: String,
    pub cpu_threads: i32,
}

impl TorchInfo {
    pub fn probe() -> Result<Self> {
        let (nccl_compiled, nccl_header_version) = crate::native::nccl_build_info()?;
        Ok(Self {
            libtorch_lib: env!("IMAGEN_TORCH_LIB").to_owned(),
            cuda_available: tch::Cuda::is_available(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            cuda_device_count: tch::Cuda::device_count(),
            nccl_compiled,
            nccl_header_version,
            cuda_autocast_default_dtype: format!("{:?}", autocast_dtype(AutocastDevice::Cuda)?),
            cpu_threads: tch::get_num_threads(),
        })
    }
}
