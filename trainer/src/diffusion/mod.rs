//! Continuous-time Gaussian diffusion around a U-Net: schedules, objectives, the training loss
//! with classifier-free-guidance dropout and noise conditioning augmentation, and samplers.

pub mod augment;
mod cascade;
mod config;
mod draws;
mod gaussian;
pub mod loss;
pub mod objective;
mod sampler;
mod schedule;
pub mod threshold;

pub use cascade::{check_cascade, last_stage, sample_cascade, Stage};
pub use config::{
    DiffusionConfig, LossWeighting, Objective, SamplerConfig, SamplerKind, ScheduleKind,
    Thresholding,
};
pub use draws::{DrawShape, TrainingDraws};
pub use gaussian::{GaussianDiffusion, LossMode};
pub use sampler::{guidance_at, guided_prediction, image_seeds, sample_stage, stage_seeds};
pub use schedule::{alpha_sigma_from_log_snr, Schedule};
