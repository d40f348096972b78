//! Host-to-GPU copies through pinned memory (`trainer/native/transfer.cpp`), so that the step's
//! inputs are queued behind the previous step's kernels instead of waiting for them.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Once;

use tch::{Device, Tensor};

use super::check;

extern "C" {
    fn imagen_to_cuda_async(
        tensor: *const c_void,
        device: c_int,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// `host` on `device`: on a CUDA device through pinned memory and an asynchronous copy (as
/// PyTorch's `DataLoader(pin_memory=True)` with `.to(device, non_blocking=True)`), elsewhere as
/// `to_device`. Should pinning fail, the ordinary copy is made and the reason logged once.
/// `host` must not change until the copy has run; the callers pass tensors made for the copy.
pub fn to_device_async(host: &Tensor, device: Device) -> Tensor {
    let Device::Cuda(index) = device else {
        return host.to_device(device);
    };
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: the handle is valid for the call; on success `out` is a new handle, now ours.
    let copied = check("pinned copy to the GPU", unsafe {
        imagen_to_cuda_async(host.as_ptr().cast(), index as c_int, &mut out)
    });
    match copied {
        Ok(()) => unsafe { Tensor::from_ptr(out.cast()) },
        Err(e) => {
            static WARN: Once = Once::new();
            WARN.call_once(|| tracing::warn!("{e}; copying from pageable memory instead"));
            host.to_device(device)
        }
    }
}
