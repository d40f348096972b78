//! Loading an exported pytorch-fid state dict (safetensors) into a [`FidInception`].

use std::path::Path;

use tch::{nn, Device, Kind};

use super::{FidDims, FidInception};
use crate::error::{EvalError, Result};

/// Builds the network for `dims` on `device` and fills it from `weights`, a safetensors file of
/// `InceptionV3([3]).state_dict()` (or any export containing the blocks `dims` needs). Tensors of
/// any float dtype are converted to f32; `num_batches_tracked` and blocks past the needed one are
/// ignored. Returns the model and the var store that owns its weights.
pub fn load_fid_inception(
    weights: &Path,
    dims: FidDims,
    device: Device,
) -> Result<(FidInception, nn::VarStore)> {
    if !weights.exists() {
        return Err(EvalError::MissingWeights { path: weights.to_path_buf() });
    }
    let bad = |message: String| EvalError::Weights { path: weights.to_path_buf(), message };
    let vs = nn::VarStore::new(device);
    let model = FidInception::new(vs.root(), dims);
    let file: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(weights)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect();
    let _guard = tch::no_grad_guard();
    let mut missing = Vec::new();
    for (name, mut var) in vs.variables() {
        let Some(src) = file.get(&name) else {
            missing.push(name);
            continue;
        };
        if src.size() != var.size() {
            return Err(bad(format!(
                "{name} has shape {:?}, the FID Inception expects {:?}",
                src.size(),
                var.size()
            )));
        }
        var.f_copy_(&src.f_to_kind(Kind::Float)?)?;
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(bad(format!(
            "{} tensors of pytorch-fid's InceptionV3 state dict are missing (first: {}); \
             is this an export of InceptionV3([3]).state_dict()?",
            missing.len(),
            missing[0]
        )));
    }
    Ok((model, vs))
}
