//! imagen-trainer: the `imagen` binary's library. Text encoder, U-Nets, diffusion, training loop,
//! distributed training, checkpoints, sampling and logging, on libtorch through tch.

pub mod ablate;
pub mod autocast;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod diffusion;
pub mod dist;
pub mod error;
pub mod evaluate;
pub mod launch;
pub mod logging;
pub mod logs;
pub mod native;
pub mod optim;
pub mod progress;
pub mod sample;
pub mod seeds;
pub mod t5;
pub mod tensor_file;
pub mod text;
pub mod torch_info;
pub mod train;
pub mod unet;

pub use error::{Result, TrainerError};
