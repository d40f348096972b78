//! Which implementation applies the AdamW update.

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Result, TrainerError};
use crate::native::fused_adamw_available;

/// `train.optimizer_kernel`: the AdamW implementation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKernel {
    /// The fused kernel where this libtorch has one for the device, else the loop.
    #[default]
    Auto,
    /// libtorch's `_fused_adamw_` (what `torch.optim.AdamW(fused=True)` runs); an error where
    /// it is missing.
    Fused,
    /// Eight ATen ops per parameter, written out in `optim/adamw.rs`.
    Loop,
}

impl OptimizerKernel {
    /// Resolves `Auto` for `device`: `true` means fused.
    pub fn use_fused(self, device: Device) -> Result<bool> {
        match self {
            Self::Loop => Ok(false),
            Self::Auto => Ok(fused_adamw_available(device)),
            Self::Fused if fused_adamw_available(device) => Ok(true),
            Self::Fused => Err(TrainerError::Config {
                source_name: "[train]".into(),
                message: format!(
                    "optimizer_kernel = \"fused\", but this libtorch has no _fused_adamw_ kernel \
                     for {device:?}; use \"auto\" or \"loop\""
                ),
            }),
        }
    }
}
