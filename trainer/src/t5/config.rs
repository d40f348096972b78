//! The T5 architecture as Hugging Face's `config.json` describes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// The feed-forward variant: T5 v1.0 uses ReLU, T5 v1.1 (and `t5-v1_1-xxl`) a gated GELU
/// (Shazeer 2020, "GLU Variants Improve Transformer").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForward {
    /// `wo(relu(wi(x)))`, parameters `wi`, `wo`.
    Relu,
    /// `wo(gelu_tanh(wi_0(x)) * wi_1(x))`, parameters `wi_0`, `wi_1`, `wo`.
    GatedGelu,
}

/// The fields of a Hugging Face `T5Config` that the encoder needs. Other keys of `config.json`
/// (decoder sizes, generation settings) are ignored, since a full T5 folder must load as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Token vocabulary size (rows of `shared.weight`). Default: 32128.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: i64,
    /// Model width. Default: 512.
    #[serde(default = "default_d_model")]
    pub d_model: i64,
    /// Width of one attention head. Default: 64.
    #[serde(default = "default_d_kv")]
    pub d_kv: i64,
    /// Inner width of the feed-forward block. Default: 2048.
    #[serde(default = "default_d_ff")]
    pub d_ff: i64,
    /// Number of encoder blocks. Default: 6.
    #[serde(default = "default_num_layers")]
    pub num_layers: i64,
    /// Number of attention heads. Default: 8.
    #[serde(default = "default_num_heads")]
    pub num_heads: i64,
    /// Buckets of the relative position bias. Default: 32.
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: i64,
    /// Distance beyond which relative positions share the last bucket. Default: 128.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: i64,
    /// Epsilon of the RMS layer norm. Default: 1e-6.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// "relu" (v1.0) or "gated-gelu" (v1.1). Default: "relu".
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
    /// Id of the padding token. Default: 0.
    #[serde(default)]
    pub pad_token_id: i64,
    /// Id of the end-of-sequence token. Default: 1.
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
}

fn default_vocab_size() -> i64 {
    32128
}
fn default_d_model() -> i64 {
    512
}
fn default_d_kv() -> i64 {
    64
}
fn default_d_ff() -> i64 {
    2048
}
fn default_num_layers() -> i64 {
    6
}
fn default_num_heads() -> i64 {
    8
}
fn default_num_buckets() -> i64 {
    32
}
fn default_max_distance() -> i64 {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff_proj() -> String {
    "relu".into()
}
fn default_eos() -> i64 {
    1
}

impl Default for T5Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all T5Config fields have defaults")
    }
}

impl T5Config {
    /// Reads `config.json` of a Hugging Face folder and checks it describes an encoder we build.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TrainerError::Io { path: path.to_owned(), source })?;
        let cfg: T5Config = serde_json::from_str(&text).map_err(|e| TrainerError::Model {
            path: path.to_owned(),
            message: format!("not a T5 config.json: {e}"),
        })?;
        cfg.feed_forward()
            .map_err(|message| TrainerError::Model { path: path.to_owned(), message })?;
        Ok(cfg)
    }

    /// The feed-forward variant named by `feed_forward_proj`, as Hugging Face parses it
    /// ("gated-gelu" means gated with `gelu_new`, the tanh approximation).
    pub fn feed_forward(&self) -> Result<FeedForward, String> {
        match self.feed_forward_proj.as_str() {
            "relu" => Ok(FeedForward::Relu),
            "gated-gelu" => Ok(FeedForward::GatedGelu),
            other => Err(format!(
                "feed_forward_proj {other:?} is not supported (expected \"relu\" or \"gated-gelu\")"
            )),
        }
    }

    /// Width of all heads together (`num_heads * d_kv`), which need not equal `d_model`.
    pub fn inner_dim(&self) -> i64 {
        self.num_heads * self.d_kv
    }

    /// The config as Hugging Face writes it, so that `T5EncoderModel.from_pretrained` reads it.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("T5Config serialises");
        let obj = v.as_object_mut().expect("an object");
        obj.insert("model_type".into(), "t5".into());
        obj.insert("architectures".into(), serde_json::json!(["T5EncoderModel"]));
        obj.insert("is_gated_act".into(), (self.feed_forward_proj == "gated-gelu").into());
        obj.insert(
            "dense_act_fn".into(),
            if self.feed_forward_proj == "gated-gelu" { "gelu_new" } else { "relu" }.into(),
        );
        obj.insert("tie_word_embeddings".into(), (self.feed_forward_proj != "gated-gelu").into());
        obj.insert("dropout_rate".into(), 0.0.into());
        obj.insert("num_decoder_layers".into(), self.num_layers.into());
        obj.insert("decoder_start_token_id".into(), self.pad_token_id.into());
        v
    }
}
