//! Random initialisation as Hugging Face's `T5PreTrainedModel._init_weights` (factor 1.0), and
//! saving in Hugging Face layout. Used for the demo model; real runs load trained weights.

use std::path::Path;

use tch::Tensor;

use super::encoder::T5Encoder;
use crate::error::{Result, TrainerError};

/// Fills every parameter from a fixed seed: normal with the per-matrix standard deviations of
/// Mesh TensorFlow's T5 (which fold the 1/sqrt(d_kv) attention scale into `q`), layer norms 1.
pub fn init_random(encoder: &T5Encoder, seed: i64) {
    let cfg = encoder.config();
    let d_model = cfg.d_model as f64;
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (name, t) in encoder.named_parameters() {
            let std = if name.ends_with("layer_norm.weight") {
                let _ = t.shallow_clone().fill_(1.0);
                continue;
            } else if name == "shared.weight" {
                1.0
            } else if name.ends_with(".q.weight") {
                (d_model * cfg.d_kv as f64).powf(-0.5)
            } else if name.ends_with(".o.weight") {
                (cfg.inner_dim() as f64).powf(-0.5)
            } else if name.ends_with(".wo.weight") {
                (cfg.d_ff as f64).powf(-0.5)
            } else {
                // k, v, wi, wi_0, wi_1, relative_attention_bias
                d_model.powf(-0.5)
            };
            let _ = t.shallow_clone().normal_(0.0, std);
        }
    });
}

/// Writes the encoder's parameters as `model.safetensors` under their Hugging Face names.
pub fn save_safetensors(encoder: &T5Encoder, path: &Path) -> Result<()> {
    let named: Vec<(&str, Tensor)> = encoder
        .named_parameters()
        .iter()
        .map(|(n, t)| (n.as_str(), t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path).map_err(|e| TrainerError::Model {
        path: path.to_owned(),
        message: format!("cannot write weights: {e}"),
    })
}
