use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the text encoder takes part in training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextMode {
    /// Embeddings are read from the cache that `imagen embed` wrote (Imagen's setting).
    FrozenCached,
    /// The frozen encoder runs inside each step, without gradients; no cache needed.
    #[default]
    FrozenOnline,
    /// The encoder is trained with the U-Net (own learning rate and weight decay).
    Finetune,
}

/// Dtype of the frozen encoder's weights and compute, and of the embedding cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextDtype {
    #[default]
    Bf16,
    F32,
}

/// `[text]`: the T5 text encoder and how training uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// "frozen-cached", "frozen-online" or "finetune". Default: "frozen-online".
    pub mode: TextMode,
    /// Hugging Face T5 folder (config.json, tokenizer.json, model.safetensors or a sharded
    /// index). Default: "models/t5-demo" (what `imagen text make-demo` writes; demo only).
    pub model: PathBuf,
    /// Tokens per caption, EOS included; longer captions are truncated and counted. Default: 128.
    pub max_length: usize,
    /// Embedding cache directory, written by `imagen embed` and read in "frozen-cached" mode.
    /// Required by `imagen embed` and in "frozen-cached" mode. Default: none.
    pub cache_dir: Option<PathBuf>,
    /// "bf16" or "f32": frozen encoder weights and compute, and cache storage. The fine-tuned
    /// encoder keeps the trained model's dtype. Default: "bf16".
    pub dtype: TextDtype,
    /// Learning rate of the encoder in "finetune" mode; none means the U-Net's. Default: none.
    pub finetune_lr: Option<f64>,
    /// Weight decay of the encoder in "finetune" mode. Default: 0.0.
    pub finetune_weight_decay: f64,
    /// In "finetune" mode, keep the token embedding `shared.weight` frozen. Default: false.
    pub freeze_embedding: bool,
    /// In "finetune" mode, keep blocks 0..N frozen (block 0 holds the position bias).
    /// Default: 0.
    pub freeze_lowest_blocks: usize,
    /// Captions per encoder call in `imagen embed`. Default: 64.
    pub embed_batch_size: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            mode: TextMode::default(),
            model: PathBuf::from("models/t5-demo"),
            max_length: crate::t5::DEFAULT_MAX_LENGTH,
            cache_dir: None,
            dtype: TextDtype::default(),
            finetune_lr: None,
            finetune_weight_decay: 0.0,
            freeze_embedding: false,
            freeze_lowest_blocks: 0,
            embed_batch_size: 64,
        }
    }
}

impl TextConfig {
    /// The architecture of the encoder `text.model` names (its `config.json`). A folder without
    /// one is refused naming the setting, with how to make the demo encoder.
    pub fn encoder_config(&self) -> crate::error::Result<crate::t5::T5Config> {
        let path = self.model.join("config.json");
        if !path.is_file() {
            return Err(crate::error::TrainerError::Model {
                path: self.model.clone(),
                message: format!(
                    "text.model: no config.json {}; point text.model at a Hugging Face T5 folder \
                     (config.json, tokenizer.json, model.safetensors), or make the DEMO-ONLY \
                     encoder there with `imagen text make-demo --captions FILE --out {}`",
                    if self.model.is_dir() { "in this folder" } else { "(no such folder)" },
                    self.model.display()
                ),
            });
        }
        crate::t5::T5Config::from_file(&path)
    }
}
