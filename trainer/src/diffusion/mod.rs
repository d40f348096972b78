//! Continuous-time Gaussian diffusion around a U-Net: schedules, objectives, the training loss
//! with classifier-free-guidance dropout and noise conditioning augmentation, and samplers.

mod config;

pub use config::{
    DiffusionConfig, LossWeighting, Objective, SamplerConfig, SamplerKind, ScheduleKind,
    Thresholding,
};
