//! Cascaded sampling: base -> 256 -> 1024, each stage conditioned on the previous one's output.

use tch::Tensor;

use super::config::SamplerConfig;
use super::gaussian::GaussianDiffusion;
use super::sampler::{image_seeds, sample_stage, stage_seeds};
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
/// `stop_at_stage` (0-based; None runs them all). Caption i is image i of a run under `seed`
/// ([`image_seeds`]): the same seed on the same device gives the same images. Returns each
/// stage's images in [-1, 1].
pub fn sample_cascade(
    stages: &[Stage],
    text: &Tensor,
    mask: &Tensor,
    seed: i64,
    stop_at_stage: Option<usize>,
) -> Vec<Tensor> {
    let images = image_seeds(seed, 0, text.size()[0] as usize);
    let last = stop_at_stage.map_or(stages.len(), |s| (s + 1).min(stages.len()));
    let mut outputs: Vec<Tensor> = Vec::with_capacity(last);
    for (k, stage) in stages[..last].iter().enumerate() {
        let prev = outputs.last();
        let seeds = stage_seeds(&images, k);
        let out =
            sample_stage(stage.unet, stage.diffusion, stage.sampler, text, mask, prev, &seeds);
        outputs.push(out);
    }
    outputs
}
