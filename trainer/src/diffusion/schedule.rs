//! Log-SNR noise schedules over continuous time t in [0, 1] (Kingma et al. 2021, "Variational
//! diffusion models"): x_t = alpha_t x0 + sigma_t eps with alpha_t^2 = sigmoid(logsnr(t)) and
//! sigma_t^2 = sigmoid(-logsnr(t)), so alpha^2 + sigma^2 = 1 (variance preserving).

use tch::Tensor;

use super::config::{DiffusionConfig, ScheduleKind};

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: ScheduleKind,
    /// Angles of the cosine schedule at t = 0 and t = 1 that give logsnr_max and logsnr_min.
    angle_min: f64,
    angle_max: f64,
    /// Added to the cosine log-SNR: 2 log(base_side / image_side) for the shifted cosine.
    shift: f64,
}

impl Schedule {
    /// `image_side` is only read by the shifted cosine.
    pub fn new(cfg: &DiffusionConfig, image_side: i64) -> Self {
        let shift = match cfg.schedule {
            // Hoogeboom et al. 2023 ("simple diffusion"), eq. 5: shifting log-SNR by
            // 2 log(64 / d) keeps the noise per 64x64 patch as at the base resolution.
            ScheduleKind::ShiftedCosine => {
                2.0 * (cfg.shift_base_side as f64 / image_side as f64).ln()
            }
            _ => 0.0,
        };
        Self {
            kind: cfg.schedule,
            angle_min: (-0.5 * cfg.logsnr_max).exp().atan(),
            angle_max: (-0.5 * cfg.logsnr_min).exp().atan(),
            shift,
        }
    }

    /// log-SNR at times t (any shape, float).
    pub fn log_snr(&self, t: &Tensor) -> Tensor {
        match self.kind {
            ScheduleKind::Linear => -((t.square() * 10.0 + 1e-4).expm1().log()),
            ScheduleKind::Cosine | ScheduleKind::ShiftedCosine => {
                let angle = t * (self.angle_max - self.angle_min) + self.angle_min;
                angle.tan().log() * -2.0 + self.shift
            }
        }
    }

    /// log-SNR at one time, in f64 (for step sizes and tests).
    pub fn log_snr_at(&self, t: f64) -> f64 {
        match self.kind {
            ScheduleKind::Linear => -((1e-4 + 10.0 * t * t).exp_m1().ln()),
            ScheduleKind::Cosine | ScheduleKind::ShiftedCosine => {
                let angle = self.angle_min + t * (self.angle_max - self.angle_min);
                -2.0 * angle.tan().ln() + self.shift
            }
        }
    }

    /// (alpha_t, sigma_t) at times t.
    pub fn alpha_sigma(&self, t: &Tensor) -> (Tensor, Tensor) {
        alpha_sigma_from_log_snr(&self.log_snr(t))
    }
}

/// alpha = sqrt(sigmoid(logsnr)), sigma = sqrt(sigmoid(-logsnr)).
pub fn alpha_sigma_from_log_snr(log_snr: &Tensor) -> (Tensor, Tensor) {
    (log_snr.sigmoid().sqrt(), (-log_snr).sigmoid().sqrt())
}
