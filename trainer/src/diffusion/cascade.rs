//! Cascaded sampling: base -> 256 -> 1024, each stage conditioned on the previous one's output.

use tch::Tensor;

use super::config::SamplerConfig;
use super::gaussian::GaussianDiffusion;
use super::sampler::sample_stage;
use crate::unet::UNet;

/// One stage of the cascade: its U-Net, its diffusion and how it samples. Every stage but the
/// first must have `lowres_cond`.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    pub unet: &'a UNet,
    pub diffusion: &'a GaussianDiffusion,
    pub sampler: &'a SamplerConfig,
}

/// Samples the cascade for the captions (text [B, L, D], mask [B, L]), stopping after stage
/// `stop_at_stage` (0-based; None runs them all). Seeds the global RNG with `seed` first, so
/// the same seed on the same device gives the same images. Returns each stage's images in
/// [-1, 1].
pub fn sample_cascade(
    stages: &[Stage],
    text: &Tensor,
    mask: &Tensor,
    seed: i64,
    stop_at_stage: Option<usize>,
) -> Vec<Tensor> {
    tch::manual_seed(seed);
    let last = stop_at_stage.map_or(stages.len(), |s| (s + 1).min(stages.len()));
    let mut outputs: Vec<Tensor> = Vec::with_capacity(last);
    for stage in &stages[..last] {
        let prev = outputs.last();
        let images = sample_stage(stage.unet, stage.diffusion, stage.sampler, text, mask, prev);
        outputs.push(images);
    }
    outputs
}
