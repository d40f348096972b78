//! Loading Hugging Face T5 weights (`model.safetensors` or a sharded
//! `model.safetensors.index.json`) into a [`T5Encoder`], checking every name and shape.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tch::Tensor;

use super::encoder::T5Encoder;
use crate::error::{Result, TrainerError};
use crate::tensor_file::kind_of;

/// The safetensors files holding a model folder's weights, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|source| TrainerError::Io { path: index.clone(), source })?;
        let bad = |message: String| TrainerError::Model { path: index.clone(), message };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let message = if dir.join("pytorch_model.bin").exists()
        || dir.join("pytorch_model.bin.index.json").exists()
    {
        "only pytorch_model.bin found; pickled weights are not read. Convert once with: python -c \
         \"from transformers import T5EncoderModel as M; M.from_pretrained('DIR').save_pretrained('DIR')\" \
         (writes model.safetensors)"
            .to_owned()
    } else {
        "no model.safetensors or model.safetensors.index.json".to_owned()
    };
    Err(TrainerError::Model { path: dir.to_owned(), message })
}

/// Copies the weights of a Hugging Face folder into `encoder`. Reads only `shared.weight` and
/// `encoder.*` (a full encoder-decoder checkpoint loads as it is); `encoder.embed_tokens.weight`
/// is the tied alias of `shared.weight`. Missing, unexpected and mis-shaped names are all
/// reported, by name, in one error.
pub fn load_weights(encoder: &T5Encoder, dir: &Path) -> Result<()> {
    let targets: HashMap<&str, &Tensor> =
        encoder.named_parameters().iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut loaded = BTreeSet::new();
    let mut unexpected = Vec::new();
    let mut mismatched = Vec::new();
    let files = weight_files(dir)?;
    for file in &files {
        let handle =
            File::open(file).map_err(|source| TrainerError::Io { path: file.clone(), source })?;
        // SAFETY: the file is only read; a concurrent writer would be a user error that at worst
        // yields wrong weights, which the shape checks and parity tests do not hide.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }
            .map_err(|source| TrainerError::Io { path: file.clone(), source })?;
        let tensors = SafeTensors::deserialize(&mmap).map_err(|e| TrainerError::Model {
            path: file.clone(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        for (name, view) in tensors.tensors() {
            let canonical =
                if name == "encoder.embed_tokens.weight" { "shared.weight" } else { name.as_str() };
            let Some(target) = targets.get(canonical) else {
                if name == "shared.weight" || name.starts_with("encoder.") {
                    unexpected.push(name);
                }
                continue;
            };
            if loaded.contains(canonical) {
                continue;
            }
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != target.size() {
                mismatched.push(format!("{name}: file {shape:?}, model {:?}", target.size()));
                loaded.insert(canonical.to_owned()); // reported as mismatched, not as missing
                continue;
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| TrainerError::Model {
                path: file.clone(),
                message: format!("{name}: unsupported dtype {:?}", view.dtype()),
            })?;
            let source = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            tch::no_grad(|| target.shallow_clone().f_copy_(&source))?;
            loaded.insert(canonical.to_owned());
        }
    }
    let missing: Vec<&str> = targets
        .keys()
        .copied()
        .filter(|n| !loaded.contains(*n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    for (what, list) in [
        ("missing", missing.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what} ({}): {}", list.len(), abbreviate(&list)));
        }
    }
    Err(TrainerError::Model {
        path: dir.to_owned(),
        message: format!(
            "weights do not match the T5 config ({} layers, d_model {}): {}",
            encoder.config().num_layers,
            encoder.config().d_model,
            parts.join("; ")
        ),
    })
}

/// The first few names of a list, then how many more.
fn abbreviate(list: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = list.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(", and {} more", list.len() - SHOWN));
    }
    s
}
