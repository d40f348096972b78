//! CLIP score (Hessel et al. 2021, "CLIPScore"; torchmetrics' `CLIPScore`):
//! `100 * max(cos(image embedding, text embedding), 0)`.

use std::path::{Path, PathBuf};

use image::RgbImage;
use tch::{nn, Device, Kind, Tensor};
use tokenizers::Tokenizer;

use super::config::ClipConfig;
use super::model::ClipModel;
use super::preprocess::ClipPreprocess;
use crate::error::{EvalError, Result};
use crate::weights::load_safetensors;

/// What a user does to get CLIP weights; quoted by the missing-files error.
pub const CLIP_HINT: &str = "a CLIP model directory in Hugging Face's layout (config.json, \
model.safetensors, tokenizer.json, preprocessor_config.json), e.g. `huggingface-cli download \
openai/clip-vit-base-patch32 --local-dir clip-vit-base-patch32`";

/// A CLIP model with its tokenizer and image preprocessing.
#[derive(Debug)]
pub struct ClipScorer {
    model: ClipModel,
    _vs: nn::VarStore,
    tokenizer: Tokenizer,
    preprocess: ClipPreprocess,
    device: Device,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::Weights { path: path.to_path_buf(), message: e.to_string() })
}

impl ClipScorer {
    /// Loads `dir` (Hugging Face `CLIPModel` layout). preprocessor_config.json is optional
    /// (OpenAI's defaults).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let file = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(EvalError::Weights {
                    path: path.clone(),
                    message: format!("missing; CLIP score needs {CLIP_HINT}"),
                })
            }
        };
        let cfg: ClipConfig = read_json(&file("config.json")?)?;
        let vs = nn::VarStore::new(device);
        let model = ClipModel::new(vs.root(), &cfg)?;
        load_safetensors(&vs, &file("model.safetensors")?, "is this a CLIPModel checkpoint?")?;
        let tok_path = file("tokenizer.json")?;
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| EvalError::Weights { path: tok_path.clone(), message: e.to_string() })?;
        let pre = dir.join("preprocessor_config.json");
        let preprocess = if pre.is_file() { read_json(&pre)? } else { ClipPreprocess::default() };
        Ok(Self { model, _vs: vs, tokenizer, preprocess, device })
    }

    /// Token ids of a caption, with the tokenizer's start and end tokens, truncated to the
    /// context length (the end token kept).
    pub fn token_ids(&self, caption: &str) -> Result<Vec<i64>> {
        let enc = self
            .tokenizer
            .encode(caption, true)
            .map_err(|e| EvalError::Invalid(format!("tokenizing {caption:?}: {e}")))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        let max = self.model.config().text_config.max_position_embeddings as usize;
        if ids.len() > max {
            let last = *ids.last().expect("non-empty");
            ids.truncate(max);
            ids[max - 1] = last;
        }
        Ok(ids)
    }

    /// Cosine similarity of the image's and the caption's embeddings.
    pub fn cosine(&self, image: &RgbImage, caption: &str) -> Result<f64> {
        let pixels = self.preprocess.pixel_values(image).to_device(self.device);
        let img = self.model.image_features(&pixels);
        let txt = self.model.text_features(&self.token_ids(caption)?);
        Ok(cosine(&img, &txt))
    }

    /// CLIP score of one image and caption, in [0, 100].
    pub fn score(&self, image: &RgbImage, caption: &str) -> Result<f64> {
        Ok(100.0 * self.cosine(image, caption)?.max(0.0))
    }

    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    pub fn model(&self) -> &ClipModel {
        &self.model
    }
}

/// Cosine similarity of two `[1, D]` embeddings, in f64.
pub fn cosine(image_features: &Tensor, text_features: &Tensor) -> f64 {
    let cos = Tensor::cosine_similarity(
        &image_features.to_kind(Kind::Double),
        &text_features.to_kind(Kind::Double),
        1,
        1e-8,
    );
    cos.double_value(&[0])
}
