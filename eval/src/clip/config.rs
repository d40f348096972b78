//! The parts of a Hugging Face `CLIPConfig` (config.json) that the encoders need. Defaults are
//! those of `openai/clip-vit-base-patch32`; config.json's other fields are ignored.

use serde::Deserialize;

/// `config.json` of a `CLIPModel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    /// Width of the shared image-text embedding. Default 512.
    pub projection_dim: i64,
    /// Default: ViT-B/32's text tower.
    pub text_config: ClipTextConfig,
    /// Default: ViT-B/32's vision tower.
    pub vision_config: ClipVisionConfig,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            projection_dim: 512,
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
        }
    }
}

/// `text_config` of a `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Default 49408.
    pub vocab_size: i64,
    /// Default 512.
    pub hidden_size: i64,
    /// Default 2048.
    pub intermediate_size: i64,
    /// Default 12.
    pub num_hidden_layers: i64,
    /// Default 8.
    pub num_attention_heads: i64,
    /// Context length; longer texts are truncated. Default 77.
    pub max_position_embeddings: i64,
    /// "quick_gelu" (default) or "gelu".
    pub hidden_act: String,
    /// Default 1e-5.
    pub layer_norm_eps: f64,
    /// Token that ends a text, whose state is pooled; 2 (what OpenAI's configs say) means "the
    /// largest id", as in transformers. Default 49407.
    pub eos_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// `vision_config` of a `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Default 768.
    pub hidden_size: i64,
    /// Default 3072.
    pub intermediate_size: i64,
    /// Default 12.
    pub num_hidden_layers: i64,
    /// Default 12.
    pub num_attention_heads: i64,
    /// Input side. Default 224.
    pub image_size: i64,
    /// Default 32.
    pub patch_size: i64,
    /// "quick_gelu" (default) or "gelu".
    pub hidden_act: String,
    /// Default 1e-5.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}
