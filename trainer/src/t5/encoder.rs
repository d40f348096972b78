//! The T5 encoder stack, parameter names exactly those of Hugging Face's `T5EncoderModel`.

use std::sync::Arc;

use tch::{nn, Kind, Tensor};

use super::attention::T5Attention;
use super::config::T5Config;
use super::feed_forward::T5FeedForward;
use super::layer_norm::T5LayerNorm;
use super::param::{ParamSink, Params};
use super::position_bias::RelativePositionBias;
use crate::error::{Result, TrainerError};
use crate::native::maybe_checkpointed;

/// Which parameters are created frozen (for fine-tuning with a frozen embedding or frozen lower
/// blocks, or for a fully frozen encoder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freeze {
    /// Freeze everything.
    pub all: bool,
    /// Freeze the token embedding `shared.weight`.
    pub embedding: bool,
    /// Freeze blocks `0..lowest_blocks` (block 0 holds the shared position bias).
    pub lowest_blocks: usize,
}

impl Freeze {
    pub const ALL: Freeze = Freeze { all: true, embedding: true, lowest_blocks: usize::MAX };
}

#[derive(Debug)]
struct T5Block {
    attention_norm: T5LayerNorm,
    attention: T5Attention,
    ff_norm: T5LayerNorm,
    ff: T5FeedForward,
}

// SAFETY: as for the U-Net's blocks: built once, then only read by forward passes, which
// activation checkpointing may rerun on autograd's device thread.
unsafe impl Sync for T5Block {}

impl T5Block {
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Tensor {
        let x = x + self.attention.forward(&self.attention_norm.forward(x), bias);
        &x + self.ff.forward(&self.ff_norm.forward(&x))
    }
}

/// A T5 encoder: token embedding, blocks of (pre-norm self-attention, pre-norm feed-forward),
/// final RMS norm. Dropout is left out: the encoder is used for inference and fine-tuned
/// without it.
#[derive(Debug)]
pub struct T5Encoder {
    cfg: T5Config,
    shared: Tensor,
    position_bias: RelativePositionBias,
    blocks: Vec<Arc<T5Block>>,
    final_layer_norm: T5LayerNorm,
    named: Vec<(String, Tensor)>,
    /// Recompute each block in the backward pass (`train.activation_checkpointing`, when the
    /// encoder is fine-tuned).
    checkpoint_blocks: bool,
}

impl T5Encoder {
    /// Builds a zero-filled encoder under `path`, parameters of the VarStore's default dtype; fill it with [`super::load::load_weights`] or
    /// [`super::init::init_random`]. `path` plays the role of the model root: variables are named
    /// `shared.weight`, `encoder.block.0.layer.0.SelfAttention.q.weight`, ...
    pub fn new(path: nn::Path, cfg: &T5Config, freeze: Freeze) -> Result<Self> {
        let kind = path.kind();
        Self::with_kind(path, cfg, freeze, kind)
    }

    /// As [`T5Encoder::new`], with parameters of dtype `kind` (e.g. bf16 for a frozen encoder).
    pub fn with_kind(path: nn::Path, cfg: &T5Config, freeze: Freeze, kind: Kind) -> Result<Self> {
        let ff_kind = cfg.feed_forward().map_err(TrainerError::Text)?;
        let sink = ParamSink::default();
        let params =
            |trainable: bool| Params { sink: &sink, trainable: !freeze.all && trainable, kind };
        let block_params = |i: usize| params(i >= freeze.lowest_blocks);
        let shared = params(!freeze.embedding).add(
            &(&path / "shared"),
            "weight",
            &[cfg.vocab_size, cfg.d_model],
        );
        let enc = &path / "encoder";
        let eps = cfg.layer_norm_epsilon;
        let position_bias = RelativePositionBias::new(
            &enc / "block" / 0 / "layer" / 0 / "SelfAttention" / "relative_attention_bias",
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
            cfg.num_heads,
            block_params(0),
        );
        let blocks = (0..cfg.num_layers as usize)
            .map(|i| {
                let layer = &enc / "block" / i / "layer";
                let p = block_params(i);
                Arc::new(T5Block {
                    attention_norm: T5LayerNorm::new(
                        &layer / 0 / "layer_norm",
                        cfg.d_model,
                        eps,
                        p,
                    ),
                    attention: T5Attention::new(&layer / 0 / "SelfAttention", cfg, p),
                    ff_norm: T5LayerNorm::new(&layer / 1 / "layer_norm", cfg.d_model, eps, p),
                    ff: T5FeedForward::new(&layer / 1 / "DenseReluDense", cfg, ff_kind, p),
                })
            })
            .collect();
        let final_layer_norm =
            T5LayerNorm::new(&enc / "final_layer_norm", cfg.d_model, eps, params(true));
        // Hugging Face names are the VarStore names relative to `path`.
        let prefix_len = path.path("x").len() - 1;
        let named =
            sink.into_inner().into_iter().map(|(n, t)| (n[prefix_len..].to_owned(), t)).collect();
        Ok(Self {
            cfg: cfg.clone(),
            shared,
            position_bias,
            blocks,
            final_layer_norm,
            named,
            checkpoint_blocks: false,
        })
    }

    /// Activation checkpointing of every block: a forward with gradients keeps only the blocks'
    /// inputs and the backward pass recomputes the rest.
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.checkpoint_blocks = on;
    }

    /// Every parameter with its Hugging Face name (`shared.weight`, `encoder.block.0...`), in
    /// creation order.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.named
    }

    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// The encoder's parameter dtype (that of `shared.weight`).
    pub fn kind(&self) -> Kind {
        self.shared.kind()
    }

    /// `last_hidden_state` `[B, L, d_model]` in the parameters' dtype, for `input_ids` `[B, L]`
    /// (int64) and `attention_mask` `[B, L]` (1 for tokens, 0 for padding; any dtype).
    /// Padded positions are computed as Hugging Face computes them (they attend to real tokens).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let kind = self.kind();
        let (_, len) = input_ids.size2().expect("input_ids [B, L]");
        let x = Tensor::embedding(&self.shared, input_ids, -1, false, false);
        // Hugging Face's extended mask: (1 - mask) * finfo(dtype).min, added once to the bias.
        let keep = attention_mask.to_kind(kind).unsqueeze(1).unsqueeze(1);
        let bias = self.position_bias.forward(len, len) + (1.0 - keep) * finfo_min(kind);
        let x = self.blocks.iter().fold(x, |x, block| {
            let run = |b: &T5Block, t: &[&Tensor]| b.forward(t[0], t[1]);
            maybe_checkpointed(self.checkpoint_blocks, block, &[&x, &bias], false, "T5 block", run)
        });
        self.final_layer_norm.forward(&x)
    }
}

/// `torch.finfo(kind).min`.
fn finfo_min(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Half => -65504.0,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}
