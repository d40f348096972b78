//! `[diffusion]`: noise schedule, objective, loss weighting, conditioning dropout, noise
//! conditioning augmentation and sampler settings of one stage.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// The log-SNR schedule over continuous time t in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// alpha_t = cos(pi t / 2): log-SNR = -2 log tan(pi t / 2), clipped to [logsnr_min, max].
    Cosine,
    /// The continuous DDPM linear-beta schedule: log-SNR = -log(expm1(1e-4 + 10 t^2)).
    Linear,
    /// Cosine shifted by 2 log(base_side / image_side) (Hoogeboom et al. 2023, §3.1).
    ShiftedCosine,
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The noise (Imagen's choice).
    Eps,
    /// v = alpha eps - sigma x0 (Salimans & Ho 2022).
    V,
    /// The clean image.
    X0,
}

/// Per-sample weighting of the loss over noise levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossWeighting {
    /// Plain mean squared error on the objective.
    None,
    /// Min-SNR-gamma (Hang et al. 2023): weight min(SNR, gamma) in x0 terms.
    MinSnr,
}

/// Ancestral DDPM or deterministic DDIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    Ddpm,
    Ddim,
}

/// How the predicted x0 is kept in range at every sampling step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Thresholding {
    /// Leave x0 as predicted.
    None,
    /// Clip to [-1, 1].
    Static,
    /// Imagen §2.3: s = max(1, percentile(|x0|, p)); clip to [-s, s] and divide by s.
    Dynamic,
}

/// `[diffusion.sampler]`: how this stage samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// "ddpm" (ancestral) or "ddim" (deterministic, eta 0). Default: "ddpm".
    pub kind: SamplerKind,
    /// Number of denoising steps. Default: 256.
    pub steps: i64,
    /// Classifier-free guidance scale; 1 means no guidance. Default: 5.0.
    pub guidance_scale: f64,
    /// "dynamic", "static" or "none". Default: "dynamic".
    pub thresholding: Thresholding,
    /// Percentile of |x0| for dynamic thresholding (Imagen Fig. A.9 uses 99.5). Default: 99.5.
    pub dynamic_percentile: f64,
    /// Fixed noise augmentation level of the low-res condition at sampling, SR stages only
    /// (Imagen: 0.1-0.3 looks best). Default: 0.2.
    pub aug_level: f64,
    /// Guidance applies only at steps whose log-SNR lies in [`guidance_min_logsnr`,
    /// `guidance_max_logsnr`]; other steps take the conditional prediction alone, in one pass
    /// (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"): guiding the last,
    /// nearly clean steps only amplifies the difference of two near-equal predictions, which
    /// shows as grain. Default: -inf and inf (every step).
    pub guidance_min_logsnr: f64,
    /// Upper end of that interval. Default: inf.
    pub guidance_max_logsnr: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: SamplerKind::Ddpm,
            steps: 256,
            guidance_scale: 5.0,
            thresholding: Thresholding::Dynamic,
            dynamic_percentile: 99.5,
            aug_level: 0.2,
            guidance_min_logsnr: f64::NEG_INFINITY,
            guidance_max_logsnr: f64::INFINITY,
        }
    }
}

/// `[diffusion]`: the Gaussian diffusion around one stage's U-Net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffusionConfig {
    /// "cosine", "linear" or "shifted-cosine". Default: "cosine".
    pub schedule: ScheduleKind,
    /// Side at which the shifted cosine equals the plain cosine. Default: 64.
    pub shift_base_side: i64,
    /// Lowest log-SNR of the cosine schedules (t = 1). Default: -20.
    pub logsnr_min: f64,
    /// Highest log-SNR of the cosine schedules (t = 0). Default: 20.
    pub logsnr_max: f64,
    /// "eps", "v" or "x0". Default: "eps".
    pub objective: Objective,
    /// "none" or "min-snr". Default: "none".
    pub loss_weighting: LossWeighting,
    /// gamma of min-SNR weighting. Default: 5.0.
    pub min_snr_gamma: f64,
    /// Probability that a training sample's text is replaced by the learned null. Default: 0.1.
    pub cond_drop_prob: f64,
    /// SR stages: training augmentation levels are uniform on [0, noise_aug_max]. Default: 0.5.
    pub noise_aug_max: f64,
    /// SR stages: probability of Gaussian-blurring the low-res condition in training. Default: 0.
    pub blur_aug_prob: f64,
    /// SR stages: standard deviation in low-res pixels of that blur. Default: 0.6.
    pub blur_sigma: f64,
    /// Sampler settings.
    pub sampler: SamplerConfig,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            schedule: ScheduleKind::Cosine,
            shift_base_side: 64,
            logsnr_min: -20.0,
            logsnr_max: 20.0,
            objective: Objective::Eps,
            loss_weighting: LossWeighting::None,
            min_snr_gamma: 5.0,
            cond_drop_prob: 0.1,
            noise_aug_max: 0.5,
            blur_aug_prob: 0.0,
            blur_sigma: 0.6,
            sampler: SamplerConfig::default(),
        }
    }
}

impl DiffusionConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |message: String| TrainerError::Config { source_name: "[diffusion]".into(), message };
        if self.logsnr_min >= self.logsnr_max {
            return Err(bad(format!(
                "logsnr_min {} must be below logsnr_max {}",
                self.logsnr_min, self.logsnr_max
            )));
        }
        for (name, p) in [
            ("cond_drop_prob", self.cond_drop_prob),
            ("noise_aug_max", self.noise_aug_max),
            ("blur_aug_prob", self.blur_aug_prob),
            ("sampler.aug_level", self.sampler.aug_level),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("{name} must lie in [0, 1], got {p}")));
            }
        }
        // The cosine schedule's angle at t = 1 is pi/2 - exp(logsnr_min / 2); in f32 it rounds
        // past pi/2 from about -36 on, and the log-SNR there becomes NaN.
        if self.logsnr_min < -30.0 || self.logsnr_max > 30.0 {
            return Err(bad(format!(
                "logsnr_min and logsnr_max must lie in [-30, 30] (got {} and {}): beyond, the \
                 cosine schedule's endpoints are not representable in f32",
                self.logsnr_min, self.logsnr_max
            )));
        }
        if self.shift_base_side < 1 || self.sampler.steps < 1 {
            return Err(bad("shift_base_side and sampler.steps must be positive".into()));
        }
        if !(0.0..=100.0).contains(&self.sampler.dynamic_percentile) {
            return Err(bad("sampler.dynamic_percentile must lie in [0, 100]".into()));
        }
        if self.sampler.guidance_min_logsnr > self.sampler.guidance_max_logsnr {
            return Err(bad(format!(
                "sampler.guidance_min_logsnr {} must not exceed sampler.guidance_max_logsnr {}",
                self.sampler.guidance_min_logsnr, self.sampler.guidance_max_logsnr
            )));
        }
        if self.min_snr_gamma <= 0.0 || self.blur_sigma <= 0.0 {
            return Err(bad("min_snr_gamma and blur_sigma must be positive".into()));
        }
        Ok(())
    }
}
