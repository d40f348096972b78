//! Sampling one stage: ancestral DDPM or DDIM over evenly spaced times from 1 to 0, with
//! classifier-free guidance (Ho & Salimans 2022) and thresholding of the predicted x0.

use tch::{Kind, Tensor};

use super::augment::{noise_augment, resize};
use super::config::{SamplerConfig, SamplerKind};
use super::gaussian::GaussianDiffusion;
use super::threshold;
use crate::seeds::{mix, randn_rows};
use crate::unet::UNet;

/// The network output at x with noise condition `t` (what the diffusion tells the U-Net of the
/// noise: `GaussianDiffusion::noise_condition`), guided: out = uncond + scale (cond - uncond).
/// The conditional and unconditional passes share one doubled batch.
#[allow(clippy::too_many_arguments)]
pub fn guided_prediction(
    unet: &UNet,
    x: &Tensor,
    t: &Tensor,
    text: &Tensor,
    mask: &Tensor,
    lowres: Option<&Tensor>,
    aug_level: Option<&Tensor>,
    guidance_scale: f64,
) -> Tensor {
    let b = x.size()[0];
    let device = x.device();
    if guidance_scale == 1.0 {
        let keep = Tensor::zeros([b], (Kind::Bool, device));
        return unet.forward(x, t, text, mask, lowres, aug_level, &keep, false);
    }
    let two = |t: &Tensor| Tensor::cat(&[t, t], 0);
    let drop = Tensor::cat(
        &[Tensor::zeros([b], (Kind::Bool, device)), Tensor::ones([b], (Kind::Bool, device))],
        0,
    );
    let lowres2 = lowres.map(two);
    let aug2 = aug_level.map(two);
    let out = unet.forward(
        &two(x),
        &two(t),
        &two(text),
        &two(mask),
        lowres2.as_ref(),
        aug2.as_ref(),
        &drop,
        false,
    );
    let halves = out.chunk(2, 0);
    &halves[1] + (&halves[0] - &halves[1]) * guidance_scale
}

/// The guidance scale of a step at `log_snr`: the configured scale inside the sampler's guidance
/// interval, 1 (no guidance) outside it.
pub fn guidance_at(sampler: &SamplerConfig, log_snr: f64) -> f64 {
    let inside = (sampler.guidance_min_logsnr..=sampler.guidance_max_logsnr).contains(&log_snr);
    if inside {
        sampler.guidance_scale
    } else {
        1.0
    }
}

/// The seeds of images `first..first + n` of a sampling run under `seed`. An image's noise, at
/// every stage, comes from its own seed alone: the same image whatever batch it is sampled in
/// and wherever it sits there.
pub fn image_seeds(seed: i64, first: usize, n: usize) -> Vec<i64> {
    (first..first + n).map(|i| mix(seed as u64, i as u64 + 1)).collect()
}

/// The seeds of cascade stage `stage` of the images of `images` ([`image_seeds`]).
pub fn stage_seeds(images: &[i64], stage: usize) -> Vec<i64> {
    images.iter().map(|&s| mix(s as u64, stage as u64 + 1)).collect()
}

/// What each draw of [`sample_stage`] is, mixed into an image's stage seed.
const AUG_NOISE: u64 = 0;
const START_NOISE: u64 = 1;
/// Sampling step i's noise (DDPM) is draw `STEP_NOISE + i`.
const STEP_NOISE: u64 = 2;

/// Samples one stage for the captions (text [B, L, D], mask [B, L]). For an SR stage,
/// `prev` is the previous stage's output ([B, C, h, w] in [-1, 1]); it is brought to the
/// stage's `lowres_side` (what training degraded its targets to) if it has another side, resized
/// to this stage's side and noise-augmented at the sampler's fixed `aug_level`. Image i's noise
/// comes from `seeds[i]` alone ([`stage_seeds`]); returns images in [-1, 1].
#[allow(clippy::too_many_arguments)]
pub fn sample_stage(
    unet: &UNet,
    diffusion: &GaussianDiffusion,
    sampler: &SamplerConfig,
    text: &Tensor,
    mask: &Tensor,
    prev: Option<&Tensor>,
    seeds: &[i64],
) -> Tensor {
    tch::no_grad(|| {
        let b = text.size()[0];
        assert_eq!(seeds.len() as i64, b, "one seed per image");
        let device = text.device();
        let side = diffusion.image_side();
        let per_image = [unet.config().channels, side, side];
        let noise = |draw: u64| randn_rows(seeds, draw, &per_image, device);
        let (lowres, aug_level) = match prev {
            Some(prev) => {
                let level = Tensor::full([b], sampler.aug_level, (Kind::Float, device));
                let lowres_side = unet.config().lowres_side;
                let mut prev = prev.to_kind(Kind::Float);
                if prev.size()[2] != lowres_side {
                    tracing::warn!(
                        "the previous stage made {0}x{0} images and this stage was trained on \
                         {lowres_side}x{lowres_side} conditions: resized to {lowres_side} first",
                        prev.size()[2]
                    );
                    prev = resize(&prev, lowres_side);
                }
                let clean = resize(&prev, side);
                let noisy =
                    noise_augment(diffusion.aug_schedule(), &clean, &level, &noise(AUG_NOISE));
                (Some(noisy), Some(diffusion.aug_condition(&level)))
            }
            None => (None, None),
        };
        let mut x = noise(START_NOISE);
        let steps = sampler.steps;
        let mut x0 = x.zeros_like();
        for i in 0..steps {
            let t_now = 1.0 - i as f64 / steps as f64;
            let t_next = 1.0 - (i + 1) as f64 / steps as f64;
            let t = Tensor::full([b], t_now, (Kind::Float, device));
            let s = Tensor::full([b], t_next, (Kind::Float, device));
            let pred = guided_prediction(
                unet,
                &x,
                &diffusion.noise_condition(&t),
                text,
                mask,
                lowres.as_ref(),
                aug_level.as_ref(),
                guidance_at(sampler, diffusion.schedule().log_snr_at(t_now)),
            )
            .to_kind(Kind::Float);
            let (raw_x0, _) = diffusion.x0_and_eps(&pred, &x, &t);
            x0 = threshold::apply(sampler.thresholding, &raw_x0, sampler.dynamic_percentile);
            if i + 1 == steps {
                break;
            }
            x = match sampler.kind {
                SamplerKind::Ddpm => {
                    let (mean, var) = diffusion.q_posterior(&x0, &x, &t, &s);
                    mean + var.sqrt() * noise(STEP_NOISE + i as u64)
                }
                SamplerKind::Ddim => {
                    // eps recomputed from the thresholded x0, so both stay consistent with x_t.
                    let (alpha_t, sigma_t) = diffusion.alpha_sigma(&t);
                    let eps = (&x - alpha_t * &x0) / sigma_t;
                    let (alpha_s, sigma_s) = diffusion.alpha_sigma(&s);
                    alpha_s * &x0 + sigma_s * eps
                }
            };
        }
        x0.clamp(-1.0, 1.0)
    })
}
