//! Safe access to the C++ shim in `trainer/native/`: the libtorch features tch does not bind.

mod activation_checkpoint;
mod ffi;
mod fused_adamw;
mod transfer;

use std::ffi::{c_char, CStr};

use crate::error::{Result, TrainerError};

/// Turns the shim's error convention (NULL or a malloc'd message) into a `Result`.
pub(crate) fn check(what: &str, err: *mut c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string allocated by the shim with malloc.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ffi::imagen_free(err.cast()) };
    Err(TrainerError::Native { what: what.to_owned(), message })
}

pub use activation_checkpoint::{checkpoint_recomputations, checkpointed, maybe_checkpointed};
pub(crate) use ffi::*;
pub use fused_adamw::{fused_adamw_available, fused_adamw_step, FusedAdamWStep};
pub use transfer::to_device_async;

/// libtorch's deterministic mode: deterministic algorithms where an op has one (a warning where
/// it has none), deterministic cuDNN, no cuDNN autotuning.
pub fn set_deterministic(deterministic: bool) -> Result<()> {
    // SAFETY: plain value.
    check("deterministic mode", unsafe { ffi::imagen_set_deterministic(deterministic) })
}

/// Whether libtorch's deterministic mode is on.
pub fn deterministic() -> bool {
    // SAFETY: no arguments.
    unsafe { ffi::imagen_deterministic() }
}

/// Whether the shim was compiled with c10d's ProcessGroupNCCL, and the NCCL header version.
pub fn nccl_build_info() -> Result<(bool, i64)> {
    let mut version = 0i64;
    // SAFETY: the pointer is valid for the call.
    check("nccl version", unsafe { ffi::imagen_nccl_version(&mut version) })?;
    Ok((unsafe { ffi::imagen_nccl_compiled() }, version))
}

/// CUDA caching-allocator figures of one device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    pub allocated: i64,
    pub peak: i64,
    pub reserved: i64,
}

/// Allocator statistics of CUDA device `device` (an error where there is no such device).
pub fn cuda_memory(device: usize) -> Result<CudaMemory> {
    let (mut allocated, mut peak, mut reserved) = (0i64, 0i64, 0i64);
    // SAFETY: out pointers are valid for the call.
    check("CUDA memory stats", unsafe {
        ffi::imagen_cuda_memory(device as std::ffi::c_int, &mut allocated, &mut peak, &mut reserved)
    })?;
    Ok(CudaMemory { allocated, peak, reserved })
}

/// Starts a new peak-memory window on CUDA device `device`.
pub fn cuda_reset_peak_memory(device: usize) -> Result<()> {
    // SAFETY: plain value.
    check("CUDA reset peak", unsafe {
        ffi::imagen_cuda_reset_peak_memory(device as std::ffi::c_int)
    })
}

/// GiB allocated on `device` when it is a CUDA device (for the training logs).
pub fn cuda_memory_allocated_gb(device: tch::Device) -> Option<f64> {
    match device {
        tch::Device::Cuda(i) => {
            cuda_memory(i).ok().map(|m| m.allocated as f64 / (1u64 << 30) as f64)
        }
        _ => None,
    }
}
