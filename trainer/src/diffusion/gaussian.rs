//! The Gaussian diffusion of one stage: forward process, posterior, and the training loss.

use tch::{Kind, Tensor};

use super::augment::{degrade, noise_augment};
use super::config::DiffusionConfig;
use super::draws::{DrawShape, TrainingDraws};
use super::loss::{loss_weight, per_sample_mse};
use super::objective::{target, x0_and_eps};
use super::schedule::Schedule;
use crate::error::Result;
use crate::unet::UNet;

/// Broadcasts a per-sample [B] tensor against [B, C, H, W].
pub(crate) fn per_sample(t: &Tensor) -> Tensor {
    t.view([-1, 1, 1, 1])
}

/// What a loss is measured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Dropout on, captions dropped at `cond_drop_prob` (classifier-free guidance's training).
    Train,
    /// Dropout off, every caption kept: the network as it samples.
    Validate,
}

#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    cfg: DiffusionConfig,
    schedule: Schedule,
    /// The schedule of noise conditioning augmentation: the unshifted one, so that a level
    /// means the same corruption whatever the stage's side.
    aug_schedule: Schedule,
    image_side: i64,
}

impl GaussianDiffusion {
    /// `image_side` is the side this stage generates (read by the shifted cosine and samplers).
    pub fn new(cfg: &DiffusionConfig, image_side: i64) -> Result<Self> {
        cfg.validate()?;
        let aug_schedule = Schedule::new(cfg, cfg.shift_base_side);
        Ok(Self {
            cfg: cfg.clone(),
            schedule: Schedule::new(cfg, image_side),
            aug_schedule,
            image_side,
        })
    }

    pub fn config(&self) -> &DiffusionConfig {
        &self.cfg
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn aug_schedule(&self) -> &Schedule {
        &self.aug_schedule
    }

    /// What the U-Net is told of the noise at times t [B]: its log-SNR, not t. The learned
    /// sinusoidal embedding then resolves the last steps of sampling, where the log-SNR moves
    /// some 25x faster per unit of t than mid-schedule and the fine detail is decided; t itself
    /// gives them the resolution of the middle (imagen-pytorch conditions on log-SNR too, as
    /// Kingma et al. 2021, "Variational Diffusion Models", do).
    pub fn noise_condition(&self, t: &Tensor) -> Tensor {
        self.schedule.log_snr(t)
    }

    /// The same for the low-res condition's augmentation level [B]: its log-SNR on the
    /// augmentation schedule.
    pub fn aug_condition(&self, level: &Tensor) -> Tensor {
        self.aug_schedule.log_snr(level)
    }

    pub fn image_side(&self) -> i64 {
        self.image_side
    }

    /// (alpha_t, sigma_t) at times t ([B]), shaped [B, 1, 1, 1].
    pub fn alpha_sigma(&self, t: &Tensor) -> (Tensor, Tensor) {
        let (alpha, sigma) = self.schedule.alpha_sigma(t);
        (per_sample(&alpha), per_sample(&sigma))
    }

    /// The forward process: x_t = alpha_t x0 + sigma_t noise.
    pub fn q_sample(&self, x0: &Tensor, t: &Tensor, noise: &Tensor) -> Tensor {
        let (alpha, sigma) = self.alpha_sigma(t);
        alpha * x0 + sigma * noise
    }

    /// Mean and variance of q(x_s | x_t, x0) for s < t (Kingma et al. 2021, eq. 32-33):
    /// with c = 1 - SNR(t)/SNR(s), mean = alpha_s (x_t (1 - c) / alpha_t + c x0),
    /// variance = sigma_s^2 c.
    pub fn q_posterior(
        &self,
        x0: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
        s: &Tensor,
    ) -> (Tensor, Tensor) {
        let log_snr_t = per_sample(&self.schedule.log_snr(t));
        let log_snr_s = per_sample(&self.schedule.log_snr(s));
        let c = -(log_snr_t - &log_snr_s).expm1();
        let (alpha_t, _) = self.alpha_sigma(t);
        let (alpha_s, sigma_s) = self.alpha_sigma(s);
        let mean = alpha_s * (x_t * (1.0 - &c) / alpha_t + &c * x0);
        let var = sigma_s.square() * c;
        (mean, var)
    }

    /// The low-res condition of an SR stage from its high-res target: degraded to
    /// `lowres_side` and back (blurred with probability `blur_aug_prob`), then noise-augmented
    /// at `aug_level` ([B]). Draws from the global RNG.
    pub fn lowres_condition(&self, x0: &Tensor, lowres_side: i64, aug_level: &Tensor) -> Tensor {
        let b = x0.size()[0];
        let blur_u =
            (self.cfg.blur_aug_prob > 0.0).then(|| Tensor::rand([b], (Kind::Float, x0.device())));
        let noise = x0.randn_like();
        self.lowres_condition_with(x0, lowres_side, aug_level, blur_u.as_ref(), &noise)
    }

    /// As [`Self::lowres_condition`], with the blur choices (uniform [B]) and the noise given.
    fn lowres_condition_with(
        &self,
        x0: &Tensor,
        lowres_side: i64,
        aug_level: &Tensor,
        blur_u: Option<&Tensor>,
        noise: &Tensor,
    ) -> Tensor {
        let blur = blur_u.map(|u| u.lt(self.cfg.blur_aug_prob));
        let clean = degrade(x0, lowres_side, blur.as_ref().map(|w| (w, self.cfg.blur_sigma)));
        noise_augment(&self.aug_schedule, &clean, aug_level, noise)
    }

    /// What the training draws look like for a batch shaped like `x0`.
    pub fn draw_shape(&self, x0: &Tensor, lowres_side: Option<i64>) -> DrawShape {
        let size = x0.size();
        DrawShape {
            channels: size[1],
            side: size[2],
            lowres_side,
            blur: lowres_side.is_some() && self.cfg.blur_aug_prob > 0.0,
        }
    }

    /// Per-sample loss [B] for clean images x0 in [-1, 1] and the times [B] drawn. For SR
    /// stages (`lowres_side` set) the low-res condition is derived from x0 and noise-augmented
    /// at a level uniform on [0, noise_aug_max]. Times, noise, levels and condition dropout
    /// come from the global RNG (`tch::manual_seed`). `LossMode::Validate` measures the network
    /// as it samples: dropout off and every caption kept.
    pub fn loss(
        &self,
        unet: &UNet,
        x0: &Tensor,
        text: &Tensor,
        mask: &Tensor,
        lowres_side: Option<i64>,
        mode: LossMode,
    ) -> (Tensor, Tensor) {
        let shape = self.draw_shape(x0, lowres_side);
        let draws = TrainingDraws::global(x0.size()[0], shape, x0.device());
        self.loss_with(unet, x0, text, mask, lowres_side, &draws, mode)
    }

    /// As [`Self::loss`], with the step's random numbers given.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_with(
        &self,
        unet: &UNet,
        x0: &Tensor,
        text: &Tensor,
        mask: &Tensor,
        lowres_side: Option<i64>,
        draws: &TrainingDraws,
        mode: LossMode,
    ) -> (Tensor, Tensor) {
        let train = mode == LossMode::Train;
        let t = &draws.t;
        let x_t = self.q_sample(x0, t, &draws.noise);
        let drop_prob = if train { self.cfg.cond_drop_prob } else { 0.0 };
        let cond_drop = draws.drop_u.lt(drop_prob);
        let (lowres, aug_level) = match (lowres_side, &draws.aug_u, &draws.aug_noise) {
            (Some(side), Some(u), Some(noise)) => {
                let level = u * self.cfg.noise_aug_max;
                let cond =
                    self.lowres_condition_with(x0, side, &level, draws.blur_u.as_ref(), noise);
                (Some(cond), Some(level))
            }
            _ => (None, None),
        };
        let pred = unet.forward(
            &x_t,
            &self.noise_condition(t),
            text,
            mask,
            lowres.as_ref(),
            aug_level.map(|level| self.aug_condition(&level)).as_ref(),
            &cond_drop,
            train,
        );
        let (alpha, sigma) = self.alpha_sigma(t);
        let goal = target(self.cfg.objective, x0, &draws.noise, &alpha, &sigma);
        let snr = self.schedule.log_snr(t).exp();
        let weight =
            loss_weight(self.cfg.loss_weighting, self.cfg.objective, &snr, self.cfg.min_snr_gamma);
        (per_sample_mse(&pred.to_kind(Kind::Float), &goal) * weight, t.shallow_clone())
    }

    /// (x0, eps) implied by a network output at (x_t, t).
    pub fn x0_and_eps(&self, pred: &Tensor, x_t: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
        let (alpha, sigma) = self.alpha_sigma(t);
        x0_and_eps(self.cfg.objective, pred, x_t, &alpha, &sigma)
    }
}
