//! Hugging Face's `CLIPModel` (text and vision towers and their projections), inference only,
//! with its parameter names (`text_model.encoder.layers.0.self_attn.q_proj.weight`, ...).

use tch::{nn, nn::Module, Kind, Tensor};

use super::config::ClipConfig;
use super::encoder::{layer_norm, Activation, Encoder, EncoderSpec};
use crate::error::{EvalError, Result};

#[derive(Debug)]
struct TextTower {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
    encoder: Encoder,
    final_layer_norm: nn::LayerNorm,
}

#[derive(Debug)]
struct VisionTower {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: nn::Embedding,
    pre_layrnorm: nn::LayerNorm,
    encoder: Encoder,
    post_layernorm: nn::LayerNorm,
}

/// CLIP's two towers and projections.
#[derive(Debug)]
pub struct ClipModel {
    text: TextTower,
    vision: VisionTower,
    visual_projection: nn::Linear,
    text_projection: nn::Linear,
    cfg: ClipConfig,
}

fn activation(name: &str) -> Result<Activation> {
    Activation::from_name(name)
        .ok_or_else(|| EvalError::Invalid(format!("unsupported CLIP hidden_act {name:?}")))
}

impl ClipModel {
    pub fn new(p: nn::Path, cfg: &ClipConfig) -> Result<Self> {
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let tp = &p / "text_model";
        let te = &tp / "embeddings";
        let text = TextTower {
            token_embedding: nn::embedding(
                &te / "token_embedding",
                t.vocab_size,
                t.hidden_size,
                Default::default(),
            ),
            position_embedding: nn::embedding(
                &te / "position_embedding",
                t.max_position_embeddings,
                t.hidden_size,
                Default::default(),
            ),
            encoder: Encoder::new(
                &tp / "encoder",
                EncoderSpec {
                    hidden: t.hidden_size,
                    intermediate: t.intermediate_size,
                    layers: t.num_hidden_layers,
                    heads: t.num_attention_heads,
                    eps: t.layer_norm_eps,
                    act: activation(&t.hidden_act)?,
                },
            ),
            final_layer_norm: layer_norm(&tp / "final_layer_norm", t.hidden_size, t.layer_norm_eps),
        };
        let vp = &p / "vision_model";
        let ve = &vp / "embeddings";
        let patches = (v.image_size / v.patch_size).pow(2);
        let vision = VisionTower {
            class_embedding: ve.zeros_no_train("class_embedding", &[v.hidden_size]),
            patch_embedding: (&ve / "patch_embedding")
                .zeros_no_train("weight", &[v.hidden_size, 3, v.patch_size, v.patch_size]),
            position_embedding: nn::embedding(
                &ve / "position_embedding",
                patches + 1,
                v.hidden_size,
                Default::default(),
            ),
            pre_layrnorm: layer_norm(&vp / "pre_layrnorm", v.hidden_size, v.layer_norm_eps),
            encoder: Encoder::new(
                &vp / "encoder",
                EncoderSpec {
                    hidden: v.hidden_size,
                    intermediate: v.intermediate_size,
                    layers: v.num_hidden_layers,
                    heads: v.num_attention_heads,
                    eps: v.layer_norm_eps,
                    act: activation(&v.hidden_act)?,
                },
            ),
            post_layernorm: layer_norm(&vp / "post_layernorm", v.hidden_size, v.layer_norm_eps),
        };
        let no_bias = nn::LinearConfig { bias: false, ..Default::default() };
        Ok(Self {
            text,
            vision,
            visual_projection: nn::linear(
                &p / "visual_projection",
                v.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
            text_projection: nn::linear(
                &p / "text_projection",
                t.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// Projected image embeddings `[B, projection_dim]` (`get_image_features`) of normalised
    /// pixel values `[B, 3, image_size, image_size]`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let v = &self.vision;
        let p = self.cfg.vision_config.patch_size;
        let patches = pixel_values
            .conv2d(&v.patch_embedding, None::<Tensor>, [p, p], [0, 0], [1, 1], 1)
            .flatten(2, -1)
            .transpose(1, 2);
        let b = patches.size()[0];
        let cls = v.class_embedding.view([1, 1, -1]).expand([b, 1, -1], false);
        let x = Tensor::cat(&[cls, patches], 1);
        let positions = Tensor::arange(x.size()[1], (Kind::Int64, x.device()));
        let x = (x + v.position_embedding.forward(&positions)).apply(&v.pre_layrnorm);
        let x = v.encoder.forward(&x, None);
        let pooled = x.select(1, 0).apply(&v.post_layernorm);
        pooled.apply(&self.visual_projection)
    }

    /// Projected text embedding `[1, projection_dim]` (`get_text_features`) of one token
    /// sequence (with its start and end tokens, at most `max_position_embeddings` long).
    pub fn text_features(&self, input_ids: &[i64]) -> Tensor {
        let _guard = tch::no_grad_guard();
        let t = &self.text;
        let device = t.token_embedding.ws.device();
        let n = input_ids.len() as i64;
        let ids = Tensor::from_slice(input_ids).view([1, n]).to_device(device);
        let positions = Tensor::arange(n, (Kind::Int64, device));
        let x = ids.apply(&t.token_embedding) + t.position_embedding.forward(&positions);
        let causal = Tensor::full([n, n], f64::NEG_INFINITY, (Kind::Float, device)).triu(1);
        let x = t.encoder.forward(&x, Some(&causal)).apply(&t.final_layer_norm);
        // transformers' pooling: the end token, which legacy configs (eos_token_id 2) find as
        // the largest id; without an end token, position 0 (argmax of all-false).
        let eos = self.cfg.text_config.eos_token_id;
        let at = if eos == 2 {
            (0..input_ids.len()).max_by_key(|&i| (input_ids[i], std::cmp::Reverse(i))).unwrap_or(0)
        } else {
            input_ids.iter().position(|&id| id == eos).unwrap_or(0)
        };
        x.select(1, at as i64).apply(&self.text_projection)
    }
}
