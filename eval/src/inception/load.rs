//! Loading an exported pytorch-fid state dict (safetensors) into a [`FidInception`].

use std::path::Path;

use tch::{nn, Device};

use super::{FidDims, FidInception};
use crate::error::{EvalError, Result};
use crate::weights::load_safetensors;

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
    let vs = nn::VarStore::new(device);
    let model = FidInception::new(vs.root(), dims);
    load_safetensors(
        &vs,
        weights,
        "is this an export of pytorch-fid's InceptionV3([3]).state_dict()?",
    )?;
    Ok((model, vs))
}
