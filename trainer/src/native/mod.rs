//! Safe access to the C++ shim in `trainer/native/`: the libtorch features tch does not bind.

mod ffi;

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

pub(crate) use ffi::*;

/// Whether the shim was compiled with c10d's ProcessGroupNCCL, and the NCCL header version.
pub fn nccl_build_info() -> Result<(bool, i64)> {
    let mut version = 0i64;
    // SAFETY: the pointer is valid for the call.
    check("nccl version", unsafe { ffi::imagen_nccl_version(&mut version) })?;
    Ok((unsafe { ffi::imagen_nccl_compiled() }, version))
}
