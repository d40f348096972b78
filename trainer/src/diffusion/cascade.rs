//! Cascaded sampling: base -> 256 -> 1024, each stage conditioned on the previous one's output.

use tch::Tensor;

use super::config::SamplerConfig;
use super::gaussian::GaussianDiffusion;
use super::sampler::{image_seeds, sample_stage, stage_seeds};
use crate::error::{Result, TrainerError};
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
) -> Result<Vec<Tensor>> {
    check_cascade(stages.iter().map(|s| s.unet.config().lowres_cond))?;
    let last = last_stage(stop_at_stage, stages.len())? + 1;
    let images = image_seeds(seed, 0, text.size()[0] as usize);
    let mut outputs: Vec<Tensor> = Vec::with_capacity(last);
    for (k, stage) in stages[..last].iter().enumerate() {
        let prev = outputs.last();
        let seeds = stage_seeds(&images, k);
        let out =
            sample_stage(stage.unet, stage.diffusion, stage.sampler, text, mask, prev, &seeds);
        outputs.push(out);
    }
    Ok(outputs)
}

/// The last stage (0-based) to run for `--stop-at-stage` (all of them without it) in a cascade of
/// `stages`; a stage the cascade does not have is refused, not quietly taken as the last one.
pub fn last_stage(stop_at_stage: Option<usize>, stages: usize) -> Result<usize> {
    if stages == 0 {
        return Err(TrainerError::Config {
            source_name: "stages".into(),
            message: "the cascade has no stage".into(),
        });
    }
    match stop_at_stage {
        Some(s) if s >= stages => Err(TrainerError::Config {
            source_name: "--stop-at-stage".into(),
            message: format!("{s}, but the cascade has {stages} stage(s), 0 to {}", stages - 1),
        }),
        Some(s) => Ok(s),
        None => Ok(stages - 1),
    }
}

/// Refuses stages (each one's `lowres_cond`, base first) that cannot be sampled as a cascade:
/// the first draws images from text alone, and every later one upsamples the previous one's. A
/// super-resolution stage trained on its own (a one-stage config such as `configs/sr256.toml`)
/// is sampled as a later stage of a config that lists a base stage before it.
pub fn check_cascade(lowres: impl IntoIterator<Item = bool>) -> Result<()> {
    for (k, lowres) in lowres.into_iter().enumerate() {
        let message = match (k, lowres) {
            (0, true) => "stage 0 is a super-resolution stage (lowres_cond = true), but a cascade \
                          starts from a base stage that draws images from text alone; sample \
                          it as a later stage of a config whose stages list the base first"
                .to_owned(),
            (k, false) if k > 0 => format!(
                "stage {k} has no low-res input (lowres_cond = false), but every stage after \
                 the first upsamples the previous stage's images"
            ),
            _ => continue,
        };
        return Err(TrainerError::Config {
            source_name: format!("stages[{k}].unet.lowres_cond"),
            message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_past_the_cascade_is_refused_by_name() {
        assert_eq!(last_stage(None, 3).unwrap(), 2);
        assert_eq!(last_stage(Some(1), 3).unwrap(), 1);
        let err = last_stage(Some(5), 2).unwrap_err().to_string();
        assert!(err.contains("--stop-at-stage") && err.contains("0 to 1"), "{err}");
    }
}
