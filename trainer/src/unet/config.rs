//! `[unet]`: the topology of one stage's Efficient U-Net (Imagen App. B).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// Which attention a level (and the middle, which follows the lowest level) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKind {
    /// No attention.
    None,
    /// Self-attention over pixels with the text tokens concatenated to the keys and values.
    SelfWithText,
    /// Cross-attention from pixels to the text tokens only (the 256->1024 stage).
    CrossOnly,
}

/// `[unet]`: channels, depth and attention per resolution level, and conditioning sizes.
/// Field names follow lucidrains/imagen-pytorch's `Unet` arguments (`dim`, `dim_mults`,
/// `num_resnet_blocks`, `layer_attns`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Side in pixels of the images this stage generates (used for FLOPs, the shifted schedule
    /// and sampling). Default: 64.
    pub image_side: i64,
    /// Channels of the image. Default: 3.
    pub channels: i64,
    /// Base channel count; level i has `dim * dim_mults[i]` channels. Default: 128.
    pub dim: i64,
    /// Channel multiplier per resolution level; each level after the first halves the side.
    /// Default: [1, 2, 4, 8].
    pub dim_mults: Vec<i64>,
    /// Residual blocks per level (Efficient U-Net: more at low resolution). Default: [2, 4, 8, 8].
    pub num_resnet_blocks: Vec<i64>,
    /// Self-attention (text tokens concatenated to keys and values) per level. Default:
    /// [false, false, false, true].
    pub layer_attns: Vec<bool>,
    /// Text cross-attention per level where `layer_attns` is false. Default:
    /// [false, false, false, false].
    pub layer_cross_attns: Vec<bool>,
    /// Attention heads. Default: 8.
    pub attn_heads: i64,
    /// Channels per attention head. Default: 64.
    pub attn_dim_head: i64,
    /// Hidden width of the feed-forward after each attention, as a multiple of the level's
    /// channels. Default: 2.
    pub ff_mult: i64,
    /// GroupNorm groups in the residual blocks (must divide every level's channels). Default: 8.
    pub resnet_groups: i64,
    /// Dropout probability inside the residual blocks during training. Default: 0.
    pub dropout: f64,
    /// Width of the text embeddings fed in (T5-XXL: 4096). Default: 4096.
    pub text_embed_dim: i64,
    /// Width the text tokens are projected to before attention. Default: 512.
    pub cond_dim: i64,
    /// Width of the timestep conditioning vector, as a multiple of `dim`. Default: 4.
    pub time_cond_mult: i64,
    /// Super-resolution stage: the upsampled low-res image is concatenated to the input and the
    /// augmentation level is a conditioning input. Default: false.
    pub lowres_cond: bool,
    /// Side of the low-res condition (the previous stage's side, or the crop's low-res side).
    /// Only read when `lowres_cond`. Default: 64.
    pub lowres_side: i64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            image_side: 64,
            channels: 3,
            dim: 128,
            dim_mults: vec![1, 2, 4, 8],
            num_resnet_blocks: vec![2, 4, 8, 8],
            layer_attns: vec![false, false, false, true],
            layer_cross_attns: vec![false, false, false, false],
            attn_heads: 8,
            attn_dim_head: 64,
            ff_mult: 2,
            resnet_groups: 8,
            dropout: 0.0,
            text_embed_dim: 4096,
            cond_dim: 512,
            time_cond_mult: 4,
            lowres_cond: false,
            lowres_side: 64,
        }
    }
}

impl UNetConfig {
    /// Channels of each level.
    pub fn level_channels(&self) -> Vec<i64> {
        self.dim_mults.iter().map(|m| self.dim * m).collect()
    }

    /// Width of the timestep conditioning vector every residual block receives.
    pub fn time_cond_dim(&self) -> i64 {
        self.dim * self.time_cond_mult
    }

    /// The attention a level carries.
    pub fn level_attn(&self, level: usize) -> AttnKind {
        if self.layer_attns[level] {
            AttnKind::SelfWithText
        } else if self.layer_cross_attns[level] {
            AttnKind::CrossOnly
        } else {
            AttnKind::None
        }
    }

    /// The middle blocks carry the lowest level's attention.
    pub fn mid_attn(&self) -> AttnKind {
        self.level_attn(self.dim_mults.len() - 1)
    }

    /// Checks the lists agree in length and the sizes divide as the blocks need.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| TrainerError::Config { source_name: "[unet]".into(), message };
        let n = self.dim_mults.len();
        if n == 0 {
            return Err(bad("dim_mults must name at least one level".into()));
        }
        for (name, len) in [
            ("num_resnet_blocks", self.num_resnet_blocks.len()),
            ("layer_attns", self.layer_attns.len()),
            ("layer_cross_attns", self.layer_cross_attns.len()),
        ] {
            if len != n {
                return Err(bad(format!("{name} has {len} entries, dim_mults has {n}")));
            }
        }
        if self.num_resnet_blocks.iter().any(|&b| b < 1) {
            return Err(bad("num_resnet_blocks must be at least 1 per level".into()));
        }
        let positive = [
            ("channels", self.channels),
            ("dim", self.dim),
            ("attn_heads", self.attn_heads),
            ("attn_dim_head", self.attn_dim_head),
            ("ff_mult", self.ff_mult),
            ("resnet_groups", self.resnet_groups),
            ("text_embed_dim", self.text_embed_dim),
            ("cond_dim", self.cond_dim),
            ("time_cond_mult", self.time_cond_mult),
            ("image_side", self.image_side),
            ("lowres_side", self.lowres_side),
        ];
        for (name, v) in positive {
            if v < 1 {
                return Err(bad(format!("{name} must be positive, got {v}")));
            }
        }
        for c in self.level_channels() {
            if c % self.resnet_groups != 0 {
                return Err(bad(format!(
                    "resnet_groups {} does not divide {c} channels",
                    self.resnet_groups
                )));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad(format!("dropout must lie in [0, 1), got {}", self.dropout)));
        }
        let reduction = 1i64 << (n - 1);
        if self.image_side % reduction != 0 {
            return Err(bad(format!(
                "image_side {} is not divisible by 2^(levels-1) = {reduction}",
                self.image_side
            )));
        }
        Ok(())
    }
}
