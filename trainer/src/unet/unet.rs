//! The Efficient U-Net (Imagen App. B): per-level residual blocks and attention, downsampling
//! at the start and upsampling at the end of each level, skip connections scaled by 1/sqrt(2),
//! conditioning on time, text (cross-attention and a pooled vector) and, for super-resolution,
//! the upsampled low-res image and its augmentation level.

use std::sync::Arc;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::attention::{TextContext, TransformerBlock};
use super::config::{AttnKind, UNetConfig};
use super::embeddings::{LevelEmbedding, TextPool};
use super::resample::{Downsample, Upsample};
use super::resblock::ResnetBlock;
use crate::error::Result;
use crate::native::maybe_checkpointed;

/// Imagen App. B: "scale skip connections by 1/sqrt(2)". The up block's first GroupNorm
/// normalises the skip's channels in groups of their own (the group count divides both halves),
/// so the scale cancels there; it acts on the block's 1x1 shortcut (imagen-pytorch's
/// ChanRMSNorm over all channels keeps it everywhere).
const SKIP_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;

#[derive(Debug)]
struct Level {
    downsample: Option<Downsample>,
    upsample: Option<Upsample>,
    resnet_blocks: Vec<Arc<ResnetBlock>>,
    transformer_block: Option<Arc<TransformerBlock>>,
}

fn transformer(
    p: nn::Path,
    dim: i64,
    cfg: &UNetConfig,
    kind: AttnKind,
) -> Option<Arc<TransformerBlock>> {
    (kind != AttnKind::None).then(|| Arc::new(TransformerBlock::new(p, dim, cfg, kind)))
}

/// One stage of the cascade. Parameter names are modelled on imagen-pytorch's `Unet`
/// (`init_conv`, `downs`, `ups`, `to_time_hiddens`, `final_conv`, ...), but its checkpoints do not
/// load as they are: its containers are positional, its norms are ChanRMSNorm and its attention
/// is cosine-similarity with a single-head key/value.
#[derive(Debug)]
pub struct UNet {
    cfg: UNetConfig,
    init_conv: nn::Conv2D,
    time: LevelEmbedding,
    lowres_time: Option<LevelEmbedding>,
    text_to_cond: nn::Linear,
    null_text_embed: Tensor,
    text_pool: TextPool,
    downs: Vec<Level>,
    mid_block1: Arc<ResnetBlock>,
    mid_attn: Option<Arc<TransformerBlock>>,
    mid_block2: Arc<ResnetBlock>,
    ups: Vec<Level>,
    final_norm: nn::GroupNorm,
    final_conv: nn::Conv2D,
    /// Recompute each residual and transformer block in the backward pass instead of keeping
    /// its activations (`train.activation_checkpointing`).
    checkpoint_blocks: bool,
    /// Run the feature maps in NHWC strides (`train.channels_last`).
    channels_last: bool,
}

/// The same [B, C, H, W] tensor with NHWC strides (PyTorch's `channels_last` memory format, which
/// tch does not name).
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Gives every convolution weight under `prefix` in `vs` (every 4-D variable) NHWC strides, as
/// PyTorch's `model.to(memory_format=torch.channels_last)` does. cuDNN runs a convolution in
/// NHWC when its input or its weight is, and CUDA's GroupNorm hands back NCHW, so the weights
/// keep the layout through the blocks. Gradients and AdamW's moments follow their parameter's
/// strides; checkpoints are written contiguous.
pub fn conv_weights_to_channels_last(vs: &nn::VarStore, prefix: &str) {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if name.starts_with(prefix) && var.dim() == 4 {
                let nhwc = to_channels_last(&var);
                var.set_data(&nhwc);
            }
        }
    });
}

impl UNet {
    pub fn new(path: nn::Path, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let p = &path;
        let chans = cfg.level_channels();
        let n = chans.len();
        let tcd = cfg.time_cond_dim();
        let in_ch = if cfg.lowres_cond { 2 * cfg.channels } else { cfg.channels };
        let conv3 = nn::ConvConfig { padding: 1, ..Default::default() };
        let resnet = |p: nn::Path, c_in, c_out| {
            Arc::new(ResnetBlock::new(p, c_in, c_out, tcd, cfg.resnet_groups, cfg.dropout))
        };

        let init_conv = nn::conv2d(p / "init_conv", in_ch, chans[0], 3, conv3);
        let time = LevelEmbedding::new(p, "time", tcd);
        let lowres_time = cfg.lowres_cond.then(|| LevelEmbedding::new(p, "lowres_time", tcd));
        let text_to_cond =
            nn::linear(p / "text_to_cond", cfg.text_embed_dim, cfg.cond_dim, Default::default());
        let null_text_embed = p.randn("null_text_embed", &[1, 1, cfg.cond_dim], 0.0, 1.0);
        let text_pool = TextPool::new(p, cfg.cond_dim, tcd, cfg.attn_heads);

        let downs = (0..n)
            .map(|i| {
                let lp = p / "downs" / i;
                let c = chans[i];
                Level {
                    downsample: (i > 0)
                        .then(|| Downsample::new(&lp / "downsample", chans[i - 1], c)),
                    upsample: None,
                    resnet_blocks: (0..cfg.num_resnet_blocks[i])
                        .map(|j| resnet(&lp / "resnet_blocks" / j, c, c))
                        .collect(),
                    transformer_block: transformer(
                        &lp / "transformer_block",
                        c,
                        cfg,
                        cfg.level_attn(i),
                    ),
                }
            })
            .collect();

        let c_mid = chans[n - 1];
        let mid_block1 = resnet(p / "mid_block1", c_mid, c_mid);
        let mid_attn = transformer(p / "mid_attn", c_mid, cfg, cfg.mid_attn());
        let mid_block2 = resnet(p / "mid_block2", c_mid, c_mid);

        // ups[k] is level n-1-k: the lowest resolution first, as in imagen-pytorch.
        let ups = (0..n)
            .rev()
            .enumerate()
            .map(|(k, i)| {
                let lp = p / "ups" / k;
                let c = chans[i];
                Level {
                    downsample: None,
                    upsample: (i > 0).then(|| Upsample::new(&lp / "upsample", c, chans[i - 1])),
                    resnet_blocks: (0..cfg.num_resnet_blocks[i])
                        .map(|j| resnet(&lp / "resnet_blocks" / j, 2 * c, c))
                        .collect(),
                    transformer_block: transformer(
                        &lp / "transformer_block",
                        c,
                        cfg,
                        cfg.level_attn(i),
                    ),
                }
            })
            .collect();

        let final_norm =
            nn::group_norm(p / "final_norm", cfg.resnet_groups, chans[0], Default::default());
        // Zero-initialised so that the untrained network predicts zero (Imagen App. B).
        let zero = nn::ConvConfig {
            padding: 1,
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let final_conv = nn::conv2d(p / "final_conv", chans[0], cfg.channels, 3, zero);

        Ok(Self {
            cfg: cfg.clone(),
            init_conv,
            time,
            lowres_time,
            text_to_cond,
            null_text_embed,
            text_pool,
            downs,
            mid_block1,
            mid_attn,
            mid_block2,
            ups,
            final_norm,
            final_conv,
            checkpoint_blocks: false,
            channels_last: false,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Activation checkpointing of every residual and transformer block: a training forward
    /// keeps only the blocks' inputs and the backward pass recomputes the rest (less memory,
    /// about one more forward of compute). Sampling is unaffected.
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.checkpoint_blocks = on;
    }

    /// Feature maps in the channels-last layout from the input conv on (cuDNN's tensor-core
    /// convolutions work in NHWC; the attention blocks' token view becomes free). Same results.
    /// On CUDA give the weights that layout too ([`conv_weights_to_channels_last`]).
    pub fn set_channels_last(&mut self, on: bool) {
        self.channels_last = on;
    }

    fn resnet(&self, block: &Arc<ResnetBlock>, x: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let dropout = train && self.cfg.dropout > 0.0;
        maybe_checkpointed(
            self.checkpoint_blocks,
            block,
            &[x, cond],
            dropout,
            "residual block",
            move |b: &ResnetBlock, t| b.forward(t[0], t[1], train),
        )
    }

    fn transformer(&self, block: &Arc<TransformerBlock>, x: &Tensor, text: &TextContext) -> Tensor {
        let run = |b: &TransformerBlock, t: &[&Tensor]| {
            let text = TextContext { tokens: t[1].shallow_clone(), mask: t[2].shallow_clone() };
            b.forward(t[0], &text)
        };
        let inputs = [x, &text.tokens, &text.mask];
        maybe_checkpointed(self.checkpoint_blocks, block, &inputs, false, "transformer block", run)
    }

    /// Projects the text and swaps in the learned null token where the condition is dropped
    /// (classifier-free guidance) or a row has no token at all (a caller's empty mask: a T5
    /// tokenizer gives even an empty caption its `</s>`). The null is one extra position in
    /// front, so it does not depend on the padded length.
    fn text_context(&self, text: &Tensor, text_mask: &Tensor, cond_drop: &Tensor) -> TextContext {
        let b = text.size()[0];
        let tokens = self.text_to_cond.forward(text);
        let mask = text_mask.to_kind(Kind::Bool);
        let use_null =
            cond_drop.to_kind(Kind::Bool).logical_or(&mask.any_dim(1, false).logical_not());
        let null =
            self.null_text_embed.expand([b, 1, self.cfg.cond_dim], false).to_kind(tokens.kind());
        let keep = mask.logical_and(&use_null.logical_not().unsqueeze(1));
        TextContext {
            tokens: Tensor::cat(&[null, tokens], 1),
            mask: Tensor::cat(&[use_null.unsqueeze(1), keep], 1),
        }
    }

    /// x: [B,C,H,W] noisy image; t: [B] noise condition (the diffusion passes the log-SNR of its time); text: [B,L,D] f32;
    /// text_mask: [B,L] bool; lowres: Some([B,C,H,W] already upsampled, noised) for SR;
    /// aug_level: Some([B]) for SR; cond_drop: [B] bool, true = replace text by the learned
    /// null. Returns the prediction of the configured objective, [B,C,H,W].
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        text: &Tensor,
        text_mask: &Tensor,
        lowres: Option<&Tensor>,
        aug_level: Option<&Tensor>,
        cond_drop: &Tensor,
        train: bool,
    ) -> Tensor {
        let input = match (&self.lowres_time, lowres) {
            (Some(_), Some(lowres)) => Tensor::cat(&[x, lowres], 1),
            (None, None) => x.shallow_clone(),
            (Some(_), None) => panic!("a super-resolution U-Net needs the low-res condition"),
            (None, Some(_)) => panic!("this U-Net has no low-res input (lowres_cond = false)"),
        };
        let text = self.text_context(text, text_mask, cond_drop);
        let mut cond = self.time.forward(t) + self.text_pool.forward(&text.tokens, &text.mask);
        if let Some(lowres_time) = &self.lowres_time {
            let level = aug_level.expect("a super-resolution U-Net needs the augmentation level");
            cond += lowres_time.forward(level);
        }

        let input = if self.channels_last { to_channels_last(&input) } else { input };
        let mut h = self.init_conv.forward(&input);
        let mut skips = Vec::new();
        for level in &self.downs {
            if let Some(down) = &level.downsample {
                h = down.forward(&h);
            }
            for block in &level.resnet_blocks {
                h = self.resnet(block, &h, &cond, train);
                skips.push(h.shallow_clone());
            }
            if let Some(attn) = &level.transformer_block {
                h = self.transformer(attn, &h, &text);
                *skips.last_mut().expect("every level has a block") = h.shallow_clone();
            }
        }

        h = self.resnet(&self.mid_block1, &h, &cond, train);
        if let Some(attn) = &self.mid_attn {
            h = self.transformer(attn, &h, &text);
        }
        h = self.resnet(&self.mid_block2, &h, &cond, train);

        for level in &self.ups {
            for block in &level.resnet_blocks {
                let skip = skips.pop().expect("one skip per down block") * SKIP_SCALE;
                h = self.resnet(block, &Tensor::cat(&[&h, &skip], 1), &cond, train);
            }
            if let Some(attn) = &level.transformer_block {
                h = self.transformer(attn, &h, &text);
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&h);
            }
        }
        self.final_conv.forward(&self.final_norm.forward(&h).silu())
    }
}
