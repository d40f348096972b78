//! Filling a var store from a safetensors file whose names are the PyTorch reference's.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::error::{EvalError, Result};

/// Copies every variable of `vs` from the tensor of the same name in `path` (any float dtype,
/// converted to f32). Tensors the model does not use are ignored; a missing tensor or a wrong
/// shape is an error naming it; `hint` ends the missing-tensor message.
pub fn load_safetensors(vs: &nn::VarStore, path: &Path, hint: &str) -> Result<()> {
    let bad = |message: String| EvalError::Weights { path: path.to_path_buf(), message };
    let file: HashMap<String, Tensor> = Tensor::read_safetensors(path)
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
                "{name} has shape {:?}, the model expects {:?}",
                src.size(),
                var.size()
            )));
        }
        var.f_copy_(&src.f_to_kind(Kind::Float)?)?;
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(bad(format!(
            "{} tensors are missing (first: {}); {hint}",
            missing.len(),
            missing[0]
        )));
    }
    Ok(())
}
