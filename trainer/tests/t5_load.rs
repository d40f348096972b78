//! Loading Hugging Face folders: bad names and shapes are reported by name, full checkpoints
//! load, pickled weights are refused with a conversion hint.

use std::path::{Path, PathBuf};

use imagen_trainer::t5::{load::load_weights, Freeze, T5Config, T5Encoder};
use tch::{nn, Device, Tensor};

fn v1_0() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5/v1_0")
}

/// A copy of the v1.0 fixture folder whose weights are `edit`ed.
fn edited(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(v1_0().join("config.json"), dir.path().join("config.json")).unwrap();
    let mut tensors = Tensor::read_safetensors(v1_0().join("model.safetensors")).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> Result<(), String> {
    let cfg = T5Config::from_file(&dir.join("config.json")).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = T5Encoder::new(vs.root(), &cfg, Freeze::ALL).unwrap();
    load_weights(&enc, dir).map_err(|e| e.to_string())
}

#[test]
fn missing_unexpected_and_mismatched_names_are_all_reported() {
    let dir = edited(|t| {
        t.retain(|(n, _)| n != "encoder.block.1.layer.0.SelfAttention.k.weight");
        t.push((
            "encoder.block.7.layer.0.SelfAttention.q.weight".into(),
            Tensor::zeros([2, 2], tch::kind::FLOAT_CPU),
        ));
        let (_, w) = t.iter_mut().find(|(n, _)| n == "encoder.final_layer_norm.weight").unwrap();
        *w = Tensor::ones([31], tch::kind::FLOAT_CPU);
    });
    let err = load(dir.path()).unwrap_err();
    assert!(err.contains("missing (1): encoder.block.1.layer.0.SelfAttention.k.weight"), "{err}");
    assert!(
        err.contains("unexpected (1): encoder.block.7.layer.0.SelfAttention.q.weight"),
        "{err}"
    );
    assert!(err.contains("encoder.final_layer_norm.weight: file [31], model [32]"), "{err}");
}

#[test]
fn full_t5_checkpoint_loads_encoder_and_ignores_decoder() {
    let dir = edited(|t| {
        t.push((
            "decoder.block.0.layer.0.SelfAttention.q.weight".into(),
            Tensor::zeros([2, 2], tch::kind::FLOAT_CPU),
        ));
        t.push(("lm_head.weight".into(), Tensor::zeros([2, 2], tch::kind::FLOAT_CPU)));
        // Tied alias of shared.weight, as a full checkpoint may carry it instead.
        let shared = t.iter().position(|(n, _)| n == "shared.weight").unwrap();
        let (_, w) = t.remove(shared);
        t.push(("encoder.embed_tokens.weight".into(), w));
    });
    load(dir.path()).unwrap();
}

#[test]
fn pytorch_bin_is_refused_with_how_to_convert() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(v1_0().join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(err.contains("pytorch_model.bin") && err.contains("save_pretrained"), "{err}");
}

#[test]
fn unsupported_feed_forward_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"feed_forward_proj": "gated-silu"}"#)
        .unwrap();
    let err = T5Config::from_file(&dir.path().join("config.json")).unwrap_err().to_string();
    assert!(err.contains("gated-silu"), "{err}");
}

#[test]
fn freezing_keeps_frozen_parameters_out_of_training() {
    let cfg = T5Config::from_file(&v1_0().join("config.json")).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let freeze = Freeze { all: false, embedding: true, lowest_blocks: 1 };
    let enc = T5Encoder::new(vs.root(), &cfg, freeze).unwrap();
    let trainable: Vec<&str> = enc
        .named_parameters()
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        trainable
            .iter()
            .all(|n| n.starts_with("encoder.block.1.") || n.starts_with("encoder.final")),
        "{trainable:?}"
    );
    // Block 1 (2 norms + q k v o + wi wo) and the final norm.
    assert_eq!(trainable.len(), 9);
    assert_eq!(vs.trainable_variables().len(), 9);
    assert_eq!(vs.variables().len(), enc.named_parameters().len());
}
