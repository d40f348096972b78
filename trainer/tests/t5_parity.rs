//! The Rust T5 encoder and tokenizer against Hugging Face transformers, on the fixtures that
//! scripts/make_t5_fixtures.py writes (random-weight v1.0 and v1.1 encoders, a Unigram tokenizer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use imagen_trainer::t5::{load::load_weights, Freeze, T5Config, T5Encoder, T5Tokenizer};
use tch::{nn, Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5")
}

struct Captions {
    max_length: usize,
    truncated: usize,
    captions: Vec<String>,
}

fn captions() -> Captions {
    let text = std::fs::read_to_string(fixtures().join("captions.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Captions {
        max_length: v["max_length"].as_u64().unwrap() as usize,
        truncated: v["truncated"].as_u64().unwrap() as usize,
        captions: v["captions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().into())
            .collect(),
    }
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join(format!("expected_{name}.safetensors")))
        .unwrap()
        .into_iter()
        .collect()
}

fn encoder(dir: &Path, kind: Kind) -> (nn::VarStore, T5Encoder) {
    let cfg = T5Config::from_file(&dir.join("config.json")).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let enc = T5Encoder::new(vs.root(), &cfg, Freeze::ALL).unwrap();
    load_weights(&enc, dir).unwrap();
    vs.set_kind(kind);
    (vs, enc)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}

#[test]
fn tokenizer_matches_hugging_face_ids_mask_and_truncation() {
    let c = captions();
    let exp = expected("v1_0");
    let tok = T5Tokenizer::from_file(&fixtures().join("tokenizer.json"), c.max_length, 0).unwrap();
    let tokens = tok.tokenize(&c.captions).unwrap();
    assert_eq!(tokens.truncated, c.truncated);
    assert_eq!(tokens.ids[2], vec![1], "an empty caption is just </s>");
    let (ids, mask) = tok.pad(&tokens, c.max_length, Device::Cpu);
    assert_eq!(ids, exp["input_ids"]);
    assert_eq!(mask, exp["attention_mask"]);
}

fn check_fp32(name: &str) {
    let exp = expected(name);
    let (_vs, enc) = encoder(&fixtures().join(name), Kind::Float);
    let out = tch::no_grad(|| enc.forward(&exp["input_ids"], &exp["attention_mask"]));
    assert_eq!(out.size(), exp["last_hidden_state"].size());
    let err = max_abs(&out, &exp["last_hidden_state"]);
    eprintln!("{name}: fp32 max abs error {err}");
    assert!(err < 1e-5, "{name}: max abs error {err}");
}

#[test]
fn v1_0_relu_encoder_matches_hugging_face_fp32() {
    check_fp32("v1_0");
}

#[test]
fn v1_1_gated_gelu_sharded_encoder_matches_hugging_face_fp32() {
    check_fp32("v1_1");
}

#[test]
fn v1_1_bf16_encoder_is_close_to_hugging_face_bf16() {
    let exp = expected("v1_1");
    let (_vs, enc) = encoder(&fixtures().join("v1_1"), Kind::BFloat16);
    let out = tch::no_grad(|| enc.forward(&exp["input_ids"], &exp["attention_mask"]));
    assert_eq!(out.kind(), Kind::BFloat16);
    // Both sides round to bf16 (8 bits of mantissa) after every op, in different fused orders.
    let err = max_abs(&out, &exp["last_hidden_state_bf16"]);
    let scale = exp["last_hidden_state"].abs().max().double_value(&[]);
    assert!(err < 0.03 * scale, "bf16 max abs error {err} (scale {scale})");
    eprintln!("bf16 max abs error {err} (scale {scale})");
    let vs_fp32 = max_abs(&out, &exp["last_hidden_state"]);
    assert!(vs_fp32 < 0.03 * scale, "bf16 vs fp32 max abs error {vs_fp32}");
}

#[test]
fn a_tokenizer_that_appends_no_end_of_sequence_token_is_refused() {
    // The fixture's tokenizer.json without its post-processor (the `</s>` T5 appends).
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("tokenizer.json")).unwrap()).unwrap();
    json["post_processor"] = serde_json::Value::Null;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = T5Tokenizer::from_file(&path, 16, 0).unwrap_err().to_string();
    assert!(err.contains("no T5 post-processor"), "{err}");
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    // The fixture itself tokenizes an empty caption to `</s>` alone, as Hugging Face's does.
    let tok = T5Tokenizer::from_file(&fixtures().join("tokenizer.json"), 16, 0).unwrap();
    assert_eq!(tok.tokenize(&[String::new()]).unwrap().ids, vec![vec![1]]);
}
