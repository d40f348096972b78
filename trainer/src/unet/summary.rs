//! Analytic size of a U-Net from its config alone, so that the paper-sized presets can be
//! checked without allocating them: parameters per block and FLOPs per sample.
//!
//! FLOPs count a multiply-add as 2 and include convolutions, linear layers and the two
//! attention matmuls; norms, activations and the softmax are left out (a few percent). A
//! training step is taken as 3x the forward pass (backward = 2x forward).

use serde::Serialize;

use super::attention::TransformerBlock;
use super::config::{AttnKind, UNetConfig};
use super::embeddings::{LevelEmbedding, TextPool};
use super::resample::{Downsample, Upsample};
use super::resblock::ResnetBlock;
use crate::error::Result;

/// One row: the VarStore prefixes it covers (comma-separated), the side it runs at, its
/// parameters and its forward FLOPs per sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockSummary {
    pub name: String,
    pub side: i64,
    pub params: i64,
    pub flops_fwd: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    pub image_side: i64,
    /// Text tokens assumed for the FLOPs (the learned null token adds one).
    pub text_len: i64,
    pub blocks: Vec<BlockSummary>,
    pub total_params: i64,
    pub flops_per_sample_fwd: i64,
    pub flops_per_sample_train: i64,
}

/// Walks the same topology as `UNet::new`; a test checks the counts against a real VarStore.
pub fn summarize(cfg: &UNetConfig, text_len: i64) -> Result<ModelSummary> {
    cfg.validate()?;
    let chans = cfg.level_channels();
    let n = chans.len();
    let tcd = cfg.time_cond_dim();
    let side = |i: usize| cfg.image_side >> i;
    let keys = text_len + 1;
    let mut rows = Vec::new();
    let mut row = |name: String, side: i64, params: i64, flops_fwd: i64| {
        rows.push(BlockSummary { name, side, params, flops_fwd })
    };
    let attn_row = |kind: AttnKind, c: i64, s: i64| {
        (
            TransformerBlock::param_count(c, cfg, kind),
            TransformerBlock::flops(c, cfg, kind, s, keys),
        )
    };

    let in_ch = if cfg.lowres_cond { 2 * cfg.channels } else { cfg.channels };
    let px0 = side(0) * side(0);
    row(
        "init_conv".into(),
        side(0),
        9 * in_ch * chans[0] + chans[0],
        2 * 9 * in_ch * chans[0] * px0,
    );
    row(
        "to_time_hiddens,to_time_cond".into(),
        1,
        LevelEmbedding::param_count(tcd),
        LevelEmbedding::flops(tcd),
    );
    if cfg.lowres_cond {
        row(
            "to_lowres_time_hiddens,to_lowres_time_cond".into(),
            1,
            LevelEmbedding::param_count(tcd),
            LevelEmbedding::flops(tcd),
        );
    }
    row(
        "text_to_cond".into(),
        1,
        (cfg.text_embed_dim + 1) * cfg.cond_dim,
        2 * text_len * cfg.text_embed_dim * cfg.cond_dim,
    );
    row("null_text_embed".into(), 1, cfg.cond_dim, 0);
    row(
        "attn_pool,to_text_non_attn_cond".into(),
        1,
        TextPool::param_count(cfg.cond_dim, tcd),
        TextPool::flops(cfg.cond_dim, tcd, keys),
    );

    for (i, &c) in chans.iter().enumerate() {
        let s = side(i);
        if i > 0 {
            row(
                format!("downs.{i}.downsample"),
                s,
                Downsample::param_count(chans[i - 1], c),
                Downsample::flops(chans[i - 1], c, s),
            );
        }
        for j in 0..cfg.num_resnet_blocks[i] {
            row(
                format!("downs.{i}.resnet_blocks.{j}"),
                s,
                ResnetBlock::param_count(c, c, tcd),
                ResnetBlock::flops(c, c, tcd, s),
            );
        }
        if cfg.level_attn(i) != AttnKind::None {
            let (params, flops) = attn_row(cfg.level_attn(i), c, s);
            row(format!("downs.{i}.transformer_block"), s, params, flops);
        }
    }

    let (c, s) = (chans[n - 1], side(n - 1));
    let (mid_params, mid_flops) =
        (ResnetBlock::param_count(c, c, tcd), ResnetBlock::flops(c, c, tcd, s));
    row("mid_block1".into(), s, mid_params, mid_flops);
    if cfg.mid_attn() != AttnKind::None {
        let (params, flops) = attn_row(cfg.mid_attn(), c, s);
        row("mid_attn".into(), s, params, flops);
    }
    row("mid_block2".into(), s, mid_params, mid_flops);

    for (k, i) in (0..n).rev().enumerate() {
        let (c, s) = (chans[i], side(i));
        for j in 0..cfg.num_resnet_blocks[i] {
            row(
                format!("ups.{k}.resnet_blocks.{j}"),
                s,
                ResnetBlock::param_count(2 * c, c, tcd),
                ResnetBlock::flops(2 * c, c, tcd, s),
            );
        }
        if cfg.level_attn(i) != AttnKind::None {
            let (params, flops) = attn_row(cfg.level_attn(i), c, s);
            row(format!("ups.{k}.transformer_block"), s, params, flops);
        }
        if i > 0 {
            row(
                format!("ups.{k}.upsample"),
                side(i - 1),
                Upsample::param_count(c, chans[i - 1]),
                Upsample::flops(c, chans[i - 1], side(i - 1)),
            );
        }
    }

    row("final_norm".into(), side(0), 2 * chans[0], 0);
    row(
        "final_conv".into(),
        side(0),
        9 * chans[0] * cfg.channels + cfg.channels,
        2 * 9 * chans[0] * cfg.channels * px0,
    );

    let total_params = rows.iter().map(|r| r.params).sum();
    let flops_per_sample_fwd: i64 = rows.iter().map(|r| r.flops_fwd).sum();
    Ok(ModelSummary {
        image_side: cfg.image_side,
        text_len,
        blocks: rows,
        total_params,
        flops_per_sample_fwd,
        flops_per_sample_train: 3 * flops_per_sample_fwd,
    })
}
