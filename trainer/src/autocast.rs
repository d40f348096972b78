//! Mixed-precision autocast regions with a chosen dtype.
//!
//! tch's `autocast` enables CUDA autocast with libtorch's default dtype, fp16. Imagen trains in
//! bf16 (no loss scaling needed, fp32's range), so the dtype is set through the native shim.

use std::ffi::c_int;

use tch::{Device, Kind};

use crate::error::{Result, TrainerError};
use crate::native::{self, check};

/// The device families autocast distinguishes (c10::DeviceType values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocastDevice {
    Cpu = 0,
    Cuda = 1,
}

impl AutocastDevice {
    pub fn of(device: Device) -> Self {
        match device {
            Device::Cuda(_) => AutocastDevice::Cuda,
            _ => AutocastDevice::Cpu,
        }
    }
}

/// c10::ScalarType codes of the dtypes autocast accepts.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::BFloat16 => Ok(15),
        other => Err(TrainerError::Native {
            what: "autocast".into(),
            message: format!("unsupported autocast dtype {other:?} (use Half, BFloat16 or Float)"),
        }),
    }
}

fn kind_of(code: c_int) -> Result<Kind> {
    match code {
        5 => Ok(Kind::Half),
        6 => Ok(Kind::Float),
        15 => Ok(Kind::BFloat16),
        other => Err(TrainerError::Native {
            what: "autocast".into(),
            message: format!("libtorch reported unexpected autocast dtype code {other}"),
        }),
    }
}

/// Sets the dtype that autocast regions on `device` compute in.
pub fn set_autocast_dtype(device: AutocastDevice, kind: Kind) -> Result<()> {
    let code = scalar_type(kind)?;
    // SAFETY: plain values cross the boundary.
    check("set autocast dtype", unsafe { native::imagen_autocast_set_dtype(device as c_int, code) })
}

/// The dtype that autocast regions on `device` compute in.
pub fn autocast_dtype(device: AutocastDevice) -> Result<Kind> {
    let mut code: c_int = -1;
    // SAFETY: the out pointer is valid for the call.
    check("get autocast dtype", unsafe {
        native::imagen_autocast_get_dtype(device as c_int, &mut code)
    })?;
    kind_of(code)
}

pub fn autocast_enabled(device: AutocastDevice) -> Result<bool> {
    let mut enabled = false;
    // SAFETY: the out pointer is valid for the call.
    check("autocast enabled", unsafe {
        native::imagen_autocast_is_enabled(device as c_int, &mut enabled)
    })?;
    Ok(enabled)
}

fn set_autocast_enabled(device: AutocastDevice, enabled: bool) -> Result<()> {
    // SAFETY: plain values cross the boundary.
    check("set autocast enabled", unsafe {
        native::imagen_autocast_set_enabled(device as c_int, enabled)
    })
}

/// An autocast region: enabled with `kind` while the guard lives, the previous state restored
/// when it drops (as `torch.autocast` does as a context manager).
#[must_use = "autocast is only active while the guard lives"]
pub struct Autocast {
    device: AutocastDevice,
    previous_enabled: bool,
    previous_kind: Kind,
}

impl Autocast {
    /// A bf16 region on `device` when `enabled` (the training step's mixed precision), else
    /// nothing: hold the result for the region's extent.
    pub fn bf16_if(enabled: bool, device: Device) -> Result<Option<Self>> {
        enabled.then(|| Self::enter(AutocastDevice::of(device), Kind::BFloat16)).transpose()
    }

    pub fn enter(device: AutocastDevice, kind: Kind) -> Result<Self> {
        let previous_enabled = autocast_enabled(device)?;
        let previous_kind = autocast_dtype(device)?;
        set_autocast_dtype(device, kind)?;
        set_autocast_enabled(device, true)?;
        // SAFETY: no arguments.
        unsafe { native::imagen_autocast_increment_nesting() };
        Ok(Self { device, previous_enabled, previous_kind })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: no arguments; clearing the cast-weight cache when the outermost region closes
        // mirrors torch.autocast.__exit__.
        if unsafe { native::imagen_autocast_decrement_nesting() } == 0 {
            unsafe { native::imagen_autocast_clear_cache() };
        }
        // Restoring values that were read from libtorch cannot fail.
        let _ = set_autocast_enabled(self.device, self.previous_enabled);
        let _ = set_autocast_dtype(self.device, self.previous_kind);
    }
}
